#include "agent/host_unique_ids.h"

#include <algorithm>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/deepspeed_error.h"
#include "common/limits.h"
#include "common/wire.h"

namespace tpcoord {
namespace {

constexpr uint32_t kDefaultWaitMs = 5 * 60 * 1000;  // a get without a wait of its own

// Whether a step's job_id, generation and rank are the member's (or left empty, to be filled with them).
template <typename Request>
bool NamesMember(const Request& r, uint64_t generation, int rank) {
  return (r.generation() == 0 || r.generation() == generation) && (r.rank() == 0 || r.rank() == rank);
}

}  // namespace

void HostUniqueIds::Seat(const std::string& job, uint64_t generation, int rank, const Mesh& mesh) {
  std::vector<Deferred> resume;
  {
    MutexLock lock(&mu_);
    SeatLocked(job, generation, rank, mesh);
    if (static_cast<int>(seated_.size()) >= workers_) resume.swap(deferred_);
  }
  Resume(std::move(resume));
}

void HostUniqueIds::SeatLocked(const std::string& job, uint64_t generation, int rank, const Mesh& mesh) {
  if (job != job_ || generation > generation_) {  // a new generation: nothing of the last one holds
    job_ = job;
    generation_ = generation;
    mesh_ = mesh;
    seated_.clear();
    local_.clear();
    ids_.clear();
    fetched_.clear();
    fetching_.clear();
    waits_.clear();
    deferred_.clear();
  }
  if (generation == generation_) seated_.insert(rank);
}

void HostUniqueIds::Resume(std::vector<Deferred> calls) {
  for (Deferred& d : calls) {
    if (Take(d.generation, d.rank, d.call, d.answer, d.forward, /*may_defer=*/false)) continue;
    const uint64_t call_id = d.call.call_id();
    d.forward(std::move(d.call), [answer = std::move(d.answer), call_id](const v1::SessionEvent& event) {
      v1::SessionEvent mine = event;
      mine.set_call_id(call_id);
      answer(std::move(mine));
    });
  }
}

bool HostUniqueIds::LocalLocked(const GroupId& group) {
  if (auto it = local_.find(group); it != local_.end()) return it->second;
  bool local = static_cast<size_t>(mesh_->GroupSize(group)) <= seated_.size();
  if (local) {
    for (int rank : mesh_->Ranks(group)) local = local && seated_.count(rank) > 0;
  }
  local_[group] = local;
  ++(local ? counts_.brokered_groups : counts_.spanning_groups);
  return local;
}

bool HostUniqueIds::CompleteLocked(const GroupId& group) const {
  if (fetched_.count(group) > 0) return true;
  if (fetching_.count(group) > 0) return false;
  auto it = local_.find(group);
  if (it == local_.end() || !it->second) return false;
  for (int root = 0; root < mesh_->UniqueIdRoots(group); ++root) {
    if (ids_.count({group, root}) == 0) return false;
  }
  return true;
}

bool HostUniqueIds::Exchange(uint64_t generation, int rank, const v1::SessionRequest& call, Answer answer,
                             Forward forward) {
  return Take(generation, rank, call, answer, forward, /*may_defer=*/true);
}

bool HostUniqueIds::Take(uint64_t generation, int rank, const v1::SessionRequest& call, Answer& answer,
                         Forward& forward, bool may_defer) {
  if (call.call_id() == 0 || call.has_record() || call.has_join() || call.has_merge_config() || call.has_barrier() ||
      call.has_leave() || call.has_progress() || (!call.has_publish_unique_id() && !call.has_get_unique_id())) {
    return false;
  }
  std::vector<std::pair<UniqueIdSlot, std::string>> publish;
  std::vector<GroupId> wanted;
  if (call.has_publish_unique_id()) {
    const v1::PublishUniqueIdRequest& p = call.publish_unique_id();
    if (!NamesMember(p, generation, rank) || p.ids_size() < 1 || p.ids_size() > kMaxGroupsPerCall) return false;
    for (const v1::UniqueId& id : p.ids()) {
      absl::StatusOr<GroupId> group = GroupIdFromProto(id.group());
      if (!group.ok() || id.id().size() != kUniqueIdBytes) return false;
      publish.push_back({{*group, id.root()}, id.id()});
    }
  }
  uint32_t wait_ms = 0;
  if (call.has_get_unique_id()) {
    const v1::GetUniqueIdRequest& g = call.get_unique_id();
    if (!NamesMember(g, generation, rank) || g.groups_size() < 1 || g.groups_size() > kMaxGroupsPerCall) {
      return false;
    }
    for (const v1::GroupRef& ref : g.groups()) {
      absl::StatusOr<GroupId> group = GroupIdFromProto(ref);
      if (!group.ok()) return false;
      wanted.push_back(*group);
    }
    wait_ms = g.wait_timeout_ms() == 0 ? kDefaultWaitMs : g.wait_timeout_ms();
  }

  Ready ready;
  std::optional<v1::SessionRequest> up;
  std::vector<GroupId> fetch;
  uint64_t wait_id = 0;
  {
    MutexLock lock(&mu_);
    if (!mesh_ || generation != generation_ || seated_.count(rank) == 0) return false;
    // What the coordinator would refuse goes to the coordinator, which says why in its own words.
    for (size_t i = 0; i < publish.size(); ++i) {
      const UniqueIdSlot& slot = publish[i].first;
      if (!mesh_->Contains(slot.group) || slot.root < 0 || slot.root >= mesh_->UniqueIdRoots(slot.group) ||
          mesh_->RootRank(slot) != rank) {
        return false;
      }
      for (size_t k = 0; k < i; ++k) {
        if (publish[k].first == slot) return false;
      }
    }
    for (const GroupId& group : wanted) {
      if (!mesh_->Contains(group) || !mesh_->IsMember(group, rank)) return false;
    }
    if (may_defer && static_cast<int>(seated_.size()) < workers_) {
      bool undecided = false;
      for (const auto& [slot, bytes] : publish) undecided = undecided || local_.count(slot.group) == 0;
      for (const GroupId& group : wanted) undecided = undecided || local_.count(group) == 0;
      if (undecided) {
        deferred_.push_back(Deferred{generation, rank, call, std::move(answer), std::move(forward), Clock::now()});
        return true;
      }
    }
    std::vector<std::pair<UniqueIdSlot, std::string>> publish_up;
    for (const auto& [slot, bytes] : publish) {
      if (!LocalLocked(slot.group)) {
        publish_up.push_back({slot, bytes});
        continue;
      }
      if (auto it = ids_.find(slot); it != ids_.end() && it->second != bytes) {
        ready.push_back({std::move(answer),
                         ErrorEvent(call.call_id(), absl::FailedPreconditionError(absl::StrCat(
                                                        "the unique id of ", SlotName(slot), " in generation ",
                                                        generation_,
                                                        " was already published with different bytes; a "
                                                        "communicator root has one id")))});
        break;
      }
    }
    if (ready.empty()) {  // refused above otherwise
      for (const auto& [slot, bytes] : publish) {
        if (local_[slot.group]) ids_[slot] = bytes;
      }
      for (const GroupId& group : wanted) {
        if (LocalLocked(group)) continue;
        if (fetched_.count(group) > 0 || fetching_.count(group) > 0) {
          ++counts_.fetches_saved;
          continue;
        }
        fetching_.insert(group);
        fetch.push_back(group);
        ++counts_.fetches;
      }
      wait_id = next_wait_++;
      Wait& w = waits_[wait_id];
      w.call_id = call.call_id();
      w.rank = rank;
      w.groups = wanted;
      w.wait_ms = wait_ms;
      if (!wanted.empty()) w.deadline = Clock::now() + std::chrono::milliseconds(wait_ms);
      w.answer = std::move(answer);
      if (!publish_up.empty() || !fetch.empty()) {
        w.upstream = true;
        up.emplace();
        up->set_call_id(call.call_id());
        if (!publish_up.empty()) {
          v1::PublishUniqueIdRequest& p = *up->mutable_publish_unique_id();
          p = call.publish_unique_id();
          p.clear_ids();
          for (const auto& [slot, bytes] : publish_up) {
            v1::UniqueId& id = *p.add_ids();
            *id.mutable_group() = GroupIdToProto(slot.group);
            id.set_id(bytes);
            id.set_root(slot.root);
          }
        }
        if (!fetch.empty()) {
          v1::GetUniqueIdRequest& g = *up->mutable_get_unique_id();
          g = call.get_unique_id();
          g.clear_groups();
          for (const GroupId& group : fetch) *g.add_groups() = GroupIdToProto(group);
        }
      } else {
        ++counts_.answered_here;
      }
      ResolveLocked(ready);
    }
  }
  Deliver(ready);
  if (up) {
    const uint64_t generation_now = generation;
    forward(*std::move(up), [this, wait_id, fetch, generation_now](const v1::SessionEvent& event) {
      Fetched(wait_id, fetch, generation_now, event);
    });
  }
  return true;
}

void HostUniqueIds::Fetched(uint64_t wait_id, std::vector<GroupId> groups, uint64_t generation,
                            const v1::SessionEvent& event) {
  Ready ready;
  {
    MutexLock lock(&mu_);
    if (generation != generation_) return;  // a newer generation forgot this one
    for (const GroupId& group : groups) fetching_.erase(group);
    absl::Status failed;
    if (event.status_code() == 0) {
      // The groups in the order asked, each group's roots in root order.
      int next = 0;
      const auto& ids = event.unique_ids().ids();
      for (const GroupId& group : groups) {
        for (int root = 0; root < mesh_->UniqueIdRoots(group) && failed.ok(); ++root, ++next) {
          absl::StatusOr<GroupId> got = next < ids.size() ? GroupIdFromProto(ids[next].group())
                                                           : absl::InvalidArgumentError("missing");
          if (!got.ok() || !(*got == group) || ids[next].root() != root) {
            failed = absl::InternalError(absl::StrCat("the coordinator's answer does not carry root ", root, " of ",
                                                      GroupName(group), " where expected"));
            break;
          }
          ids_[{group, root}] = ids[next].id();
        }
        if (failed.ok()) fetched_.insert(group);
      }
    }
    if (event.status_code() != 0 || !failed.ok()) {
      // The waits that needed this fetch fail with it (its own, and those that counted on it).
      for (auto it = waits_.begin(); it != waits_.end();) {
        bool needed = it->first == wait_id;
        for (const GroupId& group : it->second.groups) {
          needed = needed || (std::find(groups.begin(), groups.end(), group) != groups.end() && !CompleteLocked(group));
        }
        if (!needed) {
          ++it;
          continue;
        }
        v1::SessionEvent error;
        if (failed.ok()) {
          error.set_status_code(event.status_code());
          error.set_status_message(event.status_message());
          error.set_status_context(event.status_context());
        } else {
          error = ErrorEvent(0, failed);
        }
        error.set_call_id(it->second.call_id);
        ready.push_back({std::move(it->second.answer), std::move(error)});
        it = waits_.erase(it);
      }
    } else if (auto it = waits_.find(wait_id); it != waits_.end()) {
      it->second.upstream = false;
    }
    ResolveLocked(ready);
  }
  for (auto& [deliver, event] : ready) deliver(std::move(event));
}

void HostUniqueIds::ResolveLocked(Ready& ready) {
  for (auto it = waits_.begin(); it != waits_.end();) {
    const Wait& w = it->second;
    bool complete = !w.upstream;
    for (const GroupId& group : w.groups) complete = complete && CompleteLocked(group);
    if (!complete) {
      ++it;
      continue;
    }
    v1::SessionEvent event;
    event.set_call_id(w.call_id);
    if (!w.groups.empty()) {
      v1::GetUniqueIdResponse& out = *event.mutable_unique_ids();
      for (const GroupId& group : w.groups) {
        for (int root = 0; root < mesh_->UniqueIdRoots(group); ++root) {
          v1::UniqueId& id = *out.add_ids();
          *id.mutable_group() = GroupIdToProto(group);
          id.set_id(ids_.at({group, root}));
          id.set_root(root);
        }
      }
    }
    ready.push_back({std::move(it->second.answer), std::move(event)});
    it = waits_.erase(it);
  }
}

void HostUniqueIds::Expire(Clock::time_point now) {
  Ready ready;
  std::vector<Deferred> resume;
  {
    MutexLock lock(&mu_);
    for (auto it = deferred_.begin(); it != deferred_.end();) {
      if (now - it->since < std::chrono::seconds(1)) {
        ++it;
        continue;
      }
      resume.push_back(std::move(*it));
      it = deferred_.erase(it);
    }
    for (auto it = waits_.begin(); it != waits_.end();) {
      const Wait& w = it->second;
      std::vector<std::string> missing;
      for (const GroupId& group : w.groups) {
        if (!local_.count(group) || !local_.at(group)) continue;  // a fetch's wait is the coordinator's
        for (int root = 0; root < mesh_->UniqueIdRoots(group); ++root) {
          if (ids_.count({group, root}) > 0) continue;
          const bool one_root = mesh_->UniqueIdRoots(group) == 1;
          missing.push_back(absl::StrCat("the unique id of ", SlotName({group, root}),
                                         one_root ? " from its leader rank " : " from rank ",
                                         mesh_->RootRank({group, root}), " (host ", host_, ")"));
        }
      }
      if (!w.deadline || now < *w.deadline || missing.empty()) {
        ++it;
        continue;
      }
      ready.push_back({std::move(it->second.answer),
                       ErrorEvent(w.call_id, absl::DeadlineExceededError(absl::StrCat(
                                                 "GetUniqueId timed out after ", w.wait_ms / 1000.0, " s waiting for ",
                                                 absl::StrJoin(missing, ", "))))});
      it = waits_.erase(it);
    }
  }
  Resume(std::move(resume));
  for (auto& [deliver, event] : ready) deliver(std::move(event));
}

bool HostUniqueIds::Deliver(Ready& ready) {
  for (auto& [answer, event] : ready) answer(std::move(event));
  return true;
}

v1::SessionEvent HostUniqueIds::ErrorEvent(uint64_t call_id, const absl::Status& plain) const {
  const absl::Status status = WithJobContext(job_, plain);
  v1::SessionEvent event;
  event.set_call_id(call_id);
  event.set_status_code(static_cast<int>(status.code()));
  event.set_status_message(std::string(status.message()));
  if (std::optional<std::string> context = ErrorContext(status)) event.set_status_context(*context);
  return event;
}

HostUniqueIds::Counts HostUniqueIds::counts() {
  MutexLock lock(&mu_);
  return counts_;
}

}  // namespace tpcoord
