#include "common/safetensors_header.h"

#include <algorithm>
#include <cstdint>
#include <exception>
#include <new>
#include <string>
#include <tuple>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/json_text.h"
#include "common/limits.h"
#include "nlohmann/json.hpp"

namespace tpcoord {
namespace {

using Json = nlohmann::json;

struct DtypeInfo {
  SafetensorsDtype dtype;
  absl::string_view name;
  uint64_t size;
};
constexpr DtypeInfo kDtypes[] = {
    {SafetensorsDtype::kF32, "F32", 4},
    {SafetensorsDtype::kF16, "F16", 2},
    {SafetensorsDtype::kBF16, "BF16", 2},
};

const DtypeInfo& Info(SafetensorsDtype dtype) {
  for (const DtypeInfo& d : kDtypes) {
    if (d.dtype == dtype) return d;
  }
  return kDtypes[0];  // unreachable: every enumerator is in the table
}

std::string ShapeString(const std::vector<int64_t>& shape) {
  return absl::StrCat("[", absl::StrJoin(shape, ", "), "]");
}

// A JSON value as it appears in an error message. The parser has already refused invalid UTF-8, so the
// replacing error handler never replaces anything; it is there so that dump() cannot throw.
std::string Dump(const Json& value) { return value.dump(-1, ' ', false, Json::error_handler_t::replace); }

absl::Status WithFile(absl::string_view file_name, const absl::Status& status) {
  return absl::Status(status.code(), absl::StrCat(file_name, ": ", status.message()));
}

// The member `key` of `object` (an object), or nullptr.
const Json* Member(const Json& object, const char* key) {
  const auto it = object.find(key);
  return it == object.end() ? nullptr : &*it;
}

uint64_t Unsigned(const Json& number) { return *number.get_ptr<const Json::number_unsigned_t*>(); }

// Parses and checks one header entry; errors are prefixed by the caller with the file name.
absl::StatusOr<SafetensorsEntry> ParseEntry(const std::string& name, const Json& value) {
  const std::string where = absl::StrCat("tensor '", name, "'");
  const Json* dtype = value.is_object() ? Member(value, "dtype") : nullptr;
  const Json* shape = value.is_object() ? Member(value, "shape") : nullptr;
  const Json* offsets = value.is_object() ? Member(value, "data_offsets") : nullptr;
  if (dtype == nullptr || shape == nullptr || offsets == nullptr) {
    return absl::DataLossError(absl::StrCat(where, ": header entry needs dtype, shape and data_offsets"));
  }
  if (!dtype->is_string()) return absl::DataLossError(absl::StrCat(where, ": dtype is not a string"));
  const std::string& dtype_name = *dtype->get_ptr<const Json::string_t*>();
  const std::optional<SafetensorsDtype> parsed_dtype = SafetensorsDtypeFromName(dtype_name);
  if (!parsed_dtype.has_value()) {
    return absl::InvalidArgumentError(
        absl::StrCat(where, " has dtype ", dtype_name, "; only F32, F16 and BF16 are supported"));
  }
  SafetensorsEntry entry{name, *parsed_dtype, {}, 0, 0};

  if (!shape->is_array()) return absl::DataLossError(absl::StrCat(where, ": shape is not an array"));
  uint64_t numel = 1;
  for (const Json& dim : *shape) {
    if (!dim.is_number_unsigned()) {
      return absl::DataLossError(absl::StrCat(where, ": shape ", Dump(*shape), " is not a list of sizes"));
    }
    const uint64_t d = Unsigned(dim);
    if (d > static_cast<uint64_t>(INT64_MAX) || __builtin_mul_overflow(numel, d, &numel)) {
      return absl::DataLossError(absl::StrCat(where, ": shape ", Dump(*shape), " overflows"));
    }
    entry.shape.push_back(static_cast<int64_t>(d));
  }

  if (!offsets->is_array() || offsets->size() != 2 || !(*offsets)[0].is_number_unsigned() ||
      !(*offsets)[1].is_number_unsigned()) {
    return absl::DataLossError(absl::StrCat(where, ": data_offsets ", Dump(*offsets), " is not [begin, end]"));
  }
  entry.begin = Unsigned((*offsets)[0]);
  entry.end = Unsigned((*offsets)[1]);
  const uint64_t item = SafetensorsDtypeSize(entry.dtype);
  uint64_t bytes = 0;
  if (entry.end < entry.begin || __builtin_mul_overflow(numel, item, &bytes) || entry.end - entry.begin != bytes) {
    // The byte counts are printed as unsigned 64-bit arithmetic gives them (wrapped where they overflow).
    return absl::DataLossError(absl::StrCat(where, ": data_offsets [", entry.begin, ", ", entry.end, ") hold ",
                                            entry.end - entry.begin, " bytes, but ", dtype_name, " ",
                                            ShapeString(entry.shape), " needs ", numel * item));
  }
  return entry;
}

absl::StatusOr<SafetensorsHeader> Parse(absl::string_view file_prefix, uint64_t file_size,
                                        absl::string_view file_name) {
  if (file_prefix.size() > file_size) {
    return absl::InvalidArgumentError(absl::StrCat(file_name, ": ", file_prefix.size(),
                                                   " bytes given as the start of a file of only ", file_size));
  }
  absl::StatusOr<uint64_t> header_size = ParseSafetensorsHeaderLength(file_prefix, file_size, file_name);
  if (!header_size.ok()) return header_size.status();
  if (file_prefix.size() - 8 < *header_size) {
    return absl::DataLossError(absl::StrCat(file_name, ": truncated header"));
  }
  const absl::string_view header_text = file_prefix.substr(8, *header_size);

  absl::StatusOr<Json> parsed = ParseJsonText(header_text, "header", kMaxJsonDepth);
  if (!parsed.ok()) {
    // Malformed text, nesting too deep, a key twice: the file is damaged, not the caller's request.
    const absl::StatusCode code = parsed.status().code() == absl::StatusCode::kInvalidArgument
                                      ? absl::StatusCode::kDataLoss
                                      : parsed.status().code();
    return WithFile(file_name, absl::Status(code, parsed.status().message()));
  }
  const Json& header = *parsed;
  if (!header.is_object()) return absl::DataLossError(absl::StrCat(file_name, ": header is not a JSON object"));

  // Entries are checked in name order (the order nlohmann keeps an object in), so the first error reported
  // does not depend on how the file orders its keys.
  SafetensorsHeader result;
  result.data_offset = 8 + *header_size;
  for (const auto& [name, value] : header.items()) {
    if (name == "__metadata__") {
      if (!value.is_object()) return absl::DataLossError(absl::StrCat(file_name, ": __metadata__ is not an object"));
      for (const auto& [key, text] : value.items()) {
        if (!text.is_string()) {
          return absl::DataLossError(
              absl::StrCat(file_name, ": __metadata__ value '", key, "' is not a string"));
        }
        result.metadata[key] = *text.get_ptr<const Json::string_t*>();
      }
      continue;
    }
    absl::StatusOr<SafetensorsEntry> entry = ParseEntry(name, value);
    if (!entry.ok()) return WithFile(file_name, entry.status());
    result.tensors.push_back(*std::move(entry));
  }

  // The tensors must tile the data section exactly: sorted by offset, each starts where the last ended.
  // A stable sort keeps equal offsets in name order, so the tensor an error names is deterministic.
  std::stable_sort(result.tensors.begin(), result.tensors.end(),
                   [](const SafetensorsEntry& a, const SafetensorsEntry& b) {
                     return std::tie(a.begin, a.end) < std::tie(b.begin, b.end);
                   });
  const uint64_t data_size = file_size - result.data_offset;
  uint64_t expected_begin = 0;
  for (const SafetensorsEntry& e : result.tensors) {
    if (e.begin != expected_begin) {
      return absl::DataLossError(absl::StrCat(file_name, ": tensor '", e.name, "' starts at byte ", e.begin,
                                              " of the data section, expected ", expected_begin,
                                              " (tensors must not overlap or leave gaps)"));
    }
    expected_begin = e.end;
  }
  if (expected_begin != data_size) {
    return absl::DataLossError(absl::StrCat(file_name, ": the tensors cover ", expected_begin,
                                            " bytes but the data section has ", data_size,
                                            " (truncated or trailing data)"));
  }
  return result;
}

}  // namespace

absl::string_view SafetensorsDtypeName(SafetensorsDtype dtype) { return Info(dtype).name; }

uint64_t SafetensorsDtypeSize(SafetensorsDtype dtype) { return Info(dtype).size; }

std::optional<SafetensorsDtype> SafetensorsDtypeFromName(absl::string_view name) {
  for (const DtypeInfo& d : kDtypes) {
    if (name == d.name) return d.dtype;
  }
  return std::nullopt;
}

absl::StatusOr<uint64_t> ParseSafetensorsHeaderLength(absl::string_view file_prefix, uint64_t file_size,
                                                      absl::string_view file_name) {
  if (file_size < 8 || file_prefix.size() < 8) {
    return absl::DataLossError(absl::StrCat(file_name, ": shorter than the 8-byte header length"));
  }
  uint64_t header_size = 0;
  for (int i = 0; i < 8; ++i) header_size |= uint64_t{static_cast<unsigned char>(file_prefix[i])} << (8 * i);
  if (header_size > kMaxSafetensorsHeaderBytes || header_size > file_size - 8) {
    return absl::DataLossError(
        absl::StrCat(file_name, ": header length ", header_size, " does not fit a file of ", file_size, " bytes"));
  }
  return header_size;
}

absl::StatusOr<SafetensorsHeader> ParseSafetensorsHeader(absl::string_view file_prefix, uint64_t file_size,
                                                         absl::string_view file_name) {
  // Parse() type-checks every JSON access, so only an allocation failure could throw here.
  try {
    return Parse(file_prefix, file_size, file_name);
  } catch (const std::bad_alloc&) {
    return absl::ResourceExhaustedError(absl::StrCat(file_name, ": out of memory while reading the header"));
  } catch (const std::exception& e) {
    return absl::InternalError(absl::StrCat(file_name, ": header could not be read: ", e.what()));
  }
}

}  // namespace tpcoord
