// AutoTP's training-mode tensor-parallel linear layers (spec §4.3, §4.7), over one TP communicator.
//
//   ColumnParallelLinear  weight [out, in] split on dim 0 (output features); a bias is split likewise.
//     forward:  y_r = x W_r^T (+ b_r)        x replicated [.., in] -> y_r [.., out_r]
//               (gather_output: all-gather the y_r into the full [.., out] on every rank)
//     backward: dx = all_reduce_sum(dy_r W_r) over the group; dW_r, db_r local
//   RowParallelLinear     weight [out, in] split on dim 1 (input features); a bias stays whole.
//     forward:  y = all_reduce_sum(x_r W_r^T) (+ b)   x_r [.., in_r] (a column layer's output) -> y [.., out]
//     backward: identity on dy; dx_r = dy W_r, dW_r local
//
// A column layer followed by a row layer (q/k/v -> o, gate/up -> down) needs two all-reduces per step,
// one in each direction, and leaves everything outside the pair replicated: identical on every rank,
// gradients included.
//
// Each layer freezes its split (TpSplit) when it is created and uses it for sharding, gathering and the
// gathered forward. A split may be uneven and may give a rank nothing (more ranks than heads); such a rank
// contributes zeros to the all-reduce. All collectives run on the communicator the layer was given, never
// another group (spec gap G20), and reduce in place the contiguous buffer the layer itself computed, which
// is the buffer returned (G20). Bias gradients are reduced over every leading dimension (G19).
//
// forward() follows LibTorch conventions (it throws; a failed collective throws std::runtime_error, see
// communicator.h). Creation, gathering and re-sharding return absl::Status.
#ifndef TPCOORD_WORKER_AUTOTP_TP_LAYERS_H_
#define TPCOORD_WORKER_AUTOTP_TP_LAYERS_H_

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include <torch/torch.h>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "worker/comm/communicator.h"
#include "worker/model/tensor_map.h"

namespace tpcoord {

// The frozen split of one weight dimension over the T ranks of a TP group. The dimension is a
// concatenation of sub-parameters (one for a plain projection; q|k|v for a fused QKV projection, gate|up
// for a packed MLP); each is split on its own, sub-parameter j giving widths()[j][r] elements to rank r.
// Rank r holds its piece of every sub-parameter, concatenated in sub-parameter order.
//   plain, out=129, T=4:               widths [[33, 32, 32, 32]]
//   fused q|k|v (12, 12, 12), K=3, T=2: widths [[8, 4], [8, 4], [8, 4]]; rank 0 holds 24 rows, rank 1 12
class TpSplit {
 public:
  // A single sub-parameter split as `sizes` (one per rank, each >= 0).
  static absl::StatusOr<TpSplit> Create(std::vector<int64_t> sizes);
  // Several sub-parameters: widths[j][r] as above; every row needs the same number (>= 1) of ranks.
  static absl::StatusOr<TpSplit> CreateFused(std::vector<std::vector<int64_t>> widths);

  int tp_size() const { return static_cast<int>(widths_[0].size()); }
  const std::vector<std::vector<int64_t>>& widths() const { return widths_; }
  int64_t full_size() const;           // the whole dimension
  int64_t local_size(int rank) const;  // what `rank` holds
  std::vector<int64_t> local_sizes() const;

  // Rank `rank`'s piece of `full` along `dim` (whose size must be full_size()): its part of each
  // sub-parameter, concatenated, as a new contiguous tensor (never a view of `full`).
  torch::Tensor Slice(const torch::Tensor& full, int64_t dim, int rank) const;
  // The inverse: the full tensor from every rank's piece (in rank order) along `dim`.
  torch::Tensor Assemble(const std::vector<torch::Tensor>& pieces, int64_t dim) const;

  // "[[8, 4], [8, 4]]"
  std::string DebugString() const;
  bool operator==(const TpSplit& other) const { return widths_ == other.widths_; }

 private:
  explicit TpSplit(std::vector<std::vector<int64_t>> widths) : widths_(std::move(widths)) {}
  std::vector<std::vector<int64_t>> widths_;
};

// What AutoTP needs from any tensor-parallel layer, whatever its kind. Gathering and re-sharding are
// implemented here once, from what each layer says about its parameters.
class TensorParallelLayer {
 public:
  virtual ~TensorParallelLayer() = default;

  // The layer's module name ("model.layers.0.self_attn.q_proj"), for errors and logs.
  virtual const std::string& layer_name() const = 0;
  virtual const TpSplit& split() const = 0;
  virtual Communicator& comm() const = 0;
  // The layer's own parameters by name ("weight", and "bias" if any), sharing storage.
  virtual TensorMap OwnParameters() const = 0;
  // The dimension along which parameter `param_name` is split over the group, or -1 if it is replicated.
  virtual int64_t PartitionDim(const std::string& param_name) const = 0;
  // Split parameters count on every TP rank in the gradient norm, replicated ones once (spec §4.7).
  bool IsPartitioned(const std::string& param_name) const { return PartitionDim(param_name) >= 0; }

