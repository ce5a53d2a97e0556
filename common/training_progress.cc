#include "common/training_progress.h"

#include <cmath>

#include "absl/strings/str_cat.h"

namespace tpcoord {

absl::Status CheckTrainingProgress(const TrainingProgress& r) {
  auto bad = [](const char* field, auto value, const char* rule) {
    return absl::InvalidArgumentError(absl::StrCat("progress.", field, " is ", value, "; it must be ", rule));
  };
  if (r.step < 1) return bad("step", r.step, "at least 1");
  if (r.total_steps < 0) return bad("total_steps", r.total_steps, "0 (unknown) or more");
  if (r.total_steps > 0 && r.step > r.total_steps) {
    return absl::InvalidArgumentError(
        absl::StrCat("progress.step is ", r.step, ", past progress.total_steps ", r.total_steps));
  }
  if (!std::isfinite(r.tokens_per_second) || r.tokens_per_second < 0) {
    return bad("tokens_per_second", r.tokens_per_second, "finite and at least 0");
  }
  if (!std::isfinite(r.step_seconds) || r.step_seconds < 0) {
    return bad("step_seconds", r.step_seconds, "finite and at least 0");
  }
  return absl::OkStatus();
}

}  // namespace tpcoord
