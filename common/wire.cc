#include "common/wire.h"

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "common/limits.h"

namespace tpcoord {

absl::StatusOr<Dtype> DtypeFromProto(v1::Dtype dtype, absl::string_view field) {
  switch (dtype) {
    case v1::DTYPE_FP32: return Dtype::kFloat32;
    case v1::DTYPE_FP16: return Dtype::kFloat16;
    case v1::DTYPE_BF16: return Dtype::kBFloat16;
    default:
      return absl::InvalidArgumentError(absl::StrCat(field, " ", static_cast<int>(dtype),
                                                     " is not a dtype; use DTYPE_FP32, DTYPE_FP16 or DTYPE_BF16"));
  }
}

v1::Dtype DtypeToProto(Dtype dtype) {
  switch (dtype) {
    case Dtype::kFloat32: return v1::DTYPE_FP32;
    case Dtype::kFloat16: return v1::DTYPE_FP16;
    case Dtype::kBFloat16: return v1::DTYPE_BF16;
  }
  return v1::DTYPE_UNSPECIFIED;
}

absl::StatusOr<GroupId> GroupIdFromProto(const v1::GroupRef& group, absl::string_view field) {
  switch (group.kind()) {
    case v1::GROUP_KIND_TP: return GroupId{GroupKind::kTp, group.index()};
    case v1::GROUP_KIND_DP: return GroupId{GroupKind::kDp, group.index()};
    case v1::GROUP_KIND_WORLD: return GroupId{GroupKind::kWorld, group.index()};
    default:
      return absl::InvalidArgumentError(absl::StrCat(field, ".kind ", static_cast<int>(group.kind()),
                                                     " is not a group kind; use GROUP_KIND_TP, "
                                                     "GROUP_KIND_DP or GROUP_KIND_WORLD"));
  }
}

v1::GroupRef GroupIdToProto(const GroupId& group) {
  v1::GroupRef out;
  out.set_kind(group.kind == GroupKind::kTp   ? v1::GROUP_KIND_TP
               : group.kind == GroupKind::kDp ? v1::GROUP_KIND_DP
                                              : v1::GROUP_KIND_WORLD);
  out.set_index(group.index);
  return out;
}

v1::Group GroupToProto(const Mesh& mesh, const GroupId& group) {
  v1::Group out;
  const v1::GroupRef ref = GroupIdToProto(group);
  out.set_kind(ref.kind());
  out.set_index(ref.index());
  if (mesh.GroupSize(group) <= kMaxListedGroupRanks) {
    for (int r : mesh.Ranks(group)) out.add_ranks(r);
  }
  return out;
}

void TpInitRecordToProto(const TpInitRecord& record, v1::TpInitArgs* out) {
  out->set_tp_size(record.tp_size);
  out->set_dtype(DtypeToProto(record.dtype));
  out->set_has_tp_group(record.has_tp_group);
  for (const RankList& group : record.tp_groups) {
    out->add_tp_groups()->mutable_ranks()->Add(group.begin(), group.end());
  }
}

TrainingProgress TrainingProgressFromProto(const v1::TrainingProgress& p) {
  TrainingProgress progress{p.step(), p.total_steps(), p.loss(), p.tokens_per_second(), p.step_seconds(), std::nullopt};
  if (p.has_eval_loss()) progress.eval_loss = p.eval_loss();
  return progress;
}

void TrainingProgressToProto(const TrainingProgress& progress, v1::TrainingProgress* out) {
  out->set_step(progress.step);
  out->set_total_steps(progress.total_steps);
  out->set_loss(progress.loss);
  out->set_tokens_per_second(progress.tokens_per_second);
  out->set_step_seconds(progress.step_seconds);
  if (progress.eval_loss) out->set_eval_loss(*progress.eval_loss);
}

}  // namespace tpcoord
