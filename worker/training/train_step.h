// One optimizer step of a sharded Llama, read top to bottom in train_step.cc: forward and backward over the
// micro batches, the gradients into fp32 masters, averaged over the data-parallel group in buckets, the
// fp16 loss scale updated, the global norm over the TP group and clipping, the optimizer's update, and the
// masters copied back into the model's dtype.
//
// Everything stays on the model's device: parameters, masters, optimizer state, activations and the loss.
// Nothing of a step reaches the host but what the caller reads (StepResult's tensors; reading one waits
// for the step), except in fp16, whose dynamic loss scaler must decide on the host whether to skip a step,
// as DeepSpeed's does. No op of a step draws random numbers (there is no dropout), so no RNG state moves.
//
// Not thread-safe. Every rank of the job runs the same steps in the same order (they are collectives).
#ifndef TPCOORD_WORKER_TRAINING_TRAIN_STEP_H_
#define TPCOORD_WORKER_TRAINING_TRAIN_STEP_H_

#include <cstdint>
#include <memory>
#include <vector>

#include <torch/torch.h>

#include "common/dtype.h"
#include "common/train_config.h"
#include "worker/comm/communicator.h"
#include "worker/model/llama_model.h"
#include "worker/model/tensor_map.h"
#include "worker/training/grad_buckets.h"
#include "worker/training/optimizer.h"

namespace tpcoord {

// Averages `pieces` (contiguous, flat, fp32 tensors on `group`'s device) over `group` in place: consecutive
// pieces flattened into buckets of at most `bucket_bytes` (grad_buckets.h), one all-reduce each; a piece
// larger than that is reduced where it is. Every piece is reduced exactly once.
void AverageOverGroup(Communicator& group, const std::vector<torch::Tensor>& pieces, int64_t bucket_bytes);

struct StepResult {
  torch::Tensor loss;       // 0-dim fp32 on the device: the mean next-token loss over the whole global batch
  torch::Tensor grad_norm;  // 0-dim fp64 on the device: the global norm before clipping (undefined if skipped)
  bool skipped = false;     // fp16 overflow: no update
};

class TrainStep {
 public:
  // The job's process groups: this rank's TP group (the model's layers are sharded over it), its DP group,
  // and the whole world. Each must outlive the step.
  struct Groups {
    Communicator* tp = nullptr;
    Communicator* dp = nullptr;
    Communicator* world = nullptr;
  };

  // `model`, already sharded and on its device in fp32, is cast to `dtype` (fp32 masters are kept for bf16
  // and fp16). `model` must outlive the step.
  TrainStep(LlamaModel& model, Dtype dtype, const TrainConfig& train, Groups groups,
            int64_t bucket_bytes = kGradBucketBytes);
  TrainStep(const TrainStep&) = delete;
  TrainStep& operator=(const TrainStep&) = delete;

  // One step over `micro_batches` (gradient accumulation: [micro, seq_len + 1] int64 tokens each, on the
  // model's device) at learning rate `lr`. Collective failures throw (std::exception), like the
  // communicators.
  StepResult Run(const std::vector<torch::Tensor>& micro_batches, double lr);

  Optimizer& optimizer() { return *optimizer_; }
  // fp32 masters by parameter name: the parameters themselves in fp32 runs.
  TensorMap& masters() { return masters_; }
  // The masters copied into the model's parameters (after a checkpoint was loaded into the masters).
  void CopyMastersToParams();
  double loss_scale() const { return loss_scale_; }
  void set_loss_scale(double scale) { loss_scale_ = scale; }

 private:
  void CopyGradsToMasters();
  // Averages the masters' gradients, and `loss`, over the DP group: consecutive gradients flattened into
  // buckets of at most bucket_bytes_, one all-reduce each.
  void AverageOverDp(torch::Tensor& loss);
  // fp16's dynamic loss scale, agreed by every rank: true when some gradient overflowed (skip the step).
  bool UpdateLossScale();
  // The global gradient norm (spec §4.7: partitioned parameters' squares summed over the TP group,
  // replicated ones counted once), and the gradients clipped to train.gradient_clipping.
  torch::Tensor ClipGradients();

  LlamaModel& model_;
  const Dtype dtype_;
  const TrainConfig& train_;
  const Groups groups_;
  const int64_t bucket_bytes_;
  TensorMap params_;       // the model's parameters (shards), Hugging Face names
  TensorMap masters_;      // fp32 masters: the parameters themselves in fp32 runs, copies otherwise
  TensorMap partitioned_;  // the subset of masters_ that is TP-partitioned
  std::unique_ptr<Optimizer> optimizer_;
  double loss_scale_ = 1.0;  // fp16 only
  int good_steps_ = 0;
};

}  // namespace tpcoord

#endif  // TPCOORD_WORKER_TRAINING_TRAIN_STEP_H_
