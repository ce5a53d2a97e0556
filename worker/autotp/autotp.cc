#include "worker/autotp/autotp.h"

#include <cmath>
#include <cstring>
#include <map>
#include <set>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/shard_sizes.h"
#include "worker/autotp/tp_layers.h"

namespace tpcoord {
namespace {

std::string SizesString(const std::vector<int64_t>& sizes) {
  return absl::StrCat("[", absl::StrJoin(sizes, ", "), "]");
}
std::string ShapeString(at::IntArrayRef shape) { return absl::StrCat("[", absl::StrJoin(shape, ", "), "]"); }

std::string LayerPrefix(int64_t layer) { return absl::StrCat("model.layers.", layer, "."); }

// What one decoder layer's plan says, by short name ("q_proj", ... "down_proj").
std::map<std::string, const TpProjection*> LayerPlan(const std::vector<TpProjection>& plan, int64_t layer) {
  const std::string prefix = LayerPrefix(layer);
  std::map<std::string, const TpProjection*> found;
  for (const TpProjection& p : plan) {
    if (p.name.rfind(prefix, 0) != 0) continue;
    const std::string rest = p.name.substr(prefix.size());
    found[rest.substr(rest.find('.') + 1)] = &p;
  }
  return found;
}

// A 64-bit fingerprint of a state dict (names, dtypes, shapes and every byte), to check that TP ranks hold
// the same full model. FNV-1a over 8-byte words, then a final avalanche (splitmix64's).
int64_t StateFingerprint(const TensorMap& tensors) {
  uint64_t h = 1469598103934665603ull;
  auto mix = [&h](uint64_t word) { h = (h ^ word) * 1099511628211ull; };
  auto mix_bytes = [&](const unsigned char* data, size_t n) {
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
      uint64_t word;
      std::memcpy(&word, data + i, 8);
      mix(word);
    }
    uint64_t tail = 0;
    if (n > i) std::memcpy(&tail, data + i, n - i);
    mix(tail ^ (static_cast<uint64_t>(n - i) << 56));
  };
  for (const auto& [name, tensor] : tensors) {
    mix_bytes(reinterpret_cast<const unsigned char*>(name.data()), name.size());
    mix(static_cast<uint64_t>(tensor.scalar_type()));
    for (int64_t d : tensor.sizes()) mix(static_cast<uint64_t>(d));
    const torch::Tensor bytes = tensor.detach().contiguous();
    mix_bytes(static_cast<const unsigned char*>(bytes.data_ptr()), bytes.numel() * bytes.element_size());
  }
  h ^= h >> 30;
  h *= 0xbf58476d1ce4e5b9ull;
  h ^= h >> 27;
  h *= 0x94d049bb133111ebull;
  h ^= h >> 31;
  return static_cast<int64_t>(h);
}

// G13: every TP rank must shard the same full model. All ranks see all fingerprints, so all agree on the
// outcome.
absl::Status CheckIdenticalAcrossRanks(LlamaModel& model, Communicator& comm) {
  if (comm.device().is_meta()) return absl::OkStatus();  // meta tensors hold no values to compare
  const int64_t mine = StateFingerprint(model->StateDict());
  std::vector<torch::Tensor> all;
  try {
    all = comm.AllGather(torch::tensor({mine}, torch::kLong).to(comm.device()));
  } catch (const std::exception& e) {
    return absl::UnavailableError(
        absl::StrCat("AutoTP: exchanging weight fingerprints over ", comm.name(), " failed: ", e.what()));
  }
  std::vector<int> differing;
  for (int r = 0; r < comm.size(); ++r) {
    if (all[r].item<int64_t>() != all[0].item<int64_t>()) differing.push_back(r);
  }
  if (differing.empty()) return absl::OkStatus();
  return absl::FailedPreconditionError(absl::StrCat(
      "AutoTP: the full model on TP rank(s) ", absl::StrJoin(differing, ", "), " of ", comm.name(),
      " differs from TP rank 0's; every TP rank must build the same model (same seed or checkpoint) before sharding"));
}

// Every TP layer of `model` with its module name, in module order (the same on every rank, so the
// collectives line up).
std::vector<std::pair<std::string, TensorParallelLayer*>> TpLayers(torch::nn::Module& model) {
  std::vector<std::pair<std::string, TensorParallelLayer*>> layers;
  for (const auto& module : model.named_modules()) {
    if (auto* layer = dynamic_cast<TensorParallelLayer*>(module.value().get()))
      layers.emplace_back(module.key(), layer);
  }
  return layers;
}

// `tensors` entries that belong to the layer `prefix`, keyed by parameter name; they are erased from
// `rest`.
TensorMap TakeLayerEntries(const std::string& prefix, const TensorParallelLayer& layer, const TensorMap& tensors,
                           std::set<std::string>& rest) {
  TensorMap entries;
  for (const auto& [param, value] : layer.OwnParameters()) {
    const std::string name = absl::StrCat(prefix, ".", param);
    if (auto it = tensors.find(name); it != tensors.end()) {
      entries.emplace(param, it->second);
      rest.erase(name);
    }
  }
  return entries;
}

TensorMap NamedParameters(torch::nn::Module& model) {
  TensorMap params;
  for (const auto& item : model.named_parameters()) params.emplace(item.key(), item.value());
  return params;
}

std::set<std::string> Keys(const TensorMap& tensors) {
  std::set<std::string> keys;
  for (const auto& [name, t] : tensors) keys.insert(name);
  return keys;
}

}  // namespace

