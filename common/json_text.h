// Reading JSON text that arrives from outside the process (requests, checkpoints): nothing in it may crash
// the reader. The nesting depth is bounded while parsing, before anything recursive (copy, dump, compare)
// ever sees the document; numbers that do not fit a double, integers that do not fit in 64 bits (which
// would be rounded), invalid UTF-8 and duplicate keys are errors; no exception leaves this file.
#ifndef TPCOORD_COMMON_JSON_TEXT_H_
#define TPCOORD_COMMON_JSON_TEXT_H_

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "nlohmann/json.hpp"

namespace tpcoord {

// Parses `text` as one JSON document whose arrays and objects nest at most `max_depth` levels (the top-level
// value is level 1), without a key repeated within one object. INVALID_ARGUMENT naming `field` otherwise
// ("<field> nests deeper than 64 levels", "<field> is not valid JSON: ...", "<field> has the key "x" twice
// in one object", "<field> has the integer 1234... at /train_batch_size, which does not fit in 64 bits; ...").
absl::StatusOr<nlohmann::json> ParseJsonText(absl::string_view text, absl::string_view field, int max_depth);

}  // namespace tpcoord

#endif  // TPCOORD_COMMON_JSON_TEXT_H_
