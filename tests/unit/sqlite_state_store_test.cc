// The SQLite state store: atomic batches of puts and deletes, prefix scans in key order, binary keys and
// values, durability across reopening, no mmap'd -shm file, and a corrupt file refused with DATA_LOSS.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>

#include "coordinator/store/state_store.h"

namespace tpcoord {
namespace {

namespace fs = std::filesystem;

std::string FreshDir(const std::string& name) {
  const std::string dir = ::testing::TempDir() + "/" + name;
  fs::remove_all(dir);
  fs::create_directories(dir);
  return dir;
}

std::vector<std::string> Keys(StateStore& store, const std::string& prefix) {
  std::vector<std::string> keys;
  const std::vector<StateEntry> entries = *store.Scan(prefix);
  for (const StateEntry& e : entries) keys.push_back(e.key);
  return keys;
}

TEST(SqliteStateStoreTest, WritesBatchesAndScansPrefixesInKeyOrder) {
  auto store = *OpenSqliteStateStore(":memory:");
  ASSERT_TRUE(store->Write({StateWrite::Put("j/b", "B"), StateWrite::Put("j/a", "A"), StateWrite::Put("j/a/x", "AX"),
                            StateWrite::Put("k/z", "Z")},
                           "test")
                  .ok());
  EXPECT_EQ(Keys(*store, "j/"), std::vector<std::string>({"j/a", "j/a/x", "j/b"}));
  EXPECT_EQ(Keys(*store, ""), std::vector<std::string>({"j/a", "j/a/x", "j/b", "k/z"}));
  // Later writes of a batch see the earlier ones: a put then a delete of the same key deletes it.
  ASSERT_TRUE(store->Write({StateWrite::Put("j/c", "C"), StateWrite::Delete("j/c"), StateWrite::DeletePrefix("j/a/")},
                           "test")
                  .ok());
  EXPECT_EQ(Keys(*store, "j/"), std::vector<std::string>({"j/a", "j/b"}));
  ASSERT_TRUE(store->Write({StateWrite::DeletePrefix("")}, "test").ok());
  EXPECT_TRUE(store->Scan("")->empty());
}

TEST(SqliteStateStoreTest, KeysAndValuesAreBytes) {
  auto store = *OpenSqliteStateStore(":memory:");
  const std::string key("j/\xff\x00\x01", 5), value("\x00\xfe\x7f", 3);
  ASSERT_TRUE(store->Write({StateWrite::Put(key, value), StateWrite::Put("j/empty", "")}, "test").ok());
  std::vector<StateEntry> entries = *store->Scan("j/");
  ASSERT_EQ(entries.size(), 2u);
  EXPECT_EQ(entries[1].key, key);
  EXPECT_EQ(entries[1].value, value);
  EXPECT_EQ(entries[0].value, "");
  // A prefix ending in 0xff bytes still bounds its range.
  ASSERT_TRUE(store->Write({StateWrite::DeletePrefix(std::string("j/\xff", 3))}, "test").ok());
  EXPECT_EQ(Keys(*store, "j/"), std::vector<std::string>({"j/empty"}));
}

TEST(SqliteStateStoreTest, WhatWasWrittenSurvivesReopeningAndNoShmFileExists) {
  const std::string path = FreshDir("sqlite_reopen") + "/coordinator.db";
  {
    auto store = *OpenSqliteStateStore(path);
    ASSERT_TRUE(store->Write({StateWrite::Put("j/a", "1")}, "test").ok());
    EXPECT_FALSE(fs::exists(path + "-shm"));  // the WAL index lives in memory: nothing to SIGBUS on
  }
  auto store = *OpenSqliteStateStore(path);
  ASSERT_EQ(store->Scan("j/")->size(), 1u);
  EXPECT_EQ(store->name(), "state store " + path);
}

TEST(SqliteStateStoreTest, ACorruptDatabaseIsRefused) {
  const std::string path = FreshDir("sqlite_corrupt") + "/coordinator.db";
  {
    auto store = *OpenSqliteStateStore(path);
    StateWrites writes;
    for (int i = 0; i < 2000; ++i) writes.push_back(StateWrite::Put("j/" + std::to_string(i), std::string(100, 'x')));
    ASSERT_TRUE(store->Write(writes, "test").ok());
  }
  // Keep the first pages (the header still says how large the file was), lose the rest.
  fs::resize_file(path, fs::file_size(path) / 3);
  fs::remove(path + "-wal");
  absl::StatusOr<std::unique_ptr<StateStore>> store = OpenSqliteStateStore(path);
  ASSERT_FALSE(store.ok());
  EXPECT_EQ(store.status().code(), absl::StatusCode::kDataLoss) << store.status();
  EXPECT_NE(store.status().message().find(path), std::string::npos);
}

TEST(SqliteStateStoreTest, AFileThatIsNotADatabaseIsRefused) {
  const std::string path = FreshDir("sqlite_garbage") + "/coordinator.db";
  std::ofstream(path) << std::string(8192, 'g');
  absl::StatusOr<std::unique_ptr<StateStore>> store = OpenSqliteStateStore(path);
  ASSERT_FALSE(store.ok());
  EXPECT_EQ(store.status().code(), absl::StatusCode::kDataLoss) << store.status();
}

}  // namespace
}  // namespace tpcoord
