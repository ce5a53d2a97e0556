// tp-worker: one rank of a tensor-parallel (x data-parallel) training job, a thin main over the engine API.
//
//   tp-worker --coordinator HOST:PORT --job ID --world-size 4 --config ds_config.json
//             (--model-dir DIR | --random-init tiny|small|350m) --data corpus.txt --output-dir out
//             [--rank R] [--tp-size T] [--dtype fp32|bf16|fp16] [--device auto|cpu|cuda|cuda:N]
//             [--backend gloo|nccl] [--resume DIR] [--steps N] [--max-restarts N] [--token-file F]
//             [--tls-ca F [--tls-cert F --tls-key F]]
//
// Every flag can come from the environment instead (TPCOORD_<FLAG>, e.g. TPCOORD_WORLD_SIZE; the rank
// also from RANK or JOB_COMPLETION_INDEX, the world size from WORLD_SIZE); a flag on the command line wins.
// Rank 0 prints progress every steps_per_print steps and a summary, and writes the final checkpoint to
// <output-dir>/checkpoint, and <output-dir>/checkpoint-<step> every checkpoint_interval steps.
//
// Failures (README "Failures and recovery"): the process started is a supervisor (supervisor.h) that runs
// the trainer as a child. When a generation ends — a peer died or hung, the coordinator says so on the
// member session — the trainer exits at once, and the supervisor starts it again (up to --max-restarts
// times): it rejoins the next generation as the same worker and resumes from the newest complete
// checkpoint-<step> in --output-dir. Exit status (exit_codes.h): 0 done, 1 an unexpected failure, 2 usage,
// 3 a fatal configuration error (never restarted), 75 a retryable failure once the restarts are spent.
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <iostream>
#include <mutex>
#include <optional>
#include <sstream>

#include "absl/flags/flag.h"
#include "absl/flags/usage.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "client/client_flags.h"
#include "common/config_merge.h"
#include "common/deepspeed_error.h"
#include "common/ds_config.h"
#include "common/log_line.h"
#include "common/process_init.h"
#include "worker/model/safetensors.h"
#include "worker/training/checkpoint.h"
#include "worker/training/compute_threads.h"
#include "worker/training/device.h"
#include "worker/training/engine.h"
#include "worker/training/exit_codes.h"
#include "worker/training/supervisor.h"

ABSL_FLAG(std::string, coordinator, "127.0.0.1:50051", "coordinator address");
ABSL_FLAG(std::string, job, "", "job id");
ABSL_FLAG(std::string, world_size, "1",
          "number of workers in the job, or a range MIN:MAX: with fewer than MAX after --rejoin-timeout, a "
          "generation starts with the whole TP groups there (at least MIN workers)");
ABSL_FLAG(absl::Duration, rejoin_timeout, absl::Seconds(30),
          "with a --world-size range: how long a generation waits for MAX workers before it starts smaller");
ABSL_FLAG(int, rank, -1, "requested global rank (-1: let the coordinator assign one)");
ABSL_FLAG(std::string, host, "", "host name reported to the coordinator (default: this machine's)");
ABSL_FLAG(std::string, config, "", "DeepSpeed config (JSON)");
ABSL_FLAG(int, tp_size, 0,
          "tp_model_init tp_size: given (> 0), the worker records it with tp_model_init; 0 (the default): no "
          "tp_model_init (config-only AutoTP, as DeepSpeed's \"tensor_parallel\": {\"autotp_size\": N}): the worker "
          "joins with the config's tensor_parallel.autotp_size, else 1");
ABSL_FLAG(std::string, dtype, "",
          "tp_model_init dtype: fp32 | bf16 | fp16 (default: the config's precision); only with --tp-size");
ABSL_FLAG(std::string, model_dir, "", "Hugging Face model directory (config.json + *.safetensors)");
ABSL_FLAG(std::string, random_init, "", "instead of --model-dir: a seeded random model of this preset (tiny|small)");
ABSL_FLAG(std::string, data, "", "training data: a text file (byte tokens) or a .bin of uint16 tokens");
ABSL_FLAG(std::string, output_dir, "", "where rank 0 writes checkpoints");
ABSL_FLAG(std::string, device, "auto",
          "auto (cuda:LOCAL_RANK when the LibTorch has CUDA and a GPU is visible, else cpu), cpu, cuda or cuda:N");
