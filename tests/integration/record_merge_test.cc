// RecordTpInitArgs and MergeConfig through a real tp-coordinator process on loopback: every DeepSpeed
// error text of spec §1.2-1.4 at the wire, conflicting records from two clients, isolated jobs.
#include <gtest/gtest.h>

#include <future>

#include "common/wire.h"
#include "grpc/health/v1/health.grpc.pb.h"
#include "nlohmann/json.hpp"
#include "tests/support/coordinator_test.h"

namespace tpcoord {
namespace {

using testing::Deadline;

class RecordMergeTest : public testing::CoordinatorTest {
 protected:
  grpc::Status Record(v1::Coordinator::Stub* stub, const std::string& job, int tp_size, v1::Dtype dtype,
                      std::vector<int> group = {}, v1::RecordTpInitArgsResponse* out = nullptr) {
    return testing::RecordTpInit(*stub, job, tp_size, dtype, group, out);
  }

  grpc::Status Merge(const std::string& job, const std::string& config, bool has_mpu = false,
                     std::string* merged = nullptr) {
    v1::MergeConfigRequest req;
    req.set_job_id(job);
    req.set_config_json(config);
    req.set_has_mpu(has_mpu);
    v1::MergeConfigResponse resp;
    grpc::Status status = stub_->MergeConfig(Deadline().get(), req, &resp);
    if (merged) *merged = resp.merged_config_json();
    return status;
  }

