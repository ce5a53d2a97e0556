#include "worker/model/llama_model.h"

#include <cmath>
#include <fstream>
#include <limits>
#include <sstream>
#include <vector>

#include <nlohmann/json.hpp>
#include <torch/version.h>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "worker/model/torch_dtype.h"

namespace tpcoord {
namespace {

using Json = nlohmann::json;

// ---------------------------------------------------------------------------------------------------------
// config.json reading: a field that is absent or null keeps its default.

absl::Status FieldError(absl::string_view field, absl::string_view problem) {
  return absl::InvalidArgumentError(absl::StrCat("config.json field \"", field, "\" ", problem));
}

bool Present(const Json& json, const char* field) { return json.contains(field) && !json[field].is_null(); }

absl::Status ReadInt(const Json& json, const char* field, int64_t& out) {
  if (!Present(json, field)) return absl::OkStatus();
  if (!json[field].is_number_integer()) {
    return FieldError(field, absl::StrCat("must be an integer, got ", json[field].dump()));
  }
  out = json[field].get<int64_t>();
  return absl::OkStatus();
}

absl::Status ReadDouble(const Json& json, const char* field, double& out) {
  if (!Present(json, field)) return absl::OkStatus();
  if (!json[field].is_number()) return FieldError(field, absl::StrCat("must be a number, got ", json[field].dump()));
  out = json[field].get<double>();
  return absl::OkStatus();
}

absl::Status ReadBool(const Json& json, const char* field, bool& out) {
  if (!Present(json, field)) return absl::OkStatus();
  if (!json[field].is_boolean()) {
    return FieldError(field, absl::StrCat("must be true or false, got ", json[field].dump()));
  }
  out = json[field].get<bool>();
  return absl::OkStatus();
}

// A field whose only supported value is `expected` (or absent/null).
absl::Status RequireValue(const Json& json, const char* field, const Json& expected, absl::string_view why) {
  if (!Present(json, field) || json[field] == expected) return absl::OkStatus();
  return FieldError(
      field, absl::StrCat("is ", json[field].dump(), ", but only ", expected.dump(), " is supported (", why, ")"));
}

absl::Status ParseConfig(const Json& json, LlamaConfig& c) {
  if (!json.is_object()) return absl::InvalidArgumentError("config.json is not a JSON object");
  for (absl::Status s : {
           RequireValue(json, "model_type", "llama", "this is a Llama model"),
           RequireValue(json, "hidden_act", "silu", "the MLP is SwiGLU"),
           RequireValue(json, "attention_bias", false, "the projections have no bias"),
           RequireValue(json, "mlp_bias", false, "the projections have no bias"),
           ReadInt(json, "vocab_size", c.vocab_size),
           ReadInt(json, "hidden_size", c.hidden_size),
           ReadInt(json, "intermediate_size", c.intermediate_size),
           ReadInt(json, "num_hidden_layers", c.num_hidden_layers),
           ReadInt(json, "num_attention_heads", c.num_attention_heads),
           ReadInt(json, "max_position_embeddings", c.max_position_embeddings),
           ReadDouble(json, "rms_norm_eps", c.rms_norm_eps),
           ReadDouble(json, "rope_theta", c.rope_theta),
           ReadDouble(json, "initializer_range", c.initializer_range),
           ReadBool(json, "tie_word_embeddings", c.tie_word_embeddings),
       }) {
    if (!s.ok()) return s;
  }
  if (Present(json, "rope_scaling")) {
    return FieldError("rope_scaling", absl::StrCat("is ", json["rope_scaling"].dump(),
                                                   ", but only the default (unscaled) RoPE is supported"));
  }
  // transformers v5 moves the RoPE settings into "rope_parameters".
  if (Present(json, "rope_parameters")) {
    const Json& rope = json["rope_parameters"];
    if (!rope.is_object()) return FieldError("rope_parameters", "must be an object");
    if (Present(rope, "rope_type") && rope["rope_type"] != "default") {
      return FieldError("rope_parameters", absl::StrCat("has rope_type ", rope["rope_type"].dump(),
                                                        ", but only \"default\" is supported"));
    }
    if (absl::Status s = ReadDouble(rope, "rope_theta", c.rope_theta); !s.ok()) return s;
  }
  c.num_key_value_heads = c.num_attention_heads;
  if (absl::Status s = ReadInt(json, "num_key_value_heads", c.num_key_value_heads); !s.ok()) return s;
  c.head_dim = c.num_attention_heads > 0 ? c.hidden_size / c.num_attention_heads : 0;
  const bool explicit_head_dim = Present(json, "head_dim");
  if (absl::Status s = ReadInt(json, "head_dim", c.head_dim); !s.ok()) return s;
  if (!explicit_head_dim && c.num_attention_heads > 0 && c.hidden_size % c.num_attention_heads != 0) {
    return FieldError("hidden_size", absl::StrCat("(", c.hidden_size, ") must be a multiple of num_attention_heads (",
                                                  c.num_attention_heads, ") when head_dim is not given"));
  }
  if (Present(json, "pad_token_id")) {
    int64_t pad = 0;
    if (absl::Status s = ReadInt(json, "pad_token_id", pad); !s.ok()) return s;
    c.pad_token_id = pad;
  }
  // Newer transformers write "dtype", older "torch_dtype".
  for (const char* field : {"torch_dtype", "dtype"}) {
    if (!Present(json, field)) continue;
    if (!json[field].is_string()) return FieldError(field, "must be a string");
    absl::StatusOr<Dtype> dtype = ParseDtype(json[field].get<std::string>());
    if (!dtype.ok()) return FieldError(field, dtype.status().message());
    c.torch_dtype = *dtype;
  }
  return c.Validate();
}

const char* HfDtypeName(Dtype dtype) {
  switch (dtype) {
    case Dtype::kFloat32: return "float32";
    case Dtype::kFloat16: return "float16";
    case Dtype::kBFloat16: return "bfloat16";
  }
  return "float32";
}

std::string ShapeString(at::IntArrayRef shape) { return absl::StrCat("[", absl::StrJoin(shape, ", "), "]"); }

// Puts `layer` into `slot`, registered under `name` in `owner`.
void Replace(torch::nn::Module& owner, const std::string& name, torch::nn::AnyModule& slot,
             torch::nn::AnyModule layer) {
  slot = std::move(layer);
  owner.replace_module(name, slot.ptr());
}

torch::nn::AnyModule AnyProjection(int64_t in, int64_t out, const torch::TensorOptions& options) {
  return torch::nn::AnyModule(Projection(in, out, options));
}

}  // namespace

// ---------------------------------------------------------------------------------------------------------
// LlamaConfig

absl::StatusOr<LlamaConfig> LlamaConfig::FromJson(absl::string_view json) {
  const Json parsed = Json::parse(json.begin(), json.end(), nullptr, /*allow_exceptions=*/false);
  if (parsed.is_discarded()) return absl::InvalidArgumentError("config.json is not valid JSON");
  LlamaConfig config;
  if (absl::Status s = ParseConfig(parsed, config); !s.ok()) return s;
  return config;
}

absl::StatusOr<LlamaConfig> LlamaConfig::FromFile(const std::string& path) {
  std::ifstream in(path);
  if (!in) return absl::NotFoundError(absl::StrCat(path, ": cannot open"));
  std::stringstream text;
  text << in.rdbuf();
  absl::StatusOr<LlamaConfig> config = FromJson(text.str());
  if (!config.ok()) return absl::Status(config.status().code(), absl::StrCat(path, ": ", config.status().message()));
  return config;
}

absl::StatusOr<LlamaConfig> LlamaConfig::Preset(absl::string_view name) {
  LlamaConfig c;
  c.vocab_size = 256;
  c.rms_norm_eps = 1e-5;
  c.rope_theta = 10000.0;
  if (name == "tiny") {
    c.hidden_size = 64;
    c.num_hidden_layers = 2;
    c.num_attention_heads = 4;
    c.num_key_value_heads = 2;
    c.intermediate_size = 172;
    c.max_position_embeddings = 256;
  } else if (name == "small") {
    c.hidden_size = 256;
    c.num_hidden_layers = 4;
    c.num_attention_heads = 8;
    c.num_key_value_heads = 4;
    c.intermediate_size = 688;
    c.max_position_embeddings = 512;
  } else if (name == "350m") {
    c.vocab_size = 32000;
    c.hidden_size = 1024;
    c.num_hidden_layers = 24;
    c.num_attention_heads = 16;
    c.num_key_value_heads = 8;
    c.intermediate_size = 2816;
    c.max_position_embeddings = 2048;
  } else {
    return absl::InvalidArgumentError(
        absl::StrCat("unknown model preset \"", name, "\"; presets: tiny, small, 350m"));
  }
  c.head_dim = c.hidden_size / c.num_attention_heads;
  return c;
}

absl::Status LlamaConfig::Validate() const {
  const std::pair<const char*, int64_t> positive[] = {
      {"vocab_size", vocab_size},
      {"hidden_size", hidden_size},
      {"intermediate_size", intermediate_size},
      {"num_hidden_layers", num_hidden_layers},
      {"num_attention_heads", num_attention_heads},
      {"num_key_value_heads", num_key_value_heads},
      {"head_dim", head_dim},
      {"max_position_embeddings", max_position_embeddings},
  };
  for (const auto& [field, value] : positive) {
    if (value <= 0) return FieldError(field, absl::StrCat("must be positive, got ", value));
  }
  if (num_attention_heads % num_key_value_heads != 0) {
    return FieldError("num_attention_heads",
                      absl::StrCat("(", num_attention_heads, ") must be a multiple of num_key_value_heads (",
                                   num_key_value_heads, ")"));
  }
  if (head_dim % 2 != 0) return FieldError("head_dim", absl::StrCat("must be even for RoPE, got ", head_dim));
  if (!(rms_norm_eps > 0)) return FieldError("rms_norm_eps", absl::StrCat("must be positive, got ", rms_norm_eps));
  if (!(rope_theta > 0)) return FieldError("rope_theta", absl::StrCat("must be positive, got ", rope_theta));
  if (!(initializer_range >= 0)) {
    return FieldError("initializer_range", absl::StrCat("must be non-negative, got ", initializer_range));
  }
  if (pad_token_id && (*pad_token_id < 0 || *pad_token_id >= vocab_size)) {
    return FieldError("pad_token_id",
                      absl::StrCat("(", *pad_token_id, ") must be inside the vocabulary [0, ", vocab_size, ")"));
  }
  return absl::OkStatus();
}

int64_t LlamaConfig::ParameterCount() const {
  const int64_t attention = hidden_size * head_dim * (2 * num_attention_heads + 2 * num_key_value_heads);
  const int64_t mlp = 3 * hidden_size * intermediate_size;
  const int64_t layer = attention + mlp + 2 * hidden_size;  // and its two norms
  const int64_t embeddings = vocab_size * hidden_size * (tie_word_embeddings ? 1 : 2);
  return embeddings + num_hidden_layers * layer + hidden_size;  // and the final norm
}

std::string LlamaConfig::ToJson(Dtype dtype) const {
  Json json = {
      {"architectures", {"LlamaForCausalLM"}},
      {"model_type", "llama"},
      {"vocab_size", vocab_size},
      {"hidden_size", hidden_size},
      {"intermediate_size", intermediate_size},
      {"num_hidden_layers", num_hidden_layers},
      {"num_attention_heads", num_attention_heads},
      {"num_key_value_heads", num_key_value_heads},
      {"head_dim", head_dim},
      {"max_position_embeddings", max_position_embeddings},
      {"rms_norm_eps", rms_norm_eps},
      {"rope_theta", rope_theta},
      {"rope_scaling", nullptr},
      {"initializer_range", initializer_range},
      {"tie_word_embeddings", tie_word_embeddings},
      {"hidden_act", "silu"},
      {"attention_bias", false},
      {"attention_dropout", 0.0},
      {"mlp_bias", false},
      {"pretraining_tp", 1},
      {"use_cache", true},
      {"torch_dtype", HfDtypeName(dtype)},
  };
  json["pad_token_id"] = pad_token_id ? Json(*pad_token_id) : Json(nullptr);
  return json.dump(2) + "\n";
}

// ---------------------------------------------------------------------------------------------------------
// The model, top to bottom.

TokenEmbeddingImpl::TokenEmbeddingImpl(int64_t vocab, int64_t dim, std::optional<int64_t> padding_idx,
                                       const torch::TensorOptions& options)
    : padding_idx_(padding_idx.value_or(-1)) {
  weight = register_parameter("weight", torch::empty({vocab, dim}, options));
}

torch::Tensor TokenEmbeddingImpl::forward(const torch::Tensor& ids) {
  if (weight.is_meta()) {
    // LibTorch 1.13 has no meta kernel for the lookup (aten::index_select): on the meta device, where only
    // shapes and devices exist, a row of the table stands in for every token, on the same device, still
    // differentiable with respect to the table.
    std::vector<int64_t> shape = ids.sizes().vec();
    shape.push_back(weight.size(1));
    return weight.select(0, 0).expand(shape) * ids.unsqueeze(-1).to(weight.scalar_type());
  }
  return torch::embedding(weight, ids, padding_idx_);
}

ProjectionImpl::ProjectionImpl(int64_t in, int64_t out, const torch::TensorOptions& options) {
  weight = register_parameter("weight", torch::empty({out, in}, options));
}

RMSNormImpl::RMSNormImpl(int64_t dim, double eps, const torch::TensorOptions& options) : eps_(eps) {
  weight = register_parameter("weight", torch::ones({dim}, options));
}

torch::Tensor RMSNormImpl::forward(const torch::Tensor& x) {
  const torch::Tensor x32 = x.to(torch::kFloat);                         // [..., dim] fp32
  const torch::Tensor variance = x32.pow(2).mean(-1, /*keepdim=*/true);  // [..., 1]
  const torch::Tensor normed = x32 * torch::rsqrt(variance + eps_);      // [..., dim]
  return weight * normed.to(x.scalar_type());                            // [..., dim] in x's dtype
}

std::pair<torch::Tensor, torch::Tensor> RopeTables(int64_t seq_len, int64_t head_dim, double theta,
                                                   torch::ScalarType dtype, torch::Device device) {
  // transformers: inv_freq = 1.0 / (theta ** (arange(0, d, 2, int64).float() / d)), all in fp32.
  const torch::TensorOptions int64 = torch::TensorOptions(torch::kLong).device(device);
  const torch::Tensor exponent = torch::arange(0, head_dim, 2, int64).to(torch::kFloat) / head_dim;  // [d/2]
  const torch::Tensor inv_freq = torch::reciprocal(torch::pow(theta, exponent));                     // [d/2]
  const torch::Tensor positions = torch::arange(seq_len, int64).to(torch::kFloat);                   // [S]
  const torch::Tensor angles = positions.unsqueeze(1) * inv_freq.unsqueeze(0);                              // [S, d/2]
  const torch::Tensor both_halves = torch::cat({angles, angles}, -1);                                       // [S, d]
  return {both_halves.cos().to(dtype), both_halves.sin().to(dtype)};
}

torch::Tensor ApplyRope(const torch::Tensor& x, const torch::Tensor& cos, const torch::Tensor& sin) {
  const int64_t half = x.size(-1) / 2;
  const torch::Tensor rotated = torch::cat({-x.narrow(-1, half, half), x.narrow(-1, 0, half)}, -1);  // [B, h, S, d]
  return x * cos + rotated * sin;
}

LlamaAttentionImpl::LlamaAttentionImpl(const LlamaConfig& c, const torch::TensorOptions& options)
    : head_dim_(c.head_dim),
      group_size_(c.num_attention_heads / c.num_key_value_heads),
      scaling_(std::pow(static_cast<double>(c.head_dim), -0.5)),
      local_heads_(c.num_attention_heads),
      local_kv_heads_(c.num_key_value_heads) {
  q_proj = AnyProjection(c.hidden_size, c.num_attention_heads * c.head_dim, options);
  k_proj = AnyProjection(c.hidden_size, c.num_key_value_heads * c.head_dim, options);
  v_proj = AnyProjection(c.hidden_size, c.num_key_value_heads * c.head_dim, options);
  o_proj = AnyProjection(c.num_attention_heads * c.head_dim, c.hidden_size, options);
  register_module("q_proj", q_proj.ptr());
  register_module("k_proj", k_proj.ptr());
  register_module("v_proj", v_proj.ptr());
  register_module("o_proj", o_proj.ptr());
}

torch::Tensor LlamaAttentionImpl::forward(const torch::Tensor& x, const torch::Tensor& cos, const torch::Tensor& sin,
                                          const torch::Tensor& causal_mask) {
  const int64_t B = x.size(0), S = x.size(1), d = head_dim_;
  const int64_t nh = local_heads_, nkv = local_kv_heads_;  // all heads, or this rank's under TP

  // Project and split into heads.
  torch::Tensor q = q_proj.forward(x).view({B, S, nh, d}).transpose(1, 2);   // [B, nh, S, d]
  torch::Tensor k = k_proj.forward(x).view({B, S, nkv, d}).transpose(1, 2);  // [B, nkv, S, d]
  torch::Tensor v = v_proj.forward(x).view({B, S, nkv, d}).transpose(1, 2);  // [B, nkv, S, d]

  // Rotate queries and keys by their positions.
  q = ApplyRope(q, cos, sin);  // [B, nh, S, d]
  k = ApplyRope(k, cos, sin);  // [B, nkv, S, d]

#if TORCH_VERSION_MAJOR > 2 || (TORCH_VERSION_MAJOR == 2 && TORCH_VERSION_MINOR >= 5)
  // Causal attention by LibTorch's fused kernels (flash or memory-efficient on a GPU), GQA included.
  (void)causal_mask;
  const torch::Tensor y = at::scaled_dot_product_attention(q, k, v, /*attn_mask=*/{}, /*dropout_p=*/0.0,
                                                           /*is_causal=*/true, scaling_, /*enable_gqa=*/true);
  // y: [B, nh, S, d]
#else
  // GQA: each KV head serves group_size_ consecutive query heads.
  k = k.unsqueeze(2).expand({B, nkv, group_size_, S, d}).reshape({B, nh, S, d});  // [B, nh, S, d]
  v = v.unsqueeze(2).expand({B, nkv, group_size_, S, d}).reshape({B, nh, S, d});  // [B, nh, S, d]

  // Causal softmax attention, the softmax in fp32.
  torch::Tensor scores = torch::matmul(q, k.transpose(2, 3)) * scaling_;  // [B, nh, S, S]
  scores = scores.masked_fill(causal_mask, -std::numeric_limits<double>::infinity());
  const torch::Tensor probs = torch::softmax(scores, -1, torch::kFloat).to(q.scalar_type());  // [B, nh, S, S]
  const torch::Tensor y = torch::matmul(probs, v);                                            // [B, nh, S, d]
#endif

  // Merge the heads and project back (under TP, o_proj sums the ranks' partial outputs).
  return o_proj.forward(y.transpose(1, 2).reshape({B, S, nh * d}));  // [B, S, H]
}

absl::Status LlamaAttentionImpl::ReplaceProjection(absl::string_view name, torch::nn::AnyModule layer) {
  torch::nn::AnyModule* slot = name == "q_proj"   ? &q_proj
                               : name == "k_proj" ? &k_proj
                               : name == "v_proj" ? &v_proj
                               : name == "o_proj" ? &o_proj
                                                  : nullptr;
  if (slot == nullptr) return absl::InvalidArgumentError(absl::StrCat("attention has no projection \"", name, "\""));
  Replace(*this, std::string(name), *slot, std::move(layer));
  return absl::OkStatus();
}

absl::Status LlamaAttentionImpl::SetLocalHeads(int64_t heads, int64_t kv_heads) {
  if (heads < 0 || kv_heads < 0 || heads != kv_heads * group_size_) {
    return absl::InvalidArgumentError(absl::StrCat("local heads ", heads, " and KV heads ", kv_heads,
                                                   " break the GQA grouping of ", group_size_,
                                                   " query heads per KV head"));
  }
  local_heads_ = heads;
  local_kv_heads_ = kv_heads;
  return absl::OkStatus();
}

LlamaMlpImpl::LlamaMlpImpl(const LlamaConfig& c, const torch::TensorOptions& options) {
  gate_proj = AnyProjection(c.hidden_size, c.intermediate_size, options);
  up_proj = AnyProjection(c.hidden_size, c.intermediate_size, options);
  down_proj = AnyProjection(c.intermediate_size, c.hidden_size, options);
  register_module("gate_proj", gate_proj.ptr());
  register_module("up_proj", up_proj.ptr());
  register_module("down_proj", down_proj.ptr());
}

torch::Tensor LlamaMlpImpl::forward(const torch::Tensor& x) {
  const torch::Tensor gate = torch::silu(gate_proj.forward(x));  // [B, S, I] (I local under TP)
  const torch::Tensor up = up_proj.forward(x);                   // [B, S, I]
  return down_proj.forward(gate * up);                           // [B, S, H]
}

absl::Status LlamaMlpImpl::ReplaceProjection(absl::string_view name, torch::nn::AnyModule layer) {
  torch::nn::AnyModule* slot = name == "gate_proj"   ? &gate_proj
                               : name == "up_proj"   ? &up_proj
                               : name == "down_proj" ? &down_proj
                                                     : nullptr;
  if (slot == nullptr) return absl::InvalidArgumentError(absl::StrCat("MLP has no projection \"", name, "\""));
  Replace(*this, std::string(name), *slot, std::move(layer));
  return absl::OkStatus();
}

LlamaDecoderLayerImpl::LlamaDecoderLayerImpl(const LlamaConfig& c, const torch::TensorOptions& options)
    : self_attn(register_module("self_attn", LlamaAttention(c, options))),
      mlp(register_module("mlp", LlamaMlp(c, options))),
      input_layernorm(register_module("input_layernorm", RMSNorm(c.hidden_size, c.rms_norm_eps, options))),
      post_attention_layernorm(
          register_module("post_attention_layernorm", RMSNorm(c.hidden_size, c.rms_norm_eps, options))) {}

torch::Tensor LlamaDecoderLayerImpl::forward(const torch::Tensor& h, const torch::Tensor& cos, const torch::Tensor& sin,
                                             const torch::Tensor& causal_mask) {
  const torch::Tensor attention = self_attn->forward(input_layernorm->forward(h), cos, sin, causal_mask);  // [B, S, H]
  const torch::Tensor h1 = h + attention;                                                                // [B, S, H]
  return h1 + mlp->forward(post_attention_layernorm->forward(h1));                                       // [B, S, H]
}

LlamaDecoderImpl::LlamaDecoderImpl(const LlamaConfig& c, const torch::TensorOptions& options) : config_(c) {
  embed_tokens = register_module("embed_tokens", TokenEmbedding(c.vocab_size, c.hidden_size, c.pad_token_id, options));
  layers = register_module("layers", torch::nn::ModuleList());
  for (int64_t i = 0; i < c.num_hidden_layers; ++i) layers->push_back(LlamaDecoderLayer(c, options));
  norm = register_module("norm", RMSNorm(c.hidden_size, c.rms_norm_eps, options));
}

torch::Tensor LlamaDecoderImpl::forward(const torch::Tensor& input_ids) {
  const int64_t S = input_ids.size(1);
  torch::Tensor h = embed_tokens->forward(input_ids);  // [B, S, H]
  const auto [cos, sin] = RopeTables(S, config_.head_dim, config_.rope_theta, h.scalar_type(), h.device());  // [S, d]
  const torch::Tensor causal_mask = torch::ones({S, S}, h.options().dtype(torch::kBool)).triu(1);            // [S, S]
  for (size_t i = 0; i < layers->size(); ++i) h = layer(i)->forward(h, cos, sin, causal_mask);   // [B, S, H]
  return norm->forward(h);                                                                       // [B, S, H]
}

LlamaModelImpl::LlamaModelImpl(const LlamaConfig& config, Dtype dtype, uint64_t seed, torch::Device device)
    : config_(config), dtype_(dtype) {
  const torch::TensorOptions options = torch::TensorOptions(torch::kFloat32).device(device);
  model = register_module("model", LlamaDecoder(config, options));
  if (!config.tie_word_embeddings) {
    lm_head = register_module("lm_head", Projection(config.hidden_size, config.vocab_size, options));
  }

  // transformers' _init_weights: normal(0, initializer_range) for linear and embedding weights, ones for
  // norms, a zero padding row. Drawn in fp32 from one seeded generator in parameter order.
  torch::NoGradGuard no_grad;
  at::Generator generator = at::make_generator<at::CPUGeneratorImpl>(seed);
  for (auto& param : parameters()) {
    if (param.dim() == 1) continue;  // norm weights: already ones
    if (param.is_cpu()) {
      param.normal_(0.0, config.initializer_range, generator);
    } else {
      param.copy_(torch::empty(param.sizes()).normal_(0.0, config.initializer_range, generator));
    }
  }
  if (config.pad_token_id) model->embed_tokens->weight[*config.pad_token_id].zero_();
  to(ToScalarType(dtype));
}

torch::Tensor LlamaModelImpl::forward(const torch::Tensor& input_ids) {
  TORCH_CHECK(input_ids.dim() == 2 && input_ids.scalar_type() == torch::kLong,
              "input_ids must be int64 [batch, seq], got ", input_ids.scalar_type(), " ", input_ids.sizes());
  TORCH_CHECK(input_ids.size(1) >= 1 && input_ids.size(1) <= config_.max_position_embeddings, "sequence length ",
              input_ids.size(1), " is outside [1, max_position_embeddings=", config_.max_position_embeddings, "]");
  const torch::Tensor h = model->forward(input_ids);                                     // [B, S, H]
  return lm_head ? lm_head->forward(h) : torch::linear(h, model->embed_tokens->weight);  // [B, S, V]
}

TensorMap LlamaModelImpl::StateDict() {
  TensorMap tensors;
  for (const auto& item : named_parameters()) tensors.emplace(item.key(), item.value());
  return tensors;
}

absl::Status LlamaModelImpl::LoadStateDict(const TensorMap& tensors) {
  TensorMap params = StateDict();
  std::vector<std::string> missing, unexpected, misshaped;
  for (const auto& [name, param] : params) {
    auto it = tensors.find(name);
    if (it == tensors.end()) {
      missing.push_back(name);
    } else if (!it->second.is_floating_point()) {
      misshaped.push_back(
          absl::StrCat(name, " (dtype ", c10::toString(it->second.scalar_type()), ", not a float type)"));
    } else if (it->second.sizes() != param.sizes()) {
      misshaped.push_back(absl::StrCat(name, " (checkpoint ", ShapeString(it->second.sizes()), ", model ",
                                       ShapeString(param.sizes()), ")"));
    }
  }
  for (const auto& [name, tensor] : tensors) {
    if (params.count(name)) continue;
    const bool tied_copy = config_.tie_word_embeddings && name == "lm_head.weight" &&
                           tensors.count("model.embed_tokens.weight") &&
                           tensor.sizes() == tensors.at("model.embed_tokens.weight").sizes() &&
                           torch::equal(tensor, tensors.at("model.embed_tokens.weight"));
    if (!tied_copy) unexpected.push_back(name);
  }
  if (!missing.empty() || !unexpected.empty() || !misshaped.empty()) {
    std::vector<std::string> parts;
    if (!missing.empty()) parts.push_back(absl::StrCat("missing: ", absl::StrJoin(missing, ", ")));
    if (!unexpected.empty()) parts.push_back(absl::StrCat("unexpected: ", absl::StrJoin(unexpected, ", ")));
    if (!misshaped.empty()) parts.push_back(absl::StrCat("mis-shaped: ", absl::StrJoin(misshaped, ", ")));
    return absl::InvalidArgumentError(absl::StrCat("state dict does not fit the model; ", absl::StrJoin(parts, "; ")));
  }
  torch::NoGradGuard no_grad;
  for (auto& [name, param] : params) param.copy_(tensors.at(name));
  return absl::OkStatus();
}

absl::StatusOr<LlamaModel> LlamaModel::Create(const LlamaConfig& config, Dtype dtype, uint64_t seed,
                                             torch::Device device) {
  if (absl::Status s = config.Validate(); !s.ok()) return s;
  return LlamaModel(std::make_shared<LlamaModelImpl>(config, dtype, seed, device));
}

// ---------------------------------------------------------------------------------------------------------
// Loss and the Status-returning entry points.

torch::Tensor NextTokenLoss(const torch::Tensor& logits, const torch::Tensor& tokens) {
  const int64_t S = logits.size(1), V = logits.size(2);
  const torch::Tensor predictions = logits.narrow(1, 0, S - 1).reshape({-1, V}).to(torch::kFloat);  // [B*(S-1), V]
  const torch::Tensor targets = tokens.narrow(1, 1, S - 1).reshape({-1});                           // [B*(S-1)]
  return torch::nn::functional::cross_entropy(predictions, targets,
                                              torch::nn::functional::CrossEntropyFuncOptions().ignore_index(-100));
}

torch::Tensor NextTokenLossPerSequence(const torch::Tensor& logits, const torch::Tensor& tokens) {
  const int64_t B = logits.size(0), S = logits.size(1), V = logits.size(2);
  const torch::Tensor predictions = logits.narrow(1, 0, S - 1).reshape({-1, V}).to(torch::kFloat);
  const torch::Tensor targets = tokens.narrow(1, 1, S - 1).reshape({-1});
  return torch::nn::functional::cross_entropy(predictions, targets,
                                              torch::nn::functional::CrossEntropyFuncOptions().reduction(torch::kNone))
      .view({B, S - 1})
      .mean(1);
}

namespace {

absl::Status CheckInputIds(const LlamaConfig& config, const torch::Tensor& ids) {
  if (!ids.defined() || ids.dim() != 2 || ids.scalar_type() != torch::kLong) {
    return absl::InvalidArgumentError(absl::StrCat("input ids must be an int64 [batch, seq] tensor, got ",
                                                   ids.defined() ? ShapeString(ids.sizes()) : "undefined"));
  }
  if (ids.size(0) < 1 || ids.size(1) < 1 || ids.size(1) > config.max_position_embeddings) {
    return absl::InvalidArgumentError(absl::StrCat("input ids ", ShapeString(ids.sizes()),
                                                   ": need batch >= 1 and 1 <= seq <= max_position_embeddings (",
                                                   config.max_position_embeddings, ")"));
  }
  if (ids.min().item<int64_t>() < 0 || ids.max().item<int64_t>() >= config.vocab_size) {
    return absl::InvalidArgumentError(absl::StrCat("input ids must lie in [0, vocab_size=", config.vocab_size, ")"));
  }
  return absl::OkStatus();
}

template <typename Body>
absl::StatusOr<torch::Tensor> Guarded(LlamaModel& model, const torch::Tensor& ids, Body body) {
  if (absl::Status s = CheckInputIds(model->config(), ids); !s.ok()) return s;
  try {
    return body();
  } catch (const c10::Error& e) {
    return absl::InternalError(e.what_without_backtrace());
  } catch (const std::exception& e) {
    // Collectives report failures as std::runtime_error (communicator.h).
    return absl::UnavailableError(e.what());
  }
}

}  // namespace

absl::StatusOr<torch::Tensor> ComputeLogits(LlamaModel& model, const torch::Tensor& input_ids) {
  return Guarded(model, input_ids, [&] { return model->forward(input_ids); });
}

absl::StatusOr<torch::Tensor> ComputeLoss(LlamaModel& model, const torch::Tensor& tokens) {
  if (tokens.defined() && tokens.dim() == 2 && tokens.size(1) < 2) {
    return absl::InvalidArgumentError("next-token loss needs sequences of at least 2 tokens");
  }
  return Guarded(model, tokens, [&] { return NextTokenLoss(model->forward(tokens), tokens); });
}

}  // namespace tpcoord
