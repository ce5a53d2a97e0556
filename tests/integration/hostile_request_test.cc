// What a hostile or careless client on a shared cluster network can send a real tp-coordinator, each a
// finding of the hardening work, as a regression test through the wire: nothing crashes it, nothing grows
// it without bound, every failure is a status with the right code and a message naming the job, the field
// and the value, and a rejected call leaves no trace. Raw requests go through gRPC's generic stub, as an
// independent client would send them.
#include <gtest/gtest.h>

#include <future>
#include <thread>

#include <grpcpp/generic/generic_stub.h>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "tests/support/coordinator_process.h"

namespace tpcoord {
namespace {

using testing::CoordinatorProcess;
using testing::Deadline;

class HostileRequestTest : public ::testing::Test {
 protected:
  void Start(const std::vector<std::string>& flags = {}) {
    auto coordinator = CoordinatorProcess::Start(testing::MakeTempDir("hostile"), flags);
    ASSERT_TRUE(coordinator.ok()) << coordinator.status();
    coordinator_ = *std::move(coordinator);
    stub_ = coordinator_->NewStub();
  }
  void SetUp() override { Start(); }

  // `bytes` sent as the request of `method` ("Join"), whatever they are.
  grpc::Status Raw(const std::string& method, const std::string& bytes) {
    auto channel = grpc::CreateChannel(coordinator_->address(), grpc::InsecureChannelCredentials());
    grpc::GenericStub generic(channel);
    grpc::Slice slice(bytes);
    grpc::ByteBuffer request(&slice, 1), response;
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
    std::promise<grpc::Status> done;
    generic.UnaryCall(&ctx, "/tpcoord.v1.Coordinator/" + method, grpc::StubOptions(), &request, &response,
                      [&](grpc::Status s) { done.set_value(s); });
    return done.get_future().get();
  }

  // A standalone (dry-run) merge, or with `generation` the merge of rank 0 of that generation.
  grpc::Status Merge(const std::string& job, const std::string& config, std::string* merged = nullptr,
                     uint64_t generation = 0) {
    v1::MergeConfigRequest req;
    req.set_job_id(job);
    req.set_config_json(config);
    req.set_generation(generation);
    v1::MergeConfigResponse resp;
    grpc::Status status = stub_->MergeConfig(Deadline().get(), req, &resp);
    if (merged) *merged = resp.merged_config_json();
    return status;
  }

  std::vector<v1::JobStatus> Jobs(int page_size = 0) {
    std::vector<v1::JobStatus> jobs;
    v1::ListJobsRequest req;
    req.set_page_size(page_size);
    do {
      v1::ListJobsResponse resp;
      grpc::Status status = stub_->ListJobs(Deadline().get(), req, &resp);
      EXPECT_TRUE(status.ok()) << status.error_message();
      if (!status.ok()) break;
      jobs.insert(jobs.end(), resp.jobs().begin(), resp.jobs().end());
      req.set_page_token(resp.next_page_token());
    } while (!req.page_token().empty());
    return jobs;
  }

  // A running generation of one worker, so that store calls have somewhere to go.
  void RunningJob(const std::string& job) {
    v1::JoinRequest req;
    req.set_job_id(job);
    req.set_worker_id("w0");
    req.set_host("127.0.0.1");
    req.set_world_size(1);
    v1::JoinResponse resp;
    ASSERT_TRUE(stub_->Join(Deadline().get(), req, &resp).ok());
  }

  static void Expect(const grpc::Status& status, grpc::StatusCode code, const std::string& message) {
    EXPECT_EQ(status.error_code(), code) << status.error_message();
    EXPECT_EQ(status.error_message(), message);
  }

  void ExpectAlive() {
    EXPECT_TRUE(coordinator_->process().running());
    Jobs();
  }

