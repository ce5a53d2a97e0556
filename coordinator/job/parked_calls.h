// Calls that wait in a job for an event: the world completing (Join), a unique ID being published
// (GetUniqueId), keys being set (StoreGet, StoreWait), every rank entering a barrier (Barrier). A parked
// call holds no thread: it is an entry here plus a deadline on the timer queue. Whoever finishes it (its
// event, its deadline, its client going away, its generation ending) first takes it out, so exactly one of
// them answers it.
//
// Not thread-safe: a plain part of its Job, used under the job's lock.
#ifndef TPCOORD_COORDINATOR_JOB_PARKED_CALLS_H_
#define TPCOORD_COORDINATOR_JOB_PARKED_CALLS_H_

#include <cstdint>
#include <optional>
#include <string>
#include <unordered_map>
#include <variant>
#include <vector>

#include "absl/status/status.h"
#include "coordinator/job/completions.h"
#include "coordinator/job/timer_queue.h"
#include "coordinator/job/unique_id_table.h"

namespace tpcoord {

struct JoinCall {
  std::string worker_id;
  Done<Assignment> done;
};
struct UniqueIdsCall {
  int rank = 0;
  std::vector<GroupId> groups;  // in the order asked
  Done<SharedUniqueIds> done;
};
struct StoreGetCall {
  std::string key;
  Done<std::string> done;
};
struct StoreWaitCall {
  std::vector<std::string> keys;
  StatusDone done;
};
struct BarrierCall {
  int rank = 0;
  std::string name;
  StatusDone done;
};
using ParkedCall = std::variant<JoinCall, UniqueIdsCall, StoreGetCall, StoreWaitCall, BarrierCall>;

struct Parked {
  ParkedCall call;
  Millis wait{0};  // how long it may wait, for messages
  TimerQueue::Id deadline = 0;
};

// Answers `call` with `status` (an error), whatever kind of call it is, through `done`.
void FailParkedCall(ParkedCall& call, absl::Status status, Completions& done);

class ParkedCalls {
 public:
  // `timers` must outlive this object. At most `limit` calls are parked at once.
  ParkedCalls(TimerQueue* timers, size_t limit) : timers_(timers), limit_(limit) {}
  ~ParkedCalls();  // cancels every deadline; the calls themselves must have been answered (TakeAll)
  ParkedCalls(const ParkedCalls&) = delete;
  ParkedCalls& operator=(const ParkedCalls&) = delete;

  // RESOURCE_EXHAUSTED naming the limit when `limit` calls are parked already.
  absl::Status CheckRoom() const;

  // Parks `call` under `id` (unique per job). Unless it is taken first, `on_deadline` runs on the timer
  // thread once `wait` has passed; it should take the call and answer DEADLINE_EXCEEDED. Call CheckRoom first.
  void Park(uint64_t id, ParkedCall call, Millis wait, std::function<void()> on_deadline);

  const Parked* Find(uint64_t id) const;
  // Removes the call and cancels its deadline; nullopt if `id` is not parked.
  std::optional<Parked> Take(uint64_t id);
  // Every parked call, in no particular order.
  std::vector<Parked> TakeAll();

  size_t size() const { return calls_.size(); }

 private:
  TimerQueue* const timers_;
  const size_t limit_;
  std::unordered_map<uint64_t, Parked> calls_;
};

}  // namespace tpcoord

#endif  // TPCOORD_COORDINATOR_JOB_PARKED_CALLS_H_
