// DeepSpeed's row-major (DP x TP) layout (spec §3.3) with its golden examples, and the shapes DeepSpeed
// accepts silently but tpcoord rejects (gap G12).
#include "common/mesh.h"

#include <gtest/gtest.h>

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

}  // namespace
}  // namespace tpcoord
