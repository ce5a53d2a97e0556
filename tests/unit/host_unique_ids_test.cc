// tp-agent's unique-ID broker (agent/host_unique_ids.h), driven directly: what it answers on the host, what
// it sends up, what it leaves to the coordinator, and its two errors with the coordinator's texts.
#include "agent/host_unique_ids.h"

#include <gtest/gtest.h>

#include <optional>
#include <string>
#include <vector>

#include "common/wire.h"

namespace tpcoord {
namespace {

using Clock = HostUniqueIds::Clock;

const GroupId kTp0{GroupKind::kTp, 0};
const GroupId kDp0{GroupKind::kDp, 0};
const GroupId kDp1{GroupKind::kDp, 1};
const GroupId kWorld{GroupKind::kWorld, 0};

std::string Bytes(char c) { return std::string(128, c); }

// An exchange call: publish `mine` (group, root, bytes), get `theirs`.
v1::SessionRequest ExchangeCall(uint64_t call_id, const std::vector<std::pair<UniqueIdSlot, std::string>>& mine,
                                const std::vector<GroupId>& theirs, uint32_t wait_ms = 30000) {
  v1::SessionRequest call;
  call.set_call_id(call_id);
  for (const auto& [slot, bytes] : mine) {
    v1::UniqueId& id = *call.mutable_publish_unique_id()->add_ids();
    *id.mutable_group() = GroupIdToProto(slot.group);
    id.set_root(slot.root);
    id.set_id(bytes);
  }
  for (const GroupId& group : theirs) *call.mutable_get_unique_id()->add_groups() = GroupIdToProto(group);
  if (!theirs.empty()) call.mutable_get_unique_id()->set_wait_timeout_ms(wait_ms);
  return call;
}

// One worker's side: the answers it got, the calls the broker sent up for it (with their `done`).
struct Worker {
  std::vector<v1::SessionEvent> answers;
  std::vector<std::pair<v1::SessionRequest, std::function<void(const v1::SessionEvent&)>>> sent_up;

