// tpcoord's optimizers take exactly the steps of LibTorch's own torch::optim implementations.
#include "worker/training/optimizer.h"

#include <gtest/gtest.h>

namespace tpcoord {
namespace {

// Runs `steps` updates with both optimizers on the same parameters and gradients.
template <typename TorchOptimizer, typename Options>
void ExpectSameUpdates(const OptimizerConfig& config, Options torch_options, int steps = 5) {
  torch::manual_seed(3);
  torch::Tensor ours = torch::randn({4, 3});
  torch::Tensor theirs = ours.clone().set_requires_grad(true);
  TensorMap params = {{"w", ours}};
  Optimizer optimizer(config, params);
  TorchOptimizer reference({theirs}, torch_options);
  for (int step = 0; step < steps; ++step) {
    const torch::Tensor grad = torch::randn({4, 3});
    ours.mutable_grad() = grad.clone();
    theirs.mutable_grad() = grad.clone();
    optimizer.Step(config.lr);
    reference.step();
    ASSERT_TRUE(torch::allclose(ours, theirs.detach(), 1e-6, 1e-7)) << "step " << step;
  }
  EXPECT_EQ(optimizer.step_count(), steps);
}

TEST(OptimizerTest, AdamWMatchesLibTorch) {
  OptimizerConfig c;
  c.type = OptimizerConfig::Type::kAdamW;
  c.lr = 0.01;
  c.beta1 = 0.8;
  c.beta2 = 0.95;
  c.eps = 1e-6;
  c.weight_decay = 0.1;
  ExpectSameUpdates<torch::optim::AdamW>(
      c, torch::optim::AdamWOptions(0.01).betas({0.8, 0.95}).eps(1e-6).weight_decay(0.1));
}

TEST(OptimizerTest, AdamMatchesLibTorch) {
  OptimizerConfig c;
  c.type = OptimizerConfig::Type::kAdam;
  c.lr = 0.02;
  c.weight_decay = 0.05;
  ExpectSameUpdates<torch::optim::Adam>(c, torch::optim::AdamOptions(0.02).weight_decay(0.05));
}

TEST(OptimizerTest, SgdWithMomentumAndNesterovMatchesLibTorch) {
  OptimizerConfig c;
  c.type = OptimizerConfig::Type::kSgd;
  c.lr = 0.1;
  c.momentum = 0.9;
  c.nesterov = true;
  c.weight_decay = 0.01;
  ExpectSameUpdates<torch::optim::SGD>(
      c, torch::optim::SGDOptions(0.1).momentum(0.9).nesterov(true).weight_decay(0.01));
  c.nesterov = false;
  c.dampening = 0.1;
  ExpectSameUpdates<torch::optim::SGD>(c, torch::optim::SGDOptions(0.1).momentum(0.9).dampening(0.1).weight_decay(0.01));
}

TEST(OptimizerTest, StateRoundTripsAndContinuesIdentically) {
  OptimizerConfig c;
  c.type = OptimizerConfig::Type::kAdamW;
  torch::manual_seed(5);
  torch::Tensor a = torch::randn({3});
  torch::Tensor b = a.clone();
  Optimizer first(c, {{"p", a}});
  for (int i = 0; i < 3; ++i) {
    a.mutable_grad() = torch::full({3}, 0.5f * (i + 1));
    first.Step(0.01);
  }
  b.copy_(a);
  Optimizer second(c, {{"p", b}});
  ASSERT_TRUE(second.LoadState(first.State(), first.step_count()).ok());
  a.mutable_grad() = torch::full({3}, 2.0f);
  b.mutable_grad() = torch::full({3}, 2.0f);
  first.Step(0.01);
  second.Step(0.01);
  EXPECT_TRUE(torch::equal(a, b));
  EXPECT_EQ(first.State().size(), 2u);  // p.exp_avg, p.exp_avg_sq
}

TEST(OptimizerTest, LoadStateRejectsUnknownAndMisshapedEntries) {
  Optimizer optimizer(OptimizerConfig(), {{"p", torch::zeros({3})}});
  absl::Status unknown = optimizer.LoadState({{"q.exp_avg", torch::zeros({3})}}, 1);
  EXPECT_EQ(unknown.message(), "optimizer state does not fit: q.exp_avg (not a state of this optimizer)");
  absl::Status shape = optimizer.LoadState({{"p.exp_avg", torch::zeros({4})}}, 1);
  EXPECT_EQ(shape.message(), "optimizer state does not fit: p.exp_avg (shape [4], parameter [3])");
}

}  // namespace
}  // namespace tpcoord
