// DeepSpeed's schedules, with the step convention of its engine (step k runs at iteration k - 1).
#include "common/lr_schedule.h"

#include <gtest/gtest.h>

#include <cmath>

namespace tpcoord {
namespace {

using nlohmann::json;

LrSchedule Parse(const json& section, double base_lr = 0.01) {
  absl::StatusOr<LrSchedule> s = ParseLrSchedule(section, base_lr);
  EXPECT_TRUE(s.ok()) << s.status();
  return s.ok() ? *s : LrSchedule();
}

TEST(LrScheduleTest, NoSchedulerIsConstant) {
  LrSchedule s = Parse(nullptr, 0.003);
  EXPECT_DOUBLE_EQ(s.LearningRate(0), 0.003);
  EXPECT_DOUBLE_EQ(s.LearningRate(1000), 0.003);
}

TEST(LrScheduleTest, WarmupLRLogAndLinear) {
  LrSchedule log = Parse({{"type", "WarmupLR"}, {"params", {{"warmup_max_lr", 0.01}, {"warmup_num_steps", 10}}}});
  EXPECT_DOUBLE_EQ(log.LearningRate(0), 0.0);  // the value set at construction
  EXPECT_DOUBLE_EQ(log.LearningRate(1), 0.0);  // log(1) = 0
  EXPECT_NEAR(log.LearningRate(2), 0.01 * std::log(2.0) / std::log(10.0), 1e-15);
  EXPECT_DOUBLE_EQ(log.LearningRate(11), 0.01);
  EXPECT_DOUBLE_EQ(log.LearningRate(500), 0.01);
  LrSchedule linear = Parse({{"type", "WarmupLR"},
                             {"params", {{"warmup_min_lr", 0.001}, {"warmup_num_steps", 10}, {"warmup_type", "linear"}}}});
  EXPECT_DOUBLE_EQ(linear.LearningRate(0), 0.001);
  EXPECT_NEAR(linear.LearningRate(6), 0.001 + (0.01 - 0.001) * 0.5, 1e-15);  // max defaults to the optimizer lr
}

TEST(LrScheduleTest, WarmupDecayLRDecaysLinearlyToTheMinimum) {
  LrSchedule s = Parse({{"type", "WarmupDecayLR"},
                        {"params", {{"warmup_max_lr", 0.01}, {"warmup_num_steps", 10}, {"total_num_steps", 20}}}});
  EXPECT_DOUBLE_EQ(s.LearningRate(11), 0.01);
  EXPECT_DOUBLE_EQ(s.LearningRate(16), 0.005);
  EXPECT_DOUBLE_EQ(s.LearningRate(21), 0.0);
  EXPECT_DOUBLE_EQ(s.LearningRate(40), 0.0);
}

TEST(LrScheduleTest, WarmupCosineLR) {
  LrSchedule s = Parse({{"type", "WarmupCosineLR"},
                        {"params", {{"warmup_num_steps", 10}, {"total_num_steps", 20}, {"cos_min_ratio", 0.1}}}});
  EXPECT_DOUBLE_EQ(s.LearningRate(0), 0.0);
  EXPECT_NEAR(s.LearningRate(11), 0.01 * (0.1 + 0.9 * (1 + std::cos(M_PI * 0.1)) / 2), 1e-15);
  EXPECT_NEAR(s.LearningRate(20), 0.001, 1e-15);
}

TEST(LrScheduleTest, WarmupStepsAreAtLeastTwo) {
  LrSchedule s = Parse({{"type", "WarmupLR"}, {"params", {{"warmup_num_steps", 0}}}});
  EXPECT_EQ(s.warmup_num_steps, 2);
}

TEST(LrScheduleTest, ErrorsNameTheKey) {
  EXPECT_EQ(ParseLrSchedule({{"type", "OneCycle"}}, 0.1).status().message(),
            "scheduler.type \"OneCycle\" is not supported; use WarmupLR, WarmupDecayLR or WarmupCosineLR");
  EXPECT_EQ(ParseLrSchedule({{"type", "WarmupLR"}, {"params", {{"warmup_max", 1}}}}, 0.1).status().message(),
            "scheduler.params.warmup_max is not a parameter of WarmupLR; its parameters are last_batch_iteration, "
            "warmup_max_lr, warmup_min_lr, warmup_num_steps, warmup_type");
  EXPECT_EQ(ParseLrSchedule({{"type", "WarmupLR"}, {"params", {{"warmup_type", "cubic"}}}}, 0.1).status().message(),
            "scheduler.params.warmup_type must be \"log\" or \"linear\", got \"cubic\"");
  EXPECT_FALSE(ParseLrSchedule({{"type", "WarmupDecayLR"}}, 0.1).ok());
  EXPECT_FALSE(ParseLrSchedule({{"type", "WarmupCosineLR"}, {"params", {{"total_num_steps", 5}}}}, 0.1).ok());
}

}  // namespace
}  // namespace tpcoord
