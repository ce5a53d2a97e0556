// Config agreement within one job generation (spec gap G27: DeepSpeed never checks that its ranks were
// given the same config). The first config merged in a generation becomes its reference; every other
// member's config must equal it after parsing, or the merge fails naming the first differing JSON path and
// both values. Merged results are cached per TP group, so ten thousand members sending the reference text
// cost one merge per TP group.
//
// Not thread-safe: a plain part of its Job, used under the job's lock.
#ifndef TPCOORD_COORDINATOR_JOB_CONFIG_AGREEMENT_H_
#define TPCOORD_COORDINATOR_JOB_CONFIG_AGREEMENT_H_

#include <cstdint>
#include <optional>
#include <string>
#include <unordered_map>

#include "absl/status/status.h"
#include "nlohmann/json.hpp"

namespace tpcoord {

class ConfigAgreement {
 public:
  bool has_reference() const { return reference_rank_ >= 0; }
  int reference_rank() const { return reference_rank_; }
  const std::string& reference_text() const { return reference_text_; }
  const nlohmann::json& reference() const { return reference_; }
  void SetReference(int rank, std::string text, nlohmann::json config);

  // OK when there is no reference yet or `config` (from `rank`) equals it; otherwise FAILED_PRECONDITION
  // naming the first difference.
  absl::Status Check(int rank, const nlohmann::json& config, uint64_t generation) const;

  // The merged config of the reference for TP group `tp_group`, once merged.
  const std::string* MergedFor(int tp_group) const;
  void CacheMerged(int tp_group, std::string merged) { merged_by_tp_group_.emplace(tp_group, std::move(merged)); }

 private:
  int reference_rank_ = -1;
  std::string reference_text_;
  nlohmann::json reference_;
  std::unordered_map<int, std::string> merged_by_tp_group_;
};

}  // namespace tpcoord

#endif  // TPCOORD_COORDINATOR_JOB_CONFIG_AGREEMENT_H_
