#include "worker/training/device.h"

#include <dlfcn.h>

#include <cstdlib>

#include <torch/version.h>

#include "absl/status/status.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"

#ifdef TPCOORD_HAVE_CUDA
#include <cuda_runtime.h>
#endif

namespace tpcoord {
namespace {

// Whether this build's LibTorch was built with CUDA (CMake saw its torch_cuda library).
constexpr bool kTorchHasCuda =
#ifdef TPCOORD_TORCH_CUDA
    true;
#else
    false;
#endif

int VisibleGpus() { return kTorchHasCuda ? static_cast<int>(torch::cuda::device_count()) : 0; }

}  // namespace

std::string TorchBuildDescription() {
  if (!kTorchHasCuda) return absl::StrCat("LibTorch ", TORCH_VERSION, ", CPU only");
  return absl::StrCat("LibTorch ", TORCH_VERSION, " with CUDA, ", VisibleGpus(), " GPU(s) visible");
}

absl::StatusOr<DeviceChoice> ParseDevice(const std::string& flag) {
  DeviceChoice choice;
  if (flag == "auto" || flag.empty()) {
    choice.automatic = true;
    choice.cuda = VisibleGpus() > 0;
    return choice;
  }
  if (flag == "cpu") return choice;
  absl::string_view rest = flag;
  if (!absl::ConsumePrefix(&rest, "cuda")) {
    return absl::InvalidArgumentError(
        absl::StrCat("--device \"", flag, "\" is not a device: give auto, cpu, cuda or cuda:N"));
  }
  if (!rest.empty()) {
    int index = -1;
    if (!absl::ConsumePrefix(&rest, ":") || !absl::SimpleAtoi(rest, &index) || index < 0) {
      return absl::InvalidArgumentError(
          absl::StrCat("--device \"", flag, "\" is not a device: give auto, cpu, cuda or cuda:N"));
    }
    choice.index = index;
  }
  choice.cuda = true;
  if (!kTorchHasCuda) {
    return absl::FailedPreconditionError(absl::StrCat(
        "--device ", flag, ": this tp-worker is built against ", TorchBuildDescription(),
        ", which cannot compute on a GPU; use --device cpu, or build against a CUDA LibTorch (README \"GPUs\")"));
  }
  const int gpus = VisibleGpus();
  if (gpus == 0) {
    return absl::FailedPreconditionError(absl::StrCat("--device ", flag, ": ", TorchBuildDescription(),
                                                      " (CUDA_VISIBLE_DEVICES, or no GPU); use --device cpu"));
  }
  if (choice.index && *choice.index >= gpus) {
    return absl::FailedPreconditionError(
        absl::StrCat("--device ", flag, ": only ", gpus, " GPU(s) are visible (cuda:0 to cuda:", gpus - 1, ")"));
  }
  return choice;
}

absl::StatusOr<torch::Device> ResolveDevice(const DeviceChoice& choice, std::optional<int> local_rank, int rank) {
  if (!choice.cuda) return torch::Device(torch::kCPU);
  const int gpus = VisibleGpus();
  int index = choice.index.value_or(local_rank.value_or(rank % std::max(gpus, 1)));
  if (index >= gpus) {
    return absl::FailedPreconditionError(absl::StrCat(
        "this worker's GPU would be cuda:", index, " (LOCAL_RANK ", local_rank ? std::to_string(*local_rank) : "unset",
        "), but only ", gpus, " GPU(s) are visible; start at most one worker per GPU, or give --device cuda:N"));
  }
  return torch::Device(torch::kCUDA, static_cast<c10::DeviceIndex>(index));
}

absl::StatusOr<std::string> BackendFor(const DeviceChoice& choice, const std::string& backend_flag) {
  if (backend_flag.empty()) return std::string(choice.cuda ? "nccl" : "gloo");
  if (backend_flag != "gloo" && backend_flag != "nccl") {
    return absl::InvalidArgumentError(absl::StrCat("--backend \"", backend_flag, "\" is not gloo or nccl"));
  }
  const std::string device = choice.automatic ? absl::StrCat("auto (", choice.cuda ? "a GPU" : "the CPU", ")")
                             : choice.cuda    ? "cuda"
                                              : "cpu";
  if (backend_flag == "nccl" && !choice.cuda) {
    return absl::FailedPreconditionError(
        absl::StrCat("--backend nccl needs --device cuda, but --device is ", device,
                     ": NCCL moves GPU memory only; use --backend gloo on the CPU (or leave --backend out)"));
  }
  if (backend_flag == "gloo" && choice.cuda) {
    return absl::FailedPreconditionError(absl::StrCat("--backend gloo with --device ", device,
                                                      ": Gloo would copy every collective through the host; use "
                                                      "--backend nccl on a GPU (or leave --backend out)"));
  }
  return backend_flag;
}

std::optional<int> LocalRankFromEnvironment() {
  int local = -1;
  const char* text = std::getenv("LOCAL_RANK");
  if (text == nullptr || !absl::SimpleAtoi(text, &local) || local < 0) return std::nullopt;
  return local;
}

std::string DeviceDescription(const torch::Device& device) {
  if (device.is_cuda()) {
    std::optional<PeakFlops> peak = PeakBf16Flops(device);
    return absl::StrCat(device.str(), " (", peak ? peak->gpu : "a GPU", ")");
  }
  // LibTorch's fp32 matmul on the CPU: OpenBLAS (Debian's), MKL (pip's), else the slow reference BLAS.
  using GetConfig = char* (*)();
  if (auto get = reinterpret_cast<GetConfig>(dlsym(RTLD_DEFAULT, "openblas_get_config"))) {
    return absl::StrCat("cpu, ", get());
  }
  if (at::hasMKL()) return "cpu, MKL";
  return "cpu, reference BLAS (no OpenBLAS found: fp32 matmul will be slow)";
}

std::optional<PeakFlops> PeakBf16Flops(const torch::Device& device) {
#ifdef TPCOORD_HAVE_CUDA
  if (!device.is_cuda()) return std::nullopt;
  cudaDeviceProp properties;
  if (cudaGetDeviceProperties(&properties, device.index() < 0 ? 0 : device.index()) != cudaSuccess) {
    return std::nullopt;
  }
  const std::string name = properties.name;
  // Dense (not 2:4 sparse) bf16 tensor-core peaks from NVIDIA's data sheets, most specific names first.
  static constexpr std::pair<const char*, double> kPeaks[] = {
      {"H100 PCIe", 756e12}, {"H100 NVL", 835e12}, {"H200 NVL", 835e12}, {"GH200", 989e12},
      {"H200", 989e12},      {"H100", 989e12},     {"B200", 2250e12},    {"A100", 312e12},
      {"L40S", 362e12},      {"A10G", 70e12},      {"A10", 125e12},      {"L4", 121e12},
  };
  for (const auto& [model, flops] : kPeaks) {
    if (absl::StrContains(name, model)) return PeakFlops{name, flops};
  }
  return PeakFlops{name, 0};
#else
  return std::nullopt;
#endif
}

}  // namespace tpcoord
