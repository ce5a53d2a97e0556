// One training job as the coordinator sees it: its recorded tp_model_init arguments, and its current
// generation (one rendezvous of world_size workers) with everything that belongs to that generation —
// members and ranks, the merged config every member agreed on, NCCL unique IDs, the c10d key-value store,
// barriers and heartbeat leases.
//
// Thread-safety: every public method may be called from any thread. One mutex guards the job. Callbacks of
// parked calls run exactly once, never under that mutex, on the thread of whichever call or timer
// completes them.
//
// Invariants:
//   - A parked call is in waiters_ until it completes; completing it removes it and cancels its timer, so
//     the event, its deadline and a client cancellation can race and exactly one of them finishes it.
//   - State changes that must survive a restart are written to the StateStore before they are made in
//     memory; a failed write leaves the job as it was.
//   - Everything generation-scoped lives in gen_ and is dropped when the next generation starts.
#ifndef TPCOORD_COORDINATOR_JOB_H_
#define TPCOORD_COORDINATOR_JOB_H_

#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <unordered_map>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "common/mesh.h"
#include "common/tp_init_args.h"
#include "coordinator/state_store.h"
#include "coordinator/timer_queue.h"
#include "nlohmann/json.hpp"

namespace tpcoord {

using Millis = std::chrono::milliseconds;

struct JobOptions {
  Millis lease{10000};           // a member silent this long ends the generation
  Millis default_wait{60000};    // wait_timeout_ms == 0
  Millis max_wait{3600000};      // longer waits are capped
  size_t max_store_bytes = 512u << 20;  // keys + values of one generation's key-value store
  // Receives one line per generation event (started, complete, ended, completed); may be empty.
  std::function<void(const std::string&)> log;
};

inline constexpr size_t kUniqueIdBytes = 128;
inline constexpr size_t kMaxStoreValueBytes = 1u << 20;

struct JoinArgs {
  std::string worker_id;
  std::string host;
  int world_size = 0;
  std::optional<int> requested_rank;
  int tp_size = 0;  // 0: the recorded tp_size, or 1
};

// What Join answers every member once the world is complete.
struct Assignment {
  uint64_t generation = 0;
  int rank = 0;
  Mesh mesh;
  Millis heartbeat_interval{0};
  Millis lease{0};
};

struct RecordOutcome {
  TpInitRecord record;
  bool created = false;
};

struct MergeOutcome {
  std::string merged_config;  // compact JSON, keys sorted
  bool tp_init_recorded = false;
};

struct MemberView {
  int rank = -1;
  std::string host;
  std::string worker_id;
  bool finished = false;
  int64_t heartbeat_age_ms = -1;
};

struct PhaseTimingView {
  std::string phase;
  int64_t start_unix_ms = 0;
  int64_t duration_ms = -1;  // -1: in progress
};

struct JobView {
  std::string job_id;
  std::optional<TpInitRecord> tp_init;
  std::string merged_config;
  uint64_t generation = 0;
  JobPhase phase = JobPhase::kIdle;
  int world_size = 0;
  std::vector<MemberView> members;
  std::vector<std::string> missing;
  std::vector<PhaseTimingView> timings;
  std::string end_reason;
};

template <typename T>
using Done = std::function<void(absl::StatusOr<T>)>;
using StatusDone = std::function<void(absl::Status)>;

class Job : public std::enable_shared_from_this<Job> {
 public:
  // `store` and `timers` must outlive the job.
  Job(std::string id, StateStore* store, TimerQueue* timers, const JobOptions& options);
  ~Job();
  Job(const Job&) = delete;
  Job& operator=(const Job&) = delete;

  // Loads what a previous coordinator persisted. A generation that was joining or running when it stopped
  // is marked failed ("coordinator restarted"): its members rejoin into the next generation.
  void Restore(const PersistedJob& persisted);

  const std::string& id() const { return id_; }

  absl::StatusOr<RecordOutcome> Record(const TpInitArgs& call);

  // generation == 0: a standalone merge against the record. Otherwise `rank` must be a member of that
  // generation, and the config must agree with the first one merged in it (G27).
  absl::StatusOr<MergeOutcome> Merge(absl::string_view config_text, bool has_mpu, uint64_t generation, int rank);

