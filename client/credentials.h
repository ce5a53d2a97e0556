// How a client of the coordinator proves who it is, and checks that it talks to the real coordinator
// (README "Security"). No gRPC in here: the client library turns these into channel credentials.
#ifndef TPCOORD_CLIENT_CREDENTIALS_H_
#define TPCOORD_CLIENT_CREDENTIALS_H_

#include <string>

#include "absl/status/statusor.h"

namespace tpcoord {

struct ClientCredentials {
  std::string token;     // the job's bearer token (tpctl: the job's or the admin's); "" none
  std::string tls_ca;    // PEM of the CA that signed the coordinator's certificate
  std::string tls_cert;  // PEM of this client's certificate, for mutual TLS (with tls_key)
  std::string tls_key;
  // TLS when any of the three is given (with no CA, the system's roots verify the coordinator).
  bool tls() const { return !tls_ca.empty() || !tls_cert.empty() || !tls_key.empty(); }
};

// Where credentials come from: files named by flags (each may be empty), else the environment:
// TPCOORD_TLS_CA, TPCOORD_TLS_CERT, TPCOORD_TLS_KEY (file paths), TPCOORD_TOKEN_FILE, or TPCOORD_TOKEN (the
// token itself). NOT_FOUND / INVALID_ARGUMENT naming the file or variable that is wrong.
struct CredentialFiles {
  std::string tls_ca, tls_cert, tls_key, token;
};
absl::StatusOr<ClientCredentials> LoadClientCredentials(const CredentialFiles& files);

}  // namespace tpcoord

#endif  // TPCOORD_CLIENT_CREDENTIALS_H_