ABSL_FLAG(std::string, backend, "", "gloo (CPU) or nccl (GPU); default: the device's");
ABSL_FLAG(std::string, gloo_interface, "", "address Gloo listens on (default: --host)");
ABSL_FLAG(std::string, resume, "", "checkpoint directory to resume from (any TP size)");
ABSL_FLAG(int64_t, steps, -1, "total optimizer steps (default: the config's tpcoord.steps)");
ABSL_FLAG(int, threads, 1, "CPU threads for tensor math in this process");
ABSL_FLAG(absl::Duration, timeout, absl::Minutes(5), "deadline for the rendezvous and for each collective");
ABSL_FLAG(int, max_restarts, 0, "how many failed generations this worker rejoins after before it gives up");
ABSL_FLAG(std::string, log_format, "text",
          "text, or json: every line on stdout and stderr one JSON object (time, level, job, generation, rank, "
          "event, message)");

namespace tpcoord {
namespace {

// Flags not given on the command line fall back to the environment.
void FlagsFromEnvironment() {
  auto env = [](std::initializer_list<const char*> names) -> const char* {
    for (const char* name : names) {
      if (const char* value = std::getenv(name); value && *value) return value;
    }
    return nullptr;
  };
  auto set_string = [&](absl::Flag<std::string>* flag, std::initializer_list<const char*> names) {
    if (const char* v = env(names)) absl::SetFlag(flag, v);
  };
  auto set_int = [&](absl::Flag<int>* flag, std::initializer_list<const char*> names) {
    int value;
    if (const char* v = env(names); v && absl::SimpleAtoi(v, &value)) absl::SetFlag(flag, value);
  };
  set_string(&FLAGS_coordinator, {"TPCOORD_COORDINATOR"});
  set_string(&FLAGS_job, {"TPCOORD_JOB"});
  set_string(&FLAGS_world_size, {"TPCOORD_WORLD_SIZE", "WORLD_SIZE"});
  set_int(&FLAGS_rank, {"TPCOORD_RANK", "RANK", "JOB_COMPLETION_INDEX"});
  set_string(&FLAGS_host, {"TPCOORD_HOST"});
  set_string(&FLAGS_config, {"TPCOORD_CONFIG"});
  set_int(&FLAGS_tp_size, {"TPCOORD_TP_SIZE"});
  set_string(&FLAGS_dtype, {"TPCOORD_DTYPE"});
  set_string(&FLAGS_model_dir, {"TPCOORD_MODEL_DIR"});
  set_string(&FLAGS_random_init, {"TPCOORD_RANDOM_INIT"});
  set_string(&FLAGS_data, {"TPCOORD_DATA"});
  set_string(&FLAGS_output_dir, {"TPCOORD_OUTPUT_DIR"});
  set_string(&FLAGS_backend, {"TPCOORD_BACKEND"});
  set_string(&FLAGS_device, {"TPCOORD_DEVICE"});
  set_string(&FLAGS_gloo_interface, {"TPCOORD_GLOO_INTERFACE"});
  set_string(&FLAGS_resume, {"TPCOORD_RESUME"});
  set_int(&FLAGS_threads, {"TPCOORD_THREADS"});
  set_int(&FLAGS_max_restarts, {"TPCOORD_MAX_RESTARTS"});
  set_string(&FLAGS_log_format, {"TPCOORD_LOG_FORMAT"});
  int64_t steps;
  if (const char* v = env({"TPCOORD_STEPS"}); v && absl::SimpleAtoi(v, &steps)) absl::SetFlag(&FLAGS_steps, steps);
}

LogFormat log_format = LogFormat::kText;
std::mutex about_mu;  // the member session's thread logs a generation's end (OnGenerationEnd)
LogLine about;        // the job, generation and rank this process's lines are about, once known

LogLine About() {
  std::lock_guard<std::mutex> lock(about_mu);
  return about;
}

// Progress and summaries, on stdout. In text a line goes as it is: people and scripts read "step 5/100 ...".
void Log(const std::string& event, const std::string& message) {
  if (log_format == LogFormat::kText) {
    std::cout << message << std::endl;
    return;
  }
  LogLine line = About();
  line.event = event;
  line.message = message;
  std::cout << FormatLogLine(LogFormat::kJson, "tp-worker", line, absl::Now()) << std::endl;
}

// Failures and warnings, on stderr ("tp-worker: <message>" in text).
void LogProblem(const std::string& event, const std::string& message, const std::string& level = "error") {
  if (log_format == LogFormat::kText) {
    std::cerr << "tp-worker: " << message << std::endl;
    return;
  }
  LogLine line = About();
  line.level = level;
  line.event = event;
  line.message = message;
  std::cerr << FormatLogLine(LogFormat::kJson, "tp-worker", line, absl::Now()) << std::endl;
}

// Prints why the trainer fails, tells its supervisor, and returns the exit status that says what kind of
// failure it is.
int Fail(const absl::Status& status) {
  std::string message(status.message());
  if (std::optional<std::string> context = ErrorContext(status)) absl::StrAppend(&message, "\n  (", *context, ")");
  LogProblem("failed", message);
  ReportToSupervisor(std::string(status.message()));
  return ExitCodeFor(status);
}

int Usage(const std::string& message) {
  LogProblem("usage", absl::StrCat(message, "\n", absl::ProgramUsageMessage()));
  return kExitUsage;
}

// The member session's thread learned that the generation is over: stop now, wherever the main thread is
// (a Gloo collective in flight cannot be aborted), so that the supervisor can start the next attempt.
void OnGenerationEnd(const absl::Status& status) {
  LogProblem("generation_ended", absl::StrCat(status.message(), "; stopping"), "warning");
  ReportToSupervisor(std::string(status.message()));
  std::cout.flush();
  _exit(ExitCodeFor(status));
}

absl::StatusOr<std::string> ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::NotFoundError(absl::StrCat("cannot read ", path));
  std::stringstream text;
  text << in.rdbuf();
  return text.str();
}

// The full model every TP rank builds identically before sharding (spec §3.5): from a checkpoint, or from
// the preset and the config's seed.
absl::StatusOr<LlamaModel> BuildModel(const nlohmann::json& config) {
  const std::string model_dir = absl::GetFlag(FLAGS_model_dir);
  const std::string preset = absl::GetFlag(FLAGS_random_init);
  if (model_dir.empty() == preset.empty()) {
    return absl::InvalidArgumentError("give exactly one of --model-dir and --random-init");
  }
  uint64_t seed = 1234;
  if (const auto it = config.find("tpcoord"); it != config.end() && it->is_object() && it->contains("seed")) {
    seed = (*it)["seed"].get<uint64_t>();
  }
  if (!preset.empty()) {
    absl::StatusOr<LlamaConfig> llama = LlamaConfig::Preset(preset);
    if (!llama.ok()) return llama.status();
    return LlamaModel::Create(*llama, Dtype::kFloat32, seed);
  }
  absl::StatusOr<Checkpoint> checkpoint = ReadCheckpoint(model_dir);
  if (!checkpoint.ok()) return checkpoint.status();
  absl::StatusOr<LlamaModel> model = LlamaModel::Create(checkpoint->config, Dtype::kFloat32, seed);
  if (!model.ok()) return model.status();
  if (absl::Status s = (*model)->LoadStateDict(checkpoint->model); !s.ok()) return s;
  return model;
}

// ", MFU 41.2% of NVIDIA H100 80GB HBM3's 989 TFLOP/s bf16 (6 N tokens/s over the world's GPUs)" on a GPU
// whose peak is known; "" elsewhere. `tokens_per_second`: the whole job's.
std::string Mfu(Engine& e, double tokens_per_second) {
  std::optional<PeakFlops> peak = PeakBf16Flops(e.device());
  if (!peak || peak->bf16_dense <= 0) return "";
  const double flops = 6.0 * static_cast<double>(e.model()->config().ParameterCount()) * tokens_per_second;
  return absl::StrFormat(", MFU %.1f%% of %s's %.0f TFLOP/s bf16 (6 N tokens/s over %d GPUs)",
                         100.0 * flops / (peak->bf16_dense * e.membership().world_size()), peak->gpu,
                         peak->bf16_dense / 1e12, e.membership().world_size());
}

int Main() {
  const std::string config_path = absl::GetFlag(FLAGS_config);
  if (config_path.empty()) return Usage("--config is required");
  if (absl::GetFlag(FLAGS_job).empty()) return Usage("--job is required");
  absl::StatusOr<std::string> config_text = ReadFile(config_path);
  if (!config_text.ok()) return Fail(config_text.status());
  absl::StatusOr<nlohmann::json> config = ParseDsConfig(*config_text, config_path);
  if (!config.ok()) return Fail(config.status());
  SetComputeThreads(absl::GetFlag(FLAGS_threads));

  // tp_model_init's arguments, when --tp-size is given; without it the worker runs config-only AutoTP (no
  // tp_model_init, nothing recorded): initialize joins with the config's autotp_size, and the precision is
  // the config's.
  const int tp_size = absl::GetFlag(FLAGS_tp_size);
  if (tp_size < 0) return Usage(absl::StrCat("--tp-size ", tp_size, " is negative; give 1 or more (0: config-only)"));
  if (tp_size == 0 && !absl::GetFlag(FLAGS_dtype).empty()) {
    return Usage(
        "--dtype is tp_model_init's dtype and needs --tp-size (TPCOORD_TP_SIZE); without them the worker runs "
        "config-only AutoTP with the precision of the config's bf16/fp16 sections");
  }
  Dtype dtype = InferConfigDtype(*config).value_or(Dtype::kFloat32);
  if (const std::string name = absl::GetFlag(FLAGS_dtype); !name.empty()) {
    absl::StatusOr<Dtype> parsed = ParseDtype(name);
    if (!parsed.ok()) return Usage(absl::StrCat("--dtype: ", parsed.status().message()));
    dtype = *parsed;
  }

  LaunchConfig lc;
  lc.coordinator = absl::GetFlag(FLAGS_coordinator);
  absl::StatusOr<ClientCredentials> credentials = ClientCredentialsFromFlags();
  if (!credentials.ok()) return Fail(credentials.status());
  lc.credentials = *std::move(credentials);
  lc.job_id = absl::GetFlag(FLAGS_job);
  const std::string world = absl::GetFlag(FLAGS_world_size);
  const std::vector<std::string> range = absl::StrSplit(world, ':');
  if (range.size() > 2 || !absl::SimpleAtoi(range.back(), &lc.world_size) ||
      !absl::SimpleAtoi(range.front(), &lc.min_world_size) || lc.min_world_size < 1 ||
      lc.min_world_size > lc.world_size) {
    return Usage(
        absl::StrCat("--world-size \"", world, "\" is not a number N or a range MIN:MAX with 1 <= MIN <= MAX"));
  }
  lc.rejoin_timeout = absl::ToChronoMilliseconds(absl::GetFlag(FLAGS_rejoin_timeout));
  if (absl::GetFlag(FLAGS_rank) >= 0) lc.rank = absl::GetFlag(FLAGS_rank);
  lc.host = absl::GetFlag(FLAGS_host);
  absl::StatusOr<DeviceChoice> device = ParseDevice(absl::GetFlag(FLAGS_device));
  if (!device.ok()) return Fail(device.status());
  lc.device = *device;
  absl::StatusOr<std::string> backend = BackendFor(lc.device, absl::GetFlag(FLAGS_backend));
  if (!backend.ok()) return Fail(backend.status());
  lc.backend = *backend;
  lc.gloo_interface = absl::GetFlag(FLAGS_gloo_interface);
  lc.data = absl::GetFlag(FLAGS_data);
  lc.output_dir = absl::GetFlag(FLAGS_output_dir);
  lc.resume = absl::GetFlag(FLAGS_resume);
  lc.join_timeout = lc.collective_timeout = absl::ToChronoMilliseconds(absl::GetFlag(FLAGS_timeout));
  lc.worker_id = SupervisedWorkerId();
  lc.on_generation_end = OnGenerationEnd;
  lc.log_waiting = [](const std::string& line) { LogProblem("waiting", line, "warning"); };
  Launch launch(lc);

  const auto load_start = std::chrono::steady_clock::now();
  absl::StatusOr<LlamaModel> model = BuildModel(*config);
  if (!model.ok()) return Fail(model.status());
  const double load_seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - load_start).count();

