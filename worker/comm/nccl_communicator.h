// A Communicator over NCCL, built from the unique IDs the coordinator brokered (every member of the group
// got the same array, from its roots' ncclGetUniqueId): ncclCommInitRank for one ID, ncclCommInitRankScalable
// for several (one per 256 ranks).
//
// Tensors stay where they are, on the group's GPU: no host staging. Each collective is queued on the stream
// torch computes on (c10's current stream), in order with the kernels around it, and returns without waiting
// for it; only Barrier waits on the host. A collective that cannot be queued, or an error an earlier one ran
// into, throws std::runtime_error naming the group and the operation; a tensor on another device throws
// std::invalid_argument.
//
// Compiled in when the build finds the CUDA toolkit and NCCL; usable with a CUDA LibTorch (CheckNcclUsable
// says why not otherwise, naming --backend gloo).
#ifndef TPCOORD_WORKER_COMM_NCCL_COMMUNICATOR_H_
#define TPCOORD_WORKER_COMM_NCCL_COMMUNICATOR_H_

#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "worker/comm/communicator.h"

namespace tpcoord {

// OK when NCCL is compiled in and a CUDA device is usable; otherwise FAILED_PRECONDITION (or UNIMPLEMENTED)
// explaining why and naming --backend gloo.
absl::Status CheckNcclUsable();

// Joins the NCCL communicator of `group_name` as `rank` of `size` on CUDA device `device`. `unique_ids` are
// the group's 128-byte IDs in root order. Blocks until every member has joined (NCCL's own bootstrap).
absl::StatusOr<std::unique_ptr<Communicator>> MakeNcclCommunicator(const std::string& group_name,
                                                                   const std::vector<std::string>& unique_ids,
                                                                   int rank, int size, int device);

}  // namespace tpcoord

#endif  // TPCOORD_WORKER_COMM_NCCL_COMMUNICATOR_H_
