#include "common/config_merge.h"

#include <algorithm>
#include <string>

#include "absl/status/status.h"
#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "common/deepspeed_error.h"
#include "common/identifiers.h"
#include "common/python_json.h"

// The tp_model_init docstring's outcome table (spec §1.8) and what tpcoord does. TPI: tp_model_init was
// recorded; TPG: with a tp_group; CFG: the config has a tensor_parallel section; MPU: an mpu was passed.
//
//  #  TPI TPG CFG MPU  DeepSpeed code                         tpcoord
//  1   N   N   N   N   no error, no TP                        same (plain training is legitimate)
//  2   N   N   N   Y   no TP; mpu for other parallelism       same
//  3   N   N   Y   N   AutoTP from config                     same: config returned unchanged
//  4   N   N   Y   Y   AutoTP from config, mpu TP ignored     same: nothing recorded, nothing to merge
//  5   Y   N   N   N   fills config, auto-creates groups      same: the coordinator's mesh is the group
//                      (docstring: error)                     source, so there is nothing to reject
//  6   Y   N   N   Y   fills config, mpu's TP group silently  STRICTER: error. The recorded args define TP
//                      replaced by auto-created groups (G4)   and the coordinator builds the groups, so an
//  8   Y   N   Y   Y   same                                   mpu's TP group would be ignored without a word
//  7   Y   N   Y   N   fill + validate, groups auto-created   same
//  9   Y   Y   N   N   fills tp_group; engine then shards     same merge; STRICTER at Join: a recorded
// 11   Y   Y   Y   N   with its own mesh groups (G4)          group must be a TP group of the mesh, so the
//                                                             recorded group is honoured, never replaced
// 10   Y   Y   N   Y   error: tp_group + mpu                  same text
// 12   Y   Y   Y   Y   error: tp_group + mpu                  same text
//
// Config only (rows 3-4 with tensor_parallel.autotp_size, DeepSpeed's AutoTP "entirely through the config",
// without tp_model_init): DeepSpeed takes the TP size from the config. tpcoord too: the workers' Join
// carries it (tp-worker joins with the config's autotp_size), and a member's merge whose autotp_size is not
// the generation's tp_size is FAILED_PRECONDITION (CheckConfigOnlyTpSize), never a silent TP=1 run.

