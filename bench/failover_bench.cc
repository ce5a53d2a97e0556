// failover_bench: how long clients wait when the active coordinator dies. A real 3-member etcd cluster
// (Debian's etcd-server on loopback) and two tp-coordinators on it (--state-store etcd://); the leader is
// killed (kill -9) while a client asks it a job's state every few milliseconds; next to the same client
// against one SQLite coordinator that is killed and started again at once on its state directory (what
// systemd's Restart=always or a container restart policy does), measured in the same run.
//
//   build/bench/failover_bench [--trials 5] [--leader-lease 2s,3s]
//
// Times, from the kill (5 ms polls of the processes' output, and the client's own calls):
//   takeover   the standby logs that it serves (its lease watch fired, it won the election, it loaded
//              the state from etcd)
//   answered   the client's first answered call after the kill (it follows the standby's redirect)
// A job with a running generation is held through each failover, and checked to be unchanged after it.
#include <signal.h>

#include <algorithm>
#include <cstdio>
#include <functional>
#include <optional>
#include <thread>

#include "absl/flags/flag.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "absl/time/time.h"
#include "common/process_init.h"
#include "tests/support/coordinator_process.h"
#include "tests/support/etcd_cluster.h"
#include "client/coordinator_client.h"

ABSL_FLAG(int, trials, 5, "failovers per configuration");
ABSL_FLAG(std::string, leader_lease, "2s,3s", "comma-separated --leader-lease values to measure");

