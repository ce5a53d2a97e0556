// Training through a real coordinator and real tp-worker processes (Gloo on loopback, fp32 unless said):
// TP=1, TP=2 and TP=2 x DP=2 give the same per-step losses and gradient norms; checkpoints reload to the
// same eval loss at any mesh (exactly at any DP size and micro batch); a resumed run continues the loss trajectory exactly;
// the written safetensors file reads back bit-exact; bf16 trains.
#include <gtest/gtest.h>

#include <signal.h>

#include <cmath>
#include <fstream>
#include <map>
#include <sstream>
#include <thread>

#include "absl/strings/match.h"
#include "absl/strings/str_replace.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "nlohmann/json.hpp"
#include "tests/support/coordinator_process.h"
#include "worker/comm/nccl_communicator.h"
#include "worker/model/safetensors.h"

namespace tpcoord {
namespace {

using testing::CoordinatorProcess;
using testing::Subprocess;

// 8 sequences per step: with D = 1 that is 2 micro-batches of 4, with D = 2 one of 4 per DP rank.
constexpr char kConfig[] = R"({
  "train_batch_size": 8,
  "train_micro_batch_size_per_gpu": 4,
  "steps_per_print": 1,
  "gradient_clipping": 1.0,
  "optimizer": {"type": "AdamW", "params": {"lr": 0.003, "weight_decay": 0.01}},
  "scheduler": {"type": "WarmupDecayLR", "params": {"warmup_num_steps": 5, "warmup_max_lr": 0.003, "total_num_steps": 20}},
  %s
  "tpcoord": {"steps": 20, "seq_len": 32, "seed": 7}
})";

struct Log {
  std::map<int, std::string> loss_text;  // as printed, for exact comparisons
  std::map<int, double> loss;
  std::map<int, double> grad_norm;
  std::string eval_text;
};

Log Parse(const std::string& out) {
  Log log;
  for (absl::string_view line : absl::StrSplit(out, '\n')) {
    std::vector<std::string> f = absl::StrSplit(line, ' ');
    if (f.size() >= 8 && f[0] == "step" && f[2] == "loss" && f[6] == "grad_norm") {
      const int step = std::stoi(f[1].substr(0, f[1].find('/')));
      log.loss_text[step] = f[3];
      log.loss[step] = std::stod(f[3]);
      log.grad_norm[step] = std::stod(f[7]);
    } else if (f.size() == 3 && f[0] == "eval" && f[1] == "loss") {
      log.eval_text = f[2];
    }
  }
  return log;
}

class TrainingTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = new std::string(testing::MakeTempDir("training"));
    auto coordinator = CoordinatorProcess::Start(*dir_ + "/state");
    ASSERT_TRUE(coordinator.ok()) << coordinator.status();
    coordinator_ = coordinator->release();
    for (const auto& [name, precision] : {std::pair<std::string, std::string>{"fp32", ""},
                                          {"bf16", R"("bf16": {"enabled": true},)"},
                                          {"autotp2", R"("tensor_parallel": {"autotp_size": 2},)"}}) {
      std::ofstream(*dir_ + "/" + name + ".json") << absl::StrFormat(kConfig, precision);
    }
    std::string micro1 = absl::StrFormat(kConfig, "");
    absl::StrReplaceAll({{R"("train_micro_batch_size_per_gpu": 4)", R"("train_micro_batch_size_per_gpu": 1)"}}, &micro1);
    std::ofstream(*dir_ + "/micro1.json") << micro1;
  }
  static void TearDownTestSuite() {
    delete coordinator_;
    delete dir_;
  }

  // Runs one job of `world` tp-worker processes and returns rank 0's log; every worker must exit 0. Rank 0's
  // whole output goes to `out` when given.
  static Log RunJob(const std::string& job, int world, int tp, std::vector<std::string> extra = {},
                    const std::string& config = "fp32", std::string* out = nullptr) {
    std::vector<std::unique_ptr<Subprocess>> workers;
    for (int rank = 0; rank < world; ++rank) {
      std::vector<std::string> argv = {testing::BinPath("worker/tp-worker"),
                                       "--coordinator", coordinator_->address(),
                                       "--job", job,
                                       "--world-size", std::to_string(world),
                                       "--rank", std::to_string(rank),
                                       "--host", "127.0.0.1",
                                       "--config", *dir_ + "/" + config + ".json",
                                       "--random-init", "tiny",
                                       "--data", absl::StrCat(TPCOORD_SOURCE_DIR, "/deploy/data/public_domain.txt"),
                                       "--timeout", "120s"};
      // tp 0: no --tp-size, config-only AutoTP (no tp_model_init; the config's autotp_size is the TP size).
      if (tp > 0) argv.insert(argv.end(), {"--tp-size", std::to_string(tp)});
      argv.insert(argv.end(), extra.begin(), extra.end());
      auto worker = Subprocess::Start(argv, testing::TokenEnv());
      EXPECT_TRUE(worker.ok()) << worker.status();
      workers.push_back(*std::move(worker));
    }
    for (auto& w : workers) {
      EXPECT_EQ(w->Wait(std::chrono::minutes(5)).value_or(-1), 0) << job << ":\n" << w->Stdout() << w->Stderr();
    }
    if (out) *out = workers[0]->Stdout();
    return Parse(workers[0]->Stdout());
  }

  static std::string Out(const std::string& name) { return *dir_ + "/" + name; }

  static std::string* dir_;
  static CoordinatorProcess* coordinator_;
};

