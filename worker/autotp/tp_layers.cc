#include "worker/autotp/tp_layers.h"

#include <algorithm>
#include <cstdint>
#include <numeric>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/deepspeed_error.h"

namespace tpcoord {
namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

std::string ShapeString(at::IntArrayRef shape) { return absl::StrCat("[", absl::StrJoin(shape, ", "), "]"); }

// Autograd contexts can only save IValues, so the communicator travels as an integer. The layer's
// contract (the communicator outlives every graph built through it) keeps the pointer valid.
void SaveComm(AutogradContext* ctx, Communicator* comm) {
  ctx->saved_data["comm"] = static_cast<int64_t>(reinterpret_cast<intptr_t>(comm));
}
Communicator& SavedComm(AutogradContext* ctx) {
  return *reinterpret_cast<Communicator*>(static_cast<intptr_t>(ctx->saved_data["comm"].toInt()));
}

// [.., n] -> [rows, n], merging every leading dimension (without reshape's -1, which a zero-width shard
// would make ambiguous).
torch::Tensor Rows(const torch::Tensor& t) { return t.dim() == 1 ? t.unsqueeze(0) : t.flatten(0, -2); }

// dW = dy^T x over every leading dimension: dy [.., out], x [.., in] -> [out, in].
torch::Tensor WeightGrad(const torch::Tensor& dy, const torch::Tensor& x) { return Rows(dy).t().mm(Rows(x)); }

// y_r = x W_r^T, whose backward sums the input gradient over the group: the column-parallel matmul.
// Forward needs no communication because x is replicated.
struct ColumnParallelMatmul : public torch::autograd::Function<ColumnParallelMatmul> {
  static torch::Tensor forward(AutogradContext* ctx, const torch::Tensor& x, const torch::Tensor& w,
                               Communicator* comm) {
    ctx->save_for_backward({x, w});
    SaveComm(ctx, comm);
    return torch::matmul(x, w.t());  // [.., out_r]
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const variable_list saved = ctx->get_saved_variables();
    const torch::Tensor& x = saved[0];   // [.., in]
    const torch::Tensor& w = saved[1];   // [out_r, in]
    const torch::Tensor& dy = grads[0];  // [.., out_r]
    torch::Tensor dx, dw;
    if (ctx->needs_input_grad(0)) {
      dx = torch::matmul(dy, w).contiguous();  // [.., in]: this rank's share of the input gradient
      SavedComm(ctx).AllReduceSum(dx);         // summed in place over the group: the full input gradient
    }
    if (ctx->needs_input_grad(1)) dw = WeightGrad(dy, x);  // [out_r, in]
    return {dx, dw, torch::Tensor()};
  }
};

// y = sum over ranks of x_r W_r^T: the row-parallel matmul. Its backward needs no communication: dy is
// replicated, and each rank needs only the gradient of its own x_r and W_r.
struct RowParallelMatmul : public torch::autograd::Function<RowParallelMatmul> {
  static torch::Tensor forward(AutogradContext* ctx, const torch::Tensor& x, const torch::Tensor& w,
                               Communicator* comm) {
    ctx->save_for_backward({x, w});
    torch::Tensor y = torch::matmul(x, w.t()).contiguous();  // [.., out]: this rank's partial sum
    comm->AllReduceSum(y);                                   // summed in place: the full output
    return y;
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const variable_list saved = ctx->get_saved_variables();
    const torch::Tensor& x = saved[0];   // [.., in_r]
    const torch::Tensor& w = saved[1];   // [out, in_r]
    const torch::Tensor& dy = grads[0];  // [.., out]
    torch::Tensor dx, dw;
    if (ctx->needs_input_grad(0)) dx = torch::matmul(dy, w);  // [.., in_r]
    if (ctx->needs_input_grad(1)) dw = WeightGrad(dy, x);     // [out, in_r]
    return {dx, dw, torch::Tensor()};
  }
};

std::vector<int64_t> Flatten(const std::vector<std::vector<int64_t>>& widths) {
  std::vector<int64_t> flat;
  for (const auto& row : widths) flat.insert(flat.end(), row.begin(), row.end());
  return flat;
}

// Every rank's [.., out_r] output, all-gathered into the full [.., out] (a column layer's gather_output).
// Backward keeps this rank's columns of the gradient, with no communication: correct because everything
// downstream of a gathered output is replicated.
struct GatherOutput : public torch::autograd::Function<GatherOutput> {
  static torch::Tensor forward(AutogradContext* ctx, const torch::Tensor& y, const TpSplit* split, Communicator* comm) {
    ctx->saved_data["widths"] = Flatten(split->widths());
    ctx->saved_data["tp_size"] = static_cast<int64_t>(split->tp_size());
    ctx->saved_data["rank"] = static_cast<int64_t>(comm->rank());
    const std::vector<int64_t> sizes = split->local_sizes();
    const int64_t widest = *std::max_element(sizes.begin(), sizes.end());
    std::vector<int64_t> padded_shape = y.sizes().vec();
    padded_shape.back() = widest;
    torch::Tensor padded = torch::zeros(padded_shape, y.options());  // [.., widest]
    padded.narrow(-1, 0, y.size(-1)).copy_(y);
    std::vector<torch::Tensor> pieces = comm->AllGather(padded);  // T x [.., widest]
    for (int r = 0; r < split->tp_size(); ++r) pieces[r] = pieces[r].narrow(-1, 0, sizes[r]);
    return split->Assemble(pieces, -1);  // [.., out]
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const std::vector<int64_t> flat = ctx->saved_data["widths"].toIntVector();
    const int64_t t = ctx->saved_data["tp_size"].toInt();
    std::vector<std::vector<int64_t>> widths;
    for (size_t i = 0; i < flat.size(); i += t) widths.emplace_back(flat.begin() + i, flat.begin() + i + t);
    const TpSplit split = *TpSplit::CreateFused(std::move(widths));
    return {split.Slice(grads[0], -1, static_cast<int>(ctx->saved_data["rank"].toInt())), torch::Tensor(),
            torch::Tensor()};
  }
};

// A stable 64-bit fingerprint of a split (FNV-1a over its widths), so ranks can check they agree.
int64_t Fingerprint(const TpSplit& split) {
  uint64_t h = 1469598103934665603ull;
  auto mix = [&h](uint64_t v) {
    for (int i = 0; i < 8; ++i) {
      h ^= (v >> (8 * i)) & 0xff;
      h *= 1099511628211ull;
    }
  };
  for (const auto& row : split.widths()) {
    mix(row.size());
    for (int64_t w : row) mix(static_cast<uint64_t>(w));
  }
  return static_cast<int64_t>(h);
}

// The full tensor from every rank's `local` piece along `dim` of `split`, on every rank. First every
// rank shares its piece's size and its split's fingerprint, so that all ranks see the same facts and fail
// alike if the pieces or the splits disagree; then the pieces, zero-padded to the widest, are gathered.
absl::StatusOr<torch::Tensor> GatherAlong(const torch::Tensor& local, int64_t dim, const TpSplit& split,
                                          Communicator& comm, const std::string& param) {
  try {
    torch::NoGradGuard no_grad;
    const torch::Tensor facts = torch::tensor({local.size(dim), Fingerprint(split)}, torch::kLong).to(comm.device());
    const std::vector<torch::Tensor> all_facts = comm.AllGather(facts);
    for (int r = 0; r < comm.size(); ++r) {
      if (all_facts[r][1].item<int64_t>() != Fingerprint(split)) {
        return absl::FailedPreconditionError(
            absl::StrCat("AutoTP ranks disagree on how ", param, " is partitioned: rank ", r,
                         " froze a different split than rank ", comm.rank(), "'s ", split.DebugString()));
      }
      const int64_t held = all_facts[r][0].item<int64_t>();
      if (held != split.local_size(r)) {
        return DeepSpeedError(absl::StrCat("Rank ", r, " holds ", held, " elements along dim ", dim, " of ", param,
                                           ", but the partition scheme expects ", split.local_size(r), "."));
      }
    }
    const std::vector<int64_t> sizes = split.local_sizes();
    std::vector<int64_t> padded_shape = local.sizes().vec();
    padded_shape[dim] = *std::max_element(sizes.begin(), sizes.end());
    torch::Tensor padded = torch::zeros(padded_shape, local.options());
    padded.narrow(dim, 0, local.size(dim)).copy_(local);
    std::vector<torch::Tensor> pieces = comm.AllGather(padded);
    for (int r = 0; r < comm.size(); ++r) pieces[r] = pieces[r].narrow(dim, 0, sizes[r]);
    return split.Assemble(pieces, dim);
  } catch (const std::exception& e) {
    return absl::UnavailableError(absl::StrCat("gathering ", param, " over ", comm.name(), " failed: ", e.what()));
  }
}

// Checks shared by both layer kinds; `split_dim` is the weight dimension being split.
absl::Status CheckCreateArgs(const std::string& name, const torch::Tensor& weight, const torch::Tensor& bias,
                             const TpSplit& split, Communicator* comm, int64_t split_dim) {
  if (comm == nullptr) {
    return absl::InvalidArgumentError(absl::StrCat("AutoTP layer '", name, "' needs a TP communicator"));
  }
  if (!weight.defined() || weight.dim() != 2) {
    return absl::InvalidArgumentError(absl::StrCat("AutoTP layer '", name, "' needs a 2-D weight"));
  }
  if (split.tp_size() != comm->size()) {
    return absl::InvalidArgumentError(absl::StrCat("AutoTP layer '", name, "': split ", split.DebugString(), " is for ",
                                                   split.tp_size(), " ranks, but ", comm->name(), " has ",
                                                   comm->size()));
  }
  if (split.full_size() != weight.size(split_dim)) {
    return absl::InvalidArgumentError(absl::StrCat("AutoTP layer '", name, "': split ", split.DebugString(), " covers ",
                                                   split.full_size(), " elements, but weight ",
                                                   ShapeString(weight.sizes()), " has ", weight.size(split_dim),
                                                   " along dim ", split_dim));
  }
  if (bias.defined() && (bias.dim() != 1 || bias.size(0) != weight.size(0))) {
    return absl::InvalidArgumentError(absl::StrCat("AutoTP layer '", name, "': bias ", ShapeString(bias.sizes()),
                                                   " does not match weight ", ShapeString(weight.sizes())));
  }
  return absl::OkStatus();
}

}  // namespace