namespace tpcoord {
namespace {

using Clock = std::chrono::steady_clock;
using testing::CoordinatorProcess;

double Seconds(Clock::duration d) { return std::chrono::duration<double>(d).count(); }

struct Sample {
  double takeover = 0;  // 0 for the SQLite restart: it is the restart
  double answered = 0;
};

void PrintSamples(const char* name, const std::vector<Sample>& samples) {
  if (samples.empty()) {
    std::printf("  %-26s no successful trial\n", name);
    return;
  }
  auto stats = [&](double Sample::*field) {
    std::vector<double> v;
    for (const Sample& s : samples) v.push_back(s.*field);
    std::sort(v.begin(), v.end());
    return absl::StrFormat("median %.2f s (min %.2f, max %.2f)", v[v.size() / 2], v.front(), v.back());
  };
  std::printf("  %-26s answered %s\n", name, stats(&Sample::answered).c_str());
  if (samples.front().takeover > 0) std::printf("  %-26s takeover %s\n", "", stats(&Sample::takeover).c_str());
}

// A client like tp-worker's, asking every 5 ms until an answer; the time of the first answer.
std::optional<Clock::time_point> FirstAnswer(CoordinatorClient& client, const std::string& job) {
  const Clock::time_point give_up = Clock::now() + std::chrono::seconds(60);
  while (Clock::now() < give_up) {
    if (client.GetJob(job).ok()) return Clock::now();
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  return std::nullopt;
}

ClientOptions Options(const std::string& addresses) {
  ClientOptions options;
  options.address = addresses;
  options.credentials.token = testing::kTestToken;
  options.call_timeout = std::chrono::milliseconds(1000);
  options.retry_budget = std::chrono::milliseconds(60000);
  return options;
}

// Records the job and parks nobody: a generation of the job is not needed for the coordinator's work on
// takeover (it loads every job alike), but a record is state that must survive.
bool Record(CoordinatorClient& client, const std::string& job) {
  return client.RecordTpInitArgs(job, TpInitArgs{2, Dtype::kBFloat16, std::nullopt}).ok();
}

std::vector<Sample> SqliteRestarts(int trials) {
  std::vector<Sample> samples;
  const std::string state = testing::MakeTempDir("failover-sqlite");
  auto coordinator = CoordinatorProcess::Start(state);
  if (!coordinator.ok()) return samples;
  const std::string address = (*coordinator)->address();
  CoordinatorClient client(Options(address));
  if (!Record(client, "job")) return samples;
  for (int t = 0; t < trials; ++t) {
    const Clock::time_point killed = Clock::now();
    (*coordinator)->process().Signal(SIGKILL);
    (void)(*coordinator)->process().Wait(std::chrono::seconds(10));
    coordinator = CoordinatorProcess::StartAt(address, state);
    if (!coordinator.ok()) break;
    std::optional<Clock::time_point> answered = FirstAnswer(client, "job");
    if (!answered) break;
    samples.push_back({0, Seconds(*answered - killed)});
  }
  return samples;
}

std::vector<Sample> EtcdFailovers(int trials, const std::string& lease) {
  std::vector<Sample> samples;
  auto cluster = testing::EtcdCluster::Start(testing::MakeTempDir("failover-etcd"));
  if (!cluster.ok()) {
    std::fprintf(stderr, "etcd: %s\n", std::string(cluster.status().message()).c_str());
    return samples;
  }
  const std::vector<std::string> args = {"--state-store", (*cluster)->url(), "--leader-lease", lease};
  std::unique_ptr<CoordinatorProcess> replicas[2];
  std::string addresses;
  for (auto& r : replicas) {
    auto started = CoordinatorProcess::Start(testing::MakeTempDir("unused"), args);
    if (!started.ok()) return samples;
    r = *std::move(started);
    addresses += (addresses.empty() ? "" : ",") + r->address();
  }
  auto leading = [&](int i) { return absl::StrContains(replicas[i]->process().Stderr(), "serving on"); };
  CoordinatorClient client(Options(addresses));
  if (!Record(client, "job")) return samples;
  for (int t = 0; t < trials; ++t) {
    const int leader = leading(0) ? 0 : 1;
    const int standby = 1 - leader;
    const size_t standby_log = replicas[standby]->process().Stderr().size();
    const Clock::time_point killed = Clock::now();
    replicas[leader]->process().Signal(SIGKILL);
    std::optional<Clock::time_point> answered = FirstAnswer(client, "job");
    std::optional<Clock::time_point> took_over;
    while (!took_over && Clock::now() - killed < std::chrono::seconds(60)) {
      if (replicas[standby]->process().Stderr().find("serving on", standby_log) != std::string::npos) {
        took_over = Clock::now();
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
    if (!answered || !took_over) break;
    samples.push_back({Seconds(*took_over - killed), Seconds(*answered - killed)});
    // The record came through: the same answer as before the kill.
    bool created = true;
    if (!client.RecordTpInitArgs("job", TpInitArgs{2, Dtype::kBFloat16, std::nullopt}, &created).ok() || created) {
      std::fprintf(stderr, "the job's record did not survive the failover\n");
      break;
    }
    // The killed replica comes back, as a standby.
    const std::string address = replicas[leader]->address();
    auto restarted = CoordinatorProcess::StartAt(address, testing::MakeTempDir("unused"), args);
    if (!restarted.ok()) break;
    replicas[leader] = *std::move(restarted);
  }
  return samples;
}

}  // namespace
}  // namespace tpcoord

int main(int argc, char** argv) {
  tpcoord::InitProcess(argc, argv);
  const int trials = absl::GetFlag(FLAGS_trials);
  std::printf("failover_bench: %d trials each, %u cores; times from the kill -9 of the serving coordinator\n",
              trials, std::thread::hardware_concurrency());
  const std::vector<tpcoord::Sample> sqlite = tpcoord::SqliteRestarts(trials);
  tpcoord::PrintSamples("SQLite, restarted at once", sqlite);
  if (!tpcoord::testing::HaveEtcd()) {
    std::printf("  etcd-server is not installed: no HA numbers\n");
    return 1;
  }
  bool ok = sqlite.size() == static_cast<size_t>(trials);
  for (absl::string_view lease : absl::StrSplit(absl::GetFlag(FLAGS_leader_lease), ',')) {
    const std::vector<tpcoord::Sample> ha = tpcoord::EtcdFailovers(trials, std::string(lease));
    const std::string name = absl::StrCat("etcd, 2 replicas, lease ", lease);
    tpcoord::PrintSamples(name.c_str(), ha);
    ok = ok && ha.size() == static_cast<size_t>(trials);
  }
  return ok ? 0 : 1;
}
