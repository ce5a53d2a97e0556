#include "worker/model/safetensors.h"

#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <limits>
#include <string>

#include <torch/torch.h>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace tpcoord {
namespace {

namespace fs = std::filesystem;
using ::testing::AllOf;
using ::testing::ElementsAre;
using ::testing::HasSubstr;

// Bitwise equality, NaN payloads and signed zeros included.
bool BitEqual(const torch::Tensor& a, const torch::Tensor& b) {
  if (a.scalar_type() != b.scalar_type() || a.sizes() != b.sizes()) return false;
  const torch::Tensor ca = a.contiguous();
  const torch::Tensor cb = b.contiguous();
  return std::memcmp(ca.data_ptr(), cb.data_ptr(), ca.numel() * ca.element_size()) == 0;
}

class SafetensorsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    torch::set_num_threads(1);
    dir_ = fs::path(::testing::TempDir()) /
           absl::StrCat("safetensors_test_", ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::remove_all(dir_);
    fs::create_directories(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }

  std::string Path(const std::string& name) const { return (dir_ / name).string(); }

  // Writes a file from a hand-made header and data section (the test's own encoder).
  void WriteRaw(const std::string& name, const std::string& header, const std::string& data) const {
    std::ofstream out(Path(name), std::ios::binary);
    const uint64_t n = header.size();
    for (int i = 0; i < 8; ++i) out.put(static_cast<char>((n >> (8 * i)) & 0xff));
    out << header << data;
  }

  std::string ReadBytes(const std::string& name) const {
    std::ifstream in(Path(name), std::ios::binary);
    return std::string(std::istreambuf_iterator<char>(in), {});
  }

  fs::path dir_;
};

// Values that a lossy path would change: signed zero, infinities, NaN, subnormals, extremes.
torch::Tensor AwkwardValues(torch::ScalarType type) {
  torch::manual_seed(7);
  torch::Tensor t = torch::randn({5, 7}).mul(100).to(type);
  const double max = type == torch::kHalf ? 65504.0 : type == torch::kBFloat16 ? 3.0e38 : 3.4e38;
  t[0][0] = -0.0;
  t[0][1] = std::numeric_limits<double>::infinity();
  t[0][2] = -std::numeric_limits<double>::infinity();
  t[0][3] = std::numeric_limits<double>::quiet_NaN();
  t[0][4] = type == torch::kFloat ? 1e-40 : 1e-7;  // subnormal
  t[0][5] = max;
  return t;
}

TEST_F(SafetensorsTest, RoundTripIsBitExactForEveryDtype) {
  TensorMap tensors;
  tensors["f32"] = AwkwardValues(torch::kFloat);
  tensors["bf16"] = AwkwardValues(torch::kBFloat16);
  tensors["f16"] = AwkwardValues(torch::kHalf);
  tensors["scalar"] = torch::tensor(3.5f).reshape({});
  tensors["empty"] = torch::zeros({0, 4}, torch::kBFloat16);
  tensors["strided"] = torch::arange(12, torch::kFloat).reshape({3, 4}).t();  // written contiguous
  ASSERT_TRUE(WriteSafetensors(Path("a.safetensors"), tensors).ok());

  absl::StatusOr<SafetensorsFile> read = ReadSafetensors(Path("a.safetensors"));
  ASSERT_TRUE(read.ok()) << read.status();
  ASSERT_EQ(read->tensors.size(), tensors.size());
  for (const auto& [name, tensor] : tensors) {
    ASSERT_EQ(read->tensors.count(name), 1u) << name;
    EXPECT_TRUE(BitEqual(read->tensors[name], tensor)) << name;
  }
  EXPECT_EQ(read->metadata, (std::map<std::string, std::string>{{"format", "pt"}}));
}

TEST_F(SafetensorsTest, WrittenLayoutIsTheSafetensorsFormat) {
  TensorMap tensors;
  tensors["b"] = torch::tensor({1.0f, 2.0f});
  tensors["a"] = torch::tensor({1.0f}).to(torch::kBFloat16);
  ASSERT_TRUE(WriteSafetensors(Path("x.safetensors"), tensors).ok());
  const std::string bytes = ReadBytes("x.safetensors");

  uint64_t n = 0;
  for (int i = 0; i < 8; ++i) n |= static_cast<uint64_t>(static_cast<unsigned char>(bytes[i])) << (8 * i);
  EXPECT_EQ(n % 8, 0u) << "header padded so the data section is 8-byte aligned";
  const std::string header = bytes.substr(8, n);
  EXPECT_EQ(header.front(), '{');
  EXPECT_THAT(header, AllOf(HasSubstr(R"("a":{"data_offsets":[0,2],"dtype":"BF16","shape":[1]})"),
                            HasSubstr(R"("b":{"data_offsets":[2,10],"dtype":"F32","shape":[2]})"),
                            HasSubstr(R"("__metadata__":{"format":"pt"})")));
  ASSERT_EQ(bytes.size(), 8 + n + 10);
  // bf16 1.0 is 0x3f80, little-endian; then the two floats.
  EXPECT_EQ(static_cast<unsigned char>(bytes[8 + n]), 0x80);
  EXPECT_EQ(static_cast<unsigned char>(bytes[8 + n + 1]), 0x3f);
  float b[2];
  std::memcpy(b, bytes.data() + 8 + n + 2, 8);
  EXPECT_EQ(b[0], 1.0f);
  EXPECT_EQ(b[1], 2.0f);
}

TEST_F(SafetensorsTest, ReadsAHandWrittenFile) {
  // F16 [2]: 1.0 = 0x3c00, -2.0 = 0xc000; F32 [1] 0.5; the keys are not in offset order.
  std::string data;
  data += std::string("\x00\x3c\x00\xc0", 4);
  const float half = 0.5f;
  data.append(reinterpret_cast<const char*>(&half), 4);
  WriteRaw("h.safetensors",
           R"({"y":{"dtype":"F32","shape":[1],"data_offsets":[4,8]},)"
           R"( "x":{"dtype":"F16","shape":[2],"data_offsets":[0,4]}}   )",
           data);
  absl::StatusOr<SafetensorsFile> read = ReadSafetensors(Path("h.safetensors"));
  ASSERT_TRUE(read.ok()) << read.status();
  EXPECT_TRUE(read->metadata.empty());
  EXPECT_TRUE(torch::equal(read->tensors["x"], torch::tensor({1.0f, -2.0f}).to(torch::kHalf)));
  EXPECT_TRUE(torch::equal(read->tensors["y"], torch::tensor({0.5f})));
}

TEST_F(SafetensorsTest, RejectsUnsupportedDtypesNamingTheTensor) {
  WriteRaw("i.safetensors", R"({"model.ids":{"dtype":"I64","shape":[1],"data_offsets":[0,8]}})", std::string(8, '\0'));
  absl::Status status = ReadSafetensors(Path("i.safetensors")).status();
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(status.message()),
              AllOf(HasSubstr("i.safetensors"), HasSubstr("model.ids"), HasSubstr("I64")));

