// tp-agent: one per host. It starts the host's workers, supervises them, and carries their traffic to the
// coordinator on one session (README "Launching with tp-agent").
//
//   tp-agent --coordinator HOST:PORT --job ID --nnodes N|MIN:MAX --nproc-per-node K [--max-restarts R]
//            [--host NAME] [--socket-dir DIR] [--token-file F] [--tls-ca F [--tls-cert F --tls-key F]]
//            -- COMMAND [ARGS...]
//
// Each of the K workers runs COMMAND with LOCAL_RANK, LOCAL_WORLD_SIZE, TPCOORD_JOB, TPCOORD_COORDINATOR
// (unix:PATH, the agent's local socket), TPCOORD_WORLD_SIZE (N*K, or MIN*K:MAX*K), TPCOORD_HOST and
// TPCOORD_WORKER_ID in its environment, and without the agent's token and TLS variables: tp-worker and the
// Python client read those, so a training script runs under the agent unchanged and carries no secret.
//
// The pieces: local_socket.h (who may connect), relay.h (the coordinator's service, relayed as the agent),
// upstream_session.h (the host's one session), local_workers.h (starting, restarting, stopping the workers).
#include <unistd.h>

#include <cstdlib>
#include <iostream>
#include <memory>
#include <string>
#include <vector>

#include <grpcpp/grpcpp.h>

#include "absl/flags/flag.h"
#include "absl/flags/usage.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/time/time.h"
#include "agent/local_socket.h"
#include "agent/local_workers.h"
#include "agent/relay.h"
#include "client/client_flags.h"
#include "client/targets.h"
#include "common/identifiers.h"
#include "common/limits.h"
#include "common/process_init.h"

ABSL_FLAG(std::string, coordinator, "", "the coordinator's address (several, comma-separated, for HA; env "
                                        "TPCOORD_COORDINATOR)");
ABSL_FLAG(std::string, job, "", "the job id (env TPCOORD_JOB)");
ABSL_FLAG(std::string, nnodes, "1", "how many hosts (agents) the job has: N, or MIN:MAX to run on fewer");
ABSL_FLAG(int, nproc_per_node, 1, "how many workers this agent starts (1..256)");
ABSL_FLAG(int, max_restarts, 0, "how many times each worker is restarted after it fails");
ABSL_FLAG(std::string, host, "",
          "this host's name, as the coordinator reports it (env TPCOORD_HOST; default: the machine's)");
ABSL_FLAG(std::string, socket_dir, "",
          "the directory of the local socket, made 0700 (default: a new one under $TMPDIR, removed at exit)");
ABSL_FLAG(absl::Duration, stop_grace, absl::Seconds(30),
          "how long stopping workers have after SIGTERM before SIGKILL");

