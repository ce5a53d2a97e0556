// How a job's training goes, as its members report it (SessionRequest.progress): the latest report, and a
// loss curve of bounded size for the status page. Held in memory only: a restarted coordinator draws the
// curve from the next report on.
//
// The curve keeps at most kMaxProgressPoints points. When it is full, every other point is dropped and from
// then on only every other report is kept, so a curve always spans the whole run at an even resolution.
// A report at or below the latest step (a generation resumed from an earlier checkpoint) replaces the
// curve from that step on: the curve shows the run the checkpoints kept.
//
// Thread-safety: none; the job's lock guards it.
#ifndef TPCOORD_COORDINATOR_JOB_PROGRESS_HISTORY_H_
#define TPCOORD_COORDINATOR_JOB_PROGRESS_HISTORY_H_

#include <cstdint>
#include <optional>
#include <vector>

#include "common/training_progress.h"

namespace tpcoord {

struct CurvePoint {
  int64_t step;
  double loss;
};

class ProgressHistory {
 public:
  // `report` must pass CheckTrainingProgress.
  void Add(const TrainingProgress& report);
  const std::optional<TrainingProgress>& latest() const { return latest_; }
  // In step order.
  const std::vector<CurvePoint>& curve() const { return curve_; }
  // The latest eval loss reported, if any.
  const std::optional<double>& eval_loss() const { return eval_loss_; }

 private:
  std::optional<TrainingProgress> latest_;
  std::optional<double> eval_loss_;
  std::vector<CurvePoint> curve_;
  int64_t stride_ = 1;   // keep one report in every stride_
  int64_t skipped_ = 0;  // reports since the curve's newest point
};

}  // namespace tpcoord

#endif  // TPCOORD_COORDINATOR_JOB_PROGRESS_HISTORY_H_
