// DeepSpeed's learning-rate schedules (deepspeed.runtime.lr_schedules), as pure functions of the step.
//
// DeepSpeed's schedulers keep last_batch_iteration, starting at -1, and step() after every optimizer
// step: optimizer step k (0-based) therefore runs with the rate for iteration k - 1, and iteration -1 is the
// value the scheduler set at construction (warmup_min_lr for WarmupLR/WarmupDecayLR, 0 for
// WarmupCosineLR). LearningRate() follows the same convention so that losses match DeepSpeed's step by step.
#ifndef TPCOORD_COMMON_LR_SCHEDULE_H_
#define TPCOORD_COMMON_LR_SCHEDULE_H_

#include <string>

#include "absl/status/statusor.h"
#include "nlohmann/json.hpp"

namespace tpcoord {

struct LrSchedule {
  enum class Type { kConstant, kWarmupLR, kWarmupDecayLR, kWarmupCosineLR };
  enum class Warmup { kLog, kLinear };

  Type type = Type::kConstant;
  Warmup warmup = Warmup::kLog;
  double base_lr = 1e-3;         // the optimizer's lr
  double warmup_min_lr = 0.0;    // WarmupLR, WarmupDecayLR
  double warmup_max_lr = 1e-3;   // WarmupLR, WarmupDecayLR (default: the optimizer's lr)
  int warmup_num_steps = 1000;   // at least 2, as DeepSpeed enforces
  int total_num_steps = 0;       // WarmupDecayLR, WarmupCosineLR
  double warmup_min_ratio = 0.0; // WarmupCosineLR
  double cos_min_ratio = 1e-4;   // WarmupCosineLR

  // The rate for optimizer step `step` (0-based), per the convention above.
  double LearningRate(int64_t step) const;
};

// Builds a schedule from a DeepSpeed "scheduler" section ({"type": ..., "params": {...}}); a null or
// missing section is a constant rate. Unknown types, unknown parameters and values out of range are
// INVALID_ARGUMENT naming the key.
absl::StatusOr<LrSchedule> ParseLrSchedule(const nlohmann::json& section, double base_lr);

}  // namespace tpcoord

#endif  // TPCOORD_COMMON_LR_SCHEDULE_H_
