#include "coordinator/ha/standby_service.h"

#include "absl/strings/str_cat.h"

namespace tpcoord {
namespace {

// Answers at once and goes.
class Refusal : public grpc::ServerGenericBidiReactor {
 public:
  Refusal(grpc::GenericCallbackServerContext* ctx, const std::string& leader) {
    if (!leader.empty()) ctx->AddTrailingMetadata(kLeaderMetadata, leader);
    Finish(grpc::Status(grpc::StatusCode::UNAVAILABLE,
                        leader.empty() ? "this tp-coordinator is a standby, and no coordinator leads at the moment "
                                         "(an election is under way); try again"
                                       : absl::StrCat("this tp-coordinator is a standby; the leader is at ", leader)));
  }
  void OnDone() override { delete this; }
};

}  // namespace

void StandbyService::SetLeader(const std::string& address) {
  std::lock_guard<std::mutex> lock(mu_);
  leader_ = address;
}

grpc::ServerGenericBidiReactor* StandbyService::CreateReactor(grpc::GenericCallbackServerContext* ctx) {
  std::lock_guard<std::mutex> lock(mu_);
  return new Refusal(ctx, leader_);
}

}  // namespace tpcoord
