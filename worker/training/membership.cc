#include "worker/training/membership.h"

#include <utility>

#include "absl/strings/str_cat.h"

namespace tpcoord {

JobMembership::JobMembership(CoordinatorClient* client, std::function<void(const absl::Status&)> on_generation_end)
    : on_generation_end_(std::move(on_generation_end)) {
  session_ = std::make_unique<MemberSession>(client, /*member_key=*/"", [this](absl::Status status) {
    // React before waking AwaitLost: a trainer waiting there for the coordinator's verdict sets leaving_ as
    // soon as it wakes, and the end must not pass for its own doing then.
    if (on_generation_end_ && !leaving_.load()) on_generation_end_(status);
    {
      std::lock_guard<std::mutex> lock(lost_mu_);
      lost_ = std::string(status.message());
    }
    lost_cv_.notify_all();
  });
}

JobMembership::~JobMembership() { Abandon("the worker stopped before finishing"); }

absl::StatusOr<Membership> JobMembership::Join(const JoinRequest& request, Millis wait) {
  absl::StatusOr<Membership> m = session_->Join(request, wait);
  if (m.ok()) membership_ = *m;
  return m;
}

std::optional<std::string> JobMembership::lost() const {
  std::lock_guard<std::mutex> lock(lost_mu_);
  return lost_;
}

std::optional<std::string> JobMembership::AwaitLost(Millis timeout) const {
  std::unique_lock<std::mutex> lock(lost_mu_);
  lost_cv_.wait_for(lock, timeout, [this] { return lost_.has_value(); });
  return lost_;
}

absl::Status JobMembership::Explain(absl::Status status) const {
  if (status.ok()) return status;
  if (std::optional<std::string> why = lost()) {
    return absl::Status(status.code(), absl::StrCat(status.message(), " (the coordinator says: ", *why, ")"));
  }
  return status;
}

void JobMembership::ReportProgress(const TrainingProgress& progress) {
  if (session_) session_->ReportProgress(progress);
}

absl::Status JobMembership::Finish() {
  left_ = true;
  absl::Status left = session_->Leave(/*finished=*/true, "");
  session_.reset();  // after Leave (the invariant)
  return left;
}

void JobMembership::Abandon(const std::string& reason, bool fatal) {
  leaving_.store(true);
  if (!left_ && membership_.generation != 0 && !lost()) {
    (void)session_->Leave(/*finished=*/false, reason, fatal);
  }
  session_.reset();  // after Leave (the invariant)
  left_ = true;
}

}  // namespace tpcoord
