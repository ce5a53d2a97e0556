// The rendezvous calls of the protocol (record, merge, Join, unique IDs, barrier, leave), from a parsed
// request to its job's answer: the request passes its checks (request_checks.h), goes to the job it names,
// and the job's answer is written into `out`; then `done` runs exactly once, from any thread, possibly before
// the function returns. `out` must stay valid until then. The unary handlers (coordinator_service.cc) and
// the member session (session_reactor.cc) both serve these calls through here, so that a call means the
// same, and is checked the same, whichever way it comes.
#ifndef TPCOORD_COORDINATOR_RPC_MEMBER_CALLS_H_
#define TPCOORD_COORDINATOR_RPC_MEMBER_CALLS_H_

#include <memory>
#include <string>

#include "coordinator/job/job_registry.h"
#include "tpcoord/v1/coordinator.pb.h"

namespace tpcoord {

// A call that may wait in a job, for its caller to cancel should it go away first (Job::Cancel; harmless
// once answered). `job` is null when the call was answered before reaching one.
struct WaitingCall {
  std::shared_ptr<Job> job;
  uint64_t id = 0;
};

// NOT_FOUND naming `job_id`.
absl::Status NoSuchJobError(const std::string& job_id);

class MemberCalls {
 public:
  // `registry` must outlive this.
  MemberCalls(JobRegistry* registry, const JobOptions& options) : registry_(registry), options_(options) {}

  // How long a call that asked for `wait_timeout_ms` may wait (0: the default; capped at kMaxWaitMs).
  Millis Wait(uint32_t wait_timeout_ms) const;
  // The job a call within a generation names: NOT_FOUND unless it exists.
  absl::StatusOr<std::shared_ptr<Job>> ExistingJob(const std::string& job_id) const;

  void Record(const Caller& caller, const v1::RecordTpInitArgsRequest& req, v1::RecordTpInitArgsResponse* out,
              StatusDone done) const;
  void Merge(const Caller& caller, const v1::MergeConfigRequest& req, v1::MergeConfigResponse* out,
             StatusDone done) const;
  WaitingCall Join(const Caller& caller, const v1::JoinRequest& req, Millis wait, v1::JoinResponse* out,
                  StatusDone done) const;
  void PublishUniqueIds(const Caller& caller, const v1::PublishUniqueIdRequest& req, StatusDone done) const;
  WaitingCall GetUniqueIds(const Caller& caller, const v1::GetUniqueIdRequest& req, Millis wait,
                          v1::GetUniqueIdResponse* out, StatusDone done) const;
  WaitingCall Barrier(const Caller& caller, const v1::BarrierRequest& req, Millis wait, StatusDone done) const;
  void Leave(const Caller& caller, const v1::LeaveRequest& req, StatusDone done) const;

  Metrics* metrics() const { return registry_->metrics(); }  // may be null

 private:
  JobRegistry* const registry_;
  const JobOptions options_;
};

}  // namespace tpcoord

#endif  // TPCOORD_COORDINATOR_RPC_MEMBER_CALLS_H_
