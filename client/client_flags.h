// The command-line flags every tool that talks to the coordinator shares (tp-worker, tpctl, benchmarks):
// --tls-ca, --tls-cert, --tls-key and --token-file, each falling back to its TPCOORD_* variable (see
// LoadClientCredentials).
#ifndef TPCOORD_CLIENT_CLIENT_FLAGS_H_
#define TPCOORD_CLIENT_CLIENT_FLAGS_H_

#include "absl/status/statusor.h"
#include "client/credentials.h"

namespace tpcoord {

absl::StatusOr<ClientCredentials> ClientCredentialsFromFlags();

}  // namespace tpcoord

#endif  // TPCOORD_CLIENT_CLIENT_FLAGS_H_
