// One line of a process's log, as text for people or as one JSON object for log shippers (--log-format).
//
//   text: 2026-12-02T03:20:32.123Z tp-coordinator job llama generation 2: running: 4 workers = tp 2 x dp 2
//   json: {"time":"2026-12-02T03:20:32.123Z","level":"info","program":"tp-coordinator","job":"llama",
//          "generation":2,"event":"running","message":"running: 4 workers = tp 2 x dp 2"}
//
// JSON lines leave out the fields a line does not have (no job, no generation yet, no rank); bytes that
// are not UTF-8 are replaced, so every line parses.
#ifndef TPCOORD_COMMON_LOG_LINE_H_
#define TPCOORD_COMMON_LOG_LINE_H_

#include <cstdint>
#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"

namespace tpcoord {

enum class LogFormat { kText, kJson };

// "text" or "json"; INVALID_ARGUMENT otherwise.
absl::StatusOr<LogFormat> ParseLogFormat(absl::string_view name);

struct LogLine {
  std::string message;
  std::string level = "info";  // info, warning, error
  std::string event;           // a short name for machines ("running", "ended", "step"); may be empty
  std::string job;             // empty: not about one job
  uint64_t generation = 0;     // 0: none
  int rank = -1;               // -1: none
};

// The line, without a newline. In text, a line about a job reads "job J generation G: message".
std::string FormatLogLine(LogFormat format, absl::string_view program, const LogLine& line, absl::Time now);

}  // namespace tpcoord

#endif  // TPCOORD_COMMON_LOG_LINE_H_
