#include "common/lr_schedule.h"

#include <algorithm>
#include <cmath>
#include <set>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"

namespace tpcoord {
namespace {

using nlohmann::json;

// The warmup ramp in [0, 1) at iteration t < warmup_num_steps.
double Ramp(const LrSchedule& s, int64_t t) {
  if (s.warmup == LrSchedule::Warmup::kLog) {
    return std::log(static_cast<double>(t + 1)) / std::log(static_cast<double>(s.warmup_num_steps));
  }
  return static_cast<double>(t) / s.warmup_num_steps;
}

absl::Status Invalid(const std::string& key, const json& value, absl::string_view expected) {
  return absl::InvalidArgumentError(absl::StrCat("scheduler.", key, " must be ", expected, ", got ", value.dump()));
}

}  // namespace

double LrSchedule::LearningRate(int64_t step) const {
  const int64_t t = step - 1;  // DeepSpeed's last_batch_iteration when this step runs
  switch (type) {
    case Type::kConstant: return base_lr;
    case Type::kWarmupLR:
    case Type::kWarmupDecayLR: {
      if (t < 0) return warmup_min_lr;
      double gamma = 1.0;
      if (t < warmup_num_steps) {
        gamma = Ramp(*this, t);
      } else if (type == Type::kWarmupDecayLR) {
        gamma = std::max(0.0, static_cast<double>(total_num_steps - t) /
                                  std::max(1.0, static_cast<double>(total_num_steps - warmup_num_steps)));
      }
      return warmup_min_lr + (warmup_max_lr - warmup_min_lr) * gamma;
    }
    case Type::kWarmupCosineLR: {
      if (t < 0) return 0.0;
      if (t < warmup_num_steps) return base_lr * (warmup_min_ratio + Ramp(*this, t) * (1.0 - warmup_min_ratio));
      const double progress = static_cast<double>(t - warmup_num_steps + 1) / (total_num_steps - warmup_num_steps);
      const double cosine = (1.0 + std::cos(M_PI * progress)) / 2.0;
      return base_lr * std::max(0.0, cos_min_ratio + (1.0 - cos_min_ratio) * cosine);
    }
  }
  return base_lr;
}

absl::StatusOr<LrSchedule> ParseLrSchedule(const json& section, double base_lr) {
  LrSchedule s;
  s.base_lr = base_lr;
  s.warmup_max_lr = base_lr;
  if (section.is_null()) return s;
  if (!section.is_object()) return Invalid("", section, "an object");
  const std::string type = section.value("type", "");
  std::set<std::string> allowed;
  if (type == "WarmupLR") {
    s.type = LrSchedule::Type::kWarmupLR;
    allowed = {"warmup_min_lr", "warmup_max_lr", "warmup_num_steps", "warmup_type", "last_batch_iteration"};
  } else if (type == "WarmupDecayLR") {
    s.type = LrSchedule::Type::kWarmupDecayLR;
    allowed = {"warmup_min_lr", "warmup_max_lr", "warmup_num_steps", "warmup_type", "total_num_steps",
               "last_batch_iteration"};
  } else if (type == "WarmupCosineLR") {
    s.type = LrSchedule::Type::kWarmupCosineLR;
    allowed = {"warmup_min_ratio", "warmup_num_steps", "cos_min_ratio", "warmup_type", "total_num_steps",
               "last_batch_iteration"};
  } else {
    return absl::InvalidArgumentError(absl::StrCat(
        "scheduler.type \"", type, "\" is not supported; use WarmupLR, WarmupDecayLR or WarmupCosineLR"));
  }
  const json params = section.value("params", json::object());
  if (!params.is_object()) return Invalid("params", params, "an object");
  for (const auto& [key, value] : params.items()) {
    if (!allowed.count(key)) {
      return absl::InvalidArgumentError(absl::StrCat("scheduler.params.", key, " is not a parameter of ", type,
                                                     "; its parameters are ", absl::StrJoin(allowed, ", ")));
    }
    const std::string name = "params." + key;
    if (key == "warmup_type") {
      if (value == "log") s.warmup = LrSchedule::Warmup::kLog;
      else if (value == "linear") s.warmup = LrSchedule::Warmup::kLinear;
      else return Invalid(name, value, "\"log\" or \"linear\"");
      continue;
    }
    if (!value.is_number()) return Invalid(name, value, "a number");
    const double v = value.get<double>();
    if (key == "warmup_min_lr") s.warmup_min_lr = v;
    if (key == "warmup_max_lr") s.warmup_max_lr = v;
    if (key == "warmup_min_ratio") s.warmup_min_ratio = v;
    if (key == "cos_min_ratio") s.cos_min_ratio = v;
    if (key == "warmup_num_steps") {
      if (v < 0) return Invalid(name, value, "at least 0");
      s.warmup_num_steps = std::max(2, static_cast<int>(v));
    }
    if (key == "total_num_steps") {
      if (v < 1) return Invalid(name, value, "at least 1");
      s.total_num_steps = static_cast<int>(v);
    }
    if (key == "last_batch_iteration" && v != -1) {
      return Invalid(name, value, "-1 (tpcoord resumes schedules from its own checkpoints)");
    }
  }
  if (s.type == LrSchedule::Type::kWarmupCosineLR && s.total_num_steps <= s.warmup_num_steps) {
    return absl::InvalidArgumentError(absl::StrCat("scheduler.params.total_num_steps (", s.total_num_steps,
                                                   ") must exceed warmup_num_steps (", s.warmup_num_steps,
                                                   ") for WarmupCosineLR"));
  }
  if (s.type == LrSchedule::Type::kWarmupDecayLR && s.total_num_steps == 0) {
    return absl::InvalidArgumentError("scheduler.params.total_num_steps is required for WarmupDecayLR");
  }
  return s;
}

}  // namespace tpcoord
