#include "common/tp_init_args.h"

#include <algorithm>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/deepspeed_error.h"

namespace tpcoord {
namespace {

constexpr absl::string_view kConflict = "Conflicting tp_model_init arguments detected across multiple calls.";

bool Overlaps(const RankList& a, const RankList& b) {
  // Both sorted: a linear merge finds a common rank.
  auto i = a.begin();
  auto j = b.begin();
  while (i != a.end() && j != b.end()) {
    if (*i == *j) return true;
    *i < *j ? ++i : ++j;
  }
  return false;
}

}  // namespace

std::string RankListString(const RankList& ranks) { return absl::StrCat("[", absl::StrJoin(ranks, ", "), "]"); }

std::string DescribeTpInitArgs(const TpInitArgs& args) {
  return absl::StrCat("tp_size=", args.tp_size, " dtype=", TorchDtypeName(args.dtype), " tp_group=",
                      args.tp_group ? RankListString(*args.tp_group) : "None");
}

absl::StatusOr<TpInitArgs> NormalizeTpInitArgs(int tp_size, Dtype dtype,
                                               std::optional<std::vector<int>> tp_group) {
  if (tp_size < 1 || tp_size > kMaxTpSize) {
    return absl::InvalidArgumentError(
        absl::StrCat("tp_size ", tp_size, " is out of range; it must be between 1 and ", kMaxTpSize));
  }
  TpInitArgs args{tp_size, dtype, std::nullopt};
  if (!tp_group.has_value()) return args;

  RankList ranks = std::move(*tp_group);
  if (ranks.empty()) {
    return absl::InvalidArgumentError("tp_group is empty; give its global ranks, or leave it unset");
  }
  for (int r : ranks) {
    if (r < 0 || r >= kMaxWorldSize) {
      return absl::InvalidArgumentError(absl::StrCat("tp_group ", RankListString(ranks), " holds rank ", r,
                                                     "; ranks must be in [0, ", kMaxWorldSize, ")"));
    }
  }
  RankList sorted = ranks;
  std::sort(sorted.begin(), sorted.end());
  auto dup = std::adjacent_find(sorted.begin(), sorted.end());
  if (dup != sorted.end()) {
    return absl::InvalidArgumentError(
        absl::StrCat("tp_group ", RankListString(ranks), " lists rank ", *dup, " more than once"));
  }
  if (static_cast<int>(sorted.size()) != tp_size) {
    return DeepSpeedError(absl::StrCat("tp_model_init tp_size (", tp_size, ") does not match tp_group size (",
                                       sorted.size(), ")."));
  }
  args.tp_group = std::move(sorted);
  return args;
}

absl::StatusOr<TpInitRecord> RecordTpInitArgs(const std::optional<TpInitRecord>& current,
                                              const TpInitArgs& call) {
  if (!current.has_value()) {
    TpInitRecord record{call.tp_size, call.dtype, call.tp_group.has_value(), {}};
    if (call.tp_group) record.tp_groups.push_back(*call.tp_group);
    return record;
  }
  const TpInitRecord& rec = *current;
  if (rec.tp_size != call.tp_size || rec.dtype != call.dtype) return DeepSpeedError(kConflict);
  if (!rec.has_tp_group && !call.tp_group) return rec;
  if (rec.has_tp_group != call.tp_group.has_value()) return DeepSpeedError(kConflict);

  const RankList& group = *call.tp_group;
  for (const RankList& recorded : rec.tp_groups) {
    if (recorded == group) return rec;
    if (recorded.size() != group.size() || Overlaps(recorded, group)) return DeepSpeedError(kConflict);
  }
  TpInitRecord updated = rec;
  updated.tp_groups.push_back(group);
  return updated;
}

TpInitArgs ArgsForMerge(const TpInitRecord& record, const RankList* member_tp_group) {
  TpInitArgs args{record.tp_size, record.dtype, std::nullopt};
  if (record.has_tp_group) args.tp_group = member_tp_group ? *member_tp_group : record.tp_groups.front();
  return args;
}

}  // namespace tpcoord
