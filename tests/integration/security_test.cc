// The attacks of the "Security" issue, each through the wire against a real coordinator: by a client with
// no token, by one with another job's token, and (for calls that act as a rank) by a holder of the job's
// token acting as a rank whose member key it does not have. Every one is refused with UNAUTHENTICATED or
// PERMISSION_DENIED, names the job and never a token, and the victim job completes untouched.
#include <signal.h>

#include <atomic>
#include <fstream>
#include <future>
#include <thread>

#include <grpcpp/generic/generic_stub.h>
#include <gtest/gtest.h>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "grpc/health/v1/health.grpc.pb.h"
#include "tests/support/coordinator_process.h"

namespace tpcoord {
namespace {

using testing::CoordinatorProcess;
using testing::Credentials;
using testing::kAdminToken;
using testing::kTestToken;
using testing::Subprocess;

constexpr char kOtherToken[] = "another-jobs-token-0123456789";
constexpr char kForgedKey[] = "a-member-key-nobody-joined-with";

struct Attacker {
  std::string who;
  std::string token;
  std::string member_key;
  grpc::StatusCode code;
};

// Outsiders: they hold no token of the victim job.
const std::vector<Attacker>& Outsiders() {
  static const auto* outsiders = new std::vector<Attacker>{
      {"a client without a token", "", kForgedKey, grpc::StatusCode::UNAUTHENTICATED},
      {"a client with another job's token", kOtherToken, kForgedKey, grpc::StatusCode::PERMISSION_DENIED}};
  return *outsiders;
}

// Outsiders, and a holder of the job's token acting as a rank it did not join as.
std::vector<Attacker> RankAttackers() {
  std::vector<Attacker> all = Outsiders();
  all.push_back({"the job's token with another member key", kTestToken, kForgedKey,
                 grpc::StatusCode::PERMISSION_DENIED});
  return all;
}

void ExpectRefused(const grpc::Status& status, const Attacker& attacker, const std::string& job,
                   const std::string& attack) {
  EXPECT_EQ(status.error_code(), attacker.code) << attack << " by " << attacker.who << ": " << status.error_message();
  EXPECT_TRUE(absl::StrContains(status.error_message(), "job " + job)) << attack << ": " << status.error_message();
  for (const char* secret : {kTestToken, kOtherToken, kAdminToken, kForgedKey}) {
    EXPECT_FALSE(absl::StrContains(status.error_message(), secret)) << attack << ": " << status.error_message();
  }
}

// Asks gRPC server reflection at `address` to list its services, over a generic stream: the response's
// bytes, or the status the stream ended with.
absl::StatusOr<std::string> ListServicesByReflection(const std::string& address) {
  grpc::GenericStub stub(grpc::CreateChannel(address, grpc::InsecureChannelCredentials()));
  grpc::CompletionQueue cq;
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
  auto call = stub.PrepareCall(&ctx, "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo", &cq);
  void* tag;
  bool ok;
  auto step = [&](auto&& op) {
    op();
    cq.Next(&tag, &ok);
    return ok;
  };
  std::string listed;
  if (step([&] { call->StartCall(nullptr); })) {
    grpc::Slice slice(std::string("\x3a\x00", 2));  // ServerReflectionRequest{list_services: ""}
    grpc::ByteBuffer request(&slice, 1), response;
    if (step([&] { call->Write(request, nullptr); }) && step([&] { call->WritesDone(nullptr); }) &&
        step([&] { call->Read(&response, nullptr); })) {
      std::vector<grpc::Slice> slices;
      (void)response.Dump(&slices);
      for (const grpc::Slice& s : slices) listed.append(reinterpret_cast<const char*>(s.begin()), s.size());
    }
  }
  grpc::Status status;
  step([&] { call->Finish(&status, nullptr); });
  cq.Shutdown();
  while (cq.Next(&tag, &ok)) {}
  if (!listed.empty()) return listed;
  return absl::Status(static_cast<absl::StatusCode>(status.error_code()), status.error_message());
}

class SecurityTest : public ::testing::Test {
 protected:
  void Start(std::vector<std::string> extra = {}) {
    dir_ = testing::MakeTempDir(::testing::UnitTest::GetInstance()->current_test_info()->name());
    std::vector<std::string> args = testing::AdminTokenArgs(dir_);
    args.insert(args.end(), extra.begin(), extra.end());
    coordinator_ = *CoordinatorProcess::Start(dir_ + "/state", args);
    stub_ = coordinator_->NewStub();
  }

