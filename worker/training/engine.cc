#include "worker/training/engine.h"

#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <numeric>

#include "absl/status/status.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "common/config_merge.h"
#include "common/deepspeed_error.h"
#include "common/ds_config.h"
#include "common/limits.h"
#include "common/host_name.h"
#include "nlohmann/json.hpp"
#include "worker/autotp/autotp.h"
#include "worker/comm/gloo_communicator.h"
#include "worker/comm/nccl_communicator.h"
#include "worker/comm/unique_id_exchange.h"
#include "worker/model/torch_dtype.h"
#include "worker/training/checkpoint.h"
#include "worker/training/exit_codes.h"

namespace tpcoord {
namespace {

using Clock = std::chrono::steady_clock;

double SecondsSince(Clock::time_point start) { return std::chrono::duration<double>(Clock::now() - start).count(); }

absl::Status InPhase(absl::string_view phase, const absl::Status& status) {
  if (status.ok() || IsDeepSpeedError(status)) return status;  // DeepSpeed's texts stay exact
  return absl::Status(status.code(), absl::StrCat(phase, ": ", status.message()));
}

// The same tensors under "<name>" for the state kind `suffix` ("exp_avg" -> {param: tensor}), and back.
TensorMap StateOfKind(const TensorMap& state, const std::string& suffix) {
  TensorMap out;
  const std::string tail = "." + suffix;
  for (const auto& [key, t] : state) {
    if (key.size() > tail.size() && key.compare(key.size() - tail.size(), tail.size(), tail) == 0) {
      out[key.substr(0, key.size() - tail.size())] = t;
    }
  }
  return out;
}

void AddKind(const TensorMap& tensors, const std::string& suffix, TensorMap* out) {
  for (const auto& [name, t] : tensors) (*out)[name + "." + suffix] = t;
}

constexpr const char* kStateKinds[] = {"exp_avg", "exp_avg_sq", "momentum_buffer", "master"};

// How many of a job's checkpoint-<step> directories rank 0 keeps: the newest, and one before it.
constexpr int kCheckpointsKept = 2;

// A test hook, for fault tests through real processes: with TPCOORD_TEST_STOP_AT=<phase> the worker stops
// itself (SIGSTOP) as it reaches that start-up phase, so that a test can act on a job held there (kill the
// coordinator while the others wait in the store for this worker, say) and then let it go on (SIGCONT).
void StopHereIfAsked(absl::string_view phase) {
  const char* stop_at = std::getenv("TPCOORD_TEST_STOP_AT");
  if (stop_at != nullptr && phase == stop_at) ::raise(SIGSTOP);
}

// Config-only AutoTP: the config's tensor_parallel.autotp_size (an integer >= 1), 0 when it has none.
absl::StatusOr<int> ConfigAutoTpSize(const std::string& ds_config_json) {
  absl::StatusOr<nlohmann::json> config = ParseDsConfig(ds_config_json);
  if (!config.ok()) return config.status();
  auto section = config->find("tensor_parallel");
  if (section == config->end() || !section->is_object()) return 0;
  auto autotp = section->find("autotp_size");
  if (autotp == section->end() || autotp->is_null()) return 0;
  if (!autotp->is_number_integer() || autotp->get<int64_t>() < 1 || autotp->get<int64_t>() > kMaxTpSize) {
    return absl::InvalidArgumentError(absl::StrCat("tensor_parallel.autotp_size must be an integer from 1 to ",
                                                   kMaxTpSize, ", got ", autotp->dump()));
  }
  return autotp->get<int>();
}

}  // namespace

// --- Launch and tp_model_init ---------------------------------------------------------------------------

Launch::Launch(LaunchConfig config) : config_(std::move(config)) {
  if (config_.host.empty()) config_.host = LocalHostName();
  if (config_.gloo_interface.empty()) config_.gloo_interface = config_.host;
  ClientOptions options;
  options.address = config_.coordinator;
  options.credentials = config_.credentials;
  // A coordinator that restarts, or is unreachable for a while, costs this worker nothing as long as it
  // comes back within the worker's own deadline.
  options.retry_budget = config_.join_timeout;
  options.log_waiting = config_.log_waiting;
  client_ = std::make_unique<CoordinatorClient>(options);
}

absl::StatusOr<LlamaModel> tp_model_init(LlamaModel model, int tp_size, Dtype dtype, Launch& launch,
                                         std::optional<std::vector<int>> tp_group) {
  Clock::time_point start = Clock::now();
  if (absl::Status s = launch.client().WaitForConnected(launch.config().join_timeout); !s.ok()) {
    return InPhase("connect", s);
  }
  launch.timings().emplace_back("connect", SecondsSince(start));
  start = Clock::now();
  absl::StatusOr<TpInitArgs> args = NormalizeTpInitArgs(tp_size, dtype, std::move(tp_group));
  if (!args.ok()) return args.status();
  absl::StatusOr<TpInitRecord> record = launch.client().RecordTpInitArgs(launch.config().job_id, *args);
  if (!record.ok()) return InPhase("tp_model_init", record.status());
  launch.set_recorded(*args);
  launch.timings().emplace_back("record", SecondsSince(start));
  return model;
}

// --- initialize -----------------------------------------------------------------------------------------

Engine::Engine(Launch& launch, LlamaModel model)
    : launch_(launch), member_(&launch.client(), launch.config().on_generation_end), model_(std::move(model)) {}

// The member leaves before the communicators go: a peer must hear why, not see a closed connection.
Engine::~Engine() { member_.Abandon("the worker stopped before finishing"); }

void Engine::Abandon(const std::string& reason, bool fatal) { member_.Abandon(reason, fatal); }

absl::Status Engine::Finish() { return member_.Finish(); }

absl::StatusOr<std::unique_ptr<Engine>> initialize(LlamaModel model, const std::string& ds_config_json, Launch& launch,
                                                   bool has_mpu) {
  const LaunchConfig& lc = launch.config();
  std::unique_ptr<Engine> engine(new Engine(launch, std::move(model)));
  Engine& e = *engine;

  // A backend that cannot work here fails before this worker takes a place in the rendezvous.
  if (lc.backend == "nccl") {
    if (absl::Status s = CheckNcclUsable(); !s.ok()) return s;
  } else if (lc.backend == "gloo") {
    if (absl::Status s = CheckGlooUsable(); !s.ok()) return s;
  } else {
    return absl::InvalidArgumentError(absl::StrCat("--backend \"", lc.backend, "\" is not gloo or nccl"));
  }

  // The TP size this worker joins with: the record's; without one (config-only AutoTP, as DeepSpeed's
  // "tensor_parallel": {"autotp_size": N} without tp_model_init) the config's autotp_size, 0 (the
  // coordinator's 1) when it has none. The coordinator refuses a merge whose autotp_size is not the
  // generation's tp_size, so the config and the mesh cannot disagree.
  int tp_size = 0;
  if (launch.recorded()) {
    tp_size = launch.recorded()->tp_size;
  } else {
    absl::StatusOr<int> config_tp_size = ConfigAutoTpSize(ds_config_json);
    if (!config_tp_size.ok()) return InPhase("config", config_tp_size.status());
    tp_size = *config_tp_size;
    // tp_model_init connected first; without it, connect here.
    Clock::time_point connect = Clock::now();
    if (absl::Status s = launch.client().WaitForConnected(lc.join_timeout); !s.ok()) return InPhase("connect", s);
    launch.timings().emplace_back("connect", SecondsSince(connect));
  }

  // Join: the rendezvous assigns this worker's rank and groups.
  Clock::time_point start = Clock::now();
  JoinRequest join{
      lc.job_id, lc.worker_id.empty() ? MakeWorkerId(lc.host) : lc.worker_id, lc.host, lc.world_size, lc.rank, tp_size,
      /*member_key=*/""};
  join.min_world_size = std::min(lc.min_world_size, lc.world_size);
  join.rejoin_timeout = lc.rejoin_timeout;
  // The member session carries the whole rendezvous from here on: Join, merge, unique IDs, Leave.
  absl::StatusOr<Membership> membership = e.member_.Join(join, lc.join_timeout);
  if (!membership.ok()) return InPhase("join", membership.status());
  launch.timings().emplace_back("join", SecondsSince(start));
  absl::Status setup = e.Setup(ds_config_json, has_mpu);
  if (!setup.ok()) {
    // A peer's death fails this worker's set-up first; the coordinator names the peer a moment later.
    if (ExitCodeFor(setup) == kExitRetryable) (void)e.member_.AwaitLost(membership->lease);
    // The other workers learn why, instead of waiting.
    e.Abandon(std::string(setup.message()), ExitCodeFor(setup) == kExitFatalConfig);
    return setup;
  }
  return engine;
}

// Everything after Join: merge, data, communicators, sharding, dtype, optimizer.
absl::Status Engine::Setup(const std::string& ds_config_json, bool has_mpu) {
  const LaunchConfig& lc = launch_.config();
  CoordinatorClient& client = launch_.client();
  const Membership& m = member_.membership();

  // Merge: validated against the record, identical on every worker.
  Clock::time_point start = Clock::now();
  absl::StatusOr<std::string> merged = member_.session().MergeConfig(ds_config_json, has_mpu);
  if (!merged.ok()) return InPhase("merge", merged.status());
  merged_config_ = *merged;
  absl::StatusOr<TrainConfig> train = ParseTrainConfig(nlohmann::json::parse(*merged), m.mesh.dp_size());
  if (!train.ok()) return InPhase("config", train.status());
  train_ = *train;
  dtype_ = launch_.recorded() ? launch_.recorded()->dtype : train_.precision.value_or(Dtype::kFloat32);
  launch_.timings().emplace_back("merge", SecondsSince(start));
  absl::StatusOr<torch::Device> device = ResolveDevice(lc.device, LocalRankFromEnvironment(), m.rank);
  if (!device.ok()) return InPhase("device", device.status());
  device_ = *device;
  if (dtype_ == Dtype::kFloat16 && !device_.is_cuda()) {
    return absl::FailedPreconditionError(
        "dtype fp16 needs a GPU: LibTorch has no fp16 matrix multiply on the CPU; use bf16 on the CPU");
  }

  const std::string data_path = lc.data.empty() ? train_.data : lc.data;
  if (data_path.empty()) {
    return absl::InvalidArgumentError("no training data: give --data or the config's tpcoord.data");
  }
  absl::StatusOr<TokenData> data = TokenData::Load(data_path, train_.seq_len);
  if (!data.ok()) return InPhase("data", data.status());
  if (data->max_token() >= model_->config().vocab_size) {
    return absl::InvalidArgumentError(absl::StrCat("data: ", data_path, " holds token ", data->max_token(),
                                                   ", outside the model's vocabulary of ",
                                                   model_->config().vocab_size));
  }
  if (train_.seq_len > model_->config().max_position_embeddings) {
    return absl::InvalidArgumentError(absl::StrCat("tpcoord.seq_len ", train_.seq_len,
                                                   " exceeds the model's max_position_embeddings ",
                                                   model_->config().max_position_embeddings));
  }
  data_ = *std::move(data);

  // Communicators for the world, this rank's TP group and its DP group.
  StopHereIfAsked("comm_init");
  start = Clock::now();
  const std::vector<GroupId> groups = {{GroupKind::kWorld, 0}, m.tp_group(), m.dp_group()};
  const std::vector<std::pair<int, int>> places = {
      {m.rank, m.world_size()}, {m.tp_rank(), m.mesh.tp_size()}, {m.dp_rank(), m.mesh.dp_size()}};
  std::vector<std::unique_ptr<Communicator>> comms;
  if (lc.backend == "nccl") {
    absl::StatusOr<std::map<GroupId, std::vector<std::string>>> ids =
        ExchangeUniqueIds(member_.session(), m, groups, NcclUniqueId, lc.collective_timeout);
    if (!ids.ok()) return InPhase("unique ids", ids.status());
    for (size_t i = 0; i < groups.size(); ++i) {
      auto comm = MakeNcclCommunicator(GroupName(groups[i]), (*ids)[groups[i]], places[i].first, places[i].second,
                                       device_.index());
      if (!comm.ok()) return InPhase("comm init", comm.status());
      communicators_.push_back(absl::StrCat((*comm)->name(), " (rank ", places[i].first, " of ", places[i].second,
                                            ") from ", (*ids)[groups[i]].size(),
                                            " unique id(s) brokered by the coordinator"));
      comms.push_back(*std::move(comm));
    }
  } else {
    store_ = c10::make_intrusive<CoordinatorStore>(&client, m, lc.collective_timeout);
    for (size_t i = 0; i < groups.size(); ++i) {
      auto comm = MakeGlooCommunicator(store_, GroupName(groups[i]), places[i].first, places[i].second,
                                       lc.gloo_interface, lc.collective_timeout);
      if (!comm.ok()) return Explain(InPhase("comm init", comm.status()));
      communicators_.push_back(absl::StrCat((*comm)->name(), " (rank ", places[i].first, " of ", places[i].second,
                                            ") through the coordinator's store"));
      comms.push_back(*std::move(comm));
    }
  }
  world_ = std::move(comms[0]);
  tp_ = std::move(comms[1]);
  dp_ = std::move(comms[2]);
  launch_.timings().emplace_back("comm_init", SecondsSince(start));

  // AutoTP on the full model (built on the CPU, identically on every TP rank), then the shards to the
  // device, and the recorded dtype with fp32 masters.
  start = Clock::now();
  if (absl::Status s = ShardLlama(model_, *tp_); !s.ok()) return Explain(InPhase("shard", s));
  model_->to(device_);
  trainer_ = std::make_unique<TrainStep>(model_, dtype_, train_, TrainStep::Groups{tp_.get(), dp_.get(), world_.get()});
  launch_.timings().emplace_back("shard", SecondsSince(start));
  return absl::OkStatus();
}

// --- training -------------------------------------------------------------------------------------------

torch::Tensor Engine::Batch(int64_t step, int micro_step) const {
  const int rows = train_.micro_batch_size;
  torch::Tensor batch = torch::empty({rows, train_.seq_len + 1}, torch::kLong);
  for (int r = 0; r < rows; ++r) {
    const std::vector<int32_t> seq =
        data_->TrainSequence(SequenceIndex(step, micro_step, membership().dp_rank(), r, rows,
                                           train_.gradient_accumulation_steps, membership().mesh.dp_size()));
    batch[r].copy_(torch::tensor(seq, torch::kInt).to(torch::kLong));
  }
  return batch.to(device_, /*non_blocking=*/true);
}

absl::StatusOr<StepStats> Engine::train_batch() {
  StepStats stats;
  stats.lr = train_.schedule.LearningRate(step_);
  stats.tokens = static_cast<int64_t>(train_.train_batch_size) * train_.seq_len;
  try {
    std::vector<torch::Tensor> micro_batches;
    for (int micro = 0; micro < train_.gradient_accumulation_steps; ++micro) {
      micro_batches.push_back(Batch(step_, micro));
    }
    StepResult result = trainer_->Run(micro_batches, stats.lr);
    stats.loss = std::move(result.loss);
    stats.grad_norm = std::move(result.grad_norm);
    stats.skipped = result.skipped;
  } catch (const std::exception& e) {
    return Explain(absl::UnavailableError(absl::StrCat("train_batch at step ", step_, ": ", e.what())));
  }
  ++step_;
  stats.step = step_;
  return stats;
}

absl::StatusOr<double> Engine::eval_loss() {
  // Each DP replica scores its own slice of the windows, micro batch by micro batch (its TP ranks the same
  // rows), and writes each window's loss at the window's index; one all-reduce of that vector gives every
  // rank every loss, summed in window order: the mean cannot depend on the DP size or the micro batch.
  torch::NoGradGuard no_grad;
  const int64_t all = data_->EvalWindows();
  const int64_t windows = train_.eval_windows > 0 ? std::min(train_.eval_windows, all) : all;
  const WindowRange mine = EvalSlice(windows, membership().dp_rank(), membership().mesh.dp_size());
  torch::Tensor losses = torch::zeros({windows}, torch::TensorOptions(torch::kDouble).device(device_));
  try {
    for (int64_t first = mine.begin; first < mine.end; first += train_.micro_batch_size) {
      const int64_t rows = std::min<int64_t>(train_.micro_batch_size, mine.end - first);
      torch::Tensor tokens = torch::empty({rows, train_.seq_len + 1}, torch::kLong);
      for (int64_t r = 0; r < rows; ++r) {
        tokens[r].copy_(torch::tensor(data_->EvalSequence(first + r), torch::kInt).to(torch::kLong));
      }
      tokens = tokens.to(device_);
      losses.narrow(0, first, rows).copy_(NextTokenLossPerSequence(model_->forward(tokens), tokens));
    }
    if (dp_->size() > 1) dp_->AllReduceSum(losses);
    losses = losses.to(torch::kCPU);
  } catch (const std::exception& e) {
    return Explain(absl::UnavailableError(absl::StrCat("eval_loss: ", e.what())));
  }
  const double* loss = losses.data_ptr<double>();
  return std::accumulate(loss, loss + windows, 0.0) / static_cast<double>(windows);
}

// --- checkpoints ----------------------------------------------------------------------------------------

absl::Status Engine::save_checkpoint(const std::string& dir) {
  // DP replicas hold identical shards, so the TP group of DP rank 0 gathers and global rank 0 writes.
  absl::Status status;
  if (membership().dp_rank() == 0) {
    absl::StatusOr<TensorMap> model = GatherFullStateDict(*model_);
    TensorMap local_state;
    const TensorMap state = trainer_->optimizer().State();
    for (const char* kind : kStateKinds) {
      const TensorMap tensors = std::string(kind) == "master"
                                    ? (dtype_ == Dtype::kFloat32 ? TensorMap() : trainer_->masters())
                                    : StateOfKind(state, kind);
      if (tensors.empty()) continue;
      absl::StatusOr<TensorMap> full = GatherFullTensors(*model_, tensors);
      if (!full.ok()) {
        status = full.status();
        break;
      }
      AddKind(*full, kind, &local_state);
    }
    if (!model.ok()) status = model.status();
    if (status.ok() && membership().rank == 0) {
      TrainerState trainer{step_,
                           trainer_->optimizer().step_count(),
                           trainer_->loss_scale(),
                           membership().mesh.tp_size(),
                           membership().world_size(),
                           std::string(ShortDtypeName(dtype_)),
                           membership().job_id};
      status = WriteCheckpoint(dir, model_->config(), dtype_, *model, local_state, trainer);
    }
  }
  // Nobody moves on (or exits) before the checkpoint is on disk; a failed write fails every rank.
  torch::Tensor failed = torch::tensor({status.ok() ? 0.0f : 1.0f}).to(device_);
  try {
    world_->AllReduceSum(failed);
  } catch (const std::exception& e) {
    return Explain(absl::UnavailableError(absl::StrCat("save_checkpoint: ", e.what())));
  }
  if (!status.ok()) return InPhase("save_checkpoint", status);
  if (failed.item<float>() > 0) return absl::UnavailableError("save_checkpoint failed on another rank");
  return absl::OkStatus();
}

absl::Status Engine::load_checkpoint(const std::string& dir) {
  absl::StatusOr<Checkpoint> checkpoint = ReadCheckpoint(dir);
  if (!checkpoint.ok()) return InPhase("load_checkpoint", checkpoint.status());
  const LlamaConfig& mine = model_->config();
  const LlamaConfig& theirs = checkpoint->config;
  if (mine.hidden_size != theirs.hidden_size || mine.num_hidden_layers != theirs.num_hidden_layers ||
      mine.vocab_size != theirs.vocab_size || mine.intermediate_size != theirs.intermediate_size ||
      mine.num_attention_heads != theirs.num_attention_heads ||
      mine.num_key_value_heads != theirs.num_key_value_heads) {
    return absl::FailedPreconditionError(
        absl::StrCat("load_checkpoint: ", dir, " holds a model of another shape than the one being trained"));
  }
  TensorMap masters_full = StateOfKind(checkpoint->optimizer, "master");
  if (masters_full.empty()) {
    for (const auto& [name, t] : checkpoint->model) masters_full[name] = t.to(torch::kFloat32);
  }
  absl::StatusOr<TensorMap> masters = ShardFullTensors(*model_, masters_full);
  if (!masters.ok()) return InPhase("load_checkpoint", masters.status());
  TensorMap state;
  for (const char* kind : {"exp_avg", "exp_avg_sq", "momentum_buffer"}) {
    const TensorMap full = StateOfKind(checkpoint->optimizer, kind);
    if (full.empty()) continue;
    absl::StatusOr<TensorMap> local = ShardFullTensors(*model_, full);
    if (!local.ok()) return InPhase("load_checkpoint", local.status());
    AddKind(*local, kind, &state);
  }
  const int64_t optimizer_steps = checkpoint->state ? checkpoint->state->optimizer_steps : 0;
  if (absl::Status s = trainer_->optimizer().LoadState(state, optimizer_steps); !s.ok()) {
    return InPhase("load_checkpoint", s);
  }
  {
    torch::NoGradGuard no_grad;
    for (auto& [name, master] : trainer_->masters()) master.copy_(masters->at(name));
  }
  trainer_->CopyMastersToParams();
  if (checkpoint->state) {
    step_ = checkpoint->state->step;
    trainer_->set_loss_scale(checkpoint->state->loss_scale);
  }
  return absl::OkStatus();
}

// --- where a generation starts, and how often it saves ---------------------------------------------------

absl::StatusOr<std::string> Engine::resume() {
  constexpr char kKey[] = "tpcoord/resume_from";
  const LaunchConfig& lc = launch_.config();
  const Membership& m = membership();
  absl::StatusOr<std::string> from;
  if (m.rank == 0) {
    from = lc.resume;
    if (!lc.output_dir.empty()) {
      if (std::optional<SavedCheckpoint> newest = NewestCheckpoint(lc.output_dir, m.job_id)) from = newest->dir;
    }
    if (absl::Status s = launch_.client().StoreSet(m, kKey, *from); !s.ok()) return s;
  } else {
    from = launch_.client().StoreGet(m, kKey, lc.collective_timeout);
    if (!from.ok()) return from.status();
  }
  if (!from->empty()) {
    const Clock::time_point start = Clock::now();
    if (absl::Status s = load_checkpoint(*from); !s.ok()) return s;
    launch_.timings().emplace_back("resume", SecondsSince(start));
  }
  first_step_ = step_;
  return from;
}

absl::StatusOr<bool> Engine::checkpoint_if_due(int64_t last_step) {
  const std::string& output_dir = launch_.config().output_dir;
  if (output_dir.empty() || train_.checkpoint_interval <= 0 || step_ % train_.checkpoint_interval != 0 ||
      step_ == last_step) {
    return false;
  }
  if (absl::Status s = save_checkpoint(absl::StrCat(output_dir, "/checkpoint-", step_)); !s.ok()) return s;
  if (membership().rank == 0) PruneCheckpoints(output_dir, membership().job_id, kCheckpointsKept);
  return true;
}

absl::StatusOr<std::string> Engine::save_final_checkpoint() {
  const std::string& output_dir = launch_.config().output_dir;
  if (output_dir.empty() || step_ == first_step_) return std::string();
  const std::string dir = output_dir + "/checkpoint";
  if (absl::Status s = save_checkpoint(dir); !s.ok()) return s;
  return dir;
}

}  // namespace tpcoord
