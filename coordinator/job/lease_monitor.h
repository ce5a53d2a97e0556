// Who of a running generation is alive and who is done: each rank's last heartbeat against the lease, and
// the ranks that left finished. A rank whose lease runs out (no heartbeat for `lease`) ends the generation;
// a finished rank needs no more heartbeats.
//
// Not thread-safe: a plain part of its Job, used under the job's lock.
#ifndef TPCOORD_COORDINATOR_JOB_LEASE_MONITOR_H_
#define TPCOORD_COORDINATOR_JOB_LEASE_MONITOR_H_

#include <chrono>
#include <cstdint>
#include <vector>

namespace tpcoord {

class LeaseMonitor {
 public:
  using Clock = std::chrono::steady_clock;

  explicit LeaseMonitor(std::chrono::milliseconds lease) : lease_(lease) {}

  // Every rank of a world of `world_size` gets a fresh lease from `now` (also after a coordinator restart).
  void Start(int world_size, Clock::time_point now);
  bool started() const { return !last_heartbeat_.empty(); }

  void Renew(int rank, Clock::time_point now) { last_heartbeat_[rank] = now; }
  void Finish(int rank);
  bool finished(int rank) const { return finished_[rank]; }
  bool AllFinished() const { return unfinished_ == 0; }
  int unfinished() const { return unfinished_; }

  // Unfinished ranks whose lease has run out at `now`, ascending.
  std::vector<int> Expired(Clock::time_point now) const;
  // When the next unfinished lease runs out (Clock::time_point::max() when every rank has finished).
  Clock::time_point NextDeadline() const;
  // Milliseconds since `rank` last renewed its lease.
  int64_t AgeMs(int rank, Clock::time_point now) const;

 private:
  const std::chrono::milliseconds lease_;
  std::vector<Clock::time_point> last_heartbeat_;
  std::vector<bool> finished_;
  int unfinished_ = 0;
};

}  // namespace tpcoord

#endif  // TPCOORD_COORDINATOR_JOB_LEASE_MONITOR_H_