  TensorMap ints;
  ints["token_ids"] = torch::arange(3);
  absl::Status write = WriteSafetensors(Path("w.safetensors"), ints);
  EXPECT_EQ(write.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(write.message()), HasSubstr("token_ids"));
}

TEST_F(SafetensorsTest, RejectsOffsetsThatDisagreeWithTheShape) {
  WriteRaw("s.safetensors", R"({"w":{"dtype":"F32","shape":[2,3],"data_offsets":[0,20]}})", std::string(20, '\0'));
  absl::Status status = ReadSafetensors(Path("s.safetensors")).status();
  EXPECT_EQ(status.code(), absl::StatusCode::kDataLoss);
  EXPECT_THAT(std::string(status.message()),
              AllOf(HasSubstr("s.safetensors"), HasSubstr("'w'"), HasSubstr("[2, 3]"), HasSubstr("needs 24")));
}

TEST_F(SafetensorsTest, RejectsOverlapsGapsAndTruncation) {
  WriteRaw(
      "overlap.safetensors",
      R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}})",
      std::string(8, '\0'));
  EXPECT_THAT(std::string(ReadSafetensors(Path("overlap.safetensors")).status().message()), HasSubstr("'b'"));

  WriteRaw("trunc.safetensors", R"({"a":{"dtype":"F32","shape":[4],"data_offsets":[0,16]}})", std::string(12, '\0'));
  absl::Status trunc = ReadSafetensors(Path("trunc.safetensors")).status();
  EXPECT_EQ(trunc.code(), absl::StatusCode::kDataLoss);
  EXPECT_THAT(std::string(trunc.message()), HasSubstr("trunc.safetensors"));

  WriteRaw("garbage.safetensors", "not json", "");
  EXPECT_EQ(ReadSafetensors(Path("garbage.safetensors")).status().code(), absl::StatusCode::kDataLoss);

  std::ofstream(Path("short.safetensors")) << "abc";
  EXPECT_EQ(ReadSafetensors(Path("short.safetensors")).status().code(), absl::StatusCode::kDataLoss);

  EXPECT_EQ(ReadSafetensors(Path("missing.safetensors")).status().code(), absl::StatusCode::kNotFound);
}