namespace tpcoord {
namespace {

void Log(const std::string& message) { std::cerr << "tp-agent: " << message << std::endl; }

int Usage(const std::string& message) {
  Log(absl::StrCat(message, "\n", absl::ProgramUsageMessage()));
  return 2;
}

// The environment the agent's own settings come from, and that its workers must not inherit (the token and
// TLS material stay in the agent; the rank and world are the agent's to give).
constexpr const char* kNotInherited[] = {
    "TPCOORD_TOKEN",    "TPCOORD_TOKEN_FILE", "TPCOORD_TLS_CA",     "TPCOORD_TLS_CERT",  "TPCOORD_TLS_KEY",
    "TPCOORD_COORDINATOR", "TPCOORD_JOB",     "TPCOORD_WORLD_SIZE", "TPCOORD_RANK",      "RANK",
    "WORLD_SIZE",       "LOCAL_RANK",         "LOCAL_WORLD_SIZE",   "TPCOORD_HOST",      "TPCOORD_WORKER_ID",
    "JOB_COMPLETION_INDEX"};

std::vector<std::string> InheritedEnvironment() {
  std::vector<std::string> env;
  for (char** e = environ; *e != nullptr; ++e) {
    const std::string entry(*e);
    const std::string name = entry.substr(0, entry.find('='));
    bool inherited = true;
    for (const char* skip : kNotInherited) inherited = inherited && name != skip;
    if (inherited) env.push_back(entry);
  }
  return env;
}

int Main(const std::vector<char*>& args) {
  std::string address = absl::GetFlag(FLAGS_coordinator);
  if (address.empty() && std::getenv("TPCOORD_COORDINATOR")) address = std::getenv("TPCOORD_COORDINATOR");
  std::string job = absl::GetFlag(FLAGS_job);
  if (job.empty() && std::getenv("TPCOORD_JOB")) job = std::getenv("TPCOORD_JOB");
  if (address.empty()) return Usage("--coordinator is required");
  if (absl::Status s = ValidateJobId(job); !s.ok()) return Usage(absl::StrCat("--job: ", s.message()));
  const int nproc = absl::GetFlag(FLAGS_nproc_per_node);
  if (nproc < 1 || nproc > static_cast<int>(kMaxSessionMembers)) {
    return Usage(absl::StrCat("--nproc-per-node is ", nproc, "; it must be 1..", kMaxSessionMembers));
  }
  const std::string nnodes = absl::GetFlag(FLAGS_nnodes);
  std::vector<std::string> range = absl::StrSplit(nnodes, ':');
  int min_nodes = 0, max_nodes = 0;
  if (range.size() > 2 || !absl::SimpleAtoi(range.front(), &min_nodes) ||
      !absl::SimpleAtoi(range.back(), &max_nodes) || min_nodes < 1 || min_nodes > max_nodes ||
      static_cast<int64_t>(max_nodes) * nproc > kMaxWorldSize) {
    return Usage(absl::StrCat("--nnodes is '", nnodes, "'; it must be N or MIN:MAX with 1 <= MIN <= MAX, and MAX "
                              "times --nproc-per-node at most ", kMaxWorldSize));
  }
  if (absl::GetFlag(FLAGS_max_restarts) < 0) return Usage("--max-restarts must be 0 or more");
  if (args.size() < 2) return Usage("give the workers' command after --");
  std::string host = absl::GetFlag(FLAGS_host);
  if (host.empty() && std::getenv("TPCOORD_HOST")) host = std::getenv("TPCOORD_HOST");
  if (host.empty()) {
    char name[256] = {};
    gethostname(name, sizeof(name) - 1);
    host = name;
  }
  if (absl::Status s = ValidateHost(host); !s.ok()) return Usage(absl::StrCat("--host: ", s.message()));
  absl::StatusOr<ClientCredentials> credentials = ClientCredentialsFromFlags();
  if (!credentials.ok()) return Usage(std::string(credentials.status().message()));

  absl::StatusOr<std::unique_ptr<LocalSocket>> socket = LocalSocket::Listen(absl::GetFlag(FLAGS_socket_dir));
  if (!socket.ok()) {
    Log(std::string(socket.status().message()));
    return 1;
  }
  ClientOptions options;
  options.address = address;
  options.credentials = *credentials;
  options.log_waiting = Log;  // "tp-agent: still waiting for the coordinator at ..."
  Targets targets(options);
  Relay relay(&targets, host, nproc);
  grpc::ServerBuilder builder;
  builder.SetMaxReceiveMessageSize(kMaxRequestBytes);
  builder.RegisterCallbackGenericService(&relay);
  std::unique_ptr<grpc::Server> server = builder.BuildAndStart();
  if (!server) {
    Log("cannot start the local gRPC server");
    return 1;
  }
  (*socket)->Serve(server.get(), Log);
  Log(absl::StrCat("serving ", nproc, " workers of job ", job, " on unix:", (*socket)->path(), " for coordinator ",
                   address, " as host ", host));

  LocalWorkersOptions workers;
  workers.command.assign(args.begin() + 1, args.end());
  workers.env = InheritedEnvironment();
  const std::string world = min_nodes == max_nodes
                                ? absl::StrCat(max_nodes * nproc)
                                : absl::StrCat(min_nodes * nproc, ":", max_nodes * nproc);
  for (std::string e : {absl::StrCat("LOCAL_WORLD_SIZE=", nproc), absl::StrCat("TPCOORD_JOB=", job),
                        absl::StrCat("TPCOORD_COORDINATOR=unix:", (*socket)->path()),
                        absl::StrCat("TPCOORD_WORLD_SIZE=", world), absl::StrCat("TPCOORD_HOST=", host)}) {
    workers.env.push_back(std::move(e));
  }
  workers.worker_id_prefix = absl::StrCat(host, ":agent", getpid(), ":");
  workers.nproc = nproc;
  workers.max_restarts = absl::GetFlag(FLAGS_max_restarts);
  workers.stop_grace = absl::ToChronoMilliseconds(absl::GetFlag(FLAGS_stop_grace));
  workers.log = Log;
  const int status = SuperviseLocalWorkers(workers);

  socket->reset();  // no new connection once the server shuts down
  server->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(5));
  const Relay::Counts relayed = relay.counts();
  if (relayed.store_gets + relayed.barrier_arrivals > 0) {
    Log(absl::StrCat("store gets: ", relayed.store_gets, " from the workers, ", relayed.store_gets_shared,
                     " answered by another's in flight; barrier arrivals: ", relayed.barrier_arrivals, " sent up in ",
                     relayed.barrier_messages, " message(s); heartbeats: ", relayed.heartbeats, " from the workers, sent up in ",
                     relayed.heartbeat_messages, " message(s)"));
  }
  const HostUniqueIds::Counts ids = relay.unique_ids().counts();
  if (ids.brokered_groups + ids.spanning_groups > 0) {
    Log(absl::StrCat("unique IDs of the last generation: ", ids.brokered_groups, " group(s) brokered on this host, ",
                     ids.spanning_groups, " spanning hosts (", ids.fetches, " fetched from the coordinator, ",
                     ids.fetches_saved, " fetch(es) shared); ", ids.answered_here,
                     " exchange call(s) answered without the coordinator"));
  }
  Log(absl::StrCat("the workers have ended; exiting with status ", status));
  return status;
}

}  // namespace
}  // namespace tpcoord

int main(int argc, char** argv) {
  tpcoord::BlockSupervisorSignals();  // before any thread: only the supervisor takes them
  absl::SetProgramUsageMessage(
      "tp-agent --coordinator HOST:PORT --job ID --nnodes N|MIN:MAX --nproc-per-node K [--max-restarts R] "
      "[--host NAME] [--socket-dir DIR] [--token-file F] [--tls-ca F [--tls-cert F --tls-key F]] -- COMMAND "
      "[ARGS...]");
  std::vector<char*> args = tpcoord::InitProcess(argc, argv);
  return tpcoord::Main(args);
}
