// tp-coordinator: the gRPC service that every worker of every job talks to.
//
//   tp-coordinator --listen 127.0.0.1:50051 --state-dir /var/lib/tpcoord
//   tp-coordinator --listen 0.0.0.0:50051 --tls-cert server.crt --tls-key server.key [--tls-client-ca ca.crt]
//                  [--admin-token-file admin.token] [--job-creation admin] ...
//
// Security (README "Security"): every call carries a job token; TLS (mutual with --tls-client-ca) protects
// them on the network. A listen address other than loopback without TLS is refused unless --allow-insecure.
//
// High availability (README "High availability"): with --state-store etcd://HOST:PORT,.../PREFIX every
// coordinator started on the same cluster and prefix campaigns for the leader key; the leader serves, the
// others answer UNAVAILABLE naming it (standby_service.h) until it goes, then one of them takes over from
// the state in etcd. A leader that loses its lease or finds its writes fenced steps down: it executes itself
// afresh, as a standby.
//
// Prints "tp-coordinator listening on <address>" on stdout once it listens, a standby too (with --listen
// host:0 the address holds the port the kernel picked). SIGTERM/SIGINT: answer every parked and every new call with
// UNAVAILABLE (clients retry against the next coordinator on this state directory), let in-flight calls
// finish, write what is being written, exit 0.
#include <signal.h>

#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <condition_variable>
#include <cstring>
#include <functional>
#include <iostream>
#include <memory>
#include <mutex>
#include <string>
#include <thread>

#include <grpcpp/ext/proto_server_reflection_plugin.h>
#include <grpcpp/grpcpp.h>
#include <grpcpp/health_check_service_interface.h>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "common/host_name.h"
#include "common/identifiers.h"
#include "common/limits.h"
#include "common/log_line.h"
#include "common/process_init.h"
#include "common/secrets.h"
#include "coordinator/ha/etcd_connection.h"
#include "coordinator/ha/etcd_state_store.h"
#include "coordinator/ha/leader_election.h"
#include "coordinator/ha/standby_service.h"
#include "coordinator/job/job_registry.h"
#include "coordinator/job/metrics.h"
#include "coordinator/job/timer_queue.h"
#include "coordinator/ops/ops_endpoint.h"
#include "coordinator/rpc/coordinator_service.h"
#include "coordinator/rpc/rpc_metrics.h"
#include "coordinator/store/job_storage.h"
#include "coordinator/store/state_committer.h"
#include "coordinator/store/state_dir.h"
#include "coordinator/store/timed_state_store.h"

ABSL_FLAG(std::string, listen, "127.0.0.1:50051",
          "address to serve on; port 0 picks a free port. Other than loopback it needs TLS (or --allow-insecure)");
ABSL_FLAG(std::string, tls_cert, "", "serve TLS with this certificate chain (PEM)");
ABSL_FLAG(std::string, tls_key, "", "the private key of --tls-cert (PEM)");
ABSL_FLAG(std::string, tls_client_ca, "",
          "mutual TLS: require every client to present a certificate signed by this CA (PEM)");
ABSL_FLAG(bool, allow_insecure, false, "serve plaintext on an address other than loopback (tokens in the clear)");
ABSL_FLAG(std::string, admin_token_file, "",
          "file holding the admin token, which may list, read, create and delete every job");
ABSL_FLAG(std::string, job_creation, "open",
          "who creates jobs: open (the first call for a job binds it to its token) or admin (only the admin token, "
          "with tpctl create)");
ABSL_FLAG(bool, reflection, false, "serve gRPC server reflection (lists the API to anyone who can connect)");
ABSL_FLAG(std::string, state_dir, "/var/lib/tpcoord",
          "directory for the coordinator's SQLite database (created if missing), unless --state-store is etcd");
ABSL_FLAG(std::string, state_store, "",
          "etcd://HOST:PORT[,HOST:PORT...][/PREFIX]: keep state in an etcd cluster, with leader election among "
          "every coordinator on it (default: SQLite in --state-dir)");
