// How many CPU threads a worker's tensor math uses. LibTorch defaults to one intra-op thread here, and
// OpenBLAS (which LibTorch's fp32 matmul calls; without it the reference BLAS is ~30x slower) to one thread
// per core: with several workers on one machine both must be set deliberately, or they either idle cores
// or oversubscribe them.
#ifndef TPCOORD_WORKER_TRAINING_COMPUTE_THREADS_H_
#define TPCOORD_WORKER_TRAINING_COMPUTE_THREADS_H_

#include <string>

namespace tpcoord {

// Sets LibTorch's intra-op threads and OpenBLAS's threads to `threads` (>= 1), and inter-op threads to 1.
void SetComputeThreads(int threads);

// The BLAS LibTorch's matmuls reach, e.g. "OpenBLAS 0.3.21 DYNAMIC_ARCH NO_AFFINITY Haswell MAX_THREADS=64",
// or "reference BLAS (no OpenBLAS found: fp32 matmul will be slow)".
std::string BlasDescription();

}  // namespace tpcoord

#endif  // TPCOORD_WORKER_TRAINING_COMPUTE_THREADS_H_
