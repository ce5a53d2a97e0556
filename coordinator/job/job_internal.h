// What the files that define Job's members share, and nobody else sees: the helpers every part uses, the
// template half of the commit path, and the state of a member and of a generation.
#ifndef TPCOORD_COORDINATOR_JOB_JOB_INTERNAL_H_
#define TPCOORD_COORDINATOR_JOB_JOB_INTERNAL_H_

#include <chrono>
#include <optional>
#include <string>
#include <unordered_map>
#include <unordered_set>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "coordinator/job/barrier_set.h"
#include "coordinator/job/config_agreement.h"
#include "coordinator/job/job.h"
#include "coordinator/job/lease_monitor.h"
#include "coordinator/job/unique_id_table.h"

namespace tpcoord {
namespace job_internal {

inline int64_t UnixMillisNow() {
  return std::chrono::duration_cast<Millis>(std::chrono::system_clock::now().time_since_epoch()).count();
}

inline std::string Seconds(Millis d) {
  return d.count() % 1000 == 0 ? absl::StrCat(d.count() / 1000, "s") : absl::StrCat(d.count(), "ms");
}

// Items a change claims in its batch (see Batch).
inline std::string StoreItem(absl::string_view key) { return absl::StrCat("kv/", key); }
inline std::string SlotItem(const UniqueIdSlot& slot) {
  return absl::StrCat("id/", GroupName(slot.group), "/", slot.root);
}
inline std::string MemberItem(int rank) { return absl::StrCat("member/", rank); }
inline std::string BarrierItem(absl::string_view name) { return absl::StrCat("barrier/", name); }

// A generation in this phase is over: it completed or failed.
inline bool Over(JobPhase phase) { return phase == JobPhase::kCompleted || phase == JobPhase::kFailed; }

// Job::pins_ of an unborn job that is gone: no call may pin it any more.
inline constexpr int64_t kGonePins = -1;

// How calls learn that a generation ended: ABORTED (rejoin the next one), or FAILED_PRECONDITION when a
// member left on a configuration error that no restart cures (stop too).
inline absl::Status GenerationEnded(const JobHeader& header) {
  const std::string what = absl::StrCat("generation ", header.generation, " ended: ", header.end_reason);
  return header.end_fatal ? absl::FailedPreconditionError(what) : absl::AbortedError(what);
}

// What a Join in a closed job answers (Job::Close; the text is CloseJobRequest's in coordinator.proto).
inline absl::Status JobClosedError(const std::string& job, const JobHeader& header) {
  return absl::FailedPreconditionError(
      absl::StrCat("job ", job, " is closed", header.closed_reason.empty() ? "" : ": ", header.closed_reason,
                   "; no new generation starts in a closed job (delete it, tpctl delete ", job,
                   ", to use its id afresh)"));
}

}  // namespace job_internal

struct Job::Member {
  std::string worker_id;
  std::string host;
  std::optional<int> requested_rank;
  std::string key_sha256;  // the member key its seat is bound to
  int rank = -1;           // once the world is complete
  uint64_t join_call = 0;  // the parked Join while joining
  bool merged = false;
};

struct Job::Generation {
  Generation(const JobContext& context, const Mesh& mesh)
      : mesh(mesh), kv(context.store_quota), barriers(kMaxBarriersPerGeneration), leases(context.options.lease) {}

  Mesh mesh;
  std::vector<Member> members;                        // joining: in arrival order; from running on: by rank
  std::unordered_map<std::string, size_t> by_worker;  // worker_id -> index in members
  std::unordered_set<std::string> member_keys;        // every member's key_sha256, from running on
  ConfigAgreement agreement;
  int merged_members = 0;
  UniqueIdTable ids;
  KeyValueStore kv;
  BarrierSet barriers;
  LeaseMonitor leases;
  TimerQueue::Id lease_timer = 0;
  struct Session {
    uint64_t id;
    SessionEnd on_end;
  };
  std::unordered_map<int, Session> sessions;  // rank -> its open session
  // While joining: the world-size range (JoinRequest.min_world_size) and when the first Join came.
  int min_world_size = 0;
  Millis rejoin_timeout{0};
  Clock::time_point joining_since;
  TimerQueue::Id shrink_timer = 0;

  struct Timing {
    std::string phase;
    int64_t start_unix_ms;
    Clock::time_point start;
    std::optional<Clock::time_point> end;
  };
  std::vector<Timing> timings;

  void IndexMembers() {
    by_worker.clear();
    member_keys.clear();
    for (size_t i = 0; i < members.size(); ++i) {
      by_worker.emplace(members[i].worker_id, i);
      member_keys.insert(members[i].key_sha256);
    }
  }
};

template <typename T>
void Job::Mutate(Done<T> done, Decide decide) {
  Enqueue(std::move(decide),
          [done = std::move(done)](absl::Status s, Completions& c) { c.Answer<T>(done, std::move(s)); });
}

}  // namespace tpcoord

#endif  // TPCOORD_COORDINATOR_JOB_JOB_INTERNAL_H_
