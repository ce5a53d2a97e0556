// A real etcd cluster for tests: Debian's etcd-server members on loopback ports, each a Subprocess with
// its own data directory, killed with the test. Members can be killed, frozen and started again.
#ifndef TPCOORD_TESTS_SUPPORT_ETCD_CLUSTER_H_
#define TPCOORD_TESTS_SUPPORT_ETCD_CLUSTER_H_

#include <chrono>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "coordinator/ha/etcd_connection.h"
#include "tests/support/subprocess.h"

namespace tpcoord::testing {

class EtcdCluster {
 public:
  // Starts `members` members under `dir` and waits until the cluster has a leader and answers. With
  // `tls_dir` (deploy/make-secrets.sh output for 127.0.0.1), clients must speak mutual TLS: the members
  // serve tls_dir/server's certificate and require one signed by its CA.
  static absl::StatusOr<std::unique_ptr<EtcdCluster>> Start(const std::string& dir, int members = 3,
                                                            const std::string& tls_dir = "");
  ~EtcdCluster();

  // "127.0.0.1:P0,127.0.0.1:P1,...", and the --state-store URL for `prefix`.
  std::string endpoints() const;
  std::string url(const std::string& prefix = "/tpcoord") const { return "etcd://" + endpoints() + prefix; }
  int size() const { return static_cast<int>(members_.size()); }

  void Kill(int member);                     // SIGKILL
  void Freeze(int member);                   // SIGSTOP
  void Thaw(int member);                     // SIGCONT
  absl::Status Restart(int member);          // a killed member again, on its data directory

  // What a client needs for the cluster: none, or the client certificate of tls_dir.
  EtcdCredentials credentials() const;

  // OK once a linearizable read succeeds on the cluster (it has quorum); the last error after `timeout`.
  absl::Status Answers(std::chrono::milliseconds timeout) const;

 private:
  struct Member {
    std::string name, data_dir;
    int client_port = 0, peer_port = 0;
    std::unique_ptr<Subprocess> process;
  };
  EtcdCluster() = default;
  absl::Status StartMember(Member& m, bool initial);

  std::string initial_cluster_;
  std::string tls_dir_;
  std::vector<Member> members_;
};

// Whether Debian's etcd (/usr/bin/etcd) is installed.
bool HaveEtcd();

}  // namespace tpcoord::testing

#endif  // TPCOORD_TESTS_SUPPORT_ETCD_CLUSTER_H_
