#include "client/credentials.h"

#include <cstdlib>
#include <utility>

#include "common/secrets.h"

namespace tpcoord {

absl::StatusOr<ClientCredentials> LoadClientCredentials(const CredentialFiles& files) {
  auto path = [](const std::string& flag, const char* env) -> std::string {
    if (!flag.empty()) return flag;
    const char* value = std::getenv(env);
    return value ? value : "";
  };
  ClientCredentials out;
  const std::pair<std::string*, std::string> pems[] = {{&out.tls_ca, path(files.tls_ca, "TPCOORD_TLS_CA")},
                                                       {&out.tls_cert, path(files.tls_cert, "TPCOORD_TLS_CERT")},
                                                       {&out.tls_key, path(files.tls_key, "TPCOORD_TLS_KEY")}};
  for (const auto& [pem, file] : pems) {
    if (file.empty()) continue;
    absl::StatusOr<std::string> contents = ReadCredentialFile(file);
    if (!contents.ok()) return contents.status();
    *pem = *std::move(contents);
  }
  if (out.tls_cert.empty() != out.tls_key.empty()) {
    return absl::InvalidArgumentError("a client certificate needs its key: give both --tls-cert and --tls-key");
  }
  if (const std::string token_file = path(files.token, "TPCOORD_TOKEN_FILE"); !token_file.empty()) {
    absl::StatusOr<std::string> token = ReadSecretFile(token_file);
    if (!token.ok()) return token.status();
    out.token = *std::move(token);
  } else if (const char* token = std::getenv("TPCOORD_TOKEN"); token && *token) {
    if (absl::Status s = CheckSecret("TPCOORD_TOKEN", token); !s.ok()) return s;
    out.token = token;
  }
  return out;
}

}  // namespace tpcoord
