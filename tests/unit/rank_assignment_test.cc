// Golden rank layouts: requested ranks are kept, and TP groups stay inside one host whenever host sizes
// allow.
#include "common/rank_assignment.h"

#include <gtest/gtest.h>

namespace tpcoord {
namespace {

std::vector<RankRequest> Hosts(const std::vector<std::string>& hosts) {
  std::vector<RankRequest> workers;
  for (const std::string& h : hosts) workers.push_back({h, std::nullopt});
  return workers;
}

// The host of each rank, as a string: "aabb" means ranks 0,1 on a and 2,3 on b.
std::string Layout(const std::vector<RankRequest>& workers, int tp_size) {
  std::vector<int> ranks = AssignRanks(workers, tp_size);
  std::string layout(workers.size(), '?');
  for (size_t i = 0; i < workers.size(); ++i) layout[ranks[i]] = workers[i].host[0];
  return layout;
}

TEST(AssignRanksTest, InterleavedArrivalsStillGroupByHost) {
  EXPECT_EQ(Layout(Hosts({"a", "b", "a", "b"}), 2), "aabb");
  EXPECT_EQ(Layout(Hosts({"b", "a", "c", "a", "b", "c"}), 2), "aabbcc");
  EXPECT_EQ(Layout(Hosts({"b", "a", "b", "a", "b", "a", "b", "a"}), 4), "aaaabbbb");
}

TEST(AssignRanksTest, UnevenHostsKeepAsManyTpGroupsLocalAsPossible) {
  // a and b have 3 workers each, c has 2: three of four TP groups stay inside a host.
  EXPECT_EQ(Layout(Hosts({"a", "a", "a", "b", "b", "b", "c", "c"}), 2), "aabbccab");
  EXPECT_EQ(Layout(Hosts({"a", "b", "a", "a"}), 2), "aaab");
}

TEST(AssignRanksTest, WorkersOfOneHostKeepTheirArrivalOrder) {
  std::vector<RankRequest> workers = Hosts({"a", "a", "a", "a"});
  EXPECT_EQ(AssignRanks(workers, 2), std::vector<int>({0, 1, 2, 3}));
}

TEST(AssignRanksTest, RequestedRanksAreHonoured) {
  std::vector<RankRequest> workers = {{"a", 3}, {"b", 0}, {"c", 2}, {"d", 1}};
  EXPECT_EQ(AssignRanks(workers, 2), std::vector<int>({3, 0, 2, 1}));
}

TEST(AssignRanksTest, PartlyRequestedBlocksAreCompletedFromTheirHost) {
  // Rank 2 is requested by a worker on b; its block {2,3} is completed by b's other worker.
  std::vector<RankRequest> workers = {{"a", std::nullopt}, {"b", 2}, {"a", std::nullopt}, {"b", std::nullopt}};
  EXPECT_EQ(AssignRanks(workers, 2), std::vector<int>({0, 2, 1, 3}));
}

TEST(AssignRanksTest, ResultIsAPermutation) {
  std::vector<RankRequest> workers;
  for (int i = 0; i < 64; ++i) workers.push_back({std::string(1, static_cast<char>('a' + (i * 7) % 5)), std::nullopt});
  workers[10].requested_rank = 63;
  workers[20].requested_rank = 0;
  std::vector<int> ranks = AssignRanks(workers, 8);
  std::vector<int> sorted = ranks;
  std::sort(sorted.begin(), sorted.end());
  for (int r = 0; r < 64; ++r) EXPECT_EQ(sorted[r], r);
  EXPECT_EQ(ranks[10], 63);
  EXPECT_EQ(ranks[20], 0);
}

}  // namespace
}  // namespace tpcoord
