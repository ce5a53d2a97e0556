// The per-job state machine without a network: records, merges and config agreement, Join and rank
// assignment, unique IDs, the key-value store, barriers, leases, generations and restore.
#include "coordinator/job.h"

#include <gtest/gtest.h>

#include <future>
#include <thread>

#include "common/deepspeed_error.h"

namespace tpcoord {
namespace {

using namespace std::chrono_literals;

// The outcome of a parked call, filled by its callback.
template <typename T>
class Result {
 public:
  Done<T> callback() {
    return [p = promise_](absl::StatusOr<T> v) { p->set_value(std::move(v)); };
  }
  bool ready() const { return future_.wait_for(0s) == std::future_status::ready; }
  absl::StatusOr<T> get() const {
    if (future_.wait_for(10s) != std::future_status::ready) return absl::InternalError("callback never ran");
    return future_.get();
  }

 private:
  std::shared_ptr<std::promise<absl::StatusOr<T>>> promise_ = std::make_shared<std::promise<absl::StatusOr<T>>>();
  std::shared_future<absl::StatusOr<T>> future_ = promise_->get_future().share();
};

class StatusResult {
 public:
  StatusDone callback() {
    return [p = promise_](absl::Status s) { p->set_value(std::move(s)); };
  }
  bool ready() const { return future_.wait_for(0s) == std::future_status::ready; }
  absl::Status get() const {
    if (future_.wait_for(10s) != std::future_status::ready) return absl::InternalError("callback never ran");
    return future_.get();
  }

 private:
  std::shared_ptr<std::promise<absl::Status>> promise_ = std::make_shared<std::promise<absl::Status>>();
  std::shared_future<absl::Status> future_ = promise_->get_future().share();
};

class JobTest : public testing::Test {
 protected:
  JobTest() : store_(*OpenSqliteStateStore(":memory:")) {
    options_.lease = 300ms;
    job_ = std::make_shared<Job>("job-1", store_.get(), &timers_, options_);
  }

  JoinArgs Worker(int i, int world_size, std::string host = "", std::optional<int> rank = std::nullopt) {
    return JoinArgs{"w" + std::to_string(i), host.empty() ? "h" + std::to_string(i) : host, world_size, rank, 0};
  }

  // Joins `world_size` workers (hosts h0, h1, ...) and returns their assignments by worker index.
  std::vector<Assignment> JoinAll(int world_size, int tp_size = 0) {
    std::vector<Result<Assignment>> results(world_size);
    for (int i = 0; i < world_size; ++i) {
      JoinArgs args = Worker(i, world_size);
      args.tp_size = tp_size;
      job_->Join(args, 5s, results[i].callback());
    }
    std::vector<Assignment> out;
    for (auto& r : results) {
      absl::StatusOr<Assignment> a = r.get();
      EXPECT_TRUE(a.ok()) << a.status();
      out.push_back(a.ok() ? *a : Assignment{});
    }
    return out;
  }

