// A worker's membership in its job, for one generation: the member session that carries its rendezvous
// calls (Join, the config merge, unique IDs, Leave) and heartbeats, and what the coordinator said when the
// generation ended. The engine trains; this is how it belongs to the job. No LibTorch in here.
//
// Invariants:
// - The session leaves before it closes (Leave, then the session goes): a session that closes before its
//   member left is taken for a death.
// - A generation's end that this worker caused itself (Leave with a failure) is no news: on_generation_end
//   runs only for ends the coordinator decided (a peer died or hung, the job was deleted).
//
// Thread-safe where it says so: lost() and AwaitLost() are read while the session's thread writes.
#ifndef TPCOORD_WORKER_TRAINING_MEMBERSHIP_H_
#define TPCOORD_WORKER_TRAINING_MEMBERSHIP_H_

#include <atomic>
#include <condition_variable>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "client/coordinator_client.h"
#include "client/member_session.h"
#include "common/training_progress.h"

namespace tpcoord {

class JobMembership {
 public:
  // `on_generation_end` runs on the session's thread the moment the coordinator ends the generation, with its
  // reason (naming the rank that failed), unless this worker is leaving; may be empty.
  JobMembership(CoordinatorClient* client, std::function<void(const absl::Status&)> on_generation_end);
  ~JobMembership();  // leaves as failed ("the worker stopped before finishing") unless it left
  JobMembership(const JobMembership&) = delete;
  JobMembership& operator=(const JobMembership&) = delete;

  // Joins the rendezvous on the session; the membership is kept for the calls below.
  absl::StatusOr<Membership> Join(const JoinRequest& request, Millis wait);
  const Membership& membership() const { return membership_; }
  // The session, for the rendezvous calls made as this member (the merge, unique IDs). Valid until it leaves.
  MemberSession& session() { return *session_; }

  // Why the generation ended, if the session learned that it did.
  std::optional<std::string> lost() const;
  // lost(), waiting up to `timeout` for the coordinator's verdict: a collective that fails because a peer
  // died fails in this worker within milliseconds, and the coordinator names that peer a moment later.
  std::optional<std::string> AwaitLost(Millis timeout) const;
  // `status` with the coordinator's verdict beside it, if there is one: a collective's failure explained.
  absl::Status Explain(absl::Status status) const;

  // Tells the coordinator how training goes (tpctl watch, /metrics, the status page); never blocks.
  void ReportProgress(const TrainingProgress& progress);
  // Leaves as finished: the coordinator marks the generation complete once every rank has.
  absl::Status Finish();
  // Leaves as failed, telling the other workers `reason`; `fatal`: no restart cures it (LeaveRequest.fatal).
  // Does nothing once left, or once the generation ended anyway.
  void Abandon(const std::string& reason, bool fatal = false);

 private:
  std::function<void(const absl::Status&)> on_generation_end_;
  std::unique_ptr<MemberSession> session_;
  Membership membership_;
  bool left_ = false;                 // Finish or Abandon ran
  std::atomic<bool> leaving_{false};  // Abandon runs: the generation's end is this worker's own doing
  mutable std::mutex lost_mu_;
  mutable std::condition_variable lost_cv_;
  std::optional<std::string> lost_;  // guarded by lost_mu_
};

}  // namespace tpcoord

#endif  // TPCOORD_WORKER_TRAINING_MEMBERSHIP_H_
