#include "tests/support/etcd_cluster.h"

#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <iterator>
#include <thread>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "coordinator/ha/etcd_connection.h"

namespace tpcoord::testing {
namespace {

constexpr char kEtcd[] = "/usr/bin/etcd";

// A port the kernel considers free right now (bound and released).
int FreePort() {
  const int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = 0;
  socklen_t len = sizeof(addr);
  int port = 0;
  if (bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) == 0 &&
      getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len) == 0) {
    port = ntohs(addr.sin_port);
  }
  close(fd);
  return port;
}

}  // namespace

bool HaveEtcd() { return access(kEtcd, X_OK) == 0; }

namespace {

std::string ReadAll(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
}

}  // namespace

EtcdCredentials EtcdCluster::credentials() const {
  if (tls_dir_.empty()) return {};
  return {ReadAll(tls_dir_ + "/client/ca.crt"), ReadAll(tls_dir_ + "/client/tls.crt"),
          ReadAll(tls_dir_ + "/client/tls.key")};
}

absl::StatusOr<std::unique_ptr<EtcdCluster>> EtcdCluster::Start(const std::string& dir, int members,
                                                                const std::string& tls_dir) {
  std::unique_ptr<EtcdCluster> cluster(new EtcdCluster());
  cluster->tls_dir_ = tls_dir;
  std::vector<std::string> peers;
  for (int i = 0; i < members; ++i) {
    Member m;
    m.name = absl::StrCat("m", i);
    m.data_dir = absl::StrCat(dir, "/", m.name);
    m.client_port = FreePort();
    m.peer_port = FreePort();
    peers.push_back(absl::StrCat(m.name, "=http://127.0.0.1:", m.peer_port));
    cluster->members_.push_back(std::move(m));
  }
  cluster->initial_cluster_ = absl::StrJoin(peers, ",");
  for (Member& m : cluster->members_) {
    if (absl::Status s = cluster->StartMember(m, true); !s.ok()) return s;
  }
  if (absl::Status s = cluster->Answers(std::chrono::seconds(30)); !s.ok()) {
    return absl::DeadlineExceededError(absl::StrCat("etcd cluster at ", cluster->endpoints(), " did not answer: ",
                                                    s.message(), "; ", cluster->members_[0].process->Stderr()));
  }
  return cluster;
}

EtcdCluster::~EtcdCluster() {
  // Each member preallocates a 64 MiB write-ahead log and more: stop them, then remove their data, so that
  // runs of many tests do not fill the disk.
  for (Member& m : members_) {
    m.process.reset();  // SIGKILL to its process group, reaped
    std::error_code ignored;
    std::filesystem::remove_all(m.data_dir, ignored);
  }
}

absl::Status EtcdCluster::StartMember(Member& m, bool initial) {
  const std::string client_url = absl::StrCat(tls_dir_.empty() ? "http" : "https", "://127.0.0.1:", m.client_port);
  std::vector<std::string> argv = {kEtcd,
                                   "--name", m.name,
                                   "--data-dir", m.data_dir,
                                   "--listen-client-urls", client_url,
                                   "--advertise-client-urls", client_url,
                                   "--listen-peer-urls", absl::StrCat("http://127.0.0.1:", m.peer_port),
                                   "--initial-advertise-peer-urls", absl::StrCat("http://127.0.0.1:", m.peer_port),
                                   "--initial-cluster", initial_cluster_,
                                   "--initial-cluster-state", initial ? "new" : "existing",
                                   "--initial-cluster-token", "tpcoord-test",
                                   "--heartbeat-interval", "100",
                                   "--election-timeout", "1000",
                                   "--logger", "zap",
                                   "--log-level", "warn"};
  if (!tls_dir_.empty()) {
    argv.insert(argv.end(), {"--cert-file", tls_dir_ + "/server/tls.crt", "--key-file", tls_dir_ + "/server/tls.key",
                             "--client-cert-auth", "--trusted-ca-file", tls_dir_ + "/server/ca.crt"});
  }
  absl::StatusOr<std::unique_ptr<Subprocess>> process = Subprocess::Start(argv);
  if (!process.ok()) return process.status();
  m.process = *std::move(process);
  return absl::OkStatus();
}

std::string EtcdCluster::endpoints() const {
  std::vector<std::string> out;
  for (const Member& m : members_) out.push_back(absl::StrCat("127.0.0.1:", m.client_port));
  return absl::StrJoin(out, ",");
}

void EtcdCluster::Kill(int member) {
  members_[member].process->Signal(SIGKILL);
  (void)members_[member].process->Wait(std::chrono::seconds(10));
}

void EtcdCluster::Freeze(int member) { members_[member].process->Signal(SIGSTOP); }

void EtcdCluster::Thaw(int member) { members_[member].process->Signal(SIGCONT); }

absl::Status EtcdCluster::Restart(int member) { return StartMember(members_[member], false); }

absl::Status EtcdCluster::Answers(std::chrono::milliseconds timeout) const {
  absl::StatusOr<EtcdTarget> target = ParseEtcdTarget(url());
  if (!target.ok()) return target.status();
  EtcdConnection etcd(*target, credentials(), std::chrono::milliseconds(1000));
  const auto give_up = std::chrono::steady_clock::now() + timeout;
  absl::Status last = absl::DeadlineExceededError("not tried");
  while (std::chrono::steady_clock::now() < give_up) {
    etcdserverpb::RangeRequest req;
    req.set_key("/tpcoord-test-probe");
    etcdserverpb::RangeResponse resp;
    last = etcd.Range(req, &resp);
    if (last.ok()) return last;
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  return last;
}

}  // namespace tpcoord::testing
