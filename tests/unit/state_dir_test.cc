// The state directory refuses to start when its database went missing, was emptied, or was swapped for
// another; a new directory gets an identity, and a second coordinator is locked out.
#include "coordinator/store/state_dir.h"

#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>

namespace tpcoord {
namespace {

namespace fs = std::filesystem;

std::string FreshDir(const std::string& name) {
  const std::string dir = ::testing::TempDir() + "/" + name;
  fs::remove_all(dir);
  return dir;
}

void PutJob(const std::string& dir) {
  auto state = *StateDir::Open(dir);
  ASSERT_TRUE(state->store()->Write({StateWrite::Put("j/job", "x")}, "test").ok());
}

TEST(StateDirTest, ANewDirectoryGetsAnIdentityAndReopens) {
  const std::string dir = FreshDir("state_new");
  PutJob(dir);
  EXPECT_TRUE(fs::exists(dir + "/IDENTITY"));
  auto state = StateDir::Open(dir);
  ASSERT_TRUE(state.ok()) << state.status();
  EXPECT_EQ((*state)->store()->Scan("j/")->size(), 1u);
}

TEST(StateDirTest, OneCoordinatorPerDirectory) {
  const std::string dir = FreshDir("state_lock");
  auto first = *StateDir::Open(dir);
  absl::StatusOr<std::unique_ptr<StateDir>> second = StateDir::Open(dir);
  ASSERT_FALSE(second.ok());
  EXPECT_EQ(second.status().message(), "another tp-coordinator holds " + dir + "/LOCK; one coordinator per --state-dir");
}

TEST(StateDirTest, AnEmptiedDatabaseIsRefusedLoudly) {
  const std::string dir = FreshDir("state_empty");
  PutJob(dir);
  fs::resize_file(dir + "/coordinator.db", 0);
  fs::remove(dir + "/coordinator.db-wal");
  absl::StatusOr<std::unique_ptr<StateDir>> state = StateDir::Open(dir);
  ASSERT_FALSE(state.ok());
  EXPECT_EQ(state.status().code(), absl::StatusCode::kFailedPrecondition);
  const std::string message(state.status().message());
  EXPECT_NE(message.find("refusing to start with an empty state: " + dir + "/IDENTITY says this directory holds database "),
            std::string::npos) << message;
  EXPECT_NE(message.find(dir + "/coordinator.db (0 bytes) holds no state"), std::string::npos) << message;
  EXPECT_NE(message.find("delete " + dir + "/IDENTITY"), std::string::npos) << message;
}

TEST(StateDirTest, AMissingDatabaseIsRefusedAndNotRecreated) {
  const std::string dir = FreshDir("state_missing");
  PutJob(dir);
  fs::remove(dir + "/coordinator.db");
  fs::remove(dir + "/coordinator.db-wal");
  absl::StatusOr<std::unique_ptr<StateDir>> state = StateDir::Open(dir);
  ASSERT_FALSE(state.ok());
  EXPECT_NE(state.status().message().find(dir + "/coordinator.db is missing"), std::string::npos) << state.status();
  EXPECT_FALSE(fs::exists(dir + "/coordinator.db"));
  // Deleting IDENTITY is how an operator says "start over".
  fs::remove(dir + "/IDENTITY");
  auto fresh = StateDir::Open(dir);
  ASSERT_TRUE(fresh.ok()) << fresh.status();
  EXPECT_TRUE((*fresh)->store()->Scan("j/")->empty());
}

TEST(StateDirTest, ADatabaseFromAnotherDirectoryIsRefused) {
  const std::string a = FreshDir("state_a"), b = FreshDir("state_b");
  PutJob(a);
  PutJob(b);
  fs::copy_file(b + "/coordinator.db", a + "/coordinator.db", fs::copy_options::overwrite_existing);
  absl::StatusOr<std::unique_ptr<StateDir>> state = StateDir::Open(a);
  ASSERT_FALSE(state.ok());
  EXPECT_NE(state.status().message().find("refusing to start: " + a + "/coordinator.db is database "), std::string::npos)
      << state.status();
}

TEST(StateDirTest, ALostIdentityFileIsWrittenAgain) {
  const std::string dir = FreshDir("state_identity");
  PutJob(dir);
  std::ifstream in(dir + "/IDENTITY");
  std::string identity;
  in >> identity;
  fs::remove(dir + "/IDENTITY");
  ASSERT_TRUE(StateDir::Open(dir).ok());
  std::ifstream again(dir + "/IDENTITY");
  std::string restored;
  again >> restored;
  EXPECT_EQ(restored, identity);
}

}  // namespace
}  // namespace tpcoord
