// DeepSpeed's row-major (DP x TP) layout (spec §3.3) with its golden examples, and the shapes DeepSpeed
// accepts silently but tpcoord rejects (gap G12).
#include "common/mesh.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <map>
#include <utility>

namespace tpcoord {
namespace {

std::vector<RankList> AllRanks(const Mesh& mesh, GroupKind kind) {
  std::vector<RankList> groups;
  for (int i = 0; i < mesh.num_groups(kind); ++i) groups.push_back(mesh.Ranks({kind, i}));
  return groups;
}

TEST(MeshTest, World4Tp2) {
  Mesh mesh = *Mesh::Create(4, 2);
  EXPECT_EQ(mesh.dp_size(), 2);
  EXPECT_EQ(AllRanks(mesh, GroupKind::kTp), std::vector<RankList>({{0, 1}, {2, 3}}));
  EXPECT_EQ(AllRanks(mesh, GroupKind::kDp), std::vector<RankList>({{0, 2}, {1, 3}}));
  // Rank 2 gets DP (0,2) and TP (2,3).
  EXPECT_EQ(mesh.Ranks(mesh.dp_group_of(2)), RankList({0, 2}));
  EXPECT_EQ(mesh.Ranks(mesh.tp_group_of(2)), RankList({2, 3}));
  EXPECT_EQ(mesh.tp_rank(2), 0);
  EXPECT_EQ(mesh.dp_rank(2), 1);
}

TEST(MeshTest, World8Tp4) {
  Mesh mesh = *Mesh::Create(8, 4);
  EXPECT_EQ(AllRanks(mesh, GroupKind::kTp), std::vector<RankList>({{0, 1, 2, 3}, {4, 5, 6, 7}}));
  EXPECT_EQ(AllRanks(mesh, GroupKind::kDp), std::vector<RankList>({{0, 4}, {1, 5}, {2, 6}, {3, 7}}));
  EXPECT_EQ(mesh.Ranks({GroupKind::kWorld, 0}), RankList({0, 1, 2, 3, 4, 5, 6, 7}));
}

TEST(MeshTest, ExplicitPathGroupOrder) {
  Mesh mesh = *Mesh::Create(4, 2);
  std::vector<RankList> order;
  for (const GroupId& g : mesh.NewGroupOrder()) order.push_back(mesh.Ranks(g));
  EXPECT_EQ(order, std::vector<RankList>({{0, 2}, {1, 3}, {0, 1}, {2, 3}}));
}

TEST(MeshTest, LeadersMembershipAndNames) {
  Mesh mesh = *Mesh::Create(8, 4);
  EXPECT_EQ(mesh.Leader({GroupKind::kTp, 1}), 4);
  EXPECT_EQ(mesh.Leader({GroupKind::kDp, 3}), 3);
  EXPECT_EQ(mesh.Leader({GroupKind::kWorld, 0}), 0);
  EXPECT_TRUE(mesh.IsMember({GroupKind::kDp, 1}, 5));
  EXPECT_FALSE(mesh.IsMember({GroupKind::kDp, 1}, 4));
  EXPECT_FALSE(mesh.Contains({GroupKind::kTp, 2}));
  EXPECT_FALSE(mesh.Contains({GroupKind::kWorld, 1}));
  EXPECT_EQ(GroupName({GroupKind::kTp, 1}), "tp/1");
  EXPECT_EQ(mesh.TpGroupIndex({4, 5, 6, 7}), 1);
  EXPECT_EQ(mesh.TpGroupIndex({1, 2, 3, 4}), -1);
  EXPECT_EQ(mesh.TpGroupIndex({0, 1}), -1);
}

TEST(MeshTest, TpOneIsPureDataParallel) {
  Mesh mesh = *Mesh::Create(3, 1);
  EXPECT_EQ(AllRanks(mesh, GroupKind::kTp), std::vector<RankList>({{0}, {1}, {2}}));
  EXPECT_EQ(AllRanks(mesh, GroupKind::kDp), std::vector<RankList>({{0, 1, 2}}));
}

TEST(MeshTest, RejectsShapesThatLeaveRanksOut) {
  EXPECT_EQ(Mesh::Create(6, 4).status().message(),
            "6 is not divisible by 4 (world_size 6, tp_size 4): 2 rank(s) would belong to no TP group");
  EXPECT_EQ(Mesh::Create(4, 8).status().message(),
            "tp_size 8 is larger than world_size 4: a TP group cannot span more ranks than exist");
  EXPECT_EQ(Mesh::Create(4, 0).status().message(), "tp_size 0 must be at least 1");
  EXPECT_EQ(Mesh::Create(0, 1).status().code(), absl::StatusCode::kInvalidArgument);
}

TEST(MeshTest, GroupsOfMoreThan256RanksHaveOneUniqueIdRootPer256Ranks) {
  const Mesh mesh = *Mesh::Create(1000, 2);  // world 1000: 4 roots of 250; DP groups of 500: 2 roots; TP: 1
  const GroupId world{GroupKind::kWorld, 0}, dp1{GroupKind::kDp, 1}, tp3{GroupKind::kTp, 3};
  EXPECT_EQ(mesh.UniqueIdRoots(world), 4);
  EXPECT_EQ(mesh.UniqueIdRoots(dp1), 2);
  EXPECT_EQ(mesh.UniqueIdRoots(tp3), 1);
  std::vector<int> world_roots, dp_roots;
  for (int r = 0; r < 4; ++r) world_roots.push_back(mesh.RootRank({world, r}));
  for (int r = 0; r < 2; ++r) dp_roots.push_back(mesh.RootRank({dp1, r}));
  EXPECT_EQ(world_roots, std::vector<int>({0, 250, 500, 750}));
  EXPECT_EQ(dp_roots, std::vector<int>({1, 501}));  // DP rank 250 of column 1
  EXPECT_EQ(mesh.RootRank({tp3, 0}), mesh.Leader(tp3));
  // NCCL's split of 257 ranks over 2 roots: 129 + 128.
  EXPECT_EQ(Mesh::Create(257, 1)->RootRank({world, 1}), 129);
  EXPECT_EQ(Mesh::Create(256, 1)->UniqueIdRoots(world), 1);
  EXPECT_EQ(Mesh::Create(10000, 8)->UniqueIdRoots(world), 40);
  EXPECT_EQ(SlotName({world, 3}), "world root 3");
  EXPECT_EQ(SlotName({tp3, 0}), "tp/3");
}

TEST(MeshTest, EveryRootSlotIsMadeByExactlyTheRankThatListsIt) {
  for (const auto& [world_size, tp] : {std::pair{1, 1}, {4, 2}, {1000, 4}, {2600, 2}, {1030, 1}}) {
    const Mesh mesh = *Mesh::Create(world_size, tp);
    std::map<int, std::vector<UniqueIdSlot>> expected;
    for (GroupKind kind : {GroupKind::kTp, GroupKind::kDp, GroupKind::kWorld}) {
      for (int index = 0; index < mesh.num_groups(kind); ++index) {
        const GroupId group{kind, index};
        for (int root = 0; root < mesh.UniqueIdRoots(group); ++root) {
          const int rank = mesh.RootRank({group, root});
          EXPECT_TRUE(mesh.IsMember(group, rank)) << SlotName({group, root});
          expected[rank].push_back({group, root});
        }
      }
    }
    for (int rank = 0; rank < world_size; ++rank) {
      std::vector<UniqueIdSlot> want = expected[rank];
      std::sort(want.begin(), want.end());
      EXPECT_TRUE(mesh.RootSlotsOf(rank) == want) << "rank " << rank << " of " << world_size << " tp " << tp;
    }
  }
}

}  // namespace
}  // namespace tpcoord