  JobOptions options_;
  TimerQueue timers_;
  std::unique_ptr<StateStore> store_;
  std::shared_ptr<Job> job_;
};

TpInitArgs Args(int tp_size, Dtype dtype, std::optional<std::vector<int>> group = std::nullopt) {
  return *NormalizeTpInitArgs(tp_size, dtype, std::move(group));
}

// --- record and merge -----------------------------------------------------------------------------------

TEST_F(JobTest, RecordPersistsAndConflictsChangeNothing) {
  ASSERT_TRUE(job_->Record(Args(2, Dtype::kBFloat16)).value().created);
  EXPECT_FALSE(job_->Record(Args(2, Dtype::kBFloat16)).value().created);
  absl::StatusOr<RecordOutcome> conflict = job_->Record(Args(4, Dtype::kBFloat16));
  ASSERT_FALSE(conflict.ok());
  EXPECT_EQ(conflict.status().message(), "Conflicting tp_model_init arguments detected across multiple calls.");
  EXPECT_EQ(*ErrorContext(conflict.status()),
            "job job-1: recorded tp_size=2 dtype=torch.bfloat16 tp_group=None; this call tp_size=4 "
            "dtype=torch.bfloat16 tp_group=None");
  std::vector<PersistedJob> saved = *store_->LoadJobs();
  ASSERT_EQ(saved.size(), 1u);
  EXPECT_EQ(saved[0].tp_init->tp_size, 2);
  EXPECT_EQ(job_->View(false).tp_init->tp_size, 2);
}

TEST_F(JobTest, StandaloneMergeValidatesAndPersists) {
  ASSERT_TRUE(job_->Record(Args(2, Dtype::kBFloat16)).ok());
  absl::StatusOr<MergeOutcome> merged = job_->Merge(R"({"bf16": {"enabled": true}})", false, 0, 0);
  ASSERT_TRUE(merged.ok()) << merged.status();
  EXPECT_TRUE(merged->tp_init_recorded);
  EXPECT_EQ(merged->merged_config, R"({"bf16":{"enabled":true},"tensor_parallel":{"autotp_size":2,"tp":{"tp_size":2}}})");
  EXPECT_EQ((*store_->LoadJobs())[0].merged_config, merged->merged_config);

  absl::StatusOr<MergeOutcome> bad = job_->Merge(R"({"fp16": {"enabled": true}})", false, 0, 0);
  ASSERT_FALSE(bad.ok());
  EXPECT_EQ(bad.status().message(),
            "Conflicting dtype: config uses torch.float16 but tp_model_init requested torch.bfloat16.");
  EXPECT_EQ(job_->View(false).merged_config, merged->merged_config);  // unchanged
  EXPECT_EQ(job_->Merge("{", false, 0, 0).status().code(), absl::StatusCode::kInvalidArgument);
}

TEST_F(JobTest, MembersMustAgreeOnTheConfig) {  // gap G27
  ASSERT_TRUE(job_->Record(Args(2, Dtype::kFloat32)).ok());
  JoinAll(4);
  const std::string config = R"({"train_batch_size": 16, "gradient_clipping": 1.0})";
  ASSERT_TRUE(job_->Merge(config, false, 1, 0).ok());
  ASSERT_TRUE(job_->Merge(R"({"gradient_clipping": 1.0, "train_batch_size": 16})", false, 1, 1).ok());
  absl::StatusOr<MergeOutcome> differs = job_->Merge(R"({"train_batch_size": 32, "gradient_clipping": 1.0})", false, 1, 3);
  ASSERT_FALSE(differs.ok());
  EXPECT_EQ(differs.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(differs.status().message(),
            "job job-1: the config of rank 3 differs from the config rank 0 merged first in generation 1 at "
            "/train_batch_size: rank 0 has 16, rank 3 has 32; every worker of a job must use the same DeepSpeed "
            "config");
  EXPECT_EQ(job_->Merge(config, false, 1, 4).status().code(), absl::StatusCode::kInvalidArgument);  // rank range
  EXPECT_EQ(job_->Merge(config, false, 2, 0).status().code(), absl::StatusCode::kFailedPrecondition);  // generation
}

TEST_F(JobTest, EachMemberGetsItsOwnRecordedTpGroup) {
  ASSERT_TRUE(job_->Record(Args(2, Dtype::kFloat32, std::vector<int>{0, 1})).ok());
  ASSERT_TRUE(job_->Record(Args(2, Dtype::kFloat32, std::vector<int>{2, 3})).ok());
  JoinAll(4);
  auto group_of = [&](int rank) {
    return nlohmann::json::parse(job_->Merge("{}", false, 1, rank)->merged_config)["tensor_parallel"]["tp"]["tp_group"];
  };
  EXPECT_EQ(group_of(0), nlohmann::json::array({0, 1}));
  EXPECT_EQ(group_of(3), nlohmann::json::array({2, 3}));
}

// --- Join -----------------------------------------------------------------------------------------------

TEST_F(JobTest, JoinParksUntilTheWorldIsCompleteThenAnswersEveryone) {
  ASSERT_TRUE(job_->Record(Args(2, Dtype::kFloat32)).ok());
  Result<Assignment> first;
  EXPECT_NE(job_->Join(Worker(0, 4, "a"), 5s, first.callback()), 0u);
  EXPECT_FALSE(first.ready());
  EXPECT_EQ(job_->View(false).phase, JobPhase::kJoining);
  std::vector<Result<Assignment>> rest(3);
  job_->Join(Worker(1, 4, "b"), 5s, rest[0].callback());
  job_->Join(Worker(2, 4, "a"), 5s, rest[1].callback());
  job_->Join(Worker(3, 4, "b"), 5s, rest[2].callback());
  // Hosts a and b each hold one whole TP group.
  EXPECT_EQ(first.get()->rank, 0);
  EXPECT_EQ(rest[1].get()->rank, 1);
  EXPECT_EQ(rest[0].get()->rank, 2);
  EXPECT_EQ(rest[2].get()->rank, 3);
  const Assignment a = *first.get();
  EXPECT_EQ(a.generation, 1u);
  EXPECT_EQ(a.mesh.tp_size(), 2);
  EXPECT_EQ(a.mesh.dp_size(), 2);
  EXPECT_EQ(a.lease, 300ms);
  EXPECT_EQ(job_->View(false).phase, JobPhase::kRunning);
  EXPECT_EQ((*store_->LoadJobs())[0].phase, JobPhase::kRunning);
}

TEST_F(JobTest, JoinTimeoutNamesWhoIsMissing) {
  Result<Assignment> r0, r2;
  job_->Join(Worker(0, 4, "a", 0), 100ms, r0.callback());
  job_->Join(Worker(2, 4, "c", 2), 5s, r2.callback());
  absl::StatusOr<Assignment> timed_out = r0.get();
  ASSERT_EQ(timed_out.status().code(), absl::StatusCode::kDeadlineExceeded);
  EXPECT_EQ(timed_out.status().message(),
            "job job-1: Join timed out after 100ms in generation 1: 2 of 4 workers joined; missing: rank 1, rank 3");
  // The worker that gave up left the joining world.
  EXPECT_EQ(job_->View(true).members.size(), 1u);
}

TEST_F(JobTest, JoinRejectsBadRanksAndMismatchedWorlds) {
  Result<Assignment> out_of_range, duplicate, mismatch, too_big, ok;
  job_->Join(Worker(0, 4, "a", 4), 5s, out_of_range.callback());
  EXPECT_EQ(out_of_range.get().status().message(), "job job-1: requested_rank 4 is out of range for world_size 4");
  job_->Join(Worker(0, 4, "a", 1), 5s, ok.callback());
  job_->Join(Worker(1, 4, "b", 1), 5s, duplicate.callback());
  EXPECT_EQ(duplicate.get().status().code(), absl::StatusCode::kAlreadyExists);
  EXPECT_EQ(duplicate.get().status().message(),
            "job job-1: requested_rank 1 is already held by worker w0 (host a) in generation 1");
  job_->Join(Worker(2, 8, "c"), 5s, mismatch.callback());
  EXPECT_EQ(mismatch.get().status().code(), absl::StatusCode::kFailedPrecondition);
  JoinArgs tp = Worker(3, 4, "d");
  tp.tp_size = 8;
  job_->Join(tp, 5s, too_big.callback());
  EXPECT_EQ(too_big.get().status().message(),
            "job job-1: tp_size 8 is larger than world_size 4: a TP group cannot span more ranks than exist");
  EXPECT_FALSE(ok.ready());
  job_->Cancel(12345);  // unknown ids are ignored
}

TEST_F(JobTest, JoinTpSizeMustMatchTheRecord) {
  ASSERT_TRUE(job_->Record(Args(2, Dtype::kFloat32)).ok());
  Result<Assignment> r;
  JoinArgs args = Worker(0, 4);
  args.tp_size = 4;
  job_->Join(args, 5s, r.callback());
  EXPECT_EQ(r.get().status().message(),
            "job job-1: Join asks for tp_size 4 but tp_model_init recorded tp_size 2 for this job");
}

TEST_F(JobTest, RecordedGroupsMustBeTpGroupsOfTheMesh) {  // table rows 9/11, stricter than DeepSpeed (G4)
  ASSERT_TRUE(job_->Record(Args(2, Dtype::kFloat32, std::vector<int>{1, 2})).ok());
  std::vector<Result<Assignment>> r(4);
  for (int i = 0; i < 4; ++i) job_->Join(Worker(i, 4), 5s, r[i].callback());
  EXPECT_EQ(r[3].get().status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_NE(r[0].get().status().message().find("the recorded tp_group [1, 2] is not a TP group of the mesh"),
            absl::string_view::npos);
}

TEST_F(JobTest, CancelledJoinLeavesTheWorld) {
  Result<Assignment> r;
  const uint64_t id = job_->Join(Worker(0, 2), 5s, r.callback());
  job_->Cancel(id);
  EXPECT_EQ(r.get().status().code(), absl::StatusCode::kCancelled);
  EXPECT_TRUE(job_->View(true).members.empty());
}

TEST_F(JobTest, RetriedJoinOfAMemberGetsTheSameAnswer) {
  std::vector<Assignment> a = JoinAll(2);
  Result<Assignment> again;
  job_->Join(Worker(1, 2), 5s, again.callback());
  EXPECT_EQ(again.get()->rank, a[1].rank);
  EXPECT_EQ(again.get()->generation, 1u);
}

// --- unique IDs -----------------------------------------------------------------------------------------

TEST_F(JobTest, UniqueIdsReachEveryMemberByteIdentical) {
  JoinAll(4, 2);
  const std::string id0(kUniqueIdBytes, '\x07');
  Result<std::vector<std::string>> member;
  job_->GetUniqueIds(1, 1, {{GroupKind::kTp, 0}, {GroupKind::kWorld, 0}}, 5s, member.callback());
  EXPECT_FALSE(member.ready());
  ASSERT_TRUE(job_->PublishUniqueIds(1, 0, {{{GroupKind::kTp, 0}, id0}}).ok());
  EXPECT_FALSE(member.ready());  // still waiting for the world id
  const std::string world(kUniqueIdBytes, '\x09');
  ASSERT_TRUE(job_->PublishUniqueIds(1, 0, {{{GroupKind::kWorld, 0}, world}}).ok());
  EXPECT_EQ(*member.get(), std::vector<std::string>({id0, world}));
  // Publishing the same bytes again is a no-op; a late Get answers at once.
  EXPECT_TRUE(job_->PublishUniqueIds(1, 0, {{{GroupKind::kTp, 0}, id0}}).ok());
  Result<std::vector<std::string>> late;
  EXPECT_EQ(job_->GetUniqueIds(1, 0, {{GroupKind::kTp, 0}}, 5s, late.callback()), 0u);
  EXPECT_EQ(*late.get(), std::vector<std::string>({id0}));
}

TEST_F(JobTest, MalformedPublishesChangeNothing) {
  JoinAll(4, 2);
  auto code = [&](int rank, GroupId group, std::string bytes) {
    return job_->PublishUniqueIds(1, rank, {{group, std::move(bytes)}});
  };
  EXPECT_EQ(code(0, {GroupKind::kTp, 0}, std::string(127, 'x')).message(),
            "job job-1: ids[0].id for tp/0 is 127 bytes; a NCCL unique id is exactly 128 bytes");
  EXPECT_EQ(code(1, {GroupKind::kTp, 0}, std::string(128, 'x')).code(), absl::StatusCode::kPermissionDenied);
  EXPECT_EQ(code(0, {GroupKind::kTp, 5}, std::string(128, 'x')).code(), absl::StatusCode::kInvalidArgument);
  ASSERT_TRUE(code(2, {GroupKind::kTp, 1}, std::string(128, 'a')).ok());
  absl::Status different = code(2, {GroupKind::kTp, 1}, std::string(128, 'b'));
  EXPECT_EQ(different.code(), absl::StatusCode::kFailedPrecondition);
  // A publish with one bad entry stores none of its entries.
  EXPECT_FALSE(job_->PublishUniqueIds(1, 0, {{{GroupKind::kTp, 0}, std::string(128, 'c')},
                                             {{GroupKind::kTp, 1}, std::string(128, 'c')}})
                   .ok());
  Result<std::vector<std::string>> r;
  EXPECT_NE(job_->GetUniqueIds(1, 1, {{GroupKind::kTp, 0}}, 50ms, r.callback()), 0u);
  EXPECT_EQ(r.get().status().message(),
            "job job-1: GetUniqueId timed out after 50ms waiting for the unique id of tp/0 from its leader rank 0 "
            "(host h0)");
  Result<std::vector<std::string>> not_member;
  job_->GetUniqueIds(1, 1, {{GroupKind::kTp, 1}}, 5s, not_member.callback());
  EXPECT_EQ(not_member.get().status().code(), absl::StatusCode::kPermissionDenied);
}

// --- key-value store ------------------------------------------------------------------------------------

TEST_F(JobTest, StoreHasC10dSemantics) {
  JoinAll(2);
  Result<std::string> get;
  EXPECT_NE(job_->StoreGet(1, "k", 5s, get.callback()), 0u);
  StatusResult wait;
  job_->StoreWait(1, {"k", "n"}, 5s, wait.callback());
  ASSERT_TRUE(job_->StoreSet(1, "k", "v1").ok());
  EXPECT_EQ(*get.get(), "v1");
  EXPECT_FALSE(wait.ready());
  EXPECT_EQ(*job_->StoreAdd(1, "n", 5), 5);
  EXPECT_EQ(*job_->StoreAdd(1, "n", -2), 3);
  EXPECT_TRUE(wait.get().ok());
  EXPECT_EQ(job_->StoreAdd(1, "k", 1).status().code(), absl::StatusCode::kFailedPrecondition);
  // compareSet: missing key + empty expected sets; mismatch returns the current value.
  EXPECT_EQ(*job_->StoreCompareSet(1, "c", "", "x"), "x");
  EXPECT_EQ(*job_->StoreCompareSet(1, "c", "nope", "y"), "x");
  EXPECT_EQ(*job_->StoreCompareSet(1, "c", "x", "y"), "y");
  EXPECT_EQ(*job_->StoreCompareSet(1, "missing", "e", "z"), "e");
  EXPECT_TRUE(*job_->StoreCheck(1, {"k", "n", "c"}));
  EXPECT_FALSE(*job_->StoreCheck(1, {"k", "missing"}));
  EXPECT_EQ(*job_->StoreNumKeys(1), 3);
  EXPECT_TRUE(*job_->StoreDelete(1, "k"));
  EXPECT_FALSE(*job_->StoreDelete(1, "k"));
  EXPECT_EQ(*job_->StoreNumKeys(1), 2);
  StatusResult never;
  job_->StoreWait(1, {"never"}, 50ms, never.callback());
  EXPECT_EQ(never.get().message(), "job job-1: store wait timed out after 50ms; keys never set: \"never\"");
  EXPECT_EQ(job_->StoreSet(1, "big", std::string(kMaxStoreValueBytes + 1, 'x')).code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(job_->StoreSet(7, "k", "v").code(), absl::StatusCode::kFailedPrecondition);
}

// --- barriers, leases, generations ----------------------------------------------------------------------

TEST_F(JobTest, BarrierReleasesEveryoneWhenTheLastRankArrives) {
  JoinAll(3);
  StatusResult b0, b1, b2;
  job_->Barrier(1, 0, "start", 5s, b0.callback());
  job_->Barrier(1, 1, "start", 5s, b1.callback());
  EXPECT_FALSE(b0.ready());
  EXPECT_EQ(job_->View(false).missing, std::vector<std::string>({"barrier \"start\": rank 2 (host h2)"}));
  job_->Barrier(1, 2, "start", 5s, b2.callback());
  EXPECT_TRUE(b0.get().ok());
  EXPECT_TRUE(b1.get().ok());
  EXPECT_TRUE(b2.get().ok());
  // The same name can be used again.
  StatusResult again;
  job_->Barrier(1, 0, "start", 50ms, again.callback());
  EXPECT_EQ(again.get().message(),
            "job job-1: barrier \"start\" timed out after 50ms; ranks that never arrived: rank 1 (host h1), rank 2 "
            "(host h2)");
}

TEST_F(JobTest, LongListsOfMissingRanksAreShortened) {
  JoinAll(40);  // hosts h0..h39, ranked in host-name order: h0, h1, h10, h11, ...
  StatusResult alone;
  job_->Barrier(1, 0, "x", 50ms, alone.callback());
  const std::string message(alone.get().message());
  EXPECT_NE(message.find("ranks that never arrived: rank 1 (host h1), rank 2 (host h10), "), std::string::npos);
  EXPECT_NE(message.find("rank 16 (host h23) and 23 more"), std::string::npos) << message;
}

TEST_F(JobTest, MissedLeaseEndsTheGenerationAndAbortsParkedCalls) {
  JoinAll(3);
  StatusResult parked;
  job_->Barrier(1, 0, "step", 10s, parked.callback());
  // Ranks 0 and 1 keep heartbeating; rank 2 (host h2) is silent.
  for (int i = 0; i < 8 && !parked.ready(); ++i) {
    std::this_thread::sleep_for(100ms);
    (void)job_->Heartbeat(1, 0);
    (void)job_->Heartbeat(1, 1);
  }
  absl::Status aborted = parked.get();
  EXPECT_EQ(aborted.code(), absl::StatusCode::kAborted);
  EXPECT_EQ(aborted.message(),
            "job job-1: generation 1 ended: rank 2 (host h2, worker w2) missed its heartbeat lease of 300ms");
  EXPECT_EQ(job_->Heartbeat(1, 0).status().code(), absl::StatusCode::kAborted);
  EXPECT_EQ(job_->View(false).phase, JobPhase::kFailed);
  // Survivors and a replacement rejoin into generation 2; generation 1 is then stale.
  std::vector<Assignment> second = JoinAll(3);
  EXPECT_EQ(second[0].generation, 2u);
  absl::StatusOr<Millis> stale = job_->Heartbeat(1, 0);
  EXPECT_EQ(stale.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(stale.status().message(), "job job-1: generation 1 is over; the job is in generation 2: rejoin");
}

TEST_F(JobTest, JoinWhileRunningEndsTheGeneration) {
  JoinAll(2);
  StatusResult parked;
  job_->Barrier(1, 0, "x", 5s, parked.callback());
  Result<Assignment> newcomer;
  job_->Join(Worker(9, 2, "z"), 5s, newcomer.callback());
  EXPECT_EQ(parked.get().message(),
            "job job-1: generation 1 ended: worker w9 (host z) joined while generation 1 was running");
  EXPECT_EQ(job_->View(false).generation, 2u);
}

TEST_F(JobTest, LeaveEndsOrCompletesTheGeneration) {
  JoinAll(2);
  ASSERT_TRUE(job_->Leave(1, 0, true, "").ok());
  EXPECT_EQ(job_->View(false).phase, JobPhase::kRunning);
  ASSERT_TRUE(job_->Leave(1, 1, true, "").ok());
  EXPECT_EQ(job_->View(false).phase, JobPhase::kCompleted);
  EXPECT_EQ((*store_->LoadJobs())[0].phase, JobPhase::kCompleted);

  JoinAll(2);  // generation 2
  StatusResult parked;
  job_->Barrier(2, 0, "x", 5s, parked.callback());
  ASSERT_TRUE(job_->Leave(2, 1, false, "CUDA error: out of memory").ok());
  EXPECT_EQ(parked.get().message(),
            "job job-1: generation 2 ended: rank 1 (host h1, worker w1) left: CUDA error: out of memory");
}

TEST_F(JobTest, RestoreKeepsTheRecordAndFailsARunningGeneration) {
  ASSERT_TRUE(job_->Record(Args(2, Dtype::kFloat32)).ok());
  JoinAll(2);
  auto restored = std::make_shared<Job>("job-1", store_.get(), &timers_, options_);
  restored->Restore((*store_->LoadJobs())[0]);
  JobView view = restored->View(false);
  EXPECT_EQ(view.tp_init->tp_size, 2);
  EXPECT_EQ(view.generation, 1u);
  EXPECT_EQ(view.phase, JobPhase::kFailed);
  EXPECT_EQ(view.end_reason, "the coordinator restarted while generation 1 was running; rejoin to start generation 2");
}

TEST_F(JobTest, ShutdownAnswersParkedCallsWithUnavailable) {
  Result<Assignment> parked;
  job_->Join(Worker(0, 2), 10s, parked.callback());
  job_->Shutdown();
  EXPECT_EQ(parked.get().status().code(), absl::StatusCode::kUnavailable);
}

TEST_F(JobTest, ViewReportsPhaseTimings) {
  JoinAll(2);
  JobView view = job_->View(true);
  ASSERT_GE(view.timings.size(), 2u);
  EXPECT_EQ(view.timings[0].phase, "join");
  EXPECT_GE(view.timings[0].duration_ms, 0);
  EXPECT_EQ(view.timings[1].phase, "run");
  EXPECT_EQ(view.timings[1].duration_ms, -1);
  ASSERT_EQ(view.members.size(), 2u);
  EXPECT_EQ(view.members[1].rank, 1);
}

}  // namespace
}  // namespace tpcoord
