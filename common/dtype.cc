#include "common/dtype.h"

#include <array>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"

namespace tpcoord {
namespace {

constexpr std::array<std::pair<absl::string_view, Dtype>, 11> kNames = {{
    {"fp32", Dtype::kFloat32},
    {"float32", Dtype::kFloat32},
    {"float", Dtype::kFloat32},
    {"torch.float32", Dtype::kFloat32},
    {"fp16", Dtype::kFloat16},
    {"float16", Dtype::kFloat16},
    {"half", Dtype::kFloat16},
    {"torch.float16", Dtype::kFloat16},
    {"bf16", Dtype::kBFloat16},
    {"bfloat16", Dtype::kBFloat16},
    {"torch.bfloat16", Dtype::kBFloat16},
}};

}  // namespace

absl::StatusOr<Dtype> ParseDtype(absl::string_view name) {
  const std::string lower = absl::AsciiStrToLower(name);
  for (const auto& [alias, dtype] : kNames) {
    if (lower == alias) return dtype;
  }
  return absl::InvalidArgumentError(absl::StrCat(
      "unknown dtype \"", name,
      "\"; expected fp32 (float32, float, torch.float32), fp16 (float16, half, torch.float16) or bf16 "
      "(bfloat16, torch.bfloat16)"));
}

absl::string_view TorchDtypeName(Dtype dtype) {
  switch (dtype) {
    case Dtype::kFloat32: return "torch.float32";
    case Dtype::kFloat16: return "torch.float16";
    case Dtype::kBFloat16: return "torch.bfloat16";
  }
  return "torch.unknown";
}

absl::string_view ShortDtypeName(Dtype dtype) {
  switch (dtype) {
    case Dtype::kFloat32: return "fp32";
    case Dtype::kFloat16: return "fp16";
    case Dtype::kBFloat16: return "bf16";
  }
  return "unknown";
}

int DtypeSize(Dtype dtype) { return dtype == Dtype::kFloat32 ? 4 : 2; }

}  // namespace tpcoord
