// Real jobs of tp-worker processes (Gloo over the coordinator's store, TP=2) whose coordinator is killed
// with SIGKILL, or stopped with SIGTERM, and started again on the same state directory and port, in every
// phase of a job: while workers wait in Join, while Gloo rendezvouses through the store, while training,
// and after the job finished; and one outage of 30 s. In each, every worker exits 0 and the job ends
// completed in the generation it started in: a restart is invisible to the workers.
#include <signal.h>

#include <gtest/gtest.h>

#include <fstream>
#include <thread>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "tests/support/coordinator_process.h"

namespace tpcoord {
namespace {

using testing::CoordinatorProcess;
using testing::Deadline;
using testing::Subprocess;

constexpr char kConfig[] = R"({
  "train_batch_size": 8, "train_micro_batch_size_per_gpu": 4, "steps_per_print": 1,
  "optimizer": {"type": "AdamW", "params": {"lr": 0.003}},
  "tpcoord": {"steps": 100, "seq_len": 32, "seed": 7}
})";

class CoordinatorRestartJobTest : public ::testing::TestWithParam<int> {
 protected:
  void SetUp() override {
    dir_ = testing::MakeTempDir(absl::StrCat("restart-job-", GetParam()));
    std::ofstream(dir_ + "/ds_config.json") << kConfig;
    coordinator_ = *CoordinatorProcess::Start(dir_ + "/state");
    address_ = coordinator_->address();
  }

  std::unique_ptr<Subprocess> StartWorker(int rank, std::map<std::string, std::string> env = {}) {
    env.merge(testing::TokenEnv());
    auto worker = Subprocess::Start({testing::BinPath("worker/tp-worker"), "--coordinator", address_, "--job", "job",
                                     "--world-size", "2", "--rank", std::to_string(rank), "--tp-size", "2", "--host",
                                     "127.0.0.1", "--config", dir_ + "/ds_config.json", "--random-init", "tiny",
                                     "--data", absl::StrCat(TPCOORD_SOURCE_DIR, "/deploy/data/public_domain.txt"),
                                     "--timeout", "120s"},
                                    env);
    EXPECT_TRUE(worker.ok()) << worker.status();
    return worker.ok() ? *std::move(worker) : nullptr;
  }

  v1::JobStatus Job() {
    v1::GetJobRequest req;
    req.set_job_id("job");
    v1::GetJobResponse resp;
    grpc::Status status = coordinator_->NewStub()->GetJob(Deadline().get(), req, &resp);
    return status.ok() ? resp.job() : v1::JobStatus();
  }

