// AutoTP on whole Llama models: a TP-sharded model over a real Gloo group (ranks as threads) must compute
// what the unsharded model computes, and give back exactly the weights it was built from.
#include "worker/autotp/autotp.h"

#include <cmath>
#include <string>
#include <thread>
#include <vector>

#include <torch/torch.h>

#include "absl/status/status.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/unit/gloo_ranks.h"
#include "worker/autotp/tp_layers.h"

namespace tpcoord {
namespace {

using ::testing::AllOf;
using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::tpcoord::testing::RunOnGlooRanks;

constexpr uint64_t kSeed = 2024;

class AutoTpTest : public ::testing::Test {
 protected:
  void SetUp() override { torch::set_num_threads(1); }
};

LlamaConfig Config(int64_t heads, int64_t kv_heads, int64_t head_dim, int64_t intermediate, bool tied = false) {
  LlamaConfig c;
  c.vocab_size = 96;
  c.num_attention_heads = heads;
  c.num_key_value_heads = kv_heads;
  c.head_dim = head_dim;
  c.hidden_size = heads * head_dim;
  c.intermediate_size = intermediate;
  c.num_hidden_layers = 2;
  c.max_position_embeddings = 64;
  c.rms_norm_eps = 1e-5;
  c.tie_word_embeddings = tied;
  return c;
}

LlamaModel Build(const LlamaConfig& config, Dtype dtype = Dtype::kFloat32, uint64_t seed = kSeed) {
  absl::StatusOr<LlamaModel> model = LlamaModel::Create(config, dtype, seed);
  EXPECT_TRUE(model.ok()) << model.status();
  return *std::move(model);
}

// max |a - b| <= rel * max |b|
bool CloseRelativeToMax(const torch::Tensor& a, const torch::Tensor& b, double rel) {
  if (a.sizes() != b.sizes()) return false;
  const double scale = b.to(torch::kDouble).abs().max().item<double>();
  return (a.to(torch::kDouble) - b.to(torch::kDouble)).abs().max().item<double>() <= rel * scale;
}

TensorMap Gradients(torch::nn::Module& model) {
  TensorMap grads;
  for (const auto& item : model.named_parameters()) grads.emplace(item.key(), item.value().grad());
  return grads;
}

// What the unsharded model computes.
struct Reference {
  TensorMap weights;
  torch::Tensor logits;
  torch::Tensor loss;
  TensorMap grads;
  double grad_norm = 0;
};

Reference RunUnsharded(const LlamaConfig& config, const torch::Tensor& ids, Dtype dtype = Dtype::kFloat32) {
  LlamaModel model = Build(config, dtype);
  Reference ref;
  for (const auto& [name, t] : model->StateDict()) ref.weights.emplace(name, t.detach().clone());
  ref.logits = model->forward(ids).detach();
  ref.loss = NextTokenLoss(model->forward(ids), ids);
  ref.loss.backward();
  ref.grads = Gradients(*model);
  double squares = 0;
  for (const auto& [name, g] : ref.grads) squares += g.to(torch::kDouble).pow(2).sum().item<double>();
  ref.grad_norm = std::sqrt(squares);
  return ref;
}

// Shards the model over T ranks and checks logits, loss, gradients, gradient norm and the gathered
// weights against the unsharded model.
void ExpectShardedMatchesUnsharded(const LlamaConfig& config, int tp, double rel = 1e-5) {
  torch::manual_seed(11);
  const torch::Tensor ids = torch::randint(0, config.vocab_size, {2, 12}, torch::kLong);
  const Reference ref = RunUnsharded(config, ids);
  RunOnGlooRanks(tp, [&](Communicator& comm) {
    LlamaModel model = Build(config);
    ASSERT_TRUE(ShardLlama(model, comm).ok());

    const torch::Tensor logits = model->forward(ids);
    EXPECT_TRUE(CloseRelativeToMax(logits, ref.logits, rel))
        << "rank " << comm.rank() << " max diff " << (logits - ref.logits).abs().max().item<double>();
    absl::StatusOr<torch::Tensor> loss = ComputeLoss(model, ids);
    ASSERT_TRUE(loss.ok()) << loss.status();
    EXPECT_NEAR(loss->item<double>(), ref.loss.item<double>(), rel * ref.loss.item<double>());
    loss->backward();

    absl::StatusOr<TensorMap> grads = GatherFullTensors(*model, Gradients(*model));
    ASSERT_TRUE(grads.ok()) << grads.status();
    ASSERT_EQ(grads->size(), ref.grads.size());
    for (const auto& [name, g] : ref.grads) {
      EXPECT_TRUE(CloseRelativeToMax(grads->at(name), g, rel)) << name << " rank " << comm.rank();
    }
    absl::StatusOr<double> norm = GlobalGradNorm(*model, comm);
    ASSERT_TRUE(norm.ok()) << norm.status();
    EXPECT_NEAR(*norm, ref.grad_norm, rel * ref.grad_norm);

    absl::StatusOr<TensorMap> weights = GatherFullStateDict(*model);
    ASSERT_TRUE(weights.ok()) << weights.status();
    ASSERT_EQ(weights->size(), ref.weights.size());
    for (const auto& [name, w] : ref.weights) EXPECT_TRUE(torch::equal(weights->at(name), w)) << name;
  });
}

// ---------------------------------------------------------------------------------------------------------
// The plan.

TEST_F(AutoTpTest, PlanSplitsAttentionOnKvGroupsAndTheMlpNearEvenly) {
  // 12 query heads in 6 KV groups of 2, head_dim 4, over 4 ranks: KV heads 2/2/1/1 (spec §6).
  absl::StatusOr<std::vector<TpProjection>> plan = PlanLlamaTp(Config(12, 6, 4, 90), 4);
  ASSERT_TRUE(plan.ok()) << plan.status();
  ASSERT_EQ(plan->size(), 14u);
  const auto& layer0 = *plan;
  EXPECT_EQ(layer0[0].name, "model.layers.0.self_attn.q_proj");
  EXPECT_EQ(layer0[0].kind, TpKind::kColumn);
  EXPECT_THAT(layer0[0].sizes, ElementsAre(16, 16, 8, 8));  // 4/4/2/2 query heads
  EXPECT_THAT(layer0[1].sizes, ElementsAre(8, 8, 4, 4));    // k: 2/2/1/1 KV heads
  EXPECT_THAT(layer0[2].sizes, ElementsAre(8, 8, 4, 4));    // v
  EXPECT_EQ(layer0[3].name, "model.layers.0.self_attn.o_proj");
  EXPECT_EQ(layer0[3].kind, TpKind::kRow);
  EXPECT_THAT(layer0[3].sizes, ElementsAre(16, 16, 8, 8));
  EXPECT_EQ(layer0[4].name, "model.layers.0.mlp.gate_proj");
  EXPECT_THAT(layer0[4].sizes, ElementsAre(23, 23, 22, 22));  // near-even: 90 is a multiple of 6, but "mlp"
  EXPECT_THAT(layer0[6].sizes, ElementsAre(23, 23, 22, 22));
  EXPECT_EQ((*plan)[13].name, "model.layers.1.mlp.down_proj");

  // More ranks than KV heads: the last ranks hold no attention at all.
  absl::StatusOr<std::vector<TpProjection>> sparse = PlanLlamaTp(Config(4, 2, 8, 64), 4);
  ASSERT_TRUE(sparse.ok()) << sparse.status();
  EXPECT_THAT((*sparse)[0].sizes, ElementsAre(16, 16, 0, 0));
  EXPECT_THAT((*sparse)[1].sizes, ElementsAre(8, 8, 0, 0));

  // The grain applies to the MLP only.
  AutoTpOptions options;
  options.grain = 16;
  absl::StatusOr<std::vector<TpProjection>> grained = PlanLlamaTp(Config(4, 2, 8, 100), 2, options);
  ASSERT_TRUE(grained.ok()) << grained.status();
  EXPECT_THAT((*grained)[4].sizes, ElementsAre(48, 52));  // 6 grains: 3/3, last rank +4
  EXPECT_THAT((*grained)[0].sizes, ElementsAre(16, 16));
}

TEST_F(AutoTpTest, PlanCheckRejectsAColumnRowPairThatDisagrees) {
  const LlamaConfig config = Config(4, 2, 8, 64);
  std::vector<TpProjection> plan = *PlanLlamaTp(config, 2);
  EXPECT_TRUE(CheckLlamaTpPlan(config, plan).ok());

  std::vector<TpProjection> bad_o = plan;
  bad_o[7 + 3].sizes = {24, 8};  // layer 1 o_proj: input split by half-heads
  absl::Status status = CheckLlamaTpPlan(config, bad_o);
  EXPECT_EQ(status.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(std::string(status.message()),
              AllOf(HasSubstr("model.layers.1."), HasSubstr("q_proj splits its output as [16, 16]"),
                    HasSubstr("o_proj splits its input as [24, 8]")));

  std::vector<TpProjection> bad_gqa = plan;  // q heads 2/2 but KV heads 2/0
  bad_gqa[1].sizes = {16, 0};
  bad_gqa[2].sizes = {16, 0};
  EXPECT_THAT(std::string(CheckLlamaTpPlan(config, bad_gqa).message()), HasSubstr("KV heads"));

  std::vector<TpProjection> bad_mlp = plan;
  bad_mlp[6].sizes = {31, 33};  // down_proj
  EXPECT_THAT(std::string(CheckLlamaTpPlan(config, bad_mlp).message()),
              AllOf(HasSubstr("gate_proj"), HasSubstr("down_proj splits its input as [31, 33]")));
}

// ---------------------------------------------------------------------------------------------------------
// Parity with the unsharded model (fp32, relative 1e-5).

TEST_F(AutoTpTest, TinyLlamaAtTp2MatchesTp1) { ExpectShardedMatchesUnsharded(*LlamaConfig::Preset("tiny"), 2); }

TEST_F(AutoTpTest, UnevenHeadsAndMlpAtTp2MatchTp1) {
  // 6 heads in 3 KV groups: KV heads [2, 1], query heads [4, 2]; MLP 101 -> [51, 50].
  ExpectShardedMatchesUnsharded(Config(6, 3, 8, 101), 2);
}

TEST_F(AutoTpTest, SixKvHeadsOverFourRanksMatchesTp1) { ExpectShardedMatchesUnsharded(Config(12, 6, 4, 90), 4); }

TEST_F(AutoTpTest, RanksWithoutAttentionHeadsStillMatchTp1) {
  // 2 KV heads over 4 ranks: ranks 2 and 3 compute no attention and contribute zeros to o_proj's sum.
  ExpectShardedMatchesUnsharded(Config(4, 2, 8, 64), 4);
}

TEST_F(AutoTpTest, TiedEmbeddingsAtTp2MatchTp1) {
  ExpectShardedMatchesUnsharded(Config(4, 2, 8, 64, /*tied=*/true), 2);
}

TEST_F(AutoTpTest, Bf16ShardedModelStaysCloseToTheUnshardedBf16Model) {
  const LlamaConfig config = *LlamaConfig::Preset("tiny");
  const torch::Tensor ids = torch::randint(0, config.vocab_size, {2, 12}, torch::kLong);
  LlamaModel unsharded = Build(config, Dtype::kBFloat16);
  const torch::Tensor expected = unsharded->forward(ids).detach();
  RunOnGlooRanks(2, [&](Communicator& comm) {
    LlamaModel model = Build(config, Dtype::kBFloat16);
    ASSERT_TRUE(ShardLlama(model, comm).ok());
    const torch::Tensor logits = model->forward(ids);
    EXPECT_EQ(logits.scalar_type(), torch::kBFloat16);
    EXPECT_TRUE(CloseRelativeToMax(logits, expected, 3e-2));
    NextTokenLoss(logits, ids).backward();  // bf16 gradients all-reduce in fp32
    absl::StatusOr<TensorMap> weights = GatherFullStateDict(*model);
    ASSERT_TRUE(weights.ok()) << weights.status();
    for (const auto& [name, w] : unsharded->StateDict()) EXPECT_TRUE(torch::equal(weights->at(name), w)) << name;
  });
}

// ---------------------------------------------------------------------------------------------------------
// What the sharded model exposes.

TEST_F(AutoTpTest, ShardingSetsLocalHeadsAndPartitionsOnlyTheProjections) {
  const LlamaConfig config = Config(6, 3, 8, 101);
  RunOnGlooRanks(2, [&](Communicator& comm) {
    LlamaModel model = Build(config);
    ASSERT_TRUE(ShardLlama(model, comm).ok());
    LlamaAttention attention = model->model->layer(1)->self_attn;
    EXPECT_EQ(attention->local_kv_heads(), comm.rank() == 0 ? 2 : 1);
    EXPECT_EQ(attention->local_heads(), comm.rank() == 0 ? 4 : 2);

    const TpParameterGroups groups = ClassifyTpParameters(*model);
    EXPECT_EQ(groups.partitioned.size(), 14u);
    for (const auto& [name, t] : groups.partitioned) {
      EXPECT_THAT(name, HasSubstr("_proj.weight"));
    }
    std::vector<std::string> replicated;
    for (const auto& [name, t] : groups.replicated) replicated.push_back(name);
    EXPECT_THAT(replicated,
                ElementsAre("lm_head.weight", "model.embed_tokens.weight", "model.layers.0.input_layernorm.weight",
                            "model.layers.0.post_attention_layernorm.weight", "model.layers.1.input_layernorm.weight",
                            "model.layers.1.post_attention_layernorm.weight", "model.norm.weight"));
    // The parameters keep Hugging Face names; partitioned ones hold this rank's shard.
    EXPECT_EQ(groups.partitioned.at("model.layers.0.self_attn.k_proj.weight").size(0), comm.rank() == 0 ? 16 : 8);
    EXPECT_EQ(groups.partitioned.at("model.layers.0.mlp.down_proj.weight").size(1), comm.rank() == 0 ? 51 : 50);
  });
}

TEST_F(AutoTpTest, LoadFullStateDictShardsAFullCheckpointIntoTheShardedModel) {
  const LlamaConfig config = *LlamaConfig::Preset("tiny");
  LlamaModel other = Build(config, Dtype::kFloat32, /*seed=*/99);
  const torch::Tensor ids = torch::randint(0, config.vocab_size, {1, 10}, torch::kLong);
  const torch::Tensor expected = other->forward(ids).detach();
  TensorMap checkpoint;
  for (const auto& [name, t] : other->StateDict()) checkpoint.emplace(name, t.detach().to(torch::kBFloat16));

  RunOnGlooRanks(2, [&](Communicator& comm) {
    LlamaModel model = Build(config);
    ASSERT_TRUE(ShardLlama(model, comm).ok());
    ASSERT_TRUE(LoadFullStateDict(*model, checkpoint).ok());  // bf16 -> fp32, sharded
    absl::StatusOr<TensorMap> back = GatherFullStateDict(*model);
    ASSERT_TRUE(back.ok()) << back.status();
    for (const auto& [name, t] : checkpoint) EXPECT_TRUE(torch::equal(back->at(name), t.to(torch::kFloat))) << name;

    TensorMap broken = checkpoint;
    broken.erase("model.norm.weight");
    broken["model.layers.0.self_attn.q_proj.weight"] = torch::zeros({64, 32});
    broken["model.rotary.inv_freq"] = torch::zeros({8});
    absl::Status status = LoadFullStateDict(*model, broken);
    EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
    EXPECT_THAT(std::string(status.message()),
                AllOf(HasSubstr("model.layers.0.self_attn.q_proj.weight: needs the full shape [64, 64], got [64, 32]"),
                      HasSubstr("unexpected model.rotary.inv_freq")));
    EXPECT_THAT(std::string(LoadFullStateDict(*model,
                                              [&] {
                                                TensorMap m = checkpoint;
                                                m.erase("model.norm.weight");
                                                return m;
                                              }())
                                .message()),
                HasSubstr("lacks: model.norm.weight"));
  });
}

// ---------------------------------------------------------------------------------------------------------
// Refusals and failures.

TEST_F(AutoTpTest, RanksWithDifferentFullModelsAllRefuseToShard) {
  const LlamaConfig config = *LlamaConfig::Preset("tiny");
  RunOnGlooRanks(2, [&](Communicator& comm) {
    LlamaModel model = Build(config, Dtype::kFloat32, comm.rank() == 1 ? kSeed + 1 : kSeed);
    absl::Status status = ShardLlama(model, comm);
    EXPECT_EQ(status.code(), absl::StatusCode::kFailedPrecondition);
    EXPECT_THAT(std::string(status.message()), HasSubstr("TP rank(s) 1 of gloo test differs from TP rank 0's"));
    EXPECT_TRUE(ClassifyTpParameters(*model).partitioned.empty());  // left whole
  });
}

TEST_F(AutoTpTest, ShardingTwiceIsRefusedAndAGroupOfOneChangesNothing) {
  const LlamaConfig config = *LlamaConfig::Preset("tiny");
  RunOnGlooRanks(1, [&](Communicator& comm) {
    LlamaModel model = Build(config);
    ASSERT_TRUE(ShardLlama(model, comm).ok());
    EXPECT_TRUE(ClassifyTpParameters(*model).partitioned.empty());
  });
  RunOnGlooRanks(2, [&](Communicator& comm) {
    LlamaModel model = Build(config);
    ASSERT_TRUE(ShardLlama(model, comm).ok());
    absl::Status again = ShardLlama(model, comm);
    EXPECT_EQ(again.code(), absl::StatusCode::kFailedPrecondition);
    EXPECT_THAT(std::string(again.message()), HasSubstr("already sharded"));
  });
}

// A TP peer that is gone makes the next forward fail with UNAVAILABLE through the Status entry point,
// within the group's timeout, instead of hanging or crashing.
TEST_F(AutoTpTest, ForwardAfterAPeerLeftIsUnavailable) {
  const LlamaConfig config = *LlamaConfig::Preset("tiny");
  const torch::Tensor ids = torch::randint(0, config.vocab_size, {1, 8}, torch::kLong);
  RunOnGlooRanks(
      2,
      [&](Communicator& comm) {
        LlamaModel model = Build(config);
        ASSERT_TRUE(ShardLlama(model, comm).ok());
        comm.Barrier();
        if (comm.rank() == 1) return;  // leaves: its communicator closes
        std::this_thread::sleep_for(std::chrono::milliseconds(200));
        absl::StatusOr<torch::Tensor> logits = ComputeLogits(model, ids);
        EXPECT_EQ(logits.status().code(), absl::StatusCode::kUnavailable) << logits.status();
        EXPECT_THAT(std::string(logits.status().message()), HasSubstr("gloo test (rank 0 of 2): all_reduce failed"));
      },
      std::chrono::milliseconds(3000));
}

}  // namespace
}  // namespace tpcoord
