// Malformed requests against a real tp-coordinator: each gets the right status code and a message naming
// the job, the field and the value, and changes nothing.
#include <gtest/gtest.h>

#include "absl/strings/match.h"
#include "nlohmann/json.hpp"
#include "tests/support/coordinator_process.h"

namespace tpcoord {
namespace {

using testing::CoordinatorProcess;
using testing::Deadline;

class MalformedRequestTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto coordinator = CoordinatorProcess::Start(testing::MakeTempDir("malformed"));
    ASSERT_TRUE(coordinator.ok()) << coordinator.status();
    coordinator_ = *std::move(coordinator);
    stub_ = coordinator_->NewStub();
  }

  grpc::Status Record(const std::string& job, int tp_size, v1::Dtype dtype, std::vector<int> group = {}) {
    v1::RecordTpInitArgsRequest req;
    req.set_job_id(job);
    req.set_tp_size(tp_size);
    req.set_dtype(dtype);
    if (!group.empty()) req.mutable_tp_group()->mutable_ranks()->Add(group.begin(), group.end());
    v1::RecordTpInitArgsResponse resp;
    return stub_->RecordTpInitArgs(Deadline().get(), req, &resp);
  }

  grpc::Status Merge(const std::string& job, const std::string& config) {
    v1::MergeConfigRequest req;
    req.set_job_id(job);
    req.set_config_json(config);
    v1::MergeConfigResponse resp;
    return stub_->MergeConfig(Deadline().get(), req, &resp);
  }

  v1::JobStatus Job(const std::string& job) {
    v1::GetJobRequest req;
    req.set_job_id(job);
    v1::GetJobResponse resp;
    EXPECT_TRUE(stub_->GetJob(Deadline().get(), req, &resp).ok());
    return resp.job();
  }

  static void Expect(const grpc::Status& status, grpc::StatusCode code, const std::string& message) {
    EXPECT_EQ(status.error_code(), code) << status.error_message();
    EXPECT_EQ(status.error_message(), message);
  }

  std::unique_ptr<CoordinatorProcess> coordinator_;
  std::unique_ptr<v1::Coordinator::Stub> stub_;
};

TEST_F(MalformedRequestTest, BadJobIds) {
  Expect(Record("", 2, v1::DTYPE_BF16), grpc::StatusCode::INVALID_ARGUMENT,
         "job_id is empty; it must be 1-128 characters from [A-Za-z0-9._-]");
  Expect(Record("llama run", 2, v1::DTYPE_BF16), grpc::StatusCode::INVALID_ARGUMENT,
         "job_id \"llama run\" contains \" \"; allowed characters are [A-Za-z0-9._-]");
  grpc::Status too_long = Record(std::string(129, 'j'), 2, v1::DTYPE_BF16);
  EXPECT_EQ(too_long.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_TRUE(absl::StrContains(too_long.error_message(), "129 characters long; the limit is 128"));
  Expect(Merge("a/b", "{}"), grpc::StatusCode::INVALID_ARGUMENT,
         "job_id \"a/b\" contains \"/\"; allowed characters are [A-Za-z0-9._-]");
  v1::ListJobsResponse jobs;
  ASSERT_TRUE(stub_->ListJobs(Deadline().get(), v1::ListJobsRequest(), &jobs).ok());
  EXPECT_EQ(jobs.jobs_size(), 0);  // nothing was created
}

TEST_F(MalformedRequestTest, BadTpInitArgs) {
  Expect(Record("j", 2, v1::DTYPE_UNSPECIFIED), grpc::StatusCode::INVALID_ARGUMENT,
         "job j: dtype 0 is not a dtype; use DTYPE_FP32, DTYPE_FP16 or DTYPE_BF16");
  Expect(Record("j", 2, static_cast<v1::Dtype>(42)), grpc::StatusCode::INVALID_ARGUMENT,
         "job j: dtype 42 is not a dtype; use DTYPE_FP32, DTYPE_FP16 or DTYPE_BF16");
  Expect(Record("j", 0, v1::DTYPE_BF16), grpc::StatusCode::INVALID_ARGUMENT,
         "job j: tp_size 0 is out of range; it must be between 1 and 65536");
  Expect(Record("j", 70000, v1::DTYPE_BF16), grpc::StatusCode::INVALID_ARGUMENT,
         "job j: tp_size 70000 is out of range; it must be between 1 and 65536");
  Expect(Record("j", 2, v1::DTYPE_BF16, {0, 0}), grpc::StatusCode::INVALID_ARGUMENT,
         "job j: tp_group [0, 0] lists rank 0 more than once");
  Expect(Record("j", 2, v1::DTYPE_BF16, {-1, 0}), grpc::StatusCode::INVALID_ARGUMENT,
         "job j: tp_group [-1, 0] holds rank -1; ranks must be in [0, 1000000)");
  v1::ListJobsResponse jobs;
  ASSERT_TRUE(stub_->ListJobs(Deadline().get(), v1::ListJobsRequest(), &jobs).ok());
  EXPECT_EQ(jobs.jobs_size(), 0);
}

TEST_F(MalformedRequestTest, BadConfigsChangeNothing) {
  ASSERT_TRUE(Record("j", 2, v1::DTYPE_BF16).ok());
  ASSERT_TRUE(Merge("j", R"({"bf16": {"enabled": true}})").ok());
  const std::string merged_before = Job("j").merged_config_json();

  grpc::Status syntax = Merge("j", R"({"bf16": )");
  EXPECT_EQ(syntax.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_TRUE(absl::StartsWith(syntax.error_message(), "job j: config_json is not valid JSON: ")) << syntax.error_message();
  Expect(Merge("j", "[1, 2]"), grpc::StatusCode::INVALID_ARGUMENT,
         "job j: config_json must be a JSON object, got \"[1,2]\"");
  Expect(Merge("j", R"({"a": 1, "a": 2})"), grpc::StatusCode::INVALID_ARGUMENT,
         "job j: config_json has the key \"a\" twice in one object");
  const std::string big = "{\"pad\": \"" + std::string(1 << 20, 'x') + "\"}";
  Expect(Merge("j", big), grpc::StatusCode::INVALID_ARGUMENT,
         "job j: config_json is " + std::to_string(big.size()) + " bytes; the limit is 1048576 bytes (1 MiB)");
  Expect(Merge("j", R"({"tensor_parallel": [1]})"), grpc::StatusCode::INVALID_ARGUMENT,
         "job j: tensor_parallel must be an object or null, got \"[1]\"");
  grpc::Status dtype = Merge("j", R"({"tensor_parallel": {"dtype": "fp8"}})");
  EXPECT_EQ(dtype.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_TRUE(absl::StartsWith(dtype.error_message(), "job j: tensor_parallel.dtype: unknown dtype \"fp8\""));
  EXPECT_EQ(Job("j").merged_config_json(), merged_before);
}

TEST_F(MalformedRequestTest, GenerationScopedCallsOnUnknownJobs) {
  v1::HeartbeatRequest req;
  req.set_job_id("nope");
  req.set_generation(1);
  v1::HeartbeatResponse resp;
  Expect(stub_->Heartbeat(Deadline().get(), req, &resp), grpc::StatusCode::NOT_FOUND, "job nope does not exist");
  v1::GetJobRequest get;
  get.set_job_id("nope");
  v1::GetJobResponse job;
  Expect(stub_->GetJob(Deadline().get(), get, &job), grpc::StatusCode::NOT_FOUND, "job nope does not exist");
}

}  // namespace
}  // namespace tpcoord
