// Validation of the names requests carry. Each check returns INVALID_ARGUMENT naming the field and the
// offending value (escaped), so a caller can tell exactly what to fix.
#ifndef TPCOORD_COMMON_IDENTIFIERS_H_
#define TPCOORD_COMMON_IDENTIFIERS_H_

#include "absl/strings/string_view.h"

#include "absl/status/status.h"
#include "common/limits.h"

namespace tpcoord {

// job_id: 1-128 characters from [A-Za-z0-9._-].
absl::Status ValidateJobId(absl::string_view job_id);

// worker_id: 1-128 printable ASCII characters, no spaces.
absl::Status ValidateWorkerId(absl::string_view worker_id);

// host: 1-253 characters from [A-Za-z0-9._:-] (a hostname, IPv4 or IPv6 address).
absl::Status ValidateHost(absl::string_view host);

// Barrier names: 1-128 characters from [A-Za-z0-9._:/-].
absl::Status ValidateBarrierName(absl::string_view name);

// Store keys (c10d keys are arbitrary strings): 1-1024 bytes, no NUL.
absl::Status ValidateStoreKey(absl::string_view key);

// Free text a person reads (a reason): at most max_bytes bytes of valid UTF-8 without control characters
// (U+0000-U+001F, U+007F-U+009F); empty is fine. `field` names it in the error.
absl::Status ValidatePrintableText(absl::string_view field, absl::string_view text, size_t max_bytes);

// A value quoted for an error message: printable ASCII kept, everything else C-escaped, long values cut.
std::string QuoteForError(absl::string_view value);

}  // namespace tpcoord

#endif  // TPCOORD_COMMON_IDENTIFIERS_H_
