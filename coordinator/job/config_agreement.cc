#include "coordinator/job/config_agreement.h"

#include "absl/strings/str_cat.h"
#include "common/ds_config.h"

namespace tpcoord {

void ConfigAgreement::SetReference(int rank, std::string text, nlohmann::json config) {
  reference_rank_ = rank;
  reference_text_ = std::move(text);
  reference_ = std::move(config);
  merged_by_tp_group_.clear();
}

absl::Status ConfigAgreement::Check(int rank, const nlohmann::json& config, uint64_t generation) const {
  if (!has_reference()) return absl::OkStatus();
  std::optional<JsonDifference> diff = FirstDifference(reference_, config);
  if (!diff) return absl::OkStatus();
  return absl::FailedPreconditionError(absl::StrCat(
      "the config of rank ", rank, " differs from the config rank ", reference_rank_, " merged first in generation ",
      generation, " at ", diff->path.empty() ? "/" : diff->path, ": rank ", reference_rank_, " has ", diff->left,
      ", rank ", rank, " has ", diff->right, "; every worker of a job must use the same DeepSpeed config"));
}

const std::string* ConfigAgreement::MergedFor(int tp_group) const {
  auto it = merged_by_tp_group_.find(tp_group);
  return it == merged_by_tp_group_.end() ? nullptr : &it->second;
}

}  // namespace tpcoord
