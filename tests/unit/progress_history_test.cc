// A job's progress: the latest report, and a loss curve that stays within kMaxProgressPoints by thinning
// itself evenly, and that a resumed run rewrites from where it resumed.
#include "coordinator/job/progress_history.h"

#include <gtest/gtest.h>

#include <cmath>

#include "common/limits.h"

namespace tpcoord {
namespace {

TrainingProgress At(int64_t step, double loss = 1) { return TrainingProgress{step, 0, loss, 10, 0.1, std::nullopt}; }

TEST(ProgressHistoryTest, EveryReportIsAPointUntilTheCurveIsFull) {
  ProgressHistory history;
  for (int step = 1; step <= 100; ++step) history.Add(At(step, 10.0 / step));
  ASSERT_EQ(history.curve().size(), 100u);
  EXPECT_EQ(history.curve()[99].step, 100);
  EXPECT_EQ(history.latest()->step, 100);
  EXPECT_FALSE(history.eval_loss().has_value());
}

TEST(ProgressHistoryTest, ALongRunIsThinnedEvenlyAndSpansTheWholeRun) {
  ProgressHistory history;
  const int steps = 20000;
  for (int step = 1; step <= steps; ++step) history.Add(At(step));
  const std::vector<CurvePoint>& curve = history.curve();
  EXPECT_LT(curve.size(), kMaxProgressPoints);
  EXPECT_GT(curve.size(), kMaxProgressPoints / 2 - 1);
  EXPECT_EQ(curve.front().step, 1);
  EXPECT_GT(curve.back().step, steps - 2 * steps / static_cast<int>(curve.size()));
  // Even spacing: every gap is the same stride.
  const int64_t stride = curve[1].step - curve[0].step;
  for (size_t i = 1; i < curve.size(); ++i) EXPECT_EQ(curve[i].step - curve[i - 1].step, stride) << i;
}

TEST(ProgressHistoryTest, AResumedRunReplacesTheCurveFromWhereItResumed) {
  ProgressHistory history;
  for (int step = 1; step <= 30; ++step) history.Add(At(step, 3));
  history.Add(At(21, 2));  // resumed from the checkpoint of step 20
  ASSERT_EQ(history.curve().size(), 21u);
  EXPECT_EQ(history.curve().back().step, 21);
  EXPECT_EQ(history.curve().back().loss, 2);
  EXPECT_EQ(history.latest()->step, 21);
}

TEST(ProgressHistoryTest, TheLatestEvalLossStays) {
  ProgressHistory history;
  TrainingProgress with_eval = At(5);
  with_eval.eval_loss = 2.5;
  history.Add(with_eval);
  history.Add(At(6));
  EXPECT_EQ(history.eval_loss(), 2.5);
}

}  // namespace
}  // namespace tpcoord
