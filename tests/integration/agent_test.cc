// tp-agent through real processes: a real coordinator, two agents ("hosts") of two tp-workers each (TP=2 x
// DP=2, Gloo on loopback), every worker's session carried on its agent's one upstream session.
//
// - Two agents train to the same final loss as four standalone workers.
// - A worker killed with SIGKILL is restarted by its agent with the same LOCAL_RANK; the job resumes from its
//   newest checkpoint and ends with the uninterrupted run's final loss.
// - An agent killed with SIGKILL: the other host's workers hear the generation end naming that host and its
//   ranks; a restarted agent rejoins and the job completes, again with the same final loss.
// - --nnodes 1:2: when one agent goes for good, the job goes on with the other host alone.
// - SIGTERM to an agent reaches its workers; the agent exits with their status.
// - Under TLS and a job token held by the agents alone, the coordinator is killed and restarted mid-job, and
//   every worker finishes.
// - A process of another uid is refused on the local socket, by the directory's mode and by SO_PEERCRED.
#include <gtest/gtest.h>

#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdio>
#include <fstream>
#include <map>
#include <set>
#include <sstream>
#include <thread>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "tests/support/coordinator_process.h"

namespace tpcoord {
namespace {

using testing::CoordinatorProcess;
using testing::Subprocess;

constexpr char kConfig[] = R"({
  "train_batch_size": 8,
  "train_micro_batch_size_per_gpu": 4,
  "steps_per_print": 1,
  "gradient_clipping": 1.0,
  "optimizer": {"type": "AdamW", "params": {"lr": 0.003, "weight_decay": 0.01}},
  "tensor_parallel": {"autotp_size": 2},
  "tpcoord": {"steps": %d, "seq_len": 32, "seed": 7, "checkpoint_interval": 5}
})";
constexpr int kSteps = 60;

// The last "step S/S loss X" line's X: the job's final loss, as printed.
std::string FinalLoss(const std::string& out) {
  std::string loss;
  const std::string prefix = absl::StrCat("step ", kSteps, "/", kSteps, " loss ");
  for (absl::string_view line : absl::StrSplit(out, '\n')) {
    if (absl::StartsWith(line, prefix)) {
      std::vector<std::string> f = absl::StrSplit(line, ' ');
      loss = f[3];
    }
  }
  return loss;
}

// The pid the agent logged for its worker `local_rank`'s latest start.
pid_t WorkerPid(const Subprocess& agent, int local_rank) {
  pid_t pid = 0;
  const std::string prefix = absl::StrCat("tp-agent: started worker ", local_rank, " (pid ");
  for (absl::string_view line : absl::StrSplit(agent.Stderr(), '\n')) {
    if (absl::StartsWith(line, prefix)) pid = std::stoi(std::string(line.substr(prefix.size())));
  }
  return pid;
}

class AgentTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = new std::string(testing::MakeTempDir("agent"));
    std::ofstream(*dir_ + "/config.json") << absl::StrFormat(kConfig, kSteps);
    auto coordinator = CoordinatorProcess::Start(*dir_ + "/state", {"--lease", "3s"});
    ASSERT_TRUE(coordinator.ok()) << coordinator.status();
    coordinator_ = coordinator->release();
  }

  // The uninterrupted run every other is compared with: four standalone workers (run once, by the first test
  // that asks; CTest runs each test in a process of its own).
  static const std::string& Reference() {
    if (reference_ != nullptr) return *reference_;
    std::vector<std::unique_ptr<Subprocess>> workers;
    for (int i = 0; i < 4; ++i) {
      workers.push_back(*Subprocess::Start(
          {testing::BinPath("worker/tp-worker"), "--coordinator", coordinator_->address(), "--job", "standalone",
           "--world-size", "4", "--host", "127.0.0.1", "--config", *dir_ + "/config.json", "--random-init", "tiny",
           "--data", absl::StrCat(TPCOORD_SOURCE_DIR, "/deploy/data/public_domain.txt")},
          testing::TokenEnv()));
    }
    std::string out;
    for (auto& w : workers) {
      EXPECT_EQ(w->Wait(std::chrono::minutes(3)).value_or(-1), 0) << w->Stderr();
      out += w->Stdout();
    }
    reference_ = new std::string(FinalLoss(out));
    EXPECT_FALSE(reference_->empty()) << out;
    return *reference_;
  }
  static void TearDownTestSuite() {
    delete coordinator_;
    coordinator_ = nullptr;
  }

  // tp-agent for `host` of job `job`, running tp-worker (with `worker_flags`) under it.
  std::unique_ptr<Subprocess> Agent(const std::string& job, const std::string& host,
                                    std::vector<std::string> agent_flags = {},
                                    std::vector<std::string> worker_flags = {},
                                    std::map<std::string, std::string> env = testing::TokenEnv(),
                                    const std::string& address = "") {
    std::vector<std::string> argv = {testing::BinPath("agent/tp-agent"), "--coordinator",
                                     address.empty() ? coordinator_->address() : address, "--job", job,
                                     "--nnodes", "2", "--nproc-per-node", "2", "--host", host};
    argv.insert(argv.end(), agent_flags.begin(), agent_flags.end());
    for (const std::string& arg : {std::string("--"), testing::BinPath("worker/tp-worker"), std::string("--config"),
                                   *dir_ + "/config.json", std::string("--random-init"), std::string("tiny"),
                                   std::string("--data"),
                                   absl::StrCat(TPCOORD_SOURCE_DIR, "/deploy/data/public_domain.txt"),
                                   std::string("--output-dir"), *dir_ + "/" + job}) {
      argv.push_back(arg);
    }
    argv.insert(argv.end(), worker_flags.begin(), worker_flags.end());
    env["TPCOORD_GLOO_INTERFACE"] = "127.0.0.1";
    auto agent = Subprocess::Start(argv, env);
    EXPECT_TRUE(agent.ok()) << agent.status();
    return agent.ok() ? *std::move(agent) : nullptr;
  }

  // Waits until one of `agents` prints that training reached `step`.
  static void AwaitStep(const std::vector<Subprocess*>& agents, int step) {
    const std::string line = absl::StrCat("step ", step, "/", kSteps, " ");
    for (int i = 0; i < 1200; ++i) {
      for (Subprocess* a : agents) {
        if (absl::StrContains(a->Stdout(), line)) return;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
    FAIL() << "no agent printed '" << line << "'";
  }

  static std::string* dir_;
  static CoordinatorProcess* coordinator_;
  static std::string* reference_;
};

std::string* AgentTest::dir_ = nullptr;
CoordinatorProcess* AgentTest::coordinator_ = nullptr;
std::string* AgentTest::reference_ = nullptr;

TEST_F(AgentTest, TwoAgentsTrainToTheLossOfFourStandaloneWorkers) {
  auto a = Agent("parity", "host-a");
  auto b = Agent("parity", "host-b");
  ASSERT_EQ(a->Wait(std::chrono::minutes(3)).value_or(-1), 0) << a->Stderr();
  ASSERT_EQ(b->Wait(std::chrono::minutes(3)).value_or(-1), 0) << b->Stderr();
  EXPECT_EQ(FinalLoss(a->Stdout() + b->Stdout()), Reference()) << a->Stdout() << b->Stdout();
  // Every worker got its place on the host from the agent, and its ranks came from the coordinator.
  EXPECT_TRUE(absl::StrContains(a->Stderr(), "tp-agent: serving 2 workers of job parity on unix:")) << a->Stderr();
  EXPECT_TRUE(absl::StrContains(a->Stdout() + b->Stdout(), "world 4 = tp 2 x dp 2")) << a->Stdout() << b->Stdout();
  // Each agent sent its two workers' heartbeats together: about one message per heartbeat interval.
  for (Subprocess* agent : {a.get(), b.get()}) {
    const std::string log = agent->Stderr();
    const std::string prefix = "; heartbeats: ";
    const size_t at = log.find(prefix);
    ASSERT_NE(at, std::string::npos) << log;
    int beats = 0, messages = 0;
    ASSERT_EQ(std::sscanf(log.c_str() + at + prefix.size(), "%d from the workers, sent up in %d message(s)", &beats,
                          &messages),
              2)
        << log;
    EXPECT_GE(beats, 4) << log;
    EXPECT_LT(messages, beats) << log;
  }
}

TEST_F(AgentTest, AKilledWorkerIsRestartedAndTheJobEndsWithTheUninterruptedLoss) {
  auto a = Agent("worker-killed", "host-a", {"--max-restarts", "3"});
  auto b = Agent("worker-killed", "host-b", {"--max-restarts", "3"});
  AwaitStep({a.get(), b.get()}, 12);
  const pid_t victim = WorkerPid(*b, 1);
  ASSERT_GT(victim, 0) << b->Stderr();
  ASSERT_EQ(kill(victim, SIGKILL), 0);
  ASSERT_EQ(a->Wait(std::chrono::minutes(3)).value_or(-1), 0) << a->Stderr();
  ASSERT_EQ(b->Wait(std::chrono::minutes(3)).value_or(-1), 0) << b->Stderr();
  EXPECT_TRUE(absl::StrContains(
      b->Stderr(), absl::StrCat("tp-agent: worker 1 (pid ", victim,
                                ") was killed by signal 9 (Killed); restarting it with LOCAL_RANK 1 (restart 1 of 3)")))
      << b->Stderr();
  // The others heard which rank went, on which host, and why.
  EXPECT_TRUE(absl::StrContains(a->Stderr(), "(host host-b, worker host-b:agent")) << a->Stderr();
  EXPECT_TRUE(absl::StrContains(a->Stderr(), ") is gone: its session with tp-agent on host host-b closed before it "
                                             "finished (the process died or hung up)"))
      << a->Stderr();
  const std::string out = a->Stdout() + b->Stdout();
  EXPECT_TRUE(absl::StrContains(out, "resumed from ")) << out;
  EXPECT_EQ(FinalLoss(out), Reference()) << out;
}

TEST_F(AgentTest, AKilledAgentIsNamedWithItsRanksAndARestartedOneRejoins) {
  auto a = Agent("agent-killed", "host-a", {"--max-restarts", "3"});
  auto b = Agent("agent-killed", "host-b", {"--max-restarts", "3"});
  AwaitStep({a.get(), b.get()}, 12);
  b->Signal(SIGKILL);  // its workers die with it (PR_SET_PDEATHSIG)
  ASSERT_EQ(b->Wait(std::chrono::seconds(30)).value_or(-1), 128 + SIGKILL);
  for (int i = 0; i < 600 && !absl::StrContains(a->Stderr(), "host host-b is gone with ranks "); ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  EXPECT_TRUE(absl::StrContains(a->Stderr(), "generation 1 ended: host host-b is gone with ranks ")) << a->Stderr();
  EXPECT_TRUE(absl::StrContains(a->Stderr(), ": its agent's session closed before they finished (the agent or its "
                                             "host died, or it lost its connection)"))
      << a->Stderr();
  auto b2 = Agent("agent-killed", "host-b", {"--max-restarts", "3"});
  ASSERT_EQ(a->Wait(std::chrono::minutes(3)).value_or(-1), 0) << a->Stderr();
  ASSERT_EQ(b2->Wait(std::chrono::minutes(3)).value_or(-1), 0) << b2->Stderr();
  EXPECT_EQ(FinalLoss(a->Stdout() + b->Stdout() + b2->Stdout()), Reference()) << a->Stdout() << b2->Stdout();
}

TEST_F(AgentTest, WithAnNnodesRangeTheJobShrinksByTheHostThatWent) {
  const std::vector<std::string> flags = {"--nnodes", "1:2", "--max-restarts", "3"};
  const std::vector<std::string> worker = {"--rejoin-timeout", "2s"};
  auto a = Agent("shrink", "host-a", flags, worker);
  auto b = Agent("shrink", "host-b", flags, worker);
  AwaitStep({a.get(), b.get()}, 12);
  b->Signal(SIGKILL);
  ASSERT_EQ(a->Wait(std::chrono::minutes(3)).value_or(-1), 0) << a->Stderr();
  EXPECT_TRUE(absl::StrContains(a->Stdout(), "world 2 = tp 2 x dp 1")) << a->Stdout();
  EXPECT_TRUE(absl::StrContains(a->Stdout(), "shrunk: 2 of 4 workers, 1 of 2 data-parallel replicas")) << a->Stdout();
}

TEST_F(AgentTest, SigtermReachesTheWorkersAndTheAgentExitsWithTheirStatus) {
  auto a = Agent("sigterm", "host-a");
  auto b = Agent("sigterm", "host-b");
  AwaitStep({a.get(), b.get()}, 5);
  a->Signal(SIGTERM);
  absl::StatusOr<int> status = a->Wait(std::chrono::minutes(1));
  ASSERT_TRUE(status.ok()) << a->Stderr();
  EXPECT_NE(*status, 0);
  EXPECT_TRUE(absl::StrContains(a->Stderr(), "tp-agent: got Terminated: passing SIGTERM to the workers; none is "
                                             "restarted"))
      << a->Stderr();
  EXPECT_TRUE(absl::StrContains(a->Stderr(), absl::StrCat("the workers have ended; exiting with status ", *status)))
      << a->Stderr();
  EXPECT_NE(b->Wait(std::chrono::minutes(1)).value_or(0), 0) << b->Stderr();  // its generation ended, unfinished
}

TEST_F(AgentTest, UnderTlsAndATokenTheAgentsRideOutACoordinatorRestart) {
  const std::string pki = *dir_ + "/pki";
  ASSERT_EQ(testing::Run({"/bin/bash", TPCOORD_SOURCE_DIR "/deploy/make-secrets.sh", pki, "localhost", "127.0.0.1"},
                         std::chrono::minutes(1))
                ->exit_code,
            0);
  const std::vector<std::string> tls = {"--tls-cert", pki + "/server/tls.crt", "--tls-key", pki + "/server/tls.key",
                                        "--tls-client-ca", pki + "/server/ca.crt"};
  auto coordinator = *CoordinatorProcess::Start(*dir_ + "/tls-state", tls);
  const std::map<std::string, std::string> env = {{"TPCOORD_TLS_CA", pki + "/client/ca.crt"},
                                                  {"TPCOORD_TLS_CERT", pki + "/client/tls.crt"},
                                                  {"TPCOORD_TLS_KEY", pki + "/client/tls.key"},
                                                  {"TPCOORD_TOKEN_FILE", pki + "/token"}};
  const std::string address = coordinator->address();
  auto a = Agent("tls", "host-a", {}, {}, env, address);
  auto b = Agent("tls", "host-b", {}, {}, env, address);
  AwaitStep({a.get(), b.get()}, 8);
  // The workers hold no secret: the agent does.
  for (int local = 0; local < 2; ++local) {
    std::ifstream in(absl::StrCat("/proc/", WorkerPid(*a, local), "/environ"), std::ios::binary);
    std::stringstream environ;
    environ << in.rdbuf();
    EXPECT_FALSE(absl::StrContains(environ.str(), "TPCOORD_TOKEN")) << environ.str();
    EXPECT_FALSE(absl::StrContains(environ.str(), "TPCOORD_TLS")) << environ.str();
    EXPECT_TRUE(absl::StrContains(environ.str(), absl::StrCat("LOCAL_RANK=", local, std::string(1, '\0')))) << environ.str();
  }
  coordinator->process().Signal(SIGKILL);
  ASSERT_EQ(coordinator->process().Wait(std::chrono::seconds(10)).value_or(-1), 128 + SIGKILL);
  coordinator = *CoordinatorProcess::StartAt(address, *dir_ + "/tls-state", tls);
  ASSERT_EQ(a->Wait(std::chrono::minutes(3)).value_or(-1), 0) << a->Stderr();
  ASSERT_EQ(b->Wait(std::chrono::minutes(3)).value_or(-1), 0) << b->Stderr();
  EXPECT_EQ(FinalLoss(a->Stdout() + b->Stdout()), Reference()) << a->Stdout() << b->Stdout();
}

// tp-worker's exchange (one session call each: publish the roots it is, get the rest) through two agents: a
// TP group on one host is brokered by its agent, the DP and world groups span hosts and are fetched once per
// host; every member of a group gets the same IDs. Then Gloo through the relayed store, and a barrier whose
// two arrivals per host go up as one message.
TEST_F(AgentTest, UniqueIdsOfAHostsOwnGroupsStayOnTheHost) {
  std::vector<std::unique_ptr<Subprocess>> agents;
  for (const std::string host : {"host-a", "host-b"}) {
    agents.push_back(*Subprocess::Start(
        {testing::BinPath("agent/tp-agent"), "--coordinator", coordinator_->address(), "--job", "ids", "--nnodes",
         "2", "--nproc-per-node", "2", "--host", host, "--", testing::BinPath("tests/integration/rendezvous_probe"),
         "--session", "--ids", "--gloo", "--tp-size", "2", "--barrier", "done", "--leave"},
        testing::TokenEnv()));
  }
  std::map<std::string, std::set<std::string>> ids_of_group;
  std::map<std::string, int> members_of_group;
  for (auto& a : agents) {
    ASSERT_EQ(a->Wait(std::chrono::minutes(2)).value_or(-1), 0) << a->Stdout() << a->Stderr();
    for (absl::string_view line : absl::StrSplit(a->Stdout(), '\n')) {
      std::vector<std::string> f = absl::StrSplit(line, ' ');
      if (f.size() == 3 && f[0] == "id") {
        ids_of_group[f[1]].insert(f[2]);
        ++members_of_group[f[1]];
      }
    }
    EXPECT_TRUE(absl::StrContains(a->Stderr(), "unique IDs of the last generation: 1 group(s) brokered on this host, 3 "
                                               "spanning hosts ("))
        << a->Stderr();
  }
  // Gloo set up through the relayed store (world: 1+2+3+4; TP: 1+2 or 3+4), and the host's two barrier
  // arrivals went up as one message.
  const std::string out = agents[0]->Stdout() + agents[1]->Stdout();
  EXPECT_TRUE(absl::StrContains(out, "allreduce world=10 tp=3\n")) << out;
  EXPECT_TRUE(absl::StrContains(out, "allreduce world=10 tp=7\n")) << out;
  for (auto& a : agents) {
    EXPECT_TRUE(absl::StrContains(a->Stderr(), " answered by another's in flight; barrier arrivals: 2 sent up in 1 "
                                               "message(s)"))
        << a->Stderr();
  }
  // The host of ranks 0 and 1 fetches the world's IDs (rank 0 makes the others); that of ranks 2 and 3 fetches
  // dp/0, dp/1 and the world's once for both.
  const std::string logs = agents[0]->Stderr() + agents[1]->Stderr();
  EXPECT_TRUE(absl::StrContains(logs, "(1 fetched from the coordinator, 0 fetch(es) shared)")) << logs;
  EXPECT_TRUE(absl::StrContains(logs, "(3 fetched from the coordinator, 1 fetch(es) shared)")) << logs;
  // tp/0, tp/1 (2 members each), dp/0, dp/1 (2 each), world (4): each group one set of IDs.
  EXPECT_EQ(members_of_group, (std::map<std::string, int>{{"tp/0", 2}, {"tp/1", 2}, {"dp/0", 2}, {"dp/1", 2},
                                                          {"world", 4}}));
  for (const auto& [group, ids] : ids_of_group) EXPECT_EQ(ids.size(), 1u) << group;
}

// An agent pointed where no coordinator listens says so while its workers wait, as tp-worker would alone.
TEST_F(AgentTest, AnAgentThatCannotReachTheCoordinatorSaysWhy) {
  auto a = *Subprocess::Start({testing::BinPath("agent/tp-agent"), "--coordinator", "127.0.0.1:1", "--job", "nowhere",
                               "--nnodes", "1", "--nproc-per-node", "1", "--",
                               testing::BinPath("tests/integration/rendezvous_probe"), "--join-wait", "8s"},
                              testing::TokenEnv());
  EXPECT_EQ(a->Wait(std::chrono::minutes(1)).value_or(-1), 1) << a->Stderr();
  EXPECT_TRUE(absl::StrContains(a->Stderr(), "tp-agent: still waiting for the coordinator at 127.0.0.1:1 after 5 s: "
                                             "nothing listens there (connection refused)"))
      << a->Stderr();
  EXPECT_TRUE(absl::StrContains(a->Stdout(), "error UNAVAILABLE: ")) << a->Stdout();
}

// A worker's session through the agent is its own: one naming a member slot, carrying a batch or a `gone` is
// refused with INVALID_ARGUMENT, and the agent (and its other workers) go on.
TEST_F(AgentTest, AWorkersSessionMayNotActAsTheAgent) {
  const std::string sockets = *dir_ + "/hostile";
  auto a = Agent("hostile", "host-a", {"--socket-dir", sockets}, {"--timeout", "60s"});
  for (int i = 0; i < 200 && !absl::StrContains(a->Stderr(), "serving"); ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  auto stub = v1::Coordinator::NewStub(grpc::CreateChannel("unix:" + sockets + "/agent.sock",
                                                           grpc::InsecureChannelCredentials()));
  auto refused = [&](v1::SessionRequest message) {
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(30));
    auto stream = stub->Session(&ctx);
    stream->Write(message);
    v1::SessionEvent event;
    while (stream->Read(&event)) {
    }
    return stream->Finish();
  };
  v1::SessionRequest slot;
  slot.set_member(3);
  v1::SessionRequest batch;
  batch.add_batch()->set_call_id(1);
  v1::SessionRequest gone;
  gone.set_gone("it died");
  for (const v1::SessionRequest& message : {slot, batch, gone}) {
    const grpc::Status status = refused(message);
    EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT) << message.ShortDebugString();
    EXPECT_EQ(status.error_message(),
              "a worker's session through tp-agent is its own: it names no member slot and carries no batch and no "
              "gone (the agent sets those upstream)");
  }
  EXPECT_TRUE(a->running());  // its two workers still wait in Join, for a world of 4
  a->Signal(SIGTERM);
  a->Wait(std::chrono::minutes(1)).IgnoreError();
}

TEST_F(AgentTest, AProcessOfAnotherUidIsRefusedOnTheLocalSocket) {
  if (geteuid() != 0) GTEST_SKIP() << "needs root to act as another uid";
  // Under /tmp, which any uid may traverse: only the agent's own directory stands in the way.
  const std::string sockets = absl::StrCat("/tmp/tpcoord-agent-test-", getpid());
  // A world of 4 with only this agent's 2: its workers wait in Join long enough to be looked at.
  auto a = Agent("uid", "host-a", {"--socket-dir", sockets}, {"--timeout", "60s"});
  const std::string socket = sockets + "/agent.sock";
  for (int i = 0; i < 200 && !absl::StrContains(a->Stderr(), "serving"); ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  struct stat st;
  ASSERT_EQ(stat(sockets.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0700u);
  ASSERT_EQ(stat(socket.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0600u);
  // A gRPC server greets a new connection with its HTTP/2 settings: a peer it was handed reads them.
  const std::string connect = absl::StrCat(
      "import errno, socket\ns = socket.socket(socket.AF_UNIX)\ntry:\n  s.connect('", socket,
      "')\nexcept OSError as e:\n  print('refused', e.errno)\n  raise SystemExit\ns.settimeout(10)\ntry:\n"
      "  n = len(s.recv(100))\n  print('closed' if n == 0 else 'read')\n"
      "except ConnectionResetError:\n  print('closed')\n");
  auto as_nobody = [&] {
    return testing::Run({"/usr/bin/setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "/usr/bin/python3",
                         "-c", connect},
                        std::chrono::seconds(30));
  };
  testing::RunResult denied = *as_nobody();
  EXPECT_EQ(denied.out, "refused 13\n") << denied.out << denied.err;  // EACCES: the directory is the agent's
  // Loosened modes still let no other uid in: the agent checks the peer of every connection.
  ASSERT_EQ(chmod(sockets.c_str(), 0755), 0);
  ASSERT_EQ(chmod(socket.c_str(), 0666), 0);
  testing::RunResult closed = *as_nobody();
  EXPECT_EQ(closed.out, "closed\n") << closed.out << closed.err;
  EXPECT_TRUE(absl::StrContains(a->Stderr(), absl::StrCat("tp-agent: refused a connection on ", socket, " from pid ")))
      << a->Stderr();
  EXPECT_TRUE(absl::StrContains(a->Stderr(), " of uid 65534: only uid 0, this agent's, may use it")) << a->Stderr();
  // This process, of the agent's uid, is greeted.
  testing::RunResult own = *testing::Run({"/usr/bin/python3", "-c", connect}, std::chrono::seconds(30));
  EXPECT_EQ(own.out, "read\n") << own.out << own.err;
  a->Signal(SIGTERM);
  a->Wait(std::chrono::minutes(1)).IgnoreError();
  rmdir(sockets.c_str());
}

}  // namespace
}  // namespace tpcoord
