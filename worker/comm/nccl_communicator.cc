#include "worker/comm/nccl_communicator.h"

#include <cstring>
#include <stdexcept>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"

#ifdef TPCOORD_HAVE_NCCL
#include <cuda_runtime.h>
#include <nccl.h>
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
    default: throw std::invalid_argument(absl::StrCat("NCCL cannot move tensors of type ", c10::toString(t.scalar_type())));
  }
}

class NcclCommunicator : public Communicator {
 public:
  NcclCommunicator(std::string name, ncclComm_t comm, cudaStream_t stream, int rank, int size, int device)
      : name_(std::move(name)), comm_(comm), stream_(stream), rank_(rank), size_(size), device_(device) {}

  ~NcclCommunicator() override {
    cudaSetDevice(device_);
    if (buffer_) cudaFree(buffer_);
    ncclCommDestroy(comm_);
    cudaStreamDestroy(stream_);
  }

  int rank() const override { return rank_; }
  int size() const override { return size_; }
  std::string name() const override { return absl::StrCat("nccl ", name_); }

  void AllReduceSum(torch::Tensor& tensor) override {
    Check(tensor, "all_reduce");
    const size_t bytes = tensor.numel() * tensor.element_size();
    void* data = Stage(tensor, bytes, 0);
    NcclCheck(ncclAllReduce(data, data, tensor.numel(), NcclType(tensor), ncclSum, comm_, stream_), "all_reduce");
    Unstage(tensor, data, bytes, 0);
  }

  std::vector<torch::Tensor> AllGather(const torch::Tensor& tensor) override {
    torch::Tensor input = tensor.contiguous();
    Check(input, "all_gather");
    const size_t bytes = input.numel() * input.element_size();
    std::vector<int64_t> shape = {size_};
    shape.insert(shape.end(), input.sizes().begin(), input.sizes().end());
    torch::Tensor out = torch::empty(shape, input.options());
    // Staged layout: [size * bytes] output, then this rank's [bytes] input.
    void* output = Stage(out, bytes * size_, bytes);
    void* send = static_cast<char*>(output) + bytes * size_;
    Copy(send, input, bytes, /*to_device=*/true);
    NcclCheck(ncclAllGather(send, output, input.numel(), NcclType(input), comm_, stream_), "all_gather");
    Unstage(out, output, bytes * size_, bytes);
    std::vector<torch::Tensor> pieces;
    for (int r = 0; r < size_; ++r) pieces.push_back(out[r]);
    return pieces;
  }

  void Broadcast(torch::Tensor& tensor, int root) override {
    Check(tensor, "broadcast");
    if (root < 0 || root >= size_) throw std::invalid_argument(absl::StrCat(name(), ": broadcast root ", root));
    const size_t bytes = tensor.numel() * tensor.element_size();
    void* data = Stage(tensor, bytes, 0);
    NcclCheck(ncclBroadcast(data, data, tensor.numel(), NcclType(tensor), root, comm_, stream_), "broadcast");
    Unstage(tensor, data, bytes, 0);
  }

  void Barrier() override {
    torch::Tensor one = torch::ones({1});
    AllReduceSum(one);
  }

 private:
  void Check(const torch::Tensor& t, const char* op) const {
    if (!t.is_contiguous()) throw std::invalid_argument(absl::StrCat(name(), ": ", op, " needs a contiguous tensor"));
  }

  void NcclCheck(ncclResult_t result, const char* op) {
    if (result == ncclSuccess) result = StreamResult();
    if (result != ncclSuccess) {
      throw std::runtime_error(absl::StrCat(name(), " (rank ", rank_, " of ", size_, "): ", op,
                                            " failed: ", ncclGetErrorString(result), " ", ncclGetLastError(comm_)));
    }
  }

  ncclResult_t StreamResult() {
    ncclResult_t async = ncclSuccess;
    ncclCommGetAsyncError(comm_, &async);
    return async;
  }

  void CudaCheck(cudaError_t error, const char* what) const {
    if (error != cudaSuccess) {
      throw std::runtime_error(absl::StrCat(name(), ": ", what, ": ", cudaGetErrorString(error)));
    }
  }

  // The device address holding `tensor`'s bytes (plus `extra` scratch bytes): the tensor itself when it
  // lives on the GPU, else this communicator's staging buffer with the tensor copied in.
  void* Stage(const torch::Tensor& tensor, size_t bytes, size_t extra) {
    CudaCheck(cudaSetDevice(device_), "cudaSetDevice");
    if (tensor.is_cuda() && extra == 0) return tensor.data_ptr();
    if (capacity_ < bytes + extra) {
      if (buffer_) cudaFree(buffer_);
      buffer_ = nullptr;
      CudaCheck(cudaMalloc(&buffer_, bytes + extra), "cudaMalloc");
      capacity_ = bytes + extra;
    }
    if (tensor.is_cuda()) {
      CudaCheck(cudaMemcpyAsync(buffer_, tensor.data_ptr(), bytes, cudaMemcpyDeviceToDevice, stream_), "copy");
    } else {
      Copy(buffer_, tensor, bytes, /*to_device=*/true);
    }
    return buffer_;
  }

  void Copy(void* device, const torch::Tensor& tensor, size_t bytes, bool to_device) {
    const cudaMemcpyKind kind = tensor.is_cuda() ? cudaMemcpyDeviceToDevice
                                : to_device     ? cudaMemcpyHostToDevice
                                                : cudaMemcpyDeviceToHost;
    CudaCheck(to_device ? cudaMemcpyAsync(device, tensor.data_ptr(), bytes, kind, stream_)
                        : cudaMemcpyAsync(tensor.data_ptr(), device, bytes, kind, stream_),
              "cudaMemcpyAsync");
  }

  // Waits for the collective and copies the result back into `tensor` if it was staged.
  void Unstage(torch::Tensor& tensor, void* data, size_t bytes, size_t extra) {
    if (data != tensor.data_ptr()) Copy(data, tensor, bytes, /*to_device=*/false);
    CudaCheck(cudaStreamSynchronize(stream_), "cudaStreamSynchronize");
  }

  const std::string name_;
  ncclComm_t comm_;
  cudaStream_t stream_;
  const int rank_;
  const int size_;
  const int device_;
  void* buffer_ = nullptr;
  size_t capacity_ = 0;
};

}  // namespace

absl::Status CheckNcclUsable() {
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
  cudaStream_t stream;
  if (cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking) != cudaSuccess) {
    ncclCommDestroy(comm);
    return absl::UnavailableError(absl::StrCat("nccl ", group_name, ": cannot create a CUDA stream"));
  }
  return std::unique_ptr<Communicator>(new NcclCommunicator(group_name, comm, stream, rank, size, device));
}

#endif  // TPCOORD_HAVE_NCCL

}  // namespace tpcoord