ABSL_FLAG(std::string, advertise, "",
          "HA: the address clients are sent to while this coordinator leads (default: the --listen address, "
          "with this machine's host name for 0.0.0.0)");
ABSL_FLAG(absl::Duration, leader_lease, absl::Seconds(3),
          "HA: the leader's etcd lease (whole seconds, at least 2s); a standby takes over about this long after "
          "the leader dies");
ABSL_FLAG(std::string, etcd_tls_ca, "", "HA: verify etcd's certificates against this CA (PEM)");
ABSL_FLAG(std::string, etcd_tls_cert, "", "HA: this coordinator's client certificate for etcd (PEM)");
ABSL_FLAG(std::string, etcd_tls_key, "", "HA: the private key of --etcd-tls-cert (PEM)");
ABSL_FLAG(absl::Duration, lease, absl::Seconds(10),
          "heartbeat lease: a worker silent this long ends its job's generation");
ABSL_FLAG(absl::Duration, default_wait, absl::Seconds(60),
          "how long a parked call waits when it asks for wait_timeout_ms = 0");
ABSL_FLAG(absl::Duration, shutdown_grace, absl::Seconds(2),
          "on SIGTERM, how long in-flight calls (and idle client connections) get to finish");
ABSL_FLAG(int64_t, max_jobs, 10000, "most jobs the coordinator holds at once (RESOURCE_EXHAUSTED past it)");
ABSL_FLAG(absl::Duration, job_ttl, absl::Hours(24 * 7),
          "a job nothing has happened to for this long, with no generation running and nobody waiting, is "
          "forgotten");
ABSL_FLAG(int64_t, max_store_bytes, int64_t{1} << 30,
          "most bytes the key-value stores of all jobs hold together (RESOURCE_EXHAUSTED past it)");
ABSL_FLAG(std::string, metrics_listen, "",
          "HOST:PORT to serve Prometheus metrics (/metrics) and the status page (/) on, over HTTP (default: off). "
          "With --admin-token-file every request must carry the admin token; then an address other than loopback "
          "needs --allow-insecure, since the token would travel in the clear");
ABSL_FLAG(std::string, forget_job, "",
          "offline repair: remove job ID and everything stored of it from --state-dir (or --state-store), then exit; "
          "for a job whose stored state is corrupt. The coordinator must be stopped (for etcd: every coordinator)");
ABSL_FLAG(std::string, log_format, "text",
          "text, or json: one JSON object per line (time, level, job, generation, "
          "rank, event, message)");

