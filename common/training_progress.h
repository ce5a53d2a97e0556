// How a job's training goes, as a member reports it on its session (coordinator.proto, TrainingProgress):
// what tp-worker's rank 0 sends every steps_per_print steps and what the coordinator shows (tpctl watch,
// /metrics, the status page).
#ifndef TPCOORD_COMMON_TRAINING_PROGRESS_H_
#define TPCOORD_COMMON_TRAINING_PROGRESS_H_

#include <cstdint>
#include <optional>

#include "absl/status/status.h"

namespace tpcoord {

struct TrainingProgress {
  int64_t step = 0;         // optimizer steps done
  int64_t total_steps = 0;  // 0: unknown
  double loss = 0;          // of the latest step; any double (a diverged run reports NaN)
  double tokens_per_second = 0;
  double step_seconds = 0;
  std::optional<double> eval_loss;
};

// OK, or INVALID_ARGUMENT naming the field and its value: step >= 1 and at most total_steps (when known),
// the rates finite and >= 0.
absl::Status CheckTrainingProgress(const TrainingProgress& progress);

}  // namespace tpcoord

#endif  // TPCOORD_COMMON_TRAINING_PROGRESS_H_
