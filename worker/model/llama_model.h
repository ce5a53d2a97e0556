// A Llama-architecture decoder (Hugging Face transformers' LlamaForCausalLM) in LibTorch: configured from a
// Hugging Face config.json, loaded from / saved to its state dict under Hugging Face's parameter names, or
// initialised from a seed.
//
//   input_ids [B, S]
//     -> embed_tokens                                    h [B, S, H]
//     -> num_hidden_layers x {
//          h = h + o_proj(attention(RoPE(q_proj(RMSNorm(h))), RoPE(k_proj(.)), v_proj(.)))   causal, GQA
//          h = h + down_proj(silu(gate_proj(RMSNorm(h))) * up_proj(RMSNorm(h)))
//        }
//     -> RMSNorm -> lm_head (or the embedding, tied)    logits [B, S, V]
//
// Numerics follow transformers' eager implementation: RMSNorm computed in fp32 and cast back before the
// weight; RoPE tables computed in fp32 and cast to the model dtype; the attention softmax in fp32. The
// parameters, activations and logits are in the model dtype (fp32, bf16 or fp16; LibTorch 1.13 has no CPU
// fp16 matmul, so an fp16 model runs only on a GPU).
//
// Tensor parallelism: the seven projections of each layer sit in AnyModule slots holding an nn::Linear.
// AutoTP (autotp.h) swaps them for column- and row-parallel layers and tells the attention how many of
// the heads are local; the model code itself is the same with or without tensor parallelism.
//
// Errors: configuration, loading and the Compute* entry points return absl::Status. forward() follows
// LibTorch's convention and throws (c10::Error for bad inputs, std::runtime_error from a failed collective);
// callers outside worker/'s LibTorch code use ComputeLogits / ComputeLoss instead.
#ifndef TPCOORD_WORKER_MODEL_LLAMA_MODEL_H_
#define TPCOORD_WORKER_MODEL_LLAMA_MODEL_H_

#include <cstdint>
#include <optional>
#include <string>
#include <utility>

#include <torch/torch.h>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "common/dtype.h"
#include "worker/model/tensor_map.h"

namespace tpcoord {

// ---------------------------------------------------------------------------------------------------------
// Configuration: the fields of a Hugging Face LlamaConfig that shape the model, with transformers' defaults
// for any field config.json leaves out.

struct LlamaConfig {
  int64_t vocab_size = 32000;
  int64_t hidden_size = 4096;         // H
  int64_t intermediate_size = 11008;  // I, the MLP width
  int64_t num_hidden_layers = 32;
  int64_t num_attention_heads = 32;  // query heads
  int64_t num_key_value_heads = 32;  // K; each K/V head serves num_attention_heads / K query heads
  int64_t head_dim = 128;            // default hidden_size / num_attention_heads
  int64_t max_position_embeddings = 2048;
  double rms_norm_eps = 1e-6;
  double rope_theta = 10000.0;
  double initializer_range = 0.02;      // std of the normal init
  bool tie_word_embeddings = false;     // lm_head shares model.embed_tokens.weight
  std::optional<int64_t> pad_token_id;  // its embedding row starts at zero and gets no gradient
  std::optional<Dtype> torch_dtype;     // what config.json records; informational

  // Parses a config.json. Fields absent (or null) take transformers' defaults; num_key_value_heads defaults
  // to num_attention_heads and head_dim to hidden_size / num_attention_heads. Features this model does not
  // implement are rejected rather than silently ignored: model_type other than "llama", hidden_act other
  // than "silu", rope_scaling, attention_bias, mlp_bias. INVALID_ARGUMENT naming the field on any problem,
  // including a failed Validate().
  static absl::StatusOr<LlamaConfig> FromJson(absl::string_view json);
  // FromJson on a file's contents; NOT_FOUND if it cannot be read.
  static absl::StatusOr<LlamaConfig> FromFile(const std::string& path);

  // Built-in shapes for random-init runs:
  //   "tiny":  H 64,  2 layers, 4 heads, 2 KV heads, I 172, 256 positions  (~0.1 M parameters)
  //   "small": H 256, 4 layers, 8 heads, 4 KV heads, I 688, 512 positions  (~3.3 M parameters)
  //   "350m":  H 1024, 24 layers, 16 heads, 8 KV heads, I 2816, 2048 positions, a 32000-token vocabulary
  //            (~349 M parameters: a size a GPU is measured with; the others' vocabulary is bytes, 256)
  // INVALID_ARGUMENT listing the presets for any other name.
  static absl::StatusOr<LlamaConfig> Preset(absl::string_view name);