namespace {

tpcoord::LogFormat log_format = tpcoord::LogFormat::kText;

void LogLine(const tpcoord::LogLine& line) {
  std::cerr << tpcoord::FormatLogLine(log_format, "tp-coordinator", line, absl::Now()) << std::endl;
}

void Log(const std::string& message) {
  tpcoord::LogLine line;
  line.message = message;
  if (absl::StartsWith(message, "warning: ")) line.level = "warning";
  LogLine(line);
}

[[noreturn]] void Die(const std::string& message) {
  tpcoord::LogLine line;
  line.message = absl::StrCat("fatal: ", message);
  line.level = "error";
  line.event = "fatal";
  LogLine(line);
  std::exit(1);
}

std::string ReadOrDie(const std::string& flag, const std::string& path) {
  absl::StatusOr<std::string> contents = tpcoord::ReadCredentialFile(path);
  if (!contents.ok()) Die(absl::StrCat("--", flag, ": ", contents.status().message()));
  return *std::move(contents);
}

// Whether `listen` (HOST:PORT, [V6]:PORT or unix:PATH) is reachable only from this machine.
bool IsLocalOnly(const std::string& listen) {
  if (listen.rfind("unix:", 0) == 0) return true;
  const std::string host = listen.substr(0, listen.rfind(':'));
  return host == "localhost" || host == "[::1]" || host.rfind("127.", 0) == 0;
}

// TLS when --tls-cert is given, mutual TLS with --tls-client-ca; plaintext otherwise, refused beyond loopback
// unless --allow-insecure.
std::shared_ptr<grpc::ServerCredentials> ServerCredentials(const std::string& listen) {
  const std::string cert = absl::GetFlag(FLAGS_tls_cert), key = absl::GetFlag(FLAGS_tls_key),
                    client_ca = absl::GetFlag(FLAGS_tls_client_ca);
  if (cert.empty() != key.empty()) Die("give both --tls-cert and --tls-key, or neither");
  if (cert.empty()) {
    if (!client_ca.empty()) Die("--tls-client-ca needs --tls-cert and --tls-key");
    if (!IsLocalOnly(listen)) {
      if (!absl::GetFlag(FLAGS_allow_insecure)) {
        Die(absl::StrCat("--listen ", listen,
                         " without TLS would send every job's tokens over the network in the "
                         "clear; give --tls-cert and --tls-key (README \"Security\"), or --allow-insecure"));
      }
      Log(absl::StrCat("warning: serving plaintext on ", listen,
                       " (--allow-insecure): anyone on the network can "
                       "read tokens and member keys in transit"));
    }
    return grpc::InsecureServerCredentials();
  }
  grpc::SslServerCredentialsOptions ssl(client_ca.empty() ? GRPC_SSL_DONT_REQUEST_CLIENT_CERTIFICATE
                                                          : GRPC_SSL_REQUEST_AND_REQUIRE_CLIENT_CERTIFICATE_AND_VERIFY);
  ssl.pem_key_cert_pairs.push_back({ReadOrDie("tls-key", key), ReadOrDie("tls-cert", cert)});
  if (!client_ca.empty()) ssl.pem_root_certs = ReadOrDie("tls-client-ca", client_ca);
  return grpc::SslServerCredentials(ssl);
}

// Linking grpc++_reflection registers its plugin with every ServerBuilder from a static initializer, so
// reflection would be on whatever the flag says; this option drops it from the builder unless asked for.
class ReflectionOption : public grpc::ServerBuilderOption {
 public:
  explicit ReflectionOption(bool enabled) : enabled_(enabled) {}
  void UpdateArguments(grpc::ChannelArguments*) override {}
  void UpdatePlugins(std::vector<std::unique_ptr<grpc::ServerBuilderPlugin>>* plugins) override {
    if (enabled_) return;
    plugins->erase(std::remove_if(plugins->begin(), plugins->end(),
                                  [](const std::unique_ptr<grpc::ServerBuilderPlugin>& plugin) {
                                    return plugin->name() == "proto_server_reflection";
                                  }),
                   plugins->end());
  }

 private:
  bool enabled_;
};

// --etcd-tls-ca/-cert/-key: TLS to etcd with a client certificate, or (none given) plaintext.
tpcoord::EtcdCredentials EtcdCredentialsFromFlags() {
  auto read = [](const char* flag, const std::string& path) { return path.empty() ? "" : ReadOrDie(flag, path); };
  tpcoord::EtcdCredentials credentials{read("etcd-tls-ca", absl::GetFlag(FLAGS_etcd_tls_ca)),
                                       read("etcd-tls-cert", absl::GetFlag(FLAGS_etcd_tls_cert)),
                                       read("etcd-tls-key", absl::GetFlag(FLAGS_etcd_tls_key))};
  if (credentials.cert.empty() != credentials.key.empty()) {
    Die("give both --etcd-tls-cert and --etcd-tls-key, or neither");
  }
  return credentials;
}

// How serving ends: a stop signal, or (HA) this coordinator no longer leading.
class StopLatch {
 public:
  void Signal(int signal_number) { Set(absl::StrCat("received ", strsignal(signal_number)), false); }
  void StepDown(const std::string& why) { Set(why, true); }
  // Blocks until one of the two; returns its reason and whether it is a step-down.
  std::pair<std::string, bool> Wait() {
    std::unique_lock<std::mutex> lock(mu_);
    set_cv_.wait(lock, [this] { return set_; });
    return {reason_, step_down_};
  }