  if (tp_size > 0) {
    model = tp_model_init(*std::move(model), tp_size, dtype, launch);
    if (!model.ok()) return Fail(model.status());
  }
  absl::StatusOr<std::unique_ptr<Engine>> engine = initialize(*std::move(model), *config_text, launch);
  if (!engine.ok()) return Fail(engine.status());
  Engine& e = **engine;
  const Membership& m = e.membership();
  {
    std::lock_guard<std::mutex> lock(about_mu);
    about.generation = m.generation;
    about.rank = m.rank;
  }
  // From here on a failure also tells the other workers why this one stops. A collective that fails
  // because a peer died fails here first: wait for the coordinator to name that peer (OnGenerationEnd
  // exits then) before leaving with this worker's own, secondary, reason.
  auto abandon = [&e, &m](const absl::Status& status) {
    if (ExitCodeFor(status) == kExitRetryable) (void)e.member().AwaitLost(m.lease);
    e.Abandon(std::string(status.message()), ExitCodeFor(status) == kExitFatalConfig);
    return Fail(status);
  };
  launch.timings().emplace_back("load", load_seconds);
  const bool leader = m.rank == 0;
  const TrainConfig& train = e.train_config();
  absl::StatusOr<std::string> resumed = e.resume();
  if (!resumed.ok()) return abandon(resumed.status());
  if (leader && !resumed->empty()) {
    Log("resumed", absl::StrFormat("resumed from %s at step %d", *resumed, e.global_steps()));
  }
  const int64_t steps = absl::GetFlag(FLAGS_steps) >= 0 ? absl::GetFlag(FLAGS_steps) : train.steps;

