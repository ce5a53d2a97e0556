#include "common/shard_sizes.h"

#include <cstdint>
#include <numeric>
#include <vector>

#include "absl/status/status.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace tpcoord {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;

std::vector<int64_t> Sizes(int64_t n, int t, absl::string_view name, int k = 0, int grain = 1) {
  absl::StatusOr<std::vector<int64_t>> sizes = ShardSizes(n, t, name, k, grain);
  EXPECT_TRUE(sizes.ok()) << sizes.status();
  return sizes.ok() ? *sizes : std::vector<int64_t>{};
}

// spec §5.1 testUnevenGatheredColumnParallel: out=129.
TEST(ShardSizesTest, NearEvenSplitGivesTheFirstRanksOneMore) {
  EXPECT_THAT(Sizes(129, 2, "linear"), ElementsAre(65, 64));
  EXPECT_THAT(Sizes(129, 4, "linear"), ElementsAre(33, 32, 32, 32));
  EXPECT_THAT(Sizes(128, 4, "linear"), ElementsAre(32, 32, 32, 32));
  EXPECT_THAT(Sizes(3, 4, "linear"), ElementsAre(1, 1, 1, 0));
}

// spec §4.3: sizes (12,12,12) with K=3 and T=2 give per-sub-parameter widths [8,4].
TEST(ShardSizesTest, HeadAlignedSplitKeepsKvGroupsWhole) {
  EXPECT_THAT(Sizes(12, 2, "model.layers.0.self_attn.qkv_proj", 3), ElementsAre(8, 4));
  // spec §4.8: num_heads 12, K=3, T=2 -> 4 on rank 1.
  EXPECT_EQ(Sizes(12, 2, "model.layers.0.self_attn", 3)[1], 4);
}

// spec §6: 6 kv heads over 4 ranks gives 2/2/1/1.
TEST(ShardSizesTest, SixKvHeadsOverFourRanksIsTwoTwoOneOne) {
  const int64_t head_dim = 16;
  EXPECT_THAT(Sizes(6 * head_dim, 4, "model.layers.0.self_attn.k_proj", 6),
              ElementsAre(2 * head_dim, 2 * head_dim, head_dim, head_dim));
  // q has 12 heads in 6 groups of 2: the same group split, twice as wide.
  EXPECT_THAT(Sizes(12 * head_dim, 4, "model.layers.0.self_attn.q_proj", 6),
              ElementsAre(4 * head_dim, 4 * head_dim, 2 * head_dim, 2 * head_dim));
}

TEST(ShardSizesTest, RanksBeyondTheKvHeadCountHoldNothing) {
  EXPECT_THAT(Sizes(2 * 8, 4, "model.layers.0.self_attn.k_proj", 2), ElementsAre(8, 8, 0, 0));
}

TEST(ShardSizesTest, MlpAndVocabularyLayersNeverTakeTheHeadAlignedSplit) {
  // 12 % 3 == 0, but these names force the near-even split (spec §5.2: hidden_size 12 under "...mlp").
  for (absl::string_view name : {"model.layers.0.mlp", "model.layers.0.mlp.gate_proj", "x.up_proj", "x.down_proj",
                                 "experts.0.w1", "experts.0.w2", "experts.0.w3", "lm_head", "embed_out"}) {
    EXPECT_FALSE(IsHeadAlignedSplit(12, name, 3)) << name;
    EXPECT_THAT(Sizes(12, 2, name, 3), ElementsAre(6, 6)) << name;
  }
  // Only the exact names lm_head / embed_out are excluded, not any name containing them.
  EXPECT_TRUE(IsHeadAlignedSplit(12, "model.lm_head_proj", 3));
}

TEST(ShardSizesTest, HeadAlignedSplitNeedsKnownKvHeadsThatDivideN) {
  EXPECT_FALSE(IsHeadAlignedSplit(12, "attn.q_proj", 0));
  EXPECT_FALSE(IsHeadAlignedSplit(13, "attn.q_proj", 3));
  EXPECT_THAT(Sizes(13, 2, "attn.q_proj", 3), ElementsAre(7, 6));
}

TEST(ShardSizesTest, GrainSplitDealsWholeGrainsAndGivesTheRemainderToTheLastRank) {
  // 100 = 12 grains of 8 + 4: grains 3/3/3/3, last rank also takes 4.
  EXPECT_THAT(Sizes(100, 4, "mlp.up_proj", 0, 8), ElementsAre(24, 24, 24, 28));
  // 13 grains of 8 over 4: 4/3/3/3 grains.
  EXPECT_THAT(Sizes(104, 4, "mlp.up_proj", 0, 8), ElementsAre(32, 24, 24, 24));
  // N < grain: plain near-even split.
  EXPECT_THAT(Sizes(5, 2, "mlp.up_proj", 0, 8), ElementsAre(3, 2));
  // Grain does not affect the head-aligned rule.
  EXPECT_THAT(Sizes(12, 2, "attn.q_proj", 3, 8), ElementsAre(8, 4));
}

TEST(ShardSizesTest, SizesAlwaysSumToN) {
  for (int t = 1; t <= 8; ++t) {
    for (int64_t n = 0; n <= 64; ++n) {
      for (int grain : {1, 3, 8}) {
        for (int k : {0, 1, 2, 3, 6}) {
          std::vector<int64_t> sizes = Sizes(n, t, "attn.q_proj", k, grain);
          ASSERT_EQ(static_cast<int>(sizes.size()), t);
          EXPECT_EQ(std::accumulate(sizes.begin(), sizes.end(), int64_t{0}), n);
        }
      }
    }
  }
}

TEST(ShardSizesTest, TpSizeOneKeepsEverything) { EXPECT_THAT(Sizes(129, 1, "linear", 3), ElementsAre(129)); }

TEST(ShardSizesTest, RejectsNonsenseArguments) {
  EXPECT_EQ(ShardSizes(-1, 2, "x").status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(ShardSizes(8, 0, "x").status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(ShardSizes(8, 2, "x", -1).status().code(), absl::StatusCode::kInvalidArgument);
  absl::Status bad_grain = ShardSizes(8, 2, "model.layers.0.mlp.up_proj", 0, 0).status();
  EXPECT_EQ(bad_grain.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(bad_grain.message()), HasSubstr("model.layers.0.mlp.up_proj"));
}

}  // namespace
}  // namespace tpcoord