// ---------------------------------------------------------------------------------------------------------
// TpSplit

absl::StatusOr<TpSplit> TpSplit::Create(std::vector<int64_t> sizes) { return CreateFused({std::move(sizes)}); }

absl::StatusOr<TpSplit> TpSplit::CreateFused(std::vector<std::vector<int64_t>> widths) {
  if (widths.empty() || widths[0].empty()) return absl::InvalidArgumentError("a TP split needs at least one rank");
  for (const auto& row : widths) {
    if (row.size() != widths[0].size()) {
      return absl::InvalidArgumentError("every sub-parameter of a TP split needs the same number of ranks");
    }
    for (int64_t w : row) {
      if (w < 0) return absl::InvalidArgumentError("TP split widths must be non-negative");
    }
  }
  return TpSplit(std::move(widths));
}

int64_t TpSplit::full_size() const {
  int64_t total = 0;
  for (const auto& row : widths_) total += std::accumulate(row.begin(), row.end(), int64_t{0});
  return total;
}

int64_t TpSplit::local_size(int rank) const {
  int64_t total = 0;
  for (const auto& row : widths_) total += row[rank];
  return total;
}

std::vector<int64_t> TpSplit::local_sizes() const {
  std::vector<int64_t> sizes;
  for (int r = 0; r < tp_size(); ++r) sizes.push_back(local_size(r));
  return sizes;
}

