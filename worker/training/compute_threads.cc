#include "worker/training/compute_threads.h"

#include <dlfcn.h>
#include <malloc.h>
#include <unistd.h>

#include <cstdlib>
#include <mutex>

#include <torch/torch.h>

namespace tpcoord {

void PrepareComputeProcess(char** argv) {
  if (std::getenv("OMP_WAIT_POLICY") == nullptr && setenv("OMP_WAIT_POLICY", "PASSIVE", 1) == 0) {
    execv("/proc/self/exe", argv);  // returns only on failure: go on as we are
  }
  mallopt(M_MMAP_THRESHOLD, 256 << 20);  // fixed: glibc's adaptive threshold stops adapting
  mallopt(M_TRIM_THRESHOLD, 1 << 30);
  mallopt(M_TOP_PAD, 64 << 20);
}

void SetComputeThreads(int threads) {
  if (threads < 1) threads = 1;
  torch::set_num_threads(threads);
  static std::once_flag interop;
  std::call_once(interop, [] { at::set_num_interop_threads(1); });  // may be set once per process
  // OpenBLAS is loaded as libblas.so.3 behind LibTorch; its setter is found by name, if it is there.
  using SetThreads = void (*)(int);
  if (auto set = reinterpret_cast<SetThreads>(dlsym(RTLD_DEFAULT, "openblas_set_num_threads"))) set(threads);
}


}  // namespace tpcoord
