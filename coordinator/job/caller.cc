#include "coordinator/job/caller.h"

#include "absl/status/status.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "common/secrets.h"

namespace tpcoord {
namespace {

// The one value of `name`, or "" when the call carries none.
absl::StatusOr<absl::string_view> OneValue(absl::string_view name, const std::vector<absl::string_view>& values) {
  if (values.empty()) return absl::string_view();
  if (values.size() > 1) {
    return absl::UnauthenticatedError(
        absl::StrCat("the call carries ", values.size(), " '", name, "' metadata entries; give exactly one"));
  }
  return values[0];
}

absl::Status Malformed(absl::string_view name, const absl::Status& why) {
  return absl::UnauthenticatedError(absl::StrCat("the call's '", name, "' metadata is malformed: ", why.message()));
}

}  // namespace

absl::Status MissingTokenError() {
  return absl::UnauthenticatedError(
      "the call carries no token; give the job's token with --token-file, TPCOORD_TOKEN_FILE or TPCOORD_TOKEN "
      "(metadata authorization: Bearer <token>)");
}

absl::StatusOr<Caller> IdentifyCaller(const std::vector<absl::string_view>& authorization,
                                      const std::vector<absl::string_view>& member_keys,
                                      absl::string_view admin_token_sha256) {
  Caller caller;
  absl::StatusOr<absl::string_view> bearer = OneValue(kAuthorizationMetadata, authorization);
  if (!bearer.ok()) return bearer.status();
  if (!bearer->empty()) {
    constexpr absl::string_view kScheme = "Bearer ";
    if (!absl::StartsWith(*bearer, kScheme)) {
      return absl::UnauthenticatedError(
          absl::StrCat("the call's '", kAuthorizationMetadata, "' metadata is not of the form 'Bearer <token>'"));
    }
    const absl::string_view token = bearer->substr(kScheme.size());
    if (absl::Status s = CheckSecret("the token", token); !s.ok()) return Malformed(kAuthorizationMetadata, s);
    caller.token_sha256 = Sha256(token);
    caller.admin = !admin_token_sha256.empty() && ConstantTimeEquals(caller.token_sha256, admin_token_sha256);
  }
  absl::StatusOr<absl::string_view> key = OneValue(kMemberKeyMetadata, member_keys);
  if (!key.ok()) return key.status();
  if (!key->empty()) {
    if (absl::Status s = CheckSecret("the member key", *key); !s.ok()) return Malformed(kMemberKeyMetadata, s);
    caller.member_key_sha256 = Sha256(*key);
  }
  return caller;
}

}  // namespace tpcoord
