// Mirrors spec §5.1 TestTpLayerFwdBwd / TestParamsGather and the sub-parameter cases of §5.2, over real Gloo
// groups of T ranks (threads).
#include "worker/autotp/tp_layers.h"

#include <cstdint>
#include <vector>

#include <torch/torch.h>

#include "absl/status/status.h"
#include "common/shard_sizes.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/unit/gloo_ranks.h"

namespace tpcoord {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::tpcoord::testing::RunOnGlooRanks;

class TpLayersTest : public ::testing::TestWithParam<int> {
 protected:
  void SetUp() override { torch::set_num_threads(1); }
  int tp() const { return GetParam(); }
};

TpSplit NearEven(int64_t n, int t) { return *TpSplit::Create(*ShardSizes(n, t, "linear")); }

// The unsharded layer's output and gradients for loss = sum(x W^T + b).
struct Reference {
  torch::Tensor y, dx, dw, db;
};
Reference RunFull(const torch::Tensor& w, const torch::Tensor& b, const torch::Tensor& x_in) {
  const torch::Tensor weight = w.clone().requires_grad_(true);
  const torch::Tensor bias = b.clone().requires_grad_(true);
  const torch::Tensor x = x_in.clone().requires_grad_(true);
  const torch::Tensor y = torch::nn::functional::linear(x, weight, bias);
  y.sum().backward();
  return {y.detach(), x.grad(), weight.grad(), bias.grad()};
}

int64_t CountParameters(const torch::nn::Module& m) {
  int64_t n = 0;
  for (const auto& p : m.parameters()) n += p.numel();
  return n;
}

// A new leaf tensor: a copy of `t` in `type` that requires grad.
torch::Tensor Leaf(const torch::Tensor& t, torch::ScalarType type) {
  return t.detach().to(type, /*non_blocking=*/false, /*copy=*/true).requires_grad_(true);
}

bool Close(const torch::Tensor& a, const torch::Tensor& b, double tol = 1e-5) {
  return a.sizes() == b.sizes() && torch::allclose(a, b, tol, tol);
}

// ---------------------------------------------------------------------------------------------------------
// Forward and backward against the unsharded layer (spec testRowParallel / testColumnParallel).

TEST_P(TpLayersTest, RowParallelMatchesTheUnshardedLayer) {
  torch::manual_seed(0);
  const torch::Tensor w = torch::randn({128, 128}), b = torch::randn({128});
  for (const std::vector<int64_t>& shape : {std::vector<int64_t>{1, 128}, std::vector<int64_t>{2, 3, 128}}) {
    const torch::Tensor x = torch::randn(shape);
    const Reference full = RunFull(w, b, x);
    const TpSplit split = NearEven(128, tp());
    RunOnGlooRanks(tp(), [&](Communicator& comm) {
      const int r = comm.rank();
      RowParallelLinear layer = *RowParallelLinear::Create("row", w.clone().requires_grad_(true), b, split, &comm);
      const torch::Tensor x_r = split.Slice(x, -1, r).requires_grad_(true);  // the input arrives sharded
      const torch::Tensor y = layer->forward(x_r);
      y.sum().backward();
      EXPECT_TRUE(Close(y, full.y)) << "rank " << r;
      EXPECT_TRUE(Close(layer->bias.grad(), full.db, 1e-3));
      EXPECT_TRUE(Close(layer->weight.grad(), split.Slice(full.dw, 1, r), 1e-3));
      EXPECT_TRUE(Close(x_r.grad(), split.Slice(full.dx, -1, r)));
    });
  }
}

TEST_P(TpLayersTest, ColumnParallelMatchesTheUnshardedLayer) {
  torch::manual_seed(1);
  const torch::Tensor w = torch::randn({128, 128}), b = torch::randn({128});
  for (const std::vector<int64_t>& shape : {std::vector<int64_t>{1, 128}, std::vector<int64_t>{2, 3, 128}}) {
    const torch::Tensor x = torch::randn(shape);
    const Reference full = RunFull(w, b, x);
    const TpSplit split = NearEven(128, tp());
    RunOnGlooRanks(tp(), [&](Communicator& comm) {
      const int r = comm.rank();
      ColumnParallelLinear layer =
          *ColumnParallelLinear::Create("col", w.clone().requires_grad_(true), b, split, &comm);
      const torch::Tensor x_r = x.clone().requires_grad_(true);  // replicated input
      const torch::Tensor y = layer->forward(x_r);
      y.sum().backward();
      EXPECT_TRUE(Close(y, split.Slice(full.y, -1, r))) << "rank " << r;
      EXPECT_TRUE(Close(layer->weight.grad(), split.Slice(full.dw, 0, r), 1e-3));
      // The bias gradient sums over every leading dimension, 3-D inputs included (gap G19).
      EXPECT_TRUE(Close(layer->bias.grad(), split.Slice(full.db, 0, r), 1e-3));
      // The input gradient was all-reduced: every rank holds the full layer's.
      EXPECT_TRUE(Close(x_r.grad(), full.dx, 1e-4));
    });
  }
}

// spec testGatheredColumnParallel and testUnevenGatheredColumnParallel: out=128 and out=129.
TEST_P(TpLayersTest, GatheredColumnParallelReturnsTheFullOutputEvenWhenUneven) {
  for (int64_t out : {128, 129}) {
    torch::manual_seed(2);
    const torch::Tensor w = torch::randn({out, 128}), b = torch::randn({out});
    const torch::Tensor x = torch::randn({2, 5, 128});
    const Reference full = RunFull(w, b, x);
    const TpSplit split = NearEven(out, tp());
    if (out == 129) {
      EXPECT_EQ(split.local_sizes(),
                tp() == 2 ? std::vector<int64_t>({65, 64}) : std::vector<int64_t>({33, 32, 32, 32}));
    }
    RunOnGlooRanks(tp(), [&](Communicator& comm) {
      const int r = comm.rank();
      ColumnParallelLinear layer =
          *ColumnParallelLinear::Create("col", w.clone().requires_grad_(true), b, split, &comm, /*gather_output=*/true);
      EXPECT_EQ(layer->weight.size(0), split.local_size(r));
      const torch::Tensor x_r = x.clone().requires_grad_(true);
      const torch::Tensor y = layer->forward(x_r);
      y.sum().backward();
      EXPECT_TRUE(Close(y, full.y)) << "out " << out << " rank " << r;
      EXPECT_TRUE(Close(layer->weight.grad(), split.Slice(full.dw, 0, r), 1e-3));
      EXPECT_TRUE(Close(layer->bias.grad(), split.Slice(full.db, 0, r), 1e-3));
      EXPECT_TRUE(Close(x_r.grad(), full.dx, 1e-4));
    });
  }
}

// max |a - b| <= rel * max |b|: a tolerance for low precision, where elementwise relative error is
// meaningless for values near zero.
bool CloseRelativeToMax(const torch::Tensor& a, const torch::Tensor& b, double rel) {
  return a.sizes() == b.sizes() && (a.to(torch::kFloat) - b.to(torch::kFloat)).abs().max().item<double>() <=
                                       rel * b.to(torch::kFloat).abs().max().item<double>();
}

// A column layer feeding a row layer (an MLP: 64 -> 172 -> 64, uneven) is the unsharded MLP, gradients and
// all, in fp32 and in bf16 (whose all-reduces run in fp32).
TEST_P(TpLayersTest, ColumnThenRowIsTheUnshardedPairInFp32AndBf16) {
  torch::manual_seed(3);
  const torch::Tensor w1 = torch::randn({172, 64}) * 0.1, w2 = torch::randn({64, 172}) * 0.1;
  const torch::Tensor x = torch::randn({2, 7, 64});
  const TpSplit split = NearEven(172, tp());
  for (torch::ScalarType type : {torch::kFloat, torch::kBFloat16}) {
    // The unsharded pair in the same dtype: y, dx, dW1, dW2.
    torch::Tensor a = Leaf(w1, type), c = Leaf(w2, type), in = Leaf(x, type);
    const torch::Tensor y_full = torch::matmul(torch::silu(torch::matmul(in, a.t())), c.t());
    y_full.to(torch::kFloat).sum().backward();
    // bf16 keeps 8 mantissa bits: sums taken in another order (per shard, then all-reduced) land a few
    // ulps of the largest value apart, and how many depends on the CPU's bf16 kernels (5 ulps, 2.2%, on
    // an AVX2-only AMD EPYC).
    const double rel = type == torch::kFloat ? 1e-5 : 3e-2;

    RunOnGlooRanks(tp(), [&](Communicator& comm) {
      const int r = comm.rank();
      auto up = *ColumnParallelLinear::Create("mlp.up_proj", Leaf(w1, type), {}, split, &comm);
      auto down = *RowParallelLinear::Create("mlp.down_proj", Leaf(w2, type), {}, split, &comm);
      const torch::Tensor x_r = Leaf(x, type);
      const torch::Tensor y = down->forward(torch::silu(up->forward(x_r)));
      EXPECT_EQ(y.scalar_type(), type);
      y.to(torch::kFloat).sum().backward();
      EXPECT_TRUE(CloseRelativeToMax(y, y_full.detach(), rel)) << c10::toString(type) << " rank " << r;
      EXPECT_TRUE(CloseRelativeToMax(x_r.grad(), in.grad(), rel)) << c10::toString(type);
      EXPECT_TRUE(CloseRelativeToMax(up->weight.grad(), split.Slice(a.grad(), 0, r), rel)) << c10::toString(type);
      EXPECT_TRUE(CloseRelativeToMax(down->weight.grad(), split.Slice(c.grad(), 1, r), rel)) << c10::toString(type);
    });
  }
}

// ---------------------------------------------------------------------------------------------------------
// Gathering and re-sharding (spec TestParamsGather).

TEST_P(TpLayersTest, ParameterCountsAndExactGatherForEvenLayers) {
  torch::manual_seed(4);
  const int64_t h = 128;
  const torch::Tensor w = torch::randn({h, h}), b = torch::randn({h});
  const TpSplit split = NearEven(h, tp());
  RunOnGlooRanks(tp(), [&](Communicator& comm) {
    ColumnParallelLinear column = *ColumnParallelLinear::Create("linear", w, b, split, &comm);
    RowParallelLinear row = *RowParallelLinear::Create("linearallreduce", w, b, split, &comm);
    // T=4: column 16512 // 4 = 4128 (weight and bias split); row 16384 / 4 + 128 = 4224 (bias whole).
    EXPECT_EQ(CountParameters(*column), (h * h + h) / tp());
    EXPECT_EQ(CountParameters(*row), h * h / tp() + h);
    if (tp() == 4) {
      EXPECT_EQ(CountParameters(*column), 4128);
      EXPECT_EQ(CountParameters(*row), 4224);
    }
    EXPECT_TRUE(column->IsPartitioned("weight") && column->IsPartitioned("bias"));
    EXPECT_TRUE(row->IsPartitioned("weight") && !row->IsPartitioned("bias"));

    for (TensorParallelLayer* layer : std::vector<TensorParallelLayer*>{column.get(), row.get()}) {
      const torch::Tensor local_before = dynamic_cast<torch::nn::Module*>(layer)->named_parameters()["weight"].clone();
      absl::StatusOr<TensorMap> full = layer->GatherParameters();
      ASSERT_TRUE(full.ok()) << full.status();
      EXPECT_TRUE(torch::equal(full->at("weight"), w)) << layer->layer_name();
      EXPECT_TRUE(torch::equal(full->at("bias"), b)) << layer->layer_name();
      EXPECT_EQ(full->at("weight").numel() + full->at("bias").numel(), 16512);

      // Re-sharding the gathered tensors restores the shard in place (the parameter keeps its identity).
      torch::Tensor param = dynamic_cast<torch::nn::Module*>(layer)->named_parameters()["weight"];
      const void* storage = param.data_ptr();
      {
        torch::NoGradGuard no_grad;
        param.zero_();
      }
      ASSERT_TRUE(layer->ShardParameters(*full).ok());
      EXPECT_EQ(param.data_ptr(), storage);
      EXPECT_TRUE(torch::equal(param, local_before)) << layer->layer_name();
    }
    EXPECT_EQ(CountParameters(*column), (h * h + h) / tp());
  });
}

// spec test_uneven_linear_gather_params: out=129.
TEST_P(TpLayersTest, UnevenColumnGathersExactly) {
  torch::manual_seed(5);
  const torch::Tensor w = torch::randn({129, 128}), b = torch::randn({129});
  const TpSplit split = NearEven(129, tp());
  RunOnGlooRanks(tp(), [&](Communicator& comm) {
    ColumnParallelLinear layer = *ColumnParallelLinear::Create("linear", w, b, split, &comm);
    EXPECT_EQ(CountParameters(*layer), split.local_size(comm.rank()) * 129);
    absl::StatusOr<TensorMap> full = layer->GatherParameters();
    ASSERT_TRUE(full.ok()) << full.status();
    EXPECT_TRUE(torch::equal(full->at("weight"), w));
    EXPECT_TRUE(torch::equal(full->at("bias"), b));
    ASSERT_TRUE(layer->ShardParameters(*full).ok());
    EXPECT_EQ(CountParameters(*layer), split.local_size(comm.rank()) * 129);
  });
}

// ---------------------------------------------------------------------------------------------------------
// Sub-parameters (spec §5.2), at T=2 only: the widths are defined for two ranks.

class TpSubParamTest : public ::testing::Test {
 protected:
  void SetUp() override { torch::set_num_threads(1); }
};

// test_gather_uses_the_layers_own_shard_widths and test_gqa_uneven_qkv_fused_*: a fused q|k|v of
// (12, 12, 12) rows with K=3 splits each sub-parameter [8, 4].
TEST_F(TpSubParamTest, FusedQkvSplitsEachSubParameterOnKvGroupBoundaries) {
  std::vector<std::vector<int64_t>> widths;
  for (int j = 0; j < 3; ++j) widths.push_back(*ShardSizes(12, 2, "model.layers.0.self_attn.qkv_proj", 3));
  const TpSplit split = *TpSplit::CreateFused(widths);
  EXPECT_THAT(split.widths(), ElementsAre(ElementsAre(8, 4), ElementsAre(8, 4), ElementsAre(8, 4)));
  EXPECT_EQ(split.DebugString(), "[[8, 4], [8, 4], [8, 4]]");

  torch::manual_seed(6);
  const torch::Tensor w = torch::randn({36, 8}), b = torch::randn({36});
  const torch::Tensor x = torch::randn({2, 8});
  const Reference full = RunFull(w, b, x);
  RunOnGlooRanks(2, [&](Communicator& comm) {
    const int r = comm.rank();
    ColumnParallelLinear layer = *ColumnParallelLinear::Create("qkv_proj", w, b, split, &comm);
    EXPECT_EQ(layer->weight.size(0), r == 0 ? 24 : 12);
    // Rank 1 holds rows 8-11 of q, then of k (20-23), then of v (32-35).
    if (r == 1) {
      EXPECT_TRUE(torch::equal(layer->weight, torch::cat({w.slice(0, 8, 12), w.slice(0, 20, 24), w.slice(0, 32, 36)})));
    }
    absl::StatusOr<TensorMap> gathered = layer->GatherParameters();
    ASSERT_TRUE(gathered.ok()) << gathered.status();
    EXPECT_TRUE(torch::equal(gathered->at("weight"), w));
    EXPECT_TRUE(torch::equal(gathered->at("bias"), b));

    // The local output is this rank's piece of each of q, k and v.
    EXPECT_TRUE(Close(layer->forward(x), split.Slice(full.y, -1, r)));
    ColumnParallelLinear gathering = *ColumnParallelLinear::Create("qkv_proj", w, b, split, &comm, true);
    EXPECT_TRUE(Close(gathering->forward(x), full.y));
  });
}

// test_subparam_allreduce_single_param_weight_and_bias_roundtrip: a row layer over a fused (8, 4, 4)
// input keeps its bias whole and round-trips its weight.
TEST_F(TpSubParamTest, RowLayerOverAFusedInputRoundTrips) {
  const TpSplit split = *TpSplit::CreateFused({*ShardSizes(8, 2, "o"), *ShardSizes(4, 2, "o"), *ShardSizes(4, 2, "o")});
  torch::manual_seed(7);
  const torch::Tensor w = torch::randn({8, 16}), b = torch::randn({8});
  RunOnGlooRanks(2, [&](Communicator& comm) {
    RowParallelLinear layer = *RowParallelLinear::Create("proj", w, b, split, &comm);
    EXPECT_EQ(layer->weight.sizes(), (std::vector<int64_t>{8, 8}));
    EXPECT_TRUE(torch::equal(layer->bias, b));
    absl::StatusOr<TensorMap> gathered = layer->GatherParameters();
    ASSERT_TRUE(gathered.ok()) << gathered.status();
    EXPECT_TRUE(torch::equal(gathered->at("weight"), w));
    EXPECT_TRUE(torch::equal(gathered->at("bias"), b));
    ASSERT_TRUE(layer->ShardParameters(*gathered).ok());
    EXPECT_TRUE(torch::equal(layer->bias, b));
  });
}

// A rank may hold nothing (more ranks than KV heads): its zero-width column output feeds a zero-width row
// input, which contributes zeros to the all-reduce.
TEST_F(TpSubParamTest, ZeroWidthShardsContributeNothing) {
  torch::manual_seed(8);
  const torch::Tensor w1 = torch::randn({8, 6}), w2 = torch::randn({6, 8}), x = torch::randn({3, 6});
  torch::Tensor a = Leaf(w1, torch::kFloat), c = Leaf(w2, torch::kFloat), in = Leaf(x, torch::kFloat);
  const torch::Tensor y_full = torch::matmul(torch::matmul(in, a.t()), c.t());
  y_full.sum().backward();
  const TpSplit split = *TpSplit::Create({8, 0});
  RunOnGlooRanks(2, [&](Communicator& comm) {
    auto column = *ColumnParallelLinear::Create("q_proj", Leaf(w1, torch::kFloat), {}, split, &comm);
    auto row = *RowParallelLinear::Create("o_proj", Leaf(w2, torch::kFloat), {}, split, &comm);
    const torch::Tensor x_r = Leaf(x, torch::kFloat);
    const torch::Tensor hidden = column->forward(x_r);
    EXPECT_EQ(hidden.size(-1), comm.rank() == 0 ? 8 : 0);
    const torch::Tensor y = row->forward(hidden);
    y.sum().backward();
    EXPECT_TRUE(Close(y, y_full.detach()));
    EXPECT_TRUE(Close(x_r.grad(), in.grad()));
    EXPECT_EQ(row->weight.grad().sizes(), (std::vector<int64_t>{6, comm.rank() == 0 ? 8 : 0}));
    absl::StatusOr<TensorMap> full = row->GatherParameters();
    ASSERT_TRUE(full.ok()) << full.status();
    EXPECT_TRUE(torch::equal(full->at("weight"), w2));
  });
}

// ---------------------------------------------------------------------------------------------------------
// Misuse.

TEST_F(TpSubParamTest, CreationRejectsMismatchesAndAMissingGroup) {
  const torch::Tensor w = torch::randn({10, 6});
  // No communicator: no silent fallback to some other group (gap G20).
  absl::Status no_group = ColumnParallelLinear::Create("q_proj", w, {}, NearEven(10, 2), nullptr).status();
  EXPECT_EQ(no_group.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(no_group.message()), HasSubstr("'q_proj' needs a TP communicator"));

  RunOnGlooRanks(2, [&](Communicator& comm) {
    absl::Status wrong_sum = ColumnParallelLinear::Create("q_proj", w, {}, NearEven(12, 2), &comm).status();
    EXPECT_THAT(std::string(wrong_sum.message()), HasSubstr("covers 12 elements, but weight [10, 6] has 10"));
    EXPECT_EQ(RowParallelLinear::Create("o_proj", w, {}, NearEven(6, 3), &comm).status().code(),
              absl::StatusCode::kInvalidArgument);
    EXPECT_EQ(ColumnParallelLinear::Create("q_proj", w, torch::zeros({6}), NearEven(10, 2), &comm).status().code(),
              absl::StatusCode::kInvalidArgument);
    EXPECT_EQ(TpSplit::Create({2, -1}).status().code(), absl::StatusCode::kInvalidArgument);
  });
}

// Ranks that froze different splits of the same layer all fail the gather with the same diagnosis,
// instead of exchanging mis-sized buffers.
TEST_F(TpSubParamTest, RanksThatDisagreeOnTheSplitAllFailTheGather) {
  const torch::Tensor w = torch::randn({129, 4});
  RunOnGlooRanks(2, [&](Communicator& comm) {
    const TpSplit mine =
        *TpSplit::Create(comm.rank() == 0 ? std::vector<int64_t>{65, 64} : std::vector<int64_t>{64, 65});
    ColumnParallelLinear layer = *ColumnParallelLinear::Create("lm_head", w, {}, mine, &comm);
    absl::Status status = layer->GatherParameters().status();
    EXPECT_EQ(status.code(), absl::StatusCode::kFailedPrecondition);
    EXPECT_THAT(std::string(status.message()), HasSubstr("disagree on how lm_head.weight is partitioned"));
  });
}

INSTANTIATE_TEST_SUITE_P(TpSize, TpLayersTest, ::testing::Values(2, 4),
                         [](const ::testing::TestParamInfo<int>& info) { return "T" + std::to_string(info.param); });

}  // namespace
}  // namespace tpcoord
