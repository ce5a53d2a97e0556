// Malformed requests against a real tp-coordinator: each gets the right status code and a message naming
// the job, the field and the value, and changes nothing.
#include <gtest/gtest.h>

#include <future>
#include <optional>
#include <thread>

#include "absl/strings/match.h"
#include "nlohmann/json.hpp"
#include "tests/support/coordinator_test.h"

namespace tpcoord {
namespace {

using testing::CoordinatorProcess;
using testing::Deadline;

class MalformedRequestTest : public testing::CoordinatorTest {
 protected:
  grpc::Status Record(const std::string& job, int tp_size, v1::Dtype dtype, std::vector<int> group = {}) {
    return testing::RecordTpInit(*stub_, job, tp_size, dtype, group);
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

// A Join on its own channel, as a worker would send it.
grpc::Status JoinOnce(const CoordinatorProcess& coordinator, const std::string& job, const std::string& worker,
                      int world_size, int tp_size, std::optional<int> rank, v1::JoinResponse* resp,
                      uint32_t wait_ms = 20000) {
  v1::JoinRequest req;
  req.set_job_id(job);
  req.set_worker_id(worker);
  req.set_host("127.0.0.1");
  req.set_world_size(world_size);
  req.set_tp_size(tp_size);
  if (rank) req.set_requested_rank(*rank);
  req.set_wait_timeout_ms(wait_ms);
  return coordinator.NewStub()->Join(Deadline(30).get(), req, resp);
}

TEST_F(MalformedRequestTest, RendezvousRequests) {
  // A running generation of two workers with tp_size 2.
  v1::JoinResponse a, b;
  auto other = std::async(std::launch::async, [&] { return JoinOnce(*coordinator_, "r", "w1", 2, 2, std::nullopt, &b); });
  ASSERT_TRUE(JoinOnce(*coordinator_, "r", "w0", 2, 2, std::nullopt, &a).ok());
  ASSERT_TRUE(other.get().ok());

  auto publish = [&](int rank, v1::GroupKind kind, int index, size_t bytes) {
    v1::PublishUniqueIdRequest req;
    req.set_job_id("r");
    req.set_generation(1);
    req.set_rank(rank);
    v1::UniqueId* id = req.add_ids();
    id->mutable_group()->set_kind(kind);
    id->mutable_group()->set_index(index);
    id->set_id(std::string(bytes, '\x5a'));
    v1::PublishUniqueIdResponse resp;
    return stub_->PublishUniqueId(Deadline().get(), req, &resp);
  };
  Expect(publish(0, v1::GROUP_KIND_TP, 0, 100), grpc::StatusCode::INVALID_ARGUMENT,
         "job r: ids[0].id for tp/0 is 100 bytes; a NCCL unique id is exactly 128 bytes");
  Expect(publish(1, v1::GROUP_KIND_TP, 0, 128), grpc::StatusCode::PERMISSION_DENIED,
         "job r: rank 1 may not publish the unique id of tp/0: only its leader, rank 0, may");
  Expect(publish(0, v1::GROUP_KIND_UNSPECIFIED, 0, 128), grpc::StatusCode::INVALID_ARGUMENT,
         "job r: ids[0].group.kind 0 is not a group kind; use GROUP_KIND_TP, GROUP_KIND_DP or GROUP_KIND_WORLD");
  Expect(publish(0, v1::GROUP_KIND_TP, 3, 128), grpc::StatusCode::INVALID_ARGUMENT,
         "job r: ids[0].group tp/3 is not a group of the mesh (1 TP groups, 2 DP groups, 1 world group)");
  Expect(publish(7, v1::GROUP_KIND_TP, 0, 128), grpc::StatusCode::INVALID_ARGUMENT,
         "job r: rank 7 is out of range for world_size 2 of generation 1");

  // None of that stored anything: a Get for tp/0 still waits, and times out naming the leader.
  v1::GetUniqueIdRequest get;
  get.set_job_id("r");
  get.set_generation(1);
  get.set_rank(1);
  get.add_groups()->set_kind(v1::GROUP_KIND_TP);
  get.set_wait_timeout_ms(200);
  v1::GetUniqueIdResponse got;
  Expect(stub_->GetUniqueId(Deadline().get(), get, &got), grpc::StatusCode::DEADLINE_EXCEEDED,
         "job r: GetUniqueId timed out after 200ms waiting for the unique id of tp/0 from its leader rank 0 (host "
         "127.0.0.1)");

  v1::StoreGetRequest key;
  key.set_job_id("r");
  key.set_generation(1);
  v1::StoreGetResponse value;
  Expect(stub_->StoreGet(Deadline().get(), key, &value), grpc::StatusCode::INVALID_ARGUMENT, "job r: key is empty");

  v1::HeartbeatRequest beat;
  beat.set_job_id("r");
  beat.set_generation(9);
  beat.set_rank(0);
  v1::HeartbeatResponse lease;
  Expect(stub_->Heartbeat(Deadline().get(), beat, &lease), grpc::StatusCode::FAILED_PRECONDITION,
         "job r: generation 9 does not exist; the job is in generation 1");
}

TEST_F(MalformedRequestTest, DuplicateAndOutOfRangeRanks) {
  v1::JoinResponse first, dup, range;
  auto parked =
      std::async(std::launch::async, [&] { return JoinOnce(*coordinator_, "d", "w0", 3, 1, 0, &first, 3000); });
  for (int i = 0; i < 500; ++i) {  // until w0 is parked
    v1::GetJobRequest req;
    req.set_job_id("d");
    v1::GetJobResponse resp;
    if (stub_->GetJob(Deadline().get(), req, &resp).ok() && resp.job().members_size() == 1) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  Expect(JoinOnce(*coordinator_, "d", "w1", 3, 1, 0, &dup), grpc::StatusCode::ALREADY_EXISTS,
         "job d: requested_rank 0 is already held by worker w0 (host 127.0.0.1) in generation 1");
  Expect(JoinOnce(*coordinator_, "d", "w2", 3, 1, 3, &range), grpc::StatusCode::INVALID_ARGUMENT,
         "job d: requested_rank 3 is out of range for world_size 3");
  Expect(JoinOnce(*coordinator_, "d", "w3", 3, 2, std::nullopt, &range), grpc::StatusCode::INVALID_ARGUMENT,
         "job d: 3 is not divisible by 2 (world_size 3, tp_size 2): 1 rank(s) would belong to no TP group");
  EXPECT_EQ(Job("d").members_size(), 1);  // only w0
  EXPECT_EQ(parked.get().error_code(), grpc::StatusCode::DEADLINE_EXCEEDED);
}

TEST_F(MalformedRequestTest, StaleGenerations) {
  v1::JoinResponse joined;
  ASSERT_TRUE(JoinOnce(*coordinator_, "s", "w0", 1, 1, std::nullopt, &joined).ok());
  v1::LeaveRequest leave;
  leave.set_job_id("s");
  leave.set_generation(1);
  leave.set_rank(0);
  leave.set_finished(true);
  v1::LeaveResponse left;
  ASSERT_TRUE(stub_->Leave(Deadline().get(), leave, &left).ok());
  EXPECT_EQ(Job("s").phase(), v1::PHASE_COMPLETED);
  ASSERT_TRUE(JoinOnce(*coordinator_, "s", "w0", 1, 1, std::nullopt, &joined).ok());
  EXPECT_EQ(joined.generation(), 2u);
  v1::StoreSetRequest set;
  set.set_job_id("s");
  set.set_generation(1);
  set.set_key("k");
  v1::StoreSetResponse ok;
  Expect(stub_->StoreSet(Deadline().get(), set, &ok), grpc::StatusCode::FAILED_PRECONDITION,
         "job s: generation 1 is over; the job is in generation 2: rejoin");
}

}  // namespace
}  // namespace tpcoord
