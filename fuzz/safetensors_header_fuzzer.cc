// libFuzzer target: the input is a whole .safetensors file. ParseSafetensorsHeader must return a Status for
// every input (never crash, throw or leak), and a header it accepts must satisfy its documented contract;
// a violation aborts, so the fuzzer reports it.
#include <cstddef>
#include <cstdint>
#include <cstdlib>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/match.h"
#include "absl/strings/string_view.h"
#include "common/safetensors_header.h"

namespace {

void Check(bool condition) {
  if (!condition) std::abort();
}

// The contract of a header that parsed: the entries tile the data section in order, each with the byte
// count its dtype and shape need.
void CheckAccepted(const tpcoord::SafetensorsHeader& header, uint64_t file_size) {
  Check(header.data_offset >= 8 && header.data_offset <= file_size);
  Check(header.data_offset - 8 <= tpcoord::kMaxSafetensorsHeaderBytes);
  uint64_t expected_begin = 0;
  for (const tpcoord::SafetensorsEntry& e : header.tensors) {
    Check(e.name != "__metadata__");
    Check(e.begin == expected_begin && e.end >= e.begin);
    uint64_t numel = 1;
    for (int64_t d : e.shape) {
      Check(d >= 0);
      Check(!__builtin_mul_overflow(numel, static_cast<uint64_t>(d), &numel));
    }
    uint64_t bytes = 0;
    Check(!__builtin_mul_overflow(numel, tpcoord::SafetensorsDtypeSize(e.dtype), &bytes));
    Check(e.end - e.begin == bytes);
    expected_begin = e.end;
  }
  Check(expected_begin == file_size - header.data_offset);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const absl::string_view file(reinterpret_cast<const char*>(data), size);
  const absl::StatusOr<tpcoord::SafetensorsHeader> header = tpcoord::ParseSafetensorsHeader(file, size, "fuzz");
  if (header.ok()) {
    CheckAccepted(*header, size);
  } else {
    // Every refusal names the file, and is one of the documented codes.
    Check(absl::StartsWith(header.status().message(), "fuzz: "));
    const absl::StatusCode code = header.status().code();
    Check(code == absl::StatusCode::kDataLoss || code == absl::StatusCode::kInvalidArgument);
  }
  // The reader's first step agrees with the whole parse about the length.
  const absl::StatusOr<uint64_t> length = tpcoord::ParseSafetensorsHeaderLength(file, size, "fuzz");
  if (header.ok()) Check(length.ok() && *length + 8 == header->data_offset);
  return 0;
}
