#include "coordinator/job/lease_monitor.h"

namespace tpcoord {

void LeaseMonitor::Start(int world_size, Clock::time_point now) {
  last_heartbeat_.assign(world_size, now);
  finished_.assign(world_size, false);
  unfinished_ = world_size;
}

void LeaseMonitor::Finish(int rank) {
  if (finished_[rank]) return;
  finished_[rank] = true;
  --unfinished_;
}

std::vector<int> LeaseMonitor::Expired(Clock::time_point now) const {
  std::vector<int> expired;
  for (size_t r = 0; r < last_heartbeat_.size(); ++r) {
    if (!finished_[r] && last_heartbeat_[r] + lease_ <= now) expired.push_back(static_cast<int>(r));
  }
  return expired;
}

LeaseMonitor::Clock::time_point LeaseMonitor::NextDeadline() const {
  Clock::time_point next = Clock::time_point::max();
  for (size_t r = 0; r < last_heartbeat_.size(); ++r) {
    if (!finished_[r] && last_heartbeat_[r] + lease_ < next) next = last_heartbeat_[r] + lease_;
  }
  return next;
}

int64_t LeaseMonitor::AgeMs(int rank, Clock::time_point now) const {
  return std::chrono::duration_cast<std::chrono::milliseconds>(now - last_heartbeat_[rank]).count();
}

}  // namespace tpcoord
