// One thread that runs callbacks at deadlines. Parked calls (Join, GetUniqueId, Barrier, store waits) and
// heartbeat leases schedule their deadlines here, so ten thousand waiting calls cost ten thousand map
// entries, not ten thousand threads.
#ifndef TPCOORD_COORDINATOR_JOB_TIMER_QUEUE_H_
#define TPCOORD_COORDINATOR_JOB_TIMER_QUEUE_H_

#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <thread>
#include <unordered_map>
#include <utility>

#include "absl/base/thread_annotations.h"
#include "common/mutex.h"

namespace tpcoord {

class TimerQueue {
 public:
  using Clock = std::chrono::steady_clock;
  using Id = uint64_t;  // never 0

  TimerQueue();
  // Stops the thread; callbacks not yet run are dropped.
  ~TimerQueue();
  TimerQueue(const TimerQueue&) = delete;
  TimerQueue& operator=(const TimerQueue&) = delete;

  // Runs `fn` on the timer thread at or after `when`. Callbacks must not block for long: they delay every
  // later deadline.
  Id Schedule(Clock::time_point when, std::function<void()> fn) ABSL_LOCKS_EXCLUDED(mu_);

  // The callback will not start after Cancel returns (it may be running right now). Unknown ids are ignored.
  void Cancel(Id id) ABSL_LOCKS_EXCLUDED(mu_);

  size_t size() const ABSL_LOCKS_EXCLUDED(mu_);

 private:
  void Run();

  mutable Mutex mu_;
  CondVar wake_{&mu_};
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  Id next_id_ ABSL_GUARDED_BY(mu_) = 1;
  std::map<std::pair<Clock::time_point, Id>, std::function<void()>> due_ ABSL_GUARDED_BY(mu_);
  std::unordered_map<Id, Clock::time_point> when_ ABSL_GUARDED_BY(mu_);
  std::thread thread_;  // last: starts after the members above exist
};

}  // namespace tpcoord

#endif  // TPCOORD_COORDINATOR_JOB_TIMER_QUEUE_H_
