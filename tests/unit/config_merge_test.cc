// merge_tp_model_init_into_config (spec §1.4) and infer_config_dtype (§1.3): every step in order, every
// error text verbatim, and each row of the tp_model_init docstring table (§1.8).
#include "common/config_merge.h"

#include <gtest/gtest.h>

#include "common/deepspeed_error.h"

namespace tpcoord {
namespace {

using nlohmann::json;

TpInitArgs Recorded(int tp_size, Dtype dtype, std::optional<RankList> group = std::nullopt) {
  return TpInitArgs{tp_size, dtype, std::move(group)};
}

json Merge(const std::optional<TpInitArgs>& recorded, const json& config, bool has_mpu = false) {
  absl::StatusOr<json> merged = MergeTpInitIntoConfig(recorded, config, has_mpu);
  EXPECT_TRUE(merged.ok()) << merged.status();
  return merged.ok() ? *merged : json();
}

// The merge fails with exactly DeepSpeed's text.
void ExpectDeepSpeedError(const std::optional<TpInitArgs>& recorded, const json& config, absl::string_view text,
                          bool has_mpu = false) {
  absl::StatusOr<json> merged = MergeTpInitIntoConfig(recorded, config, has_mpu);
  ASSERT_FALSE(merged.ok()) << merged->dump();
  EXPECT_EQ(merged.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(merged.status().message(), text);
  EXPECT_TRUE(IsDeepSpeedError(merged.status()));
}

// --- infer_config_dtype (§1.3) ---

TEST(InferConfigDtypeTest, FollowsDeepSpeedsOrderAndTruthiness) {
  EXPECT_EQ(InferConfigDtype(json::object()), std::nullopt);
  EXPECT_EQ(InferConfigDtype({{"bf16", {{"enabled", true}}}}), Dtype::kBFloat16);
  EXPECT_EQ(InferConfigDtype({{"fp16", {{"enabled", true}}}}), Dtype::kFloat16);
  // bf16 wins when both are enabled.
  EXPECT_EQ(InferConfigDtype({{"bf16", {{"enabled", true}}}, {"fp16", {{"enabled", true}}}}), Dtype::kBFloat16);
  // "auto" (and any non-empty string) is truthy; false/0/"" are not.
  EXPECT_EQ(InferConfigDtype({{"fp16", {{"enabled", "auto"}}}}), Dtype::kFloat16);
  EXPECT_EQ(InferConfigDtype({{"fp16", {{"enabled", "false"}}}}), Dtype::kFloat16);
  EXPECT_EQ(InferConfigDtype({{"fp16", {{"enabled", false}}}}), std::nullopt);
  EXPECT_EQ(InferConfigDtype({{"fp16", {{"enabled", 0}}}}), std::nullopt);
  EXPECT_EQ(InferConfigDtype({{"fp16", {{"enabled", ""}}}}), std::nullopt);
  EXPECT_EQ(InferConfigDtype({{"fp16", json::object()}}), std::nullopt);
  // A non-dict section is ignored.
  EXPECT_EQ(InferConfigDtype({{"bf16", true}}), std::nullopt);
}

TEST(InferConfigDtypeTest, ReadsTheLegacyBfloat16Section) {  // a tpcoord improvement (G6)
  EXPECT_EQ(InferConfigDtype({{"bfloat16", {{"enabled", true}}}}), Dtype::kBFloat16);
  EXPECT_EQ(InferConfigDtype({{"bfloat16", {{"enabled", true}}}, {"fp16", {{"enabled", true}}}}), Dtype::kFloat16);
}

// --- the merge, step by step (§1.4) ---

TEST(MergeTest, Step1NothingRecordedReturnsTheConfigUnchanged) {
  const json config = {{"tensor_parallel", {{"autotp_size", 8}}}, {"fp16", {{"enabled", true}}}};
  EXPECT_EQ(Merge(std::nullopt, config, /*has_mpu=*/true), config);
}

// Config-only AutoTP: nothing recorded, the config's autotp_size must be the TP size the generation joined with.
TEST(MergeTest, ConfigOnlyAutotpSizeMustBeTheJoinedTpSize) {
  EXPECT_TRUE(CheckConfigOnlyTpSize({{"tensor_parallel", {{"autotp_size", 2}}}}, 2, 1).ok());
  EXPECT_TRUE(CheckConfigOnlyTpSize({{"tensor_parallel", {{"autotp_size", 2.0}}}}, 2, 1).ok());
  EXPECT_TRUE(CheckConfigOnlyTpSize({{"tensor_parallel", {{"autotp_size", nullptr}}}}, 1, 1).ok());
  EXPECT_TRUE(CheckConfigOnlyTpSize({{"tensor_parallel", {{"tp", {{"tp_size", 4}}}}}}, 1, 1).ok());  // rows 3-4
  EXPECT_TRUE(CheckConfigOnlyTpSize({{"train_batch_size", 8}}, 1, 1).ok());
  absl::Status s = CheckConfigOnlyTpSize({{"tensor_parallel", {{"autotp_size", 2}}}}, 1, 3);
  EXPECT_EQ(s.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(s.message(),
            "the config's tensor_parallel.autotp_size is 2, but generation 3 joined with tp_size 1 (nothing was "
            "recorded by tp_model_init, so each worker's Join sets the TP size): join with tp_size 2");
  EXPECT_EQ(CheckConfigOnlyTpSize({{"tensor_parallel", {{"autotp_size", "auto"}}}}, 1, 1).message(),
            "the config's tensor_parallel.autotp_size is auto, but generation 1 joined with tp_size 1 (nothing was "
            "recorded by tp_model_init, so each worker's Join sets the TP size): make it the TP size the workers "
            "join with (1)");
}

TEST(MergeTest, Step2RecordedGroupRejectsMpu) {
  ExpectDeepSpeedError(Recorded(2, Dtype::kFloat32, RankList{0, 1}), json::object(),
                       "tp_model_init provided tp_group; deepspeed.initialize must not receive mpu.", true);
}

TEST(MergeTest, Step4CreatesTheTensorParallelSectionAndFillsIt) {
  const json merged = Merge(Recorded(2, Dtype::kBFloat16), {{"train_batch_size", 8}});
  EXPECT_EQ(merged, json({{"train_batch_size", 8},
                          {"tensor_parallel", {{"autotp_size", 2}, {"tp", {{"tp_size", 2}}}}}}));
  EXPECT_EQ(Merge(Recorded(2, Dtype::kBFloat16), {{"tensor_parallel", nullptr}})["tensor_parallel"]["autotp_size"], 2);
}

TEST(MergeTest, Step4RejectsANonObjectSection) {
  absl::StatusOr<json> merged = MergeTpInitIntoConfig(Recorded(2, Dtype::kFloat32), {{"tensor_parallel", 5}}, false);
  ASSERT_FALSE(merged.ok());
  EXPECT_EQ(merged.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(merged.status().message(), "tensor_parallel must be an object or null, got \"5\"");
}

TEST(MergeTest, Step5AutotpSizeMustMatch) {
  const auto recorded = Recorded(2, Dtype::kFloat32);
  ExpectDeepSpeedError(recorded, {{"tensor_parallel", {{"autotp_size", 4}}}},
                       "Conflicting tensor_parallel.autotp_size in config (4) and tp_model_init (2).");
  // "disabled" and "auto" conflict with any tp_size; values print as they appeared in the JSON.
  ExpectDeepSpeedError(recorded, {{"tensor_parallel", {{"autotp_size", 0}}}},
                       "Conflicting tensor_parallel.autotp_size in config (0) and tp_model_init (2).");
  ExpectDeepSpeedError(recorded, {{"tensor_parallel", {{"autotp_size", "auto"}}}},
                       "Conflicting tensor_parallel.autotp_size in config (auto) and tp_model_init (2).");
  // Equal values pass, including Python-equal ones (2.0 == 2) and null (treated as absent).
  EXPECT_EQ(Merge(recorded, {{"tensor_parallel", {{"autotp_size", 2}}}})["tensor_parallel"]["autotp_size"], 2);
  EXPECT_EQ(Merge(recorded, {{"tensor_parallel", {{"autotp_size", 2.0}}}})["tensor_parallel"]["autotp_size"], 2.0);
  EXPECT_EQ(Merge(recorded, {{"tensor_parallel", {{"autotp_size", nullptr}}}})["tensor_parallel"]["autotp_size"], 2);
}

TEST(MergeTest, Step6TpMustBeADictWhenProvided) {
  const auto recorded = Recorded(2, Dtype::kFloat32);
  ExpectDeepSpeedError(recorded, {{"tensor_parallel", {{"tp", "x"}}}}, "tensor_parallel.tp must be a dict when provided.");
  ExpectDeepSpeedError(recorded, {{"tensor_parallel", {{"tp", json::array({1})}}}},
                       "tensor_parallel.tp must be a dict when provided.");
  // A falsy non-dict slips through and becomes a new dict, as in DeepSpeed.
  EXPECT_EQ(Merge(recorded, {{"tensor_parallel", {{"tp", json::array()}}}})["tensor_parallel"]["tp"],
            json({{"tp_size", 2}}));
  EXPECT_EQ(Merge(recorded, {{"tensor_parallel", {{"tp", 0}}}})["tensor_parallel"]["tp"], json({{"tp_size", 2}}));
}

TEST(MergeTest, Step6OnlyTheAliasTpIsMerged) {  // gap G9, kept as DeepSpeed does
  const json merged = Merge(Recorded(2, Dtype::kFloat32),
                            {{"tensor_parallel", {{"tensor_parallel", {{"tp_size", 8}}}}}});
  EXPECT_EQ(merged["tensor_parallel"]["tensor_parallel"], json({{"tp_size", 8}}));
  EXPECT_EQ(merged["tensor_parallel"]["tp"], json({{"tp_size", 2}}));
}

TEST(MergeTest, Step7TpSizeMustMatch) {
  const auto recorded = Recorded(2, Dtype::kFloat32);
  ExpectDeepSpeedError(recorded, {{"tensor_parallel", {{"tp", {{"tp_size", 4}}}}}},
                       "Conflicting tensor_parallel.tp.tp_size in config (4) and tp_model_init (2).");
  const json kept = Merge(recorded, {{"tensor_parallel", {{"tp", {{"tp_size", 2}, {"tp_grain_size", 64}}}}}});
  EXPECT_EQ(kept["tensor_parallel"]["tp"], json({{"tp_size", 2}, {"tp_grain_size", 64}}));
}

TEST(MergeTest, Step8RecordedGroupFillsAndMustMatchAsASortedList) {
  const auto recorded = Recorded(2, Dtype::kFloat32, RankList{2, 3});
  EXPECT_EQ(Merge(recorded, json::object())["tensor_parallel"]["tp"]["tp_group"], json::array({2, 3}));
  EXPECT_EQ(Merge(recorded, {{"tensor_parallel", {{"tp", {{"tp_group", {3, 2}}}}}}})["tensor_parallel"]["tp"]["tp_group"],
            json::array({2, 3}));
  ExpectDeepSpeedError(recorded, {{"tensor_parallel", {{"tp", {{"tp_group", {0, 1}}}}}}},
                       "Conflicting tensor_parallel.tp.tp_group in config and tp_model_init.");
  ExpectDeepSpeedError(recorded, {{"tensor_parallel", {{"tp", {{"tp_group", "tp"}}}}}},
                       "Conflicting tensor_parallel.tp.tp_group in config and tp_model_init.");
}

TEST(MergeTest, Step8GroupSizeMustEqualTpSize) {
  ExpectDeepSpeedError(Recorded(2, Dtype::kFloat32, RankList{0, 1, 2}), json::object(),
                       "tp_model_init tp_size (2) does not match tp_group size (3).");
}

TEST(MergeTest, Step10PrecisionMustMatchTheRecordedDtype) {
  ExpectDeepSpeedError(Recorded(2, Dtype::kFloat16), {{"bf16", {{"enabled", true}}}},
                       "Conflicting dtype: config uses torch.bfloat16 but tp_model_init requested torch.float16.");
  ExpectDeepSpeedError(Recorded(2, Dtype::kFloat32), {{"fp16", {{"enabled", "auto"}}}},
                       "Conflicting dtype: config uses torch.float16 but tp_model_init requested torch.float32.");
  ExpectDeepSpeedError(Recorded(2, Dtype::kFloat16), {{"bfloat16", {{"enabled", true}}}},
                       "Conflicting dtype: config uses torch.bfloat16 but tp_model_init requested torch.float16.");
  // No precision section (fp32): the check is skipped and nothing is filled (DeepSpeed never applies dtype).
  const json merged = Merge(Recorded(2, Dtype::kBFloat16), json::object());
  EXPECT_FALSE(merged.contains("bf16"));
  EXPECT_FALSE(merged["tensor_parallel"].contains("dtype"));
}

TEST(MergeTest, Step11TensorParallelDtypeAcceptsAliasesAndRejectsUnknownNames) {
  const auto recorded = Recorded(2, Dtype::kBFloat16);
  for (const char* same : {"bf16", "BF16", "bfloat16", "torch.bfloat16"}) {
    EXPECT_TRUE(MergeTpInitIntoConfig(recorded, {{"tensor_parallel", {{"dtype", same}}}}, false).ok()) << same;
  }
  ExpectDeepSpeedError(recorded, {{"tensor_parallel", {{"dtype", "fp16"}}}},
                       "Conflicting tensor_parallel.dtype in config (fp16) and tp_model_init (torch.bfloat16).");
  // DeepSpeed silently skips "float16"; tpcoord understands it.
  ExpectDeepSpeedError(recorded, {{"tensor_parallel", {{"dtype", "float16"}}}},
                       "Conflicting tensor_parallel.dtype in config (float16) and tp_model_init (torch.bfloat16).");
  // A non-string never equals a torch dtype.
  ExpectDeepSpeedError(recorded, {{"tensor_parallel", {{"dtype", 16}}}},
                       "Conflicting tensor_parallel.dtype in config (16) and tp_model_init (torch.bfloat16).");
  absl::StatusOr<json> unknown = MergeTpInitIntoConfig(recorded, {{"tensor_parallel", {{"dtype", "fp8"}}}}, false);
  ASSERT_FALSE(unknown.ok());
  EXPECT_EQ(unknown.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(unknown.status().message().find("tensor_parallel.dtype: unknown dtype \"fp8\""), absl::string_view::npos);
  EXPECT_TRUE(MergeTpInitIntoConfig(recorded, {{"tensor_parallel", {{"dtype", nullptr}}}}, false).ok());
}

TEST(MergeTest, StepsRunInDeepSpeedsOrder) {
  // autotp_size (step 5) is checked before tp (6), tp_size (7), the group (8) and dtype (10).
  const json everything_wrong = {{"tensor_parallel", {{"autotp_size", 8}, {"tp", "x"}}}, {"fp16", {{"enabled", true}}}};
  ExpectDeepSpeedError(Recorded(2, Dtype::kBFloat16), everything_wrong,
                       "Conflicting tensor_parallel.autotp_size in config (8) and tp_model_init (2).");
  ExpectDeepSpeedError(Recorded(2, Dtype::kBFloat16),
                       {{"tensor_parallel", {{"tp", {{"tp_size", 8}}}, {"dtype", "fp16"}}}, {"fp16", {{"enabled", true}}}},
                       "Conflicting tensor_parallel.tp.tp_size in config (8) and tp_model_init (2).");
  ExpectDeepSpeedError(Recorded(2, Dtype::kBFloat16), {{"tensor_parallel", {{"dtype", "fp16"}}}, {"fp16", {{"enabled", true}}}},
                       "Conflicting dtype: config uses torch.float16 but tp_model_init requested torch.bfloat16.");
}

TEST(MergeTest, NeverModifiesTheCallersConfig) {  // gap G10
  const json config = {{"tensor_parallel", {{"tp", {{"tp_grain_size", 8}}}}}};
  const json copy = config;
  Merge(Recorded(2, Dtype::kFloat32, RankList{0, 1}), config);
  EXPECT_EQ(config, copy);
  // ...and a failed merge returns no partial result.
  EXPECT_FALSE(MergeTpInitIntoConfig(Recorded(2, Dtype::kFloat32), {{"fp16", {{"enabled", true}}}}, false).ok());
}

// --- the 12-row outcome table (§1.8) ---

struct Row {
  int number;
  bool tpi, tpg, cfg, mpu;
  // "" means the merge succeeds.
  const char* error;
};

class OutcomeTableTest : public testing::TestWithParam<Row> {};

TEST_P(OutcomeTableTest, MatchesTheDocumentedDecision) {
  const Row row = GetParam();
  std::optional<TpInitArgs> recorded;
  if (row.tpi) recorded = Recorded(2, Dtype::kFloat32, row.tpg ? std::optional<RankList>(RankList{0, 1}) : std::nullopt);
  const json config = row.cfg ? json({{"tensor_parallel", {{"autotp_size", 2}}}}) : json::object();
  absl::StatusOr<json> merged = MergeTpInitIntoConfig(recorded, config, row.mpu);
  if (std::string(row.error).empty()) {
    ASSERT_TRUE(merged.ok()) << "row " << row.number << ": " << merged.status();
    if (row.tpi) {
      EXPECT_EQ((*merged)["tensor_parallel"]["autotp_size"], 2);
      EXPECT_EQ((*merged)["tensor_parallel"]["tp"]["tp_size"], 2);
      EXPECT_EQ((*merged)["tensor_parallel"]["tp"].contains("tp_group"), row.tpg);
    } else {
      EXPECT_EQ(*merged, config) << "row " << row.number;
    }
  } else {
    ASSERT_FALSE(merged.ok()) << "row " << row.number;
    EXPECT_EQ(merged.status().code(), absl::StatusCode::kFailedPrecondition);
    EXPECT_NE(merged.status().message().find(row.error), absl::string_view::npos)
        << "row " << row.number << ": " << merged.status();
  }
}

constexpr const char* kTpGroupPlusMpu = "tp_model_init provided tp_group; deepspeed.initialize must not receive mpu.";
constexpr const char* kMpuIgnored = "the mpu's TP group would be silently ignored";

INSTANTIATE_TEST_SUITE_P(
    Rows, OutcomeTableTest,
    testing::Values(Row{1, false, false, false, false, ""}, Row{2, false, false, false, true, ""},
                    Row{3, false, false, true, false, ""}, Row{4, false, false, true, true, ""},
                    Row{5, true, false, false, false, ""},
                    Row{6, true, false, false, true, kMpuIgnored},  // stricter than DeepSpeed
                    Row{7, true, false, true, false, ""},
                    Row{8, true, false, true, true, kMpuIgnored},  // stricter than DeepSpeed
                    Row{9, true, true, false, false, ""}, Row{10, true, true, false, true, kTpGroupPlusMpu},
                    Row{11, true, true, true, false, ""}, Row{12, true, true, true, true, kTpGroupPlusMpu}),
    [](const testing::TestParamInfo<Row>& info) { return "Row" + std::to_string(info.param.number); });

}  // namespace
}  // namespace tpcoord
