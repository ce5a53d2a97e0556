// A coordinator killed with SIGKILL and restarted on the same state directory still knows every job's
// recorded args, merged config and generation; SIGTERM stops it cleanly.
#include <signal.h>

#include <gtest/gtest.h>

#include <future>
#include <thread>

#include "absl/strings/match.h"
#include "tests/support/coordinator_process.h"

namespace tpcoord {
namespace {

using testing::CoordinatorProcess;
using testing::Deadline;

grpc::Status Record(v1::Coordinator::Stub& stub, const std::string& job, int tp_size) {
  return testing::RecordTpInit(stub, job, tp_size, v1::DTYPE_BF16);
}

v1::JobStatus GetJob(v1::Coordinator::Stub& stub, const std::string& job) {
  v1::GetJobRequest req;
  req.set_job_id(job);
  v1::GetJobResponse resp;
  grpc::Status status = stub.GetJob(Deadline().get(), req, &resp);
  EXPECT_TRUE(status.ok()) << status.error_message();
  return resp.job();
}

grpc::Status Join(v1::Coordinator::Stub& stub, const std::string& job, const std::string& worker, int world,
                  v1::JoinResponse* resp, int deadline_s = 20) {
  v1::JoinRequest req;
  req.set_job_id(job);
  req.set_worker_id(worker);
  req.set_host("127.0.0.1");
  req.set_world_size(world);
  return stub.Join(Deadline(deadline_s).get(), req, resp);
}

TEST(CoordinatorRestartTest, SigkillLosesNothingThatWasAnswered) {
  const std::string state_dir = testing::MakeTempDir("restart");
  std::string merged;
  {
    auto coordinator = *CoordinatorProcess::Start(state_dir);
    auto stub = coordinator->NewStub();
    ASSERT_TRUE(Record(*stub, "llama-run1", 2).ok());
    ASSERT_TRUE(Record(*stub, "other", 4).ok());
    v1::MergeConfigRequest req;
    req.set_job_id("llama-run1");
    req.set_config_json(R"({"bf16": {"enabled": true}, "train_batch_size": 8})");
    v1::MergeConfigResponse resp;
    ASSERT_TRUE(stub->MergeConfig(Deadline().get(), req, &resp).ok());
    merged = resp.merged_config_json();
    // Generation 1 of llama-run1 completes its rendezvous.
    auto second = coordinator->NewStub();
    v1::JoinResponse a, b;
    auto joined = std::async(std::launch::async, [&] { return Join(*second, "llama-run1", "w1", 2, &b); });
    ASSERT_TRUE(Join(*stub, "llama-run1", "w0", 2, &a).ok());
    ASSERT_TRUE(joined.get().ok());
    EXPECT_EQ(a.generation(), 1u);
    coordinator->process().Signal(SIGKILL);
    EXPECT_EQ(*coordinator->process().Wait(std::chrono::seconds(10)), 128 + SIGKILL);
  }
  auto coordinator = *CoordinatorProcess::Start(state_dir);
  auto stub = coordinator->NewStub();
  v1::JobStatus job = GetJob(*stub, "llama-run1");
  ASSERT_TRUE(job.tp_init_recorded());
  EXPECT_EQ(job.tp_init().tp_size(), 2);
  EXPECT_EQ(job.tp_init().dtype(), v1::DTYPE_BF16);
  EXPECT_EQ(job.merged_config_json(), merged);
  EXPECT_EQ(job.generation(), 1u);
  EXPECT_EQ(job.phase(), v1::PHASE_FAILED);
  EXPECT_EQ(job.end_reason(), "the coordinator restarted while generation 1 was running; rejoin to start generation 2");
  EXPECT_EQ(GetJob(*stub, "other").tp_init().tp_size(), 4);

  // The record still binds: a conflicting call is rejected, a matching one accepted.
  grpc::Status conflict = Record(*stub, "llama-run1", 4);
  EXPECT_EQ(conflict.error_code(), grpc::StatusCode::FAILED_PRECONDITION);
  EXPECT_EQ(conflict.error_message(), "Conflicting tp_model_init arguments detected across multiple calls.");
  EXPECT_TRUE(Record(*stub, "llama-run1", 2).ok());

  // Workers rejoin into generation 2.
  auto second = coordinator->NewStub();
  v1::JoinResponse a, b;
  auto joined = std::async(std::launch::async, [&] { return Join(*second, "llama-run1", "w1", 2, &b); });
  ASSERT_TRUE(Join(*stub, "llama-run1", "w0", 2, &a).ok());
  ASSERT_TRUE(joined.get().ok());
  EXPECT_EQ(a.generation(), 2u);
  EXPECT_EQ(a.mesh().tp_size(), 2);
}

TEST(CoordinatorRestartTest, SigtermAnswersParkedCallsAndExitsZero) {
  auto coordinator = *CoordinatorProcess::Start(testing::MakeTempDir("sigterm"));
  auto stub = coordinator->NewStub();
  v1::JoinResponse resp;
  auto parked = std::async(std::launch::async, [&] { return Join(*stub, "j", "w0", 2, &resp); });
  // Wait until the Join is parked in the coordinator.
  auto observer = coordinator->NewStub();
  for (int i = 0; i < 500; ++i) {
    v1::GetJobRequest req;
    req.set_job_id("j");
    v1::GetJobResponse job;
    if (observer->GetJob(Deadline().get(), req, &job).ok() && job.job().members_size() == 1) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  coordinator->process().Signal(SIGTERM);
  grpc::Status status = parked.get();
  EXPECT_EQ(status.error_code(), grpc::StatusCode::UNAVAILABLE) << status.error_message();
  EXPECT_EQ(*coordinator->process().Wait(std::chrono::seconds(20)), 0);
  EXPECT_TRUE(absl::StrContains(coordinator->process().Stderr(), "shutting down"));
}

TEST(CoordinatorRestartTest, OneCoordinatorPerStateDir) {
  const std::string state_dir = testing::MakeTempDir("lock");
  auto first = *CoordinatorProcess::Start(state_dir);
  auto second = CoordinatorProcess::Start(state_dir);
  ASSERT_FALSE(second.ok());
  EXPECT_TRUE(absl::StrContains(second.status().message(), "another tp-coordinator holds")) << second.status();
}

}  // namespace
}  // namespace tpcoord