absl::StatusOr<std::vector<TpProjection>> PlanLlamaTp(const LlamaConfig& config, int tp_size,
                                                      const AutoTpOptions& options) {
  if (absl::Status s = config.Validate(); !s.ok()) return s;
  const int kv = static_cast<int>(config.num_key_value_heads);
  const int64_t q_width = config.num_attention_heads * config.head_dim;
  const int64_t kv_width = config.num_key_value_heads * config.head_dim;
  const struct {
    const char* name;
    TpKind kind;
    int64_t split_dim_size;
  } kPreset[] = {
      {"self_attn.q_proj", TpKind::kColumn, q_width},
      {"self_attn.k_proj", TpKind::kColumn, kv_width},
      {"self_attn.v_proj", TpKind::kColumn, kv_width},
      {"self_attn.o_proj", TpKind::kRow, q_width},
      {"mlp.gate_proj", TpKind::kColumn, config.intermediate_size},
      {"mlp.up_proj", TpKind::kColumn, config.intermediate_size},
      {"mlp.down_proj", TpKind::kRow, config.intermediate_size},
  };
  std::vector<TpProjection> plan;
  for (int64_t layer = 0; layer < config.num_hidden_layers; ++layer) {
    for (const auto& p : kPreset) {
      TpProjection projection{LayerPrefix(layer) + p.name, p.kind, {}};
      absl::StatusOr<std::vector<int64_t>> sizes =
          ShardSizes(p.split_dim_size, tp_size, projection.name, kv, options.grain);
      if (!sizes.ok()) return sizes.status();
      projection.sizes = *std::move(sizes);
      plan.push_back(std::move(projection));
    }
  }
  if (absl::Status s = CheckLlamaTpPlan(config, plan); !s.ok()) return s;
  return plan;
}

