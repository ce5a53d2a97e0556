// The worker's C++ API, shaped like DeepSpeed's so its users recognise it:
//
//   tpcoord::Launch launch(config);                                  // the job this process belongs to
//   model = *tpcoord::tp_model_init(std::move(model), /*tp_size=*/2, Dtype::kBFloat16, launch);
//   auto engine = *tpcoord::initialize(std::move(model), ds_config_json, launch);
//   for (...) engine->train_batch();
//   engine->save_checkpoint(dir);
//
// tp_model_init records the TP arguments through the coordinator (conflicts come back with DeepSpeed's
// text) and returns the model unchanged. initialize joins the job's rendezvous, merges the DeepSpeed
// config against the record (with every other worker's config required to be the same), builds the
// communicators (Gloo over the coordinator's store, or NCCL with brokered unique IDs), shards the model
// with AutoTP, applies the recorded dtype (DeepSpeed only validates it) and returns the training engine.
// tp_model_init is optional, as in DeepSpeed now: without it (config-only AutoTP) initialize joins with the
// config's tensor_parallel.autotp_size and takes the precision from the config.
#ifndef TPCOORD_WORKER_TRAINING_ENGINE_H_
#define TPCOORD_WORKER_TRAINING_ENGINE_H_

#include <chrono>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include <torch/torch.h>

#include "absl/status/statusor.h"
#include "client/coordinator_client.h"
#include "common/token_data.h"
#include "common/train_config.h"
#include "worker/comm/communicator.h"
#include "worker/comm/coordinator_store.h"
#include "worker/model/llama_model.h"
#include "worker/training/device.h"
#include "worker/training/membership.h"
#include "worker/training/train_step.h"

namespace tpcoord {

// Where a worker process belongs; DeepSpeed reads the same from MASTER_ADDR, RANK and WORLD_SIZE.
struct LaunchConfig {
  std::string coordinator = "127.0.0.1:50051";
  ClientCredentials credentials;  // the job's token, TLS material
  std::string job_id;
  int world_size = 1;
  int min_world_size = 1;  // < world_size: an elastic job (JoinRequest.min_world_size)
  Millis rejoin_timeout{30000};
  std::optional<int> rank;       // a requested rank (RANK, JOB_COMPLETION_INDEX); nullopt: assigned
  std::string host;              // reported to the coordinator; "" means this machine's host name
  DeviceChoice device;           // --device (device.h): the CPU unless it names a GPU
  std::string backend = "gloo";  // "gloo" (CPU) or "nccl" (GPU): BackendFor(device, --backend)
  std::string gloo_interface;    // address Gloo listens on and advertises; "" means `host`
  std::string data;              // training data; overrides the config's tpcoord.data
  std::string output_dir;        // where rank 0 writes checkpoints ("" none); shared by the ranks to resume
  std::string resume;            // a checkpoint to start from when output_dir holds none of this job's
  std::string worker_id;         // the same across this worker's generations; "" means a fresh one
  // Runs on the member session's thread the moment the coordinator says the generation is over (with its
  // reason, naming the rank that failed), while the main thread may be blocked in a collective that cannot
  // be aborted (Gloo in LibTorch 1.13). tp-worker exits there; unset, the engine only remembers it (lost()).
  std::function<void(const absl::Status&)> on_generation_end;
  // While the coordinator cannot be reached: a line about every 10 s saying where and why (ClientOptions).
  std::function<void(const std::string&)> log_waiting;
  Millis join_timeout{300000};
  Millis collective_timeout{300000};
};

// The process's connection to its job, shared by tp_model_init and initialize (DeepSpeed keeps the same
// in process globals). Records start-up phase timings as it goes.
class Launch {
 public:
  explicit Launch(LaunchConfig config);

  const LaunchConfig& config() const { return config_; }
  CoordinatorClient& client() { return *client_; }
  const std::optional<TpInitArgs>& recorded() const { return recorded_; }
  void set_recorded(TpInitArgs args) { recorded_ = std::move(args); }
  // Phase name and seconds, in order: connect, record, join, merge, comm_init, shard (and what the caller adds).
  std::vector<std::pair<std::string, double>>& timings() { return timings_; }

 private:
  LaunchConfig config_;
  std::unique_ptr<CoordinatorClient> client_;
  std::optional<TpInitArgs> recorded_;
  std::vector<std::pair<std::string, double>> timings_;
};

// deepspeed.tp_model_init: records (tp_size, dtype, tp_group) for the job and returns `model` unchanged.
absl::StatusOr<LlamaModel> tp_model_init(LlamaModel model, int tp_size, Dtype dtype, Launch& launch,
                                         std::optional<std::vector<int>> tp_group = std::nullopt);

// What a step returns at once, while the device may still be working on it: reading `loss` or `grad_norm`
// (item<double>()) waits for the step to finish, so a caller reads them only when it prints.
struct StepStats {
  int64_t step = 0;         // optimizer steps done after this one
  torch::Tensor loss;       // 0-dim, on the device: mean next-token loss over the whole global batch
  torch::Tensor grad_norm;  // 0-dim, on the device: global L2 norm before clipping (spec §4.7); undefined if skipped
  double lr = 0;
  int64_t tokens = 0;    // tokens in the global batch
  bool skipped = false;  // fp16 overflow: no update
};

class Engine {
 public:
  ~Engine();  // leaves the job (finished=false) unless Finish() ran
  Engine(const Engine&) = delete;
  Engine& operator=(const Engine&) = delete;

