// Elastic training through real processes: a TP=2 x DP=2 job of tp-worker processes whose workers are
// killed (kill -9) or frozen (SIGSTOP) mid-training. The survivors are told which rank failed, their
// supervisors restart them into the next generation, a replacement started with the same arguments joins,
// everyone resumes from the newest complete checkpoint, and the job ends with the loss of a run that never
// failed, to the printed digit. With a world-size range, a job that loses a whole data-parallel replica goes on
// with fewer replicas and the same global batch. --max-restarts bounds the restarts; a fatal configuration is
// never retried.
#include <signal.h>

#include <gtest/gtest.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <optional>
#include <set>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "tests/support/coordinator_process.h"

namespace tpcoord {
namespace {

using testing::CoordinatorProcess;
using testing::Subprocess;
using std::chrono::milliseconds;
using std::chrono::seconds;

constexpr int kLeaseSeconds = 2;

// 60 steps of 8 sequences, a checkpoint every 10.
constexpr char kConfig[] = R"({
  "train_batch_size": 8,
  "train_micro_batch_size_per_gpu": 4,
  "steps_per_print": 5,
  "gradient_clipping": 1.0,
  "optimizer": {"type": "AdamW", "params": {"lr": 0.003, "weight_decay": 0.01}},
  "scheduler": {"type": "WarmupDecayLR", "params": {"warmup_num_steps": 5, "warmup_max_lr": 0.003, "total_num_steps": 60}},
  "tpcoord": {"steps": 60, "seq_len": 32, "seed": 7, "checkpoint_interval": 10}
})";

// Rank 0's last loss line and eval line, as printed.
std::string Outcome(const std::string& out) {
  std::string last_step, eval;
  for (absl::string_view line : absl::StrSplit(out, '\n')) {
    if (absl::StartsWith(line, "step 60/60 loss ")) last_step = std::string(line.substr(0, line.find(" lr ")));
    if (absl::StartsWith(line, "eval loss ")) eval = std::string(line);
  }
  return last_step + " | " + eval;
}

class ElasticTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = new std::string(testing::MakeTempDir("elastic"));
    std::ofstream(*dir_ + "/config.json") << kConfig;
    auto coordinator =
        CoordinatorProcess::Start(*dir_ + "/state", {"--lease", absl::StrCat(kLeaseSeconds, "s")});
    ASSERT_TRUE(coordinator.ok()) << coordinator.status();
    coordinator_ = coordinator->release();
  }
  static void TearDownTestSuite() {
    delete coordinator_;
    delete dir_;
  }

  // One tp-worker of job `job` (rank `rank` of 4, TP 2), its checkpoints in the job's own directory.
  static std::unique_ptr<Subprocess> Worker(const std::string& job, int rank, std::vector<std::string> extra = {}) {
    std::vector<std::string> argv = {testing::BinPath("worker/tp-worker"),
                                     "--coordinator", coordinator_->address(),
                                     "--job", job,
                                     "--world-size", "4",
                                     "--rank", std::to_string(rank),
                                     "--tp-size", "2",
                                     "--host", "127.0.0.1",
                                     "--config", *dir_ + "/config.json",
                                     "--random-init", "tiny",
                                     "--data", absl::StrCat(TPCOORD_SOURCE_DIR, "/deploy/data/public_domain.txt"),
                                     "--output-dir", *dir_ + "/" + job,
                                     "--timeout", "60s"};
    argv.insert(argv.end(), extra.begin(), extra.end());
    auto worker = Subprocess::Start(argv, testing::TokenEnv());
    EXPECT_TRUE(worker.ok()) << worker.status();
    return worker.ok() ? *std::move(worker) : nullptr;
  }

  static std::vector<std::unique_ptr<Subprocess>> StartJob(const std::string& job, std::vector<std::string> extra) {
    std::vector<std::unique_ptr<Subprocess>> workers;
    for (int rank = 0; rank < 4; ++rank) workers.push_back(Worker(job, rank, extra));
    return workers;
  }

  static void ExpectAllExit(std::vector<std::unique_ptr<Subprocess>>& workers, int code) {
    for (auto& w : workers) {
      EXPECT_EQ(w->Wait(std::chrono::minutes(3)).value_or(-1), code) << w->Stdout() << w->Stderr();
    }
  }

  // What a run without any failure ends with (computed once).
  static const std::string& Uninterrupted() {
    static const std::string* outcome = [] {
      std::vector<std::unique_ptr<Subprocess>> workers = StartJob("uninterrupted", {});
      ExpectAllExit(workers, 0);
      return new std::string(Outcome(workers[0]->Stdout()));
    }();
    return *outcome;
  }

  static std::string* dir_;
  static CoordinatorProcess* coordinator_;
};