  std::unique_ptr<CoordinatorProcess> coordinator_;
  std::unique_ptr<v1::Coordinator::Stub> stub_;
};

TEST_F(HostileRequestTest, AConfigNestedSixtyThousandLevelsDeepIsRefusedNamingTheLimit) {  // was SIGSEGV
  ASSERT_TRUE(testing::RecordTpInit(*stub_, "j", 2, v1::DTYPE_BF16).ok());
  const std::string deep = "{\"a\":" + std::string(60000, '[') + std::string(60000, ']') + "}";
  Expect(Merge("j", deep), grpc::StatusCode::INVALID_ARGUMENT, "job j: config_json nests deeper than 64 levels");
  const std::string at_limit = "{\"a\":" + std::string(63, '[') + std::string(63, ']') + "}";
  EXPECT_TRUE(Merge("j", at_limit).ok());
  ExpectAlive();
}

TEST_F(HostileRequestTest, NumbersThatOverflowAndBadUnicodeAreInvalidArgument) {  // were an empty UNIMPLEMENTED
  ASSERT_TRUE(testing::RecordTpInit(*stub_, "j", 2, v1::DTYPE_BF16).ok());
  Expect(Merge("j", R"({"train_batch_size": 1e400})"), grpc::StatusCode::INVALID_ARGUMENT,
         "job j: config_json is not valid JSON: [json.exception.out_of_range.406] number overflow parsing '1e400'");
  grpc::Status surrogate = Merge("j", R"({"name": "\ud800"})");
  EXPECT_EQ(surrogate.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_TRUE(absl::StartsWith(surrogate.error_message(), "job j: config_json is not valid JSON: ")) << surrogate.error_message();
  // Invalid UTF-8 in a string field (here config_json, field 2) makes the request unparseable.
  std::string request = "\x0a\x01j";
  request += std::string("\x12\x04{\"\xff\"", 6);
  Expect(Raw("MergeConfig", request), grpc::StatusCode::INVALID_ARGUMENT,
         "the request is not a valid tpcoord.v1.MergeConfigRequest message (9 bytes): String field "
         "'tpcoord.v1.MergeConfigRequest.config_json' contains invalid UTF-8 data when parsing a protocol buffer. "
         "Use the 'bytes' type if you intend to send raw bytes. ");
  ExpectAlive();
}

TEST_F(HostileRequestTest, GarbageBytesAreInvalidArgumentNamingTheMessage) {
  const std::string garbage("\xff\xff\xff\xff\x0f\x12\x34", 7);
  for (const std::string method : {"Join", "StoreSet", "Leave", "ListJobs", "DeleteJob"}) {
    grpc::Status status = Raw(method, garbage);
    EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT) << method;
    EXPECT_TRUE(absl::StartsWith(status.error_message(), "the request is not a valid tpcoord.v1." + method + "Request message (7 bytes)"))
        << status.error_message();
  }
  EXPECT_EQ(Raw("NoSuchMethod", "").error_code(), grpc::StatusCode::UNIMPLEMENTED);
  ExpectAlive();
}

// A member session answers only its member: a session naming no job, a bad rank, another token, or a
// later heartbeat naming someone else is ended with the error; the last one also ends the generation, as
// any session that closes before its member finished does.
TEST_F(HostileRequestTest, SessionsServeOnlyTheMemberThatOpenedThem) {
  RunningJob("j");
  auto session = [&](std::unique_ptr<grpc::ClientContext> ctx, std::vector<std::tuple<std::string, int, int>> beats) {
    auto stream = stub_->Session(ctx.get());
    for (const auto& [job, generation, rank] : beats) {
      v1::SessionRequest beat;
      beat.set_job_id(job);
      beat.set_generation(generation);
      beat.set_rank(rank);
      if (!stream->Write(beat)) break;
    }
    stream->WritesDone();
    v1::SessionEvent event;
    while (stream->Read(&event)) {
    }
    return stream->Finish();
  };
  Expect(session(Deadline(), {{"nope", 1, 0}}), grpc::StatusCode::NOT_FOUND, "job nope does not exist");
  Expect(session(Deadline(), {{"j", 1, -1}}), grpc::StatusCode::INVALID_ARGUMENT,
         "job j: rank -1 is out of range; ranks are in [0, 1000000)");
  Expect(session(testing::Credentials("", testing::kTestMemberKey), {{"j", 1, 0}}), grpc::StatusCode::UNAUTHENTICATED,
         "job j: the call carries no token; give the job's token with --token-file, TPCOORD_TOKEN_FILE or "
         "TPCOORD_TOKEN (metadata authorization: Bearer <token>)");
  Expect(session(testing::Credentials(testing::kTestToken, "another-member-key-0123456789"), {{"j", 1, 0}}),
         grpc::StatusCode::PERMISSION_DENIED,
         "job j: the call's member key is not the one rank 0 of generation 1 joined with");
  v1::GetJobRequest get;
  get.set_job_id("j");
  v1::GetJobResponse job;
  ASSERT_TRUE(stub_->GetJob(Deadline().get(), get, &job).ok());
  EXPECT_EQ(job.job().phase(), v1::PHASE_RUNNING) << job.job().end_reason();

  Expect(session(Deadline(), {{"j", 1, 0}, {"j", 1, 5}}), grpc::StatusCode::INVALID_ARGUMENT,
         "job j: a session's heartbeats must name the member that opened it (generation 1 rank 0); this one names "
         "job j generation 1 rank 5");
  for (int i = 0; i < 100 && job.job().phase() == v1::PHASE_RUNNING; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
    ASSERT_TRUE(stub_->GetJob(Deadline().get(), get, &job).ok());
  }
  EXPECT_EQ(job.job().phase(), v1::PHASE_FAILED);
  EXPECT_EQ(job.job().end_reason(),
            "rank 0 (host 127.0.0.1, worker w0) is gone: its session closed before it finished (the process died or "
            "lost its connection)");
  ExpectAlive();
}

TEST_F(HostileRequestTest, RequestsLargerThanTheLimitAreRefusedBeforeParsing) {
  grpc::Status big = Merge("j", std::string(5 << 20, ' '));
  EXPECT_EQ(big.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED) << big.error_message();
  ExpectAlive();
}

TEST_F(HostileRequestTest, StoreAddPastInt64MaxIsOutOfRangeAndChangesNothing) {  // wrapped to INT64_MIN
  RunningJob("j");
  auto add = [&](int64_t delta, v1::StoreAddResponse* resp) {
    v1::StoreAddRequest req;
    req.set_job_id("j");
    req.set_generation(1);
    req.set_key("n");
    req.set_delta(delta);
    return stub_->StoreAdd(Deadline().get(), req, resp);
  };
  v1::StoreAddResponse value;
  ASSERT_TRUE(add(INT64_MAX, &value).ok());
  Expect(add(1, &value), grpc::StatusCode::OUT_OF_RANGE,
         "job j: adding 1 to key \"n\" (9223372036854775807) leaves the range of a 64-bit integer; the key is "
         "unchanged");
  ASSERT_TRUE(add(0, &value).ok());
  EXPECT_EQ(value.value(), INT64_MAX);
}

TEST_F(HostileRequestTest, CompareSetCountsAgainstTheStoreBudget) {  // 600 MiB were accepted past 512 MiB
  coordinator_.reset();
  Start({"--max-store-bytes", std::to_string(3 << 20)});
  RunningJob("j");
  int accepted = 0;
  grpc::Status last;
  for (int i = 0; i < 10; ++i) {
    v1::StoreCompareSetRequest req;
    req.set_job_id("j");
    req.set_generation(1);
    req.set_key("k" + std::to_string(i));
    req.set_desired_value(std::string(1 << 20, 'v'));
    v1::StoreCompareSetResponse resp;
    last = stub_->StoreCompareSet(Deadline().get(), req, &resp);
    if (!last.ok()) break;
    ++accepted;
  }
  EXPECT_EQ(accepted, 2);
  EXPECT_EQ(last.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED);
  EXPECT_TRUE(absl::StrContains(last.error_message(), "the limit is 3145728 (--max-store-bytes)")) << last.error_message();
}

TEST_F(HostileRequestTest, RejectedCallsLeaveNoTrace) {  // 200 rejected calls left 200 phantom jobs
  for (int i = 0; i < 200; ++i) {
    const std::string job = absl::StrCat("phantom-", i);
    v1::JoinRequest join;
    join.set_job_id(job);
    join.set_worker_id("w");
    join.set_host("h");
    join.set_world_size(3);
    join.set_tp_size(2);
    v1::JoinResponse joined;
    EXPECT_EQ(stub_->Join(Deadline().get(), join, &joined).error_code(), grpc::StatusCode::INVALID_ARGUMENT);
    EXPECT_EQ(Merge(job, "{").error_code(), grpc::StatusCode::INVALID_ARGUMENT);
    EXPECT_EQ(testing::RecordTpInit(*stub_, job, 2, v1::DTYPE_UNSPECIFIED).error_code(),
              grpc::StatusCode::INVALID_ARGUMENT);
    EXPECT_TRUE(Merge(job, "{}").ok());  // a standalone merge of no job creates none either
  }
  EXPECT_TRUE(Jobs().empty());
}

TEST_F(HostileRequestTest, ListJobsIsPagedAndLeavesConfigsToGetJob) {  // five 1 MiB configs broke tpctl jobs
  const std::string pad(1000000, 'x');
  for (int i = 0; i < 5; ++i) {
    const std::string job = absl::StrCat("big-", i);
    ASSERT_TRUE(testing::RecordTpInit(*stub_, job, 1, v1::DTYPE_BF16).ok());
    RunningJob(job);  // only a member's merge is stored; a standalone one is a dry run
    ASSERT_TRUE(Merge(job, "{\"pad\": \"" + pad + "\"}", nullptr, /*generation=*/1).ok());
  }
  std::vector<v1::JobStatus> jobs = Jobs(/*page_size=*/2);
  ASSERT_EQ(jobs.size(), 5u);
  for (const v1::JobStatus& job : jobs) EXPECT_TRUE(job.merged_config_json().empty());
  EXPECT_EQ(jobs[4].job_id(), "big-4");
  auto tpctl = testing::Run({testing::BinPath("coordinator/tpctl"), "--coordinator", coordinator_->address(), "jobs"},
                            std::chrono::seconds(30), testing::TokenEnv());
  ASSERT_TRUE(tpctl.ok());
  EXPECT_EQ(tpctl->exit_code, 0) << tpctl->err;
  EXPECT_TRUE(absl::StrContains(tpctl->out, "big-4")) << tpctl->out;
  v1::GetJobRequest get;
  get.set_job_id("big-3");
  v1::GetJobResponse one;
  ASSERT_TRUE(stub_->GetJob(Deadline().get(), get, &one).ok());
  EXPECT_GT(one.job().merged_config_json().size(), pad.size());
}

TEST_F(HostileRequestTest, TheNumberOfJobsIsBoundedAndJobsCanBeDeleted) {  // 10,000 jobs stayed forever
  coordinator_.reset();
  Start({"--max-jobs", "3"});
  for (const char* job : {"a", "b", "c"}) ASSERT_TRUE(testing::RecordTpInit(*stub_, job, 2, v1::DTYPE_BF16).ok());
  grpc::Status full = testing::RecordTpInit(*stub_, "d", 2, v1::DTYPE_BF16);
  EXPECT_EQ(full.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED);
  EXPECT_EQ(full.error_message(),
            "job d: the coordinator holds 3 jobs, its limit (--max-jobs); delete jobs that are done (tpctl delete) or "
            "let them expire (--job-ttl)");
  auto tpctl = [&](std::vector<std::string> args) {
    std::vector<std::string> argv = {testing::BinPath("coordinator/tpctl"), "--coordinator", coordinator_->address()};
    argv.insert(argv.end(), args.begin(), args.end());
    return *testing::Run(argv, std::chrono::seconds(30), testing::TokenEnv());
  };
  testing::RunResult deleted = tpctl({"delete", "a"});
  EXPECT_EQ(deleted.exit_code, 0) << deleted.err;
  EXPECT_EQ(deleted.out, "deleted job a\n");
  EXPECT_TRUE(testing::RecordTpInit(*stub_, "d", 2, v1::DTYPE_BF16).ok());
  // A job id squatted by a wrong record is freed by deleting it.
  EXPECT_EQ(testing::RecordTpInit(*stub_, "b", 4, v1::DTYPE_FP16).error_code(), grpc::StatusCode::FAILED_PRECONDITION);
  EXPECT_EQ(tpctl({"delete", "b"}).exit_code, 0);
  EXPECT_TRUE(testing::RecordTpInit(*stub_, "b", 4, v1::DTYPE_FP16).ok());
  EXPECT_EQ(tpctl({"delete", "nope"}).err, "job nope does not exist\n");
}

TEST_F(HostileRequestTest, DeleteRefusesARunningGenerationUnlessForced) {
  RunningJob("run");
  auto tpctl = [&](std::vector<std::string> args) {
    std::vector<std::string> argv = {testing::BinPath("coordinator/tpctl"), "--coordinator", coordinator_->address()};
    argv.insert(argv.end(), args.begin(), args.end());
    return *testing::Run(argv, std::chrono::seconds(30), testing::TokenEnv());
  };
  testing::RunResult refused = tpctl({"delete", "run"});
  EXPECT_EQ(refused.exit_code, 1);
  EXPECT_EQ(refused.err,
            "job run: generation 1 is running with 1 worker(s); stop them first, or delete with force (tpctl delete "
            "--force) to end it\n");
  EXPECT_EQ(tpctl({"delete", "run", "--force"}).exit_code, 0);
  v1::HeartbeatRequest beat;
  beat.set_job_id("run");
  beat.set_generation(1);
  v1::HeartbeatResponse lease;
  Expect(stub_->Heartbeat(Deadline().get(), beat, &lease), grpc::StatusCode::NOT_FOUND, "job run does not exist");
}

TEST_F(HostileRequestTest, FinishedJobsExpireAfterTheirTtl) {
  coordinator_.reset();
  Start({"--job-ttl", "2s"});
  RunningJob("done");
  RunningJob("running");
  v1::LeaveRequest leave;
  leave.set_job_id("done");
  leave.set_generation(1);
  leave.set_finished(true);
  v1::LeaveResponse left;
  ASSERT_TRUE(stub_->Leave(Deadline().get(), leave, &left).ok());
  std::vector<v1::JobStatus> jobs;
  for (int i = 0; i < 300; ++i) {  // the sweep runs every half a second
    jobs = Jobs();
    if (jobs.size() == 1) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  ASSERT_EQ(jobs.size(), 1u);
  EXPECT_EQ(jobs[0].job_id(), "running");  // a generation that runs never expires (its lease does, first)
  EXPECT_TRUE(absl::StrContains(coordinator_->process().Stderr(), "job done generation 1: expired")) << coordinator_->process().Stderr();
}

}  // namespace
}  // namespace tpcoord
