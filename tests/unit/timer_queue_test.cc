#include "coordinator/job/timer_queue.h"

#include <gtest/gtest.h>

#include <atomic>
#include <future>
#include <vector>

namespace tpcoord {
namespace {

using namespace std::chrono_literals;

TEST(TimerQueueTest, RunsCallbacksInDeadlineOrder) {
  TimerQueue timers;
  std::mutex mu;
  std::vector<int> order;
  std::promise<void> all_ran;
  const auto now = TimerQueue::Clock::now();
  for (int i : {3, 1, 2}) {
    timers.Schedule(now + i * 20ms, [&, i] {
      std::lock_guard<std::mutex> lock(mu);
      order.push_back(i);
      if (order.size() == 3) all_ran.set_value();
    });
  }
  ASSERT_EQ(all_ran.get_future().wait_for(5s), std::future_status::ready);
  EXPECT_EQ(order, std::vector<int>({1, 2, 3}));
  EXPECT_EQ(timers.size(), 0u);
}

TEST(TimerQueueTest, CancelledCallbacksNeverRun) {
  TimerQueue timers;
  std::atomic<int> ran{0};
  std::promise<void> later;
  TimerQueue::Id id = timers.Schedule(TimerQueue::Clock::now() + 30ms, [&] { ran++; });
  timers.Schedule(TimerQueue::Clock::now() + 60ms, [&] { later.set_value(); });
  timers.Cancel(id);
  timers.Cancel(id);      // twice is fine
  timers.Cancel(987654);  // unknown is fine
  ASSERT_EQ(later.get_future().wait_for(5s), std::future_status::ready);
  EXPECT_EQ(ran.load(), 0);
}

TEST(TimerQueueTest, AnEarlierDeadlineWakesTheThread) {
  TimerQueue timers;
  timers.Schedule(TimerQueue::Clock::now() + 1h, [] {});
  std::promise<void> soon;
  timers.Schedule(TimerQueue::Clock::now() + 10ms, [&] { soon.set_value(); });
  EXPECT_EQ(soon.get_future().wait_for(5s), std::future_status::ready);
}

TEST(TimerQueueTest, ManyPendingTimersCostNoThreads) {
  TimerQueue timers;
  for (int i = 0; i < 10000; ++i) timers.Schedule(TimerQueue::Clock::now() + 1h, [] {});
  EXPECT_EQ(timers.size(), 10000u);
}  // destroying the queue drops them

}  // namespace
}  // namespace tpcoord