  // Parked calls: `done` runs exactly once, possibly before the method returns. The returned id identifies
  // the parked call for Cancel (0 when it already completed).
  uint64_t Join(const JoinArgs& args, Millis wait, Done<Assignment> done);
  uint64_t GetUniqueIds(uint64_t generation, int rank, std::vector<GroupId> groups, Millis wait,
                        Done<std::vector<std::string>> done);
  uint64_t StoreGet(uint64_t generation, std::string key, Millis wait, Done<std::string> done);
  uint64_t StoreWait(uint64_t generation, std::vector<std::string> keys, Millis wait, StatusDone done);
  uint64_t Barrier(uint64_t generation, int rank, std::string name, Millis wait, StatusDone done);

  // The client gave up on a parked call: it finishes with CANCELLED. Unknown ids are ignored.
  void Cancel(uint64_t waiter_id);

  absl::Status PublishUniqueIds(uint64_t generation, int rank,
                                const std::vector<std::pair<GroupId, std::string>>& ids);

  absl::Status StoreSet(uint64_t generation, const std::string& key, std::string value);
  absl::StatusOr<int64_t> StoreAdd(uint64_t generation, const std::string& key, int64_t delta);
  absl::StatusOr<std::string> StoreCompareSet(uint64_t generation, const std::string& key,
                                              const std::string& expected, std::string desired);
  absl::StatusOr<bool> StoreCheck(uint64_t generation, const std::vector<std::string>& keys);
  absl::StatusOr<bool> StoreDelete(uint64_t generation, const std::string& key);
  absl::StatusOr<int64_t> StoreNumKeys(uint64_t generation);

  // Renews the member's lease; returns the lease length.
  absl::StatusOr<Millis> Heartbeat(uint64_t generation, int rank);
  absl::Status Leave(uint64_t generation, int rank, bool finished, const std::string& reason);

  JobView View(bool with_members) const;

  // Answers every parked call with UNAVAILABLE (the coordinator is stopping; clients retry elsewhere or
  // after the restart).
  void Shutdown();

 private:
  struct Waiter;
  struct Member;
  struct BarrierState;
  struct Generation;
  class Completions;
  class Shortlist;
  using Clock = TimerQueue::Clock;

  // All private methods expect mu_ held.
  PersistedJob Persisted() const;
  absl::Status CheckGeneration(uint64_t generation) const;
  absl::Status CheckRank(int rank) const;
  uint64_t Park(Waiter waiter, Millis wait);
  void Expire(uint64_t waiter_id);
  void Fail(Waiter& waiter, absl::Status status, Completions& done);
  void Detach(uint64_t waiter_id, const Waiter& waiter);
  void CompleteWorld(Completions& done);
  void EndGeneration(const std::string& reason, Completions& done);
  void CheckLeases();
  void ScheduleLeaseCheck(Clock::time_point when);
  void WakeKey(const std::string& key, Completions& done);
  void BeginPhase(const std::string& phase);
  void EndPhase(const std::string& phase);
  std::string DescribeRank(int rank) const;
  Shortlist MissingForJoin() const;
  Shortlist MissingForWaiter(const Waiter& waiter) const;
  absl::Status WithContext(absl::Status status) const;
  void LogEvent(const std::string& what) const;

  const std::string id_;
  StateStore* const store_;
  TimerQueue* const timers_;
  const JobOptions options_;

  mutable std::mutex mu_;
  std::optional<TpInitRecord> tp_init_;
  std::string merged_config_;  // the latest merged config persisted
  std::unique_ptr<Generation> gen_;
  struct PreviousMember {
    int rank;
    std::string host;
    std::string worker_id;
  };
  std::vector<PreviousMember> previous_members_;  // of the generation before gen_, for join timeouts
  std::unordered_map<uint64_t, std::unique_ptr<Waiter>> waiters_;
  uint64_t next_waiter_id_ = 1;
};

}  // namespace tpcoord

#endif  // TPCOORD_COORDINATOR_JOB_H_
