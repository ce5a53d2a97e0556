// High availability through real processes: a 3-member etcd cluster (Debian's etcd-server on loopback),
// the etcd state store with its fence, and two tp-coordinators on it, one leading and one standing by,
// with real tp-workers that are given both addresses. The leader is killed (kill -9) during Join, during the
// Gloo set-up and during training, frozen past its lease, cut off from etcd's quorum; an etcd member is
// lost. Each time the job completes, no worker restarts (they run with --max-restarts 0), and every worker
// exits 0.
#include <signal.h>

#include <gtest/gtest.h>

#include <chrono>
#include <fstream>
#include <map>

#include "absl/algorithm/container.h"
#include <thread>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "coordinator/ha/etcd_connection.h"
#include "coordinator/ha/etcd_state_store.h"
#include "coordinator/ha/leader_election.h"
#include "tests/support/coordinator_process.h"
#include "tests/support/etcd_cluster.h"
#include "client/coordinator_client.h"

namespace tpcoord {
namespace {

using testing::CoordinatorProcess;
using testing::EtcdCluster;
using testing::Subprocess;
using std::chrono::milliseconds;
using std::chrono::seconds;

// Waits until `process`'s stderr contains `text`, at least `count` times.
bool WaitForLog(Subprocess& process, const std::string& text, milliseconds timeout, int count = 1) {
  const auto give_up = std::chrono::steady_clock::now() + timeout;
  while (std::chrono::steady_clock::now() < give_up) {
    const std::string err = process.Stderr();
    int seen = 0;
    for (size_t at = err.find(text); at != std::string::npos; at = err.find(text, at + 1)) ++seen;
    if (seen >= count) return true;
    std::this_thread::sleep_for(milliseconds(50));
  }
  return false;
}

void NoLog(const std::string&) {}

// --- the state store on etcd, without coordinators -------------------------------------------------

class EtcdStateStoreTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!testing::HaveEtcd()) GTEST_SKIP() << "etcd-server is not installed (deploy/install-deps.sh installs it)";
    auto cluster = EtcdCluster::Start(testing::MakeTempDir("etcd"));
    ASSERT_TRUE(cluster.ok()) << cluster.status();
    cluster_ = *std::move(cluster);
    target_ = *ParseEtcdTarget(cluster_->url("/store-test"));
    etcd_ = std::make_unique<EtcdConnection>(target_, EtcdCredentials{}, seconds(3));
  }

  std::unique_ptr<EtcdCluster> cluster_;
  EtcdTarget target_;
  std::unique_ptr<EtcdConnection> etcd_;
};

TEST_F(EtcdStateStoreTest, WritesAreReadBackInKeyOrderBeyondOneTransaction) {
  LeaderElection election(etcd_.get(), seconds(2), NoLog);
  absl::StatusOr<Fence> fence = election.Campaign("me:1", [](const std::string&) {});
  ASSERT_TRUE(fence.ok()) << fence.status();
  std::unique_ptr<StateStore> store = MakeEtcdStateStore(etcd_.get(), *fence, [](const std::string&) {});
  StateWrites writes;
  for (int i = 0; i < 300; ++i) writes.push_back(StateWrite::Put(absl::StrCat("j/a/", 1000 + i), "v"));  // > 128 ops
  writes.push_back(StateWrite::Put("j/b/x", std::string(1 << 20, 'x')));  // > 1 MiB beside the rest
  writes.push_back(StateWrite::Put("j/c/1", "1"));
  ASSERT_TRUE(store->Write(writes, "test").ok());
  ASSERT_TRUE(store->Write({StateWrite::DeletePrefix("j/a/"), StateWrite::Put("j/a/only", "o"),
                            StateWrite::Delete("j/c/1")},
                           "test")
                  .ok());
  absl::StatusOr<std::vector<StateEntry>> all = store->Scan("j/");
  ASSERT_TRUE(all.ok()) << all.status();
  ASSERT_EQ(all->size(), 2u);
  EXPECT_EQ((*all)[0].key, "j/a/only");
  EXPECT_EQ((*all)[1].key, "j/b/x");
  EXPECT_EQ((*all)[1].value.size(), size_t{1} << 20);
  // Pages of a long scan come from one snapshot, in order.
  StateWrites many;
  for (int i = 0; i < 2500; ++i) many.push_back(StateWrite::Put(absl::StrCat("k/", 10000 + i), ""));
  ASSERT_TRUE(store->Write(many, "test").ok());
  absl::StatusOr<std::vector<StateEntry>> scanned = store->Scan("k/");
  ASSERT_TRUE(scanned.ok());
  ASSERT_EQ(scanned->size(), 2500u);
  EXPECT_EQ(scanned->front().key, "k/10000");
  EXPECT_EQ(scanned->back().key, "k/12499");
}

