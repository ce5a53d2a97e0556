// Secrets: the bearer tokens that bind a job, the member keys that bind a seat, and the one-way hashes the
// coordinator keeps of them (it never stores or logs a secret itself). OpenSSL's libcrypto does the work.
#ifndef TPCOORD_COMMON_SECRETS_H_
#define TPCOORD_COMMON_SECRETS_H_

#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace tpcoord {

// The call metadata they travel under: "authorization: Bearer <token>" and "tpcoord-member-key: <key>".
inline constexpr absl::string_view kAuthorizationMetadata = "authorization";
inline constexpr absl::string_view kMemberKeyMetadata = "tpcoord-member-key";

// The SHA-256 of `data`: 32 raw bytes.
std::string Sha256(absl::string_view data);

// a == b, in time that depends only on the sizes (CRYPTO_memcmp): a comparison of a presented secret's hash
// tells nothing about how much of it matched.
bool ConstantTimeEquals(absl::string_view a, absl::string_view b);

// 32 bytes from OpenSSL's CSPRNG as 64 lowercase hex characters: a job token or a member key.
std::string RandomSecret();

// A token or member key is 16 to 1024 visible ASCII characters (no spaces): it travels as gRPC metadata,
// which allows nothing else, and 16 characters is the least that is not guessable. INVALID_ARGUMENT naming
// `what` (never the secret) otherwise.
absl::Status CheckSecret(absl::string_view what, absl::string_view secret);

// A secret from a file (a token file, a Kubernetes Secret): its contents without trailing whitespace, which
// must pass CheckSecret. NOT_FOUND / INVALID_ARGUMENT naming the path.
absl::StatusOr<std::string> ReadSecretFile(const std::string& path);

// A certificate or private key file (PEM), as it is. NOT_FOUND naming the path when it cannot be read,
// INVALID_ARGUMENT when it is empty.
absl::StatusOr<std::string> ReadCredentialFile(const std::string& path);

}  // namespace tpcoord

#endif  // TPCOORD_COMMON_SECRETS_H_
