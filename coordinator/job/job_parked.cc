// Parked calls: parking, cancelling, expiring; and each kind's behaviour (what it waits for, what its timeout
// says, how it leaves the generation) side by side at the bottom.
#include "coordinator/job/job.h"

#include <algorithm>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "common/deepspeed_error.h"
#include "common/identifiers.h"
#include "coordinator/job/job_internal.h"

namespace tpcoord {

using job_internal::Seconds;

absl::Status Job::CheckPark() const { return parked_.CheckRoom(); }

void Job::Park(uint64_t call, ParkedCall parked, Millis wait, Completions& done) {
  if (stopping_) {  // a call decided before the coordinator began to stop, applied after
    FailParkedCall(parked, WithJobContext(id_, absl::UnavailableError("the coordinator is shutting down; retry")),
                   done);
    return;
  }
  std::weak_ptr<Job> weak = weak_from_this();
  parked_.Park(call, std::move(parked), wait, [weak, call] {
    if (auto job = weak.lock()) job->Expire(call);
  });
}

void Job::Cancel(uint64_t call) {
  EndParked(call, [this](const Parked&) {
    return WithJobContext(id_, absl::CancelledError("the client cancelled the call"));
  });
}

void Job::Expire(uint64_t call) {
  EndParked(call, [this](const Parked& parked) {
    mu_.AssertHeld();
    const std::string waited = Seconds(parked.wait);
    const std::string what = std::visit(
        [&](const auto& p) {
          mu_.AssertHeld();
          return TimedOut(p, waited, Missing(p).ToString());
        },
        parked.call);
    return WithJobContext(id_, absl::DeadlineExceededError(what));
  });
}

void Job::EndParked(uint64_t call, std::function<absl::Status(const Parked&)> why) {
  // Claims nothing: it reads nothing when it is decided, and its effect is applied in order.
  EnqueueInternal([this, call, why = std::move(why)](Batch& batch) {
    if (!batch.ClaimNothing()) return Decision::Wait();
    return Decision::Apply([this, call, why](Completions& c) {
      mu_.AssertHeld();
      std::optional<Parked> parked = parked_.Take(call);
      if (!parked) return;
      const absl::Status status = why(*parked);  // before Detach: it may name who is missing
      std::visit(
          [&](const auto& p) {
            mu_.AssertHeld();
            Detach(call, p);
          },
          parked->call);
      FailParkedCall(parked->call, status, c);
    });
  });
}

void Job::EnqueueInternal(Decide decide) {
  Enqueue(std::move(decide), [](absl::Status, Completions&) {});  // nobody to answer: its effect is all there is
}

void Job::FailAllParked(const absl::Status& status, Completions& done) {
  for (Parked& p : parked_.TakeAll()) FailParkedCall(p.call, status, done);
}

// --- each kind of parked call, side by side: what it waits for, what its timeout says, how it leaves ------

// Join: the world completing.
Shortlist Job::Missing(const JoinCall&) const { return MissingForJoin(); }

std::string Job::TimedOut(const JoinCall&, const std::string& waited, const std::string& missing) const {
  return absl::StrCat("Join timed out after ", waited, " in generation ", header_.generation, ": ",
                      gen_->members.size(), " of ", header_.world_size, " workers joined; missing: ", missing);
}

// A worker that stops waiting leaves the joining world.
void Job::Detach(uint64_t call, const JoinCall& p) {
  Generation& g = *gen_;
  auto it = g.by_worker.find(p.worker_id);
  if (header_.phase != JobPhase::kJoining || it == g.by_worker.end() || g.members[it->second].join_call != call) {
    return;
  }
  g.members.erase(g.members.begin() + static_cast<long>(it->second));
  g.IndexMembers();
}

// GetUniqueId: every root of its groups publishing.
Shortlist Job::Missing(const UniqueIdsCall& p) const {
  const Generation& g = *gen_;
  Shortlist missing;
  for (const GroupId& group : p.groups) {
    const bool one_root = g.mesh.UniqueIdRoots(group) == 1;
    for (const UniqueIdSlot& slot : g.ids.Missing(g.mesh, group)) {
      missing.Add([&, slot] {
        mu_.AssertHeld();
        return absl::StrCat("the unique id of ", SlotName(slot), one_root ? " from its leader " : " from ",
                            DescribeRank(g.mesh.RootRank(slot)));
      });
    }
  }
  return missing;
}

std::string Job::TimedOut(const UniqueIdsCall&, const std::string& waited, const std::string& missing) const {
  return absl::StrCat("GetUniqueId timed out after ", waited, " waiting for ", missing);
}

void Job::Detach(uint64_t call, const UniqueIdsCall& p) {
  for (const GroupId& group : p.groups) gen_->ids.watchers().Unwatch(call, group);
}

// StoreGet: its key being set.
Shortlist Job::Missing(const StoreGetCall& p) const {
  Shortlist missing;
  missing.Add([&] { return QuoteForError(p.key); });
  return missing;
}

std::string Job::TimedOut(const StoreGetCall&, const std::string& waited, const std::string& missing) const {
  return absl::StrCat("store wait timed out after ", waited, "; keys never set: ", missing);
}

void Job::Detach(uint64_t call, const StoreGetCall& p) { gen_->kv.watchers().Unwatch(call, p.key); }

// StoreWait: every one of its keys being set.
Shortlist Job::Missing(const StoreWaitCall& p) const {
  Shortlist missing;
  for (const std::string& key : p.keys) {
    if (!gen_->kv.Contains(key)) missing.Add([&] { return QuoteForError(key); });
  }
  return missing;
}

std::string Job::TimedOut(const StoreWaitCall&, const std::string& waited, const std::string& missing) const {
  return absl::StrCat("store wait timed out after ", waited, "; keys never set: ", missing);
}

void Job::Detach(uint64_t call, const StoreWaitCall& p) {
  for (const std::string& key : p.keys) gen_->kv.watchers().Unwatch(call, key);
}

// Barrier: every rank arriving.
Shortlist Job::Missing(const BarrierCall& p) const {
  Shortlist missing;
  for (int r : gen_->barriers.Missing(p.name, header_.world_size)) {
    missing.Add([&] {
      mu_.AssertHeld();
      return DescribeRank(r);
    });
  }
  return missing;
}

std::string Job::TimedOut(const BarrierCall& p, const std::string& waited, const std::string& missing) const {
  return absl::StrCat("barrier \"", p.name, "\" timed out after ", waited, "; ranks that never arrived: ", missing);
}

void Job::Detach(uint64_t call, const BarrierCall& p) { gen_->barriers.Depart(p.name, p.rank, call); }

}  // namespace tpcoord
