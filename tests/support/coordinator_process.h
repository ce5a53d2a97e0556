// A real tp-coordinator process on a free loopback port, for integration tests.
#ifndef TPCOORD_TESTS_SUPPORT_COORDINATOR_PROCESS_H_
#define TPCOORD_TESTS_SUPPORT_COORDINATOR_PROCESS_H_

#include <map>
#include <memory>
#include <string>
#include <vector>

#include <grpcpp/grpcpp.h>

#include "tests/support/subprocess.h"
#include "tpcoord/v1/coordinator.grpc.pb.h"

namespace tpcoord::testing {

// The token every test job is bound to, and the member key of every seat a test takes through a raw stub
// (the security tests use others).
inline constexpr char kTestToken[] = "tpcoord-test-token-0123456789";
inline constexpr char kTestMemberKey[] = "tpcoord-test-member-key-0123456789";
inline constexpr char kAdminToken[] = "tpcoord-admin-token-0123456789";

// Writes kAdminToken into a file under `dir` and answers {"--admin-token-file", that file}.
std::vector<std::string> AdminTokenArgs(const std::string& dir);

// The environment that hands a child process (tp-worker, tpctl, a probe) `token`.
std::map<std::string, std::string> TokenEnv(const std::string& token = kTestToken);

class CoordinatorProcess {
 public:
  // Starts tp-coordinator --listen 127.0.0.1:0 --state-dir `state_dir` plus `extra_args`, and waits until it
  // prints its address.
  static absl::StatusOr<std::unique_ptr<CoordinatorProcess>> Start(const std::string& state_dir,
                                                                   const std::vector<std::string>& extra_args = {});
  // The same, listening on `address` (HOST:PORT): a coordinator restarted where its workers expect it.
  static absl::StatusOr<std::unique_ptr<CoordinatorProcess>> StartAt(const std::string& address,
                                                                     const std::string& state_dir,
                                                                     const std::vector<std::string>& extra_args = {});

  const std::string& address() const { return address_; }
  Subprocess& process() { return *process_; }
  std::unique_ptr<v1::Coordinator::Stub> NewStub() const;  // on its own channel

 private:
  CoordinatorProcess(std::unique_ptr<Subprocess> process, std::string address)
      : process_(std::move(process)), address_(std::move(address)) {}
  std::unique_ptr<Subprocess> process_;
  std::string address_;
};

// RecordTpInitArgs(job, tp_size, dtype, tp_group) with a 10 s deadline; an empty `group` means none. The
// response goes to `out` when given.
grpc::Status RecordTpInit(v1::Coordinator::Stub& stub, const std::string& job, int tp_size, v1::Dtype dtype,
                          const std::vector<int>& group = {}, v1::RecordTpInitArgsResponse* out = nullptr);

// A ClientContext with a deadline `seconds` from now, carrying the test token and member key.
std::unique_ptr<grpc::ClientContext> Deadline(int seconds = 10);
// The same with other credentials ("" leaves one out).
std::unique_ptr<grpc::ClientContext> Credentials(const std::string& token, const std::string& member_key,
                                                 int seconds = 10);

}  // namespace tpcoord::testing

#endif  // TPCOORD_TESTS_SUPPORT_COORDINATOR_PROCESS_H_
