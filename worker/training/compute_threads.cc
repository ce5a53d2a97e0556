#include "worker/training/compute_threads.h"

#include <dlfcn.h>

#include <mutex>

#include <torch/torch.h>

namespace tpcoord {

void SetComputeThreads(int threads) {
  if (threads < 1) threads = 1;
  torch::set_num_threads(threads);
  static std::once_flag interop;
  std::call_once(interop, [] { at::set_num_interop_threads(1); });  // may be set once per process
  // OpenBLAS is loaded as libblas.so.3 behind LibTorch; its setter is found by name, if it is there.
  using SetThreads = void (*)(int);
  if (auto set = reinterpret_cast<SetThreads>(dlsym(RTLD_DEFAULT, "openblas_set_num_threads"))) set(threads);
}

std::string BlasDescription() {
  using GetConfig = char* (*)();
  if (auto get = reinterpret_cast<GetConfig>(dlsym(RTLD_DEFAULT, "openblas_get_config"))) return get();
  return "reference BLAS (no OpenBLAS found: fp32 matmul will be slow)";
}

}  // namespace tpcoord