  HostUniqueIds::Answer answer() {
    return [this](v1::SessionEvent e) { answers.push_back(std::move(e)); };
  }
  HostUniqueIds::Forward forward() {
    return [this](v1::SessionRequest r, std::function<void(const v1::SessionEvent&)> done) {
      sent_up.emplace_back(std::move(r), std::move(done));
    };
  }
};

std::vector<std::string> IdsOf(const v1::SessionEvent& event) {
  std::vector<std::string> out;
  for (const v1::UniqueId& id : event.unique_ids().ids()) out.push_back(id.id());
  return out;
}

// World 4, TP 2 (tp/0 = {0,1}, tp/1 = {2,3}, dp/0 = {0,2}, dp/1 = {1,3}); this host holds `ranks`.
class HostUniqueIdsTest : public ::testing::Test {
 protected:
  void SeatHost(std::vector<int> ranks) {
    for (int rank : ranks) ids_.Seat("j", 1, rank, *Mesh::Create(4, 2));
  }
  HostUniqueIds ids_{"host-a", 2};
};

TEST_F(HostUniqueIdsTest, AGroupOnTheHostIsBrokeredHereInEitherOrder) {
  SeatHost({0, 1});
  Worker r0, r1;
  // Rank 1 asks for tp/0 before its leader, rank 0, has published it: it waits, on the host.
  ASSERT_TRUE(ids_.Exchange(1, 1, ExchangeCall(7, {}, {kTp0}), r1.answer(), r1.forward()));
  EXPECT_TRUE(r1.answers.empty());
  ASSERT_TRUE(ids_.Exchange(1, 0, ExchangeCall(3, {{{kTp0, 0}, Bytes('a')}}, {}), r0.answer(), r0.forward()));
  ASSERT_EQ(r0.answers.size(), 1u);
  EXPECT_EQ(r0.answers[0].call_id(), 3u);
  EXPECT_EQ(r0.answers[0].status_code(), 0);
  ASSERT_EQ(r1.answers.size(), 1u);
  EXPECT_EQ(r1.answers[0].call_id(), 7u);
  EXPECT_EQ(IdsOf(r1.answers[0]), std::vector<std::string>{Bytes('a')});
  EXPECT_TRUE(r0.sent_up.empty());
  EXPECT_TRUE(r1.sent_up.empty());
  const HostUniqueIds::Counts counts = ids_.counts();
  EXPECT_EQ(counts.brokered_groups, 1);
  EXPECT_EQ(counts.answered_here, 2);
}

// Join answers reach the host's workers one by one: a call that would decide where a group is waits until
// every worker the agent started is seated, or a second.
TEST_F(HostUniqueIdsTest, AGroupIsPlacedOnceEveryWorkerOfTheHostIsSeated) {
  ids_.Seat("j", 1, 0, *Mesh::Create(4, 2));
  Worker r0, r1;
  ASSERT_TRUE(ids_.Exchange(1, 0, ExchangeCall(1, {{{kTp0, 0}, Bytes('a')}}, {}), r0.answer(), r0.forward()));
  EXPECT_TRUE(r0.answers.empty());
  ids_.Seat("j", 1, 1, *Mesh::Create(4, 2));
  ASSERT_EQ(r0.answers.size(), 1u);
  EXPECT_EQ(r0.answers[0].call_id(), 1u);
  EXPECT_TRUE(r0.sent_up.empty());  // tp/0 = {0, 1} is this host's
  ASSERT_TRUE(ids_.Exchange(1, 1, ExchangeCall(2, {}, {kTp0}), r1.answer(), r1.forward()));
  ASSERT_EQ(r1.answers.size(), 1u);
  EXPECT_EQ(IdsOf(r1.answers[0]), std::vector<std::string>{Bytes('a')});

  // Generation 2 seats only rank 0 here (the other worker missed it): after a second the call goes on, and
  // tp/0, half elsewhere as far as the agent knows, is published upstream.
  ids_.Seat("j", 2, 0, *Mesh::Create(4, 2));
  Worker again;
  ASSERT_TRUE(ids_.Exchange(2, 0, ExchangeCall(3, {{{kTp0, 0}, Bytes('b')}}, {}), again.answer(), again.forward()));
  ids_.Expire(Clock::now());
  EXPECT_TRUE(again.sent_up.empty());
  ids_.Expire(Clock::now() + std::chrono::seconds(2));
  ASSERT_EQ(again.sent_up.size(), 1u);
  EXPECT_EQ(again.sent_up[0].first.publish_unique_id().ids_size(), 1);
  again.sent_up[0].second(v1::SessionEvent());
  ASSERT_EQ(again.answers.size(), 1u);
  EXPECT_EQ(again.answers[0].call_id(), 3u);
}

TEST_F(HostUniqueIdsTest, AGroupSpanningHostsIsPublishedUpAndFetchedOncePerHost) {
  SeatHost({2, 3});
  Worker r2, r3;
  const GroupId tp1{GroupKind::kTp, 1};
  ASSERT_TRUE(ids_.Exchange(1, 2, ExchangeCall(1, {{{tp1, 0}, Bytes('t')}}, {kDp0, kWorld}), r2.answer(),
                            r2.forward()));
  ASSERT_EQ(r2.sent_up.size(), 1u);  // dp/0 and the world, in one get; tp/1 stays here
  EXPECT_FALSE(r2.sent_up[0].first.has_publish_unique_id());
  ASSERT_EQ(r2.sent_up[0].first.get_unique_id().groups_size(), 2);
  // Rank 3 wants the world too (already being fetched) and dp/1 (not yet): only dp/1 goes up.
  ASSERT_TRUE(ids_.Exchange(1, 3, ExchangeCall(1, {}, {tp1, kDp1, kWorld}), r3.answer(),
                            r3.forward()));
  ASSERT_EQ(r3.sent_up.size(), 1u);
  ASSERT_EQ(r3.sent_up[0].first.get_unique_id().groups_size(), 1);
  EXPECT_EQ(r3.sent_up[0].first.get_unique_id().groups(0).kind(), v1::GROUP_KIND_DP);

  v1::SessionEvent fetched;  // dp/0 then the world, as asked
  for (const auto& [group, c] : {std::pair<GroupId, char>{kDp0, 'd'}, {kWorld, 'w'}}) {
    v1::UniqueId& id = *fetched.mutable_unique_ids()->add_ids();
    *id.mutable_group() = GroupIdToProto(group);
    id.set_id(Bytes(c));
  }
  r2.sent_up[0].second(fetched);
  ASSERT_EQ(r2.answers.size(), 1u);
  EXPECT_EQ(IdsOf(r2.answers[0]), (std::vector<std::string>{Bytes('d'), Bytes('w')}));
  EXPECT_TRUE(r3.answers.empty());  // dp/1 is still out

  v1::SessionEvent dp1;
  v1::UniqueId& id = *dp1.mutable_unique_ids()->add_ids();
  *id.mutable_group() = GroupIdToProto(kDp1);
  id.set_id(Bytes('e'));
  r3.sent_up[0].second(dp1);
  ASSERT_EQ(r3.answers.size(), 1u);
  EXPECT_EQ(IdsOf(r3.answers[0]), (std::vector<std::string>{Bytes('t'), Bytes('e'), Bytes('w')}));
  const HostUniqueIds::Counts counts = ids_.counts();
  EXPECT_EQ(counts.fetches, 3);  // dp/0, the world, dp/1
  EXPECT_EQ(counts.fetches_saved, 1);
}

TEST_F(HostUniqueIdsTest, AFailedFetchFailsEveryWaitThatCountedOnIt) {
  SeatHost({2, 3});
  Worker r2, r3;
  ASSERT_TRUE(ids_.Exchange(1, 2, ExchangeCall(1, {}, {kWorld}), r2.answer(), r2.forward()));
  ASSERT_TRUE(ids_.Exchange(1, 3, ExchangeCall(2, {}, {kWorld}), r3.answer(), r3.forward()));
  ASSERT_EQ(r2.sent_up.size(), 1u);
  EXPECT_TRUE(r3.sent_up.empty());
  v1::SessionEvent aborted;
  aborted.set_status_code(static_cast<int>(absl::StatusCode::kAborted));
  aborted.set_status_message("job j: generation 1 ended: rank 0 (host host-b, worker w) is gone");
  r2.sent_up[0].second(aborted);
  ASSERT_EQ(r2.answers.size(), 1u);
  ASSERT_EQ(r3.answers.size(), 1u);
  EXPECT_EQ(r3.answers[0].call_id(), 2u);
  EXPECT_EQ(r3.answers[0].status_code(), static_cast<int>(absl::StatusCode::kAborted));
  EXPECT_EQ(r3.answers[0].status_message(), aborted.status_message());
}

TEST_F(HostUniqueIdsTest, ItsTwoErrorsSayWhatTheCoordinatorWould) {
  SeatHost({0, 1});
  Worker r0, r1;
  ASSERT_TRUE(ids_.Exchange(1, 0, ExchangeCall(1, {{{kTp0, 0}, Bytes('a')}}, {}), r0.answer(), r0.forward()));
  ASSERT_TRUE(ids_.Exchange(1, 0, ExchangeCall(2, {{{kTp0, 0}, Bytes('b')}}, {}), r0.answer(), r0.forward()));
  ASSERT_EQ(r0.answers.size(), 2u);
  EXPECT_EQ(r0.answers[1].status_code(), static_cast<int>(absl::StatusCode::kFailedPrecondition));
  EXPECT_EQ(r0.answers[1].status_message(),
            "job j: the unique id of tp/0 in generation 1 was already published with different bytes; a "
            "communicator root has one id");

  // A new generation: tp/0's leader never publishes, and the wait runs out.
  ids_.Seat("j", 2, 0, *Mesh::Create(4, 2));
  ids_.Seat("j", 2, 1, *Mesh::Create(4, 2));
  ASSERT_TRUE(ids_.Exchange(2, 1, ExchangeCall(9, {}, {kTp0}, 1500), r1.answer(), r1.forward()));
  ids_.Expire(Clock::now());
  EXPECT_TRUE(r1.answers.empty());
  ids_.Expire(Clock::now() + std::chrono::seconds(2));
  ASSERT_EQ(r1.answers.size(), 1u);
  EXPECT_EQ(r1.answers[0].status_code(), static_cast<int>(absl::StatusCode::kDeadlineExceeded));
  EXPECT_EQ(r1.answers[0].status_message(),
            "job j: GetUniqueId timed out after 1.5 s waiting for the unique id of tp/0 from its leader rank 0 "
            "(host host-a)");
}

TEST_F(HostUniqueIdsTest, WhatTheCoordinatorWouldRefuseIsLeftToIt) {
  SeatHost({0, 1});
  Worker w;
  // Rank 1 publishing tp/0, whose root is rank 0; rank 1 asking for dp/0, which it is not in; a call with a
  // barrier step; a rank not seated here; another generation.
  EXPECT_FALSE(ids_.Exchange(1, 1, ExchangeCall(1, {{{kTp0, 0}, Bytes('x')}}, {}), w.answer(), w.forward()));
  EXPECT_FALSE(ids_.Exchange(1, 1, ExchangeCall(2, {}, {kDp0}), w.answer(), w.forward()));
  v1::SessionRequest with_barrier = ExchangeCall(3, {}, {kTp0});
  with_barrier.mutable_barrier()->set_name("b");
  EXPECT_FALSE(ids_.Exchange(1, 1, with_barrier, w.answer(), w.forward()));
  EXPECT_FALSE(ids_.Exchange(1, 2, ExchangeCall(4, {}, {kWorld}), w.answer(), w.forward()));
  EXPECT_FALSE(ids_.Exchange(2, 1, ExchangeCall(5, {}, {kTp0}), w.answer(), w.forward()));
  EXPECT_TRUE(w.answers.empty());
  EXPECT_TRUE(w.sent_up.empty());
}

}  // namespace
}  // namespace tpcoord
