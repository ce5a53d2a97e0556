// --device and --backend: what each asks for, and what a LibTorch without CUDA (Debian's, here) refuses,
// naming its build and --device cpu. (On a CUDA machine deploy/gpu-check.sh covers the GPU side.)
#include "worker/training/device.h"

#include <gtest/gtest.h>

#include "absl/strings/match.h"

namespace tpcoord {
namespace {

TEST(DeviceTest, AutoIsTheCpuWithoutAGpuAndPicksGlooThere) {
  absl::StatusOr<DeviceChoice> choice = ParseDevice("auto");
  ASSERT_TRUE(choice.ok()) << choice.status();
  if (torch::cuda::device_count() > 0) GTEST_SKIP() << "a GPU is visible";
  EXPECT_FALSE(choice->cuda);
  EXPECT_EQ(*ResolveDevice(*choice, std::nullopt, 3), torch::Device(torch::kCPU));
  EXPECT_EQ(*BackendFor(*choice, ""), "gloo");
  EXPECT_EQ(*BackendFor(*ParseDevice("cpu"), "gloo"), "gloo");
}

TEST(DeviceTest, ACudaDeviceOnALibTorchWithoutCudaNamesTheBuildAndTheCpu) {
  if (torch::cuda::is_available()) GTEST_SKIP() << "this LibTorch has CUDA and a GPU";
  for (const char* flag : {"cuda", "cuda:1"}) {
    absl::StatusOr<DeviceChoice> choice = ParseDevice(flag);
    EXPECT_EQ(choice.status().code(), absl::StatusCode::kFailedPrecondition) << flag;
    EXPECT_TRUE(absl::StrContains(choice.status().message(), TorchBuildDescription())) << choice.status();
    EXPECT_TRUE(absl::StrContains(choice.status().message(), "use --device cpu")) << choice.status();
  }
}

TEST(DeviceTest, WhatIsNotADeviceIsAnInvalidArgument) {
  for (const char* flag : {"tpu", "cuda:", "cuda:x", "cuda:-1", "cpu:0", "CUDA"}) {
    absl::StatusOr<DeviceChoice> choice = ParseDevice(flag);
    EXPECT_EQ(choice.status().code(), absl::StatusCode::kInvalidArgument) << flag;
    EXPECT_TRUE(absl::StrContains(choice.status().message(), "give auto, cpu, cuda or cuda:N")) << choice.status();
  }
}

TEST(DeviceTest, AMismatchedBackendIsRefusedNamingBothFlags) {
  DeviceChoice gpu;
  gpu.cuda = true;
  absl::StatusOr<std::string> gloo_on_gpu = BackendFor(gpu, "gloo");
  EXPECT_EQ(gloo_on_gpu.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_TRUE(absl::StartsWith(gloo_on_gpu.status().message(), "--backend gloo with --device cuda: "))
      << gloo_on_gpu.status();
  absl::StatusOr<std::string> nccl_on_cpu = BackendFor(DeviceChoice{}, "nccl");
  EXPECT_EQ(nccl_on_cpu.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_TRUE(
      absl::StartsWith(nccl_on_cpu.status().message(), "--backend nccl needs --device cuda, but --device is cpu"))
      << nccl_on_cpu.status();
  EXPECT_EQ(*BackendFor(gpu, ""), "nccl");
  EXPECT_EQ(BackendFor(gpu, "mpi").status().code(), absl::StatusCode::kInvalidArgument);
}

TEST(DeviceTest, TheCpuIsDescribedByItsBlas) {
  EXPECT_TRUE(absl::StartsWith(DeviceDescription(torch::kCPU), "cpu, ")) << DeviceDescription(torch::kCPU);
  EXPECT_FALSE(PeakBf16Flops(torch::kCPU).has_value());
}

}  // namespace
}  // namespace tpcoord
