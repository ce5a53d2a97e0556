// NCCL unique IDs brokered by the coordinator: each communicator starts from Mesh::UniqueIdRoots IDs (one
// per 256 ranks); each root rank (Mesh::RootRank, root 0 the leader) makes its 128-byte ID and publishes it
// once, and every member gets the same array in the same order. No LibTorch in here.
#ifndef TPCOORD_WORKER_COMM_UNIQUE_ID_EXCHANGE_H_
#define TPCOORD_WORKER_COMM_UNIQUE_ID_EXCHANGE_H_

#include <functional>
#include <map>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "client/coordinator_client.h"
#include "client/member_session.h"

namespace tpcoord {

// Makes one unique ID.
using UniqueIdSource = std::function<absl::StatusOr<std::string>()>;

// True when NCCL was found at build time.
bool HaveNccl();

// ncclGetUniqueId (works without a GPU: it only opens a bootstrap root socket in this process, which must
// stay up until the communicator is built). UNIMPLEMENTED without NCCL.
absl::StatusOr<std::string> NcclUniqueId();

// The ID arrays of `groups` (the caller must belong to each), roots in root order: the roots the caller is
// are made by `source` and published; the arrays not wholly the caller's are fetched, waiting up to `wait`
// for their other roots. Through the member's session in one call (tp-worker), or through two unary calls
// of `client`.
absl::StatusOr<std::map<GroupId, std::vector<std::string>>> ExchangeUniqueIds(MemberSession& session,
                                                                              const Membership& m,
                                                                              const std::vector<GroupId>& groups,
                                                                              const UniqueIdSource& source,
                                                                              Millis wait);
absl::StatusOr<std::map<GroupId, std::vector<std::string>>> ExchangeUniqueIds(CoordinatorClient& client,
                                                                              const Membership& m,
                                                                              const std::vector<GroupId>& groups,
                                                                              const UniqueIdSource& source,
                                                                              Millis wait);

}  // namespace tpcoord

#endif  // TPCOORD_WORKER_COMM_UNIQUE_ID_EXCHANGE_H_