namespace tpcoord {
namespace {

using nlohmann::json;

absl::Status Invalid(absl::string_view field, const json& value, absl::string_view expected) {
  return absl::InvalidArgumentError(
      absl::StrCat(field, " must be ", expected, ", got ", QuoteForError(value.dump())));
}

// True when `section` names an enabled precision section of `config`.
bool SectionEnabled(const json& config, const char* section) {
  auto it = config.find(section);
  if (it == config.end() || !it->is_object()) return false;
  auto enabled = it->find("enabled");
  return enabled != it->end() && PyTruthy(*enabled);
}

}  // namespace

std::optional<Dtype> InferConfigDtype(const json& config) {
  if (SectionEnabled(config, "bf16")) return Dtype::kBFloat16;
  if (SectionEnabled(config, "fp16")) return Dtype::kFloat16;
  if (SectionEnabled(config, "bfloat16")) return Dtype::kBFloat16;
  return std::nullopt;
}

absl::StatusOr<json> MergeTpInitIntoConfig(const std::optional<TpInitArgs>& recorded, const json& config,
                                           bool has_mpu) {
  if (!config.is_object()) return Invalid("config", config, "a JSON object");

  // 1. Nothing recorded: the config is used as it is (table rows 1-4).
  if (!recorded.has_value()) return config;
  const TpInitArgs& args = *recorded;

  // 2. A recorded tp_group excludes an mpu (rows 10, 12).
  if (args.tp_group.has_value() && has_mpu) {
    return DeepSpeedError("tp_model_init provided tp_group; deepspeed.initialize must not receive mpu.");
  }
  // Rows 6 and 8, stricter than DeepSpeed (see the table above).
  if (has_mpu) {
    return absl::FailedPreconditionError(
        "tp_model_init was recorded without tp_group and deepspeed.initialize received an mpu: tpcoord builds "
        "the TP groups from the recorded tp_size, so the mpu's TP group would be silently ignored (DeepSpeed "
        "gap G4). Drop the mpu, or record the tp_group.");
  }
  // 3. Group creation happens at Join, from the coordinator's mesh.

  json merged = config;

  // 4. The tensor_parallel section; missing or null becomes {}.
  json& tp_section = merged["tensor_parallel"];
  if (tp_section.is_null()) tp_section = json::object();
  if (!tp_section.is_object()) return Invalid("tensor_parallel", tp_section, "an object or null");

  // 5. autotp_size.
  if (auto it = tp_section.find("autotp_size"); it != tp_section.end() && !it->is_null()) {
    if (!PyEqualsInt(*it, args.tp_size)) {
      return DeepSpeedError(absl::StrCat("Conflicting tensor_parallel.autotp_size in config (", PyStr(*it),
                                         ") and tp_model_init (", args.tp_size, ")."));
    }
  } else {
    tp_section["autotp_size"] = args.tp_size;
  }

  // 6. The tp sub-dict: missing or falsy becomes {} (so a falsy non-dict such as [] slips through, as in
  // DeepSpeed); any other non-dict is an error.
  json tp = json::object();
  if (auto it = tp_section.find("tp"); it != tp_section.end() && PyTruthy(*it)) {
    if (!it->is_object()) return DeepSpeedError("tensor_parallel.tp must be a dict when provided.");
    tp = *it;
  }

  // 7. tp.tp_size.
  if (auto it = tp.find("tp_size"); it != tp.end() && !it->is_null()) {
    if (!PyEqualsInt(*it, args.tp_size)) {
      return DeepSpeedError(absl::StrCat("Conflicting tensor_parallel.tp.tp_size in config (", PyStr(*it),
                                         ") and tp_model_init (", args.tp_size, ")."));
    }
  } else {
    tp["tp_size"] = args.tp_size;
  }

  // 8. The recorded tp_group, compared as a sorted rank list (G2).
  if (args.tp_group.has_value()) {
    const RankList& group = *args.tp_group;
    if (auto it = tp.find("tp_group"); it != tp.end() && !it->is_null()) {
      RankList given;
      bool same = it->is_array();
      for (const json& r : *it) {
        if (!r.is_number_integer()) {
          same = false;
          break;
        }
        given.push_back(r.get<int>());
      }
      std::sort(given.begin(), given.end());
      if (!same || given != group) {
        return DeepSpeedError("Conflicting tensor_parallel.tp.tp_group in config and tp_model_init.");
      }
    }
    tp["tp_group"] = group;
    if (static_cast<int>(group.size()) != args.tp_size) {
      return DeepSpeedError(absl::StrCat("tp_model_init tp_size (", args.tp_size,
                                         ") does not match tp_group size (", group.size(), ")."));
    }
  }

  // 9. Write the tp dict back, always under "tp".
  tp_section["tp"] = std::move(tp);

  // 10. The precision sections against the recorded dtype.
  if (std::optional<Dtype> config_dtype = InferConfigDtype(merged);
      config_dtype.has_value() && *config_dtype != args.dtype) {
    return DeepSpeedError(absl::StrCat("Conflicting dtype: config uses ", TorchDtypeName(*config_dtype),
                                       " but tp_model_init requested ", TorchDtypeName(args.dtype), "."));
  }

  // 11. tensor_parallel.dtype, when present and not null.
  if (auto it = tp_section.find("dtype"); it != tp_section.end() && !it->is_null()) {
    bool conflict = true;  // a non-string can never equal a torch dtype
    if (it->is_string()) {
      absl::StatusOr<Dtype> dtype = ParseDtype(it->get<std::string>());
      if (!dtype.ok()) {
        return absl::InvalidArgumentError(absl::StrCat("tensor_parallel.dtype: ", dtype.status().message()));
      }
      conflict = *dtype != args.dtype;
    }
    if (conflict) {
      return DeepSpeedError(absl::StrCat("Conflicting tensor_parallel.dtype in config (", PyStr(*it),
                                         ") and tp_model_init (", TorchDtypeName(args.dtype), ")."));
    }
  }
  return merged;
}

absl::Status CheckConfigOnlyTpSize(const json& config, int tp_size, uint64_t generation) {
  if (!config.is_object()) return absl::OkStatus();
  auto section = config.find("tensor_parallel");
  if (section == config.end() || !section->is_object()) return absl::OkStatus();
  auto autotp = section->find("autotp_size");
  if (autotp == section->end() || autotp->is_null() || PyEqualsInt(*autotp, tp_size)) return absl::OkStatus();
  const bool usable = autotp->is_number_integer() && autotp->get<long long>() >= 1;
  return absl::FailedPreconditionError(absl::StrCat(
      "the config's tensor_parallel.autotp_size is ", PyStr(*autotp), ", but generation ", generation,
      " joined with tp_size ", tp_size,
      " (nothing was recorded by tp_model_init, so each worker's Join sets the TP size): ",
      usable ? absl::StrCat("join with tp_size ", PyStr(*autotp))
             : absl::StrCat("make it the TP size the workers join with (", tp_size, ")")));
}

}  // namespace tpcoord
