// libFuzzer target: the input is a DeepSpeed config as a worker would send it. Parsing, the merge against
// several recorded tp_model_init arguments, the agreement diff and dumping must return (a Status or a
// value) for every input, never crash, throw or recurse out of stack.
#include <cstddef>
#include <cstdint>
#include <cstdlib>

#include "common/config_merge.h"
#include "common/ds_config.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const absl::string_view text(reinterpret_cast<const char*>(data), size);
  absl::StatusOr<nlohmann::json> config = tpcoord::ParseDsConfig(text);
  if (!config.ok()) {
    if (config.status().code() != absl::StatusCode::kInvalidArgument) std::abort();
    return 0;
  }
  const std::optional<tpcoord::TpInitArgs> records[] = {
      std::nullopt,
      tpcoord::TpInitArgs{1, tpcoord::Dtype::kFloat32, std::nullopt},
      tpcoord::TpInitArgs{2, tpcoord::Dtype::kBFloat16, std::vector<int>{0, 1}},
      tpcoord::TpInitArgs{4, tpcoord::Dtype::kFloat16, std::nullopt},
  };
  (void)tpcoord::InferConfigDtype(*config);
  for (const auto& record : records) {
    for (bool has_mpu : {false, true}) {
      absl::StatusOr<nlohmann::json> merged = tpcoord::MergeTpInitIntoConfig(record, *config, has_mpu);
      if (!merged.ok()) continue;
      (void)merged->dump();
      (void)tpcoord::FirstDifference(*config, *merged);
      // A merged config is itself a config every worker could send.
      if (!tpcoord::ParseDsConfig(merged->dump()).ok()) std::abort();
    }
  }
  return 0;
}
