// Closing a job, as torchrun's RendezvousHandler.set_closed(): once closed, no new generation starts in it
// (CloseJobRequest in coordinator.proto). The closed state is part of the job's header, so it is as durable
// as the rest of it (SQLite, etcd) and is forgotten only with the job.
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "coordinator/job/job.h"
#include "coordinator/job/job_internal.h"

namespace tpcoord {

using job_internal::JobClosedError;

void Job::Close(const Caller& caller, std::string reason, StatusDone on_done) {
  Mutate(on_done, [this, caller, reason = std::move(reason), on_done](Batch& batch) -> Decision {
    mu_.AssertHeld();
    if (!batch.ClaimJob()) return Decision::Wait();
    if (absl::Status s = CheckServing(); !s.ok()) return Rejected(s);
    if (absl::Status s = CheckCreator(caller); !s.ok()) return Rejected(s);
    if (born_ && header_.closed) {  // closed already: the first reason stays
      return Decision::Apply([on_done](Completions& c) { c.Answer(on_done, absl::OkStatus()); });
    }
    JobHeader next = NextHeader();
    if (!born_) next.token_sha256 = caller.token_sha256;  // this call creates the job
    next.closed = true;
    next.closed_reason = reason;
    // A generation still joining will never start: it ends here, and its waiting Joins learn why.
    const bool ends_joining = born_ && header_.phase == JobPhase::kJoining;
    if (ends_joining) {
      next.phase = JobPhase::kFailed;
      next.end_cause = EndCause::kJobClosed;
      next.end_rank = -1;
      next.end_reason = absl::StrCat("the job was closed", reason.empty() ? "" : ": ", reason);
      next.end_fatal = true;
    }
    WriteHeader(batch, next);
    return Decision::Apply([this, next, ends_joining, on_done](Completions& c) {
      mu_.AssertHeld();
      ApplyHeader(next);
      LogEvent("closed", absl::StrCat("closed", next.closed_reason.empty() ? "" : ": ", next.closed_reason));
      if (ends_joining) {
        Generation& g = *gen_;
        if (g.shrink_timer) context_->timers->Cancel(g.shrink_timer);
        g.shrink_timer = 0;
        EndPhase("join");
        FailAllParked(JobClosedError(id_, header_), c);
      }
      c.Answer(on_done, absl::OkStatus());
    });
  });
}

}  // namespace tpcoord
