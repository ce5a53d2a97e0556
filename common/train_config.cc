#include "common/train_config.h"

#include <set>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/config_merge.h"

namespace tpcoord {
namespace {

using nlohmann::json;

absl::Status Invalid(const std::string& key, const json& value, absl::string_view expected) {
  return absl::InvalidArgumentError(absl::StrCat(key, " must be ", expected, ", got ", value.dump()));
}

// Reads an optional integer key; absent or null keeps `*out`.
absl::Status ReadInt(const json& object, const std::string& prefix, const char* key, int64_t min, int64_t* out) {
  auto it = object.find(key);
  if (it == object.end() || it->is_null()) return absl::OkStatus();
  if (!it->is_number_integer() || it->get<int64_t>() < min) {
    return Invalid(prefix + key, *it, absl::StrCat("an integer >= ", min));
  }
  *out = it->get<int64_t>();
  return absl::OkStatus();
}

absl::Status ReadDouble(const json& object, const std::string& prefix, const char* key, double* out) {
  auto it = object.find(key);
  if (it == object.end() || it->is_null()) return absl::OkStatus();
  if (!it->is_number()) return Invalid(prefix + key, *it, "a number");
  *out = it->get<double>();
  return absl::OkStatus();
}

absl::Status CheckKeys(const json& object, const std::string& prefix, const std::set<std::string>& allowed) {
  for (const auto& [key, value] : object.items()) {
    if (!allowed.count(key)) {
      return absl::InvalidArgumentError(absl::StrCat(prefix, key, " is not a known key; known keys are ",
                                                     absl::StrJoin(allowed, ", ")));
    }
  }
  return absl::OkStatus();
}

// DeepSpeed's _set_batch_related_parameters and _batch_assertion, with D in place of the world size.
absl::Status ResolveBatch(const json& config, int dp_size, TrainConfig* out) {
  int64_t train = 0, micro = 0, accum = 0;
  if (absl::Status s = ReadInt(config, "", "train_batch_size", 1, &train); !s.ok()) return s;
  if (absl::Status s = ReadInt(config, "", "train_micro_batch_size_per_gpu", 1, &micro); !s.ok()) return s;
  if (absl::Status s = ReadInt(config, "", "gradient_accumulation_steps", 1, &accum); !s.ok()) return s;
  if (train && micro && accum) {
  } else if (train && micro) {
    accum = train / micro / dp_size;
  } else if (train && accum) {
    micro = train / dp_size / accum;
  } else if (micro && accum) {
    train = micro * accum * dp_size;
  } else if (train) {
    accum = 1;
    micro = train / dp_size;
  } else if (micro) {
    train = micro * dp_size;
    accum = 1;
  } else {
    return absl::InvalidArgumentError("Either train_batch_size or train_micro_batch_size_per_gpu needs to be provided");
  }
  if (micro <= 0) {
    return absl::InvalidArgumentError(absl::StrCat("Micro batch size per gpu: ", micro, " has to be greater than 0"));
  }
  if (accum <= 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("Gradient accumulation steps: ", accum, " has to be greater than 0"));
  }
  if (train != micro * accum * dp_size) {
    return absl::InvalidArgumentError(absl::StrCat(
        "Check batch related parameters. train_batch_size is not equal to micro_batch_per_gpu * gradient_acc_step * "
        "world_size ", train, " != ", micro, " * ", accum, " * ", dp_size,
        " (tpcoord counts the data-parallel size world_size / tp_size here, where DeepSpeed counts every rank: "
        "gap G11)"));
  }
  out->train_batch_size = static_cast<int>(train);
  out->micro_batch_size = static_cast<int>(micro);
  out->gradient_accumulation_steps = static_cast<int>(accum);
  return absl::OkStatus();
}

absl::Status ParseOptimizer(const json& section, OptimizerConfig* out) {
  if (section.is_null()) return absl::OkStatus();
  if (!section.is_object()) return Invalid("optimizer", section, "an object");
  const std::string type = section.value("type", "");
  std::set<std::string> allowed;
  if (type == "AdamW" || type == "Adam") {
    out->type = type == "AdamW" ? OptimizerConfig::Type::kAdamW : OptimizerConfig::Type::kAdam;
    allowed = {"lr", "betas", "eps", "weight_decay"};
  } else if (type == "SGD") {
    out->type = OptimizerConfig::Type::kSgd;
    allowed = {"lr", "momentum", "dampening", "weight_decay", "nesterov"};
  } else {
    return absl::InvalidArgumentError(
        absl::StrCat("optimizer.type \"", type, "\" is not supported; use AdamW, Adam or SGD"));
  }
  const json params = section.value("params", json::object());
  if (!params.is_object()) return Invalid("optimizer.params", params, "an object");
  if (absl::Status s = CheckKeys(params, "optimizer.params.", allowed); !s.ok()) return s;
  const std::string p = "optimizer.params.";
  for (auto [key, field] : {std::pair<const char*, double*>{"lr", &out->lr}, {"eps", &out->eps},
                            {"weight_decay", &out->weight_decay}, {"momentum", &out->momentum},
                            {"dampening", &out->dampening}}) {
    if (absl::Status s = ReadDouble(params, p, key, field); !s.ok()) return s;
  }
  if (auto it = params.find("betas"); it != params.end()) {
    if (!it->is_array() || it->size() != 2 || !(*it)[0].is_number() || !(*it)[1].is_number()) {
      return Invalid(p + "betas", *it, "a list of two numbers");
    }
    out->beta1 = (*it)[0].get<double>();
    out->beta2 = (*it)[1].get<double>();
  }
  if (auto it = params.find("nesterov"); it != params.end()) {
    if (!it->is_boolean()) return Invalid(p + "nesterov", *it, "true or false");
    out->nesterov = it->get<bool>();
  }
  if (out->lr < 0) return Invalid(p + "lr", params["lr"], "at least 0");
  return absl::OkStatus();
}

absl::Status ParseLossScale(const json& config, LossScaleConfig* out) {
  auto fp16 = config.find("fp16");
  if (fp16 == config.end() || !fp16->is_object()) return absl::OkStatus();
  int64_t power = out->initial_scale_power, window = out->loss_scale_window, hysteresis = out->hysteresis;
  if (absl::Status s = ReadDouble(*fp16, "fp16.", "loss_scale", &out->static_scale); !s.ok()) return s;
  if (absl::Status s = ReadInt(*fp16, "fp16.", "initial_scale_power", 0, &power); !s.ok()) return s;
  if (absl::Status s = ReadInt(*fp16, "fp16.", "loss_scale_window", 1, &window); !s.ok()) return s;
  if (absl::Status s = ReadInt(*fp16, "fp16.", "hysteresis", 1, &hysteresis); !s.ok()) return s;
  if (absl::Status s = ReadDouble(*fp16, "fp16.", "min_loss_scale", &out->min_loss_scale); !s.ok()) return s;
  out->initial_scale_power = static_cast<int>(power);
  out->loss_scale_window = static_cast<int>(window);
  out->hysteresis = static_cast<int>(hysteresis);
  return absl::OkStatus();
}

absl::Status ParseTpcoordSection(const json& config, TrainConfig* out) {
  auto it = config.find("tpcoord");
  if (it == config.end() || it->is_null()) return absl::OkStatus();
  if (!it->is_object()) return Invalid("tpcoord", *it, "an object");
  const json& section = *it;
  if (absl::Status s = CheckKeys(section, "tpcoord.",
                                 {"steps", "seed", "seq_len", "data", "checkpoint_interval", "eval_windows"});
      !s.ok()) {
    return s;
  }
  int64_t seed = static_cast<int64_t>(out->seed), seq_len = out->seq_len;
  if (absl::Status s = ReadInt(section, "tpcoord.", "steps", 0, &out->steps); !s.ok()) return s;
  if (absl::Status s = ReadInt(section, "tpcoord.", "seed", 0, &seed); !s.ok()) return s;
  if (absl::Status s = ReadInt(section, "tpcoord.", "seq_len", 1, &seq_len); !s.ok()) return s;
  if (absl::Status s = ReadInt(section, "tpcoord.", "checkpoint_interval", 0, &out->checkpoint_interval); !s.ok()) {
    return s;
  }
  if (absl::Status s = ReadInt(section, "tpcoord.", "eval_windows", 0, &out->eval_windows); !s.ok()) return s;
  if (auto data = section.find("data"); data != section.end()) {
    if (!data->is_string()) return Invalid("tpcoord.data", *data, "a path");
    out->data = data->get<std::string>();
  }
  out->seed = static_cast<uint64_t>(seed);
  out->seq_len = static_cast<int>(seq_len);
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<TrainConfig> ParseTrainConfig(const json& config, int dp_size) {
  if (!config.is_object()) return Invalid("config", config, "an object");
  TrainConfig out;
  if (absl::Status s = ResolveBatch(config, dp_size, &out); !s.ok()) return s;
  if (absl::Status s = ParseOptimizer(config.value("optimizer", json()), &out.optimizer); !s.ok()) return s;
  absl::StatusOr<LrSchedule> schedule = ParseLrSchedule(config.value("scheduler", json()), out.optimizer.lr);
  if (!schedule.ok()) return schedule.status();
  out.schedule = *schedule;
  if (absl::Status s = ReadDouble(config, "", "gradient_clipping", &out.gradient_clipping); !s.ok()) return s;
  if (out.gradient_clipping < 0) return Invalid("gradient_clipping", config["gradient_clipping"], "at least 0");
  out.precision = InferConfigDtype(config);
  if (absl::Status s = ParseLossScale(config, &out.loss_scale); !s.ok()) return s;
  int64_t steps_per_print = out.steps_per_print;
  if (absl::Status s = ReadInt(config, "", "steps_per_print", 1, &steps_per_print); !s.ok()) return s;
  out.steps_per_print = static_cast<int>(steps_per_print);
  if (absl::Status s = ParseTpcoordSection(config, &out); !s.ok()) return s;
  return out;
}

}  // namespace tpcoord
