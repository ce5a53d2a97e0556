#include "worker/comm/nccl_communicator.h"

#include <cstring>
#include <stdexcept>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"

#ifdef TPCOORD_HAVE_NCCL
#include <cuda_runtime.h>
#include <nccl.h>
#endif
#ifdef TPCOORD_TORCH_CUDA  // the one place that needs a CUDA LibTorch's headers: torch's current stream
#include <c10/cuda/CUDAStream.h>
#endif

namespace tpcoord {

#ifndef TPCOORD_HAVE_NCCL

absl::Status CheckNcclUsable() {
  return absl::UnimplementedError(
      "--backend nccl: this tp-worker was built without NCCL (the CUDA toolkit and NCCL were not found at build "
      "time); use --backend gloo");
}

absl::StatusOr<std::unique_ptr<Communicator>> MakeNcclCommunicator(const std::string&, const std::vector<std::string>&,
                                                                   int, int, int) {
  return CheckNcclUsable();
}

#else

namespace {

ncclDataType_t NcclType(const torch::Tensor& t) {
  switch (t.scalar_type()) {
    case torch::kFloat32: return ncclFloat32;
    case torch::kFloat16: return ncclFloat16;
    case torch::kBFloat16: return ncclBfloat16;
    case torch::kFloat64: return ncclFloat64;
    case torch::kInt32: return ncclInt32;
    case torch::kInt64: return ncclInt64;
    case torch::kUInt8: return ncclUint8;
    case torch::kInt8: return ncclInt8;
    case torch::kBool: return ncclUint8;  // moved, never summed
    default: throw std::invalid_argument(absl::StrCat("NCCL cannot move tensors of type ", c10::toString(t.scalar_type())));
  }
}

// The stream torch computes on for GPU `device`: a collective queued there is ordered with the kernels
// before and after it, with no event and no host wait. (Without a CUDA LibTorch no tensor is ever on a GPU,
// and CheckNcclUsable refuses first.)
cudaStream_t ComputeStream(int device) {
#ifdef TPCOORD_TORCH_CUDA
  return c10::cuda::getCurrentCUDAStream(static_cast<c10::DeviceIndex>(device)).stream();
#else
  (void)device;
  return cudaStreamLegacy;
#endif
}

class NcclCommunicator : public Communicator {
 public:
  NcclCommunicator(std::string name, ncclComm_t comm, int rank, int size, int device)
      : name_(std::move(name)), comm_(comm), rank_(rank), size_(size), device_(device) {}

  ~NcclCommunicator() override { ncclCommDestroy(comm_); }

  int rank() const override { return rank_; }
  int size() const override { return size_; }
  std::string name() const override { return absl::StrCat("nccl ", name_); }
  torch::Device device() const override { return torch::Device(torch::kCUDA, static_cast<c10::DeviceIndex>(device_)); }

  void AllReduceSum(torch::Tensor& tensor) override {
    Check(tensor, "all_reduce");
    if (size_ == 1) return;
    void* data = tensor.data_ptr();
    NcclCheck(ncclAllReduce(data, data, tensor.numel(), NcclType(tensor), ncclSum, comm_, ComputeStream(device_)),
              "all_reduce");
  }

  std::vector<torch::Tensor> AllGather(const torch::Tensor& tensor) override {
    const torch::Tensor input = tensor.contiguous();
    Check(input, "all_gather");
    std::vector<int64_t> shape = {size_};
    shape.insert(shape.end(), input.sizes().begin(), input.sizes().end());
    torch::Tensor out = torch::empty(shape, input.options());  // [size, ...], on the device
    NcclCheck(ncclAllGather(input.data_ptr(), out.data_ptr(), input.numel(), NcclType(input), comm_,
                            ComputeStream(device_)),
              "all_gather");
    std::vector<torch::Tensor> pieces;
    for (int r = 0; r < size_; ++r) pieces.push_back(out[r]);
    return pieces;
  }

  void Broadcast(torch::Tensor& tensor, int root) override {
    Check(tensor, "broadcast");
    if (root < 0 || root >= size_) throw std::invalid_argument(absl::StrCat(name(), ": broadcast root ", root));
    void* data = tensor.data_ptr();
    NcclCheck(ncclBroadcast(data, data, tensor.numel(), NcclType(tensor), root, comm_, ComputeStream(device_)),
              "broadcast");
  }

  // The one collective that waits on the host: every rank has arrived when it returns.
  void Barrier() override {
    torch::Tensor one = torch::ones({1}, torch::TensorOptions(torch::kFloat32).device(device()));
    AllReduceSum(one);
    CudaCheck(cudaStreamSynchronize(ComputeStream(device_)), "barrier");
  }

