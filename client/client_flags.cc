#include "client/client_flags.h"

#include "absl/flags/flag.h"

ABSL_FLAG(std::string, tls_ca, "",
          "verify the coordinator's TLS certificate against this CA (PEM; env TPCOORD_TLS_CA)");
ABSL_FLAG(std::string, tls_cert, "", "this client's certificate for mutual TLS (PEM; env TPCOORD_TLS_CERT)");
ABSL_FLAG(std::string, tls_key, "", "the private key of --tls-cert (PEM; env TPCOORD_TLS_KEY)");
ABSL_FLAG(std::string, token_file, "",
          "file holding the job's token (env TPCOORD_TOKEN_FILE, or the token itself in TPCOORD_TOKEN)");

namespace tpcoord {

absl::StatusOr<ClientCredentials> ClientCredentialsFromFlags() {
  return LoadClientCredentials({absl::GetFlag(FLAGS_tls_ca), absl::GetFlag(FLAGS_tls_cert),
                                absl::GetFlag(FLAGS_tls_key), absl::GetFlag(FLAGS_token_file)});
}

}  // namespace tpcoord
