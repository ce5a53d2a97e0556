// Reading DeepSpeed configs sent over the wire.
#ifndef TPCOORD_COMMON_DS_CONFIG_H_
#define TPCOORD_COMMON_DS_CONFIG_H_

#include <optional>
#include <string>
#include "absl/strings/string_view.h"

#include "absl/status/statusor.h"
#include "common/limits.h"
#include "nlohmann/json.hpp"

namespace tpcoord {

// Parses a DeepSpeed config: at most kMaxConfigBytes of JSON text nested at most kMaxJsonDepth levels,
// whose top level is an object, without duplicate keys at any level (DeepSpeed's loader rejects those too).
// INVALID_ARGUMENT naming `field` otherwise.
absl::StatusOr<nlohmann::json> ParseDsConfig(absl::string_view text, absl::string_view field = "config_json");

// Where two configs first differ, for the cross-worker agreement check (spec gap G27).
struct JsonDifference {
  std::string path;   // a JSON pointer such as "/tensor_parallel/autotp_size" ("" for the whole document)
  std::string left;   // the value at `path` in the first config, as JSON, or "<absent>"
  std::string right;  // likewise for the second
};

// The first difference in document order (object keys sorted), or nullopt when equal. Numbers compare by
// value, so 2 and 2.0 are equal.
std::optional<JsonDifference> FirstDifference(const nlohmann::json& left, const nlohmann::json& right);

}  // namespace tpcoord

#endif  // TPCOORD_COMMON_DS_CONFIG_H_
