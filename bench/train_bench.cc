// train_bench: training throughput of real tp-worker processes on this machine's CPUs, for TP=1 on one and
// on every core, TP=2 and TP=2 x DP=2 on one fixed model, against PyTorch training the same model
// (bench/pytorch_train_step.py) and the machine's fp32 GEMM rate, all measured in the same run, with the
// model FLOPs utilisation that follows and the fastest shape. With --device cuda: bf16 jobs on the GPUs, with
// tokens/s and MFU against the GPU's peak (GpuMain).
//
//   build/bench/train_bench [--preset small] [--steps 20] [--seq-len 128] [--threads N] [--repeats 3]
//   build/bench/train_bench --device cuda --preset 350m --seq-len 1024 [--python python3]
//
// Each configuration is a real job: a tp-coordinator process and W tp-worker processes (Gloo on loopback),
// 8 sequences of --seq-len tokens per optimizer step. Step times are rank 0's, averaged over the steps after
// the first three (warm-up). Model FLOPs per token are 6 x (parameters in matmuls) + 12 x layers x hidden x
// seq_len (attention scores and values), forward and backward; MFU divides the achieved model FLOP/s by the
// GEMM rate of the cores the job's processes can use.
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <fstream>
#include <numeric>
#include <thread>

#include <torch/torch.h>

#include "absl/flags/flag.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "common/process_init.h"
#include "tests/support/coordinator_process.h"
#include "tests/support/subprocess.h"
#include "worker/model/llama_model.h"
#include "worker/training/compute_threads.h"
#include "worker/training/device.h"

ABSL_FLAG(std::string, preset, "small", "Llama preset");
ABSL_FLAG(int, steps, 20, "optimizer steps per configuration");
ABSL_FLAG(int, seq_len, 128, "tokens per sequence");
ABSL_FLAG(int, threads, 0, "threads of the multi-threaded TP=1 shape (0: one per core)");
ABSL_FLAG(int, repeats, 3, "interleaved runs of every shape; the median is printed");
ABSL_FLAG(bool, pytorch, true, "also run bench/pytorch_train_step.py (Debian's python3-torch) as the baseline");
ABSL_FLAG(std::string, device, "cpu",
          "cpu, or cuda: bf16 jobs on the visible GPUs (TP=1 on one, TP over all), MFU against the GPU's peak "
          "dense bf16 FLOP/s, and PyTorch with bf16 autocast on one GPU");
ABSL_FLAG(std::string, python, "/usr/bin/python3", "the python3 with torch for the baseline");