  if (leader) {
    std::vector<std::string> phases;
    for (const auto& [phase, seconds] : launch.timings()) phases.push_back(absl::StrFormat("%s %.3fs", phase, seconds));
    Log("started",
        absl::StrFormat("job %s generation %d: world %d = tp %d x dp %d, dtype %s, backend %s, %d thread(s), %s, "
                        "%d parameters%s",
                        m.job_id, m.generation, m.world_size(), m.mesh.tp_size(), m.mesh.dp_size(),
                        ShortDtypeName(e.dtype()), lc.backend, absl::GetFlag(FLAGS_threads),
                        DeviceDescription(e.device()), e.model()->config().ParameterCount(),
                        TrainerAttempt() > 0 ? absl::StrCat(", restart ", TrainerAttempt()) : ""));
    Log("startup", absl::StrCat("startup: ", absl::StrJoin(phases, ", ")));
    Log("communicators", absl::StrCat("communicators: ", absl::StrJoin(e.communicators(), "; ")));
    Log("batch",
        absl::StrFormat("batch: %d sequences of %d tokens per step (micro %d x accumulation %d x dp %d), from step %d "
                        "to %d",
                        train.train_batch_size, train.seq_len, train.micro_batch_size,
                        train.gradient_accumulation_steps, m.mesh.dp_size(), e.global_steps(), steps));
    if (m.world_size() < lc.world_size) {
      Log("shrunk",
          absl::StrFormat("shrunk: %d of %d workers, %d of %d data-parallel replicas; gradient accumulation %d keeps "
                          "train_batch_size %d",
                          m.world_size(), lc.world_size, m.mesh.dp_size(), lc.world_size / m.mesh.tp_size(),
                          train.gradient_accumulation_steps, train.train_batch_size));
    }
  }

