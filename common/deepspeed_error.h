// Errors that DeepSpeed raises as ValueError with a fixed text. tpcoord answers them with
// FAILED_PRECONDITION whose message is exactly DeepSpeed's text (spec §1.2-1.4, G28), so code and people
// that know DeepSpeed recognise them; context such as the job id travels beside the message, never in it.
#ifndef TPCOORD_COMMON_DEEPSPEED_ERROR_H_
#define TPCOORD_COMMON_DEEPSPEED_ERROR_H_

#include <optional>
#include <string>
#include "absl/strings/string_view.h"

#include "absl/status/status.h"

namespace tpcoord {

// FAILED_PRECONDITION with message `text`, marked so WithJobContext leaves the message untouched.
absl::Status DeepSpeedError(absl::string_view text);

bool IsDeepSpeedError(const absl::Status& status);

// Adds the job to an error: "job <id>: " prefixed to the message of ordinary errors; "job <id>: <detail>"
// attached as the context payload of DeepSpeed errors, whose message stays exact. OK passes through, and so
// does a status that already carries a job's context: a message names its job once.
absl::Status WithJobContext(absl::string_view job_id, absl::Status status, absl::string_view detail = "");

// Attaches `context` as the context payload (how a client keeps the context the coordinator sent).
void SetErrorContext(absl::Status* status, absl::string_view context);

// The context attached by WithJobContext or SetErrorContext, if any.
std::optional<std::string> ErrorContext(const absl::Status& status);

}  // namespace tpcoord

#endif  // TPCOORD_COMMON_DEEPSPEED_ERROR_H_