  // One optimizer step over train_batch_size sequences: micro-batches x gradient accumulation on each
  // data-parallel rank, gradients averaged over the DP group, clipped, and applied (TrainStep). Every rank
  // must call it. It returns as soon as the step is queued on the device.
  absl::StatusOr<StepStats> train_batch();
  // The mean loss over the held-out windows (all of them, or the first tpcoord.eval_windows), each scored
  // exactly once: the same number, up to TP rounding, at any TP and DP size and micro batch.
  absl::StatusOr<double> eval_loss();
  // Writes a Hugging Face checkpoint (model.safetensors + config.json) plus optimizer and trainer state to
  // `dir`, gathered from the shards; global rank 0 writes. A collective: every rank calls it.
  absl::Status save_checkpoint(const std::string& dir);
  // Loads a checkpoint written by save_checkpoint (or a plain Hugging Face model directory, weights only)
  // at any TP size: the full tensors are resharded for this mesh. Every rank calls it.
  absl::Status load_checkpoint(const std::string& dir);
  // Where this generation starts, the same for every rank, loaded: the newest complete checkpoint-<step> of
  // this job in rank 0's output_dir (its own progress, left by an earlier generation), else
  // LaunchConfig::resume, else the start. Rank 0 decides and publishes its choice in the generation's store;
  // every rank reads the directory itself. Returns the directory ("" for the start). Every rank calls it,
  // once, before training.
  absl::StatusOr<std::string> resume();
  // After a step: with an output_dir and the config's checkpoint_interval due, saves
  // <output_dir>/checkpoint-<step> (never at `last_step`, which gets the final one) and keeps the newest
  // kCheckpointsKept of them. Returns whether it saved. Every rank calls it after each step.
  absl::StatusOr<bool> checkpoint_if_due(int64_t last_step);
  // With an output_dir, once training is over: <output_dir>/checkpoint if this generation trained. Returns
  // its path ("" if none was written). Every rank calls it.
  absl::StatusOr<std::string> save_final_checkpoint();
  // Leaves the job as finished (the coordinator marks the generation complete once every rank has).
  absl::Status Finish();
  // Leaves the job as failed: the generation ends and every other worker is told `reason`; `fatal`: a
  // configuration error that no restart cures, so the others stop too (LeaveRequest.fatal). The destructor
  // does this with a generic reason when neither Finish nor Abandon ran.
  void Abandon(const std::string& reason, bool fatal = false);

  const Membership& membership() const { return member_.membership(); }
  const TrainConfig& train_config() const { return train_; }
  const std::string& merged_config() const { return merged_config_; }
  Dtype dtype() const { return dtype_; }
  // Where this worker computes, chosen from --device once its rank was known.
  const torch::Device& device() const { return device_; }
  // How each communicator (world, TP, DP) was built: "nccl world (rank 0 of 2) from 1 unique id(s) brokered
  // by the coordinator", "gloo tp/0 (rank 1 of 2) through the coordinator's store".
  const std::vector<std::string>& communicators() const { return communicators_; }
  int64_t global_steps() const { return step_; }
  // The step this generation started from (resume()).
  int64_t first_step() const { return first_step_; }
  LlamaModel& model() { return model_; }
  // The job membership (membership.h): why the generation ended, progress reports, the verdict to wait for.
  JobMembership& member() { return member_; }

 private:
  friend absl::StatusOr<std::unique_ptr<Engine>> initialize(LlamaModel, const std::string&, Launch&, bool);
  Engine(Launch& launch, LlamaModel model);
  absl::Status Setup(const std::string& ds_config_json, bool has_mpu);

  // [micro, seq_len + 1] int64 on the device: the micro batch `micro_step` of `step` for this DP rank.
  torch::Tensor Batch(int64_t step, int micro_step) const;
  absl::Status Explain(absl::Status status) const { return member_.Explain(std::move(status)); }

  Launch& launch_;
  JobMembership member_;
  std::string merged_config_;
  TrainConfig train_;
  Dtype dtype_ = Dtype::kFloat32;
  torch::Device device_{torch::kCPU};
  c10::intrusive_ptr<CoordinatorStore> store_;
  std::vector<std::string> communicators_;
  std::unique_ptr<Communicator> world_;
  std::unique_ptr<Communicator> tp_;
  std::unique_ptr<Communicator> dp_;
  LlamaModel model_;
  std::unique_ptr<TrainStep> trainer_;
  std::optional<TokenData> data_;
  int64_t step_ = 0;
  int64_t first_step_ = 0;
};

// deepspeed.initialize: joins, merges `ds_config_json`, builds communicators, shards `model` (which must
// be the identical full model on every TP rank) and returns the engine. The training data comes from the
// config's tpcoord.data. Errors name the phase that failed.
absl::StatusOr<std::unique_ptr<Engine>> initialize(LlamaModel model, const std::string& ds_config_json, Launch& launch,
                                                   bool has_mpu = false);

}  // namespace tpcoord

#endif  // TPCOORD_WORKER_TRAINING_ENGINE_H_