  // GetJob as `token`; the status goes to `status` when given, else it must be OK.
  v1::JobStatus GetJob(const std::string& job, const std::string& token = kTestToken,
                       grpc::Status* status = nullptr) {
    v1::GetJobRequest req;
    req.set_job_id(job);
    v1::GetJobResponse resp;
    grpc::Status s = stub_->GetJob(Credentials(token, "").get(), req, &resp);
    if (status) *status = s;
    else EXPECT_TRUE(s.ok()) << s.error_message();
    return resp.job();
  }

  std::vector<std::string> ListJobs(const std::string& token, grpc::Status* status = nullptr) {
    v1::ListJobsResponse resp;
    grpc::Status s = stub_->ListJobs(Credentials(token, "").get(), v1::ListJobsRequest(), &resp);
    if (status) *status = s;
    else EXPECT_TRUE(s.ok()) << s.error_message();
    std::vector<std::string> ids;
    for (const v1::JobStatus& job : resp.jobs()) {
      ids.push_back(job.job_id());
      if (token != kAdminToken) {
        EXPECT_TRUE(job.merged_config_json().empty() || job.job_id() != "victim");
      }
    }
    return ids;
  }

  grpc::Status Record(const std::string& job, const std::string& token, int tp_size = 2) {
    v1::RecordTpInitArgsRequest req;
    req.set_job_id(job);
    req.set_tp_size(tp_size);
    req.set_dtype(v1::DTYPE_FP32);
    v1::RecordTpInitArgsResponse resp;
    return stub_->RecordTpInitArgs(Credentials(token, "").get(), req, &resp);
  }

  grpc::Status Join(const std::string& job, const std::string& worker, int rank, int world,
                    const std::string& token, const std::string& key, v1::JoinResponse* out = nullptr,
                    uint32_t wait_ms = 30000) {
    v1::JoinRequest req;
    req.set_job_id(job);
    req.set_worker_id(worker);
    req.set_host("127.0.0.1");
    req.set_world_size(world);
    req.set_requested_rank(rank);
    req.set_wait_timeout_ms(wait_ms);
    v1::JoinResponse resp;
    return stub_->Join(Credentials(token, key, 60).get(), req, out ? out : &resp);
  }