std::string* ElasticTest::dir_ = nullptr;
CoordinatorProcess* ElasticTest::coordinator_ = nullptr;

// The survivors' supervisors say that generation `generation` ended because of rank `rank`.
void ExpectToldOf(std::vector<std::unique_ptr<Subprocess>>& workers, std::vector<int> survivors, int generation,
                  int rank, const std::string& why) {
  for (int s : survivors) {
    absl::StatusOr<std::string> told =
        workers[s]->WaitForLine("tp-worker: restarting the trainer (restart ", seconds(30), /*on_stderr=*/true);
    ASSERT_TRUE(told.ok()) << told.status();
    EXPECT_TRUE(absl::StrContains(*told, absl::StrCat("generation ", generation, " ended: rank ", rank,
                                                      " (host 127.0.0.1, worker 127.0.0.1:")))
        << *told;
    EXPECT_TRUE(absl::StrContains(*told, why)) << *told;
  }
}

TEST_F(ElasticTest, AKilledWorkerIsReplacedAndTheJobEndsAsIfNothingHappened) {
  const std::string expected = Uninterrupted();
  ASSERT_TRUE(absl::StartsWith(expected, "step 60/60 loss ")) << expected;
  std::vector<std::unique_ptr<Subprocess>> workers = StartJob("killed", {"--max-restarts", "3"});
  ASSERT_TRUE(workers[0]->WaitForLine("step 25/60 ", seconds(120)).ok());
  workers[1]->Signal(SIGKILL);  // the supervisor; its trainer dies with it
  ASSERT_EQ(*workers[1]->Wait(seconds(10)), 128 + SIGKILL);
  ExpectToldOf(workers, {0, 2, 3}, 1, 1, "is gone: its session closed before it finished");

  workers[1] = Worker("killed", 1, {"--max-restarts", "3"});  // the same command, started again
  ExpectAllExit(workers, 0);
  const std::string out = workers[0]->Stdout();
  EXPECT_TRUE(absl::StrContains(out, "generation 2: world 4 = tp 2 x dp 2")) << out;
  // From the newest checkpoint before the kill: 20, or 30 when rank 0 got that far before the kill landed.
  const bool from20 = absl::StrContains(out, absl::StrCat("resumed from ", *dir_, "/killed/checkpoint-20 at step 20"));
  const bool from30 = absl::StrContains(out, absl::StrCat("resumed from ", *dir_, "/killed/checkpoint-30 at step 30"));
  EXPECT_TRUE(from20 || from30) << out;
  EXPECT_EQ(Outcome(out), expected) << out;
  // Rank 0 keeps the two newest recovery checkpoints, and the final one.
  std::set<std::string> kept;
  for (const auto& entry : std::filesystem::directory_iterator(*dir_ + "/killed")) {
    kept.insert(entry.path().filename().string());
  }
  EXPECT_EQ(kept, (std::set<std::string>{"checkpoint", "checkpoint-40", "checkpoint-50"}));
}

TEST_F(ElasticTest, AFrozenWorkerIsNamedWithinTheLeaseAndReplaced) {
  const std::string expected = Uninterrupted();
  std::vector<std::unique_ptr<Subprocess>> workers = StartJob("frozen", {"--max-restarts", "3"});
  ASSERT_TRUE(workers[0]->WaitForLine("step 25/60 ", seconds(120)).ok());
  workers[2]->SignalGroup(SIGSTOP);  // supervisor and trainer: the process hangs, its connections stay open
  const auto stopped = std::chrono::steady_clock::now();
  ExpectToldOf(workers, {0, 1, 3}, 1, 2, absl::StrCat("missed its heartbeat lease of ", kLeaseSeconds, "s"));
  // Every survivor has abandoned its step (its trainer exited) within the lease and a second.
  const auto told = std::chrono::steady_clock::now() - stopped;
  EXPECT_LE(told, seconds(kLeaseSeconds + 1))
      << std::chrono::duration_cast<milliseconds>(told).count() << " ms from SIGSTOP to every survivor stopping";

  workers[2]->SignalGroup(SIGKILL);
  ASSERT_TRUE(workers[2]->Wait(seconds(10)).ok());
  workers[2] = Worker("frozen", 2, {"--max-restarts", "3"});
  ExpectAllExit(workers, 0);
  EXPECT_EQ(Outcome(workers[0]->Stdout()), expected) << workers[0]->Stdout();
}