  // INVALID_ARGUMENT naming the offending field: sizes must be positive, num_attention_heads a multiple of
  // num_key_value_heads, head_dim even (RoPE rotates pairs), pad_token_id inside the vocabulary, ...
  absl::Status Validate() const;

  // How many parameters the model has (embeddings, and lm_head unless tied, included): N of MFU's 6 N.
  int64_t ParameterCount() const;

  // A Hugging Face config.json for this configuration (architectures ["LlamaForCausalLM"], model_type
  // "llama", torch_dtype as given), loadable by transformers' AutoConfig.
  std::string ToJson(Dtype dtype) const;
};

// ---------------------------------------------------------------------------------------------------------
// The modules, in the order the forward pass uses them. Parameter names are transformers'. Each makes its
// parameters with `options` (fp32, on a device): a model can be built where it will run, the `meta`
// device included (which a LibTorch 1.13 module cannot be moved to).

// transformers' nn.Embedding: rows of weight [V, H] looked up by token id; the padding row gets no gradient.
class TokenEmbeddingImpl : public torch::nn::Module {
 public:
  TokenEmbeddingImpl(int64_t vocab, int64_t dim, std::optional<int64_t> padding_idx,
                     const torch::TensorOptions& options = {});
  torch::Tensor forward(const torch::Tensor& ids);  // [B, S] int64 -> [B, S, H]

  torch::Tensor weight;  // [V, H]

 private:
  const int64_t padding_idx_;  // -1: none
};
TORCH_MODULE(TokenEmbedding);

// transformers' nn.Linear(bias=False): x W^T with weight [out, in].
class ProjectionImpl : public torch::nn::Module {
 public:
  ProjectionImpl(int64_t in, int64_t out, const torch::TensorOptions& options = {});
  torch::Tensor forward(const torch::Tensor& x) { return torch::linear(x, weight); }  // [.., in] -> [.., out]

  torch::Tensor weight;  // [out, in]
};
TORCH_MODULE(Projection);

// y = weight * (x / sqrt(mean(x^2) + eps)), the normalisation computed in fp32.
class RMSNormImpl : public torch::nn::Module {
 public:
  RMSNormImpl(int64_t dim, double eps, const torch::TensorOptions& options = {});
  torch::Tensor forward(const torch::Tensor& x);  // [..., dim] -> [..., dim], x's dtype

  torch::Tensor weight;  // [dim]

 private:
  double eps_;
};
TORCH_MODULE(RMSNorm);

// cos and sin of the rotary position embedding for positions 0..seq_len-1, each [seq_len, head_dim] in
// `dtype` (computed in fp32): inv_freq = 1 / theta^(2i / head_dim), angle = position * inv_freq, repeated
// for both halves of the head. On `device`, like every tensor of a forward pass.
std::pair<torch::Tensor, torch::Tensor> RopeTables(int64_t seq_len, int64_t head_dim, double theta,
                                                   torch::ScalarType dtype, torch::Device device = torch::kCPU);

// x * cos + rotate_half(x) * sin, where rotate_half(x) = cat(-x[..., d/2:], x[..., :d/2]).
// x [B, heads, S, d]; cos, sin [S, d].
torch::Tensor ApplyRope(const torch::Tensor& x, const torch::Tensor& cos, const torch::Tensor& sin);

// Causal grouped-query self-attention. Sharded by AutoTP, a rank computes only its local heads: q_proj
// produces local_heads() * head_dim features, k_proj and v_proj local_kv_heads() * head_dim, and o_proj
// reduces the partial outputs over the TP group.
class LlamaAttentionImpl : public torch::nn::Module {
 public:
  explicit LlamaAttentionImpl(const LlamaConfig& config, const torch::TensorOptions& options = {});
  // x [B, S, H]; cos, sin [S, head_dim]; causal_mask [S, S] bool, true above the diagonal -> [B, S, H]
  torch::Tensor forward(const torch::Tensor& x, const torch::Tensor& cos, const torch::Tensor& sin,
                        const torch::Tensor& causal_mask);