  // Every call that acts as `rank` of `generation`, or reads or writes its store, as `attacker`; each
  // must be refused.
  void AttackAsRank(const std::string& job, uint64_t generation, int rank, int world, const Attacker& attacker) {
    auto ctx = [&] { return Credentials(attacker.token, attacker.member_key); };
    {  // 4: a spoofed Leave ends the generation; 7: Leave(finished) for every rank completes it
      for (bool finished : {false, true}) {
        for (int r = 0; r < world; ++r) {
          v1::LeaveRequest req;
          req.set_job_id(job);
          req.set_generation(generation);
          req.set_rank(r);
          req.set_finished(finished);
          req.set_reason("spoofed");
          v1::LeaveResponse resp;
          ExpectRefused(stub_->Leave(ctx().get(), req, &resp), attacker, job, absl::StrCat("Leave rank ", r));
        }
      }
    }
    {  // 6: spoofed heartbeats keep a hung rank alive
      v1::HeartbeatRequest req;
      req.set_job_id(job);
      req.set_generation(generation);
      req.set_rank(rank);
      v1::HeartbeatResponse resp;
      ExpectRefused(stub_->Heartbeat(ctx().get(), req, &resp), attacker, job, "Heartbeat");
    }
    {  // 10: read the leader's unique ID, publish a forged one as the leader
      v1::GetUniqueIdRequest get;
      get.set_job_id(job);
      get.set_generation(generation);
      get.set_rank(rank);
      get.add_groups()->set_kind(v1::GROUP_KIND_WORLD);
      get.set_wait_timeout_ms(1000);
      v1::GetUniqueIdResponse got;
      ExpectRefused(stub_->GetUniqueId(ctx().get(), get, &got), attacker, job, "GetUniqueId");
      v1::PublishUniqueIdRequest publish;
      publish.set_job_id(job);
      publish.set_generation(generation);
      publish.set_rank(0);
      v1::UniqueId* id = publish.add_ids();
      id->mutable_group()->set_kind(v1::GROUP_KIND_WORLD);
      id->set_id(std::string(128, 'F'));
      v1::PublishUniqueIdResponse published;
      ExpectRefused(stub_->PublishUniqueId(ctx().get(), publish, &published), attacker, job, "PublishUniqueId");
    }
    {  // 10: a Barrier as another rank cancels its parked call, or releases the others
      for (int r = 0; r < world; ++r) {
        v1::BarrierRequest req;
        req.set_job_id(job);
        req.set_generation(generation);
        req.set_rank(r);
        req.set_name("sync");
        req.set_wait_timeout_ms(1000);
        v1::BarrierResponse resp;
        ExpectRefused(stub_->Barrier(ctx().get(), req, &resp), attacker, job, absl::StrCat("Barrier rank ", r));
      }
    }
    {  // 2: a merge within the generation would replace the job's merged config
      v1::MergeConfigRequest req;
      req.set_job_id(job);
      req.set_config_json(R"({"train_batch_size": 4096})");
      req.set_generation(generation);
      req.set_rank(rank);
      v1::MergeConfigResponse resp;
      ExpectRefused(stub_->MergeConfig(ctx().get(), req, &resp), attacker, job, "MergeConfig in the generation");
    }
    {  // 3: the store holds every rank's Gloo address
      v1::StoreGetRequest get;
      get.set_job_id(job);
      get.set_generation(generation);
      get.set_key("rank_0");
      get.set_wait_timeout_ms(1000);
      v1::StoreGetResponse got;
      ExpectRefused(stub_->StoreGet(ctx().get(), get, &got), attacker, job, "StoreGet");
      v1::StoreSetRequest set;
      set.set_job_id(job);
      set.set_generation(generation);
      set.set_key("rank_0");
      set.set_value("garbage");
      v1::StoreSetResponse was_set;
      ExpectRefused(stub_->StoreSet(ctx().get(), set, &was_set), attacker, job, "StoreSet");
      v1::StoreDeleteRequest del;
      del.set_job_id(job);
      del.set_generation(generation);
      del.set_key("rank_0");
      v1::StoreDeleteResponse deleted;
      ExpectRefused(stub_->StoreDelete(ctx().get(), del, &deleted), attacker, job, "StoreDelete");
      v1::StoreNumKeysRequest num;
      num.set_job_id(job);
      num.set_generation(generation);
      v1::StoreNumKeysResponse counted;
      ExpectRefused(stub_->StoreNumKeys(ctx().get(), num, &counted), attacker, job, "StoreNumKeys");
    }
  }

  // What only the job's token may do, tried by an outsider: 1 (recon), 2 (standalone merge), 5 (an intruding
  // Join), 9 (a conflicting record), and deleting or re-creating the job.
  void AttackAsOutsider(const std::string& job, const Attacker& attacker) {
    grpc::Status status;
    GetJob(job, attacker.token, &status);
    ExpectRefused(status, attacker, job, "GetJob");
    if (attacker.token.empty()) {
      ListJobs("", &status);
      EXPECT_EQ(status.error_code(), grpc::StatusCode::UNAUTHENTICATED) << status.error_message();
    } else {
      for (const std::string& id : ListJobs(attacker.token)) EXPECT_NE(id, job);
    }
    v1::MergeConfigRequest merge;
    merge.set_job_id(job);
    merge.set_config_json("{}");
    v1::MergeConfigResponse merged;
    ExpectRefused(stub_->MergeConfig(Credentials(attacker.token, "").get(), merge, &merged), attacker, job,
                  "a standalone MergeConfig");
    ExpectRefused(Join(job, "intruder", 0, 4, attacker.token, kForgedKey, nullptr, 1000), attacker, job,
                  "an intruding Join");
    ExpectRefused(Record(job, attacker.token, 4), attacker, job, "RecordTpInitArgs");
    v1::DeleteJobRequest del;
    del.set_job_id(job);
    del.set_force(true);
    v1::DeleteJobResponse deleted;
    ExpectRefused(stub_->DeleteJob(Credentials(attacker.token, "").get(), del, &deleted), attacker, job, "DeleteJob");
    v1::CreateJobRequest create;
    create.set_job_id(job);
    create.set_job_token("a-token-the-attacker-chose-0123");
    v1::CreateJobResponse created;
    ExpectRefused(stub_->CreateJob(Credentials(attacker.token, "").get(), create, &created), attacker, job,
                  "CreateJob");
  }

