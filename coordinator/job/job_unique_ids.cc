// NCCL unique IDs: publishing a group's roots, and getting (or waiting for) whole arrays.
#include "coordinator/job/job.h"

#include <algorithm>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "coordinator/job/job_internal.h"

namespace tpcoord {

using job_internal::SlotItem;

void Job::PublishUniqueIds(const Caller& caller, uint64_t generation, int rank, UniqueIds ids, StatusDone on_done) {
  Mutate(on_done, [this, caller, generation, rank, ids = std::move(ids), on_done](Batch& batch) -> Decision {
    mu_.AssertHeld();
    for (const auto& [slot, bytes] : ids) {
      if (!batch.Claim(SlotItem(slot))) return Decision::Wait();
    }
    if (absl::Status s = CheckServing(); !s.ok()) return Rejected(s);
    if (absl::Status s = CheckMember(caller, generation, rank); !s.ok()) return Rejected(s);
    const Generation& g = *gen_;
    if (absl::Status s = g.ids.CheckPublish(g.mesh, rank, ids, header_.generation); !s.ok()) return Rejected(s);
    UniqueIds fresh;
    for (const auto& [slot, bytes] : ids) {
      if (!g.ids.Find(slot)) {
        batch.writes.push_back(job_storage::PutUniqueId(id_, slot, bytes));
        fresh.emplace_back(slot, bytes);
      }
    }
    return Decision::Apply([this, fresh = std::move(fresh), on_done](Completions& c) mutable {
      mu_.AssertHeld();
      Generation& g = *gen_;
      if (g.ids.size() == 0 && !fresh.empty()) BeginPhase("unique_ids");
      for (auto& [slot, bytes] : fresh) {
        g.ids.Put(slot, std::move(bytes));
        if (g.ids.Complete(g.mesh, slot.group)) WakeGroup(slot.group, c);
      }
      const Mesh& mesh = g.mesh;
      const int total = mesh.num_groups(GroupKind::kTp) * mesh.UniqueIdRoots({GroupKind::kTp, 0}) +
                        mesh.num_groups(GroupKind::kDp) * mesh.UniqueIdRoots({GroupKind::kDp, 0}) +
                        mesh.UniqueIdRoots({GroupKind::kWorld, 0});
      if (!fresh.empty() && static_cast<int>(g.ids.size()) == total) EndPhase("unique_ids");
      c.Answer(on_done, absl::OkStatus());
    });
  });
}

void Job::WakeGroup(const GroupId& group, Completions& done) {
  Generation& g = *gen_;
  for (uint64_t call : g.ids.watchers().Take(group)) {
    const Parked* parked = parked_.Find(call);
    if (!parked) continue;
    const auto& p = std::get<UniqueIdsCall>(parked->call);
    std::optional<SharedUniqueIds> answer = g.ids.Shared(g.mesh, p.groups);
    if (!answer) continue;  // still watched under the groups it lacks
    std::optional<Parked> taken = parked_.Take(call);
    done.Answer<SharedUniqueIds>(std::move(std::get<UniqueIdsCall>(taken->call).done), *std::move(answer));
  }
}

uint64_t Job::GetUniqueIds(const Caller& caller, uint64_t generation, int rank, std::vector<GroupId> groups,
                           Millis wait, Done<SharedUniqueIds> on_done) {
  const uint64_t call = next_call_.fetch_add(1);
  Completions done;
  MutexLock lock(&mu_);
  absl::Status status = CheckServing();
  if (status.ok()) status = CheckMember(caller, generation, rank);
  if (status.ok()) status = gen_->ids.CheckGet(gen_->mesh, rank, groups);
  if (!status.ok()) {
    done.Answer<SharedUniqueIds>(on_done, WithContext(status));
    return call;
  }
  if (std::optional<SharedUniqueIds> answer = gen_->ids.Shared(gen_->mesh, groups)) {
    done.Answer<SharedUniqueIds>(on_done, *std::move(answer));
    return call;
  }
  if (absl::Status s = CheckPark(); !s.ok()) {
    done.Answer<SharedUniqueIds>(on_done, WithContext(s));
    return call;
  }
  for (const GroupId& group : groups) {
    if (!gen_->ids.Complete(gen_->mesh, group)) gen_->ids.watchers().Watch(call, group);
  }
  Park(call, UniqueIdsCall{rank, std::move(groups), std::move(on_done)}, wait, done);
  return call;
}

uint64_t Job::GetUniqueIds(const Caller& caller, uint64_t generation, int rank, std::vector<GroupId> groups,
                           Millis wait, Done<UniqueIds> on_done) {
  return GetUniqueIds(caller, generation, rank, std::move(groups), wait,
                      Done<SharedUniqueIds>([on_done = std::move(on_done)](absl::StatusOr<SharedUniqueIds> ids) {
                        on_done(ids.ok() ? absl::StatusOr<UniqueIds>(Flatten(*ids)) : ids.status());
                      }));
}

}  // namespace tpcoord
