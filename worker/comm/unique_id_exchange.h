// NCCL unique IDs brokered by the coordinator: for each communicator the leader (lowest rank) makes the
// 128-byte ID and publishes it once; every other member gets the same bytes. No LibTorch in here.
#ifndef TPCOORD_WORKER_COMM_UNIQUE_ID_EXCHANGE_H_
#define TPCOORD_WORKER_COMM_UNIQUE_ID_EXCHANGE_H_

#include <functional>
#include <map>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "worker/client/coordinator_client.h"

namespace tpcoord {

// Makes one unique ID.
using UniqueIdSource = std::function<absl::StatusOr<std::string>()>;

// True when NCCL was found at build time.
bool HaveNccl();

// ncclGetUniqueId (works without a GPU: it only opens the bootstrap socket of this process, which must be
// the one that later calls ncclCommInitRank as the group's rank 0). UNIMPLEMENTED without NCCL.
absl::StatusOr<std::string> NcclUniqueId();

// The IDs of `groups` (the caller must belong to each): the ones the caller leads are made by `source` and
// published in one call, the others fetched in one call that waits up to `wait` for their leaders.
absl::StatusOr<std::map<GroupId, std::string>> ExchangeUniqueIds(CoordinatorClient& client, const Membership& m,
                                                                 const std::vector<GroupId>& groups,
                                                                 const UniqueIdSource& source, Millis wait);

}  // namespace tpcoord

#endif  // TPCOORD_WORKER_COMM_UNIQUE_ID_EXCHANGE_H_
