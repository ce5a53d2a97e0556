#include "tests/support/coordinator_process.h"

#include <fstream>

#include "absl/status/status.h"
#include "common/secrets.h"

namespace tpcoord::testing {

absl::StatusOr<std::unique_ptr<CoordinatorProcess>> CoordinatorProcess::Start(
    const std::string& state_dir, const std::vector<std::string>& extra_args) {
  return StartAt("127.0.0.1:0", state_dir, extra_args);
}

absl::StatusOr<std::unique_ptr<CoordinatorProcess>> CoordinatorProcess::StartAt(
    const std::string& address, const std::string& state_dir, const std::vector<std::string>& extra_args) {
  std::vector<std::string> argv = {BinPath("coordinator/tp-coordinator"), "--listen", address,
                                   "--state-dir", state_dir};
  argv.insert(argv.end(), extra_args.begin(), extra_args.end());
  absl::StatusOr<std::unique_ptr<Subprocess>> process = Subprocess::Start(argv);
  if (!process.ok()) return process.status();
  constexpr absl::string_view kPrefix = "tp-coordinator listening on ";
  absl::StatusOr<std::string> line = (*process)->WaitForLine(kPrefix, std::chrono::seconds(30));
  if (!line.ok()) return line.status();
  return std::unique_ptr<CoordinatorProcess>(
      new CoordinatorProcess(*std::move(process), line->substr(kPrefix.size())));
}

std::unique_ptr<v1::Coordinator::Stub> CoordinatorProcess::NewStub() const {
  grpc::ChannelArguments args;
  args.SetInt("grpc.use_local_subchannel_pool", 1);  // a connection of its own, like a separate worker
  return v1::Coordinator::NewStub(grpc::CreateCustomChannel(address_, grpc::InsecureChannelCredentials(), args));
}

grpc::Status RecordTpInit(v1::Coordinator::Stub& stub, const std::string& job, int tp_size, v1::Dtype dtype,
                          const std::vector<int>& group, v1::RecordTpInitArgsResponse* out) {
  v1::RecordTpInitArgsRequest req;
  req.set_job_id(job);
  req.set_tp_size(tp_size);
  req.set_dtype(dtype);
  if (!group.empty()) req.mutable_tp_group()->mutable_ranks()->Add(group.begin(), group.end());
  v1::RecordTpInitArgsResponse resp;
  return stub.RecordTpInitArgs(Deadline().get(), req, out ? out : &resp);
}

std::map<std::string, std::string> TokenEnv(const std::string& token) { return {{"TPCOORD_TOKEN", token}}; }

std::vector<std::string> AdminTokenArgs(const std::string& dir) {
  const std::string path = dir + "/admin-token";
  std::ofstream(path) << kAdminToken << "\n";
  return {"--admin-token-file", path};
}

std::unique_ptr<grpc::ClientContext> Credentials(const std::string& token, const std::string& member_key,
                                                 int seconds) {
  auto ctx = std::make_unique<grpc::ClientContext>();
  ctx->set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(seconds));
  if (!token.empty()) ctx->AddMetadata(std::string(kAuthorizationMetadata), "Bearer " + token);
  if (!member_key.empty()) ctx->AddMetadata(std::string(kMemberKeyMetadata), member_key);
  return ctx;
}

std::unique_ptr<grpc::ClientContext> Deadline(int seconds) { return Credentials(kTestToken, kTestMemberKey, seconds); }

}  // namespace tpcoord::testing