torch::Tensor TpSplit::Slice(const torch::Tensor& full, int64_t dim, int rank) const {
  std::vector<torch::Tensor> pieces;
  int64_t sub_param_start = 0;
  for (const auto& row : widths_) {
    const int64_t offset = std::accumulate(row.begin(), row.begin() + rank, int64_t{0});
    pieces.push_back(full.narrow(dim, sub_param_start + offset, row[rank]));
    sub_param_start += std::accumulate(row.begin(), row.end(), int64_t{0});
  }
  return torch::cat(pieces, dim);  // always a fresh, contiguous tensor
}

torch::Tensor TpSplit::Assemble(const std::vector<torch::Tensor>& pieces, int64_t dim) const {
  std::vector<torch::Tensor> ordered;  // sub-parameter major, rank minor
  std::vector<int64_t> offset_in_piece(tp_size(), 0);
  for (const auto& row : widths_) {
    for (int r = 0; r < tp_size(); ++r) {
      ordered.push_back(pieces[r].narrow(dim, offset_in_piece[r], row[r]));
      offset_in_piece[r] += row[r];
    }
  }
  return torch::cat(ordered, dim);
}

std::string TpSplit::DebugString() const {
  std::vector<std::string> rows;
  for (const auto& row : widths_) rows.push_back(absl::StrCat("[", absl::StrJoin(row, ", "), "]"));
  return absl::StrCat("[", absl::StrJoin(rows, ", "), "]");
}