TEST_F(EtcdStateStoreTest, ADeposedLeadersWritesAreRefusedAndChangeNothing) {
  auto first = std::make_unique<LeaderElection>(etcd_.get(), seconds(2), NoLog);
  absl::StatusOr<Fence> old_fence = first->Campaign("first:1", [](const std::string&) {});
  ASSERT_TRUE(old_fence.ok());
  first.reset();  // resigns: revokes its lease, the leader key goes
  LeaderElection second(etcd_.get(), seconds(2), NoLog);
  absl::StatusOr<Fence> fence = second.Campaign("second:1", [](const std::string&) {});
  ASSERT_TRUE(fence.ok());
  EXPECT_GT(fence->create_revision, old_fence->create_revision);

  std::string fenced_why;
  std::unique_ptr<StateStore> stale =
      MakeEtcdStateStore(etcd_.get(), *old_fence, [&](const std::string& why) { fenced_why = why; });
  absl::Status refused = stale->Write({StateWrite::Put("j/x", "from the old leader")}, "save of job x");
  EXPECT_EQ(refused.code(), absl::StatusCode::kUnavailable) << refused;
  EXPECT_TRUE(absl::StrContains(refused.message(), "the save of job x was refused: the leader key /store-test/leader"))
      << refused;
  EXPECT_FALSE(fenced_why.empty());
  std::unique_ptr<StateStore> current = MakeEtcdStateStore(etcd_.get(), *fence, [](const std::string&) {});
  EXPECT_TRUE(current->Scan("j/")->empty());
}

TEST_F(EtcdStateStoreTest, WithoutQuorumWritesAreUnavailableAndSucceedOnceItReturns) {
  LeaderElection election(etcd_.get(), seconds(10), NoLog);
  absl::StatusOr<Fence> fence = election.Campaign("me:1", [](const std::string&) {});
  ASSERT_TRUE(fence.ok());
  std::string unknown;
  std::unique_ptr<StateStore> store =
      MakeEtcdStateStore(etcd_.get(), *fence, [&](const std::string& why) { unknown = why; });
  cluster_->Kill(1);
  ASSERT_TRUE(store->Write({StateWrite::Put("j/one-member-lost", "1")}, "test").ok());  // 2 of 3: a quorum
  EXPECT_TRUE(unknown.empty()) << unknown;
  cluster_->Kill(2);
  absl::Status lost = store->Write({StateWrite::Put("j/no-quorum", "1")}, "save of job j");
  EXPECT_EQ(lost.code(), absl::StatusCode::kUnavailable) << lost;
  // Its outcome is unknown, and the store says so: the coordinator must read the state again.
  EXPECT_TRUE(absl::StrContains(unknown, "the outcome of the save of job j is unknown")) << unknown;
  ASSERT_TRUE(cluster_->Restart(1).ok());
  ASSERT_TRUE(cluster_->Restart(2).ok());
  ASSERT_TRUE(cluster_->Answers(seconds(30)).ok());
  EXPECT_TRUE(store->Write({StateWrite::Put("j/back", "1")}, "test").ok());
  absl::StatusOr<std::vector<StateEntry>> all = store->Scan("j/");
  ASSERT_TRUE(all.ok());
  std::vector<std::string> keys;
  for (const StateEntry& e : *all) keys.push_back(e.key);
  // The write made without quorum either failed or (etcd decided before the answer was lost) applied; the
  // two made with quorum are there.
  EXPECT_TRUE(absl::c_linear_search(keys, "j/one-member-lost"));
  EXPECT_TRUE(absl::c_linear_search(keys, "j/back"));
}

