// Where a worker computes: the one torch::Device chosen at start (--device, TPCOORD_DEVICE), on which the
// parameters, fp32 masters, optimizer state, activations, token batches and the loss all live, and the
// collective backend that goes with it.
//
//   --device auto     cuda:LOCAL_RANK when the LibTorch has CUDA and a GPU is visible (LOCAL_RANK from the
//                     environment, as torchrun and tp-agent set it, else the rank modulo the visible GPUs);
//                     otherwise the CPU
//   --device cpu      the CPU
//   --device cuda     cuda:LOCAL_RANK, as auto, but an error where there is no GPU
//   --device cuda:N   GPU N
//
// The backend follows the device: nccl on a GPU, gloo on the CPU; a pair that cannot work is refused at
// start, naming both flags.
#ifndef TPCOORD_WORKER_TRAINING_DEVICE_H_
#define TPCOORD_WORKER_TRAINING_DEVICE_H_

#include <optional>
#include <string>

#include <torch/torch.h>

#include "absl/status/statusor.h"

namespace tpcoord {

// What --device asked for, checked against this LibTorch before the worker joins anything.
struct DeviceChoice {
  bool cuda = false;         // a GPU
  std::optional<int> index;  // cuda:N; nullopt: LOCAL_RANK, else the rank modulo the GPU count
  bool automatic = false;    // --device auto
};

// What this process's LibTorch can do, as one line for messages ("LibTorch 1.13.0, CPU only").
std::string TorchBuildDescription();

// Parses --device. INVALID_ARGUMENT for a value that is not a device; FAILED_PRECONDITION (tp-worker exits
// 3: no restart cures it) for cuda on a LibTorch without CUDA or on a machine without a visible GPU, naming
// the LibTorch build and --device cpu.
absl::StatusOr<DeviceChoice> ParseDevice(const std::string& flag);

// The device itself, once the rank is known. `local_rank`: LOCAL_RANK, if set.
absl::StatusOr<torch::Device> ResolveDevice(const DeviceChoice& choice, std::optional<int> local_rank, int rank);

// --backend for `choice`: "" picks nccl on a GPU and gloo on the CPU; FAILED_PRECONDITION naming --backend
// and --device when the two do not go together (gloo with a GPU, nccl with the CPU).
absl::StatusOr<std::string> BackendFor(const DeviceChoice& choice, const std::string& backend_flag);

// LOCAL_RANK from the environment, if it is a number.
std::optional<int> LocalRankFromEnvironment();

// What computes on `device`, for the start-up line: the GPU's name, or the BLAS behind the CPU's matmuls.
std::string DeviceDescription(const torch::Device& device);

// The GPU behind `device` (its name, from the CUDA runtime) and its peak dense bf16 FLOP/s, looked up in a
// table of data-center GPUs (0 for one not in it), for MFU = 6 N tokens/s / peak; nullopt on the CPU.
struct PeakFlops {
  std::string gpu;
  double bf16_dense = 0;
};
std::optional<PeakFlops> PeakBf16Flops(const torch::Device& device);

}  // namespace tpcoord

#endif  // TPCOORD_WORKER_TRAINING_DEVICE_H_