  // The loop reads the device only when it prints: one wait per steps_per_print steps, and the time between
  // two prints is what those steps took.
  double train_seconds = 0, first_loss = 0, last_loss = 0;
  int64_t tokens = 0;
  const int64_t first_step = e.first_step();
  auto interval_start = std::chrono::steady_clock::now();
  int64_t interval_steps = 0, interval_tokens = 0;
  while (e.global_steps() < steps) {
    absl::StatusOr<StepStats> stats = e.train_batch();
    if (!stats.ok()) return abandon(stats.status());
    ++interval_steps;
    interval_tokens += stats->tokens;
    if (stats->step % train.steps_per_print == 0 || stats->step == steps || stats->step == first_step + 1) {
      const double loss = stats->loss.item<double>();  // waits for the step
      const double grad_norm = stats->grad_norm.defined() ? stats->grad_norm.item<double>() : 0.0;
      const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - interval_start).count();
      train_seconds += seconds;
      tokens += interval_tokens;
      if (stats->step == first_step + 1) first_loss = loss;
      last_loss = loss;
      if (leader) {
        Log("step", absl::StrFormat("step %d/%d loss %.9g lr %.6g grad_norm %.6g tokens/s %.0f step_ms %.1f%s",
                                    stats->step, steps, loss, stats->lr, grad_norm, interval_tokens / seconds,
                                    seconds * 1e3 / interval_steps, stats->skipped ? " (skipped: fp16 overflow)" : ""));
        e.member().ReportProgress(
            {stats->step, steps, loss, interval_tokens / seconds, seconds / interval_steps, std::nullopt});
      }
      interval_start = std::chrono::steady_clock::now();
      interval_steps = interval_tokens = 0;
    }
    absl::StatusOr<bool> saved = e.checkpoint_if_due(steps);
    if (!saved.ok()) return abandon(saved.status());
    if (*saved) interval_start = std::chrono::steady_clock::now();  // the checkpoint's time is not a step's
  }

  absl::StatusOr<double> eval = e.eval_loss();
  if (!eval.ok()) return abandon(eval.status());
  absl::StatusOr<std::string> checkpoint = e.save_final_checkpoint();
  if (!checkpoint.ok()) return abandon(checkpoint.status());
  if (leader) {
    const int64_t trained = e.global_steps() - first_step;
    Log("eval", absl::StrFormat("eval loss %.9g", *eval));
    if (trained > 0) {
      e.member().ReportProgress(
          {e.global_steps(), steps, last_loss, tokens / train_seconds, train_seconds / trained, *eval});
    }
    if (trained > 0) {
      Log("done",
          absl::StrFormat("done: %d steps, loss %.4f -> %.4f, %.0f tokens/s, %.1f ms/step%s%s", trained, first_loss,
                          last_loss, tokens / train_seconds, train_seconds * 1e3 / trained,
                          Mfu(e, tokens / train_seconds), checkpoint->empty() ? "" : ", checkpoint " + *checkpoint));
    }
  }
  if (absl::Status s = e.Finish(); !s.ok()) return Fail(s);
  return 0;
}

}  // namespace
}  // namespace tpcoord