// ---------------------------------------------------------------------------------------------------------
// TensorParallelLayer

absl::StatusOr<TensorMap> TensorParallelLayer::Gather(const TensorMap& local) {
  const TensorMap params = OwnParameters();
  for (const auto& [name, tensor] : local) {
    auto param = params.find(name);
    if (param == params.end() || !tensor.defined() || tensor.sizes() != param->second.sizes()) {
      return absl::InvalidArgumentError(absl::StrCat(
          layer_name(), ": cannot gather ", name, " ", tensor.defined() ? ShapeString(tensor.sizes()) : "(undefined)",
          param == params.end() ? "; the layer has no such parameter"
                                : absl::StrCat("; the local parameter is ", ShapeString(param->second.sizes()))));
    }
  }
  TensorMap full;
  for (const auto& [name, tensor] : local) {  // name order: the same on every rank
    const int64_t dim = PartitionDim(name);
    if (dim < 0) {
      full[name] = tensor.detach().clone();
      continue;
    }
    absl::StatusOr<torch::Tensor> gathered =
        GatherAlong(tensor.detach(), dim, split(), comm(), layer_name() + "." + name);
    if (!gathered.ok()) return gathered.status();
    full[name] = *std::move(gathered);
  }
  return full;
}

absl::StatusOr<TensorMap> TensorParallelLayer::GatherParameters() { return Gather(OwnParameters()); }

absl::StatusOr<TensorMap> TensorParallelLayer::LocalShards(const TensorMap& full) const {
  const TensorMap params = OwnParameters();
  TensorMap shards;
  for (const auto& [name, tensor] : full) {
    auto param = params.find(name);
    if (param == params.end()) {
      return absl::InvalidArgumentError(absl::StrCat(layer_name(), " has no parameter ", name));
    }
    const int64_t dim = PartitionDim(name);
    std::vector<int64_t> full_shape = param->second.sizes().vec();
    if (dim >= 0) full_shape[dim] = split().full_size();
    if (!tensor.defined() || tensor.sizes() != full_shape) {
      return absl::InvalidArgumentError(absl::StrCat(layer_name(), ".", name, ": needs the full shape ",
                                                     ShapeString(full_shape), ", got ",
                                                     tensor.defined() ? ShapeString(tensor.sizes()) : "undefined"));
    }
    shards[name] = dim < 0 ? tensor : split().Slice(tensor, dim, comm().rank());
  }
  return shards;
}

absl::Status TensorParallelLayer::ShardParameters(const TensorMap& full) {
  absl::StatusOr<TensorMap> shards = LocalShards(full);
  if (!shards.ok()) return shards.status();
  TensorMap params = OwnParameters();
  for (const auto& [name, param] : params) {
    if (shards->count(name) == 0) return absl::InvalidArgumentError(absl::StrCat(layer_name(), ": no full ", name));
  }
  torch::NoGradGuard no_grad;
  for (auto& [name, param] : params) param.copy_(shards->at(name));
  return absl::OkStatus();
}

namespace {

TensorMap ParametersOf(const torch::nn::Module& module) {
  TensorMap params;
  for (const auto& item : module.named_parameters(/*recurse=*/false)) params.emplace(item.key(), item.value());
  return params;
}

}  // namespace

