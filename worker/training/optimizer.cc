#include "worker/training/optimizer.h"

#include <cmath>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"

namespace tpcoord {
namespace {

// PyTorch's single-tensor Adam / AdamW (torch.optim.adam._single_tensor_adam, amsgrad off, maximize off).
void AdamUpdate(const OptimizerConfig& c, bool decoupled, int64_t step, double lr, torch::Tensor& p,
                torch::Tensor grad, torch::Tensor& m, torch::Tensor& v) {
  if (decoupled) {
    p.mul_(1.0 - lr * c.weight_decay);
  } else if (c.weight_decay != 0) {
    grad = grad.add(p, c.weight_decay);
  }
  m.mul_(c.beta1).add_(grad, 1.0 - c.beta1);
  v.mul_(c.beta2).addcmul_(grad, grad, 1.0 - c.beta2);
  const double bias_correction1 = 1.0 - std::pow(c.beta1, static_cast<double>(step));
  const double bias_correction2 = 1.0 - std::pow(c.beta2, static_cast<double>(step));
  const double step_size = lr / bias_correction1;
  torch::Tensor denom = (v.sqrt() / std::sqrt(bias_correction2)).add_(c.eps);
  p.addcdiv_(m, denom, -step_size);
}

// PyTorch's single-tensor SGD (torch.optim.sgd._single_tensor_sgd, maximize off).
void SgdUpdate(const OptimizerConfig& c, double lr, torch::Tensor& p, torch::Tensor grad, torch::Tensor* buffer) {
  if (c.weight_decay != 0) grad = grad.add(p, c.weight_decay);
  if (c.momentum != 0) {
    if (!buffer->defined()) {
      *buffer = grad.clone().detach();
    } else {
      buffer->mul_(c.momentum).add_(grad, 1.0 - c.dampening);
    }
    grad = c.nesterov ? grad.add(*buffer, c.momentum) : *buffer;
  }
  p.add_(grad, -lr);
}

}  // namespace

Optimizer::Optimizer(const OptimizerConfig& config, TensorMap params)
    : config_(config), params_(std::move(params)) {}

void Optimizer::Step(double lr) {
  torch::NoGradGuard no_grad;
  ++step_count_;
  for (auto& [name, p] : params_) {
    if (!p.grad().defined()) continue;
    const torch::Tensor grad = p.grad();
    switch (config_.type) {
      case OptimizerConfig::Type::kAdamW:
      case OptimizerConfig::Type::kAdam: {
        torch::Tensor& m = exp_avg_[name];
        torch::Tensor& v = exp_avg_sq_[name];
        if (!m.defined()) {
          m = torch::zeros_like(p);
          v = torch::zeros_like(p);
        }
        AdamUpdate(config_, config_.type == OptimizerConfig::Type::kAdamW, step_count_, lr, p, grad, m, v);
        break;
      }
      case OptimizerConfig::Type::kSgd: {
        torch::Tensor* buffer = config_.momentum != 0 ? &momentum_[name] : nullptr;
        torch::Tensor unused;
        SgdUpdate(config_, lr, p, grad, buffer ? buffer : &unused);
        break;
      }
    }
  }
}

TensorMap Optimizer::State() const {
  TensorMap state;
  for (const auto& [name, t] : exp_avg_) state[name + ".exp_avg"] = t;
  for (const auto& [name, t] : exp_avg_sq_) state[name + ".exp_avg_sq"] = t;
  for (const auto& [name, t] : momentum_) state[name + ".momentum_buffer"] = t;
  return state;
}

absl::Status Optimizer::LoadState(const TensorMap& state, int64_t step_count) {
  TensorMap exp_avg, exp_avg_sq, momentum;
  std::vector<std::string> problems;
  for (const auto& [key, t] : state) {
    const size_t dot = key.rfind('.');
    const std::string name = key.substr(0, dot == std::string::npos ? 0 : dot);
    const std::string kind = dot == std::string::npos ? key : key.substr(dot + 1);
    auto p = params_.find(name);
    TensorMap* target = kind == "exp_avg"           ? &exp_avg
                        : kind == "exp_avg_sq"      ? &exp_avg_sq
                        : kind == "momentum_buffer" ? &momentum
                                                    : nullptr;
    if (p == params_.end() || target == nullptr) {
      problems.push_back(absl::StrCat(key, " (not a state of this optimizer)"));
    } else if (t.sizes() != p->second.sizes()) {
      problems.push_back(absl::StrCat(key, " (shape [", absl::StrJoin(t.sizes(), ", "), "], parameter [",
                                      absl::StrJoin(p->second.sizes(), ", "), "])"));
    } else {
      (*target)[name] = t.to(p->second.device(), torch::kFloat32).contiguous().clone();  // beside its parameter
    }
  }
  if (!problems.empty()) {
    return absl::InvalidArgumentError(absl::StrCat("optimizer state does not fit: ", absl::StrJoin(problems, "; ")));
  }
  exp_avg_ = std::move(exp_avg);
  exp_avg_sq_ = std::move(exp_avg_sq);
  momentum_ = std::move(momentum);
  step_count_ = step_count;
  return absl::OkStatus();
}

}  // namespace tpcoord