TEST_F(ElasticTest, AJobWithAWorldSizeRangeGoesOnWithoutALostReplica) {
  const std::string expected = Uninterrupted();
  const std::vector<std::string> elastic = {"--world-size", "2:4", "--rejoin-timeout", "2s", "--max-restarts", "3"};
  std::vector<std::unique_ptr<Subprocess>> workers = StartJob("shrunk", elastic);
  ASSERT_TRUE(workers[0]->WaitForLine("step 25/60 ", seconds(120)).ok());
  workers[2]->Signal(SIGKILL);  // the whole second data-parallel replica (TP group {2, 3}), and no replacement
  workers[3]->Signal(SIGKILL);
  for (int r : {2, 3}) ASSERT_TRUE(workers[r]->Wait(seconds(10)).ok());
  for (int r : {0, 1}) EXPECT_EQ(workers[r]->Wait(std::chrono::minutes(3)).value_or(-1), 0) << workers[r]->Stderr();
  const std::string out = workers[0]->Stdout();
  // The replica's loss shrinks the next generation to world 2. (A loaded machine may start the job over
  // two generations: workers that join more than --rejoin-timeout apart form a smaller first one, which the
  // latecomers end, so the numbers are not fixed.)
  const size_t full = out.find(": world 4 = tp 2 x dp 2");
  const size_t shrunk = out.find(": world 2 = tp 2 x dp 1");
  EXPECT_TRUE(full != std::string::npos && shrunk != std::string::npos && full < shrunk) << out;
  EXPECT_TRUE(absl::StrContains(out, "batch: 8 sequences of 32 tokens per step (micro 4 x accumulation 2 x dp 1), "
                                     "from step ")) << out;
  EXPECT_TRUE(absl::StrContains(out, "shrunk: 2 of 4 workers, 1 of 2 data-parallel replicas; gradient accumulation "
                                     "2 keeps train_batch_size 8")) << out;
  // The same global batches: the same losses up to the order of the gradient sums.
  const std::vector<std::string> want = absl::StrSplit(expected, ' ');
  const std::vector<std::string> got = absl::StrSplit(Outcome(out), ' ');
  ASSERT_EQ(got.size(), want.size()) << Outcome(out);
  EXPECT_NEAR(std::stod(got[3]), std::stod(want[3]), 1e-4) << Outcome(out) << " vs " << expected;
}

TEST_F(ElasticTest, SpentRestartsFailTheJobListingEveryReason) {
  std::vector<std::unique_ptr<Subprocess>> workers = StartJob("spent", {"--max-restarts", "1"});
  ASSERT_TRUE(workers[0]->WaitForLine("step 15/60 ", seconds(120)).ok());
  workers[3]->Signal(SIGKILL);
  ASSERT_TRUE(workers[3]->Wait(seconds(10)).ok());
  workers[3] = Worker("spent", 3, {"--max-restarts", "1"});
  // The second generation (resumed at step 10) trains past step 15, then loses rank 3 again, with no
  // replacement this time.
  ASSERT_TRUE(workers[0]->WaitForLine("step 25/60 ", seconds(120)).ok());
  ASSERT_TRUE(absl::StrContains(workers[0]->Stdout(), "generation 2: world 4")) << workers[0]->Stdout();
  workers[3]->Signal(SIGKILL);
  for (int s : {0, 1, 2}) {
    EXPECT_EQ(workers[s]->Wait(seconds(60)).value_or(-1), 75) << workers[s]->Stderr();
    const std::string err = workers[s]->Stderr();
    EXPECT_TRUE(absl::StrContains(err, "tp-worker: giving up after 2 failed generations (--max-restarts 1):\n"
                                       "  1. job spent: generation 1 ended: rank 3 (host 127.0.0.1"))
        << err;
    EXPECT_TRUE(absl::StrContains(err, "\n  2. job spent: generation 2 ended: rank 3 (host 127.0.0.1")) << err;
  }
}

TEST_F(ElasticTest, AFatalConfigurationIsNotRestarted) {
  // 8 sequences cannot be split into micro-batches of 3: DeepSpeed's batch check fails, on every attempt.
  std::string config = kConfig;
  const std::string micro = "\"train_micro_batch_size_per_gpu\": 4";
  config.replace(config.find(micro), micro.size(), "\"train_micro_batch_size_per_gpu\": 3");
  std::ofstream(*dir_ + "/fatal.json") << config;
  std::vector<std::unique_ptr<Subprocess>> workers =
      StartJob("fatal", {"--max-restarts", "3", "--config", *dir_ + "/fatal.json"});
  for (auto& w : workers) {
    // Whoever merged first is refused and leaves saying that no restart can help; the others are refused
    // too, or learn that from the coordinator. Nobody restarts, nobody waits for the others.
    EXPECT_EQ(w->Wait(std::chrono::minutes(2)).value_or(-1), 3) << w->Stdout() << w->Stderr();
    EXPECT_TRUE(absl::StrContains(w->Stderr(), "Check batch related parameters.")) << w->Stderr();
    EXPECT_FALSE(absl::StrContains(w->Stderr(), "restarting")) << w->Stderr();
  }
}

}  // namespace
}  // namespace tpcoord