 private:
  void Check(const torch::Tensor& t, const char* op) const {
    if (!t.defined() || !t.is_cuda() || t.device().index() != device_) {
      throw std::invalid_argument(absl::StrCat(name(), ": ", op, " needs a tensor on cuda:", device_));
    }
    if (!t.is_contiguous()) throw std::invalid_argument(absl::StrCat(name(), ": ", op, " needs a contiguous tensor"));
  }

  // A failed enqueue, or an error a collective queued earlier ran into (read without waiting).
  void NcclCheck(ncclResult_t result, const char* op) {
    if (result == ncclSuccess) ncclCommGetAsyncError(comm_, &result);
    if (result != ncclSuccess) {
      throw std::runtime_error(absl::StrCat(name(), " (rank ", rank_, " of ", size_, "): ", op,
                                            " failed: ", ncclGetErrorString(result), " ", ncclGetLastError(comm_)));
    }
  }

  void CudaCheck(cudaError_t error, const char* what) const {
    if (error != cudaSuccess) {
      throw std::runtime_error(absl::StrCat(name(), ": ", what, ": ", cudaGetErrorString(error)));
    }
  }

  const std::string name_;
  ncclComm_t comm_;
  const int rank_;
  const int size_;
  const int device_;
};

}  // namespace

absl::Status CheckNcclUsable() {
#ifndef TPCOORD_TORCH_CUDA
  return absl::FailedPreconditionError(
      "--backend nccl needs tensors on a GPU, and this tp-worker's LibTorch has no CUDA; use --backend gloo, or "
      "build against a CUDA LibTorch (README \"GPUs\")");
#endif
  int devices = 0;
  const cudaError_t error = cudaGetDeviceCount(&devices);
  if (error != cudaSuccess || devices == 0) {
    return absl::FailedPreconditionError(absl::StrCat(
        "--backend nccl needs a usable CUDA GPU and this machine has none (cudaGetDeviceCount: ",
        error == cudaSuccess ? "0 devices" : cudaGetErrorString(error), "); use --backend gloo"));
  }
  return absl::OkStatus();
}

absl::StatusOr<std::unique_ptr<Communicator>> MakeNcclCommunicator(const std::string& group_name,
                                                                   const std::vector<std::string>& unique_ids,
                                                                   int rank, int size, int device) {
  if (absl::Status s = CheckNcclUsable(); !s.ok()) return s;
  if (unique_ids.empty()) return absl::InvalidArgumentError(absl::StrCat("nccl ", group_name, ": no unique id"));
  std::vector<ncclUniqueId> ids(unique_ids.size());
  for (size_t i = 0; i < unique_ids.size(); ++i) {
    if (unique_ids[i].size() != sizeof(ncclUniqueId)) {
      return absl::InvalidArgumentError(absl::StrCat("nccl ", group_name, ": unique id ", i, " is ",
                                                     unique_ids[i].size(), " bytes, not ", sizeof(ncclUniqueId)));
    }
    std::memcpy(ids[i].internal, unique_ids[i].data(), sizeof(ids[i].internal));
  }
  if (cudaSetDevice(device) != cudaSuccess) {
    return absl::FailedPreconditionError(absl::StrCat("nccl ", group_name, ": cannot use CUDA device ", device));
  }
  ncclComm_t comm;
#if NCCL_VERSION_CODE >= NCCL_VERSION(2, 23, 0)
  const char* init = ids.size() == 1 ? "ncclCommInitRank" : "ncclCommInitRankScalable";
  const ncclResult_t r = ids.size() == 1 ? ncclCommInitRank(&comm, size, ids[0], rank)
                                         : ncclCommInitRankScalable(&comm, size, rank, static_cast<int>(ids.size()),
                                                                    ids.data(), nullptr);
#else
  if (ids.size() > 1) {
    return absl::FailedPreconditionError(absl::StrCat("nccl ", group_name, ": ", size, " ranks start from ",
                                                      ids.size(), " unique ids, which needs NCCL 2.23 or later "
                                                      "(ncclCommInitRankScalable); this build has ", NCCL_VERSION_CODE));
  }
  const char* init = "ncclCommInitRank";
  const ncclResult_t r = ncclCommInitRank(&comm, size, ids[0], rank);
#endif
  if (r != ncclSuccess) {
    return absl::UnavailableError(absl::StrCat("nccl ", group_name, " (rank ", rank, " of ", size, "): ", init,
                                               " failed: ", ncclGetErrorString(r)));
  }
  return std::unique_ptr<Communicator>(new NcclCommunicator(group_name, comm, rank, size, device));
}

#endif  // TPCOORD_HAVE_NCCL

}  // namespace tpcoord
