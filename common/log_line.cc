#include "common/log_line.h"

#include "absl/strings/str_cat.h"
#include "nlohmann/json.hpp"

namespace tpcoord {

absl::StatusOr<LogFormat> ParseLogFormat(absl::string_view name) {
  if (name == "text") return LogFormat::kText;
  if (name == "json") return LogFormat::kJson;
  return absl::InvalidArgumentError(absl::StrCat("log format \"", name, "\" is neither text nor json"));
}

std::string FormatLogLine(LogFormat format, absl::string_view program, const LogLine& line, absl::Time now) {
  const std::string time = absl::FormatTime("%Y-%m-%dT%H:%M:%E3SZ", now, absl::UTCTimeZone());
  if (format == LogFormat::kText) {
    std::string text = absl::StrCat(time, " ", program, " ");
    if (!line.job.empty()) absl::StrAppend(&text, "job ", line.job, " generation ", line.generation, ": ");
    absl::StrAppend(&text, line.message);
    return text;
  }
  nlohmann::ordered_json json = {{"time", time}, {"level", line.level}, {"program", std::string(program)}};
  if (!line.job.empty()) json["job"] = line.job;
  if (line.generation > 0) json["generation"] = line.generation;
  if (line.rank >= 0) json["rank"] = line.rank;
  if (!line.event.empty()) json["event"] = line.event;
  json["message"] = line.message;
  return json.dump(-1, ' ', false, nlohmann::ordered_json::error_handler_t::replace);
}

}  // namespace tpcoord