std::string* TrainingTest::dir_ = nullptr;
CoordinatorProcess* TrainingTest::coordinator_ = nullptr;

void ExpectSameTrajectory(const Log& expected, const Log& actual, const std::string& what) {
  ASSERT_EQ(expected.loss.size(), 20u) << what;
  ASSERT_EQ(actual.loss.size(), 20u) << what;
  for (const auto& [step, loss] : expected.loss) {
    EXPECT_NEAR(actual.loss.at(step), loss, 1e-5 * std::abs(loss)) << what << " step " << step;
    EXPECT_NEAR(actual.grad_norm.at(step), expected.grad_norm.at(step), 1e-3) << what << " step " << step;
  }
}

TEST_F(TrainingTest, TensorAndDataParallelReproduceSingleProcessTraining) {
  const Log tp1 = RunJob("tp1", 1, 1);
  const Log tp2 = RunJob("tp2", 2, 2);
  const Log tp2dp2 = RunJob("tp2dp2", 4, 2);
  ExpectSameTrajectory(tp1, tp2, "TP=2");
  ExpectSameTrajectory(tp1, tp2dp2, "TP=2 x DP=2");
  EXPECT_LT(tp1.loss.at(20), tp1.loss.at(1) - 1.0);  // it learns
}

TEST_F(TrainingTest, CheckpointsReloadAndEvaluateAlikeAtAnyMesh) {
  const Log trained = RunJob("ckpt", 4, 2, {"--output-dir", Out("ckpt")});
  ASSERT_FALSE(trained.eval_text.empty());
  const std::string checkpoint = Out("ckpt") + "/checkpoint";
  // Same mesh: the identical eval loss, to the last printed digit.
  const Log same = RunJob("ckpt-same", 4, 2, {"--resume", checkpoint});
  EXPECT_EQ(same.eval_text, trained.eval_text);
  EXPECT_TRUE(same.loss.empty());  // already at step 20: nothing to train
  // Every held-out window is scored once whatever the DP size and micro batch (each window's loss is summed
  // in window order on every rank), so DP and micro batch change only the rounding of the batched matmuls:
  // a replica's slice is a smaller batch, and OpenBLAS picks its kernels by shape (bit-identical on earlier
  // CI machines; 6e-9 relative on an AVX-512 one; 2e-8 with another micro batch).
  auto eval_loss = [](const Log& log) {
    double value = 0;
    EXPECT_TRUE(absl::SimpleAtod(log.eval_text, &value)) << log.eval_text;
    return value;
  };
  const Log tp2dp1 = RunJob("ckpt-tp2-dp1", 2, 2, {"--resume", checkpoint});
  EXPECT_NEAR(eval_loss(tp2dp1), eval_loss(trained), 1e-7 * eval_loss(trained)) << "TP=2: DP=1 against DP=2";
  const Log single = RunJob("ckpt-tp1", 1, 1, {"--resume", checkpoint});  // resharded for one process
  const Log tp1dp2 = RunJob("ckpt-tp1-dp2", 2, 1, {"--resume", checkpoint});
  EXPECT_NEAR(eval_loss(tp1dp2), eval_loss(single), 1e-7 * eval_loss(single)) << "TP=1: DP=1 against DP=2";
  const Log micro1 = RunJob("ckpt-tp1-dp2-micro1", 2, 1, {"--resume", checkpoint}, "micro1");
  const double a = eval_loss(single), b = eval_loss(trained), c = eval_loss(micro1);
  EXPECT_NEAR(c, a, 1e-6 * a) << "TP=1 x DP=2: micro batch 1 against 4";
  // Across TP sizes only the sharded matmuls' rounding differs.
  EXPECT_NEAR(a, b, 1e-5 * b);

  // The file the worker wrote reads back bit-exact: reading and writing it again gives the same bytes.
  const std::string file = checkpoint + "/model.safetensors";
  absl::StatusOr<SafetensorsFile> read = ReadSafetensors(file);
  ASSERT_TRUE(read.ok()) << read.status();
  EXPECT_EQ(read->tensors.count("model.layers.1.mlp.down_proj.weight"), 1u);
  ASSERT_TRUE(WriteSafetensors(Out("rewritten.safetensors"), read->tensors, read->metadata).ok());
  auto bytes = [](const std::string& path) {
    std::ifstream in(path, std::ios::binary);
    std::stringstream s;
    s << in.rdbuf();
    return s.str();
  };
  EXPECT_EQ(bytes(file), bytes(Out("rewritten.safetensors")));
  // And it is a Hugging Face model directory.
  EXPECT_TRUE(absl::StrContains(bytes(checkpoint + "/config.json"), "\"LlamaForCausalLM\""));
}