TEST(EtcdTlsTest, TheStoreSpeaksMutualTlsToEtcd) {
  if (!testing::HaveEtcd()) GTEST_SKIP() << "etcd-server is not installed (deploy/install-deps.sh installs it)";
  const std::string dir = testing::MakeTempDir("etcd-tls");
  auto made = testing::Run({"/bin/bash", TPCOORD_SOURCE_DIR "/deploy/make-secrets.sh", dir + "/pki", "localhost",
                            "127.0.0.1"},
                           seconds(60));
  ASSERT_TRUE(made.ok() && made->exit_code == 0) << (made.ok() ? made->err : made.status().ToString());
  auto cluster = EtcdCluster::Start(dir + "/etcd", 3, dir + "/pki");
  ASSERT_TRUE(cluster.ok()) << cluster.status();
  EtcdTarget target = *ParseEtcdTarget((*cluster)->url("/tls-test"));

  EtcdConnection secure(target, (*cluster)->credentials(), seconds(3));
  LeaderElection election(&secure, seconds(2), NoLog);
  absl::StatusOr<Fence> fence = election.Campaign("me:1", [](const std::string&) {});
  ASSERT_TRUE(fence.ok()) << fence.status();
  std::unique_ptr<StateStore> store = MakeEtcdStateStore(&secure, *fence, [](const std::string&) {});
  ASSERT_TRUE(store->Write({StateWrite::Put("j/x", "1")}, "test").ok());
  EXPECT_EQ(store->Scan("j/")->size(), 1u);

  // Without a client certificate, or in plaintext, etcd does not answer.
  EtcdCredentials no_certificate = (*cluster)->credentials();
  no_certificate.cert.clear();
  no_certificate.key.clear();
  for (const EtcdCredentials& credentials : {no_certificate, EtcdCredentials{}}) {
    EtcdConnection refused(target, credentials, seconds(2));
    etcdserverpb::RangeRequest req;
    req.set_key("/tls-test/leader");
    etcdserverpb::RangeResponse resp;
    EXPECT_EQ(refused.Range(req, &resp).code(), absl::StatusCode::kUnavailable);
  }
}

// --- coordinators on etcd, with real training jobs -------------------------------------------------

constexpr char kConfig[] = R"({
  "train_batch_size": 4,
  "train_micro_batch_size_per_gpu": 4,
  "steps_per_print": 5,
  "optimizer": {"type": "AdamW", "params": {"lr": 0.003, "weight_decay": 0.01}},
  "tpcoord": {"steps": 60, "seq_len": 32, "seed": 7}
})";

class HaTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!testing::HaveEtcd()) GTEST_SKIP() << "etcd-server is not installed (deploy/install-deps.sh installs it)";
    dir_ = testing::MakeTempDir("ha");
    std::ofstream(dir_ + "/config.json") << kConfig;
    auto cluster = EtcdCluster::Start(dir_ + "/etcd");
    ASSERT_TRUE(cluster.ok()) << cluster.status();
    cluster_ = *std::move(cluster);
    for (int i = 0; i < 2; ++i) {
      coordinators_.push_back(StartCoordinator(i));
      ASSERT_NE(coordinators_.back(), nullptr);
    }
    leader_ = WaitForLeader();
    ASSERT_GE(leader_, 0) << "no coordinator took the lead";
  }

  // With the default --leader-lease (3 s): it leaves room for etcd's own election when the member that led
  // etcd dies (about a second here) before a leader that cannot renew meanwhile steps down.
  std::unique_ptr<CoordinatorProcess> StartCoordinator(int i) {
    auto c = CoordinatorProcess::Start(absl::StrCat(dir_, "/unused-state-", i),
                                       {"--state-store", cluster_->url()});
    EXPECT_TRUE(c.ok()) << c.status();
    return c.ok() ? *std::move(c) : nullptr;
  }

  // The coordinator that serves (-1 if none within 20 s).
  int WaitForLeader(int not_this = -1) {
    const auto give_up = std::chrono::steady_clock::now() + seconds(20);
    while (std::chrono::steady_clock::now() < give_up) {
      for (int i = 0; i < static_cast<int>(coordinators_.size()); ++i) {
        if (i != not_this && coordinators_[i] &&
            absl::StrContains(coordinators_[i]->process().Stderr(), "tp-coordinator serving on")) {
          return i;
        }
      }
      std::this_thread::sleep_for(milliseconds(50));
    }
    return -1;
  }

  std::string Addresses() const {
    return absl::StrCat(coordinators_[0]->address(), ",", coordinators_[1]->address());
  }

  std::unique_ptr<Subprocess> Worker(const std::string& job, int rank,
                                     std::map<std::string, std::string> env = testing::TokenEnv()) {
    auto worker = Subprocess::Start(
        {testing::BinPath("worker/tp-worker"), "--coordinator", Addresses(), "--job", job, "--world-size", "2",
         "--rank", std::to_string(rank), "--tp-size", "2", "--host", "127.0.0.1", "--config", dir_ + "/config.json",
         "--random-init", "tiny", "--data", absl::StrCat(TPCOORD_SOURCE_DIR, "/deploy/data/public_domain.txt"),
         "--output-dir", dir_ + "/" + job, "--timeout", "60s"},
        env);
    EXPECT_TRUE(worker.ok()) << worker.status();
    return worker.ok() ? *std::move(worker) : nullptr;
  }

  // Both workers exit 0; rank 0's last step line.
  std::string ExpectCompleted(std::vector<std::unique_ptr<Subprocess>>& workers) {
    for (auto& w : workers) {
      EXPECT_EQ(w->Wait(std::chrono::minutes(3)).value_or(-1), 0) << w->Stdout() << w->Stderr();
    }
    for (absl::string_view line : absl::StrSplit(workers[0]->Stdout(), '\n')) {
      if (absl::StartsWith(line, "step 60/60 loss ")) return std::string(line.substr(0, line.find(" lr ")));
    }
    return "";
  }

  std::string dir_;
  std::unique_ptr<EtcdCluster> cluster_;
  std::vector<std::unique_ptr<CoordinatorProcess>> coordinators_;
  int leader_ = -1;
};

