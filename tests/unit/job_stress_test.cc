// A Job driven from many threads at once, as a busy coordinator's handler threads, timer and committer
// drive it: the whole protocol of many generations by 8 members, with store traffic, cancellations,
// deadlines and heartbeats racing. Built with ThreadSanitizer in CI (make sanitize), where a data race
// anywhere in the Job, its parts, the timer queue or the committer fails the test.
#include <gtest/gtest.h>

#include <atomic>
#include <future>
#include <random>
#include <thread>

#include "absl/strings/str_cat.h"
#include "common/secrets.h"
#include "coordinator/job/job.h"

namespace tpcoord {
namespace {

using namespace std::chrono_literals;

// The job's token and a member key that every worker of these tests carries (the admission tests use others).
const Caller kMember{Sha256("job-token-for-tests"), Sha256("member-key-for-tests"), false};

template <typename T>
absl::StatusOr<T> Wait(const std::function<void(Done<T>)>& call) {
  auto p = std::make_shared<std::promise<absl::StatusOr<T>>>();
  call([p](absl::StatusOr<T> v) { p->set_value(std::move(v)); });
  std::future<absl::StatusOr<T>> f = p->get_future();
  if (f.wait_for(30s) != std::future_status::ready) return absl::InternalError("no answer");
  return f.get();
}

absl::Status WaitStatus(const std::function<void(StatusDone)>& call) {
  auto p = std::make_shared<std::promise<absl::Status>>();
  call([p](absl::Status s) { p->set_value(std::move(s)); });
  std::future<absl::Status> f = p->get_future();
  if (f.wait_for(30s) != std::future_status::ready) return absl::InternalError("no answer");
  return f.get();
}

TEST(JobStressTest, ManyThreadsManyGenerations) {
  constexpr int kWorld = 8;
  constexpr int kGenerations = 20;
  TimerQueue timers;
  auto store = *OpenSqliteStateStore(":memory:");
  StoreQuota quota(64 << 20);
  JobOptions options;
  options.lease = 5s;
  JobContext context{nullptr, &timers, &quota, options, nullptr};
  StateCommitter committer(store.get());
  context.committer = &committer;
  auto job = std::make_shared<Job>("stress", &context);
  ASSERT_TRUE(Wait<RecordOutcome>([&](Done<RecordOutcome> d) {
                job->Record(kMember, *NormalizeTpInitArgs(2, Dtype::kBFloat16, std::nullopt), d);
              }).ok());

  std::atomic<int> completed_generations{0};
  std::atomic<bool> stop_noise{false};
  // Noise: views, checks and calls that are cancelled or time out, while the members work.
  std::thread noise([&] {
    std::mt19937 rng(7);
    while (!stop_noise) {
      (void)job->View(true);
      const uint64_t g = 1 + rng() % kGenerations;
      (void)job->StoreCheck(kMember, g, {"k"});
      const uint64_t id = job->StoreGet(kMember, g, "never", Millis(rng() % 3), [](absl::StatusOr<std::string>) {});
      if (rng() % 2) job->Cancel(id);
      std::this_thread::yield();
    }
  });

  std::vector<std::thread> members;
  for (int w = 0; w < kWorld; ++w) {
    members.emplace_back([&, w] {
      std::mt19937 rng(w);
      for (int round = 0; round < kGenerations; ++round) {
        absl::StatusOr<Assignment> a = Wait<Assignment>([&](Done<Assignment> d) {
          job->Join(kMember, JoinArgs{absl::StrCat("w", w, "-", round), absl::StrCat("h", w % 2), kWorld, std::nullopt, 0}, 20s, d);
        });
        ASSERT_TRUE(a.ok()) << a.status();
        const uint64_t g = a->generation;
        const int r = a->rank;
        ASSERT_TRUE(Wait<MergeOutcome>([&](Done<MergeOutcome> d) { job->Merge(kMember, "{}", false, g, r, d); }).ok());
        // Unique IDs for this rank's TP group and the world.
        UniqueIds mine;
        std::vector<GroupId> theirs;
        for (GroupId group : {a->mesh.tp_group_of(r), GroupId{GroupKind::kWorld, 0}}) {
          if (a->mesh.Leader(group) == r) mine.push_back({{group}, std::string(kUniqueIdBytes, static_cast<char>(g))});
          else theirs.push_back(group);
        }
        if (!mine.empty()) {
          ASSERT_TRUE(WaitStatus([&](StatusDone d) { job->PublishUniqueIds(kMember, g, r, mine, d); }).ok());
        }
        if (!theirs.empty()) {
          absl::StatusOr<UniqueIds> ids =
              Wait<UniqueIds>([&](Done<UniqueIds> d) { job->GetUniqueIds(kMember, g, r, theirs, 20s, d); });
          ASSERT_TRUE(ids.ok()) << ids.status();
          for (const auto& [slot, id] : *ids) EXPECT_EQ(id, std::string(kUniqueIdBytes, static_cast<char>(g)));
        }
        // Gloo-like store traffic: each rank sets its key and waits for everybody's.
        ASSERT_TRUE(WaitStatus([&](StatusDone d) { job->StoreSet(kMember, g, absl::StrCat("addr/", r), "x", d); }).ok());
        std::vector<std::string> keys;
        for (int k = 0; k < kWorld; ++k) keys.push_back(absl::StrCat("addr/", k));
        ASSERT_TRUE(WaitStatus([&](StatusDone d) { job->StoreWait(kMember, g, keys, 20s, d); }).ok());
        ASSERT_TRUE(Wait<int64_t>([&](Done<int64_t> d) { job->StoreAdd(kMember, g, "counter", 1, d); }).ok());
        for (int step = 0; step < 3; ++step) {
          (void)job->Heartbeat(kMember, g, r);
          ASSERT_TRUE(WaitStatus([&](StatusDone d) { job->Barrier(kMember, g, r, "step", 0, 20s, d); }).ok());
        }
        if (rng() % 4 == 0) std::this_thread::sleep_for(1ms);
        ASSERT_TRUE(WaitStatus([&](StatusDone d) { job->Leave(kMember, g, r, true, "", d); }).ok());
        // Every member waits for the generation to complete before it joins the next one.
        while (true) {
          std::optional<JobView> view = job->View(false);
          if (view && (view->generation > g || view->phase == JobPhase::kCompleted)) break;
          std::this_thread::yield();
        }
        if (r == 0) ++completed_generations;
      }
    });
  }
  for (std::thread& t : members) t.join();
  stop_noise = true;
  noise.join();
  EXPECT_EQ(completed_generations, kGenerations);
  EXPECT_EQ(job->View(false)->phase, JobPhase::kCompleted);
  job->Shutdown();
}

}  // namespace
}  // namespace tpcoord
