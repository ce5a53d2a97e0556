#include "worker/training/checkpoint.h"

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "nlohmann/json.hpp"
#include "worker/model/safetensors.h"

namespace tpcoord {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;

constexpr char kOptimizerFile[] = "optimizer.safetensors";
constexpr char kStateFile[] = "trainer_state.json";

absl::Status WriteText(const fs::path& path, const std::string& text) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out << text;
  out.close();
  if (!out) return absl::UnavailableError(absl::StrCat("cannot write ", path.string()));
  return absl::OkStatus();
}

}  // namespace

absl::Status WriteCheckpoint(const std::string& dir, const LlamaConfig& config, Dtype dtype, const TensorMap& model,
                             const TensorMap& optimizer, const TrainerState& state) {
  const fs::path final_dir(dir);
  const fs::path tmp = final_dir.string() + ".tmp";
  std::error_code ec;
  fs::remove_all(tmp, ec);
  fs::create_directories(tmp, ec);
  if (ec) return absl::UnavailableError(absl::StrCat("cannot create ", tmp.string(), ": ", ec.message()));
  if (absl::Status s = WriteSafetensorsCheckpoint(tmp.string(), model); !s.ok()) return s;
  if (absl::Status s = WriteText(tmp / "config.json", config.ToJson(dtype)); !s.ok()) return s;
  if (!optimizer.empty()) {
    if (absl::Status s = WriteSafetensors((tmp / kOptimizerFile).string(), optimizer); !s.ok()) return s;
  }
  const json trainer = {{"step", state.step},           {"optimizer_steps", state.optimizer_steps},
                        {"loss_scale", state.loss_scale}, {"tp_size", state.tp_size},
                        {"world_size", state.world_size}, {"dtype", state.dtype}, {"job", state.job}};
  if (absl::Status s = WriteText(tmp / kStateFile, trainer.dump(2) + "\n"); !s.ok()) return s;
  fs::remove_all(final_dir, ec);
  fs::rename(tmp, final_dir, ec);
  if (ec) return absl::UnavailableError(absl::StrCat("cannot move the checkpoint into ", dir, ": ", ec.message()));
  return absl::OkStatus();
}

absl::StatusOr<Checkpoint> ReadCheckpoint(const std::string& dir) {
  const fs::path root(dir);
  Checkpoint checkpoint;
  absl::StatusOr<LlamaConfig> config = LlamaConfig::FromFile((root / "config.json").string());
  if (!config.ok()) return config.status();
  checkpoint.config = *config;
  absl::StatusOr<TensorMap> model = LoadSafetensorsCheckpoint(dir);
  if (!model.ok()) return model.status();
  checkpoint.model = *std::move(model);
  if (fs::exists(root / kOptimizerFile)) {
    absl::StatusOr<SafetensorsFile> optimizer = ReadSafetensors((root / kOptimizerFile).string());
    if (!optimizer.ok()) return optimizer.status();
    checkpoint.optimizer = std::move(optimizer->tensors);
  }
  if (fs::exists(root / kStateFile)) {
    std::ifstream in(root / kStateFile);
    try {
      const json j = json::parse(in);
      TrainerState state;
      state.step = j.at("step").get<int64_t>();
      state.optimizer_steps = j.at("optimizer_steps").get<int64_t>();
      state.loss_scale = j.at("loss_scale").get<double>();
      state.tp_size = j.at("tp_size").get<int>();
      state.world_size = j.at("world_size").get<int>();
      state.dtype = j.at("dtype").get<std::string>();
      state.job = j.value("job", "");
      checkpoint.state = state;
    } catch (const json::exception& e) {
      return absl::DataLossError(absl::StrCat((root / kStateFile).string(), " is malformed: ", e.what()));
    }
  }
  return checkpoint;
}

namespace {

// Job `job`'s complete "checkpoint-<step>" directories under `output_dir`, oldest first.
std::vector<SavedCheckpoint> SavedCheckpoints(const std::string& output_dir, const std::string& job) {
  std::vector<SavedCheckpoint> saved;
  std::error_code ec;
  for (const fs::directory_entry& entry : fs::directory_iterator(output_dir, ec)) {
    const std::string name = entry.path().filename().string();
    int64_t step = 0;
    if (!absl::StartsWith(name, "checkpoint-") || !absl::SimpleAtoi(name.substr(11), &step) || step <= 0) continue;
    std::ifstream in(entry.path() / kStateFile);
    const json state = json::parse(in, nullptr, /*allow_exceptions=*/false);
    if (!state.is_object() || state.value("job", "") != job) continue;
    saved.push_back(SavedCheckpoint{step, entry.path().string()});
  }
  std::sort(saved.begin(), saved.end(),
            [](const SavedCheckpoint& a, const SavedCheckpoint& b) { return a.step < b.step; });
  return saved;
}

}  // namespace

std::optional<SavedCheckpoint> NewestCheckpoint(const std::string& output_dir, const std::string& job) {
  std::vector<SavedCheckpoint> saved = SavedCheckpoints(output_dir, job);
  if (saved.empty()) return std::nullopt;
  return saved.back();
}

void PruneCheckpoints(const std::string& output_dir, const std::string& job, int keep) {
  std::vector<SavedCheckpoint> saved = SavedCheckpoints(output_dir, job);
  std::error_code ec;
  for (size_t i = 0; i + keep < saved.size(); ++i) fs::remove_all(saved[i].dir, ec);
}

}  // namespace tpcoord
