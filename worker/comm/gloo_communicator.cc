#include "worker/comm/gloo_communicator.h"

#include <stdexcept>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"

#ifdef TPCOORD_HAVE_GLOO
#include <torch/csrc/distributed/c10d/PrefixStore.hpp>
#include <torch/csrc/distributed/c10d/ProcessGroupGloo.hpp>
#ifndef USE_C10D_GLOO
#error "this LibTorch was built without Gloo (USE_C10D_GLOO): configure with -DTPCOORD_GLOO=OFF"
#endif
#endif

namespace tpcoord {

#ifndef TPCOORD_HAVE_GLOO

absl::Status CheckGlooUsable() {
  return absl::UnimplementedError(
      "--backend gloo: this tp-worker was built without Gloo (its LibTorch ships no Gloo headers, as pip's "
      "wheels do); use --backend nccl on a GPU, or build against Debian's LibTorch");
}

absl::StatusOr<std::unique_ptr<Communicator>> MakeGlooCommunicator(c10::intrusive_ptr<c10d::Store>, std::string,
                                                                   int, int, std::string, std::chrono::milliseconds) {
  return CheckGlooUsable();
}

#else

absl::Status CheckGlooUsable() { return absl::OkStatus(); }

namespace {

// c10::Error's what() carries a C++ backtrace; the first line is what people need.
std::string ErrorText(const std::exception& e) {
  if (const auto* c10_error = dynamic_cast<const c10::Error*>(&e)) return c10_error->what_without_backtrace();
  return e.what();
}

bool LooksLikeTimeout(absl::string_view text) {
  return absl::StrContains(text, "imeout") || absl::StrContains(text, "imed out");
}

// Scalar types Gloo 1.13 can move natively. Everything else (bf16, bool, ...) travels as raw bytes.
bool GlooMovesNatively(c10::ScalarType type) {
  switch (type) {
    case c10::ScalarType::Float:
    case c10::ScalarType::Double:
    case c10::ScalarType::Half:
    case c10::ScalarType::Char:
    case c10::ScalarType::Byte:
    case c10::ScalarType::Int:
    case c10::ScalarType::Long: return true;
    default: return false;
  }
}

// A view of the contiguous `t` that Gloo can move: itself, or its bytes.
torch::Tensor MovableView(const torch::Tensor& t) {
  return GlooMovesNatively(t.scalar_type()) ? t : t.view({-1}).view(torch::kUInt8);
}

class GlooCommunicator final : public Communicator {
 public:
  GlooCommunicator(std::string name, c10::intrusive_ptr<c10d::ProcessGroupGloo> group)
      : name_(std::move(name)), group_(std::move(group)) {}

  GlooCommunicator(const GlooCommunicator&) = delete;
  GlooCommunicator& operator=(const GlooCommunicator&) = delete;

  int rank() const override { return group_->getRank(); }
  int size() const override { return group_->getSize(); }
  std::string name() const override { return name_; }
  torch::Device device() const override { return torch::kCPU; }

  void AllReduceSum(torch::Tensor& tensor) override {
    CheckUsable(tensor, "all_reduce");
    if (size() == 1) return;  // a sum over one rank: skip Gloo's hand-off to its worker thread (TP=1, DP=1)
    torch::NoGradGuard no_grad;
    const bool half = tensor.scalar_type() == torch::kBFloat16 || tensor.scalar_type() == torch::kHalf;
    std::vector<torch::Tensor> buffers = {half ? tensor.to(torch::kFloat) : tensor};
    Run("all_reduce", [&] { return group_->allreduce(buffers); });
    if (half) tensor.copy_(buffers[0]);
  }

  std::vector<torch::Tensor> AllGather(const torch::Tensor& tensor) override {
    CheckDevice(tensor, "all_gather");
    torch::NoGradGuard no_grad;
    const torch::Tensor input = tensor.contiguous();
    std::vector<torch::Tensor> outputs;
    std::vector<torch::Tensor> movable_outputs;
    for (int r = 0; r < size(); ++r) {
      outputs.push_back(torch::empty_like(input, at::MemoryFormat::Contiguous));
      movable_outputs.push_back(MovableView(outputs.back()));
    }
    std::vector<std::vector<torch::Tensor>> output_lists = {movable_outputs};
    std::vector<torch::Tensor> inputs = {MovableView(input)};
    Run("all_gather", [&] { return group_->allgather(output_lists, inputs); });
    return outputs;
  }

