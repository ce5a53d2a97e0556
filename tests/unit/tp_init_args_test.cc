// The record rule of deepspeed.tp_model_init (spec §1.2) as tpcoord applies it per job.
#include "common/tp_init_args.h"

#include <gtest/gtest.h>

#include "absl/strings/str_cat.h"
#include "common/deepspeed_error.h"

namespace tpcoord {
namespace {

constexpr absl::string_view kConflict = "Conflicting tp_model_init arguments detected across multiple calls.";

TpInitArgs Args(int tp_size, Dtype dtype, std::optional<std::vector<int>> group = std::nullopt) {
  return *NormalizeTpInitArgs(tp_size, dtype, std::move(group));
}

TpInitRecord Record(const std::vector<TpInitArgs>& calls) {
  std::optional<TpInitRecord> record;
  for (const TpInitArgs& call : calls) record = *RecordTpInitArgs(record, call);
  return *record;
}

void ExpectConflict(const TpInitRecord& current, const TpInitArgs& call) {
  absl::StatusOr<TpInitRecord> result = RecordTpInitArgs(current, call);
  ASSERT_FALSE(result.ok());
  EXPECT_EQ(result.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(result.status().message(), kConflict);
  EXPECT_TRUE(IsDeepSpeedError(result.status()));
}

TEST(RecordTpInitArgsTest, FirstCallRecords) {
  absl::StatusOr<TpInitRecord> record = RecordTpInitArgs(std::nullopt, Args(2, Dtype::kBFloat16));
  ASSERT_TRUE(record.ok());
  EXPECT_EQ(record->tp_size, 2);
  EXPECT_EQ(record->dtype, Dtype::kBFloat16);
  EXPECT_FALSE(record->has_tp_group);
  EXPECT_TRUE(record->tp_groups.empty());
}

TEST(RecordTpInitArgsTest, IdenticalCallIsANoOp) {
  TpInitRecord record = Record({Args(2, Dtype::kBFloat16, std::vector<int>{1, 0})});
  absl::StatusOr<TpInitRecord> again = RecordTpInitArgs(record, Args(2, Dtype::kBFloat16, std::vector<int>{0, 1}));
  ASSERT_TRUE(again.ok());
  EXPECT_EQ(again->tp_groups, std::vector<RankList>({{0, 1}}));
  TpInitRecord plain = Record({Args(4, Dtype::kFloat32)});
  EXPECT_TRUE(RecordTpInitArgs(plain, Args(4, Dtype::kFloat32)).ok());
}

TEST(RecordTpInitArgsTest, DifferentTpSizeConflicts) {
  ExpectConflict(Record({Args(2, Dtype::kBFloat16)}), Args(4, Dtype::kBFloat16));
}

TEST(RecordTpInitArgsTest, DifferentDtypeConflicts) {
  ExpectConflict(Record({Args(2, Dtype::kBFloat16)}), Args(2, Dtype::kFloat16));
}

TEST(RecordTpInitArgsTest, GroupOnOnlyOneSideConflicts) {
  ExpectConflict(Record({Args(2, Dtype::kBFloat16)}), Args(2, Dtype::kBFloat16, std::vector<int>{0, 1}));
  ExpectConflict(Record({Args(2, Dtype::kBFloat16, std::vector<int>{0, 1})}), Args(2, Dtype::kBFloat16));
}

TEST(RecordTpInitArgsTest, GroupsCompareAsSortedRankListsNotByIdentity) {  // gap G2
  TpInitRecord record = Record({Args(2, Dtype::kFloat32, std::vector<int>{3, 2})});
  absl::StatusOr<TpInitRecord> same = RecordTpInitArgs(record, Args(2, Dtype::kFloat32, std::vector<int>{2, 3}));
  ASSERT_TRUE(same.ok());
  EXPECT_EQ(same->tp_groups.size(), 1u);
  // DeepSpeed accepts any group of the same size; an overlapping different one is a conflict here.
  ExpectConflict(record, Args(2, Dtype::kFloat32, std::vector<int>{1, 2}));
}

TEST(RecordTpInitArgsTest, DisjointGroupsOfEqualSizeAreTheJobsTpGroups) {
  TpInitRecord record = Record({Args(2, Dtype::kFloat32, std::vector<int>{0, 1}),
                                Args(2, Dtype::kFloat32, std::vector<int>{2, 3}),
                                Args(2, Dtype::kFloat32, std::vector<int>{0, 1})});
  EXPECT_EQ(record.tp_groups, std::vector<RankList>({{0, 1}, {2, 3}}));
  EXPECT_TRUE(record.has_tp_group);
}

TEST(NormalizeTpInitArgsTest, RejectsTpSizeBelowOneAndAboveTheLimit) {
  for (int tp_size : {0, -1, kMaxTpSize + 1}) {
    absl::StatusOr<TpInitArgs> args = NormalizeTpInitArgs(tp_size, Dtype::kFloat32, std::nullopt);
    ASSERT_FALSE(args.ok());
    EXPECT_EQ(args.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_NE(args.status().message().find(absl::StrCat("tp_size ", tp_size)), absl::string_view::npos);
  }
}

TEST(NormalizeTpInitArgsTest, RejectsMalformedGroups) {
  auto message = [](std::vector<int> group) {
    return std::string(NormalizeTpInitArgs(2, Dtype::kFloat32, std::move(group)).status().message());
  };
  EXPECT_EQ(message({}), "tp_group is empty; give its global ranks, or leave it unset");
  EXPECT_EQ(message({0, -1}), "tp_group [0, -1] holds rank -1; ranks must be in [0, 1000000)");
  EXPECT_EQ(message({1, 1}), "tp_group [1, 1] lists rank 1 more than once");
}

TEST(NormalizeTpInitArgsTest, GroupSizeMustEqualTpSizeWithDeepSpeedsText) {
  absl::StatusOr<TpInitArgs> args = NormalizeTpInitArgs(2, Dtype::kFloat32, std::vector<int>{0, 1, 2});
  ASSERT_FALSE(args.ok());
  EXPECT_EQ(args.status().message(), "tp_model_init tp_size (2) does not match tp_group size (3).");
  EXPECT_TRUE(IsDeepSpeedError(args.status()));
}

TEST(ArgsForMergeTest, MembersGetTheirOwnGroupStandaloneMergesTheFirst) {
  TpInitRecord record = Record({Args(2, Dtype::kFloat32, std::vector<int>{2, 3}),
                                Args(2, Dtype::kFloat32, std::vector<int>{0, 1})});
  EXPECT_EQ(*ArgsForMerge(record, nullptr).tp_group, RankList({2, 3}));
  const RankList mine = {0, 1};
  EXPECT_EQ(*ArgsForMerge(record, &mine).tp_group, mine);
  TpInitRecord plain = Record({Args(2, Dtype::kFloat32)});
  EXPECT_FALSE(ArgsForMerge(plain, &mine).tp_group.has_value());
}

TEST(DescribeTpInitArgsTest, ReadsLikeDeepSpeedValues) {
  EXPECT_EQ(DescribeTpInitArgs(Args(2, Dtype::kBFloat16, std::vector<int>{1, 0})),
            "tp_size=2 dtype=torch.bfloat16 tp_group=[0, 1]");
  EXPECT_EQ(DescribeTpInitArgs(Args(4, Dtype::kFloat16)), "tp_size=4 dtype=torch.float16 tp_group=None");
}

}  // namespace
}  // namespace tpcoord
