// A worker (and tpctl watch) pointed at the wrong address says so while it waits, about every 10 s (the
// first line after 5 s), naming the address, how long it has waited and what the transport says, in words:
// nothing listens there; an HTTP server answers there (the coordinator's metrics port, typed by mistake);
// a TLS client meets a plaintext coordinator, or a plaintext client a TLS one. When its --timeout is spent
// it gives up with the same reason, and exits with the status of a failure a restart may cure.
#include <sys/socket.h>
#include <netinet/in.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <fstream>
#include <memory>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "tests/support/coordinator_process.h"

namespace tpcoord {
namespace {

using testing::CoordinatorProcess;
using testing::Subprocess;

// A loopback port nothing listens on (bound once by the kernel's choice, then released).
std::string UnusedAddress() {
  const int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof(addr);
  bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr));
  getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len);
  close(fd);
  return absl::StrCat("127.0.0.1:", ntohs(addr.sin_port));
}

void Sh(const std::string& command) {
  auto result = testing::Run({"/bin/bash", "-c", command}, std::chrono::seconds(60), {});
  ASSERT_TRUE(result.ok()) << result.status();
  ASSERT_EQ(result->exit_code, 0) << command << "\n" << result->err;
}

// Whether `text` has a line "<start> after N s: <cause>..." with N between 5 and 7: the first waiting line.
bool WaitingLine(const std::string& text, const std::string& start, const std::string& cause) {
  for (int seconds : {5, 6, 7}) {
    if (absl::StrContains(text, absl::StrCat(start, " after ", seconds, " s: ", cause))) return true;
  }
  return false;
}

struct Case {
  std::string name;
  std::string address;
  std::vector<std::string> tls_args;
  std::string cause;  // what the waiting line says, in words
  std::unique_ptr<Subprocess> worker;
};

TEST(WrongAddressTest, AWorkerWaitingForTheWrongAddressSaysWhatIsThere) {
  const std::string dir = testing::MakeTempDir("wrong-address");
  Sh(absl::StrCat(TPCOORD_SOURCE_DIR, "/deploy/make-secrets.sh ", dir, "/secrets localhost 127.0.0.1"));
  std::ofstream(dir + "/config.json") << R"({"train_batch_size": 2, "tpcoord": {"steps": 1, "seq_len": 16}})";
  // A plaintext coordinator that also serves HTTP (its metrics port), and a TLS one.
  auto plain = *CoordinatorProcess::Start(dir + "/plain", {"--metrics-listen", "127.0.0.1:0"});
  auto metrics = plain->process().WaitForLine("tp-coordinator metrics on http://", std::chrono::seconds(10));
  ASSERT_TRUE(metrics.ok()) << metrics.status();
  std::string metrics_address = metrics->substr(std::string("tp-coordinator metrics on http://").size());
  metrics_address = metrics_address.substr(0, metrics_address.find('/'));
  auto tls = *CoordinatorProcess::Start(dir + "/tls", {"--tls-cert", dir + "/secrets/server/tls.crt", "--tls-key",
                                                        dir + "/secrets/server/tls.key"});
  const std::vector<std::string> trust = {"--tls-ca", dir + "/secrets/server/ca.crt"};

  std::vector<Case> cases;
  cases.push_back({"nothing listens", UnusedAddress(), {}, "nothing listens there (connection refused)", nullptr});
  cases.push_back({"the metrics port", metrics_address, {},
                   "an HTTP/1 server answers there, not a tpcoord coordinator (a metrics or status port?)", nullptr});
  cases.push_back({"TLS to plaintext", plain->address(), trust,
                   "the TLS handshake failed: the server there does not speak TLS (a plaintext coordinator?), or its "
                   "certificate is not trusted by --tls-ca",
                   nullptr});
  cases.push_back({"plaintext to TLS", tls->address(), {},
                   "the server there closes the connection: a TLS coordinator (give --tls-ca), or not a gRPC server",
                   nullptr});
  for (Case& c : cases) {
    std::vector<std::string> argv = {testing::BinPath("worker/tp-worker"), "--coordinator", c.address, "--job", "j",
                                     "--config", dir + "/config.json", "--random-init", "tiny", "--timeout", "8s"};
    argv.insert(argv.end(), c.tls_args.begin(), c.tls_args.end());
    c.worker = *Subprocess::Start(argv, testing::TokenEnv());
  }
  // tpctl watch, retrying within its --timeout, says the same.
  auto watch = *Subprocess::Start({testing::BinPath("coordinator/tpctl"), "--coordinator", cases[0].address,
                                   "--timeout", "8s", "watch", "j"},
                                  testing::TokenEnv());
  for (Case& c : cases) {
    auto exit_code = c.worker->Wait(std::chrono::seconds(60));
    ASSERT_TRUE(exit_code.ok()) << c.name;
    EXPECT_EQ(*exit_code, 75) << c.name << ": " << c.worker->Stderr();
    const std::string err = c.worker->Stderr();
    EXPECT_TRUE(WaitingLine(err, absl::StrCat("tp-worker: still waiting for the coordinator at ", c.address),
                            absl::StrCat(c.cause, " [")))
        << c.name << ":\n" << err;
    EXPECT_TRUE(absl::StrContains(err, absl::StrCat("cannot reach the coordinator at ", c.address, " within 8000 ms: ",
                                                    c.cause, " [")))
        << c.name << ":\n" << err;
  }
  ASSERT_TRUE(watch->Wait(std::chrono::seconds(60)).ok());
  EXPECT_TRUE(WaitingLine(watch->Stderr(),
                          absl::StrCat("warning: still waiting for the coordinator at ", cases[0].address),
                          cases[0].cause))
      << watch->Stderr();
}

}  // namespace
}  // namespace tpcoord
