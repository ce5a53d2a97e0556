#include "worker/model/safetensors.h"

#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <set>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "common/safetensors_header.h"

static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__, "safetensors data is little-endian");

namespace tpcoord {
namespace {

namespace fs = std::filesystem;
using Json = nlohmann::json;

// The dtypes a file may hold, as LibTorch types.
struct DtypeName {
  SafetensorsDtype dtype;
  torch::ScalarType type;
};
constexpr DtypeName kDtypes[] = {
    {SafetensorsDtype::kF32, torch::kFloat},
    {SafetensorsDtype::kF16, torch::kHalf},
    {SafetensorsDtype::kBF16, torch::kBFloat16},
};

const DtypeName* FindDtype(torch::ScalarType type) {
  for (const DtypeName& d : kDtypes) {
    if (type == d.type) return &d;
  }
  return nullptr;
}

torch::ScalarType TorchType(SafetensorsDtype dtype) {
  for (const DtypeName& d : kDtypes) {
    if (dtype == d.dtype) return d.type;
  }
  return torch::kFloat;  // unreachable: every SafetensorsDtype is in the table
}

absl::Status WithFile(const std::string& path, const absl::Status& status) {
  return absl::Status(status.code(), absl::StrCat(path, ": ", status.message()));
}

absl::Status WriteAll(std::FILE* f, const void* data, size_t size, const std::string& path) {
  if (size > 0 && std::fwrite(data, 1, size, f) != size) {
    return absl::InternalError(absl::StrCat(path, ": write failed: ", std::strerror(errno)));
  }
  return absl::OkStatus();
}

// Builds the padded header for `tensors` (contiguous, supported dtypes) laid out in map order.
std::string BuildHeader(const TensorMap& tensors, const std::map<std::string, std::string>& metadata) {
  Json header = Json::object();
  if (!metadata.empty()) header["__metadata__"] = metadata;
  uint64_t offset = 0;
  for (const auto& [name, tensor] : tensors) {
    const uint64_t bytes = tensor.numel() * tensor.element_size();
    header[name] = {{"dtype", std::string(SafetensorsDtypeName(FindDtype(tensor.scalar_type())->dtype))},
                    {"shape", tensor.sizes().vec()},
                    {"data_offsets", {offset, offset + bytes}}};
    offset += bytes;
  }
  std::string text = header.dump();
  text.append((8 - text.size() % 8) % 8, ' ');
  return text;
}

// Contiguous CPU copies (or the tensors themselves) of `tensors`, checked for writing.
absl::StatusOr<TensorMap> PrepareForWriting(const TensorMap& tensors) {
  TensorMap ready;
  for (const auto& [name, tensor] : tensors) {
    if (name.empty() || name == "__metadata__") {
      return absl::InvalidArgumentError(absl::StrCat("tensor name \"", name, "\" is reserved"));
    }
    if (!tensor.defined()) return absl::InvalidArgumentError(absl::StrCat("tensor '", name, "' is undefined"));
    if (FindDtype(tensor.scalar_type()) == nullptr) {
      return absl::InvalidArgumentError(absl::StrCat("tensor '", name, "' has dtype ",
                                                     c10::toString(tensor.scalar_type()),
                                                     "; only float32, float16 and bfloat16 can be written"));
    }
    ready.emplace(name, tensor.detach().to(torch::kCPU).contiguous());
  }
  return ready;
}

absl::Status WriteFile(const std::string& path, const TensorMap& ready,
                       const std::map<std::string, std::string>& metadata) {
  const std::string header = BuildHeader(ready, metadata);
  const std::string temp = absl::StrCat(path, ".tmp.", ::getpid());
  std::FILE* f = std::fopen(temp.c_str(), "wb");
  if (f == nullptr) return absl::InternalError(absl::StrCat(temp, ": cannot create: ", std::strerror(errno)));

  absl::Status status;
  unsigned char length[8];
  for (int i = 0; i < 8; ++i) length[i] = static_cast<unsigned char>(static_cast<uint64_t>(header.size()) >> (8 * i));
  status.Update(WriteAll(f, length, sizeof(length), temp));
  status.Update(WriteAll(f, header.data(), header.size(), temp));
  for (const auto& [name, tensor] : ready) {
    if (!status.ok()) break;
    status.Update(WriteAll(f, tensor.data_ptr(), tensor.numel() * tensor.element_size(), temp));
  }
  if (status.ok() && (std::fflush(f) != 0 || ::fsync(::fileno(f)) != 0)) {
    status = absl::InternalError(absl::StrCat(temp, ": flush failed: ", std::strerror(errno)));
  }
  if (std::fclose(f) != 0 && status.ok()) {
    status = absl::InternalError(absl::StrCat(temp, ": close failed: ", std::strerror(errno)));
  }
  std::error_code ec;
  if (status.ok()) {
    fs::rename(temp, path, ec);
    if (ec) status = absl::InternalError(absl::StrCat(path, ": rename from ", temp, " failed: ", ec.message()));
  }
  if (!status.ok()) fs::remove(temp, ec);
  return status;
}

absl::StatusOr<Json> ReadJsonFile(const std::string& path) {
  std::ifstream in(path);
  if (!in) return absl::NotFoundError(absl::StrCat(path, ": cannot open"));
  Json json = Json::parse(in, nullptr, /*allow_exceptions=*/false);
  if (json.is_discarded()) return absl::DataLossError(absl::StrCat(path, ": not valid JSON"));
  return json;
}

absl::StatusOr<TensorMap> LoadIndexed(const fs::path& index_path) {
  absl::StatusOr<Json> index = ReadJsonFile(index_path.string());
  if (!index.ok()) return index.status();
  if (!index->is_object() || !index->contains("weight_map") || !(*index)["weight_map"].is_object()) {
    return absl::DataLossError(absl::StrCat(index_path.string(), ": no \"weight_map\" object"));
  }
  // shard file -> the names the index puts there
  std::map<std::string, std::set<std::string>> shards;
  for (const auto& [name, file] : (*index)["weight_map"].items()) {
    if (!file.is_string()) {
      return absl::DataLossError(
          absl::StrCat(index_path.string(), ": weight_map entry '", name, "' is not a file name"));
    }
    const fs::path shard(file.get<std::string>());
    if (shard.is_absolute() || shard.has_parent_path()) {
      return absl::DataLossError(absl::StrCat(index_path.string(), ": weight_map entry '", name, "' names ",
                                              shard.string(), ", which is not a file beside the index"));
    }
    shards[shard.string()].insert(name);
  }

  TensorMap tensors;
  for (const auto& [file, names] : shards) {
    const std::string shard_path = (index_path.parent_path() / file).string();
    absl::StatusOr<SafetensorsFile> shard = ReadSafetensors(shard_path);
    if (!shard.ok()) return shard.status();
    for (auto& [name, tensor] : shard->tensors) {
      if (names.count(name) == 0) {
        return absl::DataLossError(
            absl::StrCat(shard_path, ": tensor '", name, "' is not listed for this file in ", index_path.string()));
      }
      tensors.emplace(name, std::move(tensor));
    }
    for (const std::string& name : names) {
      if (tensors.count(name) == 0) {
        return absl::DataLossError(absl::StrCat(index_path.string(), " lists tensor '", name, "' in ", file,
                                                ", but that file does not hold it"));
      }
    }
  }
  return tensors;
}

}  // namespace

absl::StatusOr<SafetensorsFile> ReadSafetensors(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::NotFoundError(absl::StrCat(path, ": cannot open"));
  std::error_code ec;
  const uint64_t file_size = fs::file_size(path, ec);
  if (ec) return absl::NotFoundError(absl::StrCat(path, ": ", ec.message()));

  // The length first, to learn how much more to read; then the header, parsed and validated in common/.
  // A short read leaves a short prefix, which the parser reports (as too short, or as a truncated header).
  std::string prefix(8, '\0');
  in.read(prefix.data(), 8);
  prefix.resize(static_cast<size_t>(in.gcount()));
  absl::StatusOr<uint64_t> header_size = ParseSafetensorsHeaderLength(prefix, file_size, path);
  if (!header_size.ok()) return header_size.status();
  prefix.resize(8 + *header_size);
  in.read(prefix.data() + 8, static_cast<std::streamsize>(*header_size));
  prefix.resize(8 + static_cast<size_t>(in.gcount()));
  absl::StatusOr<SafetensorsHeader> header = ParseSafetensorsHeader(prefix, file_size, path);
  if (!header.ok()) return header.status();

  // The entries are in file order, so the data is read front to back.
  SafetensorsFile result;
  result.metadata = std::move(header->metadata);
  for (const SafetensorsEntry& e : header->tensors) {
    torch::Tensor tensor = torch::empty(e.shape, torch::TensorOptions().dtype(TorchType(e.dtype)));
    const uint64_t bytes = e.end - e.begin;
    if (bytes > 0 && !in.read(static_cast<char*>(tensor.data_ptr()), static_cast<std::streamsize>(bytes))) {
      return absl::DataLossError(absl::StrCat(path, ": tensor '", e.name, "': data truncated"));
    }
    result.tensors.emplace(e.name, std::move(tensor));
  }
  return result;
}

absl::Status WriteSafetensors(const std::string& path, const TensorMap& tensors,
                              const std::map<std::string, std::string>& metadata) {
  absl::StatusOr<TensorMap> ready = PrepareForWriting(tensors);
  if (!ready.ok()) return WithFile(path, ready.status());
  return WriteFile(path, *ready, metadata);
}

absl::StatusOr<TensorMap> LoadSafetensorsCheckpoint(const std::string& path) {
  std::error_code ec;
  const fs::path p(path);
  if (fs::is_directory(p, ec)) {
    if (fs::exists(p / kSafetensorsFileName, ec)) return LoadSafetensorsCheckpoint((p / kSafetensorsFileName).string());
    if (fs::exists(p / kSafetensorsIndexFileName, ec)) return LoadIndexed(p / kSafetensorsIndexFileName);
    return absl::NotFoundError(
        absl::StrCat(path, ": holds neither ", kSafetensorsFileName, " nor ", kSafetensorsIndexFileName));
  }
  if (p.extension() == ".json") return LoadIndexed(p);
  absl::StatusOr<SafetensorsFile> file = ReadSafetensors(path);
  if (!file.ok()) return file.status();
  return std::move(file->tensors);
}

absl::Status WriteSafetensorsCheckpoint(const std::string& dir, const TensorMap& tensors, int64_t max_shard_bytes) {
  if (max_shard_bytes <= 0) return absl::InvalidArgumentError("max_shard_bytes must be positive");
  absl::StatusOr<TensorMap> ready = PrepareForWriting(tensors);
  if (!ready.ok()) return WithFile(dir, ready.status());
  std::error_code ec;
  fs::create_directories(dir, ec);
  if (ec) return absl::InternalError(absl::StrCat(dir, ": cannot create directory: ", ec.message()));
  const fs::path root(dir);

  // Fill shards in name order, starting a new one when the next tensor would not fit.
  std::vector<TensorMap> shards(1);
  int64_t shard_bytes = 0;
  int64_t total_bytes = 0;
  for (const auto& [name, tensor] : *ready) {
    const int64_t bytes = tensor.numel() * tensor.element_size();
    if (shard_bytes > 0 && shard_bytes + bytes > max_shard_bytes) {
      shards.emplace_back();
      shard_bytes = 0;
    }
    shards.back().emplace(name, tensor);
    shard_bytes += bytes;
    total_bytes += bytes;
  }

  // Remove the other layout's entry point, so a reader never sees a stale checkpoint.
  if (shards.size() == 1) {
    fs::remove(root / kSafetensorsIndexFileName, ec);
    return WriteFile((root / kSafetensorsFileName).string(), shards[0], {{"format", "pt"}});
  }
  fs::remove(root / kSafetensorsFileName, ec);
  Json weight_map = Json::object();
  const int n = static_cast<int>(shards.size());
  for (int k = 0; k < n; ++k) {
    const std::string file = absl::StrFormat("model-%05d-of-%05d.safetensors", k + 1, n);
    if (absl::Status s = WriteFile((root / file).string(), shards[k], {{"format", "pt"}}); !s.ok()) return s;
    for (const auto& [name, tensor] : shards[k]) weight_map[name] = file;
  }
  const Json index = {{"metadata", {{"total_size", total_bytes}}}, {"weight_map", weight_map}};
  const std::string index_path = (root / kSafetensorsIndexFileName).string();
  const std::string temp = absl::StrCat(index_path, ".tmp.", ::getpid());
  {
    std::ofstream out(temp);
    out << index.dump(2) << "\n";
    if (!out.flush()) return absl::InternalError(absl::StrCat(temp, ": write failed"));
  }
  fs::rename(temp, index_path, ec);
  if (ec) return absl::InternalError(absl::StrCat(index_path, ": rename failed: ", ec.message()));
  return absl::OkStatus();
}

}  // namespace tpcoord
