#include "common/ds_config.h"

#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "common/identifiers.h"
#include "common/json_text.h"

namespace tpcoord {
namespace {

using nlohmann::json;

std::string EscapePointerToken(const std::string& key) {
  std::string out;
  for (char c : key) {
    if (c == '~') out += "~0";
    else if (c == '/') out += "~1";
    else out += c;
  }
  return out;
}

std::optional<JsonDifference> Diff(const json& left, const json& right, const std::string& path) {
  if (left.is_object() && right.is_object()) {
    auto l = left.begin();
    auto r = right.begin();
    while (l != left.end() || r != right.end()) {
      if (r == right.end() || (l != left.end() && l.key() < r.key())) {
        return JsonDifference{path + "/" + EscapePointerToken(l.key()), l.value().dump(), "<absent>"};
      }
      if (l == left.end() || r.key() < l.key()) {
        return JsonDifference{path + "/" + EscapePointerToken(r.key()), "<absent>", r.value().dump()};
      }
      if (auto d = Diff(l.value(), r.value(), path + "/" + EscapePointerToken(l.key()))) return d;
      ++l;
      ++r;
    }
    return std::nullopt;
  }
  if (left.is_array() && right.is_array()) {
    const size_t n = std::max(left.size(), right.size());
    for (size_t i = 0; i < n; ++i) {
      const std::string item = absl::StrCat(path, "/", i);
      if (i >= left.size()) return JsonDifference{item, "<absent>", right[i].dump()};
      if (i >= right.size()) return JsonDifference{item, left[i].dump(), "<absent>"};
      if (auto d = Diff(left[i], right[i], item)) return d;
    }
    return std::nullopt;
  }
  if (left == right) return std::nullopt;  // nlohmann compares numbers of different kinds by value
  return JsonDifference{path, left.dump(), right.dump()};
}

}  // namespace

absl::StatusOr<json> ParseDsConfig(absl::string_view text, absl::string_view field) {
  if (text.size() > kMaxConfigBytes) {
    return absl::InvalidArgumentError(absl::StrCat(field, " is ", text.size(), " bytes; the limit is ",
                                                   kMaxConfigBytes, " bytes (1 MiB)"));
  }
  absl::StatusOr<json> config = ParseJsonText(text, field, kMaxJsonDepth);
  if (!config.ok()) return config.status();
  if (!config->is_object()) {
    return absl::InvalidArgumentError(absl::StrCat(field, " must be a JSON object, got ",
                                                   QuoteForError(config->dump())));
  }
  return config;
}

std::optional<JsonDifference> FirstDifference(const json& left, const json& right) {
  return Diff(left, right, "");
}

}  // namespace tpcoord
