// AutoTP for Llama: shards a full LlamaModel over a TP communicator with DeepSpeed's "llama" preset
// (spec §4.1-4.4, §4.7), and the model-level operations a trainer needs afterwards: which parameters are
// partitioned, the gradient norm, and the full Hugging Face state dict for checkpoints.
//
//   column-parallel: self_attn.{q,k,v}_proj, mlp.{gate,up}_proj     (weights split on dim 0)
//   row-parallel:    self_attn.o_proj, mlp.down_proj               (weights split on dim 1)
//   replicated:      model.embed_tokens, every RMSNorm, lm_head    (identical on every TP rank)
//
// Splits come from ShardSizes (common/shard_sizes.h) with K = num_key_value_heads: q/k/v/o split on
// KV-group boundaries, possibly unevenly (6 KV heads over 4 ranks: 2/2/1/1; ranks past K hold no heads),
// gate/up/down near-evenly. Each attention module is told its local head counts, derived from its shards.
#ifndef TPCOORD_WORKER_AUTOTP_AUTOTP_H_
#define TPCOORD_WORKER_AUTOTP_AUTOTP_H_

#include <cstdint>
#include <string>
#include <vector>

#include <torch/torch.h>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "worker/comm/communicator.h"
#include "worker/model/llama_model.h"
#include "worker/model/tensor_map.h"

namespace tpcoord {

struct AutoTpOptions {
  int grain = 1;  // tensor_parallel.tp.tp_grain_size: Rule B splits in whole multiples of this (spec §4.2)
};

enum class TpKind { kColumn, kRow };

// One projection of the plan: its module name, its kind and the per-rank sizes of its split dimension
// (output features for a column layer, input features for a row layer).
struct TpProjection {
  std::string name;  // "model.layers.0.self_attn.q_proj"
  TpKind kind;
  std::vector<int64_t> sizes;  // one per rank, summing to the dimension
};

// The llama preset's plan for `config` over `tp_size` ranks, in module order (q, k, v, o, gate, up, down
// per layer). Pure: no communication. Checked by CheckLlamaTpPlan before it is returned.
absl::StatusOr<std::vector<TpProjection>> PlanLlamaTp(const LlamaConfig& config, int tp_size,
                                                      const AutoTpOptions& options = {});

// Verifies that every column layer's output split matches the row layer that consumes it (spec G25): per
// decoder layer, q_proj's output and o_proj's input split into the same whole heads, k_proj and v_proj
// hold the KV heads those query heads use (GQA), and gate_proj, up_proj and down_proj split alike.
// FAILED_PRECONDITION naming the layer and both splits otherwise.
absl::Status CheckLlamaTpPlan(const LlamaConfig& config, const std::vector<TpProjection>& plan);

// Shards `model` in place for this rank of `tp_comm` (T = tp_comm.size()): swaps the seven projections of
// every layer for column/row-parallel layers holding this rank's shards and sets each attention's local
// head counts. A collective: every rank of the group calls it, each with the identical full model (spec
// §3.5). That is verified first: the ranks exchange a fingerprint of their full weights and all fail with
// FAILED_PRECONDITION, naming the ranks that differ, if any do (gap G13). The model must not be sharded
// already. A group of one leaves the model untouched. On error the model is unchanged. `tp_comm` must
// outlive the model.
absl::Status ShardLlama(LlamaModel& model, Communicator& tp_comm, const AutoTpOptions& options = {});

// The model's parameters under their Hugging Face names, split by how tensor parallelism holds them
// (spec §4.7): `partitioned` are this rank's shards of TP layers (column weights, row weights, column
// biases); `replicated` are identical on every TP rank (embeddings, norms, lm_head, row biases). Both
// share storage with the model. An unsharded model has everything replicated.
struct TpParameterGroups {
  TensorMap partitioned;
  TensorMap replicated;
};
TpParameterGroups ClassifyTpParameters(torch::nn::Module& model);

// The L2 norm of the full model's gradient: partitioned parameters' squared gradient norms summed over
// `tp_comm`, replicated parameters' counted once (spec §4.7's last paragraph), so the result equals the
// unsharded model's, on every rank. Parameters without a gradient count as zero. A collective over
// `tp_comm`, which must be the communicator the model was sharded over (INVALID_ARGUMENT otherwise);
// UNAVAILABLE if the collective fails. Under data parallelism, call it after the DP gradient reduction.
absl::StatusOr<double> GlobalGradNorm(torch::nn::Module& model, Communicator& tp_comm);

// The full, unsharded state dict under Hugging Face names, exactly equal to the weights before sharding,
// on every rank: copies, detached from the model. A collective over every TP layer's group; every rank
// must call it. Errors as TensorParallelLayer::Gather. The model stays sharded.
absl::StatusOr<TensorMap> GatherFullStateDict(torch::nn::Module& model);

// GatherFullStateDict for any tensors shaped like the parameters: `local` maps some parameter names to
// defined tensors of those parameters' local shapes (gradients, an optimizer's moments); the result maps
// the same names to full tensors, on every rank. Every rank must pass the same names. INVALID_ARGUMENT for
// an unknown name or a wrong shape.
absl::StatusOr<TensorMap> GatherFullTensors(torch::nn::Module& model, const TensorMap& local);

// The inverse of GatherFullTensors, without communication: this rank's piece of each tensor of `full`,
// which maps some parameter names to tensors of those parameters' full shapes. INVALID_ARGUMENT naming
// every unknown name and wrong shape.
absl::StatusOr<TensorMap> ShardFullTensors(torch::nn::Module& model, const TensorMap& full);

// Copies a full state dict (as GatherFullStateDict returns it, or as a checkpoint holds it) into a sharded
// model, each rank keeping its shards, converting dtypes. Local: no communication. Every parameter must be
// present (INVALID_ARGUMENT naming the tensors otherwise, leaving the model unchanged).
absl::Status LoadFullStateDict(torch::nn::Module& model, const TensorMap& full);

}  // namespace tpcoord

#endif  // TPCOORD_WORKER_AUTOTP_AUTOTP_H_
