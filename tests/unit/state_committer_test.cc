// Group commit: submissions are written in order, concurrent ones share a transaction, and a submission
// that cannot be written fails alone.
#include "coordinator/store/state_committer.h"

#include <gtest/gtest.h>

#include <future>
#include <thread>

#include "tests/support/failing_state_store.h"

namespace tpcoord {
namespace {

TEST(StateCommitterTest, WritesInOrderAndSharesTransactions) {
  auto sqlite = *OpenSqliteStateStore(":memory:");
  testing::FailingStateStore store(sqlite.get());
  constexpr int kWrites = 500;
  std::vector<std::promise<absl::Status>> done(kWrites);
  {
    StateCommitter committer(&store);
    std::vector<std::thread> threads;
    for (int t = 0; t < 4; ++t) {
      threads.emplace_back([&, t] {
        for (int i = t; i < kWrites; i += 4) {
          committer.Submit({StateWrite::Put("k/" + std::to_string(i % 7), std::to_string(i))}, "test",
                           [&, i](absl::Status s) { done[i].set_value(s); });
        }
      });
    }
    for (std::thread& t : threads) t.join();
  }  // the destructor writes everything submitted
  for (auto& d : done) EXPECT_TRUE(d.get_future().get().ok());
  EXPECT_LT(store.writes(), kWrites);
  EXPECT_EQ(sqlite->Scan("k/")->size(), 7u);
}

TEST(StateCommitterTest, AFailingSubmissionFailsAlone) {
  auto sqlite = *OpenSqliteStateStore(":memory:");
  testing::FailingStateStore store(sqlite.get());
  StateCommitter committer(&store);
  store.FailEveryWrite(absl::ResourceExhaustedError("full"));
  std::promise<absl::Status> failed;
  committer.Submit({StateWrite::Put("a", "1")}, "test", [&](absl::Status s) { failed.set_value(s); });
  EXPECT_EQ(failed.get_future().get().code(), absl::StatusCode::kResourceExhausted);
  store.Heal();
  std::promise<absl::Status> ok;
  committer.Submit({StateWrite::Put("b", "2")}, "test", [&](absl::Status s) { ok.set_value(s); });
  EXPECT_TRUE(ok.get_future().get().ok());
  EXPECT_EQ(sqlite->Scan("")->size(), 1u);
}

}  // namespace
}  // namespace tpcoord
