// How a worker's tensor math uses the CPU. LibTorch defaults to one intra-op thread here, and OpenBLAS
// (which LibTorch's fp32 matmul calls; without it the reference BLAS is ~30x slower) to one thread per
// core: with several workers on one machine both must be set deliberately, or they either idle cores or
// oversubscribe them.
//
// Two process-wide settings matter as much as the thread counts (train_bench measures them):
// - libgomp, LibTorch's intra-op pool, keeps its threads spinning for a while after every parallel region
//   by default (OMP_WAIT_POLICY=ACTIVE-ish), on the very cores OpenBLAS's own threads then need: with two
//   threads a step took 1.8x as long as with one. PASSIVE makes them sleep. libgomp reads the variable once,
//   when it is loaded, before main, hence the re-exec below.
// - glibc hands every freed block over 128 KiB (most activations) back to the kernel and faults the pages
//   in again on the next step; keeping them in the heap cut a step by about 5% and most of its system time.
#ifndef TPCOORD_WORKER_TRAINING_COMPUTE_THREADS_H_
#define TPCOORD_WORKER_TRAINING_COMPUTE_THREADS_H_

#include <string>

namespace tpcoord {

// Call first in main: unless OMP_WAIT_POLICY is set, sets it to PASSIVE and re-executes this program with
// the same arguments (same pid, same descriptors); returns when the variable was set already (or the
// re-exec failed, which is only slower). Then keeps freed tensor memory in the heap (mallopt).
void PrepareComputeProcess(char** argv);

// Sets LibTorch's intra-op threads and OpenBLAS's threads to `threads` (>= 1), and inter-op threads to 1.
void SetComputeThreads(int threads);

}  // namespace tpcoord

#endif  // TPCOORD_WORKER_TRAINING_COMPUTE_THREADS_H_
