// Who makes a call, as far as its credentials prove it: the hashes of the bearer token and the member key
// it carries (see "Credentials" in coordinator.proto). The service builds a Caller from the call's metadata
// before anything else looks at the call; jobs decide what it may do (Job::CheckCaller and friends). No
// secret is kept: only SHA-256 hashes, compared in constant time.
#ifndef TPCOORD_COORDINATOR_JOB_CALLER_H_
#define TPCOORD_COORDINATOR_JOB_CALLER_H_

#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "common/secrets.h"

namespace tpcoord {

struct Caller {
  std::string token_sha256;       // of the bearer token; empty: the call carries none
  std::string member_key_sha256;  // of the member key; empty: the call carries none
  bool admin = false;             // the token is the coordinator's admin token
};

// The caller of a call whose metadata holds `authorization` and `member_keys` (every value of each).
// `admin_token_sha256` is the hash of the admin token, empty when there is none. UNAUTHENTICATED when a value
// is malformed (not "Bearer <token>", a secret of the wrong size or charset) or given twice; the message
// names the metadata, never its value.
absl::StatusOr<Caller> IdentifyCaller(const std::vector<absl::string_view>& authorization,
                                      const std::vector<absl::string_view>& member_keys,
                                      absl::string_view admin_token_sha256);

// UNAUTHENTICATED for a call without a token, saying how to give one. Every Coordinator call needs one.
absl::Status MissingTokenError();

}  // namespace tpcoord

#endif  // TPCOORD_COORDINATOR_JOB_CALLER_H_
