// tpctl as a user runs it, against a real coordinator: exit codes, stdout and the server's message on
// stderr.
#include <gtest/gtest.h>

#include <fstream>

#include "absl/strings/match.h"
#include "nlohmann/json.hpp"
#include "tests/support/coordinator_test.h"

namespace tpcoord {
namespace {


class TpctlTest : public testing::CoordinatorTest {
 protected:
  testing::RunResult Tpctl(std::vector<std::string> args) {
    std::vector<std::string> argv = {testing::BinPath("coordinator/tpctl"), "--coordinator", coordinator_->address()};
    argv.insert(argv.end(), args.begin(), args.end());
    absl::StatusOr<testing::RunResult> result = testing::Run(argv, std::chrono::seconds(30), testing::TokenEnv());
    EXPECT_TRUE(result.ok()) << result.status();
    return result.ok() ? *result : testing::RunResult{};
  }
};

TEST_F(TpctlTest, RecordConflictMergeJobsJobHealth) {
  testing::RunResult record = Tpctl({"record", "--job", "llama-run1", "--tp-size", "2", "--dtype", "bf16"});
  EXPECT_EQ(record.exit_code, 0) << record.err;
  EXPECT_EQ(record.out, "recorded tp_size=2 dtype=torch.bfloat16 tp_group=None\n");

  testing::RunResult conflict = Tpctl({"record", "--job", "llama-run1", "--tp-size", "4", "--dtype", "bf16"});
  EXPECT_EQ(conflict.exit_code, 1);
  EXPECT_TRUE(absl::StartsWith(conflict.err, "Conflicting tp_model_init arguments detected across multiple calls.\n"))
      << conflict.err;

  const std::string config = testing::MakeTempDir("tpctl-config") + "/ds_config.json";
  std::ofstream(config) << R"({"train_batch_size": 8, "bf16": {"enabled": true}})";
  testing::RunResult merge = Tpctl({"merge", "--job", "llama-run1", "--config", config});
  EXPECT_EQ(merge.exit_code, 0) << merge.err;
  EXPECT_EQ(nlohmann::json::parse(merge.out)["tensor_parallel"]["tp"]["tp_size"], 2);

  std::ofstream(config) << R"({"fp16": {"enabled": true}})";
  testing::RunResult bad_merge = Tpctl({"merge", "--job", "llama-run1", "--config", config});
  EXPECT_EQ(bad_merge.exit_code, 1);
  EXPECT_TRUE(absl::StartsWith(bad_merge.err,
                               "Conflicting dtype: config uses torch.float16 but tp_model_init requested torch.bfloat16."));

  testing::RunResult jobs = Tpctl({"jobs"});
  EXPECT_EQ(jobs.exit_code, 0);
  EXPECT_TRUE(absl::StrContains(jobs.out, "llama-run1")) << jobs.out;

  testing::RunResult job = Tpctl({"job", "llama-run1"});
  EXPECT_EQ(job.exit_code, 0);
  EXPECT_TRUE(absl::StrContains(job.out, "tp_model_init: tp_size=2 dtype=torch.bfloat16 tp_group=None")) << job.out;

  testing::RunResult health = Tpctl({"health"});
  EXPECT_EQ(health.exit_code, 0);
  EXPECT_EQ(health.out, "SERVING\n");
}

// tpctl close: the job shows closed (jobs: the phase column; job: a "closed:" line), and Joins are refused.
TEST_F(TpctlTest, CloseShowsInJobsAndJob) {
  testing::RunResult close = Tpctl({"close", "rdzv", "--reason", "torchrun on host h finished"});
  EXPECT_EQ(close.exit_code, 0) << close.err;
  EXPECT_EQ(close.out, "closed job rdzv\n");
  testing::RunResult jobs = Tpctl({"jobs"});
  EXPECT_EQ(jobs.exit_code, 0);
  EXPECT_TRUE(absl::StrContains(jobs.out, "rdzv                             0          closed ")) << jobs.out;
  testing::RunResult job = Tpctl({"job", "rdzv"});
  EXPECT_EQ(job.exit_code, 0);
  EXPECT_TRUE(absl::StrContains(job.out, "\n  closed: torchrun on host h finished; no new generation starts\n"))
      << job.out;
  testing::RunResult bad = Tpctl({"close", "rdzv", "--reason", "two\nlines"});
  EXPECT_EQ(bad.exit_code, 1);
  EXPECT_TRUE(absl::StartsWith(bad.err, "job rdzv: reason \"two\\nlines\" contains the control character \"\\n\" at "
                                        "byte 3; give printable UTF-8 text\n"))
      << bad.err;
}

TEST_F(TpctlTest, ErrorsAndUsage) {
  testing::RunResult missing = Tpctl({"job", "unknown-job"});
  EXPECT_EQ(missing.exit_code, 1);
  EXPECT_EQ(missing.err, "job unknown-job does not exist\n");
  testing::RunResult dtype = Tpctl({"record", "--job", "j", "--tp-size", "2", "--dtype", "fp8"});
  EXPECT_EQ(dtype.exit_code, 2);
  EXPECT_TRUE(absl::StrContains(dtype.err, "unknown dtype \"fp8\"")) << dtype.err;
  EXPECT_EQ(Tpctl({"frobnicate"}).exit_code, 2);
  auto unreachable = testing::Run({testing::BinPath("coordinator/tpctl"), "--coordinator", "127.0.0.1:1",
                                   "--timeout", "1s", "health"},
                                  std::chrono::seconds(30), testing::TokenEnv());
  ASSERT_TRUE(unreachable.ok());
  EXPECT_EQ(unreachable->exit_code, 1);
}

}  // namespace
}  // namespace tpcoord
