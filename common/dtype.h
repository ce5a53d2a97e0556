// Precision names shared by the coordinator, tpctl and workers.
//
// DeepSpeed accepts a torch dtype object in tp_model_init and only the strings fp16/bf16/fp32 in
// tensor_parallel.dtype, silently skipping every other spelling (spec gap G6). tpcoord accepts one canonical
// set with the usual aliases and rejects anything else.
#ifndef TPCOORD_COMMON_DTYPE_H_
#define TPCOORD_COMMON_DTYPE_H_

#include <string>
#include "absl/strings/string_view.h"

#include "absl/status/statusor.h"

namespace tpcoord {

enum class Dtype { kFloat32, kFloat16, kBFloat16 };

// Parses a dtype name, case-insensitively: fp32 | float32 | float | torch.float32, fp16 | float16 | half |
// torch.float16, bf16 | bfloat16 | torch.bfloat16. Anything else is INVALID_ARGUMENT naming the value.
absl::StatusOr<Dtype> ParseDtype(absl::string_view name);

// "torch.float32" / "torch.float16" / "torch.bfloat16": how DeepSpeed's messages print a dtype.
absl::string_view TorchDtypeName(Dtype dtype);

// "fp32" / "fp16" / "bf16": the short name used on command lines and in logs.
absl::string_view ShortDtypeName(Dtype dtype);

// Bytes per element.
int DtypeSize(Dtype dtype);

}  // namespace tpcoord

#endif  // TPCOORD_COMMON_DTYPE_H_
