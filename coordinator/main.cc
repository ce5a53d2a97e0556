// tp-coordinator: the gRPC service that every worker of every job talks to.
//
//   tp-coordinator --listen 127.0.0.1:50051 --state-dir /var/lib/tpcoord
//
// Prints "tp-coordinator listening on <address>" on stdout once it serves (with --listen host:0 the
// address holds the port the kernel picked). SIGTERM/SIGINT: stop accepting calls, answer parked calls
// with UNAVAILABLE, let in-flight calls finish, exit 0.
#include <fcntl.h>
#include <signal.h>
#include <sys/file.h>
#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <iostream>
#include <memory>
#include <string>

#include <grpcpp/ext/proto_server_reflection_plugin.h>
#include <grpcpp/grpcpp.h>
#include <grpcpp/health_check_service_interface.h>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "absl/strings/str_cat.h"
#include "absl/time/time.h"
#include "common/process_init.h"
#include "coordinator/coordinator_service.h"
#include "coordinator/job_registry.h"
#include "coordinator/state_store.h"
#include "coordinator/timer_queue.h"

ABSL_FLAG(std::string, listen, "0.0.0.0:50051", "address to serve on; port 0 picks a free port");
ABSL_FLAG(std::string, state_dir, "/var/lib/tpcoord",
          "directory for the coordinator's SQLite database (created if missing)");
ABSL_FLAG(absl::Duration, lease, absl::Seconds(10),
          "heartbeat lease: a worker silent this long ends its job's generation");
ABSL_FLAG(absl::Duration, default_wait, absl::Seconds(60),
          "how long a parked call waits when it asks for wait_timeout_ms = 0");
ABSL_FLAG(absl::Duration, shutdown_grace, absl::Seconds(2),
          "on SIGTERM, how long in-flight calls (and idle client connections) get to finish");

namespace {

void Log(const std::string& message) {
  std::cerr << absl::FormatTime("%Y-%m-%dT%H:%M:%E3SZ", absl::Now(), absl::UTCTimeZone())
            << " tp-coordinator " << message << std::endl;
}

[[noreturn]] void Die(const std::string& message) {
  Log(absl::StrCat("fatal: ", message));
  std::exit(1);
}

// One coordinator per state directory: a second one would corrupt the first one's view of its jobs.
int LockStateDir(const std::filesystem::path& dir) {
  const std::string lock_path = (dir / "LOCK").string();
  const int fd = ::open(lock_path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
  if (fd < 0) Die(absl::StrCat("cannot open ", lock_path, ": ", std::strerror(errno)));
  if (::flock(fd, LOCK_EX | LOCK_NB) != 0) {
    Die(absl::StrCat("another tp-coordinator holds ", lock_path, "; one coordinator per --state-dir"));
  }
  return fd;
}

}  // namespace

int main(int argc, char** argv) {
  absl::SetProgramUsageMessage("tp-coordinator --listen HOST:PORT --state-dir DIR [--lease 10s]");
  tpcoord::InitProcess(argc, argv);

  // Block the stop signals before any thread starts, so that only sigwait below receives them.
  sigset_t stop_signals;
  sigemptyset(&stop_signals);
  sigaddset(&stop_signals, SIGTERM);
  sigaddset(&stop_signals, SIGINT);
  pthread_sigmask(SIG_BLOCK, &stop_signals, nullptr);

  const std::filesystem::path state_dir = absl::GetFlag(FLAGS_state_dir);
  std::error_code ec;
  std::filesystem::create_directories(state_dir, ec);
  if (ec) Die(absl::StrCat("cannot create --state-dir ", state_dir.string(), ": ", ec.message()));
  const int lock_fd = LockStateDir(state_dir);

  tpcoord::JobOptions options;
  options.lease = absl::ToChronoMilliseconds(absl::GetFlag(FLAGS_lease));
  options.default_wait = absl::ToChronoMilliseconds(absl::GetFlag(FLAGS_default_wait));
  if (options.lease < tpcoord::Millis(100)) Die("--lease must be at least 100ms");
  options.log = Log;

  const std::string db_path = (state_dir / "coordinator.db").string();
  absl::StatusOr<std::unique_ptr<tpcoord::StateStore>> store = tpcoord::OpenSqliteStateStore(db_path);
  if (!store.ok()) Die(std::string(store.status().message()));
  tpcoord::TimerQueue timers;
  tpcoord::JobRegistry registry(store->get(), &timers, options);
  if (absl::Status s = registry.Restore(); !s.ok()) Die(absl::StrCat("cannot restore state: ", s.message()));
  tpcoord::CoordinatorService service(&registry, options);

  grpc::EnableDefaultHealthCheckService(true);
  grpc::reflection::InitProtoReflectionServerBuilderPlugin();
  grpc::ServerBuilder builder;
  int port = 0;
  const std::string listen = absl::GetFlag(FLAGS_listen);
  builder.AddListeningPort(listen, grpc::InsecureServerCredentials(), &port);
  builder.RegisterService(&service);
  builder.SetMaxReceiveMessageSize(8 << 20);
  std::unique_ptr<grpc::Server> server = builder.BuildAndStart();
  if (!server || port == 0) Die(absl::StrCat("cannot listen on ", listen));
  server->GetHealthCheckService()->SetServingStatus(true);

  const std::string host = listen.substr(0, listen.rfind(':'));
  const std::string address = absl::StrCat(host, ":", port);
  std::cout << "tp-coordinator listening on " << address << std::endl;
  Log(absl::StrCat("serving on ", address, ", state in ", db_path, ", ", registry.All().size(),
                   " job(s) restored, lease ", absl::FormatDuration(absl::GetFlag(FLAGS_lease))));

  int signal_number = 0;
  sigwait(&stop_signals, &signal_number);
  Log(absl::StrCat("received ", strsignal(signal_number), ": shutting down"));
  server->GetHealthCheckService()->SetServingStatus(false);
  for (const auto& job : registry.All()) job->Shutdown();
  server->Shutdown(std::chrono::system_clock::now() +
                   absl::ToChronoMilliseconds(absl::GetFlag(FLAGS_shutdown_grace)));
  server->Wait();
  ::close(lock_fd);
  Log("stopped");
  return 0;
}