// ---------------------------------------------------------------------------------------------------------
// ColumnParallelLinear

ColumnParallelLinearImpl::ColumnParallelLinearImpl(std::string name, torch::Tensor local_weight,
                                                   torch::Tensor local_bias, bool requires_grad, TpSplit split,
                                                   Communicator* comm, bool gather_output)
    : name_(std::move(name)), split_(std::move(split)), comm_(comm), gather_output_(gather_output) {
  weight = register_parameter("weight", std::move(local_weight), requires_grad);
  if (local_bias.defined()) bias = register_parameter("bias", std::move(local_bias), requires_grad);
}

absl::StatusOr<ColumnParallelLinear> ColumnParallelLinear::Create(std::string name, const torch::Tensor& weight,
                                                                  const torch::Tensor& bias, TpSplit split,
                                                                  Communicator* comm, bool gather_output) {
  if (absl::Status s = CheckCreateArgs(name, weight, bias, split, comm, 0); !s.ok()) return s;
  const int rank = comm->rank();
  torch::Tensor local_weight = split.Slice(weight.detach(), 0, rank);                                 // [out_r, in]
  torch::Tensor local_bias = bias.defined() ? split.Slice(bias.detach(), 0, rank) : torch::Tensor();  // [out_r]
  return ColumnParallelLinear(std::make_shared<ColumnParallelLinearImpl>(std::move(name), std::move(local_weight),
                                                                         std::move(local_bias), weight.requires_grad(),
                                                                         std::move(split), comm, gather_output));
}

torch::Tensor ColumnParallelLinearImpl::forward(const torch::Tensor& x) {
  torch::Tensor y = ColumnParallelMatmul::apply(x, weight, comm_);  // [.., out_r]
  if (bias.defined()) y = y + bias;                                 // [.., out_r]
  if (gather_output_) y = GatherOutput::apply(y, &split_, comm_);   // [.., out]
  return y;
}

TensorMap ColumnParallelLinearImpl::OwnParameters() const { return ParametersOf(*this); }

int64_t ColumnParallelLinearImpl::PartitionDim(const std::string& param_name) const {
  return param_name == "weight" || param_name == "bias" ? 0 : -1;
}

// ---------------------------------------------------------------------------------------------------------
// RowParallelLinear

RowParallelLinearImpl::RowParallelLinearImpl(std::string name, torch::Tensor local_weight, torch::Tensor bias_in,
                                             bool requires_grad, TpSplit split, Communicator* comm)
    : name_(std::move(name)), split_(std::move(split)), comm_(comm) {
  weight = register_parameter("weight", std::move(local_weight), requires_grad);
  if (bias_in.defined()) bias = register_parameter("bias", std::move(bias_in), requires_grad);
}

absl::StatusOr<RowParallelLinear> RowParallelLinear::Create(std::string name, const torch::Tensor& weight,
                                                            const torch::Tensor& bias, TpSplit split,
                                                            Communicator* comm) {
  if (absl::Status s = CheckCreateArgs(name, weight, bias, split, comm, 1); !s.ok()) return s;
  torch::Tensor local_weight = split.Slice(weight.detach(), 1, comm->rank());           // [out, in_r]
  torch::Tensor whole_bias = bias.defined() ? bias.detach().clone() : torch::Tensor();  // [out]
  return RowParallelLinear(std::make_shared<RowParallelLinearImpl>(
      std::move(name), std::move(local_weight), std::move(whole_bias), weight.requires_grad(), std::move(split), comm));
}

torch::Tensor RowParallelLinearImpl::forward(const torch::Tensor& x) {
  torch::Tensor y = RowParallelMatmul::apply(x, weight, comm_);  // [.., out], summed over the group
  if (bias.defined()) y = y + bias;                              // replicated bias, added once
  return y;
}

TensorMap RowParallelLinearImpl::OwnParameters() const { return ParametersOf(*this); }

int64_t RowParallelLinearImpl::PartitionDim(const std::string& param_name) const {
  return param_name == "weight" ? 1 : -1;
}

}  // namespace tpcoord
