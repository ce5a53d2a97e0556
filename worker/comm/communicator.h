// The collectives a tensor-parallel worker needs, over one process group (a TP group, a DP group or the
// world), behind one interface so the model and trainer never know whether Gloo (CPU) or NCCL (GPU) moves
// the bytes. A collective is ordered with the compute on its device: when it returns, later work on that
// device sees its result (Gloo: it has finished; NCCL: it is queued on the stream torch computes on).
//
// Every member of the group must make the same calls in the same order. Tensors are reduced and returned
// in the same contiguous buffer (never a temporary copy that is then dropped: DeepSpeed gap G20).
#ifndef TPCOORD_WORKER_COMM_COMMUNICATOR_H_
#define TPCOORD_WORKER_COMM_COMMUNICATOR_H_

#include <string>
#include <vector>

#include <torch/torch.h>

namespace tpcoord {

class Communicator {
 public:
  virtual ~Communicator() = default;

  // This process's rank within the group, and the group's size.
  virtual int rank() const = 0;
  virtual int size() const = 0;
  // "gloo tp/0" and the like, for logs and errors.
  virtual std::string name() const = 0;
  // Where its tensors live: the CPU for Gloo, the group's GPU for NCCL. Every tensor given to a collective
  // must be there.
  virtual torch::Device device() const = 0;

  // Sums `tensor` over the group in place. `tensor` must be contiguous. Half-precision tensors are summed
  // in fp32 where the backend cannot (LibTorch 1.13's Gloo aborts on bf16).
  virtual void AllReduceSum(torch::Tensor& tensor) = 0;

  // Every member's `tensor` (all of the same shape and dtype), in group-rank order.
  virtual std::vector<torch::Tensor> AllGather(const torch::Tensor& tensor) = 0;

  // Copies the root's `tensor` into every member's `tensor` (same shape and dtype everywhere).
  virtual void Broadcast(torch::Tensor& tensor, int root) = 0;

  virtual void Barrier() = 0;
};

}  // namespace tpcoord

#endif  // TPCOORD_WORKER_COMM_COMMUNICATOR_H_