TEST_F(SafetensorsTest, ShardedCheckpointRoundTripsThroughTheIndex) {
  TensorMap tensors;
  for (int i = 0; i < 5; ++i) tensors[absl::StrCat("layer.", i, ".weight")] = torch::randn({8, 8}).to(torch::kBFloat16);
  // 128 bytes per tensor, at most 300 bytes per shard: 2 + 2 + 1.
  ASSERT_TRUE(WriteSafetensorsCheckpoint(dir_.string(), tensors, 300).ok());
  EXPECT_TRUE(fs::exists(dir_ / "model-00001-of-00003.safetensors"));
  EXPECT_TRUE(fs::exists(dir_ / "model-00003-of-00003.safetensors"));
  EXPECT_FALSE(fs::exists(dir_ / "model.safetensors"));

  std::ifstream index_file(dir_ / "model.safetensors.index.json");
  const std::string index((std::istreambuf_iterator<char>(index_file)), {});
  EXPECT_THAT(index, AllOf(HasSubstr(R"("total_size": 640)"),
                           HasSubstr(R"("layer.4.weight": "model-00003-of-00003.safetensors")")));

  absl::StatusOr<TensorMap> loaded = LoadSafetensorsCheckpoint(dir_.string());
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  ASSERT_EQ(loaded->size(), tensors.size());
  for (const auto& [name, t] : tensors) EXPECT_TRUE(BitEqual(loaded->at(name), t)) << name;
  // The index file itself is also accepted as the path.
  EXPECT_TRUE(LoadSafetensorsCheckpoint((dir_ / "model.safetensors.index.json").string()).ok());

  // Rewriting the same directory as a single file removes the index, so no reader sees stale shards.
  ASSERT_TRUE(WriteSafetensorsCheckpoint(dir_.string(), tensors).ok());
  EXPECT_FALSE(fs::exists(dir_ / "model.safetensors.index.json"));
  loaded = LoadSafetensorsCheckpoint(dir_.string());
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  EXPECT_EQ(loaded->size(), tensors.size());
}

TEST_F(SafetensorsTest, IndexThatDisagreesWithItsShardsIsAnErrorNamingTheTensor) {
  TensorMap a;
  a["model.embed_tokens.weight"] = torch::ones({2, 2});
  ASSERT_TRUE(WriteSafetensors(Path("model-00001-of-00002.safetensors"), a).ok());
  TensorMap b;
  b["lm_head.weight"] = torch::ones({2, 2});
  ASSERT_TRUE(WriteSafetensors(Path("model-00002-of-00002.safetensors"), b).ok());

  std::ofstream(Path("model.safetensors.index.json"))
      << R"({"metadata":{"total_size":32},"weight_map":{)"
      << R"("model.embed_tokens.weight":"model-00001-of-00002.safetensors",)"
      << R"("lm_head.weight":"model-00002-of-00002.safetensors",)"
      << R"("model.norm.weight":"model-00002-of-00002.safetensors"}})";
  absl::Status missing = LoadSafetensorsCheckpoint(dir_.string()).status();
  EXPECT_EQ(missing.code(), absl::StatusCode::kDataLoss);
  EXPECT_THAT(std::string(missing.message()), AllOf(HasSubstr("model.norm.weight"), HasSubstr("model-00002-of-00002")));

  a["stray.weight"] = torch::ones({1});
  ASSERT_TRUE(WriteSafetensors(Path("model-00001-of-00002.safetensors"), a).ok());
  std::ofstream(Path("model.safetensors.index.json"))
      << R"({"weight_map":{"model.embed_tokens.weight":"model-00001-of-00002.safetensors",)"
      << R"("lm_head.weight":"model-00002-of-00002.safetensors"}})";
  absl::Status unlisted = LoadSafetensorsCheckpoint(dir_.string()).status();
  EXPECT_EQ(unlisted.code(), absl::StatusCode::kDataLoss);
  EXPECT_THAT(std::string(unlisted.message()), AllOf(HasSubstr("stray.weight"), HasSubstr("model-00001-of-00002")));

  std::ofstream(Path("model.safetensors.index.json")) << R"({"weight_map":{"x":"../elsewhere.safetensors"}})";
  EXPECT_EQ(LoadSafetensorsCheckpoint(dir_.string()).status().code(), absl::StatusCode::kDataLoss);
}

TEST_F(SafetensorsTest, DirectoryWithoutACheckpointIsNotFound) {
  absl::Status status = LoadSafetensorsCheckpoint(dir_.string()).status();
  EXPECT_EQ(status.code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(std::string(status.message()), HasSubstr("model.safetensors"));
}

}  // namespace
}  // namespace tpcoord
