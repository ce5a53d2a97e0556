// A coordinator killed with SIGKILL (or stopped with SIGTERM) and restarted on the same state directory
// goes on exactly where it was: a running generation keeps its members, ranks, unique IDs and store
// entries; a completed job stays completed and answers every call about it; calls parked during SIGTERM are
// answered UNAVAILABLE; a state directory whose database was emptied, truncated or corrupted is refused,
// loudly, or serves every other job while the broken one answers DATA_LOSS.
#include <signal.h>

#include <gtest/gtest.h>

#include <filesystem>
#include <future>
#include <thread>

#include "absl/strings/match.h"
#include "coordinator/store/state_store.h"
#include "tests/support/coordinator_process.h"

namespace tpcoord {
namespace {

using testing::CoordinatorProcess;
using testing::Deadline;

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

// Joins a world of two and returns both answers.
std::pair<v1::JoinResponse, v1::JoinResponse> JoinTwo(CoordinatorProcess& coordinator, const std::string& job) {
  auto first = coordinator.NewStub();
  auto second = coordinator.NewStub();
  v1::JoinResponse a, b;
  auto joined = std::async(std::launch::async, [&] { return Join(*second, job, "w1", 2, &b); });
  EXPECT_TRUE(Join(*first, job, "w0", 2, &a).ok());
  EXPECT_TRUE(joined.get().ok());
  return {a, b};
}

void Kill(CoordinatorProcess& coordinator, int signal_number) {
  coordinator.process().Signal(signal_number);
  EXPECT_EQ(*coordinator.process().Wait(std::chrono::seconds(20)), signal_number == SIGKILL ? 128 + SIGKILL : 0);
}

TEST(CoordinatorRestartTest, SigkillLosesNothingARunningGenerationNeeds) {
  const std::string state_dir = testing::MakeTempDir("restart");
  std::string merged, address;
  v1::JoinResponse a, b;
  {
    auto coordinator = *CoordinatorProcess::Start(state_dir);
    address = coordinator->address();
    auto stub = coordinator->NewStub();
    ASSERT_TRUE(testing::RecordTpInit(*stub, "llama-run1", 2, v1::DTYPE_BF16).ok());
    ASSERT_TRUE(testing::RecordTpInit(*stub, "other", 4, v1::DTYPE_BF16).ok());
    std::tie(a, b) = JoinTwo(*coordinator, "llama-run1");
    v1::MergeConfigRequest merge;
    merge.set_job_id("llama-run1");
    merge.set_config_json(R"({"bf16": {"enabled": true}, "train_batch_size": 8})");
    merge.set_generation(1);
    merge.set_rank(0);
    v1::MergeConfigResponse merged_resp;
    ASSERT_TRUE(stub->MergeConfig(Deadline().get(), merge, &merged_resp).ok());
    merged = merged_resp.merged_config_json();
    v1::PublishUniqueIdRequest publish;
    publish.set_job_id("llama-run1");
    publish.set_generation(1);
    publish.set_rank(0);
    v1::UniqueId* id = publish.add_ids();
    id->mutable_group()->set_kind(v1::GROUP_KIND_WORLD);
    id->set_id(std::string(128, 'n'));
    v1::PublishUniqueIdResponse published;
    ASSERT_TRUE(stub->PublishUniqueId(Deadline().get(), publish, &published).ok());
    v1::StoreSetRequest set;
    set.set_job_id("llama-run1");
    set.set_generation(1);
    set.set_key("/default_pg/0//cpu//0");
    set.set_value("127.0.0.1:31337");
    v1::StoreSetResponse set_resp;
    ASSERT_TRUE(stub->StoreSet(Deadline().get(), set, &set_resp).ok());
    Kill(*coordinator, SIGKILL);
  }
  auto coordinator = *CoordinatorProcess::StartAt(address, state_dir);
  auto stub = coordinator->NewStub();
  v1::JobStatus job = GetJob(*stub, "llama-run1");
  EXPECT_EQ(job.tp_init().tp_size(), 2);
  EXPECT_EQ(job.merged_config_json(), merged);
  EXPECT_EQ(job.generation(), 1u);
  EXPECT_EQ(job.phase(), v1::PHASE_RUNNING);
  EXPECT_EQ(job.member_count(), 2);
  EXPECT_EQ(GetJob(*stub, "other").tp_init().tp_size(), 4);

  // Retried Joins get their answers again; the unique ID and the store entry are there; leases renew.
  v1::JoinResponse again;
  ASSERT_TRUE(Join(*stub, "llama-run1", "w1", 2, &again).ok());
  EXPECT_EQ(again.generation(), 1u);
  EXPECT_EQ(again.rank(), b.rank());
  v1::GetUniqueIdRequest get;
  get.set_job_id("llama-run1");
  get.set_generation(1);
  get.set_rank(1);
  get.add_groups()->set_kind(v1::GROUP_KIND_WORLD);
  v1::GetUniqueIdResponse ids;
  ASSERT_TRUE(stub->GetUniqueId(Deadline().get(), get, &ids).ok());
  EXPECT_EQ(ids.ids(0).id(), std::string(128, 'n'));
  v1::StoreGetRequest store_get;
  store_get.set_job_id("llama-run1");
  store_get.set_generation(1);
  store_get.set_key("/default_pg/0//cpu//0");
  v1::StoreGetResponse value;
  ASSERT_TRUE(stub->StoreGet(Deadline().get(), store_get, &value).ok());
  EXPECT_EQ(value.value(), "127.0.0.1:31337");
  v1::HeartbeatRequest heartbeat;
  heartbeat.set_job_id("llama-run1");
  heartbeat.set_generation(1);
  heartbeat.set_rank(0);
  v1::HeartbeatResponse lease;
  EXPECT_TRUE(stub->Heartbeat(Deadline().get(), heartbeat, &lease).ok());

  // The record still binds.
  grpc::Status conflict = testing::RecordTpInit(*stub, "llama-run1", 4, v1::DTYPE_BF16);
  EXPECT_EQ(conflict.error_message(), "Conflicting tp_model_init arguments detected across multiple calls.");
}

TEST(CoordinatorRestartTest, ARestoredCompletedJobAnswersEveryCallAboutIt) {  // regression: SIGSEGV
  const std::string state_dir = testing::MakeTempDir("restart-completed");
  std::string address;
  {
    auto coordinator = *CoordinatorProcess::Start(state_dir);
    address = coordinator->address();
    auto stub = coordinator->NewStub();
    JoinTwo(*coordinator, "done");
    for (int rank : {0, 1}) {
      v1::LeaveRequest leave;
      leave.set_job_id("done");
      leave.set_generation(1);
      leave.set_rank(rank);
      leave.set_finished(true);
      v1::LeaveResponse left;
      ASSERT_TRUE(stub->Leave(Deadline().get(), leave, &left).ok());
    }
    EXPECT_EQ(GetJob(*stub, "done").phase(), v1::PHASE_COMPLETED);
    Kill(*coordinator, SIGKILL);
  }
  auto coordinator = *CoordinatorProcess::StartAt(address, state_dir);
  auto stub = coordinator->NewStub();
  EXPECT_EQ(GetJob(*stub, "done").phase(), v1::PHASE_COMPLETED);
  const grpc::StatusCode over = grpc::StatusCode::FAILED_PRECONDITION;
  {
    v1::HeartbeatRequest req;
    req.set_job_id("done");
    req.set_generation(1);
    v1::HeartbeatResponse resp;
    EXPECT_EQ(stub->Heartbeat(Deadline().get(), req, &resp).error_code(), over);
  }
  {
    v1::LeaveRequest req;
    req.set_job_id("done");
    req.set_generation(1);
    req.set_rank(1);
    req.set_finished(true);
    v1::LeaveResponse resp;
    EXPECT_TRUE(stub->Leave(Deadline().get(), req, &resp).ok());  // a retry of a finished member
    req.set_finished(false);
    EXPECT_EQ(stub->Leave(Deadline().get(), req, &resp).error_code(), over);
  }
  {
    v1::MergeConfigRequest req;
    req.set_job_id("done");
    req.set_config_json("{}");
    req.set_generation(1);
    v1::MergeConfigResponse resp;
    EXPECT_EQ(stub->MergeConfig(Deadline().get(), req, &resp).error_code(), over);
  }
  {
    v1::BarrierRequest req;
    req.set_job_id("done");
    req.set_generation(1);
    req.set_name("b");
    v1::BarrierResponse resp;
    EXPECT_EQ(stub->Barrier(Deadline().get(), req, &resp).error_code(), over);
  }
  {
    v1::GetUniqueIdRequest req;
    req.set_job_id("done");
    req.set_generation(1);
    req.add_groups()->set_kind(v1::GROUP_KIND_WORLD);
    v1::GetUniqueIdResponse resp;
    EXPECT_EQ(stub->GetUniqueId(Deadline().get(), req, &resp).error_code(), over);
  }
  {
    v1::StoreSetRequest req;
    req.set_job_id("done");
    req.set_generation(1);
    req.set_key("k");
    v1::StoreSetResponse resp;
    grpc::Status set = stub->StoreSet(Deadline().get(), req, &resp);
    EXPECT_EQ(set.error_code(), over);
    EXPECT_EQ(set.error_message(), "job done: generation 1 has completed: every member left finished");
  }
  EXPECT_TRUE(coordinator->process().running());
  EXPECT_EQ(GetJob(*stub, "done").phase(), v1::PHASE_COMPLETED);
}

grpc::Status CloseJob(v1::Coordinator::Stub& stub, const std::string& job, const std::string& reason,
                      const std::string& token = testing::kTestToken) {
  v1::CloseJobRequest req;
  req.set_job_id(job);
  req.set_reason(reason);
  v1::CloseJobResponse resp;
  return stub.CloseJob(testing::Credentials(token, "").get(), req, &resp);
}

// CloseJob (a torchrun rendezvous backend's set_closed) at the wire: a Join waiting in the joining
// generation and every later Join are refused with the same text; closing again keeps the first reason; the
// closed state survives SIGKILL; deleting the job forgets it; a bad reason or another token is refused.
TEST(CoordinatorRestartTest, AClosedJobStaysClosedAcrossARestartUntilDeleted) {
  const std::string state_dir = testing::MakeTempDir("closed");
  const std::string refused =
      "job rdzv is closed: torchrun on host h finished; no new generation starts in a closed job (delete it, tpctl "
      "delete rdzv, to use its id afresh)";
  std::string address;
  {
    auto coordinator = *CoordinatorProcess::Start(state_dir);
    address = coordinator->address();
    auto stub = coordinator->NewStub();
    v1::JoinResponse parked_resp;
    auto parked = std::async(std::launch::async, [&] { return Join(*coordinator->NewStub(), "rdzv", "w0", 2, &parked_resp); });
    for (int i = 0; i < 100; ++i) {  // until the Join waits in the job
      v1::GetJobRequest req;
      req.set_job_id("rdzv");
      v1::GetJobResponse resp;
      if (stub->GetJob(Deadline().get(), req, &resp).ok() && resp.job().member_count() == 1) break;
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
    ASSERT_TRUE(CloseJob(*stub, "rdzv", "torchrun on host h finished").ok());
    const grpc::Status answered = parked.get();
    EXPECT_EQ(answered.error_code(), grpc::StatusCode::FAILED_PRECONDITION);
    EXPECT_EQ(answered.error_message(), refused);
    ASSERT_TRUE(CloseJob(*stub, "rdzv", "another reason").ok());  // idempotent: the first reason stays
    v1::JobStatus job = GetJob(*stub, "rdzv");
    EXPECT_TRUE(job.closed());
    EXPECT_EQ(job.closed_reason(), "torchrun on host h finished");
    EXPECT_EQ(job.phase(), v1::PHASE_FAILED);
    EXPECT_EQ(job.end_reason(), "the job was closed: torchrun on host h finished");

    grpc::Status other = CloseJob(*stub, "rdzv", "", "a-token-of-another-job-0123");
    EXPECT_EQ(other.error_code(), grpc::StatusCode::PERMISSION_DENIED);
    EXPECT_EQ(other.error_message(), "job rdzv: the call's token is not the job's token");
    grpc::Status none = CloseJob(*stub, "rdzv", "", "");
    EXPECT_EQ(none.error_code(), grpc::StatusCode::UNAUTHENTICATED);
    grpc::Status too_long = CloseJob(*stub, "rdzv", std::string(1025, 'r'));
    EXPECT_EQ(too_long.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
    EXPECT_TRUE(absl::StrContains(too_long.error_message(), "job rdzv: reason \"rrr")) << too_long.error_message();
    EXPECT_TRUE(absl::StrContains(too_long.error_message(), "\" is 1025 bytes long; the limit is 1024"));
    grpc::Status control = CloseJob(*stub, "rdzv", "bye\x1b[31m");
    EXPECT_EQ(control.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
    EXPECT_EQ(control.error_message(),
              "job rdzv: reason \"bye\\033[31m\" contains the control character \"\\033\" at byte 3; give printable "
              "UTF-8 text");
    Kill(*coordinator, SIGKILL);
  }
  auto coordinator = *CoordinatorProcess::StartAt(address, state_dir);
  auto stub = coordinator->NewStub();
  v1::JobStatus job = GetJob(*stub, "rdzv");
  EXPECT_TRUE(job.closed());
  EXPECT_EQ(job.closed_reason(), "torchrun on host h finished");
  v1::JoinResponse resp;
  grpc::Status join = Join(*stub, "rdzv", "w1", 1, &resp);
  EXPECT_EQ(join.error_code(), grpc::StatusCode::FAILED_PRECONDITION);
  EXPECT_EQ(join.error_message(), refused);

  // Closed before anyone joined: the call creates the job; a reason is optional.
  ASSERT_TRUE(CloseJob(*stub, "early", "").ok());
  EXPECT_EQ(Join(*stub, "early", "w0", 1, &resp).error_message(),
            "job early is closed; no new generation starts in a closed job (delete it, tpctl delete early, to use "
            "its id afresh)");

  v1::DeleteJobRequest del;
  del.set_job_id("rdzv");
  v1::DeleteJobResponse deleted;
  ASSERT_TRUE(stub->DeleteJob(Deadline().get(), del, &deleted).ok());
  ASSERT_TRUE(Join(*stub, "rdzv", "w1", 1, &resp).ok());  // the id afresh
  EXPECT_EQ(resp.generation(), 1u);
  EXPECT_FALSE(GetJob(*stub, "rdzv").closed());
}

TEST(CoordinatorRestartTest, SigtermAnswersParkedAndNewCallsWithUnavailable) {
  auto coordinator = *CoordinatorProcess::Start(testing::MakeTempDir("sigterm"));
  auto stub = coordinator->NewStub();
  v1::JoinResponse resp;
  auto parked = std::async(std::launch::async, [&] { return Join(*stub, "j", "w0", 2, &resp); });
  auto observer = coordinator->NewStub();
  for (int i = 0; i < 500; ++i) {  // until the Join is parked in the coordinator
    v1::GetJobRequest req;
    req.set_job_id("j");
    v1::GetJobResponse job;
    if (observer->GetJob(Deadline().get(), req, &job).ok() && job.job().members_size() == 1) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  coordinator->process().Signal(SIGTERM);
  grpc::Status status = parked.get();
  EXPECT_EQ(status.error_code(), grpc::StatusCode::UNAVAILABLE) << status.error_message();
  EXPECT_EQ(status.error_message(), "job j: the coordinator is shutting down; retry");
  // A retry that still reaches the stopping coordinator is answered UNAVAILABLE too.
  for (int i = 0; i < 5; ++i) {
    v1::JoinResponse retry;
    grpc::Status again = Join(*observer, "j", "w0", 2, &retry, 5);
    EXPECT_EQ(again.error_code(), grpc::StatusCode::UNAVAILABLE) << again.error_message();
  }
  EXPECT_EQ(*coordinator->process().Wait(std::chrono::seconds(20)), 0);
  EXPECT_TRUE(absl::StrContains(coordinator->process().Stderr(), "shutting down"));
}

TEST(CoordinatorRestartTest, OneCoordinatorPerStateDir) {
  const std::string state_dir = testing::MakeTempDir("lock");
  auto first = *CoordinatorProcess::Start(state_dir);
  auto second = testing::Run({testing::BinPath("coordinator/tp-coordinator"), "--listen", "127.0.0.1:0",
                              "--state-dir", state_dir},
                             std::chrono::seconds(30));
  ASSERT_TRUE(second.ok());
  EXPECT_EQ(second->exit_code, 1);
  EXPECT_TRUE(absl::StrContains(second->err, "another tp-coordinator holds")) << second->err;
}

// The coordinator's exit code and stderr when it starts on `state_dir`.
testing::RunResult StartAndFail(const std::string& state_dir) {
  auto run = testing::Run({testing::BinPath("coordinator/tp-coordinator"), "--listen", "127.0.0.1:0", "--state-dir",
                           state_dir},
                          std::chrono::seconds(30));
  EXPECT_TRUE(run.ok()) << run.status();
  return run.ok() ? *run : testing::RunResult{};
}

void MakeJobs(const std::string& state_dir, const std::vector<std::string>& jobs) {
  auto coordinator = *CoordinatorProcess::Start(state_dir);
  auto stub = coordinator->NewStub();
  for (const std::string& job : jobs) ASSERT_TRUE(testing::RecordTpInit(*stub, job, 2, v1::DTYPE_BF16).ok());
  Kill(*coordinator, SIGTERM);
}

TEST(CoordinatorRestartTest, AnEmptiedOrMissingDatabaseIsRefusedLoudly) {  // regression: "0 job(s) restored"
  const std::string state_dir = testing::MakeTempDir("emptied");
  MakeJobs(state_dir, {"a"});
  std::filesystem::resize_file(state_dir + "/coordinator.db", 0);
  std::filesystem::remove(state_dir + "/coordinator.db-wal");
  testing::RunResult emptied = StartAndFail(state_dir);
  EXPECT_EQ(emptied.exit_code, 1);
  EXPECT_TRUE(absl::StrContains(emptied.err, "refusing to start with an empty state")) << emptied.err;
  EXPECT_TRUE(absl::StrContains(emptied.err, "coordinator.db (0 bytes) holds no state")) << emptied.err;
  std::filesystem::remove(state_dir + "/coordinator.db");
  testing::RunResult missing = StartAndFail(state_dir);
  EXPECT_EQ(missing.exit_code, 1);
  EXPECT_TRUE(absl::StrContains(missing.err, "coordinator.db is missing")) << missing.err;
}

TEST(CoordinatorRestartTest, ATruncatedDatabaseIsRefused) {
  const std::string state_dir = testing::MakeTempDir("truncated");
  std::vector<std::string> jobs;
  for (int i = 0; i < 300; ++i) jobs.push_back("job-" + std::to_string(i));
  MakeJobs(state_dir, jobs);
  const std::string db = state_dir + "/coordinator.db";
  std::filesystem::resize_file(db, std::filesystem::file_size(db) / 2);
  testing::RunResult truncated = StartAndFail(state_dir);
  EXPECT_EQ(truncated.exit_code, 1);
  EXPECT_TRUE(absl::StrContains(truncated.err, "state store " + db + " is corrupt: ")) << truncated.err;
}

// Overwrites `key` of the database in `state_dir` (the coordinator stopped) with `bytes`.
void Overwrite(const std::string& state_dir, const std::string& key, const std::string& bytes) {
  auto store = *OpenSqliteStateStore(state_dir + "/coordinator.db");
  ASSERT_TRUE(store->Write({StateWrite::Put(key, bytes)}, "corrupting it").ok());
}

testing::RunResult ForgetJob(const std::string& state_dir, const std::string& job) {
  auto run = testing::Run({testing::BinPath("coordinator/tp-coordinator"), "--state-dir", state_dir, "--forget-job",
                           job},
                          std::chrono::seconds(30));
  EXPECT_TRUE(run.ok()) << run.status();
  return run.ok() ? *run : testing::RunResult{};
}

v1::ListJobsResponse ListJobs(v1::Coordinator::Stub& stub, const std::string& token) {
  v1::ListJobsResponse jobs;
  EXPECT_TRUE(stub.ListJobs(testing::Credentials(token, "").get(), v1::ListJobsRequest(), &jobs).ok());
  return jobs;
}

// Every call about `job` answers DATA_LOSS with exactly `text`, except an admin's delete.
void ExpectEveryCallAnswers(v1::Coordinator::Stub& stub, const std::string& job, const std::string& text) {
  auto expect = [&](const char* call, const grpc::Status& status) {
    EXPECT_EQ(status.error_code(), grpc::StatusCode::DATA_LOSS) << call << ": " << status.error_message();
    EXPECT_EQ(status.error_message(), text) << call;
  };
  expect("RecordTpInitArgs", testing::RecordTpInit(stub, job, 2, v1::DTYPE_BF16));
  v1::JoinResponse joined;
  expect("Join", Join(stub, job, "w0", 1, &joined));
  v1::CreateJobRequest create;
  create.set_job_id(job);
  v1::CreateJobResponse created;
  expect("CreateJob", stub.CreateJob(Deadline().get(), create, &created));
  v1::MergeConfigRequest merge;
  merge.set_job_id(job);
  merge.set_config_json("{}");
  v1::MergeConfigResponse merged;
  expect("MergeConfig", stub.MergeConfig(Deadline().get(), merge, &merged));
  v1::GetJobRequest get;
  get.set_job_id(job);
  v1::GetJobResponse got;
  expect("GetJob", stub.GetJob(Deadline().get(), get, &got));
  for (bool force : {false, true}) {
    v1::DeleteJobRequest del;
    del.set_job_id(job);
    del.set_force(force);
    v1::DeleteJobResponse deleted;
    expect(force ? "DeleteJob --force" : "DeleteJob", stub.DeleteJob(Deadline().get(), del, &deleted));
  }
}

// A header that no longer parses has lost the job's token binding: no job token can prove ownership, so
// every call says so and names what its caller can do. Without an admin token that is the offline repair,
// which removes exactly that job.
TEST(CoordinatorRestartTest, ACorruptHeaderNamesTheOfflineRepairWhichRemovesExactlyThatJob) {
  const std::string state_dir = testing::MakeTempDir("corrupt-header");
  MakeJobs(state_dir, {"good", "job-b"});
  Overwrite(state_dir, "j/job-b", "\xff\xfe{bad");
  const std::string text =
      "job job-b: the stored state is corrupt: key \"j/job-b\": not a JobHeader message; its token binding is lost "
      "with it, so no job token can delete it: stop the coordinator and run tp-coordinator --state-dir " +
      state_dir + " --forget-job job-b";
  {
    auto coordinator = *CoordinatorProcess::Start(state_dir);
    EXPECT_TRUE(absl::StrContains(coordinator->process().Stderr(), "2 job(s) restored (1 unreadable)"))
        << coordinator->process().Stderr();
    EXPECT_TRUE(absl::StrContains(coordinator->process().Stderr(), "restore: " + text))
        << coordinator->process().Stderr();
    auto stub = coordinator->NewStub();
    ExpectEveryCallAnswers(*stub, "job-b", text);
    EXPECT_EQ(GetJob(*stub, "good").tp_init().tp_size(), 2);
    // Listed, so that its owner finds it, with why it failed.
    v1::ListJobsResponse jobs = ListJobs(*stub, testing::kTestToken);
    ASSERT_EQ(jobs.jobs_size(), 2);
    EXPECT_EQ(jobs.jobs(1).job_id(), "job-b");
    EXPECT_EQ(jobs.jobs(1).phase(), v1::PHASE_FAILED);
    EXPECT_EQ(jobs.jobs(1).end_reason(), text);
    // The repair is offline: the directory's lock refuses it while the coordinator runs.
    testing::RunResult busy = ForgetJob(state_dir, "job-b");
    EXPECT_EQ(busy.exit_code, 1);
    EXPECT_TRUE(absl::StrContains(busy.err, "another tp-coordinator holds")) << busy.err;
    Kill(*coordinator, SIGTERM);
  }
  testing::RunResult forgot = ForgetJob(state_dir, "job-b");
  EXPECT_EQ(forgot.exit_code, 0) << forgot.err;
  EXPECT_EQ(forgot.out, "forgot job job-b: removed its 1 stored entries from state store " + state_dir +
                            "/coordinator.db\n");
  testing::RunResult again = ForgetJob(state_dir, "job-b");
  EXPECT_EQ(again.exit_code, 1);
  EXPECT_TRUE(absl::StrContains(again.err, "fatal: --forget-job: state store " + state_dir +
                                               "/coordinator.db holds no job job-b"))
      << again.err;
  auto coordinator = *CoordinatorProcess::Start(state_dir);
  EXPECT_TRUE(absl::StrContains(coordinator->process().Stderr(), "1 job(s) restored, lease"))
      << coordinator->process().Stderr();
  auto stub = coordinator->NewStub();
  EXPECT_EQ(GetJob(*stub, "good").tp_init().tp_size(), 2);
  EXPECT_TRUE(testing::RecordTpInit(*stub, "job-b", 4, v1::DTYPE_BF16).ok());  // the id is free again
}

// With an admin token the message also names the admin's delete, which frees the id while serving.
TEST(CoordinatorRestartTest, ACorruptHeaderIsDeletedWithTheAdminToken) {
  const std::string state_dir = testing::MakeTempDir("corrupt-header-admin");
  MakeJobs(state_dir, {"good", "job-b"});
  Overwrite(state_dir, "j/job-b", "\xff\xfe{bad");
  auto coordinator = *CoordinatorProcess::Start(state_dir, testing::AdminTokenArgs(state_dir));
  auto stub = coordinator->NewStub();
  ExpectEveryCallAnswers(*stub, "job-b",
                         "job job-b: the stored state is corrupt: key \"j/job-b\": not a JobHeader message; its token "
                         "binding is lost with it, so no job token can delete it: stop the coordinator and run "
                         "tp-coordinator --state-dir " + state_dir + " --forget-job job-b, or delete it with the "
                         "admin token (tpctl delete job-b --force)");
  EXPECT_EQ(ListJobs(*stub, testing::kAdminToken).jobs_size(), 2);
  auto tpctl = testing::Run({testing::BinPath("coordinator/tpctl"), "--coordinator", coordinator->address(), "delete",
                             "job-b", "--force"},
                            std::chrono::seconds(30), testing::TokenEnv(testing::kAdminToken));
  ASSERT_TRUE(tpctl.ok());
  EXPECT_EQ(tpctl->exit_code, 0) << tpctl->err;
  EXPECT_TRUE(testing::RecordTpInit(*stub, "job-b", 4, v1::DTYPE_BF16).ok());
  EXPECT_EQ(GetJob(*stub, "good").tp_init().tp_size(), 2);
}

// A job whose header is intact but another entry is not keeps its token binding: its owner deletes it.
TEST(CoordinatorRestartTest, ACorruptEntryBehindAReadableHeaderIsDeletedByItsOwner) {
  const std::string state_dir = testing::MakeTempDir("corrupt-row");
  MakeJobs(state_dir, {"good", "bad"});
  Overwrite(state_dir, "j/bad/zzz", "\xff\xfe not an entry");
  auto coordinator = *CoordinatorProcess::Start(state_dir);
  EXPECT_TRUE(absl::StrContains(coordinator->process().Stderr(), "2 job(s) restored (1 unreadable)"))
      << coordinator->process().Stderr();
  auto stub = coordinator->NewStub();
  EXPECT_EQ(GetJob(*stub, "good").tp_init().tp_size(), 2);
  grpc::Status bad = testing::RecordTpInit(*stub, "bad", 2, v1::DTYPE_BF16);
  EXPECT_EQ(bad.error_code(), grpc::StatusCode::DATA_LOSS);
  EXPECT_EQ(bad.error_message(), "job bad: the stored state is corrupt: key \"j/bad/zzz\": unknown key; delete the "
                                 "job (tpctl delete bad) to start it afresh");
  // Someone else's token is refused as ever; the owner's deletes it, and that frees the id.
  v1::DeleteJobRequest del;
  del.set_job_id("bad");
  v1::DeleteJobResponse deleted;
  EXPECT_EQ(stub->DeleteJob(testing::Credentials("another-token-0123456789", "").get(), del, &deleted).error_code(),
            grpc::StatusCode::PERMISSION_DENIED);
  ASSERT_TRUE(stub->DeleteJob(Deadline().get(), del, &deleted).ok());
  EXPECT_TRUE(testing::RecordTpInit(*stub, "bad", 4, v1::DTYPE_BF16).ok());
}

}  // namespace
}  // namespace tpcoord
