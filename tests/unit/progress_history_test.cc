// A job's progress: the latest report, and a loss curve that stays within kMaxProgressPoints by thinning
// itself evenly, and that a resumed run rewrites from where it resumed.
#include "coordinator/progress_history.h"

#include <gtest/gtest.h>

#include <cmath>

#include "common/limits.h"

namespace tpcoord {
namespace {

ProgressReport At(int64_t step, double loss = 1) { return ProgressReport{step, 0, loss, 10, 0.1, std::nullopt, 0}; }

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
  ProgressReport with_eval = At(5);
  with_eval.eval_loss = 2.5;
  history.Add(with_eval);
  history.Add(At(6));
  EXPECT_EQ(history.eval_loss(), 2.5);
}

TEST(ProgressHistoryTest, ChecksNameTheFieldAndValue) {
  EXPECT_TRUE(CheckProgressReport(At(1)).ok());
  ProgressReport diverged = At(3, std::nan(""));
  EXPECT_TRUE(CheckProgressReport(diverged).ok());  // a NaN loss is news, not an error
  EXPECT_EQ(CheckProgressReport(At(0)).message(), "progress.step is 0; it must be at least 1");
  ProgressReport r = At(1);
  r.total_steps = -1;
  EXPECT_EQ(CheckProgressReport(r).message(), "progress.total_steps is -1; it must be 0 (unknown) or more");
  r = At(1);
  r.tokens_per_second = INFINITY;
  EXPECT_EQ(CheckProgressReport(r).message(), "progress.tokens_per_second is inf; it must be finite and at least 0");
  r = At(1);
  r.step_seconds = -2;
  EXPECT_EQ(CheckProgressReport(r).message(), "progress.step_seconds is -2; it must be finite and at least 0");
  EXPECT_EQ(CheckProgressReport(r).code(), absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace tpcoord