  // Replaces projection `name` (q_proj, k_proj, v_proj or o_proj) with `layer`, which must map
  // [..., in] -> [..., out] like the nn::Linear it replaces (sharded: the local in/out). INVALID_ARGUMENT for
  // another name.
  absl::Status ReplaceProjection(absl::string_view name, torch::nn::AnyModule layer);
  // The heads this rank computes. `heads` must be (num_attention_heads / num_key_value_heads) * kv_heads,
  // both >= 0 (a rank may hold none when there are more TP ranks than KV heads). INVALID_ARGUMENT otherwise.
  absl::Status SetLocalHeads(int64_t heads, int64_t kv_heads);
  int64_t local_heads() const { return local_heads_; }
  int64_t local_kv_heads() const { return local_kv_heads_; }

  // nn::Linear(in, out, bias=false), or a tensor-parallel layer after AutoTP.
  torch::nn::AnyModule q_proj;  // [.., H] -> [.., heads * head_dim]
  torch::nn::AnyModule k_proj;  // [.., H] -> [.., kv_heads * head_dim]
  torch::nn::AnyModule v_proj;  // [.., H] -> [.., kv_heads * head_dim]
  torch::nn::AnyModule o_proj;  // [.., heads * head_dim] -> [.., H]

 private:
  const int64_t head_dim_;
  const int64_t group_size_;  // query heads per KV head
  const double scaling_;      // 1 / sqrt(head_dim)
  int64_t local_heads_;
  int64_t local_kv_heads_;
};
TORCH_MODULE(LlamaAttention);

// SwiGLU: down_proj(silu(gate_proj(x)) * up_proj(x)).
class LlamaMlpImpl : public torch::nn::Module {
 public:
  explicit LlamaMlpImpl(const LlamaConfig& config, const torch::TensorOptions& options = {});
  torch::Tensor forward(const torch::Tensor& x);  // [B, S, H] -> [B, S, H]

  // Replaces gate_proj, up_proj or down_proj, as LlamaAttentionImpl::ReplaceProjection.
  absl::Status ReplaceProjection(absl::string_view name, torch::nn::AnyModule layer);

  torch::nn::AnyModule gate_proj;  // [.., H] -> [.., I]
  torch::nn::AnyModule up_proj;    // [.., H] -> [.., I]
  torch::nn::AnyModule down_proj;  // [.., I] -> [.., H]
};
TORCH_MODULE(LlamaMlp);

// Pre-norm residual block: h += attention(norm(h)); h += mlp(norm(h)).
class LlamaDecoderLayerImpl : public torch::nn::Module {
 public:
  explicit LlamaDecoderLayerImpl(const LlamaConfig& config, const torch::TensorOptions& options = {});
  // [B, S, H] -> [B, S, H]; cos, sin and causal_mask as for LlamaAttentionImpl::forward.
  torch::Tensor forward(const torch::Tensor& h, const torch::Tensor& cos, const torch::Tensor& sin,
                        const torch::Tensor& causal_mask);

  LlamaAttention self_attn{nullptr};
  LlamaMlp mlp{nullptr};
  RMSNorm input_layernorm{nullptr};
  RMSNorm post_attention_layernorm{nullptr};
};
TORCH_MODULE(LlamaDecoderLayer);

// transformers' LlamaModel: the embedding, the layers and the final norm; registered as "model".
class LlamaDecoderImpl : public torch::nn::Module {
 public:
  explicit LlamaDecoderImpl(const LlamaConfig& config, const torch::TensorOptions& options = {});
  torch::Tensor forward(const torch::Tensor& input_ids);  // [B, S] int64 -> final hidden [B, S, H]

  // Layer i, 0 <= i < num_hidden_layers.
  LlamaDecoderLayer layer(size_t i) const { return LlamaDecoderLayer(layers->ptr<LlamaDecoderLayerImpl>(i)); }

  TokenEmbedding embed_tokens{nullptr};  // weight [V, H]
  torch::nn::ModuleList layers;                // LlamaDecoderLayer x num_hidden_layers
  RMSNorm norm{nullptr};