TEST_F(TrainingTest, ResumeContinuesTheLossTrajectoryExactly) {
  const Log full = RunJob("resume-full", 4, 2);
  RunJob("resume-first-half", 4, 2, {"--steps", "10", "--output-dir", Out("half")});
  const Log second_half = RunJob("resume-second-half", 4, 2, {"--resume", Out("half") + "/checkpoint"});
  ASSERT_EQ(second_half.loss_text.size(), 10u);
  for (const auto& [step, text] : second_half.loss_text) {
    EXPECT_EQ(text, full.loss_text.at(step)) << "step " << step;
  }
}

// Config-only AutoTP, as DeepSpeed now allows ("tensor_parallel": {"autotp_size": 2}, no tp_model_init):
// tp-worker without --tp-size records nothing and joins with the config's TP size: TP=2 x DP=2.
TEST_F(TrainingTest, ConfigOnlyAutotpSizeSetsTheMeshWithoutARecord) {
  std::string out;
  const Log log = RunJob("config-only", 4, 0, {}, "autotp2", &out);
  EXPECT_EQ(log.loss.size(), 20u) << out;
  EXPECT_TRUE(absl::StrContains(out, "generation 1: world 4 = tp 2 x dp 2, dtype fp32")) << out;
  auto stub = coordinator_->NewStub();
  v1::GetJobRequest req;
  req.set_job_id("config-only");
  v1::GetJobResponse job;
  ASSERT_TRUE(stub->GetJob(testing::Deadline().get(), req, &job).ok());
  EXPECT_FALSE(job.job().tp_init_recorded());
  EXPECT_EQ(nlohmann::json::parse(job.job().merged_config_json())["tensor_parallel"]["autotp_size"], 2);
  ASSERT_FALSE(job.job().history().empty());
  EXPECT_EQ(job.job().history(0).tp_size(), 2);
}

TEST_F(TrainingTest, Bf16Trains) {
  const Log bf16 = RunJob("bf16", 2, 2, {"--dtype", "bf16"}, "bf16");
  ASSERT_EQ(bf16.loss.size(), 20u);
  EXPECT_LT(bf16.loss.at(20), bf16.loss.at(1) - 1.0);
}