namespace tpcoord {
namespace {

using Clock = std::chrono::steady_clock;

// fp32 GFLOP/s of an n x n matmul on `threads` threads, timed for about a second.
double GemmGflops(int n, int threads) {
  SetComputeThreads(threads);
  const torch::Tensor a = torch::randn({n, n});
  const torch::Tensor b = torch::randn({n, n});
  torch::mm(a, b);  // warm-up
  int iterations = 0;
  const Clock::time_point start = Clock::now();
  double seconds = 0;
  while (seconds < 1.0) {
    torch::mm(a, b);
    ++iterations;
    seconds = std::chrono::duration<double>(Clock::now() - start).count();
  }
  return 2.0 * n * n * n * iterations / seconds / 1e9;
}

double FlopsPerToken(const LlamaConfig& c, int seq_len) {
  const double h = c.hidden_size, kv = c.num_key_value_heads * c.head_dim, q = c.num_attention_heads * c.head_dim;
  const double per_layer = h * q + 2 * h * kv + q * h + 3 * h * c.intermediate_size;
  const double matmul_params = c.num_hidden_layers * per_layer + h * c.vocab_size;  // + lm_head
  return 6 * matmul_params + 12.0 * c.num_hidden_layers * q * seq_len;
}

struct Run {
  double step_ms = 0;
  double tokens_per_s = 0;
  std::string error;
};

bool OnGpu() { return absl::GetFlag(FLAGS_device) == "cuda"; }

Run RunJob(const std::string& dir, const std::string& name, int world, int tp, int steps, int seq_len, int threads) {
  Run run;
  const std::string config = absl::StrCat(dir, "/", name, ".json");
  std::ofstream(config) << absl::StrFormat(
      R"({"train_batch_size": 8, "steps_per_print": 1, "optimizer": {"type": "AdamW", "params": {"lr": 0.001}},)"
      R"( %s"tpcoord": {"steps": %d, "seq_len": %d, "eval_windows": 8}})",
      OnGpu() ? R"("bf16": {"enabled": true}, )" : "", steps, seq_len);
  auto coordinator = testing::Subprocess::Start({testing::BinPath("coordinator/tp-coordinator"), "--listen",
                                                 "127.0.0.1:0", "--state-dir", dir + "/state-" + name});
  if (!coordinator.ok()) return {0, 0, std::string(coordinator.status().message())};
  absl::StatusOr<std::string> line = (*coordinator)->WaitForLine("tp-coordinator listening on ", std::chrono::seconds(30));
  if (!line.ok()) return {0, 0, std::string(line.status().message())};
  const std::string address = line->substr(line->rfind(' ') + 1);
  std::vector<std::unique_ptr<testing::Subprocess>> workers;
  for (int rank = 0; rank < world; ++rank) {
    auto worker = testing::Subprocess::Start(
        {testing::BinPath("worker/tp-worker"), "--coordinator", address, "--job", name, "--world-size",
         std::to_string(world), "--rank", std::to_string(rank), "--tp-size", std::to_string(tp), "--host", "127.0.0.1",
         "--config", config, "--random-init", absl::GetFlag(FLAGS_preset), "--data",
         absl::StrCat(TPCOORD_SOURCE_DIR, "/deploy/data/public_domain.txt"), "--threads", std::to_string(threads),
         "--device", OnGpu() ? "cuda" : "cpu"},
        [rank] {
          std::map<std::string, std::string> env = testing::TokenEnv();
          env["LOCAL_RANK"] = std::to_string(rank);  // one GPU per worker, as tp-agent and torchrun set it
          return env;
        }());
    if (!worker.ok()) return {0, 0, std::string(worker.status().message())};
    workers.push_back(*std::move(worker));
  }
  for (auto& w : workers) {
    if (w->Wait(std::chrono::minutes(20)).value_or(-1) != 0) return {0, 0, w->Stderr()};
  }
  std::vector<double> step_ms;
  for (absl::string_view text : absl::StrSplit(workers[0]->Stdout(), '\n')) {
    std::vector<std::string> f = absl::StrSplit(text, ' ');
    int step;
    double ms;
    if (f.size() >= 12 && f[0] == "step" && absl::SimpleAtoi(f[1].substr(0, f[1].find('/')), &step) && step > 3 &&
        absl::SimpleAtod(f[11], &ms)) {
      step_ms.push_back(ms);
    }
  }
  if (step_ms.empty()) return {0, 0, "no step timings in rank 0's output"};
  run.step_ms = std::accumulate(step_ms.begin(), step_ms.end(), 0.0) / step_ms.size();
  run.tokens_per_s = 8.0 * seq_len / (run.step_ms / 1e3);
  return run;
}

// PyTorch's step time for the same model, batch and optimizer (bench/pytorch_train_step.py), or an error.
Run RunPyTorch(int steps, int seq_len, int threads) {
  std::vector<std::string> argv = {absl::GetFlag(FLAGS_python),
                                   absl::StrCat(TPCOORD_SOURCE_DIR, "/bench/pytorch_train_step.py"), "--preset",
                                   absl::GetFlag(FLAGS_preset), "--seq-len", std::to_string(seq_len), "--steps",
                                   std::to_string(steps), "--threads", std::to_string(threads)};
  if (OnGpu()) argv.insert(argv.end(), {"--device", "cuda", "--bf16"});
  auto python = testing::Subprocess::Start(argv);
  if (!python.ok()) return {0, 0, std::string(python.status().message())};
  if ((*python)->Wait(std::chrono::minutes(20)).value_or(-1) != 0) return {0, 0, (*python)->Stderr()};
  Run run;
  for (absl::string_view text : absl::StrSplit((*python)->Stdout(), '\n')) {
    std::vector<std::string> f = absl::StrSplit(text, ' ');
    if (f.size() == 3 && f[0] == "pytorch" && absl::SimpleAtod(f[2], &run.step_ms)) {
      run.tokens_per_s = 8.0 * seq_len / (run.step_ms / 1e3);
      return run;
    }
  }
  return {0, 0, "no step_ms line from " + std::string("bench/pytorch_train_step.py")};
}

double Median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v.size() % 2 ? v[v.size() / 2] : (v[v.size() / 2 - 1] + v[v.size() / 2]) / 2;
}

// On the visible GPUs: bf16 tp-worker jobs, TP=1 on one GPU and (with several) TP over all of them, and
// PyTorch with bf16 autocast on one; tokens/s and MFU against the GPU's peak dense bf16 FLOP/s, 6 N per token
// (as tp-worker's own summary) and with attention's.
int GpuMain(const LlamaConfig& config, int steps, int seq_len, int repeats) {
  const int gpus = static_cast<int>(torch::cuda::device_count());
  const std::optional<PeakFlops> peak = PeakBf16Flops(torch::Device(torch::kCUDA, 0));
  if (gpus == 0 || !peak) {
    std::fprintf(stderr, "train_bench --device cuda: %s\n", TorchBuildDescription().c_str());
    return 2;
  }
  const double six_n = 6.0 * static_cast<double>(config.ParameterCount());
  const double with_attention = FlopsPerToken(config, seq_len);
  std::printf("train_bench: preset %s (%.0f M parameters), bf16, 8 x %d tokens per step, %d steps, %d x %s "
              "(peak %.0f TFLOP/s dense bf16 each), median of %d runs\n",
              absl::GetFlag(FLAGS_preset).c_str(), config.ParameterCount() / 1e6, seq_len, steps, gpus,
              peak->gpu.c_str(), peak->bf16_dense / 1e12, repeats);
  const std::string dir = testing::MakeTempDir("train-bench-gpu");
  std::vector<std::pair<std::string, int>> shapes = {{"tp1 1 GPU", 1}};
  if (gpus > 1) shapes.push_back({absl::StrCat("tp", gpus, " ", gpus, " GPUs"), gpus});
  int failures = 0;
  auto report = [&](const std::string& name, int used, const std::vector<double>& ms, const std::string& error) {
    if (!error.empty()) {
      std::printf("  %-20s FAILED: %s\n", name.c_str(), error.c_str());
      return;
    }
    const double tokens_per_s = 8.0 * seq_len / (Median(ms) / 1e3);
    std::printf("  %-20s %9.0f tokens/s  %7.1f ms/step  MFU %4.1f%% (6N), %4.1f%% with attention, of %d GPU(s)\n",
                name.c_str(), tokens_per_s, Median(ms), 100 * six_n * tokens_per_s / (peak->bf16_dense * used),
                100 * with_attention * tokens_per_s / (peak->bf16_dense * used), used);
  };
  for (const auto& [name, world] : shapes) {
    std::vector<double> ms;
    std::string error;
    for (int r = 0; r < repeats && error.empty(); ++r) {
      const Run run = RunJob(dir, absl::StrCat("g", world, "-", r), world, world, steps, seq_len, 1);
      if (run.error.empty()) ms.push_back(run.step_ms);
      else error = run.error;
    }
    failures += error.empty() ? 0 : 1;
    report(name, world, ms, error);
  }
  if (absl::GetFlag(FLAGS_pytorch)) {
    std::vector<double> ms;
    std::string error;
    for (int r = 0; r < repeats && error.empty(); ++r) {
      const Run run = RunPyTorch(steps, seq_len, 1);
      if (run.error.empty()) ms.push_back(run.step_ms);
      else error = run.error;
    }
    report("PyTorch 1 GPU", 1, ms, error);
  }
  return failures == 0 ? 0 : 1;
}

int Main() {
  const int cores = static_cast<int>(std::thread::hardware_concurrency());
  const int threads = absl::GetFlag(FLAGS_threads) > 0 ? absl::GetFlag(FLAGS_threads) : cores;
  const int steps = absl::GetFlag(FLAGS_steps);
  const int seq_len = absl::GetFlag(FLAGS_seq_len);
  const int repeats = std::max(1, absl::GetFlag(FLAGS_repeats));
  absl::StatusOr<LlamaConfig> config = LlamaConfig::Preset(absl::GetFlag(FLAGS_preset));
  if (!config.ok()) {
    std::fprintf(stderr, "%s\n", std::string(config.status().message()).c_str());
    return 2;
  }
  if (OnGpu()) return GpuMain(*config, steps, seq_len, repeats);
  const double gemm_1 = GemmGflops(1024, 1);
  const double gemm_all = GemmGflops(1024, cores);
  const double flops_per_token = FlopsPerToken(*config, seq_len);
  std::printf("train_bench: preset %s (hidden %lld, %lld layers), 8 x %d tokens per step, %d steps, %d cores, "
              "median of %d interleaved runs\n",
              absl::GetFlag(FLAGS_preset).c_str(), static_cast<long long>(config->hidden_size),
              static_cast<long long>(config->num_hidden_layers), seq_len, steps, cores, repeats);
  std::printf("  %s\n", DeviceDescription(torch::kCPU).c_str());
  std::printf("  fp32 GEMM 1024^3: %.1f GFLOP/s on 1 thread, %.1f GFLOP/s on %d threads; model %.1f MFLOP per token\n",
              gemm_1, gemm_all, cores, flops_per_token / 1e6);
  const std::string dir = testing::MakeTempDir("train-bench");
  struct Shape {
    std::string name;
    int world, tp, threads;
    bool pytorch = false;
    std::vector<double> step_ms;
    std::string error;
  };
  std::vector<Shape> shapes = {{"tp1 x1 thread", 1, 1, 1, false, {}, {}},
                               {absl::StrCat("tp1 x", threads, " threads"), 1, 1, threads, false, {}, {}},
                               {"tp2 x1 thread", 2, 2, 1, false, {}, {}},
                               {"tp2-dp2 x1 thread", 4, 2, 1, false, {}, {}}};
  if (absl::GetFlag(FLAGS_pytorch)) {
    shapes.push_back({"PyTorch x1 thread", 1, 1, 1, true, {}, {}});
    shapes.push_back({absl::StrCat("PyTorch x", threads, " threads"), 1, 1, threads, true, {}, {}});
  }
  for (int r = 0; r < repeats; ++r) {  // interleaved, so that the machine's drift hits every shape alike
    for (size_t i = 0; i < shapes.size(); ++i) {
      Shape& shape = shapes[i];
      if (!shape.error.empty()) continue;
      const Run run = shape.pytorch ? RunPyTorch(steps, seq_len, shape.threads)
                                    : RunJob(dir, absl::StrCat("s", i, "-", r), shape.world, shape.tp, steps, seq_len,
                                             shape.threads);
      if (run.error.empty()) shape.step_ms.push_back(run.step_ms);
      else shape.error = run.error;
    }
  }
  int failures = 0;
  const Shape* best = nullptr;
  for (const Shape& shape : shapes) {
    if (!shape.error.empty()) {
      std::printf("  %-20s FAILED: %s\n", shape.name.c_str(), shape.error.c_str());
      failures += shape.pytorch ? 0 : 1;  // a machine without python3-torch still measures tpcoord
      continue;
    }
    const double ms = Median(shape.step_ms);
    const double tokens_per_s = 8.0 * seq_len / (ms / 1e3);
    const int used_cores = std::min(cores, shape.world * shape.threads);
    const double peak = used_cores == 1 ? gemm_1 : gemm_all * used_cores / cores;
    const double achieved = tokens_per_s * flops_per_token / 1e9;
    std::printf("  %-20s W=%d: %7.0f tokens/s  %7.1f ms/step  %6.2f GFLOP/s  MFU %4.1f%% of %d core(s)  x%.2f vs tp1 x1\n",
                shape.name.c_str(), shape.world, tokens_per_s, ms, achieved, 100 * achieved / peak, used_cores,
                shapes[0].step_ms.empty() ? 0.0 : Median(shapes[0].step_ms) / ms);
    if (!shape.pytorch && (!best || ms < Median(best->step_ms))) best = &shape;
  }
  auto ratio = [&](size_t a, size_t b) {
    return shapes[a].step_ms.empty() || shapes[b].step_ms.empty() ? 0.0 : Median(shapes[a].step_ms) / Median(shapes[b].step_ms);
  };
  std::printf("  --threads %d against 1 (TP=1): x%.2f faster (goal >= 1.40)\n", threads, ratio(0, 1));
  if (shapes.size() > 4) {
    std::printf("  step time against PyTorch on the same model, batch and AdamW: x%.2f at 1 thread (goal <= 1.05), "
                "x%.2f at %d\n", ratio(0, 4), ratio(1, 5), threads);
  }
  if (best) std::printf("  best shape for this machine: %s\n", best->name.c_str());
  return failures == 0 ? 0 : 1;
}

}  // namespace
}  // namespace tpcoord

int main(int argc, char** argv) {
  tpcoord::InitProcess(argc, argv);
  return tpcoord::Main();
}
