// A progress report is checked field by field; a NaN loss is allowed, a rate that is not finite is not.
#include "common/training_progress.h"

#include <gtest/gtest.h>

#include <cmath>

namespace tpcoord {
namespace {

TrainingProgress At(int64_t step, double loss = 1) { return TrainingProgress{step, 0, loss, 10, 0.1, std::nullopt}; }

TEST(TrainingProgressTest, ChecksNameTheFieldAndValue) {
  EXPECT_TRUE(CheckTrainingProgress(At(1)).ok());
  TrainingProgress diverged = At(3, std::nan(""));
  EXPECT_TRUE(CheckTrainingProgress(diverged).ok());  // a NaN loss is news, not an error
  EXPECT_EQ(CheckTrainingProgress(At(0)).message(), "progress.step is 0; it must be at least 1");
  TrainingProgress r = At(1);
  r.total_steps = -1;
  EXPECT_EQ(CheckTrainingProgress(r).message(), "progress.total_steps is -1; it must be 0 (unknown) or more");
  r = At(1);
  r.tokens_per_second = INFINITY;
  EXPECT_EQ(CheckTrainingProgress(r).message(), "progress.tokens_per_second is inf; it must be finite and at least 0");
  r = At(1);
  r.step_seconds = -2;
  EXPECT_EQ(CheckTrainingProgress(r).message(), "progress.step_seconds is -2; it must be finite and at least 0");
  EXPECT_EQ(CheckTrainingProgress(r).code(), absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace tpcoord