// A worker whose DeepSpeed config differs from the others' fails at the merge naming the difference (gap
// G27), and the generation ends for everyone with that reason instead of leaving the others waiting.
TEST_F(TrainingTest, AWorkerWithAnotherConfigStopsTheWholeJob) {
  std::ofstream(Out("other.json")) << absl::StrFormat(kConfig, R"("bf16": {"enabled": false},)");
  std::vector<std::unique_ptr<Subprocess>> workers;
  for (const std::string config : {"fp32", "other"}) {
    workers.push_back(*Subprocess::Start(
        {testing::BinPath("worker/tp-worker"), "--coordinator", coordinator_->address(), "--job", "mismatch",
         "--world-size", "2", "--rank", config == "fp32" ? "0" : "1", "--tp-size", "2", "--host", "127.0.0.1",
         "--config", Out(config + ".json"), "--random-init", "tiny", "--data",
         absl::StrCat(TPCOORD_SOURCE_DIR, "/deploy/data/public_domain.txt"), "--timeout", "60s"}, testing::TokenEnv()));
  }
  for (auto& w : workers) ASSERT_TRUE(w->Wait(std::chrono::minutes(2)).ok()) << w->Stdout() << w->Stderr();
  // Whichever merged second is told the difference; the other learns from the coordinator why the job ended.
  const int refused = absl::StartsWith(workers[0]->Stderr(), "tp-worker: merge:") ? 0 : 1;
  // The refused one can never succeed (exit 3: do not restart), and it said so when it left: the other
  // stops too (3), instead of rejoining to wait for it.
  EXPECT_EQ(*workers[refused]->Wait(std::chrono::seconds(1)), 3);
  EXPECT_EQ(*workers[1 - refused]->Wait(std::chrono::seconds(1)), 3);
  const std::string difference = refused == 0 ? "rank 1 has {\"enabled\":false}, rank 0 has <absent>"
                                               : "rank 0 has <absent>, rank 1 has {\"enabled\":false}";
  EXPECT_TRUE(absl::StrContains(workers[refused]->Stderr(),
                                absl::StrCat("merge: job mismatch: the config of rank ", refused,
                                             " differs from the config rank ", 1 - refused,
                                             " merged first in generation 1 at /bf16: ", difference)))
      << workers[refused]->Stderr();
  EXPECT_TRUE(absl::StrContains(workers[1 - refused]->Stderr(),
                                absl::StrCat("generation 1 ended: rank ", refused, " (host 127.0.0.1, worker 127.0.0.1:")))
      << workers[1 - refused]->Stderr();
  EXPECT_TRUE(absl::StrContains(workers[1 - refused]->Stderr(), ") left: merge: job mismatch: the config of rank"))
      << workers[1 - refused]->Stderr();
}

// A second tp_model_init with another tp_size is rejected with DeepSpeed's message.
TEST_F(TrainingTest, ConflictingTpSizeIsRejectedWithDeepSpeedsMessage) {
  RunJob("conflict", 1, 1);
  auto worker = *Subprocess::Start({testing::BinPath("worker/tp-worker"), "--coordinator", coordinator_->address(),
                                    "--job", "conflict", "--world-size", "2", "--tp-size", "2", "--config",
                                    Out("fp32.json"), "--random-init", "tiny", "--data",
                                    absl::StrCat(TPCOORD_SOURCE_DIR, "/deploy/data/public_domain.txt")}, testing::TokenEnv());
  EXPECT_EQ(worker->Wait(std::chrono::minutes(2)).value_or(-1), 3);  // a fatal configuration error
  EXPECT_TRUE(absl::StartsWith(worker->Stderr(),
                               "tp-worker: Conflicting tp_model_init arguments detected across multiple calls.\n"
                               "  (job conflict: recorded tp_size=1 dtype=torch.float32 tp_group=None; this call "
                               "tp_size=2 dtype=torch.float32 tp_group=None)\n"))
      << worker->Stderr();
}