TEST_F(HaTest, KillingTheLeaderMidTrainingLosesNoJobAndRestartsNoWorker) {
  std::vector<std::unique_ptr<Subprocess>> baseline;
  for (int r = 0; r < 2; ++r) baseline.push_back(Worker("baseline", r));
  const std::string expected = ExpectCompleted(baseline);
  ASSERT_FALSE(expected.empty());

  std::vector<std::unique_ptr<Subprocess>> workers;
  for (int r = 0; r < 2; ++r) workers.push_back(Worker("failover", r));
  ASSERT_TRUE(workers[0]->WaitForLine("step 20/60 ", seconds(120)).ok()) << workers[0]->Stderr();
  coordinators_[leader_]->process().Signal(SIGKILL);
  const int next = WaitForLeader(leader_);
  ASSERT_GE(next, 0) << "the standby did not take over";
  EXPECT_EQ(ExpectCompleted(workers), expected);
  // The job is there, finished, on the new leader.
  auto tpctl = testing::Run({testing::BinPath("coordinator/tpctl"), "--coordinator", Addresses(), "job", "failover"},
                            seconds(30), testing::TokenEnv());
  ASSERT_TRUE(tpctl.ok());
  EXPECT_EQ(tpctl->exit_code, 0) << tpctl->err;
  EXPECT_TRUE(absl::StrContains(tpctl->out, "generation 1: completed")) << tpctl->out;
}

// Under tp-agents (one per "host", one worker each): the agents follow the leader for their workers, whose
// sessions and calls reach the new one through them; no worker restarts.
TEST_F(HaTest, KillingTheLeaderUnderAgentsRestartsNoWorker) {
  std::map<std::string, std::string> env = testing::TokenEnv();
  env["TPCOORD_GLOO_INTERFACE"] = "127.0.0.1";
  std::vector<std::unique_ptr<Subprocess>> agents;
  for (const std::string host : {"host-a", "host-b"}) {
    auto agent = Subprocess::Start(
        {testing::BinPath("agent/tp-agent"), "--coordinator", Addresses(), "--job", "agents", "--nnodes", "2",
         "--nproc-per-node", "1", "--host", host, "--", testing::BinPath("worker/tp-worker"), "--tp-size", "2",
         "--config", dir_ + "/config.json", "--random-init", "tiny", "--data",
         absl::StrCat(TPCOORD_SOURCE_DIR, "/deploy/data/public_domain.txt"), "--output-dir", dir_ + "/agents",
         "--timeout", "60s"},
        env);
    ASSERT_TRUE(agent.ok()) << agent.status();
    agents.push_back(*std::move(agent));
  }
  const auto give_up = std::chrono::steady_clock::now() + seconds(120);
  while (!absl::StrContains(agents[0]->Stdout() + agents[1]->Stdout(), "step 20/60 ") &&
         std::chrono::steady_clock::now() < give_up) {
    std::this_thread::sleep_for(milliseconds(50));
  }
  coordinators_[leader_]->process().Signal(SIGKILL);
  ASSERT_GE(WaitForLeader(leader_), 0) << "the standby did not take over";
  for (auto& a : agents) {
    EXPECT_EQ(a->Wait(std::chrono::minutes(3)).value_or(-1), 0) << a->Stdout() << a->Stderr();
    EXPECT_FALSE(absl::StrContains(a->Stderr(), "restarting")) << a->Stderr();
  }
  EXPECT_TRUE(absl::StrContains(agents[0]->Stdout() + agents[1]->Stdout(), "step 60/60 loss "));
  EXPECT_FALSE(absl::StrContains(agents[0]->Stdout() + agents[1]->Stdout(), "generation 2"));
}

