// The header of a safetensors file (https://huggingface.co/docs/safetensors), parsed and validated without
// LibTorch, so that the part of checkpoint reading that sees untrusted bytes can be unit-tested and fuzzed
// on its own. worker/model/safetensors.cc reads and writes the tensor data around it.
//
//   [8 bytes] N, the header length, unsigned little-endian; at most kMaxSafetensorsHeaderBytes
//   [N bytes] JSON header: {"<tensor name>": {"dtype": "BF16", "shape": [4096, 4096],
//                                             "data_offsets": [begin, end]}, ...,
//                           "__metadata__": {"format": "pt", ...}}   (optional; string values only)
//   [rest]    the data section; each tensor's bytes are [begin, end) relative to its start
//
// A header is valid when it is a JSON object (nested at most kMaxJsonDepth levels, no key twice in one
// object) whose entries each have a dtype F32, F16 or BF16, a shape of sizes whose product fits 64 bits,
// and data_offsets [begin, end] with end - begin = element size x product of the shape, and whose entries,
// taken in offset order, tile the data section exactly: no gaps, no overlaps, nothing after the last one.
// Entries may appear in the JSON in any order.
//
// Errors: every message starts with "<file_name>: " and names the tensor where there is one. DATA_LOSS for
// a malformed or truncated file; INVALID_ARGUMENT for a well-formed entry whose dtype is not supported
// ("tensor 'x' has dtype I64; only F32, F16 and BF16 are supported"); RESOURCE_EXHAUSTED only if memory
// runs out while parsing. No exception leaves this module.
#ifndef TPCOORD_COMMON_SAFETENSORS_HEADER_H_
#define TPCOORD_COMMON_SAFETENSORS_HEADER_H_

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace tpcoord {

// The reference implementation refuses headers above 100 MB.
inline constexpr uint64_t kMaxSafetensorsHeaderBytes = 100'000'000;

// The dtypes tpcoord trains in; a file with any other dtype is refused.
enum class SafetensorsDtype { kF32, kF16, kBF16 };

// "F32" / "F16" / "BF16", as the header spells them.
absl::string_view SafetensorsDtypeName(SafetensorsDtype dtype);

// Bytes per element: 4 / 2 / 2.
uint64_t SafetensorsDtypeSize(SafetensorsDtype dtype);

// The dtype a header's "dtype" string names (exactly, case-sensitively), or nullopt for any other string.
std::optional<SafetensorsDtype> SafetensorsDtypeFromName(absl::string_view name);

// One tensor of a header. end - begin == SafetensorsDtypeSize(dtype) x the product of shape (an empty shape
// is a scalar, one element), and every size is in [0, INT64_MAX].
struct SafetensorsEntry {
  std::string name;
  SafetensorsDtype dtype = SafetensorsDtype::kF32;
  std::vector<int64_t> shape;
  uint64_t begin = 0;  // relative to the start of the data section
  uint64_t end = 0;
};

struct SafetensorsHeader {
  // Ordered by (begin, end), i.e. the order of their data in the file; entries with the same offsets (only
  // empty tensors can share them) keep the order of their names.
  std::vector<SafetensorsEntry> tensors;
  // The header's "__metadata__", empty when it has none.
  std::map<std::string, std::string> metadata;
  // Where the data section starts in the file: 8 + N. The data section is [data_offset, file_size), and the
  // last tensor's end (0 with no tensors) is exactly file_size - data_offset.
  uint64_t data_offset = 0;
};

// Reads N from the first 8 bytes of a file of `file_size` bytes and checks that 8 + N bytes fit in the file
// and that N is at most kMaxSafetensorsHeaderBytes; returns N. `file_prefix` is the file's first bytes
// (only the first 8 are looked at). DATA_LOSS "<file_name>: shorter than the 8-byte header length" when
// file_size or file_prefix is under 8 bytes, "<file_name>: header length N does not fit a file of S bytes"
// when N is too large. A reader calls this to learn how many more bytes to read before
// ParseSafetensorsHeader.
absl::StatusOr<uint64_t> ParseSafetensorsHeaderLength(absl::string_view file_prefix, uint64_t file_size,
                                                      absl::string_view file_name);

// Parses and validates the header of a file of `file_size` bytes, as described at the top of this file.
// `file_prefix` is the file's first bytes: at least the 8 + N of the length and the header (the whole file
// will do; bytes after the header are not looked at), and at most file_size bytes (INVALID_ARGUMENT
// otherwise: a caller's mistake). Fewer than 8 + N bytes, where the file is large enough to hold them, is
// DATA_LOSS "<file_name>: truncated header". `file_name` is used only in error messages.
absl::StatusOr<SafetensorsHeader> ParseSafetensorsHeader(absl::string_view file_prefix, uint64_t file_size,
                                                         absl::string_view file_name);

}  // namespace tpcoord

#endif  // TPCOORD_COMMON_SAFETENSORS_HEADER_H_