// Without a usable GPU, --backend nccl fails at once, naming the backend that works, and before it joins.
// libgomp reads OMP_WAIT_POLICY once, as it loads: tp-worker re-executes itself with PASSIVE (its spinning
// default made --threads 2 slower than 1), and leaves a policy the environment sets alone.
TEST_F(TrainingTest, WorkersRunWithAPassiveOpenMpWaitPolicyUnlessTheEnvironmentSetsOne) {
  auto environ_of = [](pid_t pid) {
    std::ifstream in(absl::StrCat("/proc/", pid, "/environ"), std::ios::binary);
    std::stringstream s;
    s << in.rdbuf();
    return s.str();
  };
  for (const std::string& given : {std::string(), std::string("ACTIVE")}) {
    std::map<std::string, std::string> env = testing::TokenEnv();
    if (!given.empty()) env["OMP_WAIT_POLICY"] = given;
    // A world of 2 with one worker: it waits in Join, long enough to be looked at.
    auto worker = Subprocess::Start({testing::BinPath("worker/tp-worker"), "--coordinator", coordinator_->address(),
                                     "--job", "wait-policy-" + (given.empty() ? "unset" : given), "--world-size", "2",
                                     "--config", Out("fp32.json"), "--random-init", "tiny", "--data",
                                     absl::StrCat(TPCOORD_SOURCE_DIR, "/deploy/data/public_domain.txt"),
                                     "--timeout", "60s"},
                                    env);
    ASSERT_TRUE(worker.ok()) << worker.status();
    const std::string expected = "OMP_WAIT_POLICY=" + (given.empty() ? std::string("PASSIVE") : given);
    std::string seen;
    for (int i = 0; i < 300 && !absl::StrContains(seen, expected + '\0'); ++i) {
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
      seen = environ_of((*worker)->pid());
    }
    EXPECT_TRUE(absl::StrContains(seen, expected + '\0')) << "given: " << given;
    if (!given.empty()) EXPECT_FALSE(absl::StrContains(seen, "OMP_WAIT_POLICY=PASSIVE"));
    (*worker)->SignalGroup(SIGKILL);  // the supervisor and its trainer
    (*worker)->Wait(std::chrono::seconds(30)).IgnoreError();
  }
}

// A device and backend that cannot work here are refused at start, before anything reaches the coordinator:
// exit 3 (no restart cures it), naming the flags, the LibTorch build and what to use instead.
TEST_F(TrainingTest, ADeviceOrBackendThatCannotWorkHereIsRefusedAtStart) {
  if (CheckNcclUsable().ok()) GTEST_SKIP() << "this machine has a usable GPU";
  auto run = [&](const std::string& job, std::vector<std::string> flags) {
    std::vector<std::string> argv = {testing::BinPath("worker/tp-worker"), "--coordinator", coordinator_->address(),
                                     "--job", job, "--world-size", "2", "--tp-size", "2", "--config",
                                     Out("fp32.json"), "--random-init", "tiny", "--data",
                                     absl::StrCat(TPCOORD_SOURCE_DIR, "/deploy/data/public_domain.txt")};
    argv.insert(argv.end(), flags.begin(), flags.end());
    auto worker = *Subprocess::Start(argv, testing::TokenEnv());
    EXPECT_EQ(worker->Wait(std::chrono::minutes(1)).value_or(-1), 3) << worker->Stderr();
    return worker->Stderr();
  };
  const std::string nccl = run("nccl", {"--backend", "nccl"});
  EXPECT_TRUE(absl::StrContains(nccl, "tp-worker: --backend nccl needs --device cuda, but --device is auto (the "
                                      "CPU): NCCL moves GPU memory only; use --backend gloo on the CPU"))
      << nccl;
  const std::string cuda = run("cuda", {"--device", "cuda"});
  EXPECT_TRUE(absl::StrContains(cuda, "tp-worker: --device cuda: this tp-worker is built against LibTorch "))
      << cuda;
  EXPECT_TRUE(absl::StrContains(cuda, ", CPU only, which cannot compute on a GPU; use --device cpu")) << cuda;
  auto stub = coordinator_->NewStub();
  for (const char* job : {"nccl", "cuda"}) {
    v1::GetJobRequest req;
    req.set_job_id(job);
    v1::GetJobResponse got;
    EXPECT_EQ(stub->GetJob(testing::Deadline().get(), req, &got).error_code(), grpc::StatusCode::NOT_FOUND) << job;
  }
}

}  // namespace
}  // namespace tpcoord
