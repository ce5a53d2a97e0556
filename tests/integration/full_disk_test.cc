// A coordinator whose state directory (a small tmpfs) fills up while it serves: every call that must write
// answers RESOURCE_EXHAUSTED naming the state file and the operation (clients do not retry it), leaves no
// trace, and the coordinator neither dies (no mmap'd -shm file to SIGBUS on) nor forgets anything; once
// space is freed, calls succeed again. Mounting needs root (as CI runs); elsewhere the test is skipped.
#include <signal.h>

#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <thread>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "tests/support/coordinator_process.h"

namespace tpcoord {
namespace {

using testing::CoordinatorProcess;
using testing::Deadline;

class FullDiskTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = testing::MakeTempDir("full-disk") + "/state";
    std::filesystem::create_directories(dir_);
    auto mount = testing::Run({"/bin/mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", dir_}, std::chrono::seconds(30));
    if (!mount.ok() || mount->exit_code != 0) {
      GTEST_SKIP() << "cannot mount a tmpfs here (needs root): " << (mount.ok() ? mount->err : mount.status().ToString());
    }
    mounted_ = true;
  }
  void TearDown() override {
    coordinator_.reset();
    if (mounted_) (void)testing::Run({"/bin/umount", "-l", dir_}, std::chrono::seconds(30));
  }

  // Fills the file system but for `spare` bytes.
  void Fill(size_t spare) {
    const std::string filler = dir_ + "/filler";
    std::ofstream out(filler, std::ios::binary);
    const std::string block(4096, 'f');
    while (out.write(block.data(), block.size())) {
      out.flush();
      if (std::filesystem::space(dir_).available <= spare) break;
    }
  }

  size_t JobCount() {
    v1::ListJobsResponse jobs;
    EXPECT_TRUE(stub_->ListJobs(Deadline().get(), v1::ListJobsRequest(), &jobs).ok());
    return jobs.jobs_size();
  }

  std::string dir_;
  bool mounted_ = false;
  std::unique_ptr<CoordinatorProcess> coordinator_;
  std::unique_ptr<v1::Coordinator::Stub> stub_;
};

TEST_F(FullDiskTest, WritesFailCleanlyAndNothingIsLostOrInvented) {
  coordinator_ = *CoordinatorProcess::Start(dir_);
  stub_ = coordinator_->NewStub();
  ASSERT_TRUE(testing::RecordTpInit(*stub_, "before", 2, v1::DTYPE_BF16).ok());
  // A running generation of one with a store entry, to write to once the disk is full.
  v1::JoinRequest join;
  join.set_job_id("before");
  join.set_worker_id("w0");
  join.set_host("127.0.0.1");
  join.set_world_size(2);
  join.set_tp_size(2);
  v1::JoinResponse joined;
  auto second = coordinator_->NewStub();
  v1::JoinRequest join2 = join;
  join2.set_worker_id("w1");
  v1::JoinResponse joined2;
  std::thread other([&] { EXPECT_TRUE(second->Join(Deadline().get(), join2, &joined2).ok()); });
  ASSERT_TRUE(stub_->Join(Deadline().get(), join, &joined).ok());
  other.join();

  Fill(0);
  // New jobs cannot be recorded: a full disk, named with the state file; and no phantom job appears.
  for (int i = 0; i < 200; ++i) {
    grpc::Status full = testing::RecordTpInit(*stub_, absl::StrCat("new-", i), 2, v1::DTYPE_BF16);
    ASSERT_EQ(full.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED) << full.error_message();
    if (i == 0) {
      EXPECT_TRUE(absl::StrContains(full.error_message(),
                                    absl::StrCat("job new-0: state store ", dir_, "/coordinator.db: write of job new-0")))
          << full.error_message();
      EXPECT_TRUE(absl::StrContains(full.error_message(), "full")) << full.error_message();
    }
  }
  EXPECT_EQ(JobCount(), 1u);
  // A store write of the running generation fails the same way and changes nothing.
  v1::StoreSetRequest set;
  set.set_job_id("before");
  set.set_generation(1);
  set.set_key("k");
  set.set_value(std::string(64 << 10, 'v'));
  v1::StoreSetResponse set_resp;
  EXPECT_EQ(stub_->StoreSet(Deadline().get(), set, &set_resp).error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED);
  v1::StoreCheckRequest check;
  check.set_job_id("before");
  check.set_generation(1);
  check.add_keys("k");
  v1::StoreCheckResponse present;
  ASSERT_TRUE(stub_->StoreCheck(Deadline().get(), check, &present).ok());
  EXPECT_FALSE(present.all_present());
  EXPECT_TRUE(coordinator_->process().running());
  EXPECT_FALSE(std::filesystem::exists(dir_ + "/coordinator.db-shm"));

  // Space again: the same calls succeed, and everything is still there after a restart.
  std::filesystem::remove(dir_ + "/filler");
  ASSERT_TRUE(testing::RecordTpInit(*stub_, "after", 4, v1::DTYPE_BF16).ok());
  ASSERT_TRUE(stub_->StoreSet(Deadline().get(), set, &set_resp).ok());
  const std::string address = coordinator_->address();
  coordinator_->process().Signal(SIGKILL);
  (void)coordinator_->process().Wait(std::chrono::seconds(10));
  coordinator_ = *CoordinatorProcess::StartAt(address, dir_);
  stub_ = coordinator_->NewStub();
  EXPECT_EQ(JobCount(), 2u);
  ASSERT_TRUE(stub_->StoreCheck(Deadline().get(), check, &present).ok());
  EXPECT_TRUE(present.all_present());
}

}  // namespace
}  // namespace tpcoord