  std::string dir_;
  std::unique_ptr<CoordinatorProcess> coordinator_;
  std::unique_ptr<v1::Coordinator::Stub> stub_;
};

// Four real tp-workers train while every attack is tried against them; they all exit 0, and the job shows
// the config they merged, generation 1, completed.
TEST_F(SecurityTest, EveryAttackOnATrainingJobFailsAndTheJobCompletes) {
  Start({"--job-creation", "admin"});
  // 9: squatting the job id before its workers start; on this coordinator only the admin creates jobs.
  for (const Attacker& attacker : Outsiders()) ExpectRefused(Record("victim", attacker.token, 4), attacker, "victim", "squatting");
  ExpectRefused(Record("victim", kTestToken, 4), Outsiders()[1], "victim", "creating a job without the admin token");
  const std::string token_file = dir_ + "/victim-token";
  std::ofstream(token_file) << kTestToken;
  auto created = testing::Run({testing::BinPath("coordinator/tpctl"), "--coordinator", coordinator_->address(),
                               "create", "victim", "--job-token-file", token_file},
                              std::chrono::seconds(30), testing::TokenEnv(kAdminToken));
  ASSERT_TRUE(created.ok());
  ASSERT_EQ(created->exit_code, 0) << created->err;
  EXPECT_EQ(created->out, "created job victim\n");
  ASSERT_TRUE(Record("other-job", kAdminToken).ok());  // so that kOtherToken is a real job's token
  {
    v1::CreateJobRequest req;
    req.set_job_id("other");
    req.set_job_token(kOtherToken);
    v1::CreateJobResponse resp;
    ASSERT_TRUE(stub_->CreateJob(Credentials(kAdminToken, "").get(), req, &resp).ok());
  }

  std::vector<std::unique_ptr<Subprocess>> workers;
  for (int i = 0; i < 4; ++i) {
    workers.push_back(*Subprocess::Start(
        {testing::BinPath("worker/tp-worker"), "--coordinator", coordinator_->address(), "--job", "victim",
         "--world-size", "4", "--host", "127.0.0.1", "--config",
         absl::StrCat(TPCOORD_SOURCE_DIR, "/deploy/ds_config.json"), "--random-init", "tiny", "--data",
         absl::StrCat(TPCOORD_SOURCE_DIR, "/deploy/data/public_domain.txt"), "--steps", "100", "--timeout", "120s"},
        testing::TokenEnv()));
  }
  v1::JobStatus running;
  for (int i = 0; i < 600; ++i) {
    running = GetJob("victim");
    if (running.phase() == v1::PHASE_RUNNING && !running.merged_config_json().empty()) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  ASSERT_EQ(running.phase(), v1::PHASE_RUNNING) << running.DebugString();
  ASSERT_EQ(running.generation(), 1u);

  for (const Attacker& attacker : Outsiders()) AttackAsOutsider("victim", attacker);
  for (const Attacker& attacker : RankAttackers()) AttackAsRank("victim", 1, 2, 4, attacker);
  // A token holder's standalone merge is a dry run: it answers, and the job keeps its merged config.
  v1::MergeConfigRequest dry;
  dry.set_job_id("victim");
  dry.set_config_json(R"({"train_batch_size": 4096})");
  v1::MergeConfigResponse dry_merged;
  ASSERT_TRUE(stub_->MergeConfig(Credentials(kTestToken, "").get(), dry, &dry_merged).ok());
  EXPECT_TRUE(absl::StrContains(dry_merged.merged_config_json(), "4096"));
  v1::JobStatus after = GetJob("victim");
  ASSERT_EQ(after.phase(), v1::PHASE_RUNNING) << "the job ended while it was attacked: " << after.DebugString();
  EXPECT_EQ(after.merged_config_json(), running.merged_config_json());

  for (auto& worker : workers) {
    EXPECT_EQ(worker->Wait(std::chrono::minutes(5)).value_or(-1), 0) << worker->Stdout() << worker->Stderr();
  }
  v1::JobStatus done = GetJob("victim");
  EXPECT_EQ(done.phase(), v1::PHASE_COMPLETED) << done.DebugString();
  EXPECT_EQ(done.generation(), 1u);
  EXPECT_EQ(done.member_count(), 4);
  EXPECT_EQ(done.merged_config_json(), running.merged_config_json());
}

// The rank attacks by a real member of the same job: it cannot take another worker's parked seat (8), read
// or forge the leader's unique ID or enter a barrier as another rank (10), or heartbeat, leave or merge as
// another rank (4, 6, 7); and a member of an old generation cannot act in the new one.
TEST_F(SecurityTest, AMemberCannotActAsAnotherRank) {
  Start();
  ASSERT_TRUE(Record("ranks", kTestToken).ok());
  const std::string key_a = "member-key-of-rank-0-0123456789", key_b = "member-key-of-rank-1-0123456789";
  v1::JoinResponse joined_a, joined_b;
  auto join_a = std::async(std::launch::async, [&] { return Join("ranks", "wa", 0, 2, kTestToken, key_a, &joined_a); });
  for (int i = 0; i < 100 && GetJob("ranks").member_count() < 1; ++i) std::this_thread::sleep_for(std::chrono::milliseconds(50));
  ASSERT_EQ(GetJob("ranks").member_count(), 1);
  // 8: a Join with the parked worker's id and another key cannot take its seat.
  for (const Attacker& attacker : RankAttackers()) {
    ExpectRefused(Join("ranks", "wa", 0, 2, attacker.token, attacker.member_key, nullptr, 1000), attacker, "ranks",
                  "a Join with a parked worker's id");
  }
  ASSERT_TRUE(Join("ranks", "wb", 1, 2, kTestToken, key_b, &joined_b).ok());
  ASSERT_TRUE(join_a.get().ok());
  EXPECT_EQ(joined_a.rank(), 0);
  EXPECT_EQ(joined_a.generation(), 1u);
  const Attacker a_as_b{"rank 0 acting as rank 1", kTestToken, key_a, grpc::StatusCode::PERMISSION_DENIED};
  const Attacker b_as_a{"rank 1 acting as rank 0", kTestToken, key_b, grpc::StatusCode::PERMISSION_DENIED};

  // 10: rank 1 waits for the world group's ID; rank 1 cannot publish as the leader, and the ID it
  // receives is the leader's.
  v1::GetUniqueIdRequest get;
  get.set_job_id("ranks");
  get.set_generation(1);
  get.set_rank(1);
  get.add_groups()->set_kind(v1::GROUP_KIND_WORLD);
  get.set_wait_timeout_ms(30000);
  v1::GetUniqueIdResponse got;
  auto getting = std::async(std::launch::async, [&] {
    return stub_->GetUniqueId(Credentials(kTestToken, key_b, 60).get(), get, &got);
  });
  auto publish = [&](const std::string& key, char byte) {
    v1::PublishUniqueIdRequest req;
    req.set_job_id("ranks");
    req.set_generation(1);
    req.set_rank(0);
    v1::UniqueId* id = req.add_ids();
    id->mutable_group()->set_kind(v1::GROUP_KIND_WORLD);
    id->set_id(std::string(128, byte));
    v1::PublishUniqueIdResponse resp;
    return stub_->PublishUniqueId(Credentials(kTestToken, key).get(), req, &resp);
  };
  ExpectRefused(publish(key_b, 'F'), b_as_a, "ranks", "publishing a forged ID as the leader");
  get.set_wait_timeout_ms(1000);
  v1::GetUniqueIdResponse stolen;
  ExpectRefused(stub_->GetUniqueId(Credentials(kTestToken, key_a).get(), get, &stolen), a_as_b, "ranks",
                "reading the ID as another rank");
  ASSERT_TRUE(publish(key_a, 'R').ok());
  ASSERT_TRUE(getting.get().ok());
  ASSERT_EQ(got.ids_size(), 1);
  EXPECT_EQ(got.ids(0).id(), std::string(128, 'R'));

  // 10: rank 1 parks in a barrier; rank 0 acting as rank 1 neither cancels it nor releases it.
  auto barrier = [&](int rank, const std::string& key, uint32_t wait_ms) {
    v1::BarrierRequest req;
    req.set_job_id("ranks");
    req.set_generation(1);
    req.set_rank(rank);
    req.set_name("sync");
    req.set_wait_timeout_ms(wait_ms);
    v1::BarrierResponse resp;
    return stub_->Barrier(Credentials(kTestToken, key, 60).get(), req, &resp);
  };
  auto parked = std::async(std::launch::async, [&] { return barrier(1, key_b, 30000); });
  std::this_thread::sleep_for(std::chrono::milliseconds(300));
  ExpectRefused(barrier(1, key_a, 1000), a_as_b, "ranks", "a Barrier as another rank");
  EXPECT_EQ(parked.wait_for(std::chrono::milliseconds(300)), std::future_status::timeout);
  ASSERT_TRUE(barrier(0, key_a, 30000).ok());
  EXPECT_TRUE(parked.get().ok());

  // 4, 6, 7 and 2 by a member: everything acting as the other rank is refused, and the generation runs on.
  for (const Attacker& attacker : {a_as_b}) {
    v1::HeartbeatRequest beat;
    beat.set_job_id("ranks");
    beat.set_generation(1);
    beat.set_rank(1);
    v1::HeartbeatResponse beat_resp;
    ExpectRefused(stub_->Heartbeat(Credentials(attacker.token, attacker.member_key).get(), beat, &beat_resp),
                  attacker, "ranks", "Heartbeat as another rank");
    for (bool finished : {false, true}) {
      v1::LeaveRequest leave;
      leave.set_job_id("ranks");
      leave.set_generation(1);
      leave.set_rank(1);
      leave.set_finished(finished);
      v1::LeaveResponse left;
      ExpectRefused(stub_->Leave(Credentials(attacker.token, attacker.member_key).get(), leave, &left), attacker,
                    "ranks", "Leave as another rank");
    }
    v1::MergeConfigRequest merge;
    merge.set_job_id("ranks");
    merge.set_config_json("{}");
    merge.set_generation(1);
    merge.set_rank(1);
    v1::MergeConfigResponse merged;
    ExpectRefused(stub_->MergeConfig(Credentials(attacker.token, attacker.member_key).get(), merge, &merged),
                  attacker, "ranks", "MergeConfig as another rank");
  }
  EXPECT_EQ(GetJob("ranks").phase(), v1::PHASE_RUNNING);

  // Rank 0 ends generation 1 as itself; both join generation 2 with fresh keys, and the old keys are void.
  v1::LeaveRequest leave;
  leave.set_job_id("ranks");
  leave.set_generation(1);
  leave.set_rank(0);
  leave.set_reason("restarting");
  v1::LeaveResponse left;
  ASSERT_TRUE(stub_->Leave(Credentials(kTestToken, key_a).get(), leave, &left).ok());
  const std::string key_a2 = "member-key-of-rank-0-generation-2", key_b2 = "member-key-of-rank-1-generation-2";
  auto rejoin_a = std::async(std::launch::async, [&] { return Join("ranks", "wa", 0, 2, kTestToken, key_a2); });
  ASSERT_TRUE(Join("ranks", "wb", 1, 2, kTestToken, key_b2).ok());
  ASSERT_TRUE(rejoin_a.get().ok());
  v1::HeartbeatRequest stale;
  stale.set_job_id("ranks");
  stale.set_generation(2);
  stale.set_rank(0);
  v1::HeartbeatResponse stale_resp;
  ExpectRefused(stub_->Heartbeat(Credentials(kTestToken, key_a).get(), stale, &stale_resp),
                {"a member of generation 1", kTestToken, key_a, grpc::StatusCode::PERMISSION_DENIED}, "ranks",
                "a heartbeat with an old generation's key");
  EXPECT_TRUE(stub_->Heartbeat(Credentials(kTestToken, key_a2).get(), stale, &stale_resp).ok());
}

// 6: a hung (SIGSTOPped) worker's lease ends the generation on time although attackers heartbeat for it.
TEST_F(SecurityTest, SpoofedHeartbeatsCannotKeepAHungRankAlive) {
  Start({"--lease", "2s"});
  std::vector<std::unique_ptr<Subprocess>> workers;
  for (int rank = 0; rank < 3; ++rank) {
    workers.push_back(*Subprocess::Start(
        {testing::BinPath("tests/integration/rendezvous_probe"), "--coordinator", coordinator_->address(), "--job",
         "hung", "--world-size", "3", "--rank", std::to_string(rank), "--host", absl::StrCat("host-", rank),
         "--park", "hold"},
        testing::TokenEnv()));
  }
  for (auto& w : workers) ASSERT_TRUE(w->WaitForLine("joined generation=1", std::chrono::seconds(60)).ok()) << w->Stderr();
  workers[2]->Signal(SIGSTOP);
  std::atomic<bool> stop{false};
  std::thread spoofer([&] {
    while (!stop) {
      for (const Attacker& attacker : RankAttackers()) {
        v1::HeartbeatRequest req;
        req.set_job_id("hung");
        req.set_generation(1);
        req.set_rank(2);
        v1::HeartbeatResponse resp;
        stub_->Heartbeat(Credentials(attacker.token, attacker.member_key).get(), req, &resp).ok();
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
  });
  for (int rank : {0, 1}) {
    absl::StatusOr<std::string> aborted = workers[rank]->WaitForLine("aborted", std::chrono::seconds(30));
    ASSERT_TRUE(aborted.ok()) << aborted.status();
    EXPECT_TRUE(absl::StrContains(*aborted, "job hung: generation 1 ended: rank 2 (host host-2")) << *aborted;
    EXPECT_TRUE(absl::StrContains(*aborted, "missed its heartbeat lease of 2s")) << *aborted;
  }
  stop = true;
  spoofer.join();
  workers[2]->Signal(SIGKILL);
}

// Bindings are durable, and each token sees its own jobs: the admin every job, nobody else another's.
TEST_F(SecurityTest, TokensSurviveARestartAndEachTokenSeesOnlyItsJobs) {
  Start();
  ASSERT_TRUE(Record("job-a", kTestToken).ok());
  ASSERT_TRUE(Record("job-b", kOtherToken).ok());
  for (int restart = 0; restart < 2; ++restart) {
    SCOPED_TRACE(restart ? "after a restart" : "before a restart");
    EXPECT_EQ(ListJobs(kTestToken), std::vector<std::string>{"job-a"});
    EXPECT_EQ(ListJobs(kOtherToken), std::vector<std::string>{"job-b"});
    EXPECT_EQ(ListJobs(kAdminToken), (std::vector<std::string>{"job-a", "job-b"}));
    EXPECT_TRUE(ListJobs("a-token-of-no-job-0123456789").empty());
    grpc::Status status;
    GetJob("job-b", kTestToken, &status);
    EXPECT_EQ(status.error_code(), grpc::StatusCode::PERMISSION_DENIED);
    EXPECT_EQ(status.error_message(), "job job-b: the call's token is not the job's token");
    GetJob("job-b", "", &status);
    EXPECT_EQ(status.error_code(), grpc::StatusCode::UNAUTHENTICATED);
    EXPECT_TRUE(absl::StrContains(status.error_message(), "job job-b: ")) << status.error_message();
    EXPECT_EQ(GetJob("job-b", kOtherToken).job_id(), "job-b");
    EXPECT_EQ(GetJob("job-b", kAdminToken).job_id(), "job-b");
    EXPECT_EQ(Record("job-a", kOtherToken).error_code(), grpc::StatusCode::PERMISSION_DENIED);
    EXPECT_TRUE(Record("job-a", kTestToken).ok());
    coordinator_->process().Signal(SIGTERM);
    ASSERT_EQ(coordinator_->process().Wait(std::chrono::seconds(30)).value_or(-1), 0);
    coordinator_ = *CoordinatorProcess::Start(dir_ + "/state", testing::AdminTokenArgs(dir_));
    stub_ = coordinator_->NewStub();
  }
  // The admin may delete any job; the id is then free for anyone.
  v1::DeleteJobRequest del;
  del.set_job_id("job-b");
  v1::DeleteJobResponse deleted;
  ASSERT_TRUE(stub_->DeleteJob(Credentials(kAdminToken, "").get(), del, &deleted).ok());
  EXPECT_TRUE(Record("job-b", kTestToken).ok());
  EXPECT_EQ(ListJobs(kTestToken), (std::vector<std::string>{"job-a", "job-b"}));
}

// In the default open mode the first caller binds a job id: workers with another token are refused with a
// message that names the job and says what to do, never the token.
TEST_F(SecurityTest, AJobSquattedInOpenModeRefusesTheRealWorkersClearly) {
  Start();
  ASSERT_TRUE(Record("squatted", kOtherToken, 4).ok());
  auto worker = testing::Run(
      {testing::BinPath("worker/tp-worker"), "--coordinator", coordinator_->address(), "--job", "squatted",
       "--world-size", "2", "--tp-size", "2", "--host", "127.0.0.1", "--config",
       absl::StrCat(TPCOORD_SOURCE_DIR, "/deploy/docker/ds_config_any_tp.json"), "--random-init", "tiny", "--data",
       absl::StrCat(TPCOORD_SOURCE_DIR, "/deploy/data/public_domain.txt"), "--timeout", "30s"},
      std::chrono::seconds(60), testing::TokenEnv());
  ASSERT_TRUE(worker.ok());
  EXPECT_EQ(worker->exit_code, 3);  // a fatal configuration error: restarting cannot help
  EXPECT_TRUE(absl::StrContains(worker->err, "job squatted: the call's token is not the job's token")) << worker->err;
  EXPECT_FALSE(absl::StrContains(worker->err, kTestToken)) << worker->err;
}

TEST_F(SecurityTest, HealthNeedsNoTokenAndReflectionIsOptIn) {
  Start();
  auto channel = grpc::CreateChannel(coordinator_->address(), grpc::InsecureChannelCredentials());
  auto health = grpc::health::v1::Health::NewStub(channel);
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
  grpc::health::v1::HealthCheckRequest req;
  grpc::health::v1::HealthCheckResponse resp;
  ASSERT_TRUE(health->Check(&ctx, req, &resp).ok());
  EXPECT_EQ(resp.status(), grpc::health::v1::HealthCheckResponse::SERVING);
  // Every Coordinator call needs a token, even one for a job that does not exist.
  v1::ListJobsResponse jobs;
  grpc::Status status = stub_->ListJobs(Credentials("", "").get(), v1::ListJobsRequest(), &jobs);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::UNAUTHENTICATED);
  EXPECT_TRUE(absl::StrContains(status.error_message(), "authorization: Bearer")) << status.error_message();
  grpc::Status malformed = stub_->ListJobs(Credentials("short", "").get(), v1::ListJobsRequest(), &jobs);
  EXPECT_EQ(malformed.error_code(), grpc::StatusCode::UNAUTHENTICATED) << malformed.error_message();
  // The refusal comes before the request is checked, so it names the job only when the id is valid.
  v1::GetJobRequest evil;
  evil.set_job_id(std::string(100000, '\x01'));
  v1::GetJobResponse evil_resp;
  grpc::Status refused = stub_->GetJob(Credentials("", "").get(), evil, &evil_resp);
  EXPECT_EQ(refused.error_code(), grpc::StatusCode::UNAUTHENTICATED);
  EXPECT_TRUE(absl::StartsWith(refused.error_message(), "the call carries no token")) << refused.error_message();

  absl::StatusOr<std::string> off = ListServicesByReflection(coordinator_->address());
  EXPECT_EQ(off.status().code(), absl::StatusCode::kUnimplemented) << off.status();
  coordinator_.reset();
  coordinator_ = *CoordinatorProcess::Start(dir_ + "/state", {"--reflection"});
  absl::StatusOr<std::string> on = ListServicesByReflection(coordinator_->address());
  ASSERT_TRUE(on.ok()) << on.status();
  EXPECT_TRUE(absl::StrContains(*on, "tpcoord.v1.Coordinator")) << *on;
}

}  // namespace
}  // namespace tpcoord
