#include "coordinator/job/timer_queue.h"

namespace tpcoord {

TimerQueue::TimerQueue() : thread_([this] { Run(); }) {}

TimerQueue::~TimerQueue() {
  {
    MutexLock lock(&mu_);
    stopping_ = true;
  }
  wake_.Signal();
  thread_.join();
}

TimerQueue::Id TimerQueue::Schedule(Clock::time_point when, std::function<void()> fn) {
  MutexLock lock(&mu_);
  const Id id = next_id_++;
  const bool earliest = due_.empty() || when < due_.begin()->first.first;
  due_.emplace(std::make_pair(when, id), std::move(fn));
  when_.emplace(id, when);
  if (earliest) wake_.Signal();
  return id;
}

void TimerQueue::Cancel(Id id) {
  MutexLock lock(&mu_);
  auto it = when_.find(id);
  if (it == when_.end()) return;
  due_.erase({it->second, id});
  when_.erase(it);
}

size_t TimerQueue::size() const {
  MutexLock lock(&mu_);
  return due_.size();
}

void TimerQueue::Run() {
  mu_.Lock();
  while (!stopping_) {
    if (due_.empty()) {
      wake_.Wait();
      continue;
    }
    auto first = due_.begin();
    if (first->first.first > Clock::now()) {
      wake_.WaitUntil(first->first.first);
      continue;
    }
    std::function<void()> fn = std::move(first->second);
    when_.erase(first->first.second);
    due_.erase(first);
    mu_.Unlock();  // callbacks take their own locks
    fn();
    mu_.Lock();
  }
  mu_.Unlock();
}

}  // namespace tpcoord
