// The training settings a worker reads from its merged DeepSpeed config: the batch triple, optimizer,
// scheduler, gradient clipping, precision and logging, plus a "tpcoord" section for what DeepSpeed has no
// key for. Every key that is read is validated; an error names the key and the value.
#ifndef TPCOORD_COMMON_TRAIN_CONFIG_H_
#define TPCOORD_COMMON_TRAIN_CONFIG_H_

#include <cstdint>
#include <optional>
#include <string>

#include "absl/status/statusor.h"
#include "common/dtype.h"
#include "common/lr_schedule.h"
#include "nlohmann/json.hpp"

namespace tpcoord {

struct OptimizerConfig {
  enum class Type { kAdamW, kAdam, kSgd };
  Type type = Type::kAdamW;
  double lr = 1e-3;
  double beta1 = 0.9;
  double beta2 = 0.999;
  double eps = 1e-8;
  double weight_decay = 0.0;  // AdamW: decoupled; Adam and SGD: added to the gradient (torch semantics)
  double momentum = 0.0;      // SGD
  double dampening = 0.0;     // SGD
  bool nesterov = false;      // SGD
};

// fp16 dynamic loss scaling, as DeepSpeed configures it ("loss_scale": 0 means dynamic).
struct LossScaleConfig {
  double static_scale = 0.0;  // > 0: a fixed scale
  int initial_scale_power = 16;
  int loss_scale_window = 1000;
  double min_loss_scale = 1.0;
  int hysteresis = 2;
};

struct TrainConfig {
  // The batch triple, with the data-parallel size D = world_size / tp_size (not W: gap G11):
  // train_batch_size = train_micro_batch_size_per_gpu * gradient_accumulation_steps * D.
  int train_batch_size = 0;
  int micro_batch_size = 0;
  int gradient_accumulation_steps = 1;

  OptimizerConfig optimizer;
  LrSchedule schedule;
  double gradient_clipping = 0.0;      // 0: off
  std::optional<Dtype> precision;      // bf16/fp16 section (infer_config_dtype); nullopt: fp32
  LossScaleConfig loss_scale;          // fp16 only
  int steps_per_print = 10;

  // "tpcoord": {"steps", "seed", "seq_len", "data", "checkpoint_interval", "eval_windows"}.
  int64_t steps = 100;
  uint64_t seed = 1234;
  int seq_len = 64;
  std::string data;                    // "" unless the config names the training data
  int64_t checkpoint_interval = 0;     // 0: only at the end
  int64_t eval_windows = 0;            // the first N held-out windows; 0: every one
};

// Reads the merged config for a mesh with `dp_size` data-parallel ranks. The batch-triple errors keep
// DeepSpeed's wording, with the data-parallel size in place of the world size.
absl::StatusOr<TrainConfig> ParseTrainConfig(const nlohmann::json& config, int dp_size);

}  // namespace tpcoord

#endif  // TPCOORD_COMMON_TRAIN_CONFIG_H_