 private:
  const LlamaConfig config_;
};
TORCH_MODULE(LlamaDecoder);

// transformers' LlamaForCausalLM.
class LlamaModelImpl : public torch::nn::Module {
 public:
  // A model with seeded random weights: every parameter except the norms is drawn from
  // normal(0, initializer_range) in fp32 with a generator seeded by `seed`, in named_parameters() order,
  // then cast to `dtype`; norms are 1 (and the pad_token_id embedding row 0). The same (config, dtype,
  // seed) gives a bit-identical model in every process, whatever the thread count, which is what lets
  // every TP rank build the same full model before sharding (spec §3.5). `config` must be valid
  // (LlamaModel::Create checks).
  // The parameters are made on `device` (the init is drawn on the CPU and copied there, the same values).
  LlamaModelImpl(const LlamaConfig& config, Dtype dtype, uint64_t seed, torch::Device device = torch::kCPU);

  // input_ids [B, S] int64, 1 <= S <= max_position_embeddings, ids in [0, vocab_size) -> logits [B, S, V]
  // in the model dtype. Throws c10::Error on bad input.
  torch::Tensor forward(const torch::Tensor& input_ids);

  // Parameters under Hugging Face names, sharing storage with the model: model.embed_tokens.weight,
  // model.layers.{i}.self_attn.{q,k,v,o}_proj.weight, model.layers.{i}.mlp.{gate,up,down}_proj.weight,
  // model.layers.{i}.{input,post_attention}_layernorm.weight, model.norm.weight and, unless tied,
  // lm_head.weight. After AutoTP, TP-partitioned entries are this rank's shards (autotp.h gathers them).
  TensorMap StateDict();

  // Copies `tensors` into the parameters, converting fp16/bf16/fp32 to the model dtype. Every parameter
  // must be present with its shape, and nothing else may be, except that a tied model accepts an
  // lm_head.weight equal to model.embed_tokens.weight (as some exporters write it). On any mismatch nothing
  // is changed and INVALID_ARGUMENT lists the missing, unexpected and mis-shaped tensors, naming each and,
  // for a mis-shape, both shapes. Call before sharding: the shapes are the full model's.
  absl::Status LoadStateDict(const TensorMap& tensors);

  const LlamaConfig& config() const { return config_; }
  Dtype dtype() const { return dtype_; }

  LlamaDecoder model{nullptr};
  Projection lm_head{nullptr};  // weight [V, H]; null when tie_word_embeddings

 private:
  const LlamaConfig config_;
  const Dtype dtype_;
};

class LlamaModel : public torch::nn::ModuleHolder<LlamaModelImpl> {
 public:
  using torch::nn::ModuleHolder<LlamaModelImpl>::ModuleHolder;
  // Validates `config` and builds a seeded random model (see LlamaModelImpl).
  static absl::StatusOr<LlamaModel> Create(const LlamaConfig& config, Dtype dtype, uint64_t seed,
                                           torch::Device device = torch::kCPU);
};

// ---------------------------------------------------------------------------------------------------------
// Loss and the Status-returning entry points.

// Next-token cross-entropy, as transformers computes it with labels = input_ids: position t predicts
// tokens[t+1]; the mean over all B * (S-1) predictions whose target is not -100, computed in fp32.
// logits [B, S, V], tokens [B, S] int64 -> scalar fp32.
torch::Tensor NextTokenLoss(const torch::Tensor& logits, const torch::Tensor& tokens);
// The same loss per sequence: the mean over each row's S-1 predictions (no -100 targets), [B] fp32.
torch::Tensor NextTokenLossPerSequence(const torch::Tensor& logits, const torch::Tensor& tokens);

// model->forward(input_ids), with any error returned: INVALID_ARGUMENT for bad input ids, UNAVAILABLE when a
// tensor-parallel collective failed (a peer died or timed out), INTERNAL for anything else.
absl::StatusOr<torch::Tensor> ComputeLogits(LlamaModel& model, const torch::Tensor& input_ids);
// NextTokenLoss(model->forward(tokens), tokens), the same way.
absl::StatusOr<torch::Tensor> ComputeLoss(LlamaModel& model, const torch::Tensor& tokens);

}  // namespace tpcoord

#endif  // TPCOORD_WORKER_MODEL_LLAMA_MODEL_H_
