// Membership while a generation runs: barriers, heartbeats and leases, member sessions, leaving.
#include "coordinator/job/job.h"

#include <algorithm>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/deepspeed_error.h"
#include "coordinator/job/job_internal.h"

namespace tpcoord {

using job_internal::BarrierItem;
using job_internal::MemberItem;
using job_internal::Seconds;

uint64_t Job::Barrier(const Caller& caller, uint64_t generation, int rank, std::string name, uint64_t round,
                      Millis wait, StatusDone on_done) {
  const uint64_t call = next_call_.fetch_add(1);
  Mutate(
      on_done,
      [this, caller, generation, rank, name = std::move(name), round, wait, call, on_done](Batch& batch) -> Decision {
        mu_.AssertHeld();
        if (!batch.Claim(BarrierItem(name))) return Decision::Wait();
        if (absl::Status s = CheckServing(); !s.ok()) return Rejected(s);
        if (absl::Status s = CheckMember(caller, generation, rank); !s.ok()) return Rejected(s);
        const BarrierSet& barriers = gen_->barriers;
        const uint64_t completed = barriers.completed(name);
        if (round != 0 && round <= completed) {  // a retry whose answer was lost: that round is past
          return Decision::Apply([on_done](Completions& c) { c.Answer(on_done, absl::OkStatus()); });
        }
        if (round > completed + 1) {
          return Rejected(absl::FailedPreconditionError(
              absl::StrCat("rank ", rank, " asks for round ", round, " of barrier \"", name, "\", which has completed ",
                           completed, " round(s); the next is ", completed + 1)));
        }
        if (absl::Status s = gen_->barriers.CheckRoom(name); !s.ok()) return Rejected(s);
        const bool arrived_before = barriers.CallOf(name, rank) != 0;
        const bool last = barriers.arrived(name) + (arrived_before ? 0 : 1) == header_.world_size;
        if (!last) {
          if (absl::Status s = CheckPark(); !s.ok()) return Rejected(s);
          return Decision::Apply([this, name, rank, call, wait, on_done](Completions& c) {
            mu_.AssertHeld();
            if (gen_->barriers.arrived(name) == 0) BeginPhase("barrier:" + name);
            const uint64_t replaced = gen_->barriers.Arrive(name, header_.world_size, rank, call);
            if (std::optional<Parked> old = parked_.Take(replaced)) {
              FailParkedCall(
                  old->call,
                  WithJobContext(id_, absl::CancelledError("replaced by a newer Barrier call from the same rank")), c);
            }
            Park(call, BarrierCall{rank, name, on_done}, wait, c);
          });
        }
        batch.writes.push_back(job_storage::PutBarrierRounds(id_, name, completed + 1));
        return Decision::Apply([this, name, rank, on_done](Completions& c) {
          mu_.AssertHeld();
          if (gen_->barriers.arrived(name) == 0) BeginPhase("barrier:" + name);
          const uint64_t replaced = gen_->barriers.Arrive(name, header_.world_size, rank, 0);
          if (std::optional<Parked> old = parked_.Take(replaced)) {
            FailParkedCall(
                old->call,
                WithJobContext(id_, absl::CancelledError("replaced by a newer Barrier call from the same rank")), c);
          }
          for (uint64_t call : gen_->barriers.Complete(name)) {
            if (std::optional<Parked> p = parked_.Take(call))
              c.Answer(std::move(std::get<BarrierCall>(p->call).done), absl::OkStatus());
          }
          EndPhase("barrier:" + name);
          c.Answer(on_done, absl::OkStatus());
        });
      });
  return call;
}

absl::StatusOr<Millis> Job::Heartbeat(const Caller& caller, uint64_t generation, int rank,
                                      const TrainingProgress* progress) {
  MutexLock lock(&mu_);
  absl::Status status = CheckServing();
  if (status.ok()) status = CheckMember(caller, generation, rank);
  if (!status.ok()) return WithContext(status);
  gen_->leases.Renew(rank, Clock::now());
  if (progress) {
    if (absl::Status s = CheckTrainingProgress(*progress); !s.ok()) return WithJobContext(id_, s);
    progress_.Add(*progress);
  }
  return options_.lease;
}

absl::StatusOr<Millis> Job::OpenSession(const Caller& caller, uint64_t generation, int rank, uint64_t session,
                                        SessionEnd on_end) {
  MutexLock lock(&mu_);
  absl::Status status = CheckServing();
  if (status.ok()) status = CheckMember(caller, generation, rank);
  if (!status.ok()) return WithContext(status);
  gen_->leases.Renew(rank, Clock::now());
  gen_->sessions[rank] = {session, std::move(on_end)};
  return options_.lease;
}

void Job::CloseSession(uint64_t generation, int rank, uint64_t session) {
  CloseSessions(generation, {rank}, session, /*several=*/false, "");
}

void Job::CloseSessions(uint64_t generation, std::vector<int> ranks, uint64_t session, bool several,
                        std::string gone) {
  EnqueueInternal([this, generation, ranks = std::move(ranks), session, several,
                   gone = std::move(gone)](Batch& batch) -> Decision {
    mu_.AssertHeld();
    if (!batch.ClaimJob()) return Decision::Wait();
    std::vector<int> current;  // the ranks whose session this still is
    for (int rank : ranks) {
      if (header_.generation == generation && gen_->sessions.count(rank) > 0 && gen_->sessions.at(rank).id == session) {
        current.push_back(rank);
      }
    }
    auto forget = [this, current](Completions&) {
      mu_.AssertHeld();
      for (int rank : current) gen_->sessions.erase(rank);
    };
    std::vector<int> unfinished;
    if (!stopping_ && header_.phase == JobPhase::kRunning) {
      for (int rank : current) {
        if (!gen_->leases.finished(rank)) unfinished.push_back(rank);
      }
    }
    if (unfinished.empty()) return Decision::Apply(forget);
    const Member& m = gen_->members[unfinished.front()];
    JobHeader next = NextHeader();
    next.phase = JobPhase::kFailed;
    if (several) {
      std::vector<std::string> names;
      for (int rank : unfinished) names.push_back(absl::StrCat(rank));
      next.end_reason = absl::StrCat("host ", m.host, " is gone with rank", unfinished.size() > 1 ? "s " : " ",
                                     absl::StrJoin(names, ", "),
                                     ": its agent's session closed before they finished (the agent or its host "
                                     "died, or it lost its connection)");
    } else {
      next.end_reason = absl::StrCat("rank ", unfinished.front(), " (host ", m.host, ", worker ", m.worker_id,
                                     ") is gone: ",
                                     gone.empty() ? "its session closed before it finished (the process died or "
                                                    "lost its connection)"
                                                  : gone);
    }
    next.end_cause = EndCause::kWorkerGone;
    next.end_rank = unfinished.front();
    WriteHeader(batch, next);
    return Decision::Apply([this, next, forget](Completions& c) {
      mu_.AssertHeld();
      forget(c);
      EndGeneration(next, c);
    });
  });
}

void Job::Leave(const Caller& caller, uint64_t generation, int rank, bool finished, std::string reason,
                StatusDone on_done, bool fatal) {
  Mutate(
      on_done,
      [this, caller, generation, rank, finished, reason = std::move(reason), on_done, fatal](Batch& batch) -> Decision {
        mu_.AssertHeld();
        // Finishing touches only the member, unless it is the last one (which completes the generation in the
        // same write); leaving early ends the generation.
        const bool last = finished && header_.phase == JobPhase::kRunning && CheckRank(rank).ok() &&
                          gen_->leases.unfinished() == 1 && !gen_->leases.finished(rank);
        if (!(finished && !last ? batch.Claim(MemberItem(rank)) : batch.ClaimJob())) return Decision::Wait();
        if (absl::Status s = CheckServing(); !s.ok()) return Rejected(s);
        if (absl::Status s = CheckMember(caller, generation, rank, /*allow_completed=*/finished); !s.ok()) {
          return Rejected(s);
        }
        const Member& m = gen_->members[rank];
        if (finished) {
          if (gen_->leases.finished(rank)) {  // a retry
            return Decision::Apply([on_done](Completions& c) { c.Answer(on_done, absl::OkStatus()); });
          }
          batch.writes.push_back(job_storage::PutFinished(id_, rank));
          std::optional<JobHeader> completed;
          if (last) {
            completed = NextHeader();
            completed->phase = JobPhase::kCompleted;
            WriteHeader(batch, *completed);
          }
          return Decision::Apply([this, rank, completed, on_done](Completions& c) {
            mu_.AssertHeld();
            gen_->leases.Finish(rank);
            if (completed)
              Complete(*completed);
            else
              MaybeComplete();  // the last ones finished together, in one batch
            c.Answer(on_done, absl::OkStatus());
          });
        }
        JobHeader next = NextHeader();
        next.phase = JobPhase::kFailed;
        next.end_reason = absl::StrCat("rank ", rank, " (host ", m.host, ", worker ", m.worker_id, ") left",
                                       reason.empty() ? "" : ": ", reason);
        next.end_fatal = fatal;
        next.end_cause = EndCause::kWorkerLeft;
        next.end_rank = rank;
        WriteHeader(batch, next);
        return Decision::Apply([this, next, on_done](Completions& c) {
          mu_.AssertHeld();
          EndGeneration(next, c);
          c.Answer(on_done, absl::OkStatus());
        });
      });
}

void Job::EndSessions(const absl::Status& status, Completions& done) {
  for (auto& [rank, session] : gen_->sessions) {
    done.Add([on_end = std::move(session.on_end), status] { on_end(status); });
  }
  gen_->sessions.clear();
}

void Job::ScheduleLeaseCheck(Clock::time_point when) {
  std::weak_ptr<Job> weak = weak_from_this();
  gen_->lease_timer = context_->timers->Schedule(when, [weak] {
    if (auto job = weak.lock()) job->CheckLeases();
  });
}

void Job::CheckLeases() {
  EnqueueInternal([this](Batch& batch) -> Decision {
    mu_.AssertHeld();
    if (!batch.ClaimJob()) return Decision::Wait();
    if (stopping_ || header_.phase != JobPhase::kRunning) return Decision::Apply([](Completions&) {});
    const Generation& g = *gen_;
    const std::vector<int> expired = g.leases.Expired(Clock::now());
    if (expired.empty()) {
      return Decision::Apply([this](Completions&) {
        mu_.AssertHeld();
        ScheduleLeaseCheck(std::min(gen_->leases.NextDeadline(), Clock::now() + options_.lease));
      });
    }
    const Member& first = g.members[expired.front()];
    JobHeader next = NextHeader();
    next.phase = JobPhase::kFailed;
    next.end_reason = absl::StrCat("rank ", first.rank, " (host ", first.host, ", worker ", first.worker_id,
                                   ") missed its heartbeat lease of ", Seconds(options_.lease));
    if (expired.size() > 1) absl::StrAppend(&next.end_reason, ", and ", expired.size() - 1, " more rank(s) with it");
    next.end_cause = EndCause::kLeaseExpired;
    next.end_rank = first.rank;
    WriteHeader(batch, next);
    return Decision::Apply([this, next](Completions& c) {
      mu_.AssertHeld();
      EndGeneration(next, c);
    });
  });
}

}  // namespace tpcoord
