// train_bench: training throughput of real tp-worker processes on this machine's CPUs, for TP=1, TP=2 and
// TP=2 x DP=2 on one fixed model, next to the machine's fp32 GEMM rate measured in the same run, and the
// model FLOPs utilisation that follows.
//
//   build/bench/train_bench [--preset small] [--steps 20] [--seq-len 128] [--threads 1]
//
// Each configuration is a real job: a tp-coordinator process and W tp-worker processes (Gloo on loopback),
// 8 sequences of --seq-len tokens per optimizer step. Step times are rank 0's, averaged over the steps after
// the first three (warm-up). Model FLOPs per token are 6 x (parameters in matmuls) + 12 x layers x hidden x
// seq_len (attention scores and values), forward and backward; MFU divides the achieved model FLOP/s by the
// GEMM rate of the cores the job's processes can use.
#include <unistd.h>

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
#include "tests/support/subprocess.h"
#include "worker/model/llama_model.h"
#include "worker/training/compute_threads.h"

ABSL_FLAG(std::string, preset, "small", "Llama preset");
ABSL_FLAG(int, steps, 20, "optimizer steps per configuration");
ABSL_FLAG(int, seq_len, 128, "tokens per sequence");
ABSL_FLAG(int, threads, 1, "compute threads per worker process");

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

Run RunJob(const std::string& dir, const std::string& name, int world, int tp, int steps, int seq_len, int threads) {
  Run run;
  const std::string config = absl::StrCat(dir, "/", name, ".json");
  std::ofstream(config) << absl::StrFormat(
      R"({"train_batch_size": 8, "steps_per_print": 1, "optimizer": {"type": "AdamW", "params": {"lr": 0.001}},)"
      R"( "tpcoord": {"steps": %d, "seq_len": %d, "eval_windows": 8}})",
      steps, seq_len);
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
         absl::StrCat(TPCOORD_SOURCE_DIR, "/deploy/data/public_domain.txt"), "--threads", std::to_string(threads)});
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

int Main() {
  const int cores = static_cast<int>(std::thread::hardware_concurrency());
  const int threads = absl::GetFlag(FLAGS_threads);
  const int steps = absl::GetFlag(FLAGS_steps);
  const int seq_len = absl::GetFlag(FLAGS_seq_len);
  absl::StatusOr<LlamaConfig> config = LlamaConfig::Preset(absl::GetFlag(FLAGS_preset));
  if (!config.ok()) {
    std::fprintf(stderr, "%s\n", std::string(config.status().message()).c_str());
    return 2;
  }
  const double gemm_1 = GemmGflops(1024, 1);
  const double gemm_all = GemmGflops(1024, cores);
  const double flops_per_token = FlopsPerToken(*config, seq_len);
  std::printf("train_bench: preset %s (hidden %lld, %lld layers), 8 x %d tokens per step, %d steps, %d thread(s) per "
              "worker, %d cores\n",
              absl::GetFlag(FLAGS_preset).c_str(), static_cast<long long>(config->hidden_size),
              static_cast<long long>(config->num_hidden_layers), seq_len, steps, threads, cores);
  std::printf("  %s\n", BlasDescription().c_str());
  std::printf("  fp32 GEMM 1024^3: %.1f GFLOP/s on 1 thread, %.1f GFLOP/s on %d threads; model %.1f MFLOP per token\n",
              gemm_1, gemm_all, cores, flops_per_token / 1e6);
  const std::string dir = testing::MakeTempDir("train-bench");
  struct Shape {
    const char* name;
    int world, tp;
  };
  double baseline = 0;
  int failures = 0;
  for (const Shape& shape : {Shape{"tp1", 1, 1}, Shape{"tp2", 2, 2}, Shape{"tp2-dp2", 4, 2}}) {
    const Run run = RunJob(dir, shape.name, shape.world, shape.tp, steps, seq_len, threads);
    if (!run.error.empty()) {
      std::printf("  %-8s FAILED: %s\n", shape.name, run.error.c_str());
      ++failures;
      continue;
    }
    const int used_cores = std::min(cores, shape.world * threads);
    const double peak = used_cores == 1 ? gemm_1 : gemm_all * used_cores / cores;
    const double achieved = run.tokens_per_s * flops_per_token / 1e9;
    if (baseline == 0) baseline = run.tokens_per_s;
    std::printf("  %-8s W=%d: %8.0f tokens/s  %7.1f ms/step  %6.2f GFLOP/s  MFU %4.1f%% of %d core(s)  x%.2f vs tp1\n",
                shape.name, shape.world, run.tokens_per_s, run.step_ms, achieved, 100 * achieved / peak, used_cores,
                run.tokens_per_s / baseline);
  }
  return failures == 0 ? 0 : 1;
}

}  // namespace
}  // namespace tpcoord

int main(int argc, char** argv) {
  tpcoord::InitProcess(argc, argv);
  return tpcoord::Main();
}