  void Broadcast(torch::Tensor& tensor, int root) override {
    CheckUsable(tensor, "broadcast");
    if (root < 0 || root >= size()) {
      throw std::invalid_argument(absl::StrCat(Where(), ": broadcast root ", root, " is not a rank of the group"));
    }
    if (size() == 1) return;
    torch::NoGradGuard no_grad;
    std::vector<torch::Tensor> buffers = {MovableView(tensor)};
    c10d::BroadcastOptions options;
    options.rootRank = root;
    Run("broadcast", [&] { return group_->broadcast(buffers, options); });
  }

  void Barrier() override {
    Run("barrier", [&] { return group_->barrier(); });
  }

 private:
  std::string Where() const { return absl::StrCat(name_, " (rank ", rank(), " of ", size(), ")"); }

  void CheckDevice(const torch::Tensor& tensor, absl::string_view op) const {
    if (!tensor.defined() || !tensor.device().is_cpu()) {
      throw std::invalid_argument(absl::StrCat(Where(), ": ", op, " needs a defined CPU tensor"));
    }
  }

  // In-place collectives work on the caller's buffer itself, so it must be contiguous (spec gap G20).
  void CheckUsable(const torch::Tensor& tensor, absl::string_view op) const {
    CheckDevice(tensor, op);
    if (!tensor.is_contiguous()) {
      throw std::invalid_argument(absl::StrCat(Where(), ": ", op, " needs a contiguous tensor"));
    }
  }

  // Starts a collective and waits for it (bounded by the group's timeout).
  template <typename Start>
  void Run(absl::string_view op, Start start) {
    try {
      c10::intrusive_ptr<c10d::Work> work = start();
      work->wait();
    } catch (const std::exception& e) {
      throw std::runtime_error(absl::StrCat(Where(), ": ", op, " failed: ", ErrorText(e)));
    }
  }

  const std::string name_;
  const c10::intrusive_ptr<c10d::ProcessGroupGloo> group_;
};

}  // namespace

absl::StatusOr<std::unique_ptr<Communicator>> MakeGlooCommunicator(c10::intrusive_ptr<c10d::Store> store,
                                                                   std::string group_name, int rank, int size,
                                                                   std::string interface_host,
                                                                   std::chrono::milliseconds timeout) {
  const std::string name = absl::StrCat("gloo ", group_name);
  if (!store || group_name.empty() || size < 1 || rank < 0 || rank >= size || interface_host.empty() ||
      timeout.count() <= 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        name, ": need a store, a group name, 0 <= rank < size, an interface and a positive timeout; got rank ", rank,
        ", size ", size, ", interface \"", interface_host, "\", timeout ", timeout.count(), " ms"));
  }
  try {
    auto options = c10d::ProcessGroupGloo::Options::create(timeout);
    options->devices.push_back(c10d::ProcessGroupGloo::createDeviceForHostname(interface_host));
    auto prefixed = c10::make_intrusive<c10d::PrefixStore>(group_name, std::move(store));
    auto group = c10::make_intrusive<c10d::ProcessGroupGloo>(prefixed, rank, size, options);
    return std::make_unique<GlooCommunicator>(name, std::move(group));
  } catch (const std::exception& e) {
    const std::string text = ErrorText(e);
    const std::string message = absl::StrCat(name, ": rank ", rank, " of ", size, " could not join the group (",
                                             timeout.count(), " ms timeout, interface ", interface_host, "): ", text);
    return LooksLikeTimeout(text) ? absl::DeadlineExceededError(message) : absl::UnavailableError(message);
  }
}

#endif  // TPCOORD_HAVE_GLOO

}  // namespace tpcoord
