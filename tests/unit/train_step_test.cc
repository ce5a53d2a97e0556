// The training step on any device: one forward, backward and optimizer step of a TP=2-sharded Llama on the
// `meta` device, where a tensor made on the default device (the CPU) instead of the model's fails as a
// device mismatch, so the step proves that every tensor it makes follows the model's device. And the
// data-parallel average in buckets: every gradient reduced exactly once.
//
// The communicators here are stand-ins for the other ranks of a group: meta tensors hold no data, so no
// real collective could move them; the real ones (Gloo between processes) run in the training tests.
#include "worker/training/train_step.h"

#include <gtest/gtest.h>

#include <stdexcept>

#include "absl/strings/str_cat.h"
#include "worker/autotp/autotp.h"

namespace tpcoord {
namespace {

// Rank `rank` of a group of `size` whose other ranks hold what this one holds; its tensors live on
// `device` (settable: sharding runs on the CPU, the step on meta). Every tensor it is given must be there.
class MirrorCommunicator : public Communicator {
 public:
  MirrorCommunicator(int rank, int size) : rank_(rank), size_(size) {}
  int rank() const override { return rank_; }
  int size() const override { return size_; }
  std::string name() const override { return absl::StrCat("mirror of ", size_); }
  torch::Device device() const override { return device_; }
  void set_device(torch::Device device) { device_ = device; }

  void AllReduceSum(torch::Tensor& tensor) override {
    Check(tensor);
    ++calls;
    if (!tensor.is_meta()) tensor.mul_(size_);  // every rank held the same
  }
  std::vector<torch::Tensor> AllGather(const torch::Tensor& tensor) override {
    Check(tensor);
    return std::vector<torch::Tensor>(size_, tensor.clone());
  }
  void Broadcast(torch::Tensor& tensor, int) override { Check(tensor); }
  void Barrier() override {}

  int calls = 0;

 private:
  void Check(const torch::Tensor& tensor) const {
    if (tensor.device() != device_) {
      throw std::invalid_argument(
          absl::StrCat(name(), ": a tensor on ", tensor.device().str(), ", not ", device_.str()));
    }
  }
  const int rank_;
  const int size_;
  torch::Device device_{torch::kCPU};
};

TrainConfig Config() {
  TrainConfig train;
  train.train_batch_size = 4;
  train.micro_batch_size = 2;
  train.gradient_accumulation_steps = 1;
  train.seq_len = 16;
  train.gradient_clipping = 1.0;
  train.optimizer.type = OptimizerConfig::Type::kAdamW;
  train.optimizer.weight_decay = 0.01;
  return train;
}

class TrainStepOnMetaTest : public ::testing::TestWithParam<Dtype> {};

TEST_P(TrainStepOnMetaTest, EveryTensorOfTheStepFollowsTheModelsDevice) {
  absl::StatusOr<LlamaConfig> llama = LlamaConfig::Preset("tiny");
  ASSERT_TRUE(llama.ok());
  // Built on meta: LibTorch 1.13 cannot move a module there (Variable::set_data refuses CPU -> meta), so
  // the model is made where it runs, as LlamaModel::Create allows on any device.
  const torch::Device meta(torch::kMeta);
  absl::StatusOr<LlamaModel> created = LlamaModel::Create(*llama, Dtype::kFloat32, 7, meta);
  ASSERT_TRUE(created.ok()) << created.status();
  LlamaModel model = *std::move(created);
  MirrorCommunicator tp(/*rank=*/1, /*size=*/2), dp(0, 2), world(1, 4);
  for (MirrorCommunicator* c : {&tp, &dp, &world}) c->set_device(meta);
  ASSERT_TRUE(ShardLlama(model, tp).ok());

  const TrainConfig train = Config();
  TrainStep step(model, GetParam(), train, TrainStep::Groups{&tp, &dp, &world}, /*bucket_bytes=*/64 * 1024);
  const torch::Tensor tokens = torch::zeros({2, train.seq_len + 1}, torch::TensorOptions(torch::kLong).device(meta));
  const int tp_calls = tp.calls;
  StepResult result = step.Run({tokens, tokens}, 1e-3);

  EXPECT_FALSE(result.skipped);
  EXPECT_TRUE(result.loss.is_meta());
  EXPECT_EQ(result.loss.dim(), 0);
  EXPECT_TRUE(result.grad_norm.is_meta());
  for (const auto& [name, p] : model->StateDict()) {
    EXPECT_TRUE(p.is_meta()) << name;
    EXPECT_EQ(p.scalar_type(), GetParam() == Dtype::kFloat32 ? torch::kFloat32 : torch::kBFloat16) << name;
  }
  for (const auto& [name, master] : step.masters()) {
    EXPECT_TRUE(master.is_meta()) << name;
    EXPECT_EQ(master.scalar_type(), torch::kFloat32) << name;
  }
  const TensorMap state = step.optimizer().State();
  EXPECT_EQ(state.size(), 2 * step.masters().size());  // exp_avg and exp_avg_sq of every parameter
  for (const auto& [name, t] : state) EXPECT_TRUE(t.is_meta()) << name;
  EXPECT_GT(tp.calls, tp_calls);  // the row-parallel layers' sums and the norm went over the TP group
  EXPECT_GE(dp.calls, 2);         // gradients in more than one 64 KiB bucket
}

INSTANTIATE_TEST_SUITE_P(Dtypes, TrainStepOnMetaTest, ::testing::Values(Dtype::kFloat32, Dtype::kBFloat16),
                         [](const ::testing::TestParamInfo<Dtype>& info) {
                           return info.param == Dtype::kFloat32 ? "fp32" : "bf16";
                         });

// A group of two whose other rank holds ones: after the average every element is (g + 1) / 2, which a
// second reduce would change again. Buckets follow the plan: 4 + 4 elements, then the large one alone,
// then 2 + 1.
TEST(AverageOverGroupTest, EveryPieceIsReducedExactlyOnceInItsBucket) {
  class OnesPeer : public Communicator {
   public:
    int rank() const override { return 0; }
    int size() const override { return 2; }
    std::string name() const override { return "ones peer"; }
    torch::Device device() const override { return torch::kCPU; }
    void AllReduceSum(torch::Tensor& t) override {
      sizes.push_back(t.numel());
      t.add_(1.0f);
    }
    std::vector<torch::Tensor> AllGather(const torch::Tensor& t) override { return {t, t}; }
    void Broadcast(torch::Tensor&, int) override {}
    void Barrier() override {}
    std::vector<int64_t> sizes;
  } peer;
  std::vector<torch::Tensor> pieces = {torch::arange(4, torch::kFloat32), torch::full({4}, 5.0f),
                                       torch::full({40}, 3.0f), torch::full({2}, 7.0f), torch::full({1}, 9.0f)};
  std::vector<torch::Tensor> before;
  for (const torch::Tensor& p : pieces) before.push_back(p.clone());
  AverageOverGroup(peer, pieces, /*bucket_bytes=*/32);
  EXPECT_EQ(peer.sizes, (std::vector<int64_t>{8, 40, 3}));
  for (size_t i = 0; i < pieces.size(); ++i) {
    EXPECT_TRUE(torch::equal(pieces[i], (before[i] + 1) / 2)) << i << ": " << pieces[i];
  }
}

}  // namespace
}  // namespace tpcoord