 private:
  void Set(const std::string& reason, bool step_down) {
    std::lock_guard<std::mutex> lock(mu_);
    if (set_) return;
    set_ = true;
    reason_ = reason;
    step_down_ = step_down;
    set_cv_.notify_all();
  }
  std::mutex mu_;
  std::condition_variable set_cv_;
  bool set_ = false;
  std::string reason_;
  bool step_down_ = false;
};

// "HOST:PORT" of --listen with the port it got; the host name of this machine for a wildcard address.
std::string Advertised(const std::string& listen, int port) {
  std::string host = listen.substr(0, listen.rfind(':'));
  if (host == "0.0.0.0" || host == "[::]" || host.empty()) host = tpcoord::LocalHostName();
  return absl::StrCat(host, ":", port);
}

// Serves as a standby on `listen` (answering every call with where the leader is) until this process wins
// the election; returns the port it listened on, free again, and the fence of its leadership.
// `advertise`: the address clients are sent to while this process leads ("": from --listen).
std::pair<int, tpcoord::Fence> CampaignAsStandby(tpcoord::LeaderElection& election, const std::string& listen,
                                                 const std::shared_ptr<grpc::ServerCredentials>& credentials,
                                                 std::string advertise) {
  tpcoord::StandbyService standby;
  grpc::ServerBuilder builder;
  builder.SetOption(std::make_unique<ReflectionOption>(false));
  int port = 0;
  builder.AddListeningPort(listen, credentials, &port);
  builder.RegisterCallbackGenericService(&standby);
  std::unique_ptr<grpc::Server> server = builder.BuildAndStart();
  if (!server || port == 0) Die(absl::StrCat("cannot listen on ", listen));
  server->GetHealthCheckService()->SetServingStatus(false);
  const std::string host = listen.substr(0, listen.rfind(':'));
  std::cout << "tp-coordinator listening on " << host << ":" << port << std::endl;
  if (advertise.empty()) advertise = Advertised(listen, port);
  Log(absl::StrCat("standby on ", host, ":", port, ", campaigning for ", election.key(), " as ", advertise));
  absl::StatusOr<tpcoord::Fence> fence = election.Campaign(advertise, [&standby](const std::string& leader) {
    standby.SetLeader(leader);
    Log(leader.empty() ? "no coordinator leads" : absl::StrCat("the leader is at ", leader));
  });
  if (!fence.ok()) Die(absl::StrCat("campaign: ", fence.status().message()));
  server->Shutdown(std::chrono::system_clock::now());
  server->Wait();
  return {port, *fence};
}

// --forget-job ID: removes the job from the state store while no coordinator serves it, and exits.
int ForgetJob(const std::string& job) {
  if (absl::Status s = tpcoord::ValidateJobId(job); !s.ok()) Die(absl::StrCat("--forget-job: ", s.message()));
  std::unique_ptr<tpcoord::StateDir> state_dir;
  std::unique_ptr<tpcoord::EtcdConnection> etcd;
  std::unique_ptr<tpcoord::StateStore> etcd_store;
  tpcoord::StateStore* store = nullptr;
  std::string fenced;
  if (const std::string url = absl::GetFlag(FLAGS_state_store); !url.empty()) {
    absl::StatusOr<tpcoord::EtcdTarget> target = tpcoord::ParseEtcdTarget(url);
    if (!target.ok()) Die(absl::StrCat("--state-store: ", target.status().message()));
    etcd = std::make_unique<tpcoord::EtcdConnection>(*target, EtcdCredentialsFromFlags(), tpcoord::Millis(5000));
    // Written only while no coordinator leads: the leader key's create_revision is 0 while it does not exist.
    etcd_store = tpcoord::MakeEtcdStateStore(etcd.get(), tpcoord::Fence{target->prefix + "/leader", 0},
                                             [&fenced](const std::string& why) { fenced = why; });
    store = etcd_store.get();
  } else {
    // The directory's lock refuses this while a coordinator serves it.
    absl::StatusOr<std::unique_ptr<tpcoord::StateDir>> opened = tpcoord::StateDir::Open(absl::GetFlag(FLAGS_state_dir));
    if (!opened.ok()) Die(std::string(opened.status().message()));
    state_dir = *std::move(opened);
    store = state_dir->store();
  }
  const std::string key = absl::StrCat(tpcoord::job_storage::kJobsPrefix, job);
  absl::StatusOr<std::vector<tpcoord::StateEntry>> entries = store->Scan(key);
  if (!entries.ok()) Die(std::string(entries.status().message()));
  const size_t count = std::count_if(entries->begin(), entries->end(), [&key](const tpcoord::StateEntry& e) {
    return e.key == key || absl::StartsWith(e.key, key + "/");
  });
  if (count == 0) Die(absl::StrCat("--forget-job: ", store->name(), " holds no job ", job));
  tpcoord::StateWrites writes;
  tpcoord::job_storage::DeleteJob(job, &writes);
  if (absl::Status s = store->Write(writes, absl::StrCat("removal of job ", job)); !s.ok()) {
    Die(fenced.empty() ? std::string(s.message())
                       : absl::StrCat("--forget-job: a coordinator leads on ", store->name(),
                                      " (or one stopped less than its --leader-lease ago); stop every coordinator "
                                      "of this cluster first, or delete the job with the admin token (tpctl delete ",
                                      job, " --force)"));
  }
  std::cout << "forgot job " << job << ": removed its " << count << " stored entries from " << store->name()
            << std::endl;
  return 0;
}

// Every flag checked before anything starts (as etcd's Config.Validate): a bad value stops the process with
// what is wrong, before it listens or touches state.
struct Config {
  std::string listen;
  std::string metrics_listen;
  std::string job_creation;
  std::string admin_token_sha256;  // "" without --admin-token-file
  tpcoord::JobOptions job;
  tpcoord::Millis job_ttl{0};
};

Config ValidatedConfig() {
  Config config;
  tpcoord::JobOptions& options = config.job;
  options.lease = absl::ToChronoMilliseconds(absl::GetFlag(FLAGS_lease));
  options.default_wait = absl::ToChronoMilliseconds(absl::GetFlag(FLAGS_default_wait));
  if (options.lease < tpcoord::Millis(100)) Die("--lease must be at least 100ms");
  if (absl::GetFlag(FLAGS_max_jobs) < 1) Die("--max-jobs must be at least 1");
  config.job_ttl = absl::ToChronoMilliseconds(absl::GetFlag(FLAGS_job_ttl));
  if (config.job_ttl < tpcoord::Millis(1000)) Die("--job-ttl must be at least 1s");
  options.log = LogLine;
  config.job_creation = absl::GetFlag(FLAGS_job_creation);
  if (config.job_creation != "open" && config.job_creation != "admin") Die("--job-creation must be open or admin");
  options.only_admin_creates_jobs = config.job_creation == "admin";
  if (const std::string path = absl::GetFlag(FLAGS_admin_token_file); !path.empty()) {
    absl::StatusOr<std::string> token = tpcoord::ReadSecretFile(path);
    if (!token.ok()) Die(absl::StrCat("--admin-token-file: ", token.status().message()));
    config.admin_token_sha256 = tpcoord::Sha256(*token);
  }
  options.admin_token = !config.admin_token_sha256.empty();
  options.forget_job_command =
      absl::GetFlag(FLAGS_state_store).empty()
          ? absl::StrCat("tp-coordinator --state-dir ", absl::GetFlag(FLAGS_state_dir), " --forget-job")
          : absl::StrCat("tp-coordinator --state-store ", absl::GetFlag(FLAGS_state_store), " --forget-job");
  if (options.only_admin_creates_jobs && config.admin_token_sha256.empty()) {
    Die("--job-creation admin needs --admin-token-file: nobody could create a job");
  }
  config.listen = absl::GetFlag(FLAGS_listen);
  config.metrics_listen = absl::GetFlag(FLAGS_metrics_listen);
  if (!config.metrics_listen.empty() && !config.admin_token_sha256.empty() && !IsLocalOnly(config.metrics_listen) &&
      !absl::GetFlag(FLAGS_allow_insecure)) {
    Die(absl::StrCat("--metrics-listen ", config.metrics_listen,
                     " is plaintext HTTP: scrapers would send the admin "
                     "token over the network in the clear; keep it on loopback, or give --allow-insecure"));
  }
  return config;
}

// The metrics and status page endpoint (--metrics-listen), serving from the start, a standby's too
// (tpcoord_leader 0); null without the flag.
std::unique_ptr<tpcoord::OpsEndpoint> StartOps(const Config& config, tpcoord::Metrics* metrics) {
  if (config.metrics_listen.empty()) return nullptr;
  absl::StatusOr<std::unique_ptr<tpcoord::OpsEndpoint>> started =
      tpcoord::OpsEndpoint::Start(config.metrics_listen, metrics, config.admin_token_sha256);
  if (!started.ok()) Die(std::string(started.status().message()));
  std::cout << "tp-coordinator metrics on http://" << (*started)->address() << "/metrics" << std::endl;
  Log(absl::StrCat("metrics and status page on http://", (*started)->address(), "/",
                   config.admin_token_sha256.empty() ? "" : " (admin token required)"));
  return *std::move(started);
}

// Where state lives: SQLite in --state-dir, or (HA) etcd once this coordinator leads. For etcd this
// campaigns, serving as a standby meanwhile, and returns once this process leads.
struct StateSource {
  std::string serve_on;  // the listen address, with the port a standby got for a port 0
  std::unique_ptr<tpcoord::StateDir> state_dir;
  std::unique_ptr<tpcoord::EtcdConnection> etcd;
  std::unique_ptr<tpcoord::LeaderElection> election;  // null without etcd
  std::unique_ptr<tpcoord::StateStore> etcd_store;
  tpcoord::StateStore* store = nullptr;
  std::string where;  // for the "serving on" line
};

StateSource OpenState(const std::string& listen, const std::shared_ptr<grpc::ServerCredentials>& credentials,
                      std::function<void(const std::string&)> on_lost_leadership) {
  StateSource state;
  state.serve_on = listen;
  if (const std::string url = absl::GetFlag(FLAGS_state_store); !url.empty()) {
    absl::StatusOr<tpcoord::EtcdTarget> target = tpcoord::ParseEtcdTarget(url);
    if (!target.ok()) Die(absl::StrCat("--state-store: ", target.status().message()));
    const tpcoord::Millis lease = absl::ToChronoMilliseconds(absl::GetFlag(FLAGS_leader_lease));
    if (lease < tpcoord::Millis(2000)) Die("--leader-lease must be at least 2s (etcd's shortest lease)");
    state.etcd = std::make_unique<tpcoord::EtcdConnection>(*target, EtcdCredentialsFromFlags(), tpcoord::Millis(5000));
    state.election = std::make_unique<tpcoord::LeaderElection>(state.etcd.get(), lease, Log);
    auto [port, fence] = CampaignAsStandby(*state.election, listen, credentials, absl::GetFlag(FLAGS_advertise));
    state.serve_on = absl::StrCat(listen.substr(0, listen.rfind(':')), ":", port);
    state.election->OnLost(std::move(on_lost_leadership));
    state.etcd_store = tpcoord::MakeEtcdStateStore(
        state.etcd.get(), fence, [e = state.election.get()](const std::string& why) { e->Fenced(why); });
    state.store = state.etcd_store.get();
    state.where = absl::StrCat(state.etcd_store->name(), " (leading: fence revision ", fence.create_revision, ")");
  } else {
    absl::StatusOr<std::unique_ptr<tpcoord::StateDir>> opened = tpcoord::StateDir::Open(absl::GetFlag(FLAGS_state_dir));
    if (!opened.ok()) Die(std::string(opened.status().message()));
    state.state_dir = *std::move(opened);
    state.store = state.state_dir->store();
    state.where = state.state_dir->database_path();
  }
  return state;
}

// The gRPC server of a leading (or only) coordinator, listening on `serve_on`; dies if it cannot listen.
std::unique_ptr<grpc::Server> StartServer(const std::string& serve_on,
                                          const std::shared_ptr<grpc::ServerCredentials>& credentials,
                                          tpcoord::CoordinatorService* service, tpcoord::Metrics* count_calls,
                                          int* port) {
  grpc::ServerBuilder builder;
  builder.SetOption(std::make_unique<ReflectionOption>(absl::GetFlag(FLAGS_reflection)));
  builder.AddListeningPort(serve_on, credentials, port);
  builder.RegisterService(service);
  builder.SetMaxReceiveMessageSize(tpcoord::kMaxRequestBytes);
  if (count_calls) {
    std::vector<std::unique_ptr<grpc::experimental::ServerInterceptorFactoryInterface>> interceptors;
    interceptors.push_back(tpcoord::MakeRpcMetricsInterceptor(count_calls));
    builder.experimental().SetInterceptorCreators(std::move(interceptors));
  }
  // Clients of replicated coordinators ping every 2 s to notice one that stopped answering (client library).
  builder.AddChannelArgument(GRPC_ARG_HTTP2_MIN_RECV_PING_INTERVAL_WITHOUT_DATA_MS, 1000);
  std::unique_ptr<grpc::Server> server = builder.BuildAndStart();
  if (!server || *port == 0) {
    Die(absl::StrCat(
        "cannot listen on ", serve_on,
        absl::GetFlag(FLAGS_tls_cert).empty() ? "" : " (are --tls-cert and --tls-key a matching PEM pair?)"));
  }
  return server;
}

}  // namespace