  // The full tensors for `local`, which maps some of the layer's parameter names to tensors of those
  // parameters' local shapes (the parameters, their gradients, an optimizer's moments), on every rank:
  // split ones gathered, replicated ones copied. A collective: every rank of the group must call it with
  // the same names. INVALID_ARGUMENT for an unknown name or a wrong shape; FAILED_PRECONDITION with
  // DeepSpeed's message if a rank holds a piece of the wrong size, or if the ranks froze different splits
  // (every rank then fails alike); UNAVAILABLE if the collective fails.
  absl::StatusOr<TensorMap> Gather(const TensorMap& local);
  // Gather(OwnParameters()): the full parameters, exactly as they were before sharding.
  absl::StatusOr<TensorMap> GatherParameters();

  // The inverse of Gather, without communication and without touching the layer: this rank's piece of each
  // tensor of `full`, which maps some of the layer's parameter names to tensors of those parameters' full
  // shapes. INVALID_ARGUMENT for an unknown name or a wrong shape.
  absl::StatusOr<TensorMap> LocalShards(const TensorMap& full) const;
  // LocalShards(full), which must cover every parameter, copied into the existing parameter tensors
  // (converting dtype) so an optimizer's references stay valid. Local. On error nothing is changed.
  absl::Status ShardParameters(const TensorMap& full);
};

class ColumnParallelLinearImpl : public torch::nn::Module, public TensorParallelLayer {
 public:
  // Use ColumnParallelLinear::Create.
  ColumnParallelLinearImpl(std::string name, torch::Tensor local_weight, torch::Tensor local_bias, bool requires_grad,
                           TpSplit split, Communicator* comm, bool gather_output);

  // x [.., in] -> [.., local out] ([.., out] with gather_output).
  torch::Tensor forward(const torch::Tensor& x);

  const std::string& layer_name() const override { return name_; }
  const TpSplit& split() const override { return split_; }
  Communicator& comm() const override { return *comm_; }
  TensorMap OwnParameters() const override;
  int64_t PartitionDim(const std::string& param_name) const override;  // weight and bias: 0

  torch::Tensor weight;  // [local out, in]
  torch::Tensor bias;    // [local out], or undefined

 private:
  const std::string name_;
  const TpSplit split_;
  Communicator* const comm_;
  const bool gather_output_;
};

class ColumnParallelLinear : public torch::nn::ModuleHolder<ColumnParallelLinearImpl> {
 public:
  using torch::nn::ModuleHolder<ColumnParallelLinearImpl>::ModuleHolder;
  // Builds this rank's layer from the full `weight` [out, in] and optional `bias` [out] (undefined for
  // none), keeping copies of its rows per `split` (full_size() == out, tp_size() == comm->size()); the
  // parameters keep weight's dtype, device and requires_grad. `name` labels errors. `*comm` is the TP
  // group; it must outlive the layer and any autograd graph built through it. INVALID_ARGUMENT on any
  // mismatch, naming the layer.
  static absl::StatusOr<ColumnParallelLinear> Create(std::string name, const torch::Tensor& weight,
                                                     const torch::Tensor& bias, TpSplit split, Communicator* comm,
                                                     bool gather_output = false);
};

class RowParallelLinearImpl : public torch::nn::Module, public TensorParallelLayer {
 public:
  // Use RowParallelLinear::Create.
  RowParallelLinearImpl(std::string name, torch::Tensor local_weight, torch::Tensor bias, bool requires_grad,
                        TpSplit split, Communicator* comm);

  // x [.., local in] -> [.., out], summed over the group, plus the bias.
  torch::Tensor forward(const torch::Tensor& x);

  const std::string& layer_name() const override { return name_; }
  const TpSplit& split() const override { return split_; }
  Communicator& comm() const override { return *comm_; }
  TensorMap OwnParameters() const override;
  int64_t PartitionDim(const std::string& param_name) const override;  // weight: 1; bias: replicated

  torch::Tensor weight;  // [out, local in]
  torch::Tensor bias;    // [out], replicated, or undefined

 private:
  const std::string name_;
  const TpSplit split_;
  Communicator* const comm_;
};

class RowParallelLinear : public torch::nn::ModuleHolder<RowParallelLinearImpl> {
 public:
  using torch::nn::ModuleHolder<RowParallelLinearImpl>::ModuleHolder;
  // As ColumnParallelLinear::Create, splitting `weight` [out, in] on its columns (full_size() == in); the
  // bias [out] is kept whole.
  static absl::StatusOr<RowParallelLinear> Create(std::string name, const torch::Tensor& weight,
                                                  const torch::Tensor& bias, TpSplit split, Communicator* comm);
};

}  // namespace tpcoord

#endif  // TPCOORD_WORKER_AUTOTP_TP_LAYERS_H_
