// The merge that deepspeed.initialize runs between the recorded tp_model_init arguments and the DeepSpeed
// config (spec §1.3-1.4), with DeepSpeed's error texts, and the decisions from its docstring table (§1.8).
//
// Differences from DeepSpeed, each deliberate:
//   - Pure: the caller's config is never modified and nothing is allocated; a new merged config is returned
//     only when every check passed (G10). Process groups come from the coordinator's mesh (Join), not from
//     the merge (DeepSpeed's step 3 creates groups before validating).
//   - tp_group is a sorted list of global ranks and is compared by value (G2), never by handle identity.
//   - infer_config_dtype also reads the legacy "bfloat16" section, which DeepSpeed's main parser accepts as
//     a bf16 alias but the merge ignores (G6).
//   - tensor_parallel.dtype accepts every alias of common/dtype.h and rejects unknown strings; DeepSpeed
//     maps only fp16/bf16/fp32 and silently skips the check for any other spelling (G6).
//   - Structurally invalid sections (a tensor_parallel that is not an object) are INVALID_ARGUMENT naming
//     the field and value; DeepSpeed fails there with an AttributeError.
//   - Rows 6 and 8 of the outcome table are errors (see the table in config_merge.cc).
//   - Config-only AutoTP (row 3/4 with tensor_parallel.autotp_size, no tp_model_init): DeepSpeed takes the TP
//     size from the config; tpcoord's mesh comes from the workers' Joins, so a member's config whose
//     autotp_size differs from the generation's tp_size is refused (CheckConfigOnlyTpSize) instead of
//     training at another TP size than the config says.
#ifndef TPCOORD_COMMON_CONFIG_MERGE_H_
#define TPCOORD_COMMON_CONFIG_MERGE_H_

#include <cstdint>
#include <optional>

#include "absl/status/statusor.h"
#include "common/dtype.h"
#include "common/tp_init_args.h"
#include "nlohmann/json.hpp"

namespace tpcoord {

// spec §1.3: bf16 wins over fp16; a section counts when it is an object whose "enabled" is truthy (so
// "auto" counts, as in DeepSpeed). Also consults the legacy "bfloat16" section. nullopt: no precision
// section is enabled (fp32).
std::optional<Dtype> InferConfigDtype(const nlohmann::json& config);

// spec §1.4, every step in order. `recorded` is the job's record as it applies to this caller (see
// ArgsForMerge), nullopt when tp_model_init was never called; `has_mpu` says deepspeed.initialize was given
// an mpu. Conflicts are FAILED_PRECONDITION with DeepSpeed's exact text (DeepSpeedError).
absl::StatusOr<nlohmann::json> MergeTpInitIntoConfig(const std::optional<TpInitArgs>& recorded,
                                                     const nlohmann::json& config, bool has_mpu);

// Config-only AutoTP (nothing recorded by tp_model_init): the config's tensor_parallel.autotp_size, when
// present and not null, must equal `tp_size`, the TP size generation `generation` joined with. Else
// FAILED_PRECONDITION "the config's tensor_parallel.autotp_size is A, but generation G joined with tp_size T
// (nothing was recorded by tp_model_init, so each worker's Join sets the TP size): join with tp_size A".
// Anything else (no tensor_parallel object, no autotp_size) is OK: rows 1-4 of the table are unchanged.
absl::Status CheckConfigOnlyTpSize(const nlohmann::json& config, int tp_size, uint64_t generation);

}  // namespace tpcoord

#endif  // TPCOORD_COMMON_CONFIG_MERGE_H_
