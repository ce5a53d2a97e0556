#include "common/dtype.h"

#include <gtest/gtest.h>

#include "absl/strings/str_cat.h"

namespace tpcoord {
namespace {

TEST(DtypeTest, EveryAliasParses) {
  for (const char* name : {"fp32", "float32", "float", "torch.float32", "FP32", "Torch.Float32"}) {
    EXPECT_EQ(*ParseDtype(name), Dtype::kFloat32) << name;
  }
  for (const char* name : {"fp16", "float16", "half", "torch.float16", "HALF"}) {
    EXPECT_EQ(*ParseDtype(name), Dtype::kFloat16) << name;
  }
  for (const char* name : {"bf16", "bfloat16", "torch.bfloat16", "BF16"}) {
    EXPECT_EQ(*ParseDtype(name), Dtype::kBFloat16) << name;
  }
}

TEST(DtypeTest, UnknownNamesAreErrorsNamingTheValue) {
  for (const char* name : {"", "fp8", "float64", "double", "torch.int8", "bf16 ", "auto"}) {
    absl::StatusOr<Dtype> dtype = ParseDtype(name);
    ASSERT_FALSE(dtype.ok()) << name;
    EXPECT_EQ(dtype.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_NE(dtype.status().message().find(absl::StrCat("\"", name, "\"")), absl::string_view::npos)
        << dtype.status();
  }
}

TEST(DtypeTest, NamesAsDeepSpeedPrintsThem) {
  EXPECT_EQ(TorchDtypeName(Dtype::kFloat32), "torch.float32");
  EXPECT_EQ(TorchDtypeName(Dtype::kFloat16), "torch.float16");
  EXPECT_EQ(TorchDtypeName(Dtype::kBFloat16), "torch.bfloat16");
  EXPECT_EQ(ShortDtypeName(Dtype::kBFloat16), "bf16");
  EXPECT_EQ(DtypeSize(Dtype::kFloat32), 4);
  EXPECT_EQ(DtypeSize(Dtype::kBFloat16), 2);
}

}  // namespace
}  // namespace tpcoord