  // The call fails with FAILED_PRECONDITION and exactly `text`.
  static void ExpectDeepSpeed(const grpc::Status& status, const std::string& text) {
    EXPECT_EQ(status.error_code(), grpc::StatusCode::FAILED_PRECONDITION) << status.error_message();
    EXPECT_EQ(status.error_message(), text);
  }

};

TEST_F(RecordMergeTest, ConflictingRecordsFromTwoClients) {
  auto other = coordinator_->NewStub();
  v1::RecordTpInitArgsResponse first;
  ASSERT_TRUE(Record(stub_.get(), "llama-run1", 2, v1::DTYPE_BF16, {}, &first).ok());
  EXPECT_TRUE(first.created());
  v1::RecordTpInitArgsResponse same;
  ASSERT_TRUE(Record(other.get(), "llama-run1", 2, v1::DTYPE_BF16, {}, &same).ok());
  EXPECT_FALSE(same.created());
  const std::string conflict = "Conflicting tp_model_init arguments detected across multiple calls.";
  ExpectDeepSpeed(Record(other.get(), "llama-run1", 4, v1::DTYPE_BF16), conflict);
  ExpectDeepSpeed(Record(other.get(), "llama-run1", 2, v1::DTYPE_FP16), conflict);
  ExpectDeepSpeed(Record(other.get(), "llama-run1", 2, v1::DTYPE_BF16, {0, 1}), conflict);
  // The job context travels beside the exact text.
  auto ctx = Deadline();
  v1::RecordTpInitArgsRequest req;
  req.set_job_id("llama-run1");
  req.set_tp_size(4);
  req.set_dtype(v1::DTYPE_BF16);
  v1::RecordTpInitArgsResponse resp;
  ASSERT_FALSE(other->RecordTpInitArgs(ctx.get(), req, &resp).ok());
  auto trailers = ctx->GetServerTrailingMetadata();
  auto context = trailers.find("tpcoord-context");
  ASSERT_NE(context, trailers.end());
  EXPECT_EQ(std::string(context->second.data(), context->second.size()),
            "job llama-run1: recorded tp_size=2 dtype=torch.bfloat16 tp_group=None; this call tp_size=4 "
            "dtype=torch.bfloat16 tp_group=None");
}

TEST_F(RecordMergeTest, GroupRecordsAcrossClients) {
  auto other = coordinator_->NewStub();
  ASSERT_TRUE(Record(stub_.get(), "g", 2, v1::DTYPE_FP32, {1, 0}).ok());
  v1::RecordTpInitArgsResponse resp;
  ASSERT_TRUE(Record(other.get(), "g", 2, v1::DTYPE_FP32, {2, 3}, &resp).ok());
  ASSERT_EQ(resp.recorded().tp_groups_size(), 2);
  EXPECT_EQ(resp.recorded().tp_groups(0).ranks(0), 0);
  ExpectDeepSpeed(Record(other.get(), "g", 2, v1::DTYPE_FP32, {1, 2}),
                  "Conflicting tp_model_init arguments detected across multiple calls.");
  ExpectDeepSpeed(Record(other.get(), "g", 2, v1::DTYPE_FP32),
                  "Conflicting tp_model_init arguments detected across multiple calls.");
  ExpectDeepSpeed(Record(stub_.get(), "g2", 2, v1::DTYPE_FP32, {0, 1, 2}),
                  "tp_model_init tp_size (2) does not match tp_group size (3).");
}

TEST_F(RecordMergeTest, JobsAreIsolated) {
  ASSERT_TRUE(Record(stub_.get(), "job-a", 2, v1::DTYPE_BF16).ok());
  ASSERT_TRUE(Record(stub_.get(), "job-b", 4, v1::DTYPE_FP16).ok());
  std::string a, b;
  ASSERT_TRUE(Merge("job-a", "{}", false, &a).ok());
  ASSERT_TRUE(Merge("job-b", "{}", false, &b).ok());
  EXPECT_EQ(nlohmann::json::parse(a)["tensor_parallel"]["autotp_size"], 2);
  EXPECT_EQ(nlohmann::json::parse(b)["tensor_parallel"]["autotp_size"], 4);
  // A job with no record returns the config unchanged, and a merge does not create a job.
  std::string c;
  ASSERT_TRUE(Merge("job-c", R"({"train_batch_size": 8})", false, &c).ok());
  EXPECT_EQ(c, R"({"train_batch_size":8})");
  v1::ListJobsResponse jobs;
  ASSERT_TRUE(stub_->ListJobs(Deadline().get(), v1::ListJobsRequest(), &jobs).ok());
  ASSERT_EQ(jobs.jobs_size(), 2);
  EXPECT_EQ(jobs.jobs(0).job_id(), "job-a");
  EXPECT_EQ(jobs.jobs(1).tp_init().tp_size(), 4);
}

TEST_F(RecordMergeTest, EveryMergeErrorTextAtTheWire) {
  ASSERT_TRUE(Record(stub_.get(), "bf", 2, v1::DTYPE_BF16).ok());
  ExpectDeepSpeed(Merge("bf", R"({"tensor_parallel": {"autotp_size": 4}})"),
                  "Conflicting tensor_parallel.autotp_size in config (4) and tp_model_init (2).");
  ExpectDeepSpeed(Merge("bf", R"({"tensor_parallel": {"tp": "yes"}})"), "tensor_parallel.tp must be a dict when provided.");
  ExpectDeepSpeed(Merge("bf", R"({"tensor_parallel": {"tp": {"tp_size": 8}}})"),
                  "Conflicting tensor_parallel.tp.tp_size in config (8) and tp_model_init (2).");
  ExpectDeepSpeed(Merge("bf", R"({"fp16": {"enabled": true}})"),
                  "Conflicting dtype: config uses torch.float16 but tp_model_init requested torch.bfloat16.");
  ExpectDeepSpeed(Merge("bf", R"({"tensor_parallel": {"dtype": "fp16"}})"),
                  "Conflicting tensor_parallel.dtype in config (fp16) and tp_model_init (torch.bfloat16).");

  ASSERT_TRUE(Record(stub_.get(), "grp", 2, v1::DTYPE_FP32, {0, 1}).ok());
  ExpectDeepSpeed(Merge("grp", "{}", /*has_mpu=*/true),
                  "tp_model_init provided tp_group; deepspeed.initialize must not receive mpu.");
  ExpectDeepSpeed(Merge("grp", R"({"tensor_parallel": {"tp": {"tp_group": [2, 3]}}})"),
                  "Conflicting tensor_parallel.tp.tp_group in config and tp_model_init.");
  std::string merged;
  ASSERT_TRUE(Merge("grp", R"({"tensor_parallel": {"tp": {"tp_group": [1, 0]}}})", false, &merged).ok());
  EXPECT_EQ(nlohmann::json::parse(merged)["tensor_parallel"]["tp"]["tp_group"], nlohmann::json::array({0, 1}));
}

// A standalone merge (generation 0) answers the merged config and is a dry run: it never replaces the
// config the job shows, so nobody can rewrite what `tpctl job` reports for a running job.
TEST_F(RecordMergeTest, SuccessfulMergeFillsTheSectionAndIsADryRun) {
  ASSERT_TRUE(Record(stub_.get(), "ok", 2, v1::DTYPE_BF16).ok());
  std::string merged;
  ASSERT_TRUE(Merge("ok", R"({"train_batch_size": 8, "bf16": {"enabled": true}})", false, &merged).ok());
  EXPECT_EQ(merged,
            R"({"bf16":{"enabled":true},"tensor_parallel":{"autotp_size":2,"tp":{"tp_size":2}},"train_batch_size":8})");
  v1::GetJobRequest req;
  req.set_job_id("ok");
  v1::GetJobResponse job;
  ASSERT_TRUE(stub_->GetJob(Deadline().get(), req, &job).ok());
  EXPECT_EQ(job.job().merged_config_json(), "");
}

// A number a merge cannot keep exactly is refused, naming where it is; one it can keep comes back as sent.
TEST_F(RecordMergeTest, AnIntegerBeyondSixtyFourBitsIsRefusedNotRounded) {
  ASSERT_TRUE(Record(stub_.get(), "big", 1, v1::DTYPE_FP32).ok());
  grpc::Status huge = Merge("big", R"({"train_batch_size": 123456789012345678901234567890})");
  EXPECT_EQ(huge.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_EQ(huge.error_message(),
            "job big: config_json has the integer 123456789012345678901234567890 at /train_batch_size, which does "
            "not fit in 64 bits; tpcoord keeps numbers exactly or not at all (write it as a string if it must be "
            "this large)");
  std::string merged;
  ASSERT_TRUE(Merge("big", R"({"train_batch_size": 8, "tpcoord": {"seed": 18446744073709551615}})", false,
                    &merged).ok());
  EXPECT_EQ(nlohmann::json::parse(merged)["tpcoord"]["seed"].dump(), "18446744073709551615");
}

// Config-only AutoTP (DeepSpeed's "tensor_parallel": {"autotp_size": N} without tp_model_init): the Join
// carries the TP size; a member's merge whose autotp_size is another one is refused, never run at TP=1.
TEST_F(RecordMergeTest, ConfigOnlyAutotpSizeMustMatchTheJoinedTpSize) {
  auto join_all = [&](const std::string& job, int world, int tp_size) {
    std::vector<std::future<grpc::Status>> joins;
    for (int i = 0; i < world; ++i) {
      joins.push_back(std::async(std::launch::async, [&, i] {
        v1::JoinRequest req;
        req.set_job_id(job);
        req.set_worker_id("w" + std::to_string(i));
        req.set_host("127.0.0.1");
        req.set_world_size(world);
        req.set_requested_rank(i);
        req.set_tp_size(tp_size);
        v1::JoinResponse resp;
        return coordinator_->NewStub()->Join(Deadline(20).get(), req, &resp);
      }));
    }
    for (auto& j : joins) EXPECT_TRUE(j.get().ok());
  };
  auto member_merge = [&](const std::string& job, const std::string& config, std::string* merged) {
    v1::MergeConfigRequest req;
    req.set_job_id(job);
    req.set_config_json(config);
    req.set_generation(1);
    req.set_rank(0);
    v1::MergeConfigResponse resp;
    grpc::Status status = stub_->MergeConfig(Deadline().get(), req, &resp);
    *merged = resp.merged_config_json();
    return status;
  };
  const std::string config = R"({"train_batch_size": 8, "tensor_parallel": {"autotp_size": 2}})";
  join_all("tp2", 4, 2);
  std::string merged;
  ASSERT_TRUE(member_merge("tp2", config, &merged).ok());
  EXPECT_EQ(nlohmann::json::parse(merged)["tensor_parallel"]["autotp_size"], 2);
  v1::GetJobRequest get;
  get.set_job_id("tp2");
  v1::GetJobResponse job;
  ASSERT_TRUE(stub_->GetJob(Deadline().get(), get, &job).ok());
  EXPECT_FALSE(job.job().tp_init_recorded());

  join_all("tp1", 2, 1);
  grpc::Status refused = member_merge("tp1", config, &merged);
  EXPECT_EQ(refused.error_code(), grpc::StatusCode::FAILED_PRECONDITION);
  EXPECT_EQ(refused.error_message(),
            "job tp1: the config's tensor_parallel.autotp_size is 2, but generation 1 joined with tp_size 1 (nothing "
            "was recorded by tp_model_init, so each worker's Join sets the TP size): join with tp_size 2");
  // Without autotp_size nothing changes (rows 1-4): the config comes back as sent.
  ASSERT_TRUE(member_merge("tp1", R"({"train_batch_size": 8})", &merged).ok());
  EXPECT_EQ(merged, R"({"train_batch_size":8})");
}

TEST_F(RecordMergeTest, HealthServiceServes) {
  auto channel = grpc::CreateChannel(coordinator_->address(), grpc::InsecureChannelCredentials());
  auto health = grpc::health::v1::Health::NewStub(channel);
  grpc::health::v1::HealthCheckResponse resp;
  ASSERT_TRUE(health->Check(Deadline().get(), grpc::health::v1::HealthCheckRequest(), &resp).ok());
  EXPECT_EQ(resp.status(), grpc::health::v1::HealthCheckResponse::SERVING);
}

}  // namespace
}  // namespace tpcoord
