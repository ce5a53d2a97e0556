// Errors name their job once, however many layers add it, and DeepSpeed's texts stay exact.
#include "common/deepspeed_error.h"

#include <gtest/gtest.h>

namespace tpcoord {
namespace {

TEST(WithJobContextTest, NamesTheJobOnceHoweverManyLayersAddIt) {
  const absl::Status once = WithJobContext("job-b", absl::DataLossError("the stored state is corrupt"));
  EXPECT_EQ(once.message(), "job job-b: the stored state is corrupt");
  EXPECT_EQ(WithJobContext("job-b", once), once);
  EXPECT_EQ(WithJobContext("job-b", WithJobContext("job-b", once)).message(), "job job-b: the stored state is corrupt");
  // A message written with the job in it already is not named again.
  EXPECT_EQ(WithJobContext("j", absl::NotFoundError("job j does not exist")).message(), "job j does not exist");
  EXPECT_EQ(WithJobContext("j", absl::NotFoundError("job jx does not exist")).message(), "job j: job jx does not exist");
  EXPECT_TRUE(WithJobContext("j", absl::OkStatus()).ok());
}

TEST(WithJobContextTest, KeepsDeepSpeedTextsExactWithTheContextBeside) {
  const absl::Status ds = WithJobContext("j", DeepSpeedError("Conflicting tp_model_init arguments"), "recorded x");
  EXPECT_EQ(ds.message(), "Conflicting tp_model_init arguments");
  EXPECT_EQ(ErrorContext(ds), "job j: recorded x");
  EXPECT_EQ(ErrorContext(WithJobContext("j", ds, "other")), "job j: recorded x");
}

}  // namespace
}  // namespace tpcoord
