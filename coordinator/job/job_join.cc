// Join and the generation lifecycle: a Join decided into a JoinPlan and applied once durable, seating a
// complete world, shrinking to whole TP groups, starting, ending and completing generations.
#include "coordinator/job/job.h"

#include <algorithm>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "common/deepspeed_error.h"
#include "common/identifiers.h"
#include "common/rank_assignment.h"
#include "common/secrets.h"
#include "coordinator/job/job_internal.h"

namespace tpcoord {

using job_internal::GenerationEnded;
using job_internal::Seconds;

// What a Join decided: a value (as LevelDB's VersionEdit), applied once the writes it needs are durable.
struct Job::JoinPlan {
  Member joiner;                        // this worker's seat; with a complete world, its rank too
  std::optional<Assignment> retry;      // a retried Join of the running generation: the same answer again
  JobHeader next;                       // the header the Join leaves
  bool fresh = false;                   // it opens the next generation
  std::optional<JobHeader> superseded;  // the running generation it ends
  bool sets_range = false;              // the generation's first Join: it sets the world-size range
  int min_world_size = 0;
  Millis rejoin_timeout{0};
  uint64_t replaced = 0;      // the same worker's earlier Join, still parked
  bool complete = false;      // it completes the world
  std::vector<Member> world;  // by rank, when complete
  absl::Status start_error;   // a complete world that cannot start, and why
};

uint64_t Job::Join(const Caller& caller, JoinArgs args, Millis wait, Done<Assignment> on_done) {
  const uint64_t call = next_call_.fetch_add(1);
  Mutate(on_done, [this, caller, args = std::move(args), call, wait, on_done](Batch& batch) -> Decision {
    mu_.AssertHeld();
    if (!batch.ClaimJob()) return Decision::Wait();
    absl::StatusOr<std::shared_ptr<JoinPlan>> plan = PlanJoin(batch, caller, args);
    if (!plan.ok()) return Rejected(plan.status());
    if ((*plan)->retry) {
      return Decision::Apply([on_done, a = *(*plan)->retry](Completions& c) { c.Answer<Assignment>(on_done, a); });
    }
    return Decision::Apply([this, plan = *std::move(plan), call, wait, on_done](Completions& c) {
      mu_.AssertHeld();
      plan->joiner.join_call = call;
      if (!plan->complete) {  // park until the world is complete
        ApplyJoin(*plan, c);
        Park(call, JoinCall{plan->joiner.worker_id, on_done}, wait, c);
        ScheduleShrink();
        return;
      }
      ApplyJoin(*plan, c);
      if (!plan->start_error.ok()) {
        c.Answer<Assignment>(on_done, WithContext(plan->start_error));
        return;
      }
      StartRunning(plan->next, std::move(plan->world), plan->joiner.worker_id, on_done, c);
    });
  });
  return call;
}

Assignment Job::AssignmentOf(int rank) const {
  return Assignment{header_.generation, rank, gen_->mesh, options_.lease / 4, options_.lease};
}

absl::StatusOr<std::shared_ptr<Job::JoinPlan>> Job::PlanJoin(Batch& batch, const Caller& caller, const JoinArgs& args) {
  if (absl::Status s = CheckServing(); !s.ok()) return s;
  if (absl::Status s = CheckCreator(caller); !s.ok()) return s;
  if (caller.member_key_sha256.empty()) {
    return absl::UnauthenticatedError(
        absl::StrCat("Join must carry the worker's member key (metadata ", kMemberKeyMetadata,
                     "): a random secret of the worker's own, which every call it makes as a member carries"));
  }
  int tp_size = args.tp_size;
  if (header_.tp_init.has_value()) {
    if (tp_size != 0 && tp_size != header_.tp_init->tp_size) {
      return absl::FailedPreconditionError(absl::StrCat("Join asks for tp_size ", tp_size,
                                                        " but tp_model_init recorded tp_size ",
                                                        header_.tp_init->tp_size, " for this job"));
    }
    tp_size = header_.tp_init->tp_size;
  } else if (tp_size == 0) {
    tp_size = 1;
  }
  absl::StatusOr<Mesh> mesh = Mesh::Create(args.world_size, tp_size);
  if (!mesh.ok()) return mesh.status();
  if (args.requested_rank && (*args.requested_rank < 0 || *args.requested_rank >= args.world_size)) {
    return absl::InvalidArgumentError(
        absl::StrCat("requested_rank ", *args.requested_rank, " is out of range for world_size ", args.world_size));
  }
  auto plan = std::make_shared<JoinPlan>();
  plan->joiner = Member{args.worker_id, args.host, args.requested_rank, caller.member_key_sha256};
  plan->min_world_size = args.min_world_size > 0 ? std::min(args.min_world_size, args.world_size) : args.world_size;
  plan->rejoin_timeout = args.rejoin_timeout;
  const Generation& g = *gen_;
  // A worker_id that holds a seat (running, or joining) is the same worker only if it proves it with the
  // seat's member key: a retry after a lost answer or a restart. Anyone else is refused, not seated.
  if (header_.phase == JobPhase::kRunning || header_.phase == JobPhase::kJoining) {
    if (auto it = g.by_worker.find(args.worker_id); it != g.by_worker.end()) {
      if (!ConstantTimeEquals(g.members[it->second].key_sha256, caller.member_key_sha256)) {
        return absl::PermissionDeniedError(
            absl::StrCat("worker ", args.worker_id, " already holds a seat in generation ", header_.generation,
                         " under another member key; a Join is that worker's only with the key it joined with"));
      }
      if (header_.phase == JobPhase::kRunning) {  // a retry: the same answer
        plan->retry = AssignmentOf(g.members[it->second].rank);
        return plan;
      }
    }
  }

  // A closed job starts no new generation (Close); a retry of a running seat, above, still gets its answer.
  if (header_.closed) return job_internal::JobClosedError(id_, header_);

  // This Join opens the next generation unless one is joining; a running one ends first.
  plan->fresh = header_.phase != JobPhase::kJoining;
  if (header_.phase == JobPhase::kRunning) {
    plan->superseded = NextHeader();
    plan->superseded->phase = JobPhase::kFailed;
    plan->superseded->end_cause = EndCause::kWorkerRejoined;
    plan->superseded->end_reason = absl::StrCat("worker ", args.worker_id, " (host ", args.host,
                                                ") joined while generation ", header_.generation, " was running");
  }
  JobHeader& next = plan->next;
  next = NextHeader();
  if (!born_) next.token_sha256 = caller.token_sha256;  // this Join creates the job
  if (plan->fresh) {
    next.generation = header_.generation + 1;
    next.phase = JobPhase::kJoining;
    next.world_size = args.world_size;
    next.tp_size = tp_size;
    next.end_reason.clear();
    next.end_fatal = false;
  } else {
    if (args.world_size != header_.world_size || tp_size != header_.tp_size) {
      return absl::FailedPreconditionError(
          absl::StrCat("Join asks for world_size ", args.world_size, " and tp_size ", tp_size, ", but the ",
                       g.members.size(), " worker(s) already in generation ", header_.generation,
                       " joined with world_size ", header_.world_size, " and tp_size ", header_.tp_size));
    }
    // (A joining generation restored after a restart has no members yet: its first Join sets the range.)
    if (!g.members.empty() && (plan->min_world_size != g.min_world_size || args.rejoin_timeout != g.rejoin_timeout)) {
      return absl::FailedPreconditionError(absl::StrCat(
          "Join asks for a world of ", plan->min_world_size, " to ", args.world_size, " workers after ",
          args.rejoin_timeout.count(), " ms, but the worker(s) already in generation ", header_.generation,
          " joined for ", g.min_world_size, " to ", header_.world_size, " after ", g.rejoin_timeout.count(), " ms"));
    }
    if (args.requested_rank) {
      for (const Member& m : g.members) {
        if (m.requested_rank == args.requested_rank && m.worker_id != args.worker_id) {
          return absl::AlreadyExistsError(absl::StrCat("requested_rank ", *args.requested_rank,
                                                       " is already held by worker ", m.worker_id, " (host ", m.host,
                                                       ") in generation ", header_.generation));
        }
      }
    }
  }
  plan->sets_range = plan->fresh || g.members.empty();

  // The joining world with this worker in it (a retried Join replaces the worker's earlier one). Only the
  // Join that completes the world copies it: ten thousand Joins cost O(world), not O(world^2).
  size_t joined = 1;
  auto same = g.by_worker.end();
  if (!plan->fresh) {
    same = g.by_worker.find(args.worker_id);
    if (same != g.by_worker.end()) plan->replaced = g.members[same->second].join_call;
    joined = g.members.size() + (same == g.by_worker.end() ? 1 : 0);
  }
  plan->complete = static_cast<int>(joined) == args.world_size;
  if (!plan->complete) {
    if (absl::Status s = CheckPark(); !s.ok()) return s;
  } else {
    std::vector<Member> arrived = plan->fresh ? std::vector<Member>() : g.members;
    if (same != g.by_worker.end()) {
      arrived[same->second] = plan->joiner;
    } else {
      arrived.push_back(plan->joiner);
    }
    plan->world = SeatWorld(std::move(arrived), tp_size);
    // The recorded tp_groups must be TP groups of this mesh: the groups are what tpcoord shards with, so a
    // recorded group is honoured or rejected, never silently replaced (DeepSpeed gap G4).
    if (header_.tp_init.has_value() && header_.tp_init->has_tp_group) {
      for (const RankList& group : header_.tp_init->tp_groups) {
        if (mesh->TpGroupIndex(group) >= 0) continue;
        plan->start_error = absl::FailedPreconditionError(
            absl::StrCat("the recorded tp_group ", RankListString(group), " is not a TP group of the mesh (world_size ",
                         args.world_size, ", tp_size ", tp_size, "), whose TP groups are the contiguous blocks ",
                         RankListString(mesh->Ranks({GroupKind::kTp, 0})), ", ...; record the groups of that layout"));
        break;
      }
    }
    next.phase = plan->start_error.ok() ? JobPhase::kRunning : JobPhase::kFailed;
    next.end_reason = std::string(plan->start_error.message());
    next.end_cause = plan->start_error.ok() ? EndCause::kNone : EndCause::kStartFailed;
  }

  if (plan->fresh) batch.writes.push_back(job_storage::ClearGeneration(id_));
  if (plan->superseded) StampAndRecord(batch, *plan->superseded);  // its header is `next`'s
  if (plan->fresh || plan->complete) WriteHeader(batch, next);
  if (plan->complete && plan->start_error.ok()) WriteWorld(batch, plan->world);
  return plan;
}

void Job::ApplyJoin(JoinPlan& plan, Completions& c) {
  if (plan.superseded) EndGeneration(*plan.superseded, c);
  if (plan.fresh) StartGeneration(plan.next, c);
  if (plan.sets_range) {
    gen_->min_world_size = plan.min_world_size;
    gen_->rejoin_timeout = plan.rejoin_timeout;
    gen_->joining_since = Clock::now();
  }
  if (plan.replaced != 0) {
    if (std::optional<Parked> old = parked_.Take(plan.replaced)) {
      FailParkedCall(old->call,
                     WithJobContext(id_, absl::CancelledError("replaced by a newer Join from the same worker_id")), c);
    }
  }
  Generation& g = *gen_;
  if (!plan.complete) {  // a seat in the joining world
    auto it = g.by_worker.find(plan.joiner.worker_id);
    if (it == g.by_worker.end()) {
      g.by_worker.emplace(plan.joiner.worker_id, g.members.size());
      g.members.push_back(plan.joiner);
    } else {
      g.members[it->second] = plan.joiner;
    }
    if (!plan.fresh) ApplyHeader(plan.next);
    return;
  }
  if (!plan.start_error.ok()) {  // the world is complete but cannot start: everyone waiting learns why
    ApplyHeader(plan.next);
    const absl::Status status = WithContext(plan.start_error);
    LogEvent("start_failed", absl::StrCat("failed to start: ", plan.start_error.message()));
    for (const Member& m : g.members) {
      if (std::optional<Parked> p = parked_.Take(m.join_call)) FailParkedCall(p->call, status, c);
    }
  }
}

std::vector<Job::Member> Job::SeatWorld(std::vector<Member> arrived, int tp_size) {
  std::vector<RankRequest> requests;
  for (const Member& m : arrived) requests.push_back({m.host, m.requested_rank});
  const std::vector<int> ranks = AssignRanks(requests, tp_size);
  std::vector<Member> world(arrived.size());
  for (size_t i = 0; i < arrived.size(); ++i) {
    arrived[i].rank = ranks[i];
    world[ranks[i]] = std::move(arrived[i]);
  }
  return world;
}

void Job::WriteWorld(Batch& batch, const std::vector<Member>& world) const {
  std::vector<StoredMember> stored;
  for (const Member& m : world) stored.push_back({m.worker_id, m.host, m.key_sha256});
  job_storage::PutMembers(id_, stored, &batch.writes);
}

void Job::StartRunning(const JobHeader& next, std::vector<Member> world, const std::string& joiner,
                       Done<Assignment> joiner_done, Completions& c) {
  Generation& g = *gen_;
  if (g.shrink_timer) context_->timers->Cancel(g.shrink_timer);
  g.shrink_timer = 0;
  // The world is complete: every member learns its rank.
  std::vector<uint64_t> waiting;
  for (const Member& m : world) waiting.push_back(m.join_call);
  g.members = std::move(world);
  for (Member& m : g.members) m.join_call = 0;
  g.IndexMembers();
  g.mesh = *Mesh::Create(next.world_size, next.tp_size);
  ApplyHeader(next);
  const Clock::time_point now = Clock::now();
  g.leases.Start(header_.world_size, now);
  EndPhase("join");
  BeginPhase("run");
  LogEvent("running", absl::StrCat("running: ", header_.world_size, " workers = tp ", g.mesh.tp_size(), " x dp ",
                                   g.mesh.dp_size()));
  for (size_t rank = 0; rank < waiting.size(); ++rank) {
    if (!joiner.empty() && g.members[rank].worker_id == joiner) {
      c.Answer<Assignment>(joiner_done, AssignmentOf(static_cast<int>(rank)));
    } else if (std::optional<Parked> p = parked_.Take(waiting[rank])) {
      c.Answer<Assignment>(std::move(std::get<JoinCall>(p->call).done), AssignmentOf(static_cast<int>(rank)));
    }
  }
  ScheduleLeaseCheck(now + options_.lease);
}

void Job::ScheduleShrink() {
  Generation& g = *gen_;
  const int whole_groups = static_cast<int>(g.members.size()) / header_.tp_size * header_.tp_size;
  if (g.shrink_timer || g.min_world_size >= header_.world_size || whole_groups < g.min_world_size) return;
  std::weak_ptr<Job> weak = weak_from_this();
  g.shrink_timer =
      context_->timers->Schedule(g.joining_since + g.rejoin_timeout, [weak, generation = header_.generation] {
        if (auto job = weak.lock()) job->Shrink(generation);
      });
}

void Job::Shrink(uint64_t generation) {
  EnqueueInternal([this, generation](Batch& batch) -> Decision {
    mu_.AssertHeld();
    if (!batch.ClaimJob()) return Decision::Wait();
    auto nothing = [this, generation](Completions&) {
      mu_.AssertHeld();
      if (header_.generation == generation) gen_->shrink_timer = 0;
    };
    if (stopping_ || header_.generation != generation || header_.phase != JobPhase::kJoining) {
      return Decision::Apply(nothing);
    }
    const Generation& g = *gen_;
    const int tp_size = header_.tp_size;
    const int world_size = static_cast<int>(g.members.size()) / tp_size * tp_size;
    // Recorded TP groups name ranks of the full world; a smaller one would not honour them.
    if (world_size < g.min_world_size || world_size == 0 ||
        (header_.tp_init.has_value() && header_.tp_init->has_tp_group)) {
      return Decision::Apply(nothing);
    }
    // Requested ranks keep their order (arrival order for the rest) and are renumbered from 0.
    std::vector<size_t> order(g.members.size());
    for (size_t i = 0; i < order.size(); ++i) order[i] = i;
    std::stable_sort(order.begin(), order.end(), [&g](size_t a, size_t b) {
      return g.members[a].requested_rank.value_or(INT32_MAX) < g.members[b].requested_rank.value_or(INT32_MAX);
    });
    std::vector<Member> arrived;
    for (int i = 0; i < world_size; ++i) {
      arrived.push_back(g.members[order[i]]);
      if (arrived.back().requested_rank) arrived.back().requested_rank = i;
    }
    std::vector<uint64_t> left_over;
    for (size_t i = world_size; i < order.size(); ++i) left_over.push_back(g.members[order[i]].join_call);
    std::vector<Member> world = SeatWorld(std::move(arrived), tp_size);
    JobHeader next = NextHeader();
    next.phase = JobPhase::kRunning;
    next.world_size = world_size;
    next.end_reason.clear();
    next.end_fatal = false;
    WriteHeader(batch, next);
    WriteWorld(batch, world);
    return Decision::Apply([this, next, world = std::move(world), left_over, nothing](Completions& c) mutable {
      mu_.AssertHeld();
      nothing(c);
      const int wanted = header_.world_size;
      const Mesh mesh = *Mesh::Create(next.world_size, next.tp_size);
      LogEvent("shrinking", absl::StrCat("shrinking: ", next.world_size, " of ", wanted, " workers joined within ",
                                         Seconds(gen_->rejoin_timeout), "; starting with tp ", mesh.tp_size(), " x dp ",
                                         mesh.dp_size()));
      for (uint64_t call : left_over) {
        if (std::optional<Parked> p = parked_.Take(call)) {
          FailParkedCall(p->call,
                         WithJobContext(id_, absl::FailedPreconditionError(absl::StrCat(
                                                 "generation ", next.generation, " started with ", next.world_size,
                                                 " of ", wanted, " workers (whole TP groups of ", next.tp_size,
                                                 ") without this one; join again when it ends"))),
                         c);
        }
      }
      StartRunning(next, std::move(world), "", nullptr, c);
    });
  });
}

void Job::StartGeneration(const JobHeader& header, Completions& done) {
  // Calls still parked in the generation that is over (a store wait after completion, say) end with it.
  FailAllParked(WithJobContext(id_, absl::FailedPreconditionError(absl::StrCat("generation ", header_.generation,
                                                                               " is over; the job is in generation ",
                                                                               header.generation, ": rejoin"))),
                done);
  previous_members_.clear();
  for (const Member& m : gen_->members) {
    if (m.rank >= 0) previous_members_.push_back({m.rank, m.host, m.worker_id});
  }
  if (gen_->lease_timer) context_->timers->Cancel(gen_->lease_timer);
  if (gen_->shrink_timer) context_->timers->Cancel(gen_->shrink_timer);
  gen_ = std::make_unique<Generation>(*context_, *Mesh::Create(header.world_size, header.tp_size));
  gen_->joining_since = Clock::now();
  ApplyHeader(header);
  BeginPhase("join");
  LogEvent("joining", absl::StrCat("joining, world_size ", header.world_size, ", tp_size ", header.tp_size));
}

void Job::EndGeneration(const JobHeader& header, Completions& done) {
  ApplyHeader(header);
  EndPhase("run");
  LogEvent("ended", absl::StrCat("ended: ", header.end_reason), header.end_rank);
  if (gen_->lease_timer) context_->timers->Cancel(gen_->lease_timer);
  gen_->lease_timer = 0;
  const absl::Status ended = WithJobContext(id_, GenerationEnded(header));
  FailAllParked(ended, done);
  EndSessions(ended, done);
}

void Job::MaybeComplete() {
  if (header_.phase != JobPhase::kRunning || !gen_->leases.AllFinished()) return;
  // It belongs with the change just applied, before any later one. A failed write is retried by the next
  // restart's MaybeComplete.
  commits_.PushFront(
      [this, generation = header_.generation](Batch& batch) -> Decision {
        mu_.AssertHeld();
        if (!batch.ClaimJob()) return Decision::Wait();
        if (header_.generation != generation || header_.phase != JobPhase::kRunning)
          return Decision::Apply([](Completions&) {});
        JobHeader next = NextHeader();
        next.phase = JobPhase::kCompleted;
        WriteHeader(batch, next);
        return Decision::Apply([this, next](Completions&) {
          mu_.AssertHeld();
          Complete(next);
        });
      },
      [](absl::Status, Completions&) {});
}

void Job::Complete(const JobHeader& header) {
  ApplyHeader(header);
  EndPhase("run");
  LogEvent("completed", "completed: every worker finished");
  if (gen_->lease_timer) context_->timers->Cancel(gen_->lease_timer);
  gen_->lease_timer = 0;
}

}  // namespace tpcoord
