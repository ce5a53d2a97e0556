// The per-job state machine without a network, over a real (in-memory) SQLite state store: records, merges
// and config agreement, Join and rank assignment, unique IDs, the key-value store, barriers, leases,
// generations, restarts that the job's members cannot see, failed writes that change nothing, group commit,
// deletion and expiry.
#include "coordinator/job/job.h"

#include <gtest/gtest.h>

#include <future>
#include <thread>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/deepspeed_error.h"
#include "common/secrets.h"
#include "nlohmann/json.hpp"
#include "tests/support/failing_state_store.h"

namespace tpcoord {
namespace {

using namespace std::chrono_literals;

// The job's token and a member key that every worker of these tests carries (the admission tests use others).
const Caller kMember{Sha256("job-token-for-tests"), Sha256("member-key-for-tests"), false};

// The outcome of a call, filled by its callback.
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

TpInitArgs Args(int tp_size, Dtype dtype, std::optional<std::vector<int>> group = std::nullopt) {
  return *NormalizeTpInitArgs(tp_size, dtype, std::move(group));
}

std::string Id(char c) { return std::string(kUniqueIdBytes, c); }

std::vector<std::string> Bytes(const UniqueIds& ids) {
  std::vector<std::string> bytes;
  for (const auto& [slot, id] : ids) bytes.push_back(id);
  return bytes;
}

// What the store holds and what the view shows that must survive anything: compared before and after a
// failed write, and between a job and its restored copy.
std::string Durable(const std::optional<JobView>& view) {
  if (!view) return "<no job>";
  std::string s = absl::StrCat("generation ", view->generation, " ", JobPhaseName(view->phase), " world ",
                               view->world_size, " reason '", view->end_reason, "' config '", view->merged_config, "'");
  if (view->tp_init) absl::StrAppend(&s, " tp ", view->tp_init->tp_size, " groups ", view->tp_init->tp_groups.size());
  for (const MemberView& m : view->members) {
    if (m.rank >= 0) absl::StrAppend(&s, " [", m.rank, " ", m.worker_id, " ", m.host, m.finished ? " done" : "", "]");
  }
  return s;
}

class JobTest : public ::testing::Test {
 protected:
  JobTest() : sqlite_(*OpenSqliteStateStore(":memory:")), store_(sqlite_.get()) {
    options_.lease = 300ms;
    context_ = JobContext{nullptr, &timers_, &quota_, options_, nullptr, &metrics_};
    committer_ = std::make_unique<StateCommitter>(&store_);
    context_.committer = committer_.get();
    job_ = std::make_shared<Job>("job-1", &context_);
  }

  // A coordinator restart: the job as a new coordinator builds it from the store.
  std::shared_ptr<Job> Restart() {
    StatusResult synced;  // what was asked for before the "crash" is on disk
    job_->Sync(synced.callback());
    EXPECT_TRUE(synced.get().ok());
    job_->Shutdown();
    auto restored = std::make_shared<Job>("job-1", &context_);
    std::map<std::string, std::vector<StateEntry>> jobs = SplitByJob(*sqlite_->Scan("j/"));
    absl::StatusOr<StoredJob> stored = DecodeJob("job-1", jobs["job-1"]);
    EXPECT_TRUE(stored.ok()) << stored.status();
    if (stored.ok()) restored->Restore(*std::move(stored));
    return restored;
  }

  std::vector<StateEntry> Stored() { return *sqlite_->Scan(""); }
  // Everything the store holds, as one string.
  std::string StoredBytes() {
    std::string all;
    for (const StateEntry& e : Stored()) absl::StrAppend(&all, e.key, "=", e.value, ";");
    return all;
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
      job_->Join(kMember, args, 5s, results[i].callback());
    }
    std::vector<Assignment> out;
    for (auto& r : results) {
      absl::StatusOr<Assignment> a = r.get();
      EXPECT_TRUE(a.ok()) << a.status();
      out.push_back(a.ok() ? *a : Assignment{});
    }
    return out;
  }

  // The job's calls, waited for.
  absl::StatusOr<RecordOutcome> Record(const TpInitArgs& args) {
    Result<RecordOutcome> r;
    job_->Record(kMember, args, r.callback());
    return r.get();
  }
  absl::StatusOr<MergeOutcome> Merge(const std::string& config, uint64_t generation, int rank) {
    Result<MergeOutcome> r;
    job_->Merge(kMember, config, false, generation, rank, r.callback());
    return r.get();
  }
  absl::Status Publish(uint64_t generation, int rank, UniqueIds ids) {
    StatusResult r;
    job_->PublishUniqueIds(kMember, generation, rank, std::move(ids), r.callback());
    return r.get();
  }
  absl::Status Set(uint64_t generation, const std::string& key, const std::string& value) {
    StatusResult r;
    job_->StoreSet(kMember, generation, key, value, r.callback());
    return r.get();
  }
  absl::StatusOr<int64_t> Add(uint64_t generation, const std::string& key, int64_t delta) {
    Result<int64_t> r;
    job_->StoreAdd(kMember, generation, key, delta, r.callback());
    return r.get();
  }
  absl::StatusOr<std::string> CompareSet(uint64_t generation, const std::string& key, const std::string& expected,
                                         const std::string& desired) {
    Result<std::string> r;
    job_->StoreCompareSet(kMember, generation, key, expected, desired, r.callback());
    return r.get();
  }
  absl::StatusOr<bool> Erase(uint64_t generation, const std::string& key) {
    Result<bool> r;
    job_->StoreDelete(kMember, generation, key, r.callback());
    return r.get();
  }
  absl::Status Leave(uint64_t generation, int rank, bool finished, const std::string& reason = "") {
    StatusResult r;
    job_->Leave(kMember, generation, rank, finished, reason, r.callback());
    return r.get();
  }
  absl::Status Barrier(uint64_t generation, int rank, const std::string& name, uint64_t round = 0) {
    StatusResult r;
    job_->Barrier(kMember, generation, rank, name, round, 5s, r.callback());
    return r.get();
  }
  absl::Status Delete(bool force) {
    StatusResult r;
    job_->Delete(kMember, force, r.callback());
    return r.get();
  }
  // The view once every call made so far has been applied.
  JobView View(bool with_members = true) {
    StatusResult synced;
    job_->Sync(synced.callback());
    EXPECT_TRUE(synced.get().ok());
    std::optional<JobView> view = job_->View(with_members);
    EXPECT_TRUE(view.has_value());
    return view.value_or(JobView{});
  }

  // The value of `name`{label=value} in metrics_, or -1 if there is no such series.
  double Metric(const std::string& name, const std::string& label = "", const std::string& value = "") {
    for (const prometheus::MetricFamily& family : metrics_.registry()->Collect()) {
      if (family.name != name) continue;
      for (const prometheus::ClientMetric& m : family.metric) {
        if (!label.empty() && (m.label.empty() || m.label[0].name != label || m.label[0].value != value)) continue;
        return family.type == prometheus::MetricType::Counter ? m.counter.value : m.gauge.value;
      }
    }
    return -1;
  }