  // Polls the job until `done` holds (at most a minute).
  template <typename Predicate>
  bool AwaitJob(Predicate done) {
    for (int i = 0; i < 6000; ++i) {
      if (done(Job())) return true;
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    return false;
  }

  // Stops the coordinator with the test's signal, keeps it down for `down`, and starts it again where it was.
  void RestartCoordinator(std::chrono::milliseconds down = std::chrono::milliseconds(500)) {
    coordinator_->process().Signal(GetParam());
    const int expected = GetParam() == SIGKILL ? 128 + SIGKILL : 0;
    EXPECT_EQ(coordinator_->process().Wait(std::chrono::seconds(30)).value_or(-1), expected);
    std::this_thread::sleep_for(down);
    auto restarted = CoordinatorProcess::StartAt(address_, dir_ + "/state");
    ASSERT_TRUE(restarted.ok()) << restarted.status();
    coordinator_ = *std::move(restarted);
  }

  // Every worker exits 0, and the job completed in generation 1.
  void ExpectCompleted(std::vector<std::unique_ptr<Subprocess>>& workers) {
    for (auto& w : workers) {
      ASSERT_NE(w, nullptr);
      EXPECT_EQ(w->Wait(std::chrono::minutes(3)).value_or(-1), 0) << w->Stdout() << w->Stderr();
    }
    EXPECT_TRUE(absl::StrContains(workers[0]->Stdout(), "job job generation 1: world 2")) << workers[0]->Stdout();
    EXPECT_TRUE(absl::StrContains(workers[0]->Stdout(), "step 100/100 loss")) << workers[0]->Stdout();
    const v1::JobStatus job = Job();
    EXPECT_EQ(job.generation(), 1u);
    EXPECT_EQ(job.phase(), v1::PHASE_COMPLETED) << job.end_reason();
  }

  std::string dir_;
  std::string address_;
  std::unique_ptr<CoordinatorProcess> coordinator_;
};

TEST_P(CoordinatorRestartJobTest, WhileWorkersWaitInJoin) {
  std::vector<std::unique_ptr<Subprocess>> workers;
  workers.push_back(StartWorker(0));
  ASSERT_TRUE(AwaitJob([](const v1::JobStatus& j) { return j.phase() == v1::PHASE_JOINING && j.member_count() == 1; }));
  RestartCoordinator();
  workers.push_back(StartWorker(1));
  ExpectCompleted(workers);
}

TEST_P(CoordinatorRestartJobTest, WhileGlooRendezvousesThroughTheStore) {
  std::vector<std::unique_ptr<Subprocess>> workers;
  workers.push_back(StartWorker(0));
  workers.push_back(StartWorker(1, {{"TPCOORD_TEST_STOP_AT", "comm_init"}}));
  // Rank 1's trainer holds still before its Gloo set-up; rank 0 waits in the store for rank 1's address.
  for (int i = 0; i < 6000 && !workers[1]->GroupStopped(); ++i) std::this_thread::sleep_for(std::chrono::milliseconds(10));
  ASSERT_TRUE(workers[1]->GroupStopped());
  ASSERT_TRUE(AwaitJob([](const v1::JobStatus& j) {
    for (const std::string& m : j.missing()) {
      if (absl::StartsWith(m, "store keys")) return true;
    }
    return false;
  }));
  RestartCoordinator();
  workers[1]->SignalGroup(SIGCONT);
  ExpectCompleted(workers);
}

TEST_P(CoordinatorRestartJobTest, WhileTraining) {
  std::vector<std::unique_ptr<Subprocess>> workers;
  workers.push_back(StartWorker(0));
  workers.push_back(StartWorker(1));
  ASSERT_TRUE(workers[0]->WaitForLine("step 10/100", std::chrono::minutes(2)).ok()) << workers[0]->Stderr();
  RestartCoordinator(std::chrono::seconds(2));
  ExpectCompleted(workers);
}

TEST_P(CoordinatorRestartJobTest, AfterTheJobFinished) {
  std::vector<std::unique_ptr<Subprocess>> workers;
  workers.push_back(StartWorker(0));
  workers.push_back(StartWorker(1));
  ExpectCompleted(workers);
  RestartCoordinator();
  EXPECT_EQ(Job().phase(), v1::PHASE_COMPLETED);
  EXPECT_EQ(Job().generation(), 1u);
}

INSTANTIATE_TEST_SUITE_P(Signal, CoordinatorRestartJobTest, ::testing::Values(SIGKILL, SIGTERM),
                         [](const ::testing::TestParamInfo<int>& info) {
                           return std::string(info.param == SIGKILL ? "Sigkill" : "Sigterm");
                         });

// A coordinator down for 30 s, three lease lengths, while its workers train: they go on, retry their
// heartbeats and their final Leave, and finish when it is back.
TEST(CoordinatorOutageTest, ThirtySecondsDownLosesNoJob) {
  const std::string dir = testing::MakeTempDir("outage");
  std::ofstream(dir + "/ds_config.json") << kConfig;
  auto coordinator = *CoordinatorProcess::Start(dir + "/state");
  const std::string address = coordinator->address();
  std::vector<std::unique_ptr<Subprocess>> workers;
  for (int rank : {0, 1}) {
    workers.push_back(*Subprocess::Start(
        {testing::BinPath("worker/tp-worker"), "--coordinator", address, "--job", "job", "--world-size", "2", "--rank",
         std::to_string(rank), "--tp-size", "2", "--host", "127.0.0.1", "--config", dir + "/ds_config.json",
         "--random-init", "tiny", "--data", absl::StrCat(TPCOORD_SOURCE_DIR, "/deploy/data/public_domain.txt"),
         "--timeout", "120s"}, testing::TokenEnv()));
  }
  ASSERT_TRUE(workers[0]->WaitForLine("step 5/100", std::chrono::minutes(2)).ok()) << workers[0]->Stderr();
  coordinator->process().Signal(SIGKILL);
  (void)coordinator->process().Wait(std::chrono::seconds(10));
  std::this_thread::sleep_for(std::chrono::seconds(30));
  coordinator = *CoordinatorProcess::StartAt(address, dir + "/state");
  for (auto& w : workers) EXPECT_EQ(w->Wait(std::chrono::minutes(3)).value_or(-1), 0) << w->Stdout() << w->Stderr();
  v1::GetJobRequest req;
  req.set_job_id("job");
  v1::GetJobResponse resp;
  ASSERT_TRUE(coordinator->NewStub()->GetJob(Deadline().get(), req, &resp).ok());
  EXPECT_EQ(resp.job().phase(), v1::PHASE_COMPLETED) << resp.job().end_reason();
  EXPECT_EQ(resp.job().generation(), 1u);
}

}  // namespace
}  // namespace tpcoord
