// Named tensors, the currency of checkpoints and state dicts: Hugging Face parameter names
// ("model.layers.0.self_attn.q_proj.weight") to tensors, in name order.
#ifndef TPCOORD_WORKER_MODEL_TENSOR_MAP_H_
#define TPCOORD_WORKER_MODEL_TENSOR_MAP_H_

#include <map>
#include <string>

#include <ATen/core/Tensor.h>

namespace tpcoord {

using TensorMap = std::map<std::string, at::Tensor>;

}  // namespace tpcoord

#endif  // TPCOORD_WORKER_MODEL_TENSOR_MAP_H_
