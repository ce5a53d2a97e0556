#include "agent/local_socket.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <cstdlib>
#include <cstring>
#include <utility>
#include <vector>

#include <grpcpp/server_posix.h>

#include "absl/strings/str_cat.h"

namespace tpcoord {
namespace {

absl::Status Errno(const std::string& what) {
  return absl::FailedPreconditionError(absl::StrCat(what, ": ", std::strerror(errno)));
}

}  // namespace

absl::StatusOr<std::unique_ptr<LocalSocket>> LocalSocket::Listen(const std::string& dir_in) {
  std::string dir = dir_in;
  const bool own_dir = dir.empty();
  if (own_dir) {
    const char* tmp = std::getenv("TMPDIR");
    std::string pattern = absl::StrCat(tmp && *tmp ? tmp : "/tmp", "/tp-agent-XXXXXX");
    std::vector<char> name(pattern.begin(), pattern.end());
    name.push_back('\0');
    if (mkdtemp(name.data()) == nullptr) return Errno(absl::StrCat("cannot make a directory like ", pattern));
    dir = name.data();
  } else if (mkdir(dir.c_str(), 0700) != 0 && errno != EEXIST) {
    return Errno(absl::StrCat("cannot make --socket-dir ", dir));
  }
  struct stat st;
  if (stat(dir.c_str(), &st) != 0) return Errno(absl::StrCat("cannot stat ", dir));
  if (st.st_uid != geteuid()) {
    return absl::FailedPreconditionError(
        absl::StrCat(dir, " belongs to uid ", st.st_uid, ", not to this agent's uid ", geteuid()));
  }
  if (chmod(dir.c_str(), 0700) != 0) return Errno(absl::StrCat("cannot make ", dir, " private (0700)"));
  const std::string path = dir + "/agent.sock";
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  if (path.size() >= sizeof(addr.sun_path)) {
    return absl::InvalidArgumentError(absl::StrCat("the socket path ", path, " is longer than ",
                                                   sizeof(addr.sun_path) - 1, " bytes; choose a shorter directory"));
  }
  std::memcpy(addr.sun_path, path.c_str(), path.size() + 1);
  unlink(path.c_str());  // a socket left by an agent that died here
  const int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
  if (fd < 0) return Errno("cannot make a Unix socket");
  const mode_t old_mask = umask(0177);  // the socket is born 0600: no moment where another user may connect
  const int bound = bind(fd, reinterpret_cast<const sockaddr*>(&addr), sizeof(addr));
  umask(old_mask);
  if (bound != 0 || listen(fd, 1024) != 0) {
    absl::Status status = Errno(absl::StrCat("cannot listen on ", path));
    close(fd);
    return status;
  }
  const int wake = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  if (wake < 0) {
    close(fd);
    return Errno("eventfd");
  }
  return std::unique_ptr<LocalSocket>(new LocalSocket(dir, own_dir, fd, wake));
}

LocalSocket::LocalSocket(std::string dir, bool own_dir, int fd, int wake)
    : dir_(std::move(dir)), own_dir_(own_dir), path_(dir_ + "/agent.sock"), fd_(fd), wake_(wake) {}

LocalSocket::~LocalSocket() {
  const uint64_t one = 1;
  if (write(wake_, &one, sizeof(one)) < 0) {
    // nothing to do: the loop also ends when the socket closes
  }
  if (thread_.joinable()) thread_.join();
  close(fd_);
  close(wake_);
  unlink(path_.c_str());
  if (own_dir_) rmdir(dir_.c_str());
}

void LocalSocket::Serve(grpc::Server* server, std::function<void(const std::string&)> log) {
  thread_ = std::thread([this, server, log = std::move(log)] { AcceptLoop(server, log); });
}

void LocalSocket::AcceptLoop(grpc::Server* server, const std::function<void(const std::string&)>& log) {
  for (;;) {
    pollfd fds[2] = {{fd_, POLLIN, 0}, {wake_, POLLIN, 0}};
    if (poll(fds, 2, -1) < 0) {
      if (errno == EINTR) continue;
      log(absl::StrCat("the local socket's accept loop stops: poll: ", std::strerror(errno)));
      return;
    }
    if (fds[1].revents != 0) return;
    for (;;) {
      const int conn = accept4(fd_, nullptr, nullptr, SOCK_CLOEXEC | SOCK_NONBLOCK);
      if (conn < 0) break;  // EAGAIN: all taken (any other error is the next connection's)
      ucred peer{};
      socklen_t len = sizeof(peer);
      if (getsockopt(conn, SOL_SOCKET, SO_PEERCRED, &peer, &len) != 0) {
        log(absl::StrCat("refused a connection on ", path_, ": SO_PEERCRED: ", std::strerror(errno)));
        close(conn);
        continue;
      }
      if (peer.uid != geteuid()) {
        log(absl::StrCat("refused a connection on ", path_, " from pid ", peer.pid, " of uid ", peer.uid,
                         ": only uid ", geteuid(), ", this agent's, may use it"));
        close(conn);
        continue;
      }
      grpc::AddInsecureChannelFromFd(server, conn);  // gRPC owns the descriptor from here
    }
  }
}

}  // namespace tpcoord
