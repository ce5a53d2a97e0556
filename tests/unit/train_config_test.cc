#include "common/train_config.h"

#include <gtest/gtest.h>

namespace tpcoord {
namespace {

using nlohmann::json;

TEST(TrainConfigTest, BatchTripleUsesTheDataParallelSize) {  // gap G11
  // 8 = 2 * 2 * D with D = 2 (e.g. world 4, tp 2).
  TrainConfig c = *ParseTrainConfig({{"train_batch_size", 8}, {"train_micro_batch_size_per_gpu", 2}}, 2);
  EXPECT_EQ(c.gradient_accumulation_steps, 2);
  EXPECT_EQ(c.micro_batch_size, 2);
  c = *ParseTrainConfig({{"train_batch_size", 8}, {"gradient_accumulation_steps", 2}}, 2);
  EXPECT_EQ(c.micro_batch_size, 2);
  c = *ParseTrainConfig({{"train_micro_batch_size_per_gpu", 4}, {"gradient_accumulation_steps", 3}}, 2);
  EXPECT_EQ(c.train_batch_size, 24);
  c = *ParseTrainConfig({{"train_batch_size", 8}}, 4);
  EXPECT_EQ(c.micro_batch_size, 2);
  EXPECT_EQ(c.gradient_accumulation_steps, 1);
  c = *ParseTrainConfig({{"train_micro_batch_size_per_gpu", 3}}, 2);
  EXPECT_EQ(c.train_batch_size, 6);
}

TEST(TrainConfigTest, InconsistentBatchesKeepDeepSpeedsWording) {
  absl::StatusOr<TrainConfig> c = ParseTrainConfig(
      {{"train_batch_size", 8}, {"train_micro_batch_size_per_gpu", 4}, {"gradient_accumulation_steps", 1}}, 4);
  ASSERT_FALSE(c.ok());
  EXPECT_EQ(c.status().message(),
            "Check batch related parameters. train_batch_size is not equal to micro_batch_per_gpu * gradient_acc_step "
            "* world_size 8 != 4 * 1 * 4 (tpcoord counts the data-parallel size world_size / tp_size here, where "
            "DeepSpeed counts every rank: gap G11)");
  EXPECT_EQ(ParseTrainConfig(json::object(), 1).status().message(),
            "Either train_batch_size or train_micro_batch_size_per_gpu needs to be provided");
  EXPECT_EQ(ParseTrainConfig({{"train_batch_size", 2}}, 4).status().message(),
            "Micro batch size per gpu: 0 has to be greater than 0");
  EXPECT_EQ(ParseTrainConfig({{"train_batch_size", -2}}, 1).status().message(),
            "train_batch_size must be an integer >= 1, got -2");
}

TEST(TrainConfigTest, OptimizerSchedulerPrecisionAndTheTpcoordSection) {
  const json config = {
      {"train_batch_size", 4},
      {"optimizer", {{"type", "AdamW"}, {"params", {{"lr", 0.002}, {"betas", {0.8, 0.9}}, {"weight_decay", 0.1}}}}},
      {"scheduler", {{"type", "WarmupLR"}, {"params", {{"warmup_num_steps", 5}}}}},
      {"gradient_clipping", 1.0},
      {"bf16", {{"enabled", true}}},
      {"steps_per_print", 5},
      {"tpcoord", {{"steps", 20}, {"seed", 7}, {"seq_len", 32}, {"data", "x.txt"}, {"checkpoint_interval", 10}}}};
  TrainConfig c = *ParseTrainConfig(config, 1);
  EXPECT_EQ(c.optimizer.type, OptimizerConfig::Type::kAdamW);
  EXPECT_DOUBLE_EQ(c.optimizer.lr, 0.002);
  EXPECT_DOUBLE_EQ(c.optimizer.beta1, 0.8);
  EXPECT_DOUBLE_EQ(c.optimizer.weight_decay, 0.1);
  EXPECT_EQ(c.schedule.type, LrSchedule::Type::kWarmupLR);
  EXPECT_DOUBLE_EQ(c.schedule.warmup_max_lr, 0.002);
  EXPECT_DOUBLE_EQ(c.gradient_clipping, 1.0);
  EXPECT_EQ(c.precision, Dtype::kBFloat16);
  EXPECT_EQ(c.steps_per_print, 5);
  EXPECT_EQ(c.steps, 20);
  EXPECT_EQ(c.seed, 7u);
  EXPECT_EQ(c.seq_len, 32);
  EXPECT_EQ(c.data, "x.txt");
  EXPECT_EQ(c.checkpoint_interval, 10);
}

TEST(TrainConfigTest, UnknownKeysAndTypesAreErrors) {
  EXPECT_EQ(ParseTrainConfig({{"train_batch_size", 4}, {"optimizer", {{"type", "Lamb"}}}}, 1).status().message(),
            "optimizer.type \"Lamb\" is not supported; use AdamW, Adam or SGD");
  EXPECT_EQ(ParseTrainConfig({{"train_batch_size", 4}, {"optimizer", {{"type", "SGD"}, {"params", {{"betas", 1}}}}}}, 1)
                .status()
                .message(),
            "optimizer.params.betas is not a known key; known keys are dampening, lr, momentum, nesterov, weight_decay");
  EXPECT_EQ(ParseTrainConfig({{"train_batch_size", 4}, {"tpcoord", {{"stepz", 1}}}}, 1).status().message(),
            "tpcoord.stepz is not a known key; known keys are checkpoint_interval, data, eval_windows, seed, seq_len, "
            "steps");
  EXPECT_EQ(ParseTrainConfig({{"train_batch_size", 4}, {"gradient_clipping", "1"}}, 1).status().message(),
            "gradient_clipping must be a number, got \"1\"");
}

TEST(TrainConfigTest, Fp16LossScale) {
  TrainConfig c = *ParseTrainConfig(
      {{"train_batch_size", 4}, {"fp16", {{"enabled", true}, {"loss_scale", 0}, {"initial_scale_power", 12}}}}, 1);
  EXPECT_EQ(c.precision, Dtype::kFloat16);
  EXPECT_EQ(c.loss_scale.static_scale, 0.0);
  EXPECT_EQ(c.loss_scale.initial_scale_power, 12);
}

}  // namespace
}  // namespace tpcoord