absl::Status CheckLlamaTpPlan(const LlamaConfig& config, const std::vector<TpProjection>& plan) {
  const int64_t d = config.head_dim;
  const int64_t group = config.num_attention_heads / config.num_key_value_heads;
  for (int64_t layer = 0; layer < config.num_hidden_layers; ++layer) {
    const std::string prefix = LayerPrefix(layer);
    std::map<std::string, const TpProjection*> p = LayerPlan(plan, layer);
    for (const char* name : {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"}) {
      if (p.count(name) == 0)
        return absl::FailedPreconditionError(absl::StrCat("AutoTP plan has no ", prefix, "...", name));
    }
    auto mismatch = [&](const char* column, const char* row, absl::string_view why) {
      return absl::FailedPreconditionError(absl::StrCat(
          "AutoTP split mismatch in ", prefix, ": ", column, " splits its output as ", SizesString(p[column]->sizes),
          " but ", row, " splits its input as ", SizesString(p[row]->sizes), " (", why, ")"));
    };
    const std::vector<int64_t>& q = p["q_proj"]->sizes;
    const std::vector<int64_t>& k = p["k_proj"]->sizes;
    if (q != p["o_proj"]->sizes) return mismatch("q_proj", "o_proj", "attention heads must stay on one rank");
    if (k != p["v_proj"]->sizes) return mismatch("k_proj", "v_proj", "keys and values pair up");
    if (q.size() != k.size()) return mismatch("q_proj", "k_proj", "different TP sizes");
    for (size_t r = 0; r < q.size(); ++r) {
      if (q[r] % d != 0 || k[r] % d != 0) return mismatch("q_proj", "o_proj", "splits must fall on head boundaries");
      if (q[r] / d != group * (k[r] / d)) {
        return mismatch("q_proj", "k_proj", absl::StrCat("rank ", r, "'s query heads need exactly their KV heads"));
      }
    }
    if (p["gate_proj"]->sizes != p["down_proj"]->sizes)
      return mismatch("gate_proj", "down_proj", "MLP columns pair up");
    if (p["up_proj"]->sizes != p["down_proj"]->sizes) return mismatch("up_proj", "down_proj", "MLP columns pair up");
  }
  return absl::OkStatus();
}

absl::Status ShardLlama(LlamaModel& model, Communicator& tp_comm, const AutoTpOptions& options) {
  const LlamaConfig& config = model->config();
  for (const auto& item : model->named_modules()) {
    if (dynamic_cast<const TensorParallelLayer*>(item.value().get()) != nullptr) {
      return absl::FailedPreconditionError(absl::StrCat("AutoTP: the model is already sharded (", item.key(), ")"));
    }
  }
  if (tp_comm.size() == 1) return absl::OkStatus();
  absl::StatusOr<std::vector<TpProjection>> plan = PlanLlamaTp(config, tp_comm.size(), options);
  if (!plan.ok()) return plan.status();
  if (absl::Status s = CheckIdenticalAcrossRanks(model, tp_comm); !s.ok()) return s;

  // Build every replacement before touching the model, so an error leaves it whole.
  const TensorMap full = model->StateDict();
  std::map<std::string, torch::nn::AnyModule> built;  // by module name
  for (const TpProjection& p : *plan) {
    const torch::Tensor& weight = full.at(p.name + ".weight");
    absl::StatusOr<TpSplit> split = TpSplit::Create(p.sizes);
    if (!split.ok()) return split.status();
    if (p.kind == TpKind::kColumn) {
      absl::StatusOr<ColumnParallelLinear> column = ColumnParallelLinear::Create(p.name, weight, {}, *split, &tp_comm);
      if (!column.ok()) return column.status();
      built.emplace(p.name, torch::nn::AnyModule(*std::move(column)));
    } else {
      absl::StatusOr<RowParallelLinear> row = RowParallelLinear::Create(p.name, weight, {}, *split, &tp_comm);
      if (!row.ok()) return row.status();
      built.emplace(p.name, torch::nn::AnyModule(*std::move(row)));
    }
  }

  // Swap them in, and tell each attention how many heads are local, derived from its shards (gap G21).
  // The errors below cannot happen for a plan that passed CheckLlamaTpPlan.
  const int rank = tp_comm.rank();
  for (int64_t i = 0; i < config.num_hidden_layers; ++i) {
    LlamaDecoderLayer layer = model->model->layer(i);
    std::map<std::string, const TpProjection*> projections = LayerPlan(*plan, i);
    for (const auto& [short_name, projection] : projections) {
      torch::nn::AnyModule replacement = std::move(built.at(projection->name));
      const bool attention = projection->name.find(".self_attn.") != std::string::npos;
      absl::Status replaced = attention ? layer->self_attn->ReplaceProjection(short_name, std::move(replacement))
                                        : layer->mlp->ReplaceProjection(short_name, std::move(replacement));
      if (!replaced.ok()) return replaced;
    }
    const int64_t heads = projections.at("q_proj")->sizes[rank] / config.head_dim;
    const int64_t kv_heads = projections.at("k_proj")->sizes[rank] / config.head_dim;
    if (absl::Status s = layer->self_attn->SetLocalHeads(heads, kv_heads); !s.ok()) return s;
  }
  return absl::OkStatus();
}

TpParameterGroups ClassifyTpParameters(torch::nn::Module& model) {
  TpParameterGroups groups;
  groups.replicated = NamedParameters(model);
  for (const auto& [prefix, layer] : TpLayers(model)) {
    for (const auto& [param, value] : layer->OwnParameters()) {
      if (!layer->IsPartitioned(param)) continue;
      const std::string name = absl::StrCat(prefix, ".", param);
      groups.replicated.erase(name);
      groups.partitioned.emplace(name, value);
    }
  }
  return groups;
}

absl::StatusOr<double> GlobalGradNorm(torch::nn::Module& model, Communicator& tp_comm) {
  for (const auto& [name, layer] : TpLayers(model)) {
    if (&layer->comm() != &tp_comm) {
      return absl::InvalidArgumentError(absl::StrCat("GlobalGradNorm over ", tp_comm.name(), ", but ", name,
                                                     " is sharded over ", layer->comm().name()));
    }
  }
  const TpParameterGroups groups = ClassifyTpParameters(model);
  auto squared_norm = [](const TensorMap& params) {
    double total = 0;
    for (const auto& [name, p] : params) {
      if (p.grad().defined()) total += p.grad().to(torch::kDouble).pow(2).sum().item<double>();
    }
    return total;
  };
  torch::Tensor partitioned =
      torch::tensor({squared_norm(groups.partitioned)}, torch::kDouble).to(tp_comm.device());
  try {
    tp_comm.AllReduceSum(partitioned);
  } catch (const std::exception& e) {
    return absl::UnavailableError(absl::StrCat("gradient norm over ", tp_comm.name(), " failed: ", e.what()));
  }
  return std::sqrt(partitioned.item<double>() + squared_norm(groups.replicated));
}

absl::StatusOr<TensorMap> GatherFullTensors(torch::nn::Module& model, const TensorMap& local) {
  std::set<std::string> rest = Keys(local);
  TensorMap full;
  for (const auto& [prefix, layer] : TpLayers(model)) {
    absl::StatusOr<TensorMap> gathered = layer->Gather(TakeLayerEntries(prefix, *layer, local, rest));
    if (!gathered.ok()) return gathered.status();
    for (auto& [param, tensor] : *gathered) full.emplace(absl::StrCat(prefix, ".", param), std::move(tensor));
  }
  const TensorMap params = NamedParameters(model);
  for (const std::string& name : rest) {  // replicated: already whole
    auto param = params.find(name);
    const torch::Tensor& tensor = local.at(name);
    if (param == params.end() || tensor.sizes() != param->second.sizes()) {
      return absl::InvalidArgumentError(absl::StrCat(
          "cannot gather ", name, ": ",
          param == params.end() ? "the model has no such parameter" : "its shape differs from the parameter's"));
    }
    full.emplace(name, tensor.detach().clone());
  }
  return full;
}

absl::StatusOr<TensorMap> GatherFullStateDict(torch::nn::Module& model) {
  return GatherFullTensors(model, NamedParameters(model));
}

absl::StatusOr<TensorMap> ShardFullTensors(torch::nn::Module& model, const TensorMap& full) {
  std::set<std::string> rest = Keys(full);
  TensorMap local;
  std::vector<std::string> problems;
  for (const auto& [prefix, layer] : TpLayers(model)) {
    absl::StatusOr<TensorMap> shards = layer->LocalShards(TakeLayerEntries(prefix, *layer, full, rest));
    if (!shards.ok()) {
      problems.push_back(std::string(shards.status().message()));
      continue;
    }
    for (auto& [param, tensor] : *shards) local.emplace(absl::StrCat(prefix, ".", param), std::move(tensor));
  }
  const TensorMap params = NamedParameters(model);
  for (const std::string& name : rest) {
    auto param = params.find(name);
    const torch::Tensor& tensor = full.at(name);
    if (param == params.end()) {
      problems.push_back(absl::StrCat("unexpected ", name));
    } else if (tensor.sizes() != param->second.sizes()) {
      problems.push_back(
          absl::StrCat(name, ": full ", ShapeString(tensor.sizes()), ", model ", ShapeString(param->second.sizes())));
    } else {
      local.emplace(name, tensor);
    }
  }
  if (!problems.empty()) {
    return absl::InvalidArgumentError(
        absl::StrCat("tensors do not fit the sharded model: ", absl::StrJoin(problems, "; ")));
  }
  return local;
}

absl::Status LoadFullStateDict(torch::nn::Module& model, const TensorMap& full) {
  absl::StatusOr<TensorMap> local = ShardFullTensors(model, full);
  if (!local.ok()) return local.status();
  TensorMap params = NamedParameters(model);
  std::vector<std::string> missing;
  for (const auto& [name, param] : params) {
    if (local->count(name) == 0) missing.push_back(name);
  }
  if (!missing.empty()) {
    return absl::InvalidArgumentError(absl::StrCat("full state dict lacks: ", absl::StrJoin(missing, ", ")));
  }
  torch::NoGradGuard no_grad;
  for (auto& [name, param] : params) param.copy_(local->at(name));
  return absl::OkStatus();
}

}  // namespace tpcoord