int main(int argc, char** argv) {
  absl::SetProgramUsageMessage(
      "tp-coordinator --listen HOST:PORT --state-dir DIR [--tls-cert F --tls-key F [--tls-client-ca F]] "
      "[--admin-token-file F] [--job-creation open|admin] [--lease 10s] [--max-jobs N] [--job-ttl 168h]");
  tpcoord::InitProcess(argc, argv);
  absl::StatusOr<tpcoord::LogFormat> format = tpcoord::ParseLogFormat(absl::GetFlag(FLAGS_log_format));
  if (!format.ok()) Die(absl::StrCat("--log-format: ", format.status().message()));
  log_format = *format;

  // Block the stop signals before any thread starts, so that only sigwait below receives them.
  sigset_t stop_signals;
  sigemptyset(&stop_signals);
  sigaddset(&stop_signals, SIGTERM);
  sigaddset(&stop_signals, SIGINT);
  pthread_sigmask(SIG_BLOCK, &stop_signals, nullptr);

  if (const std::string job = absl::GetFlag(FLAGS_forget_job); !job.empty()) return ForgetJob(job);

  const Config config = ValidatedConfig();
  std::shared_ptr<grpc::ServerCredentials> credentials = ServerCredentials(config.listen);
  grpc::EnableDefaultHealthCheckService(true);  // open to all: probes carry no token
  static tpcoord::Metrics metrics(/*count_calls=*/!config.metrics_listen.empty());  // bench/: what counting costs
  std::unique_ptr<tpcoord::OpsEndpoint> ops = StartOps(config, &metrics);
  grpc::reflection::InitProtoReflectionServerBuilderPlugin();

  // The stop signals, on a thread of their own: the main thread may be campaigning when one comes.
  static StopLatch stop;
  static std::atomic<bool> serving{false};
  std::thread([stop_signals] {
    int signal_number = 0;
    sigwait(&stop_signals, &signal_number);
    if (!serving.load()) {  // a standby holds nothing: it just goes
      Log(absl::StrCat("received ", strsignal(signal_number), " while not leading: exiting"));
      std::_Exit(0);
    }
    stop.Signal(signal_number);
  }).detach();

  StateSource state = OpenState(config.listen, credentials, [](const std::string& why) { stop.StepDown(why); });
  tpcoord::TimedStateStore timed_store(
      state.store, [](double seconds, const absl::Status& status) { metrics.StateWritten(seconds, status); });

  // Declared in the order they depend on each other, so that they are destroyed in the reverse one. The
  // quota outlives the timer thread: a deadline callback may hold the last reference to a Job, whose store
  // gives its bytes back to the quota when it goes.
  tpcoord::StoreQuota store_quota(absl::GetFlag(FLAGS_max_store_bytes));
  tpcoord::TimerQueue timers;
  tpcoord::JobContext context{nullptr, &timers, &store_quota, config.job, nullptr, &metrics};
  // Drains its writes (into the jobs) before `context` goes. Jobs apply what was written, and answer their
  // calls, on a gRPC thread, where finishing a call costs no further thread hop.
  tpcoord::StateCommitter committer(&timed_store, tpcoord::RunOnGrpcThread);
  context.committer = &committer;
  tpcoord::JobRegistry registry(&context, static_cast<size_t>(absl::GetFlag(FLAGS_max_jobs)));
  absl::StatusOr<tpcoord::JobRegistry::Restored> restored = registry.Restore();
  if (!restored.ok()) Die(absl::StrCat("cannot restore state: ", restored.status().message()));
  for (const std::string& corrupt : restored->corrupt) Log(absl::StrCat("restore: ", corrupt));
  metrics.SetRestoredJobs(restored->jobs);
  registry.ExpireIdleJobs(config.job_ttl, std::min(config.job_ttl / 4, tpcoord::Millis(60000)));
  tpcoord::CoordinatorService service(&registry, config.job, config.admin_token_sha256);
  int port = 0;
  std::unique_ptr<grpc::Server> server =
      StartServer(state.serve_on, credentials, &service, ops ? &metrics : nullptr, &port);
  server->GetHealthCheckService()->SetServingStatus(true);
  metrics.SetLeading(true);
  if (ops) ops->Serve(&registry, &store_quota);

  const std::string address = absl::StrCat(config.listen.substr(0, config.listen.rfind(':')), ":", port);
  if (!state.election) std::cout << "tp-coordinator listening on " << address << std::endl;  // a standby said it
  serving.store(true);
  Log(absl::StrCat("serving on ", address, ", state in ", state.where, ", ", restored->jobs, " job(s) restored",
                   restored->corrupt.empty() ? "" : absl::StrCat(" (", restored->corrupt.size(), " unreadable)"),
                   ", lease ", absl::FormatDuration(absl::GetFlag(FLAGS_lease)),
                   absl::GetFlag(FLAGS_tls_cert).empty()        ? ", plaintext"
                   : absl::GetFlag(FLAGS_tls_client_ca).empty() ? ", TLS"
                                                                : ", mutual TLS",
                   config.admin_token_sha256.empty() ? "" : ", admin token set", ", job creation ",
                   config.job_creation));

  const auto [why, step_down] = stop.Wait();
  if (step_down) {
    // Another coordinator leads, or will as soon as this one's lease runs out: stop answering at once and
    // start afresh as a standby. Nothing here is worth saving: whatever was not written is not acknowledged.
    Log(absl::StrCat("stepping down: ", why));
    execv("/proc/self/exe", argv);
    Die(absl::StrCat("cannot execute /proc/self/exe to become a standby: ", strerror(errno)));
  }
  Log(absl::StrCat(why, ": shutting down"));
  server->GetHealthCheckService()->SetServingStatus(false);
  registry.Shutdown();
  // For a moment every call is still served, and answered UNAVAILABLE: clients back off and retry. Calls
  // that arrive once gRPC's own shutdown has begun are cancelled by gRPC (CANCELLED, which the worker client
  // retries too); the drain keeps that window to the last moment.
  absl::SleepFor(std::min(absl::GetFlag(FLAGS_shutdown_grace), absl::Milliseconds(500)));
  server->Shutdown(std::chrono::system_clock::now() + absl::ToChronoMilliseconds(absl::GetFlag(FLAGS_shutdown_grace)));
  server->Wait();
  if (ops) ops->Serve(nullptr, nullptr);  // the registry goes before the endpoint
  Log("stopped");
  return 0;
}
