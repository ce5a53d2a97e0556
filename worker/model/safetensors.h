// The safetensors checkpoint format (https://huggingface.co/docs/safetensors), as Hugging Face writes it:
//
//   [8 bytes] N, the header length, unsigned little-endian
//   [N bytes] JSON header: {"<tensor name>": {"dtype": "BF16", "shape": [4096, 4096],
//                                             "data_offsets": [begin, end]}, ...,
//                           "__metadata__": {"format": "pt", ...}}   (optional; string values only)
//   [rest]    the data section: each tensor's raw little-endian bytes, row-major, at
//             [begin, end) relative to the start of the data section
//
// A model too large for one file is sharded: model-00001-of-00003.safetensors, ... plus
// model.safetensors.index.json, {"metadata": {"total_size": <bytes>}, "weight_map": {"<name>": "<file>"}}.
//
// Only the training dtypes F32, F16 and BF16 are supported; a file holding any other dtype is rejected
// with an error naming the tensor. Reading validates the header the way the reference implementation
// does: offsets must match each tensor's dtype and shape and must tile the data section exactly (no gaps,
// no overlaps). Every error names the file, and the tensor where there is one. Reading and writing are
// bit-exact: ReadSafetensors(WriteSafetensors(t)) == t, bit for bit. A little-endian host is assumed (x86,
// ARM), as LibTorch itself does.
#ifndef TPCOORD_WORKER_MODEL_SAFETENSORS_H_
#define TPCOORD_WORKER_MODEL_SAFETENSORS_H_

#include <cstdint>
#include <map>
#include <string>

#include <torch/torch.h>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "worker/model/tensor_map.h"

namespace tpcoord {

struct SafetensorsFile {
  TensorMap tensors;                            // CPU, contiguous, in the file's dtypes
  std::map<std::string, std::string> metadata;  // the header's "__metadata__", if any
};

// Reads one .safetensors file. NOT_FOUND if it does not exist; DATA_LOSS if it is malformed or truncated;
// INVALID_ARGUMENT for a dtype other than F32/F16/BF16.
absl::StatusOr<SafetensorsFile> ReadSafetensors(const std::string& path);

// Writes `tensors` (any device and layout; F32, F16 or BF16) to one .safetensors file, in name order, with
// the header padded with spaces to a multiple of 8 bytes so the data section is 8-byte aligned. The
// default metadata {"format": "pt"} is what Hugging Face transformers checks for when it loads a file.
// The file appears atomically: it is written beside `path`, flushed to disk, then renamed over `path`.
absl::Status WriteSafetensors(const std::string& path, const TensorMap& tensors,
                              const std::map<std::string, std::string>& metadata = {{"format", "pt"}});

// Loads a Hugging Face checkpoint. `path` may be
//   - a directory holding model.safetensors, or model.safetensors.index.json and its shards;
//   - a .safetensors file;
//   - an index .json file, whose shards are read from the index's directory.
// Sharded checkpoints must agree with their index: every tensor it lists is in the shard it names, and
// every tensor of a shard is listed for that shard (DATA_LOSS naming the tensor and files otherwise).
absl::StatusOr<TensorMap> LoadSafetensorsCheckpoint(const std::string& path);

// Writes `tensors` into directory `dir` (created if needed) the way save_pretrained does: one
// model.safetensors when the tensors' bytes total at most `max_shard_bytes`, otherwise shards of at most
// `max_shard_bytes` each (a single larger tensor gets a shard of its own), named
// model-0000k-of-0000n.safetensors, plus model.safetensors.index.json. Tensors are assigned to shards in
// name order.
absl::Status WriteSafetensorsCheckpoint(const std::string& dir, const TensorMap& tensors,
                                        int64_t max_shard_bytes = int64_t{5} << 30);

// File names used by Hugging Face.
inline constexpr char kSafetensorsFileName[] = "model.safetensors";
inline constexpr char kSafetensorsIndexFileName[] = "model.safetensors.index.json";

}  // namespace tpcoord

#endif  // TPCOORD_WORKER_MODEL_SAFETENSORS_H_