TEST_F(HaTest, KillingTheLeaderDuringJoinLosesNoWorker) {
  std::vector<std::unique_ptr<Subprocess>> workers;
  workers.push_back(Worker("join", 0));
  std::this_thread::sleep_for(seconds(3));  // rank 0 has loaded and is parked in Join, waiting for rank 1
  coordinators_[leader_]->process().Signal(SIGKILL);
  workers.push_back(Worker("join", 1));
  ASSERT_GE(WaitForLeader(leader_), 0);
  EXPECT_FALSE(ExpectCompleted(workers).empty());
}

TEST_F(HaTest, KillingTheLeaderDuringGlooSetUpLosesNoWorker) {
  std::vector<std::unique_ptr<Subprocess>> workers;
  workers.push_back(Worker("gloo", 0));
  std::map<std::string, std::string> env = testing::TokenEnv();
  env["TPCOORD_TEST_STOP_AT"] = "comm_init";  // rank 1's trainer holds still before its Gloo set-up
  workers.push_back(Worker("gloo", 1, env));
  for (int i = 0; i < 6000 && !workers[1]->GroupStopped(); ++i) std::this_thread::sleep_for(milliseconds(10));
  ASSERT_TRUE(workers[1]->GroupStopped());
  // Rank 0 waits in the coordinator's store for rank 1's Gloo address.
  ClientOptions options;
  options.address = Addresses();
  options.credentials.token = testing::kTestToken;
  CoordinatorClient client(options);
  bool waiting = false;
  for (int i = 0; i < 600 && !waiting; ++i) {
    absl::StatusOr<v1::JobStatus> job = client.GetJob("gloo");
    for (const std::string& m : job.ok() ? job->missing() : google::protobuf::RepeatedPtrField<std::string>()) {
      waiting = waiting || absl::StartsWith(m, "store keys");
    }
    std::this_thread::sleep_for(milliseconds(50));
  }
  ASSERT_TRUE(waiting) << "rank 0 never waited in the store";
  coordinators_[leader_]->process().Signal(SIGKILL);
  ASSERT_GE(WaitForLeader(leader_), 0);
  workers[1]->SignalGroup(SIGCONT);
  EXPECT_FALSE(ExpectCompleted(workers).empty());
}

TEST_F(HaTest, AFrozenLeaderIsReplacedAndStepsDownWhenItWakes) {
  std::vector<std::unique_ptr<Subprocess>> workers;
  for (int r = 0; r < 2; ++r) workers.push_back(Worker("frozen", r));
  ASSERT_TRUE(workers[0]->WaitForLine("step 10/60 ", seconds(120)).ok()) << workers[0]->Stderr();
  Subprocess& old = coordinators_[leader_]->process();
  old.Signal(SIGSTOP);
  const int next = WaitForLeader(leader_);
  ASSERT_GE(next, 0) << "the standby did not take over from a frozen leader";
  old.Signal(SIGCONT);
  // It finds its lease gone (or its first write fenced), stops serving, and starts over as a standby.
  EXPECT_TRUE(WaitForLog(old, "stepping down: ", seconds(15))) << old.Stderr();
  EXPECT_TRUE(WaitForLog(old, "tp-coordinator standby on ", seconds(15), 2)) << old.Stderr();
  EXPECT_FALSE(ExpectCompleted(workers).empty());
}

TEST_F(HaTest, LosingOneEtcdMemberChangesNothing) {
  std::vector<std::unique_ptr<Subprocess>> workers;
  for (int r = 0; r < 2; ++r) workers.push_back(Worker("member-lost", r));
  ASSERT_TRUE(workers[0]->WaitForLine("step 10/60 ", seconds(120)).ok()) << workers[0]->Stderr();
  cluster_->Kill(0);
  EXPECT_FALSE(ExpectCompleted(workers).empty());
  EXPECT_FALSE(absl::StrContains(coordinators_[leader_]->process().Stderr(), "stepping down"))
      << coordinators_[leader_]->process().Stderr();
}

