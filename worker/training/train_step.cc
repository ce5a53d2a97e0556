#include "worker/training/train_step.h"

#include <cmath>

#include "worker/autotp/autotp.h"
#include "worker/model/torch_dtype.h"

namespace tpcoord {
namespace {

// g . g, with no squared copy. On the meta device (shapes only) LibTorch 1.13 has no kernel for aten::dot;
// a product and a sum stand in there.
torch::Tensor SquaredNorm(const torch::Tensor& g) { return g.is_meta() ? (g * g).sum() : g.dot(g); }

}  // namespace

TrainStep::TrainStep(LlamaModel& model, Dtype dtype, const TrainConfig& train, Groups groups, int64_t bucket_bytes)
    : model_(model), dtype_(dtype), train_(train), groups_(groups), bucket_bytes_(bucket_bytes) {
  TensorMap full_precision = model_->StateDict();
  if (dtype_ == Dtype::kFloat32) {
    masters_ = full_precision;
  } else {
    for (const auto& [name, p] : full_precision) masters_[name] = p.detach().to(torch::kFloat32).clone();
    model_->to(ToScalarType(dtype_));
  }
  params_ = model_->StateDict();
  for (const auto& [name, p] : ClassifyTpParameters(*model_).partitioned) partitioned_[name] = masters_.at(name);
  optimizer_ = std::make_unique<Optimizer>(train_.optimizer, masters_);
  if (dtype_ == Dtype::kFloat16) {
    loss_scale_ = train_.loss_scale.static_scale > 0 ? train_.loss_scale.static_scale
                                                     : std::ldexp(1.0, train_.loss_scale.initial_scale_power);
  }
}

StepResult TrainStep::Run(const std::vector<torch::Tensor>& micro_batches, double lr) {
  StepResult result;
  for (auto& [name, p] : params_) p.mutable_grad() = torch::Tensor();

  // Forward and backward, micro batch by micro batch; the loss summed in fp64, as a number on the device.
  const double accumulation = static_cast<double>(micro_batches.size());
  torch::Tensor loss_sum =
      torch::zeros({}, torch::TensorOptions(torch::kFloat64).device(masters_.begin()->second.device()));
  for (const torch::Tensor& tokens : micro_batches) {
    const torch::Tensor loss = NextTokenLoss(model_->forward(tokens), tokens);  // fp32
    (loss * (loss_scale_ / accumulation)).backward();
    loss_sum.add_(loss.detach().to(torch::kFloat64));
  }
  result.loss = (loss_sum / accumulation).to(torch::kFloat32);  // fp32, as it travels at DP > 1
  CopyGradsToMasters();
  AverageOverDp(result.loss);

  if (dtype_ == Dtype::kFloat16 && UpdateLossScale()) {
    result.skipped = true;
    return result;
  }
  result.grad_norm = ClipGradients();
  optimizer_->Step(lr);
  CopyMastersToParams();
  return result;
}

void TrainStep::CopyGradsToMasters() {
  for (auto& [name, master] : masters_) {
    const torch::Tensor& param = params_.at(name);
    const torch::Tensor& grad = param.grad();
    if (param.is_same(master)) {  // fp32: the master is the parameter and already holds its gradient
      if (!grad.defined()) master.mutable_grad() = torch::zeros_like(master);
      continue;
    }
    torch::Tensor g = grad.defined() ? grad.to(torch::kFloat32) : torch::zeros_like(master);
    if (loss_scale_ != 1.0) g.div_(loss_scale_);
    master.mutable_grad() = g;
  }
}

void AverageOverGroup(Communicator& group, const std::vector<torch::Tensor>& pieces, int64_t bucket_bytes) {
  std::vector<int64_t> bytes;
  for (const torch::Tensor& piece : pieces) bytes.push_back(piece.numel() * piece.element_size());
  for (const GradBucket& bucket : PlanGradBuckets(bytes, bucket_bytes)) {
    if (bucket.count == 1) {  // reduced where it is
      torch::Tensor piece = pieces[bucket.first];
      group.AllReduceSum(piece);
      piece.div_(group.size());
      continue;
    }
    std::vector<torch::Tensor> members(pieces.begin() + bucket.first, pieces.begin() + bucket.first + bucket.count);
    torch::Tensor flat = torch::cat(members);  // [bucket elements]
    group.AllReduceSum(flat);
    flat.div_(group.size());
    int64_t offset = 0;
    for (torch::Tensor& member : members) {
      member.copy_(flat.narrow(0, offset, member.numel()));
      offset += member.numel();
    }
  }
}

void TrainStep::AverageOverDp(torch::Tensor& loss) {
  if (groups_.dp->size() == 1) return;
  std::vector<torch::Tensor> pieces;  // flat views of every gradient, then the loss
  for (auto& [name, master] : masters_) pieces.push_back(master.mutable_grad().view(-1));
  loss = loss.reshape({1});
  pieces.push_back(loss);
  AverageOverGroup(*groups_.dp, pieces, bucket_bytes_);
  loss = loss.reshape({});
}

bool TrainStep::UpdateLossScale() {
  std::vector<torch::Tensor> sums;  // one device sync for all of them, not one per tensor
  for (const auto& [name, master] : masters_) sums.push_back(master.grad().sum());
  torch::Tensor overflow = torch::isfinite(torch::stack(sums).sum()).logical_not().to(torch::kFloat32).reshape({1});
  groups_.world->AllReduceSum(overflow);
  if (overflow.item<float>() > 0) {
    loss_scale_ = std::max(loss_scale_ / 2, train_.loss_scale.min_loss_scale);
    good_steps_ = 0;
    return true;
  }
  if (train_.loss_scale.static_scale == 0 && ++good_steps_ % train_.loss_scale.loss_scale_window == 0) loss_scale_ *= 2;
  return false;
}

torch::Tensor TrainStep::ClipGradients() {
  // Squares summed in fp64 in parameter order, on the device, exactly as a host loop would.
  const torch::TensorOptions fp64 = torch::TensorOptions(torch::kFloat64).device(masters_.begin()->second.device());
  torch::Tensor partitioned = torch::zeros({1}, fp64), replicated = torch::zeros({1}, fp64);
  for (const auto& [name, master] : masters_) {
    const torch::Tensor g = master.grad().view(-1);
    (partitioned_.count(name) ? partitioned : replicated).add_(SquaredNorm(g).to(torch::kFloat64));
  }
  groups_.tp->AllReduceSum(partitioned);
  const torch::Tensor norm = (partitioned + replicated).sqrt().reshape({});
  if (train_.gradient_clipping > 0) {
    // DeepSpeed's clip_grad_norm_: scaled by clip / (norm + 1e-6) when that is below 1.
    const torch::Tensor coef = (train_.gradient_clipping / (norm + 1e-6)).clamp_max(1.0);
    for (auto& [name, master] : masters_) master.mutable_grad().mul_(coef);
  }
  return norm;
}

void TrainStep::CopyMastersToParams() {
  torch::NoGradGuard no_grad;
  for (auto& [name, master] : masters_) {
    torch::Tensor& p = params_.at(name);
    if (!p.is_same(master)) p.copy_(master);
  }
}

}  // namespace tpcoord
