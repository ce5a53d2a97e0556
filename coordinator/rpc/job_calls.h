// The one face of every job-facing call. A call's request passes its checks (request_checks.h), goes to the
// job it names, and the job's answer is written into `out`; then `done` runs exactly once, from any thread,
// possibly before the call returns. The unary service (coordinator_service.cc) and the member session
// (session_reactor.cc) reach jobs only through here, so that a call means the same, and is checked the
// same, whichever way it comes.
//
// Every call has one shape, so that the service serves each with one template and the session each step
// from one table:
//
//   WaitingCall Call(const Caller&, Request&, Millis wait, Response* out, StatusDone done) const;
//
// `wait` bounds a call that may park in its job (ignored by the others); the answer names that job and the
// call's id in it, for cancelling when the client goes away (empty for a call that did not park). `out`
// must stay valid until `done` runs; the request may be moved from.
//
// The families, one file each: rendezvous_calls.cc (record, merge, Join, unique IDs, barrier, heartbeat,
// leave), store_calls.cc (the c10d key-value store), admin_calls.cc (list, get, delete, create, close jobs). A new
// RPC touches the proto, its request check, one family file, one line of the service's table, and job/.
#ifndef TPCOORD_COORDINATOR_RPC_JOB_CALLS_H_
#define TPCOORD_COORDINATOR_RPC_JOB_CALLS_H_

#include <memory>
#include <string>

#include "coordinator/job/job_registry.h"
#include "coordinator/rpc/answers.h"
#include "coordinator/rpc/request_checks.h"
#include "tpcoord/v1/coordinator.pb.h"

namespace tpcoord {

// A call that may wait in a job, for its caller to cancel should it go away first (Job::Cancel; harmless
// once answered). `job` is null when the call did not park.
struct WaitingCall {
  std::shared_ptr<Job> job;
  uint64_t id = 0;
};

class JobCalls {
 public:
  template <typename Request, typename Response>
  using Method = WaitingCall (JobCalls::*)(const Caller&, Request&, Millis, Response*, StatusDone) const;

  // `registry` must outlive this.
  JobCalls(JobRegistry* registry, const JobOptions& options) : registry_(registry), options_(options) {}

  // How long a call that asked for `wait_timeout_ms` may wait (0: the default; capped at kMaxWaitMs).
  Millis Wait(uint32_t wait_timeout_ms) const;
  // The job a call within a generation names: NOT_FOUND naming it unless it exists.
  absl::StatusOr<std::shared_ptr<Job>> ExistingJob(const std::string& job_id) const;
  Metrics* metrics() const { return registry_->metrics(); }  // may be null

  // --- rendezvous (rendezvous_calls.cc) ---
  WaitingCall Record(const Caller&, v1::RecordTpInitArgsRequest&, Millis, v1::RecordTpInitArgsResponse*,
                     StatusDone) const;
  WaitingCall Merge(const Caller&, v1::MergeConfigRequest&, Millis, v1::MergeConfigResponse*, StatusDone) const;
  WaitingCall Join(const Caller&, v1::JoinRequest&, Millis, v1::JoinResponse*, StatusDone) const;
  WaitingCall PublishUniqueId(const Caller&, v1::PublishUniqueIdRequest&, Millis, v1::PublishUniqueIdResponse*,
                              StatusDone) const;
  WaitingCall GetUniqueId(const Caller&, v1::GetUniqueIdRequest&, Millis, UniqueIdAnswer*, StatusDone) const;
  WaitingCall Barrier(const Caller&, v1::BarrierRequest&, Millis, v1::BarrierResponse*, StatusDone) const;
  WaitingCall Heartbeat(const Caller&, v1::HeartbeatRequest&, Millis, v1::HeartbeatResponse*, StatusDone) const;
  WaitingCall Leave(const Caller&, v1::LeaveRequest&, Millis, v1::LeaveResponse*, StatusDone) const;

  // --- the key-value store (store_calls.cc) ---
  WaitingCall StoreSet(const Caller&, v1::StoreSetRequest&, Millis, v1::StoreSetResponse*, StatusDone) const;
  WaitingCall StoreGet(const Caller&, v1::StoreGetRequest&, Millis, v1::StoreGetResponse*, StatusDone) const;
  WaitingCall StoreAdd(const Caller&, v1::StoreAddRequest&, Millis, v1::StoreAddResponse*, StatusDone) const;
  WaitingCall StoreCompareSet(const Caller&, v1::StoreCompareSetRequest&, Millis, v1::StoreCompareSetResponse*,
                              StatusDone) const;
  WaitingCall StoreCheck(const Caller&, v1::StoreCheckRequest&, Millis, v1::StoreCheckResponse*, StatusDone) const;
  WaitingCall StoreDelete(const Caller&, v1::StoreDeleteRequest&, Millis, v1::StoreDeleteResponse*, StatusDone) const;
  WaitingCall StoreNumKeys(const Caller&, v1::StoreNumKeysRequest&, Millis, v1::StoreNumKeysResponse*,
                           StatusDone) const;
  WaitingCall StoreWait(const Caller&, v1::StoreWaitRequest&, Millis, v1::StoreWaitResponse*, StatusDone) const;

  // --- jobs, for operators (admin_calls.cc) ---
  WaitingCall ListJobs(const Caller&, v1::ListJobsRequest&, Millis, v1::ListJobsResponse*, StatusDone) const;
  WaitingCall GetJob(const Caller&, v1::GetJobRequest&, Millis, v1::GetJobResponse*, StatusDone) const;
  WaitingCall DeleteJob(const Caller&, v1::DeleteJobRequest&, Millis, v1::DeleteJobResponse*, StatusDone) const;
  WaitingCall CreateJob(const Caller&, v1::CreateJobRequest&, Millis, v1::CreateJobResponse*, StatusDone) const;
  WaitingCall CloseJob(const Caller&, v1::CloseJobRequest&, Millis, v1::CloseJobResponse*, StatusDone) const;

 private:
  // The preamble of a call within a generation: its request's checks, then its job, which must exist.
  template <typename Request>
  absl::StatusOr<std::shared_ptr<Job>> Checked(const Request& req) const {
    if (absl::Status s = CheckRequest(req); !s.ok()) return s;
    return ExistingJob(req.job_id());
  }
  // `done` with the job's status, once `fill` wrote its value into the response.
  template <typename T, typename Fill>
  static Done<T> Filling(StatusDone done, Fill fill) {
    return [done = std::move(done), fill = std::move(fill)](absl::StatusOr<T> value) {
      if (value.ok()) fill(*std::move(value));
      done(value.status());
    };
  }

  JobRegistry* const registry_;
  const JobOptions options_;
};

// NOT_FOUND naming `job_id`.
absl::Status NoSuchJobError(const std::string& job_id);

}  // namespace tpcoord

#endif  // TPCOORD_COORDINATOR_RPC_JOB_CALLS_H_
