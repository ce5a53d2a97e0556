// The optimizers a DeepSpeed config can name (AdamW, Adam, SGD), with PyTorch's update rules, over named
// fp32 master weights.
//
// Every update is elementwise, so a parameter sharded over a TP group updates exactly as its slice of the
// full parameter would: TP=1 and TP=2 runs stay numerically together. The state (moments, momentum
// buffers) is named after the parameter it belongs to ("<param>.exp_avg"), which lets checkpoints gather
// and reshard it exactly like the parameter itself.
#ifndef TPCOORD_WORKER_TRAINING_OPTIMIZER_H_
#define TPCOORD_WORKER_TRAINING_OPTIMIZER_H_

#include <cstdint>
#include <string>

#include <torch/torch.h>

#include "absl/status/status.h"
#include "common/train_config.h"
#include "worker/model/tensor_map.h"

namespace tpcoord {

class Optimizer {
 public:
  // `params` are fp32 leaf tensors whose .grad() holds the gradient when Step runs; the optimizer keeps
  // references and updates them in place.
  Optimizer(const OptimizerConfig& config, TensorMap params);

  // One update with learning rate `lr`. Parameters without a gradient are skipped (as torch does).
  void Step(double lr);

  int64_t step_count() const { return step_count_; }
  const OptimizerConfig& config() const { return config_; }
  const TensorMap& params() const { return params_; }

  // "<param>.exp_avg" / "<param>.exp_avg_sq" (Adam, AdamW) or "<param>.momentum_buffer" (SGD with
  // momentum), shaped like their parameters; empty before the first Step.
  TensorMap State() const;
  // Restores State() and the step count (from a checkpoint, possibly resharded). INVALID_ARGUMENT naming
  // any entry that is unknown or mis-shaped; nothing changes on error.
  absl::Status LoadState(const TensorMap& state, int64_t step_count);

 private:
  const OptimizerConfig config_;
  TensorMap params_;
  TensorMap exp_avg_;     // Adam, AdamW
  TensorMap exp_avg_sq_;  // Adam, AdamW
  TensorMap momentum_;    // SGD
  int64_t step_count_ = 0;
};

}  // namespace tpcoord

#endif  // TPCOORD_WORKER_TRAINING_OPTIMIZER_H_
