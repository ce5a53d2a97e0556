// tp-agent's local socket: a Unix socket (mode 0600) in a directory of the agent's own (mode 0700), where the
// host's workers reach the agent. Each connection is accepted here, its peer checked with SO_PEERCRED, and
// handed to the gRPC server only when the peer runs as the agent's uid: another user's process is refused
// even where the file modes were loosened.
#ifndef TPCOORD_AGENT_LOCAL_SOCKET_H_
#define TPCOORD_AGENT_LOCAL_SOCKET_H_

#include <grpcpp/grpcpp.h>

#include <atomic>
#include <functional>
#include <memory>
#include <string>
#include <thread>

#include "absl/status/statusor.h"

namespace tpcoord {

class LocalSocket {
 public:
  // Listens on `dir`/agent.sock, creating `dir` (0700); `dir` "": a new directory under $TMPDIR (else /tmp),
  // removed again by the destructor.
  static absl::StatusOr<std::unique_ptr<LocalSocket>> Listen(const std::string& dir);
  ~LocalSocket();  // stops accepting; removes the socket (and the directory it made)
  LocalSocket(const LocalSocket&) = delete;
  LocalSocket& operator=(const LocalSocket&) = delete;

  const std::string& path() const { return path_; }

  // Accepts connections on a thread of its own until destroyed, handing those of this uid to `server`;
  // every refusal goes to `log`.
  void Serve(grpc::Server* server, std::function<void(const std::string&)> log);

 private:
  LocalSocket(std::string dir, bool own_dir, int fd, int wake);
  void AcceptLoop(grpc::Server* server, const std::function<void(const std::string&)>& log);

  const std::string dir_;
  const bool own_dir_;
  const std::string path_;
  const int fd_;
  const int wake_;  // an eventfd that ends the accept loop
  std::thread thread_;
};

}  // namespace tpcoord

#endif  // TPCOORD_AGENT_LOCAL_SOCKET_H_
