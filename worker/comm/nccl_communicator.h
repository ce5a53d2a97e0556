// A Communicator over NCCL, built from the unique IDs the coordinator brokered (every member of the group
// got the same array, from its roots' ncclGetUniqueId): ncclCommInitRank for one ID, ncclCommInitRankScalable
// for several (one per 256 ranks), collectives on a CUDA stream.
//
// Tensors on a CUDA device are reduced where they are; CPU tensors (a CPU-only LibTorch build, like
// Debian's, driving NCCL) are staged through a device buffer of this communicator. Every collective waits
// for its stream, so the tensor holds the result when the call returns, like the Gloo communicator.
//
// Compiled in when the build finds the CUDA toolkit and NCCL; otherwise MakeNcclCommunicator answers
// UNIMPLEMENTED naming --backend gloo. Collective failures throw std::runtime_error naming the group and the
// operation, as communicator.h describes.
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
