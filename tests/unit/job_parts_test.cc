// The plain parts a Job is made of, each on its own: the key-value store and its quota, the unique-ID
// table, the barrier set, the lease monitor, parked calls and config agreement.
#include <gtest/gtest.h>

#include <optional>

#include <future>

#include "coordinator/job/barrier_set.h"
#include "coordinator/job/config_agreement.h"
#include "coordinator/job/key_value_store.h"
#include "coordinator/job/lease_monitor.h"
#include "coordinator/job/parked_calls.h"
#include "coordinator/job/unique_id_table.h"

namespace tpcoord {
namespace {

using namespace std::chrono_literals;

TEST(KeyValueStoreTest, CountsBytesAgainstTheQuotaAndGivesThemBack) {
  StoreQuota quota(1000);
  {
    KeyValueStore kv(&quota);
    EXPECT_EQ(kv.PutDelta("k", 10), static_cast<int64_t>(KeyValueStore::Cost("k", 10)));
    kv.Put("k", std::string(10, 'x'));
    EXPECT_EQ(kv.PutDelta("k", 4), -6);
    kv.Put("k", "abcd");
    EXPECT_EQ(quota.used(), static_cast<int64_t>(KeyValueStore::Cost("k", 4)));
    EXPECT_TRUE(quota.CheckFits(1000).code() == absl::StatusCode::kResourceExhausted);
    EXPECT_TRUE(quota.CheckFits(-5).ok());
    kv.Erase("k");
    kv.Erase("k");
    EXPECT_EQ(quota.used(), 0);
    kv.Put("other", "v");
  }
  EXPECT_EQ(quota.used(), 0);  // a store that goes away gives its bytes back
}

TEST(KeyValueStoreTest, SumChecksIntegersAndOverflow) {
  StoreQuota quota(1 << 20);
  KeyValueStore kv(&quota);
  EXPECT_EQ(*kv.Sum("n", 5), 5);
  kv.Put("n", "9223372036854775807");
  EXPECT_EQ(kv.Sum("n", 1).status().code(), absl::StatusCode::kOutOfRange);
  EXPECT_EQ(*kv.Sum("n", -1), INT64_MAX - 1);
  kv.Put("s", "12a");
  EXPECT_EQ(kv.Sum("s", 1).status().message(), "key \"s\" holds \"12a\", not an integer to add to");
}

TEST(KeyValueStoreTest, WatchersAreTakenPerKey) {
  StoreQuota quota(1 << 20);
  KeyValueStore kv(&quota);
  kv.watchers().Watch(1, "a");
  kv.watchers().Watch(2, "a");
  kv.watchers().Watch(2, "b");
  kv.watchers().Unwatch(1, "a");
  EXPECT_EQ(kv.watchers().Keys(), std::vector<std::string>({"a", "b"}));
  EXPECT_EQ(kv.watchers().Take("a"), std::vector<uint64_t>({2}));
  EXPECT_EQ(kv.watchers().Keys(), std::vector<std::string>({"b"}));
}

TEST(UniqueIdTableTest, ChecksPublishesAndLooksUpGroups) {
  const Mesh mesh = *Mesh::Create(4, 2);
  UniqueIdTable table;
  const std::string id(128, 'i');
  EXPECT_EQ(table.CheckPublish(mesh, 1, {{{GroupKind::kTp, 0}, id}}, 1).code(), absl::StatusCode::kPermissionDenied);
  EXPECT_EQ(table.CheckPublish(mesh, 0, {{{GroupKind::kTp, 2}, id}}, 1).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(table.CheckPublish(mesh, 0, {{{GroupKind::kTp, 0}, id}, {{GroupKind::kTp, 0}, id}}, 1).message(),
            "ids[0] and ids[1] both publish tp/0");
  ASSERT_TRUE(table.CheckPublish(mesh, 0, {{{GroupKind::kTp, 0}, id}}, 1).ok());
  table.Put({{GroupKind::kTp, 0}}, id);
  EXPECT_TRUE(table.CheckPublish(mesh, 0, {{{GroupKind::kTp, 0}, id}}, 1).ok());
  EXPECT_EQ(table.CheckPublish(mesh, 0, {{{GroupKind::kTp, 0}, std::string(128, 'j')}}, 1).code(),
            absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(table.CheckGet(mesh, 2, {{GroupKind::kTp, 0}}).code(), absl::StatusCode::kPermissionDenied);
  EXPECT_FALSE(table.Lookup(mesh, {{GroupKind::kTp, 0}, {GroupKind::kWorld, 0}}).has_value());
  EXPECT_TRUE(*table.Lookup(mesh, {{GroupKind::kTp, 0}}) == UniqueIds({{{{GroupKind::kTp, 0}, 0}, id}}));
}

TEST(UniqueIdTableTest, AGroupOfMoreThan256RanksIsCompleteOnceEveryRootPublished) {
  const Mesh mesh = *Mesh::Create(1000, 1);  // the world starts from 4 ids, made by ranks 0, 250, 500, 750
  const GroupId world{GroupKind::kWorld, 0};
  UniqueIdTable table;
  auto id = [](int root) { return std::string(128, static_cast<char>('a' + root)); };
  EXPECT_EQ(table.CheckPublish(mesh, 250, {{{world, 2}, id(2)}}, 1).message(),
            "rank 250 may not publish the unique id of world root 2: only that root, rank 500, may");
  EXPECT_EQ(table.CheckPublish(mesh, 0, {{{world, 4}, id(4)}}, 1).message(),
            "ids[0].root 4 is not a root of world: its 1000 ranks start from 4 unique id(s), roots 0..3");
  EXPECT_EQ(table.CheckPublish(mesh, 0, {{{world, -1}, id(0)}}, 1).code(), absl::StatusCode::kInvalidArgument);
  for (int root : {3, 0, 2}) {  // in any order
    ASSERT_TRUE(table.CheckPublish(mesh, mesh.RootRank({world, root}), {{{world, root}, id(root)}}, 1).ok());
    table.Put({world, root}, id(root));
    EXPECT_FALSE(table.Complete(mesh, world));
    EXPECT_FALSE(table.Lookup(mesh, {world}).has_value());
  }
  EXPECT_TRUE(table.Missing(mesh, world) == std::vector<UniqueIdSlot>({{world, 1}}));
  table.Put({world, 1}, id(1));
  EXPECT_TRUE(table.Complete(mesh, world));
  const std::optional<UniqueIds> ids = table.Lookup(mesh, {world});
  ASSERT_TRUE(ids.has_value());
  std::vector<std::string> in_order;
  for (const auto& [slot, bytes] : *ids) in_order.push_back(bytes);
  EXPECT_EQ(in_order, std::vector<std::string>({id(0), id(1), id(2), id(3)}));
}

TEST(BarrierSetTest, RoundsCountOnceAndComplete) {
  BarrierSet barriers(2);
  EXPECT_EQ(barriers.Arrive("b", 3, 0, 10), 0u);
  EXPECT_EQ(barriers.Arrive("b", 3, 0, 11), 10u);  // the same rank again replaces its call
  EXPECT_EQ(barriers.arrived("b"), 1);
  barriers.Arrive("b", 3, 2, 12);
  EXPECT_EQ(barriers.Missing("b", 3), std::vector<int>({1}));
  barriers.Depart("b", 2, 99);  // not its call: ignored
  EXPECT_EQ(barriers.arrived("b"), 2);
  EXPECT_EQ(barriers.Complete("b"), std::vector<uint64_t>({11, 12}));
  EXPECT_EQ(barriers.completed("b"), 1u);
  EXPECT_EQ(barriers.arrived("b"), 0);
  EXPECT_TRUE(barriers.CheckRoom("c").ok());
  barriers.Arrive("c", 3, 0, 13);
  EXPECT_EQ(barriers.CheckRoom("d").code(), absl::StatusCode::kResourceExhausted);
  EXPECT_EQ(barriers.Rounds(), (std::map<std::string, uint64_t>{{"b", 1}}));
}

TEST(LeaseMonitorTest, FindsExpiredRanksAndSkipsFinishedOnes) {
  LeaseMonitor leases(100ms);
  const auto t0 = LeaseMonitor::Clock::now();
  leases.Start(3, t0);
  leases.Renew(1, t0 + 80ms);
  leases.Finish(2);
  EXPECT_EQ(leases.Expired(t0 + 50ms), std::vector<int>());
  EXPECT_EQ(leases.Expired(t0 + 100ms), std::vector<int>({0}));
  EXPECT_EQ(leases.NextDeadline(), t0 + 100ms);
  EXPECT_EQ(leases.unfinished(), 2);
  leases.Finish(0);
  leases.Finish(1);
  EXPECT_TRUE(leases.AllFinished());
  EXPECT_EQ(leases.NextDeadline(), LeaseMonitor::Clock::time_point::max());
}

TEST(ParkedCallsTest, ExactlyOneWayOutPerCall) {
  TimerQueue timers;
  ParkedCalls parked(&timers, 2);
  std::promise<uint64_t> expired;
  parked.Park(7, StoreGetCall{"k", [](absl::StatusOr<std::string>) {}}, 20ms, [&] { expired.set_value(7); });
  parked.Park(8, StoreGetCall{"k", [](absl::StatusOr<std::string>) {}}, 1h, [] {});
  EXPECT_EQ(parked.CheckRoom().code(), absl::StatusCode::kResourceExhausted);
  EXPECT_EQ(expired.get_future().get(), 7u);  // its deadline ran; it is still parked until taken
  ASSERT_TRUE(parked.Take(7).has_value());
  EXPECT_FALSE(parked.Take(7).has_value());
  absl::Status answer;
  std::optional<Parked> p = parked.Take(8);
  {
    Completions done;
    FailParkedCall(p->call, absl::AbortedError("over"), done);
  }
  EXPECT_EQ(parked.size(), 0u);
  EXPECT_EQ(timers.size(), 0u);
}

TEST(ConfigAgreementTest, NamesTheFirstDifference) {
  ConfigAgreement agreement;
  EXPECT_TRUE(agreement.Check(3, nlohmann::json::parse(R"({"a": 1})"), 1).ok());
  agreement.SetReference(0, R"({"a": 1, "b": [1, 2]})", nlohmann::json::parse(R"({"a": 1, "b": [1, 2]})"));
  EXPECT_TRUE(agreement.Check(3, nlohmann::json::parse(R"({"b": [1, 2], "a": 1.0})"), 1).ok());
  EXPECT_EQ(agreement.Check(3, nlohmann::json::parse(R"({"a": 1, "b": [1, 3]})"), 1).message(),
            "the config of rank 3 differs from the config rank 0 merged first in generation 1 at /b/1: rank 0 has 2, "
            "rank 3 has 3; every worker of a job must use the same DeepSpeed config");
  agreement.CacheMerged(0, "m");
  EXPECT_EQ(*agreement.MergedFor(0), "m");
  EXPECT_EQ(agreement.MergedFor(1), nullptr);
}

}  // namespace
}  // namespace tpcoord