int main(int argc, char** argv) {
  tpcoord::PrepareComputeProcess(argv);
  absl::SetProgramUsageMessage(
      "tp-worker --coordinator HOST:PORT --job ID --world-size N --config ds_config.json "
      "(--model-dir DIR | --random-init tiny|small|350m) --data FILE [--output-dir DIR] [--rank R] [--tp-size T] "
      "[--dtype fp32|bf16|fp16] [--device auto|cpu|cuda|cuda:N] [--backend gloo|nccl] [--resume DIR] [--steps N] "
      "[--threads N] [--max-restarts N] "
      "[--token-file F] "
      "[--tls-ca F [--tls-cert F --tls-key F]]");
  tpcoord::FlagsFromEnvironment();
  tpcoord::InitProcess(argc, argv);
  absl::StatusOr<tpcoord::LogFormat> format = tpcoord::ParseLogFormat(absl::GetFlag(FLAGS_log_format));
  if (!format.ok()) return tpcoord::Usage(absl::StrCat("--log-format: ", format.status().message()));
  tpcoord::log_format = *format;
  tpcoord::about.job = absl::GetFlag(FLAGS_job);
  // From here on, the supervisor only forks trainers (supervisor.h); each trainer goes on to Main.
  if (std::optional<int> exit_code =
          tpcoord::Supervise(std::max(0, absl::GetFlag(FLAGS_max_restarts)), absl::GetFlag(FLAGS_host),
                             [](const std::string& event, const std::string& message) {
                               tpcoord::LogProblem(event, message, event == "restarting" ? "warning" : "error");
                             })) {
    return *exit_code;
  }
  return tpcoord::Main();
}
