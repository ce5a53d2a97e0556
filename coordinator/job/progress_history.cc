#include "coordinator/job/progress_history.h"

#include <algorithm>
#include "common/limits.h"

namespace tpcoord {

void ProgressHistory::Add(const TrainingProgress& report) {
  if (report.eval_loss) eval_loss_ = report.eval_loss;
  const bool resumed = latest_ && report.step <= latest_->step;
  latest_ = report;
  if (resumed) {
    curve_.erase(std::lower_bound(curve_.begin(), curve_.end(), report.step,
                                  [](const CurvePoint& p, int64_t step) { return p.step < step; }),
                 curve_.end());
    skipped_ = stride_ - 1;  // this one is kept
  }
  if (++skipped_ < stride_) return;
  skipped_ = 0;
  curve_.push_back({report.step, report.loss});
  if (curve_.size() < kMaxProgressPoints) return;
  // Keep the points at even indices. If the newest one goes, the last kept point is one stride further
  // back, so the next one to keep is one (old) stride nearer.
  const bool newest_dropped = curve_.size() % 2 == 0;
  size_t kept = 0;
  for (size_t i = 0; i < curve_.size(); i += 2) curve_[kept++] = curve_[i];
  curve_.resize(kept);
  skipped_ = newest_dropped ? stride_ : 0;
  stride_ *= 2;
}

}  // namespace tpcoord
