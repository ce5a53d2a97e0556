// Between tpcoord's precision names (common/dtype.h) and LibTorch's scalar types. Includes only c10's
// ScalarType header, so it is cheap to include.
#ifndef TPCOORD_WORKER_MODEL_TORCH_DTYPE_H_
#define TPCOORD_WORKER_MODEL_TORCH_DTYPE_H_

#include <c10/core/ScalarType.h>

#include <optional>

#include "common/dtype.h"

namespace tpcoord {

inline c10::ScalarType ToScalarType(Dtype dtype) {
  switch (dtype) {
    case Dtype::kFloat32: return c10::ScalarType::Float;
    case Dtype::kFloat16: return c10::ScalarType::Half;
    case Dtype::kBFloat16: return c10::ScalarType::BFloat16;
  }
  return c10::ScalarType::Float;
}

// The Dtype of a floating-point training type; nullopt for every other scalar type.
inline std::optional<Dtype> FromScalarType(c10::ScalarType type) {
  switch (type) {
    case c10::ScalarType::Float: return Dtype::kFloat32;
    case c10::ScalarType::Half: return Dtype::kFloat16;
    case c10::ScalarType::BFloat16: return Dtype::kBFloat16;
    default: return std::nullopt;
  }
}

}  // namespace tpcoord

#endif  // TPCOORD_WORKER_MODEL_TORCH_DTYPE_H_