  Metrics metrics_;
  JobOptions options_;
  TimerQueue timers_;
  std::unique_ptr<StateStore> sqlite_;
  testing::FailingStateStore store_;
  StoreQuota quota_{int64_t{1} << 30};
  JobContext context_;
  std::unique_ptr<StateCommitter> committer_;
  std::shared_ptr<Job> job_;
};

// --- record and merge -----------------------------------------------------------------------------------

TEST_F(JobTest, RecordPersistsAndConflictsChangeNothing) {
  ASSERT_TRUE(Record(Args(2, Dtype::kBFloat16)).value().created);
  EXPECT_FALSE(Record(Args(2, Dtype::kBFloat16)).value().created);
  const std::vector<StateEntry> before = Stored();
  absl::StatusOr<RecordOutcome> conflict = Record(Args(4, Dtype::kBFloat16));
  ASSERT_FALSE(conflict.ok());
  EXPECT_EQ(conflict.status().message(), "Conflicting tp_model_init arguments detected across multiple calls.");
  EXPECT_EQ(*ErrorContext(conflict.status()),
            "job job-1: recorded tp_size=2 dtype=torch.bfloat16 tp_group=None; this call tp_size=4 "
            "dtype=torch.bfloat16 tp_group=None");
  EXPECT_EQ(Stored().size(), before.size());
  job_ = Restart();
  EXPECT_EQ(View(false).tp_init->tp_size, 2);
}

TEST_F(JobTest, StandaloneMergeIsADryRun) {
  ASSERT_TRUE(Record(Args(2, Dtype::kBFloat16)).ok());
  absl::StatusOr<MergeOutcome> merged = Merge(R"({"bf16": {"enabled": true}})", 0, 0);
  ASSERT_TRUE(merged.ok()) << merged.status();
  EXPECT_TRUE(merged->tp_init_recorded);
  EXPECT_EQ(merged->merged_config, R"({"bf16":{"enabled":true},"tensor_parallel":{"autotp_size":2,"tp":{"tp_size":2}}})");
  absl::StatusOr<MergeOutcome> bad = Merge(R"({"fp16": {"enabled": true}})", 0, 0);
  ASSERT_FALSE(bad.ok());
  EXPECT_EQ(bad.status().message(),
            "Conflicting dtype: config uses torch.float16 but tp_model_init requested torch.bfloat16.");
  EXPECT_EQ(Merge("{", 0, 0).status().code(), absl::StatusCode::kInvalidArgument);
  // Only a member's merge in a generation becomes the job's merged config (a standalone one could
  // otherwise replace what a running job shows).
  EXPECT_EQ(View().merged_config, "");
  job_ = Restart();
  EXPECT_EQ(View().merged_config, "");
}

TEST_F(JobTest, CallsOnAJobThatDoesNotExistLeaveNoTrace) {
  // A standalone merge of a job nobody recorded answers, and the job still does not exist.
  absl::StatusOr<MergeOutcome> merged = Merge(R"({"train_batch_size": 8})", 0, 0);
  ASSERT_TRUE(merged.ok()) << merged.status();
  EXPECT_FALSE(merged->tp_init_recorded);
  EXPECT_FALSE(job_->View(false).has_value());
  EXPECT_TRUE(job_->gone());
  EXPECT_TRUE(Stored().empty());
}

TEST_F(JobTest, RejectedJoinOfANewJobLeavesNoTrace) {
  Result<Assignment> r;
  JoinArgs args = Worker(0, 4);
  args.tp_size = 3;  // does not divide the world
  job_->Join(kMember, args, 5s, r.callback());
  EXPECT_EQ(r.get().status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(job_->gone());
  EXPECT_FALSE(job_->View(false).has_value());
  EXPECT_TRUE(Stored().empty());
}

TEST_F(JobTest, MembersMustAgreeOnTheConfig) {  // gap G27
  ASSERT_TRUE(Record(Args(2, Dtype::kFloat32)).ok());
  JoinAll(4);
  const std::string config = R"({"train_batch_size": 16, "gradient_clipping": 1.0})";
  ASSERT_TRUE(Merge(config, 1, 0).ok());
  ASSERT_TRUE(Merge(R"({"gradient_clipping": 1.0, "train_batch_size": 16})", 1, 1).ok());
  absl::StatusOr<MergeOutcome> differs = Merge(R"({"train_batch_size": 32, "gradient_clipping": 1.0})", 1, 3);
  ASSERT_FALSE(differs.ok());
  EXPECT_EQ(differs.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(differs.status().message(),
            "job job-1: the config of rank 3 differs from the config rank 0 merged first in generation 1 at "
            "/train_batch_size: rank 0 has 16, rank 3 has 32; every worker of a job must use the same DeepSpeed "
            "config");
  EXPECT_EQ(Merge(config, 1, 4).status().code(), absl::StatusCode::kInvalidArgument);  // rank range
  EXPECT_EQ(Merge(config, 2, 0).status().code(), absl::StatusCode::kFailedPrecondition);  // generation
  // The reference survives a restart: a member merging after it is still held to it.
  job_ = Restart();
  EXPECT_EQ(Merge(R"({"train_batch_size": 32, "gradient_clipping": 1.0})", 1, 2).status().code(),
            absl::StatusCode::kFailedPrecondition);
  EXPECT_TRUE(Merge(config, 1, 2).ok());
}

TEST_F(JobTest, EachMemberGetsItsOwnRecordedTpGroup) {
  ASSERT_TRUE(Record(Args(2, Dtype::kFloat32, std::vector<int>{0, 1})).ok());
  ASSERT_TRUE(Record(Args(2, Dtype::kFloat32, std::vector<int>{2, 3})).ok());
  JoinAll(4);
  auto group_of = [&](int rank) {
    return nlohmann::json::parse(Merge("{}", 1, rank)->merged_config)["tensor_parallel"]["tp"]["tp_group"];
  };
  EXPECT_EQ(group_of(0), nlohmann::json::array({0, 1}));
  EXPECT_EQ(group_of(3), nlohmann::json::array({2, 3}));
}

// --- Join -----------------------------------------------------------------------------------------------

TEST_F(JobTest, JoinParksUntilTheWorldIsCompleteThenAnswersEveryone) {
  ASSERT_TRUE(Record(Args(2, Dtype::kFloat32)).ok());
  Result<Assignment> first;
  job_->Join(kMember, Worker(0, 4, "a"), 5s, first.callback());
  EXPECT_FALSE(first.ready());
  EXPECT_EQ(View(false).phase, JobPhase::kJoining);
  std::vector<Result<Assignment>> rest(3);
  job_->Join(kMember, Worker(1, 4, "b"), 5s, rest[0].callback());
  job_->Join(kMember, Worker(2, 4, "a"), 5s, rest[1].callback());
  job_->Join(kMember, Worker(3, 4, "b"), 5s, rest[2].callback());
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
  EXPECT_EQ(View(false).phase, JobPhase::kRunning);
  job_ = Restart();
  EXPECT_EQ(View(false).phase, JobPhase::kRunning);
}

TEST_F(JobTest, JoinTimeoutNamesWhoIsMissing) {
  Result<Assignment> r0, r2;
  job_->Join(kMember, Worker(0, 4, "a", 0), 100ms, r0.callback());
  job_->Join(kMember, Worker(2, 4, "c", 2), 5s, r2.callback());
  absl::StatusOr<Assignment> timed_out = r0.get();
  ASSERT_EQ(timed_out.status().code(), absl::StatusCode::kDeadlineExceeded);
  EXPECT_EQ(timed_out.status().message(),
            "job job-1: Join timed out after 100ms in generation 1: 2 of 4 workers joined; missing: rank 1, rank 3");
  // The worker that gave up left the joining world.
  EXPECT_EQ(View().members.size(), 1u);
}

TEST_F(JobTest, JoinRejectsBadRanksAndMismatchedWorlds) {
  Result<Assignment> out_of_range, duplicate, mismatch, too_big, ok;
  job_->Join(kMember, Worker(0, 4, "a", 1), 5s, ok.callback());
  job_->Join(kMember, Worker(5, 4, "a", 4), 5s, out_of_range.callback());
  EXPECT_EQ(out_of_range.get().status().message(), "job job-1: requested_rank 4 is out of range for world_size 4");
  job_->Join(kMember, Worker(1, 4, "b", 1), 5s, duplicate.callback());
  EXPECT_EQ(duplicate.get().status().code(), absl::StatusCode::kAlreadyExists);
  EXPECT_EQ(duplicate.get().status().message(),
            "job job-1: requested_rank 1 is already held by worker w0 (host a) in generation 1");
  job_->Join(kMember, Worker(2, 8, "c"), 5s, mismatch.callback());
  EXPECT_EQ(mismatch.get().status().code(), absl::StatusCode::kFailedPrecondition);
  JoinArgs tp = Worker(3, 4, "d");
  tp.tp_size = 8;
  job_->Join(kMember, tp, 5s, too_big.callback());
  EXPECT_EQ(too_big.get().status().message(),
            "job job-1: tp_size 8 is larger than world_size 4: a TP group cannot span more ranks than exist");
  EXPECT_FALSE(ok.ready());
  job_->Cancel(12345);  // unknown ids are ignored
}

TEST_F(JobTest, JoinTpSizeMustMatchTheRecord) {
  ASSERT_TRUE(Record(Args(2, Dtype::kFloat32)).ok());
  Result<Assignment> r;
  JoinArgs args = Worker(0, 4);
  args.tp_size = 4;
  job_->Join(kMember, args, 5s, r.callback());
  EXPECT_EQ(r.get().status().message(),
            "job job-1: Join asks for tp_size 4 but tp_model_init recorded tp_size 2 for this job");
}

TEST_F(JobTest, RecordedGroupsMustBeTpGroupsOfTheMesh) {  // table rows 9/11, stricter than DeepSpeed (G4)
  ASSERT_TRUE(Record(Args(2, Dtype::kFloat32, std::vector<int>{1, 2})).ok());
  std::vector<Result<Assignment>> r(4);
  for (int i = 0; i < 4; ++i) job_->Join(kMember, Worker(i, 4), 5s, r[i].callback());
  EXPECT_EQ(r[3].get().status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_NE(r[0].get().status().message().find("the recorded tp_group [1, 2] is not a TP group of the mesh"),
            absl::string_view::npos);
  EXPECT_EQ(View(false).phase, JobPhase::kFailed);
}

TEST_F(JobTest, CancelledJoinLeavesTheWorld) {
  Result<Assignment> r;
  const uint64_t id = job_->Join(kMember, Worker(0, 2), 5s, r.callback());
  job_->Cancel(id);
  EXPECT_EQ(r.get().status().code(), absl::StatusCode::kCancelled);
  EXPECT_TRUE(View().members.empty());
}

TEST_F(JobTest, RetriedJoinOfAMemberGetsTheSameAnswer) {
  std::vector<Assignment> a = JoinAll(2);
  Result<Assignment> again;
  job_->Join(kMember, Worker(1, 2), 5s, again.callback());
  EXPECT_EQ(again.get()->rank, a[1].rank);
  EXPECT_EQ(again.get()->generation, 1u);
}

TEST_F(JobTest, ParkedCallsAreBounded) {
  context_.options.max_parked_calls = 64;
  job_ = std::make_shared<Job>("job-1", &context_);
  std::vector<Result<Assignment>> joins(65);
  for (size_t i = 0; i < joins.size(); ++i) job_->Join(kMember, Worker(static_cast<int>(i), 1000), 5s, joins[i].callback());
  absl::StatusOr<Assignment> refused = joins.back().get();
  EXPECT_EQ(refused.status().code(), absl::StatusCode::kResourceExhausted);
  EXPECT_EQ(refused.status().message(), "job job-1: 64 calls are parked in this job already; the limit is 64");
  EXPECT_FALSE(joins.front().ready());
  job_->Shutdown();
}

// --- unique IDs -----------------------------------------------------------------------------------------

TEST_F(JobTest, UniqueIdsReachEveryMemberByteIdentical) {
  JoinAll(4, 2);
  Result<UniqueIds> member;
  job_->GetUniqueIds(kMember, 1, 1, {{GroupKind::kTp, 0}, {GroupKind::kWorld, 0}}, 5s, member.callback());
  EXPECT_FALSE(member.ready());
  ASSERT_TRUE(Publish(1, 0, {{{GroupKind::kTp, 0}, Id('\x07')}}).ok());
  EXPECT_FALSE(member.ready());  // still waiting for the world id
  ASSERT_TRUE(Publish(1, 0, {{{GroupKind::kWorld, 0}, Id('\x09')}}).ok());
  EXPECT_EQ(Bytes(*member.get()), std::vector<std::string>({Id('\x07'), Id('\x09')}));
  // Publishing the same bytes again is a no-op; a late Get answers at once, also after a restart.
  EXPECT_TRUE(Publish(1, 0, {{{GroupKind::kTp, 0}, Id('\x07')}}).ok());
  job_ = Restart();
  Result<UniqueIds> late;
  job_->GetUniqueIds(kMember, 1, 0, {{GroupKind::kTp, 0}}, 5s, late.callback());
  EXPECT_EQ(Bytes(*late.get()), std::vector<std::string>({Id('\x07')}));
}

TEST_F(JobTest, MalformedPublishesChangeNothing) {
  JoinAll(4, 2);
  auto publish = [&](int rank, GroupId group, std::string bytes) {
    return Publish(1, rank, {{UniqueIdSlot{group}, std::move(bytes)}});
  };
  EXPECT_EQ(publish(1, {GroupKind::kTp, 0}, Id('x')).code(), absl::StatusCode::kPermissionDenied);
  EXPECT_EQ(publish(0, {GroupKind::kTp, 5}, Id('x')).code(), absl::StatusCode::kInvalidArgument);
  ASSERT_TRUE(publish(2, {GroupKind::kTp, 1}, Id('a')).ok());
  EXPECT_EQ(publish(2, {GroupKind::kTp, 1}, Id('b')).code(), absl::StatusCode::kFailedPrecondition);
  // A publish with one bad entry stores none of its entries.
  EXPECT_FALSE(Publish(1, 0, {{{GroupKind::kTp, 0}, Id('c')}, {{GroupKind::kTp, 1}, Id('c')}}).ok());
  Result<UniqueIds> r;
  job_->GetUniqueIds(kMember, 1, 1, {{GroupKind::kTp, 0}}, 50ms, r.callback());
  EXPECT_EQ(r.get().status().message(),
            "job job-1: GetUniqueId timed out after 50ms waiting for the unique id of tp/0 from its leader rank 0 "
            "(host h0)");
  Result<UniqueIds> not_member;
  job_->GetUniqueIds(kMember, 1, 1, {{GroupKind::kTp, 1}}, 5s, not_member.callback());
  EXPECT_EQ(not_member.get().status().code(), absl::StatusCode::kPermissionDenied);
}

// --- key-value store ------------------------------------------------------------------------------------

TEST_F(JobTest, StoreHasC10dSemantics) {
  JoinAll(2);
  Result<std::string> get;
  job_->StoreGet(kMember, 1, "k", 5s, get.callback());
  StatusResult wait;
  job_->StoreWait(kMember, 1, {"k", "n"}, 5s, wait.callback());
  ASSERT_TRUE(Set(1, "k", "v1").ok());
  EXPECT_EQ(*get.get(), "v1");
  EXPECT_FALSE(wait.ready());
  EXPECT_EQ(*Add(1, "n", 5), 5);
  EXPECT_EQ(*Add(1, "n", -2), 3);
  EXPECT_TRUE(wait.get().ok());
  EXPECT_EQ(Add(1, "k", 1).status().code(), absl::StatusCode::kFailedPrecondition);
  // compareSet: missing key + empty expected sets; mismatch returns the current value.
  EXPECT_EQ(*CompareSet(1, "c", "", "x"), "x");
  EXPECT_EQ(*CompareSet(1, "c", "nope", "y"), "x");
  EXPECT_EQ(*CompareSet(1, "c", "x", "y"), "y");
  EXPECT_EQ(*CompareSet(1, "missing", "e", "z"), "e");
  EXPECT_TRUE(*job_->StoreCheck(kMember, 1, {"k", "n", "c"}));
  EXPECT_FALSE(*job_->StoreCheck(kMember, 1, {"k", "missing"}));
  EXPECT_EQ(*job_->StoreNumKeys(kMember, 1), 3);
  EXPECT_TRUE(*Erase(1, "k"));
  EXPECT_FALSE(*Erase(1, "k"));
  EXPECT_EQ(*job_->StoreNumKeys(kMember, 1), 2);
  StatusResult never;
  job_->StoreWait(kMember, 1, {"never"}, 50ms, never.callback());
  EXPECT_EQ(never.get().message(), "job job-1: store wait timed out after 50ms; keys never set: \"never\"");
  EXPECT_EQ(Set(7, "k", "v").code(), absl::StatusCode::kFailedPrecondition);
  // Every entry survives a restart.
  job_ = Restart();
  EXPECT_EQ(*job_->StoreNumKeys(kMember, 1), 2);
  EXPECT_EQ(*CompareSet(1, "c", "", "?"), "y");
}

TEST_F(JobTest, StoreAddPastInt64MaxFailsAndChangesNothing) {
  JoinAll(1);
  ASSERT_EQ(*Add(1, "n", INT64_MAX - 1), INT64_MAX - 1);
  absl::StatusOr<int64_t> overflow = Add(1, "n", 2);
  EXPECT_EQ(overflow.status().code(), absl::StatusCode::kOutOfRange);
  EXPECT_EQ(overflow.status().message(),
            "job job-1: adding 2 to key \"n\" (9223372036854775806) leaves the range of a 64-bit integer; the key is "
            "unchanged");
  EXPECT_EQ(Add(1, "m", INT64_MIN).value(), INT64_MIN);
  EXPECT_EQ(Add(1, "m", -1).status().code(), absl::StatusCode::kOutOfRange);
  EXPECT_EQ(*Add(1, "n", 1), INT64_MAX);
}

TEST_F(JobTest, EveryStoreWriteCountsAgainstTheQuota) {
  StoreQuota small(3000);
  context_.store_quota = &small;
  job_ = std::make_shared<Job>("job-1", &context_);
  JoinAll(1);
  ASSERT_TRUE(Set(1, "a", std::string(1000, 'x')).ok());
  ASSERT_EQ(*CompareSet(1, "b", "", std::string(1000, 'y')), std::string(1000, 'y'));
  absl::StatusOr<std::string> full = CompareSet(1, "c", "", std::string(1000, 'z'));
  EXPECT_EQ(full.status().code(), absl::StatusCode::kResourceExhausted);
  EXPECT_EQ(Set(1, "d", std::string(1000, 'z')).code(), absl::StatusCode::kResourceExhausted);
  EXPECT_EQ(*job_->StoreNumKeys(kMember, 1), 2);
  // Freed bytes can be used again; the quota is given back when the job goes.
  ASSERT_TRUE(*Erase(1, "a"));
  EXPECT_TRUE(Set(1, "d", std::string(1000, 'z')).ok());
  job_->Shutdown();
  std::weak_ptr<Job> weak = job_;
  job_.reset();
  for (int i = 0; i < 1000 && !weak.expired(); ++i) std::this_thread::sleep_for(1ms);  // the committer lets go
  EXPECT_TRUE(weak.expired());
  EXPECT_EQ(small.used(), 0);
  context_.store_quota = &quota_;
}

// --- barriers, leases, generations ----------------------------------------------------------------------

TEST_F(JobTest, BarrierReleasesEveryoneWhenTheLastRankArrives) {
  JoinAll(3);
  StatusResult b0, b1;
  job_->Barrier(kMember, 1, 0, "start", 0, 5s, b0.callback());
  job_->Barrier(kMember, 1, 1, "start", 0, 5s, b1.callback());
  EXPECT_FALSE(b0.ready());
  EXPECT_EQ(View(false).missing, std::vector<std::string>({"barrier \"start\": rank 2 (host h2)"}));
  EXPECT_TRUE(Barrier(1, 2, "start").ok());
  EXPECT_TRUE(b0.get().ok());
  EXPECT_TRUE(b1.get().ok());
  // The same name can be used again.
  StatusResult again;
  job_->Barrier(kMember, 1, 0, "start", 0, 50ms, again.callback());
  EXPECT_EQ(again.get().message(),
            "job job-1: barrier \"start\" timed out after 50ms; ranks that never arrived: rank 1 (host h1), rank 2 "
            "(host h2)");
}

TEST_F(JobTest, BarrierRoundsMakeRetriesIdempotent) {
  JoinAll(2);
  StatusResult first;
  job_->Barrier(kMember, 1, 0, "b", 1, 5s, first.callback());
  job_->Barrier(kMember, 1, 0, "b", 1, 5s, StatusResult().callback());  // a retry of the same round replaces it
  EXPECT_EQ(first.get().code(), absl::StatusCode::kCancelled);
  StatusResult zero;
  job_->Barrier(kMember, 1, 0, "b", 1, 5s, zero.callback());
  ASSERT_TRUE(Barrier(1, 1, "b", 1).ok());  // round 1 completes: the arrival of rank 0 counted once
  EXPECT_TRUE(zero.get().ok());
  // Rank 0's answer was lost in a coordinator restart; its retry of round 1 passes at once.
  job_ = Restart();
  EXPECT_TRUE(Barrier(1, 0, "b", 1).ok());
  absl::Status ahead = Barrier(1, 0, "b", 3);
  EXPECT_EQ(ahead.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(ahead.message(),
            "job job-1: rank 0 asks for round 3 of barrier \"b\", which has completed 1 round(s); the next is 2");
}

TEST_F(JobTest, LongListsOfMissingRanksAreShortened) {
  JoinAll(40);  // hosts h0..h39, ranked in host-name order: h0, h1, h10, h11, ...
  StatusResult alone;
  job_->Barrier(kMember, 1, 0, "x", 0, 50ms, alone.callback());
  const std::string message(alone.get().message());
  EXPECT_NE(message.find("ranks that never arrived: rank 1 (host h1), rank 2 (host h10), "), std::string::npos);
  EXPECT_NE(message.find("rank 16 (host h23) and 23 more"), std::string::npos) << message;
}

TEST_F(JobTest, MissedLeaseEndsTheGenerationAndAbortsParkedCalls) {
  JoinAll(3);
  StatusResult parked;
  job_->Barrier(kMember, 1, 0, "step", 0, 10s, parked.callback());
  // Ranks 0 and 1 keep heartbeating; rank 2 (host h2) is silent.
  for (int i = 0; i < 8 && !parked.ready(); ++i) {
    std::this_thread::sleep_for(100ms);
    (void)job_->Heartbeat(kMember, 1, 0);
    (void)job_->Heartbeat(kMember, 1, 1);
  }
  absl::Status aborted = parked.get();
  EXPECT_EQ(aborted.code(), absl::StatusCode::kAborted);
  EXPECT_EQ(aborted.message(),
            "job job-1: generation 1 ended: rank 2 (host h2, worker w2) missed its heartbeat lease of 300ms");
  EXPECT_EQ(job_->Heartbeat(kMember, 1, 0).status().code(), absl::StatusCode::kAborted);
  EXPECT_EQ(View(false).phase, JobPhase::kFailed);
  // Survivors and a replacement rejoin into generation 2; generation 1 is then stale.
  std::vector<Assignment> second = JoinAll(3);
  EXPECT_EQ(second[0].generation, 2u);
  absl::StatusOr<Millis> stale = job_->Heartbeat(kMember, 1, 0);
  EXPECT_EQ(stale.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(stale.status().message(), "job job-1: generation 1 is over; the job is in generation 2: rejoin");
}

// A member session that closes before its member finished is a death, seen at once: the generation ends
// naming that rank, and every other open session is ended with the same reason.
TEST_F(JobTest, AClosedSessionEndsTheGenerationNamingItsRank) {
  JoinAll(3);
  std::vector<StatusResult> ends(3);
  for (int rank = 0; rank < 3; ++rank) {
    ASSERT_EQ(*job_->OpenSession(kMember, 1, rank, 100 + rank, ends[rank].callback()), 300ms);
  }
  // Only the key a seat was joined with opens its session.
  StatusResult refused;
  const Caller stranger{kMember.token_sha256, Sha256("another-member-key"), false};
  EXPECT_EQ(job_->OpenSession(stranger, 1, 1, 99, refused.callback()).status().code(),
            absl::StatusCode::kPermissionDenied);
  ASSERT_TRUE(Leave(1, 0, true).ok());
  job_->CloseSession(1, 0, 100);  // finished first: not a death
  EXPECT_EQ(View(false).phase, JobPhase::kRunning);
  job_->CloseSession(1, 2, 999);  // not rank 2's session
  EXPECT_EQ(View(false).phase, JobPhase::kRunning);
  job_->CloseSession(1, 2, 102);
  const std::string reason = "job job-1: generation 1 ended: rank 2 (host h2, worker w2) is gone: its session closed "
                             "before it finished (the process died or lost its connection)";
  EXPECT_EQ(ends[1].get().code(), absl::StatusCode::kAborted);
  EXPECT_EQ(ends[1].get().message(), reason);
  EXPECT_FALSE(ends[0].ready());  // closed already
  EXPECT_EQ(View(false).phase, JobPhase::kFailed);
  EXPECT_EQ(View(false).end_reason, reason.substr(std::string("job job-1: generation 1 ended: ").size()));
  // A session of a generation that ended is refused.
  StatusResult late;
  EXPECT_EQ(job_->OpenSession(kMember, 1, 1, 200, late.callback()).status().code(), absl::StatusCode::kAborted);
}

TEST_F(JobTest, ANewerSessionReplacesAnOlderOneAndShutdownEndsThemUnavailable) {
  JoinAll(2);
  StatusResult old_end, new_end, other_end;
  ASSERT_TRUE(job_->OpenSession(kMember, 1, 0, 1, old_end.callback()).ok());
  ASSERT_TRUE(job_->OpenSession(kMember, 1, 0, 2, new_end.callback()).ok());  // reconnected
  ASSERT_TRUE(job_->OpenSession(kMember, 1, 1, 3, other_end.callback()).ok());
  job_->CloseSession(1, 0, 1);  // the old stream's close comes late
  EXPECT_EQ(View(false).phase, JobPhase::kRunning);
  job_->Shutdown();
  EXPECT_EQ(new_end.get().code(), absl::StatusCode::kUnavailable);
  EXPECT_EQ(other_end.get().code(), absl::StatusCode::kUnavailable);
  EXPECT_FALSE(old_end.ready());
  job_->CloseSession(1, 0, 2);  // streams cut by the stopping server: not deaths
  job_ = Restart();
  EXPECT_EQ(View(false).phase, JobPhase::kRunning);
}

// A world-size range: with fewer than world_size workers after rejoin_timeout, the generation starts with
// the whole TP groups that joined; requested ranks keep their order, renumbered; a worker of an incomplete
// TP group is told it was left out.
TEST_F(JobTest, AJoiningGenerationShrinksToWholeTpGroupsAfterTheRejoinTimeout) {
  std::vector<Result<Assignment>> joins(3);
  for (int i = 0; i < 3; ++i) {
    JoinArgs args = Worker(i, 6, "", 2 + i);  // requested ranks 2, 3, 4 of 6
    args.tp_size = 2;
    args.min_world_size = 2;
    args.rejoin_timeout = 200ms;
    job_->Join(kMember, args, 5s, joins[i].callback());
  }
  ASSERT_TRUE(joins[0].get().ok()) << joins[0].get().status();
  EXPECT_EQ(joins[0].get()->rank, 0);
  EXPECT_EQ(joins[1].get()->rank, 1);
  EXPECT_EQ(joins[0].get()->mesh.world_size(), 2);
  EXPECT_EQ(joins[0].get()->mesh.dp_size(), 1);
  EXPECT_EQ(joins[2].get().status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(joins[2].get().status().message(),
            "job job-1: generation 1 started with 2 of 6 workers (whole TP groups of 2) without this one; join again "
            "when it ends");
  const JobView view = View();
  EXPECT_EQ(view.phase, JobPhase::kRunning);
  EXPECT_EQ(view.world_size, 2);
  ASSERT_TRUE(Merge(R"({"train_batch_size": 8, "train_micro_batch_size_per_gpu": 4})", 1, 0).ok());
  // Every worker of a generation must ask for the same range.
  JoinArgs other = Worker(7, 6);
  other.min_world_size = 4;
  Result<Assignment> first;
  job_->Join(kMember, Worker(8, 6), 5s, first.callback());  // opens generation 2 (ends 1)
  Result<Assignment> mismatched;
  job_->Join(kMember, other, 5s, mismatched.callback());
  EXPECT_EQ(mismatched.get().status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(mismatched.get().status().message(),
            "job job-1: Join asks for a world of 4 to 6 workers after 0 ms, but the worker(s) already in generation 2 "
            "joined for 6 to 6 after 0 ms");
}

TEST_F(JobTest, JoinWhileRunningEndsTheGeneration) {
  JoinAll(2);
  StatusResult parked;
  job_->Barrier(kMember, 1, 0, "x", 0, 5s, parked.callback());
  Result<Assignment> newcomer;
  job_->Join(kMember, Worker(9, 2, "z"), 5s, newcomer.callback());
  EXPECT_EQ(parked.get().message(),
            "job job-1: generation 1 ended: worker w9 (host z) joined while generation 1 was running");
  EXPECT_EQ(View(false).generation, 2u);
}

TEST_F(JobTest, LeaveEndsOrCompletesTheGeneration) {
  JoinAll(2);
  ASSERT_TRUE(Leave(1, 0, true).ok());
  EXPECT_EQ(View(false).phase, JobPhase::kRunning);
  ASSERT_TRUE(Leave(1, 1, true).ok());
  EXPECT_EQ(View(false).phase, JobPhase::kCompleted);
  EXPECT_TRUE(Leave(1, 1, true).ok());  // a retry of a finished member
  job_ = Restart();
  EXPECT_EQ(View(false).phase, JobPhase::kCompleted);

  JoinAll(2);  // generation 2
  StatusResult parked;
  job_->Barrier(kMember, 2, 0, "x", 0, 5s, parked.callback());
  ASSERT_TRUE(Leave(2, 1, false, "CUDA error: out of memory").ok());
  EXPECT_EQ(parked.get().message(),
            "job job-1: generation 2 ended: rank 1 (host h1, worker w1) left: CUDA error: out of memory");
}

// A member that leaves on a configuration error no restart cures says so: the others learn it as
// FAILED_PRECONDITION (stop), not ABORTED (rejoin), and a restarted coordinator still says the same.
TEST_F(JobTest, AFatalLeaveEndsTheGenerationForGood) {
  JoinAll(2);
  StatusResult parked, session;
  job_->Barrier(kMember, 1, 1, "x", 0, 5s, parked.callback());
  ASSERT_TRUE(job_->OpenSession(kMember, 1, 1, 7, session.callback()).ok());
  StatusResult left;
  job_->Leave(kMember, 1, 0, false, "merge: Check batch related parameters.", left.callback(), /*fatal=*/true);
  ASSERT_TRUE(left.get().ok());
  const std::string reason =
      "job job-1: generation 1 ended: rank 0 (host h0, worker w0) left: merge: Check batch related parameters.";
  for (const absl::Status& s : {parked.get(), session.get(), job_->Heartbeat(kMember, 1, 1).status()}) {
    EXPECT_EQ(s.code(), absl::StatusCode::kFailedPrecondition) << s;
    EXPECT_EQ(s.message(), reason);
  }
  job_ = Restart();
  EXPECT_EQ(job_->Heartbeat(kMember, 1, 1).status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(JoinAll(2)[0].generation, 2u);  // a fixed configuration starts afresh
  EXPECT_EQ(Leave(2, 1, false, "Connection reset by peer").code(), absl::StatusCode::kOk);
  EXPECT_EQ(job_->Heartbeat(kMember, 2, 0).status().code(), absl::StatusCode::kAborted);
}

TEST_F(JobTest, MembersFinishingTogetherCompleteTheGeneration) {
  JoinAll(8);
  std::vector<std::thread> threads;
  for (int r = 0; r < 8; ++r) threads.emplace_back([&, r] { EXPECT_TRUE(Leave(1, r, true).ok()); });
  for (std::thread& t : threads) t.join();
  for (int i = 0; i < 100 && View(false).phase != JobPhase::kCompleted; ++i) std::this_thread::sleep_for(10ms);
  EXPECT_EQ(View(false).phase, JobPhase::kCompleted);
  job_ = Restart();
  EXPECT_EQ(View(false).phase, JobPhase::kCompleted);
}

// --- history and progress -------------------------------------------------------------------------------

// Every generation leaves a record of how it went (tpctl events) in the store, in the same write that ends
// it, so that a restarted coordinator lists it as it was; the counters count each end once, and a restore
// counts nothing.
TEST_F(JobTest, EveryGenerationIsRecordedDurablyAndCountedOnce) {
  JoinAll(2);
  ASSERT_TRUE(Leave(1, 1, false, "CUDA error: out of memory").ok());  // generation 1: worker_left, rank 1
  JoinAll(2);
  Result<Assignment> newcomer;  // generation 2 ends as generation 3 opens: worker_rejoined
  job_->Join(kMember, Worker(9, 2, "z"), 5s, newcomer.callback());
  Result<Assignment> second;
  job_->Join(kMember, Worker(8, 2, "y"), 5s, second.callback());
  ASSERT_TRUE(newcomer.get().ok());
  ASSERT_TRUE(Leave(3, 0, true).ok());
  ASSERT_TRUE(Leave(3, 1, true).ok());
  EXPECT_EQ(Metric("tpcoord_generations_started_total"), 3);
  EXPECT_EQ(Metric("tpcoord_generations_ended_total", "reason", "worker_left"), 1);
  EXPECT_EQ(Metric("tpcoord_generations_ended_total", "reason", "worker_rejoined"), 1);
  EXPECT_EQ(Metric("tpcoord_generations_ended_total", "reason", "completed"), 1);

  job_ = Restart();
  const std::vector<GenerationRecord> history = View().history;
  ASSERT_EQ(history.size(), 3u);
  EXPECT_EQ(history[0].generation, 1u);
  EXPECT_EQ(history[0].phase, JobPhase::kFailed);
  EXPECT_EQ(history[0].end_cause, EndCause::kWorkerLeft);
  EXPECT_EQ(history[0].end_rank, 1);
  EXPECT_EQ(history[0].end_reason, "rank 1 (host h1, worker w1) left: CUDA error: out of memory");
  EXPECT_GT(history[0].running_unix_ms, 0);
  EXPECT_GE(history[0].ended_unix_ms, history[0].running_unix_ms);
  EXPECT_GE(history[0].running_unix_ms, history[0].started_unix_ms);
  EXPECT_EQ(history[1].phase, JobPhase::kFailed);
  EXPECT_EQ(history[1].end_cause, EndCause::kWorkerRejoined);
  EXPECT_EQ(history[1].end_rank, -1);
  EXPECT_EQ(history[1].end_reason, "worker w9 (host z) joined while generation 2 was running");
  EXPECT_EQ(history[2].phase, JobPhase::kCompleted);
  EXPECT_EQ(history[2].end_cause, EndCause::kNone);
  EXPECT_GT(history[2].ended_unix_ms, 0);
  EXPECT_EQ(Metric("tpcoord_generations_started_total"), 3);  // the restore counted nothing
  EXPECT_EQ(Metric("tpcoord_generations_ended_total", "reason", "completed"), 1);
}

TEST_F(JobTest, HistoryKeepsTheLatestGenerationsOnly) {
  const int generations = static_cast<int>(kMaxGenerationHistory) + 5;
  for (int g = 1; g <= generations; ++g) {
    JoinAll(1);
    ASSERT_TRUE(Leave(g, 0, false).ok());
  }
  int stored = 0;
  for (const StateEntry& e : Stored()) stored += e.key.find("/history/") != std::string::npos;
  EXPECT_EQ(stored, static_cast<int>(kMaxGenerationHistory));
  job_ = Restart();
  const std::vector<GenerationRecord> history = View().history;
  ASSERT_EQ(history.size(), kMaxGenerationHistory);
  EXPECT_EQ(history.front().generation, 6u);
  EXPECT_EQ(history.back().generation, static_cast<uint64_t>(generations));
  // Deleting the job deletes its history.
  ASSERT_TRUE(Delete(false).ok());
  EXPECT_EQ(StoredBytes(), "");
}

// Progress rides on heartbeats: checked, kept as the job's latest and on its curve across generations, and
// forgotten with the job.
TEST_F(JobTest, TrainingProgresssAreCheckedKeptAndForgottenWithTheJob) {
  JoinAll(2);
  TrainingProgress report{1, 10, 5.5, 1000, 0.25, std::nullopt};
  ASSERT_TRUE(job_->Heartbeat(kMember, 1, 0, &report).ok());
  report = {2, 10, 5.0, 1100, 0.2, 5.2};
  ASSERT_TRUE(job_->Heartbeat(kMember, 1, 0, &report).ok());
  TrainingProgress bad{11, 10, 1, 1, 1, std::nullopt};
  absl::Status refused = job_->Heartbeat(kMember, 1, 0, &bad).status();
  EXPECT_EQ(refused.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(refused.message(), "job job-1: progress.step is 11, past progress.total_steps 10");
  JobView view = View(false);
  ASSERT_TRUE(view.progress.has_value());
  EXPECT_EQ(view.progress->step, 2);
  EXPECT_EQ(view.eval_loss, 5.2);
  EXPECT_EQ(view.healthy_members, 2);
  EXPECT_EQ(job_->Curve().size(), 2u);
  ASSERT_TRUE(Leave(1, 1, false).ok());
  JoinAll(2);  // generation 2 resumes from step 1: the curve from there on is replaced
  report = {2, 10, 4.0, 1000, 0.2, std::nullopt};
  ASSERT_TRUE(job_->Heartbeat(kMember, 2, 1, &report).ok());
  ASSERT_EQ(job_->Curve().size(), 2u);
  EXPECT_EQ(job_->Curve()[1].loss, 4.0);
  ASSERT_TRUE(Delete(true).ok());
  auto fresh = std::make_shared<Job>("job-1", &context_);
  job_ = fresh;
  JoinAll(1);
  EXPECT_FALSE(View(false).progress.has_value());
  EXPECT_TRUE(job_->Curve().empty());
}

// --- restarts -------------------------------------------------------------------------------------------

TEST_F(JobTest, RestartContinuesARunningGeneration) {
  ASSERT_TRUE(Record(Args(2, Dtype::kFloat32)).ok());
  std::vector<Assignment> a = JoinAll(4);
  ASSERT_TRUE(Merge("{}", 1, 0).ok());
  ASSERT_TRUE(Publish(1, 0, {{{GroupKind::kTp, 0}, Id('t')}, {{GroupKind::kWorld, 0}, Id('w')}}).ok());
  ASSERT_TRUE(Set(1, "addr/0", "127.0.0.1:1234").ok());
  ASSERT_TRUE(Leave(1, 3, true).ok());
  const std::string before = Durable(job_->View(true));

  job_ = Restart();
  EXPECT_EQ(Durable(job_->View(true)), before);
  // Every member goes on where it was: same ranks for retried Joins, leases renewed, ids and entries there.
  Result<Assignment> again;
  job_->Join(kMember, Worker(1, 4), 5s, again.callback());
  EXPECT_EQ(again.get()->rank, a[1].rank);
  EXPECT_TRUE(job_->Heartbeat(kMember, 1, 2).ok());
  Result<UniqueIds> ids;
  job_->GetUniqueIds(kMember, 1, 1, {{GroupKind::kTp, 0}, {GroupKind::kWorld, 0}}, 5s, ids.callback());
  EXPECT_EQ(Bytes(*ids.get()), std::vector<std::string>({Id('t'), Id('w')}));
  Result<std::string> addr;
  job_->StoreGet(kMember, 1, "addr/0", 5s, addr.callback());
  EXPECT_EQ(*addr.get(), "127.0.0.1:1234");
  for (int r = 0; r < 3; ++r) ASSERT_TRUE(Leave(1, r, true).ok());
  EXPECT_EQ(View(false).phase, JobPhase::kCompleted);
}

TEST_F(JobTest, RestartKeepsAJoiningGenerationForRetriedJoins) {
  Result<Assignment> parked;
  job_->Join(kMember, Worker(0, 2), 5s, parked.callback());
  job_ = Restart();
  EXPECT_EQ(parked.get().status().code(), absl::StatusCode::kUnavailable);  // its client retries
  EXPECT_EQ(View(false).phase, JobPhase::kJoining);
  std::vector<Assignment> a = JoinAll(2);
  EXPECT_EQ(a[0].generation, 1u);  // the same generation completes
}

TEST_F(JobTest, CallsOnARestoredCompletedJobAnswerWithoutCrashing) {  // regression: restored members were empty
  JoinAll(2);
  ASSERT_TRUE(Leave(1, 0, true).ok());
  ASSERT_TRUE(Leave(1, 1, true).ok());
  job_ = Restart();
  EXPECT_EQ(job_->Heartbeat(kMember, 1, 0).status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(Leave(1, 5, true).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(Leave(1, 0, true).ok());
  EXPECT_EQ(Leave(1, 0, false).code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(Merge("{}", 1, 0).status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(Barrier(1, 0, "x").code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(Set(1, "k", "v").code(), absl::StatusCode::kFailedPrecondition);
  Result<UniqueIds> ids;
  job_->GetUniqueIds(kMember, 1, 0, {{GroupKind::kWorld, 0}}, 5s, ids.callback());
  EXPECT_EQ(ids.get().status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(View(false).phase, JobPhase::kCompleted);
}

TEST_F(JobTest, ShutdownAnswersParkedAndLaterCallsWithUnavailable) {
  Result<Assignment> parked;
  job_->Join(kMember, Worker(0, 2), 10s, parked.callback());
  job_->Shutdown();
  EXPECT_EQ(parked.get().status().code(), absl::StatusCode::kUnavailable);
  Result<Assignment> later;
  job_->Join(kMember, Worker(1, 2), 10s, later.callback());
  EXPECT_EQ(later.get().status().code(), absl::StatusCode::kUnavailable);
}

// --- failed writes and group commit ---------------------------------------------------------------------

TEST_F(JobTest, AFailedWriteLeavesTheJobUnchanged) {
  const absl::Status full = absl::ResourceExhaustedError("state store :memory:: write failed: disk is full");
  // `call` runs with the store's next write failing: it answers that error, and the job and the store are
  // as they were. Then the same call succeeds once the store is healed.
  auto expect_unchanged = [&](const char* what, const std::function<absl::Status()>& call) {
    const std::string before = Durable(job_->View(true));
    const size_t stored = Stored().size();
    store_.FailWrite(1, full);
    const absl::Status status = call();
    store_.Heal();
    EXPECT_EQ(status.code(), absl::StatusCode::kResourceExhausted) << what << ": " << status;
    EXPECT_EQ(status.message(), absl::StrCat("job job-1: ", full.message())) << what;
    EXPECT_EQ(Durable(job_->View(true)), before) << what;
    EXPECT_EQ(Stored().size(), stored) << what;
    if (job_->gone()) job_ = std::make_shared<Job>("job-1", &context_);  // the registry makes a new one
    const absl::Status healed = call();
    EXPECT_TRUE(healed.ok()) << what << ": " << healed;
  };
  // Worker `worker` of a world of 2 joins: the first parks (and its outcome is known once it shows in the
  // view, or its answer arrives), the second completes the world.
  auto join = [&](int worker) {
    return [this, worker]() -> absl::Status {
      auto r = std::make_shared<Result<Assignment>>();
      job_->Join(kMember, Worker(worker, 2), 5s, r->callback());
      if (worker == 1) return r->get().status();
      for (int i = 0; i < 10000; ++i) {
        if (r->ready()) return r->get().status();
        std::optional<JobView> view = job_->View(true);
        if (view && view->member_count == 1) return absl::OkStatus();
        std::this_thread::sleep_for(1ms);
      }
      return absl::InternalError("the Join neither parked nor answered");
    };
  };

  expect_unchanged("record", [&] { return Record(Args(1, Dtype::kFloat32)).status(); });
  expect_unchanged("opening generation 1", join(0));
  expect_unchanged("completing the world", join(1));
  expect_unchanged("merge", [&] { return Merge(R"({"train_batch_size": 2})", 1, 0).status(); });
  expect_unchanged("publish", [&] { return Publish(1, 0, {{{GroupKind::kWorld, 0}, Id('w')}}); });
  expect_unchanged("set", [&] { return Set(1, "k", "v"); });
  expect_unchanged("add", [&] { return Add(1, "n", 1).status(); });
  expect_unchanged("compare-set", [&] { return CompareSet(1, "c", "", "x").status(); });
  expect_unchanged("delete a key", [&] { return Erase(1, "k").status(); });
  StatusResult other;
  job_->Barrier(kMember, 1, 1, "b", 1, 5s, other.callback());
  expect_unchanged("completing a barrier", [&] { return Barrier(1, 0, "b", 1); });
  EXPECT_TRUE(other.get().ok());
  expect_unchanged("finish", [&] { return Leave(1, 0, true); });
  expect_unchanged("leave early", [&] { return Leave(1, 1, false, "gone"); });
  expect_unchanged("delete the job", [&] { return Delete(false); });
  EXPECT_TRUE(job_->gone());
  EXPECT_TRUE(Stored().empty());
}

TEST_F(JobTest, ConcurrentWritesShareTransactions) {
  constexpr int kWorld = 256;  // 256 TP groups of one: 256 leaders publishing at once
  JoinAll(kWorld, 1);
  const int writes_before = store_.writes();
  std::vector<StatusResult> results(kWorld);
  std::vector<std::thread> threads;
  for (int t = 0; t < 8; ++t) {
    threads.emplace_back([&, t] {
      for (int r = t; r < kWorld; r += 8) {
        job_->PublishUniqueIds(kMember, 1, r, {{{GroupKind::kTp, r}, Id(static_cast<char>(r))}}, results[r].callback());
      }
    });
  }
  for (std::thread& t : threads) t.join();
  for (StatusResult& r : results) ASSERT_TRUE(r.get().ok());
  const int writes = store_.writes() - writes_before;
  EXPECT_LT(writes, kWorld / 2) << writes << " transactions for " << kWorld << " publishes";
  job_ = Restart();
  Result<UniqueIds> id;
  job_->GetUniqueIds(kMember, 1, 200, {{GroupKind::kTp, 200}}, 5s, id.callback());
  EXPECT_EQ(Bytes(*id.get()), std::vector<std::string>({Id(static_cast<char>(200))}));
}

// --- deleting and expiring ------------------------------------------------------------------------------

TEST_F(JobTest, DeleteRefusesARunningGenerationUnlessForced) {
  ASSERT_TRUE(Record(Args(1, Dtype::kFloat32)).ok());
  JoinAll(2);
  absl::Status refused = Delete(false);
  EXPECT_EQ(refused.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(refused.message(),
            "job job-1: generation 1 is running with 2 worker(s); stop them first, or delete with force (tpctl "
            "delete --force) to end it");
  StatusResult parked;
  job_->Barrier(kMember, 1, 0, "x", 0, 5s, parked.callback());
  ASSERT_TRUE(Delete(true).ok());
  EXPECT_EQ(parked.get().message(), "job job-1: the job was deleted");
  EXPECT_TRUE(job_->gone());
  EXPECT_EQ(job_->Heartbeat(kMember, 1, 1).status().code(), absl::StatusCode::kNotFound);
  EXPECT_TRUE(Stored().empty());
}

TEST_F(JobTest, ExpiryForgetsOnlyJobsThatAreIdle) {
  ASSERT_TRUE(Record(Args(1, Dtype::kFloat32)).ok());
  JoinAll(1);
  auto expire = [&](int64_t cutoff) {
    Result<bool> r;
    job_->ExpireIfIdleSince(cutoff, r.callback());
    return *r.get();
  };
  const int64_t future = std::chrono::duration_cast<Millis>(std::chrono::system_clock::now().time_since_epoch() + 1h).count();
  EXPECT_FALSE(expire(future));  // running
  ASSERT_TRUE(Leave(1, 0, true).ok());
  EXPECT_FALSE(expire(0));  // completed just now
  EXPECT_TRUE(expire(future));
  EXPECT_TRUE(job_->gone());
  EXPECT_TRUE(Stored().empty());
}

TEST_F(JobTest, ViewReportsPhaseTimings) {
  JoinAll(2);
  JobView view = View();
  ASSERT_GE(view.timings.size(), 2u);
  EXPECT_EQ(view.timings[0].phase, "join");
  EXPECT_GE(view.timings[0].duration_ms, 0);
  EXPECT_EQ(view.timings[1].phase, "run");
  EXPECT_EQ(view.timings[1].duration_ms, -1);
  ASSERT_EQ(view.members.size(), 2u);
  EXPECT_EQ(view.members[1].rank, 1);
  EXPECT_EQ(view.member_count, 2);
}

// --- who may do what ------------------------------------------------------------------------------------

Caller Someone(const std::string& token, const std::string& key = "", bool admin = false) {
  return Caller{token.empty() ? "" : Sha256(token), key.empty() ? "" : Sha256(key), admin};
}

TEST_F(JobTest, TheFirstTokenBindsTheJobForGood) {
  ASSERT_TRUE(Record(Args(2, Dtype::kBFloat16)).ok());  // kMember's token creates the job
  const std::string before = StoredBytes();
  auto record_as = [&](const Caller& caller) {
    Result<RecordOutcome> r;
    job_->Record(caller, Args(4, Dtype::kFloat16), r.callback());  // what a squatter would record
    return r.get().status();
  };
  absl::Status other = record_as(Someone("another-jobs-token-123"));
  EXPECT_EQ(other.code(), absl::StatusCode::kPermissionDenied);
  EXPECT_EQ(other.message(), "job job-1: the call's token is not the job's token");
  absl::Status none = record_as(Someone(""));
  EXPECT_EQ(none.code(), absl::StatusCode::kUnauthenticated);
  EXPECT_EQ(StoredBytes(), before);  // neither left a trace
  EXPECT_EQ(job_->Authorize(Someone("another-jobs-token-123")).code(), absl::StatusCode::kPermissionDenied);
  EXPECT_TRUE(job_->Authorize(kMember).ok());
  EXPECT_TRUE(job_->Authorize(Someone("the-admin-token-1234", "", /*admin=*/true)).ok());
  job_ = Restart();  // the binding is durable
  EXPECT_EQ(record_as(Someone("another-jobs-token-123")).code(), absl::StatusCode::kPermissionDenied);
  EXPECT_TRUE(job_->Authorize(kMember).ok());
  StatusResult deleted;
  job_->Delete(Someone("another-jobs-token-123"), false, deleted.callback());
  EXPECT_EQ(deleted.get().code(), absl::StatusCode::kPermissionDenied);
  EXPECT_TRUE(Delete(false).ok());
}

TEST_F(JobTest, CreateBindsTheGivenTokenAndOnlyOnce) {
  const Caller admin = Someone("the-admin-token-1234", "", /*admin=*/true);
  StatusResult created;
  job_->Create(admin, Sha256("job-token-for-tests"), created.callback());
  ASSERT_TRUE(created.get().ok()) << created.get();
  EXPECT_EQ(View().phase, JobPhase::kIdle);
  StatusResult again, stolen;
  job_->Create(kMember, "", again.callback());
  EXPECT_EQ(again.get().code(), absl::StatusCode::kAlreadyExists);
  job_->Create(Someone("another-jobs-token-123"), "", stolen.callback());
  EXPECT_EQ(stolen.get().code(), absl::StatusCode::kPermissionDenied);
  EXPECT_TRUE(Record(Args(2, Dtype::kBFloat16)).ok());  // the job's workers carry the token it was created with
}

TEST_F(JobTest, OnlyTheAdminCreatesJobsWhenSoConfigured) {
  JobContext admin_only = context_;
  admin_only.options.only_admin_creates_jobs = true;
  auto job = std::make_shared<Job>("job-2", &admin_only);
  Result<RecordOutcome> squat;
  job->Record(kMember, Args(4, Dtype::kFloat16), squat.callback());
  EXPECT_EQ(squat.get().status().code(), absl::StatusCode::kPermissionDenied);
  EXPECT_FALSE(job->View(false).has_value());
  EXPECT_TRUE(job->gone());
  job = std::make_shared<Job>("job-2", &admin_only);  // as the registry would
  StatusResult created;
  job->Create(Someone("the-admin-token-1234", "", /*admin=*/true), kMember.token_sha256, created.callback());
  ASSERT_TRUE(created.get().ok()) << created.get();
  Result<RecordOutcome> record;
  job->Record(kMember, Args(2, Dtype::kBFloat16), record.callback());
  EXPECT_TRUE(record.get().ok());
}

TEST_F(JobTest, CallsAsARankNeedThatRanksMemberKey) {
  // Two workers with keys of their own.
  const Caller key0 = Someone("job-token-for-tests", "member-key-of-worker-0");
  const Caller key1 = Someone("job-token-for-tests", "member-key-of-worker-1");
  Result<Assignment> a0, a1;
  job_->Join(key0, Worker(0, 2), 5s, a0.callback());
  job_->Join(key1, Worker(1, 2), 5s, a1.callback());
  ASSERT_TRUE(a0.get().ok() && a1.get().ok());
  const int rank0 = a0.get()->rank, rank1 = a1.get()->rank;
  const Caller& as_rank0 = rank0 == 0 ? key0 : key1;
  const Caller& as_rank1 = rank0 == 0 ? key1 : key0;
  (void)rank1;

  auto checks = [&] {
    // Worker 1 cannot speak for rank 0: heartbeat, leave, barrier, merge, unique IDs.
    absl::StatusOr<Millis> spoofed = job_->Heartbeat(as_rank1, 1, 0);
    EXPECT_EQ(spoofed.status().code(), absl::StatusCode::kPermissionDenied);
    EXPECT_EQ(spoofed.status().message(),
              "job job-1: the call's member key is not the one rank 0 of generation 1 joined with");
    EXPECT_EQ(job_->Heartbeat(kMember, 1, 0).status().code(), absl::StatusCode::kPermissionDenied);
    EXPECT_EQ(job_->Heartbeat(Someone("job-token-for-tests"), 1, 0).status().code(),
              absl::StatusCode::kUnauthenticated);
    EXPECT_EQ(job_->Heartbeat(Someone("the-admin-token-1234", "", true), 1, 0).status().code(),
              absl::StatusCode::kUnauthenticated);  // the admin is no member
    StatusResult left;
    job_->Leave(as_rank1, 1, 0, false, "spoofed", left.callback());
    EXPECT_EQ(left.get().code(), absl::StatusCode::kPermissionDenied);
    StatusResult barrier;
    job_->Barrier(as_rank1, 1, 0, "b", 0, 5s, barrier.callback());
    EXPECT_EQ(barrier.get().code(), absl::StatusCode::kPermissionDenied);
    StatusResult published;
    job_->PublishUniqueIds(as_rank1, 1, 0, {{UniqueIdSlot{{GroupKind::kWorld, 0}}, Id('x')}}, published.callback());
    EXPECT_EQ(published.get().code(), absl::StatusCode::kPermissionDenied);
    Result<UniqueIds> ids;
    job_->GetUniqueIds(as_rank1, 1, 0, {GroupId{GroupKind::kWorld, 0}}, 5s, ids.callback());
    EXPECT_EQ(ids.get().status().code(), absl::StatusCode::kPermissionDenied);
    // The store is the members': any member's key, and no one else's.
    StatusResult set_by_outsider;
    job_->StoreSet(Someone("job-token-for-tests", "not-a-members-key-0"), 1, "k", "garbage", set_by_outsider.callback());
    EXPECT_EQ(set_by_outsider.get().code(), absl::StatusCode::kPermissionDenied);
    EXPECT_EQ(job_->StoreNumKeys(Someone("another-jobs-token-123", "member-key-of-worker-0"), 1).status().code(),
              absl::StatusCode::kPermissionDenied);
    EXPECT_TRUE(job_->StoreNumKeys(as_rank1, 1).ok());
    // Each rank as itself.
    EXPECT_TRUE(job_->Heartbeat(as_rank0, 1, 0).ok());
    EXPECT_TRUE(job_->Heartbeat(as_rank1, 1, 1).ok());
    EXPECT_EQ(View().phase, JobPhase::kRunning);
  };
  checks();
  job_ = Restart();  // seats keep their keys across a restart
  checks();
}

TEST_F(JobTest, AJoinCannotTakeAnotherWorkersSeat) {
  const Caller worker = Someone("job-token-for-tests", "member-key-of-worker-0");
  const Caller intruder = Someone("job-token-for-tests", "member-key-of-intruder");
  Result<Assignment> parked;
  job_->Join(worker, Worker(0, 2), 5s, parked.callback());
  Result<Assignment> stolen;
  job_->Join(intruder, Worker(0, 2), 5s, stolen.callback());  // the parked worker's worker_id
  EXPECT_EQ(stolen.get().status().code(), absl::StatusCode::kPermissionDenied);
  EXPECT_FALSE(parked.ready());  // still waiting, in its seat
  Result<Assignment> keyless;
  JoinArgs other = Worker(1, 2);
  job_->Join(Someone("job-token-for-tests"), other, 5s, keyless.callback());
  EXPECT_EQ(keyless.get().status().code(), absl::StatusCode::kUnauthenticated);
  Result<Assignment> second;
  job_->Join(kMember, other, 5s, second.callback());
  ASSERT_TRUE(parked.get().ok());
  ASSERT_TRUE(second.get().ok());
  // Running: a retry with the worker's key gets its answer again; anyone else's Join with that id is refused.
  Result<Assignment> retry, stolen_running;
  job_->Join(worker, Worker(0, 2), 5s, retry.callback());
  EXPECT_EQ(retry.get()->rank, parked.get()->rank);
  job_->Join(intruder, Worker(0, 2), 5s, stolen_running.callback());
  EXPECT_EQ(stolen_running.get().status().code(), absl::StatusCode::kPermissionDenied);
  EXPECT_EQ(View().generation, 1u);
  EXPECT_EQ(View().phase, JobPhase::kRunning);
}

// CloseJob (torchrun's set_closed): no new generation starts, the first reason stays, a restart keeps it,
// and only deleting the job forgets it.
TEST_F(JobTest, AClosedJobStartsNoNewGenerationUntilDeleted) {
  auto close = [&](const Caller& caller, const std::string& reason) {
    StatusResult r;
    job_->Close(caller, reason, r.callback());
    return r.get();
  };
  const std::string refused =
      "job job-1 is closed: torchrun on host h finished; no new generation starts in a closed job (delete it, "
      "tpctl delete job-1, to use its id afresh)";
  ASSERT_TRUE(close(kMember, "torchrun on host h finished").ok());  // creates the job, bound to the token
  EXPECT_TRUE(View(false).closed);
  EXPECT_EQ(View(false).closed_reason, "torchrun on host h finished");
  EXPECT_EQ(close(Someone("another-jobs-token-123"), "x").code(), absl::StatusCode::kPermissionDenied);
  EXPECT_EQ(close(Someone(""), "x").code(), absl::StatusCode::kUnauthenticated);
  ASSERT_TRUE(close(kMember, "a second reason").ok());  // idempotent: the first reason stays
  ASSERT_TRUE(close(Someone("the-admin-token-1234", "", /*admin=*/true), "the admin's").ok());
  EXPECT_EQ(View(false).closed_reason, "torchrun on host h finished");
  Result<Assignment> join;
  job_->Join(kMember, Worker(0, 1), 5s, join.callback());
  EXPECT_EQ(join.get().status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(join.get().status().message(), refused);
  EXPECT_EQ(View(false).generation, 0u);

  job_ = Restart();  // durable
  EXPECT_TRUE(View(false).closed);
  EXPECT_EQ(View(false).closed_reason, "torchrun on host h finished");
  Result<Assignment> again;
  job_->Join(kMember, Worker(0, 1), 5s, again.callback());
  EXPECT_EQ(again.get().status().message(), refused);

  ASSERT_TRUE(Delete(false).ok());  // forgets it: the id starts afresh
  job_ = std::make_shared<Job>("job-1", &context_);
  EXPECT_EQ(JoinAll(1)[0].generation, 1u);
  EXPECT_FALSE(View(false).closed);
}

// Joins waiting in a joining generation when the job closes are answered as every later Join; the
// generation ends (failed, job_closed), durably.
TEST_F(JobTest, ClosingEndsAJoiningGenerationAndAnswersItsJoins) {
  Result<Assignment> parked;
  job_->Join(kMember, Worker(0, 2), 5s, parked.callback());
  StatusResult closed;
  job_->Close(kMember, "", closed.callback());
  ASSERT_TRUE(closed.get().ok());
  const std::string refused =
      "job job-1 is closed; no new generation starts in a closed job (delete it, tpctl delete job-1, to use its id "
      "afresh)";
  EXPECT_EQ(parked.get().status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(parked.get().status().message(), refused);
  JobView view = View(true);
  EXPECT_EQ(view.phase, JobPhase::kFailed);
  EXPECT_EQ(view.end_reason, "the job was closed");
  ASSERT_EQ(view.history.size(), 1u);
  EXPECT_EQ(view.history[0].end_cause, EndCause::kJobClosed);
  job_ = Restart();
  EXPECT_EQ(View(false).phase, JobPhase::kFailed);
  EXPECT_TRUE(View(false).closed);
  Result<Assignment> late;
  job_->Join(kMember, Worker(1, 2), 5s, late.callback());
  EXPECT_EQ(late.get().status().message(), refused);
}

// A running generation goes on in a closed job: heartbeats, the store, a retried Join and Leave all work,
// and it completes; only a Join that would start a new generation is refused.
TEST_F(JobTest, ARunningGenerationGoesOnInAClosedJob) {
  std::vector<Assignment> a = JoinAll(2);
  StatusResult closed;
  job_->Close(kMember, "done", closed.callback());
  ASSERT_TRUE(closed.get().ok());
  EXPECT_EQ(View(false).phase, JobPhase::kRunning);
  EXPECT_TRUE(job_->Heartbeat(kMember, 1, 0).ok());
  EXPECT_TRUE(Set(1, "k", "v").ok());
  Result<Assignment> retry;  // a lost answer, asked again: the same seat
  job_->Join(kMember, Worker(1, 2), 5s, retry.callback());
  ASSERT_TRUE(retry.get().ok()) << retry.get().status();
  EXPECT_EQ(retry.get()->rank, a[1].rank);
  Result<Assignment> newcomer;
  job_->Join(kMember, Worker(7, 2), 5s, newcomer.callback());
  EXPECT_EQ(newcomer.get().status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(View(false).phase, JobPhase::kRunning);  // the refused Join ended nothing
  ASSERT_TRUE(Leave(1, 0, true).ok());
  ASSERT_TRUE(Leave(1, 1, true).ok());
  EXPECT_EQ(View(false).phase, JobPhase::kCompleted);
}

// A job whose generation joined config-only (no record) cannot be given a record of another TP size while
// that generation joins or runs: the record would be the job's for good and refuse its members' Joins.
TEST_F(JobTest, AFirstRecordMustAgreeWithAConfigOnlyGeneration) {
  JoinAll(2, 2);
  absl::StatusOr<RecordOutcome> other = Record(Args(1, Dtype::kFloat32));
  EXPECT_EQ(other.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(other.status().message(),
            "job job-1: tp_model_init records tp_size 1, but generation 1 is running with tp_size 2, joined without a "
            "record (config-only AutoTP: the config's tensor_parallel.autotp_size); record tp_size 2, or none");
  EXPECT_FALSE(View(false).tp_init.has_value());
  EXPECT_TRUE(Record(Args(2, Dtype::kFloat32)).ok());
}

}  // namespace
}  // namespace tpcoord
