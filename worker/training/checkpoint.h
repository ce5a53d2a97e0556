// Checkpoints on disk: a Hugging Face model directory (model.safetensors + config.json, loadable by
// transformers' from_pretrained) plus what resuming needs: optimizer.safetensors (the optimizer's moments,
// full, under "<param>.<state>" names) and trainer_state.json. Everything is stored unsharded, so a
// checkpoint written at one TP size loads at any other.
#ifndef TPCOORD_WORKER_TRAINING_CHECKPOINT_H_
#define TPCOORD_WORKER_TRAINING_CHECKPOINT_H_

#include <cstdint>
#include <optional>
#include <string>

#include "absl/status/statusor.h"
#include "worker/model/llama_model.h"
#include "worker/model/tensor_map.h"

namespace tpcoord {

struct TrainerState {
  int64_t step = 0;             // optimizer steps taken
  int64_t optimizer_steps = 0;  // the optimizer's own count (differs from step after fp16 overflow skips)
  double loss_scale = 1.0;
  int tp_size = 1;
  int world_size = 1;
  std::string dtype = "fp32";
  std::string job;  // the job that wrote it ("" in checkpoints written before jobs were recorded)
};

struct Checkpoint {
  LlamaConfig config;
  TensorMap model;                    // full, Hugging Face names
  TensorMap optimizer;                // empty for a plain Hugging Face directory
  std::optional<TrainerState> state;  // nullopt for a plain Hugging Face directory
};

// Writes the checkpoint into `dir` atomically: into "<dir>.tmp", then renamed over `dir`.
absl::Status WriteCheckpoint(const std::string& dir, const LlamaConfig& config, Dtype dtype, const TensorMap& model,
                             const TensorMap& optimizer, const TrainerState& state);

// Reads a checkpoint written by WriteCheckpoint, or a plain Hugging Face model directory.
absl::StatusOr<Checkpoint> ReadCheckpoint(const std::string& dir);

// The newest complete intermediate checkpoint of job `job` under `output_dir`: the "checkpoint-<step>"
// directory with the highest step whose trainer state names the job (WriteCheckpoint renames a directory
// into place only once it is whole, so a "checkpoint-<step>.tmp" left by a crash never counts; another
// job's checkpoints in the same directory never do either). nullopt if there is none.
struct SavedCheckpoint {
  int64_t step = 0;
  std::string dir;
};
std::optional<SavedCheckpoint> NewestCheckpoint(const std::string& output_dir, const std::string& job);
// Removes job `job`'s intermediate checkpoints under `output_dir` but the `keep` newest, so that a long run
// does not fill its disk with recovery points it will never resume from.
void PruneCheckpoints(const std::string& output_dir, const std::string& job, int keep);

}  // namespace tpcoord

#endif  // TPCOORD_WORKER_TRAINING_CHECKPOINT_H_
