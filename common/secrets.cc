#include "common/secrets.h"

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/rand.h>

#include <fstream>
#include <sstream>

#include "absl/status/status.h"
#include "absl/strings/ascii.h"
#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "common/limits.h"

namespace tpcoord {

std::string Sha256(absl::string_view data) {
  unsigned char digest[EVP_MAX_MD_SIZE];
  unsigned int size = 0;
  // Cannot fail for SHA-256 on a working libcrypto; a broken one must not let every token through.
  if (EVP_Digest(data.data(), data.size(), digest, &size, EVP_sha256(), nullptr) != 1 || size != 32) std::abort();
  return std::string(reinterpret_cast<const char*>(digest), size);
}

bool ConstantTimeEquals(absl::string_view a, absl::string_view b) {
  return a.size() == b.size() && CRYPTO_memcmp(a.data(), b.data(), a.size()) == 0;
}

std::string RandomSecret() {
  unsigned char bytes[32];
  if (RAND_bytes(bytes, sizeof(bytes)) != 1) std::abort();  // no entropy: no secret worth having
  return absl::BytesToHexString(absl::string_view(reinterpret_cast<const char*>(bytes), sizeof(bytes)));
}

absl::Status CheckSecret(absl::string_view what, absl::string_view secret) {
  if (secret.size() < kMinSecretBytes || secret.size() > kMaxSecretBytes) {
    return absl::InvalidArgumentError(absl::StrCat(what, " has ", secret.size(), " characters; it must have ",
                                                   kMinSecretBytes, " to ", kMaxSecretBytes));
  }
  for (size_t i = 0; i < secret.size(); ++i) {
    const unsigned char c = static_cast<unsigned char>(secret[i]);
    if (c < 0x21 || c > 0x7e) {
      return absl::InvalidArgumentError(absl::StrCat(what, " holds a character that is not visible ASCII (byte ",
                                                     static_cast<int>(c), " at offset ", i, ")"));
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<std::string> ReadCredentialFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::NotFoundError(absl::StrCat("cannot read ", path));
  std::stringstream contents;
  contents << in.rdbuf();
  if (contents.str().empty()) return absl::InvalidArgumentError(absl::StrCat(path, " is empty"));
  return contents.str();
}

absl::StatusOr<std::string> ReadSecretFile(const std::string& path) {
  absl::StatusOr<std::string> contents = ReadCredentialFile(path);
  if (!contents.ok()) return contents.status();
  std::string secret = *std::move(contents);
  while (!secret.empty() && absl::ascii_isspace(static_cast<unsigned char>(secret.back()))) secret.pop_back();
  if (absl::Status s = CheckSecret(absl::StrCat("the secret in ", path), secret); !s.ok()) return s;
  return secret;
}

}  // namespace tpcoord