TEST_F(HaTest, WithoutQuorumCoordinatorsAnswerUnavailableAndServeAgainWhenItReturns) {
  cluster_->Kill(1);
  cluster_->Kill(2);
  const std::vector<std::string> record = {testing::BinPath("coordinator/tpctl"), "--coordinator", Addresses(),
                                           "record", "--job", "quorum", "--tp-size", "2", "--dtype", "bf16",
                                           "--timeout", "10s"};
  auto refused = testing::Run(record, seconds(60), testing::TokenEnv());
  ASSERT_TRUE(refused.ok());
  EXPECT_EQ(refused->exit_code, 1);
  // UNAVAILABLE (tpctl adds its hint then): the leader's write fails naming etcd, or the leader has
  // already stepped down for want of its lease and no coordinator leads.
  EXPECT_TRUE(absl::StrContains(refused->err, "(is a tp-coordinator serving on")) << refused->err;
  ASSERT_TRUE(cluster_->Restart(1).ok());
  ASSERT_TRUE(cluster_->Restart(2).ok());
  ASSERT_TRUE(cluster_->Answers(seconds(30)).ok());
  // Some coordinator leads again (the old leader may have stepped down meanwhile), and the record lands.
  absl::StatusOr<testing::RunResult> recorded;
  const auto give_up = std::chrono::steady_clock::now() + seconds(30);
  do {
    recorded = testing::Run(record, seconds(60), testing::TokenEnv());
  } while (recorded.ok() && recorded->exit_code != 0 && std::chrono::steady_clock::now() < give_up);
  ASSERT_TRUE(recorded.ok());
  EXPECT_EQ(recorded->exit_code, 0) << recorded->err;
  // "recorded" or "matches the record": a refused attempt's proposal may have been applied once the quorum
  // returned (its outcome was unknown; the leader stepped down and the state was read again).
  EXPECT_TRUE(absl::StrContains(recorded->out, "tp_size=2 dtype=torch.bfloat16 tp_group=None")) << recorded->out;
}

// --forget-job on an etcd store is offline too: refused while any coordinator leads, it removes exactly the
// job once every coordinator is stopped.
TEST_F(HaTest, ForgetJobRemovesAJobOnlyWhileNoCoordinatorLeads) {
  for (const char* job : {"forget-me", "keep-me"}) {
    auto recorded = testing::Run({testing::BinPath("coordinator/tpctl"), "--coordinator", Addresses(), "record",
                                  "--job", job, "--tp-size", "2", "--dtype", "bf16"},
                                 seconds(60), testing::TokenEnv());
    ASSERT_TRUE(recorded.ok());
    ASSERT_EQ(recorded->exit_code, 0) << recorded->err;
  }
  const std::vector<std::string> forget = {testing::BinPath("coordinator/tp-coordinator"), "--state-store",
                                           cluster_->url(), "--forget-job", "forget-me"};
  auto refused = testing::Run(forget, seconds(60));
  ASSERT_TRUE(refused.ok());
  EXPECT_EQ(refused->exit_code, 1);
  EXPECT_TRUE(absl::StrContains(refused->err, "--forget-job: a coordinator leads on state store etcd at "))
      << refused->err;
  EXPECT_TRUE(absl::StrContains(refused->err, "; stop every coordinator of this cluster first, or delete the job "
                                              "with the admin token (tpctl delete forget-me --force)"))
      << refused->err;
  // The standby first: stopped after the leader, it could take the lead on its way out and leave the
  // leader key to expire with its lease.
  for (int i : {1 - leader_, leader_}) {
    coordinators_[i]->process().Signal(SIGTERM);
    EXPECT_EQ(coordinators_[i]->process().Wait(seconds(20)).value_or(-1), 0);
  }
  auto forgot = testing::Run(forget, seconds(60));
  ASSERT_TRUE(forgot.ok());
  EXPECT_EQ(forgot->exit_code, 0) << forgot->err;
  EXPECT_TRUE(
      absl::StartsWith(forgot->out, "forgot job forget-me: removed its 1 stored entries from state store etcd at "))
      << forgot->out;
  coordinators_[0] = StartCoordinator(0);
  ASSERT_NE(coordinators_[0], nullptr);
  ASSERT_EQ(WaitForLeader(1), 0);
  auto stub = coordinators_[0]->NewStub();
  v1::GetJobRequest get;
  v1::GetJobResponse got;
  get.set_job_id("forget-me");
  EXPECT_EQ(stub->GetJob(testing::Deadline().get(), get, &got).error_code(), grpc::StatusCode::NOT_FOUND);
  get.set_job_id("keep-me");
  EXPECT_TRUE(stub->GetJob(testing::Deadline().get(), get, &got).ok());
}

}  // namespace
}  // namespace tpcoord
