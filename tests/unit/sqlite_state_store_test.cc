#include <gtest/gtest.h>

#include <filesystem>

#include "coordinator/state_store.h"

namespace tpcoord {
namespace {

PersistedJob Sample(const std::string& id) {
  PersistedJob job;
  job.job_id = id;
  job.tp_init = TpInitRecord{2, Dtype::kBFloat16, true, {{0, 1}, {2, 3}}};
  job.merged_config = R"({"tensor_parallel":{"autotp_size":2}})";
  job.generation = 7;
  job.phase = JobPhase::kRunning;
  job.world_size = 4;
  job.end_reason = "";
  return job;
}

TEST(SqliteStateStoreTest, SavesAndLoadsJobsAcrossReopen) {
  const std::string dir = testing::TempDir() + "/state_store_test";
  std::filesystem::remove_all(dir);
  std::filesystem::create_directories(dir);
  const std::string path = dir + "/coordinator.db";
  {
    auto store = *OpenSqliteStateStore(path);
    ASSERT_TRUE(store->SaveJob(Sample("b")).ok());
    PersistedJob plain;
    plain.job_id = "a";
    ASSERT_TRUE(store->SaveJob(plain).ok());
    PersistedJob updated = Sample("b");
    updated.generation = 8;
    updated.phase = JobPhase::kFailed;
    updated.end_reason = "rank 1 (host x) missed its heartbeat lease of 10s";
    ASSERT_TRUE(store->SaveJob(updated).ok());
  }
  auto store = *OpenSqliteStateStore(path);
  std::vector<PersistedJob> jobs = *store->LoadJobs();
  ASSERT_EQ(jobs.size(), 2u);
  EXPECT_EQ(jobs[0].job_id, "a");
  EXPECT_FALSE(jobs[0].tp_init.has_value());
  EXPECT_EQ(jobs[1].job_id, "b");
  ASSERT_TRUE(jobs[1].tp_init.has_value());
  EXPECT_EQ(jobs[1].tp_init->tp_size, 2);
  EXPECT_EQ(jobs[1].tp_init->dtype, Dtype::kBFloat16);
  EXPECT_EQ(jobs[1].tp_init->tp_groups, std::vector<RankList>({{0, 1}, {2, 3}}));
  EXPECT_EQ(jobs[1].merged_config, R"({"tensor_parallel":{"autotp_size":2}})");
  EXPECT_EQ(jobs[1].generation, 8u);
  EXPECT_EQ(jobs[1].phase, JobPhase::kFailed);
  EXPECT_EQ(jobs[1].world_size, 4);
  EXPECT_EQ(jobs[1].end_reason, "rank 1 (host x) missed its heartbeat lease of 10s");
}

TEST(SqliteStateStoreTest, UnopenablePathIsAnError) {
  absl::StatusOr<std::unique_ptr<StateStore>> store = OpenSqliteStateStore("/nonexistent-dir/x/y.db");
  ASSERT_FALSE(store.ok());
  EXPECT_NE(store.status().message().find("cannot open state database"), absl::string_view::npos);
}

}  // namespace
}  // namespace tpcoord
