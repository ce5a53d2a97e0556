// libFuzzer target: a Job driven by a sequence of calls decoded from the input, over a real (in-memory)
// SQLite state store that fails writes on command, with coordinator restarts between calls. Checked for
// every input: nothing crashes, throws or hangs; every call is answered exactly once; a call whose write
// failed leaves the durable state as it was; a caller without the job's token never changes it; and a
// restart brings back exactly the durable state (the job restored from the store shows what the job it
// replaces showed). Calls come from the job's members, a token holder with another member key, another
// job's token holder, the admin, and callers without a token.
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <future>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "common/secrets.h"
#include "coordinator/job/job.h"
#include "coordinator/store/job_storage.h"
#include "tests/support/failing_state_store.h"

namespace tpcoord {
namespace {

using namespace std::chrono_literals;

// The input, read a byte at a time (zeros once it runs out).
class Input {
 public:
  Input(const uint8_t* data, size_t size) : data_(data), size_(size) {}
  bool done() const { return pos_ >= size_; }
  uint8_t Byte() { return pos_ < size_ ? data_[pos_++] : 0; }
  int Int(int n) { return Byte() % n; }
  int64_t Big() {
    int64_t v = 0;
    for (int i = 0; i < 8; ++i) v = (v << 8) | Byte();
    return v;
  }

 private:
  const uint8_t* data_;
  size_t size_;
  size_t pos_ = 0;
};

// What must survive a restart (see job_test.cc's Durable).
std::string Durable(const std::optional<JobView>& view) {
  if (!view) return "<no job>";
  std::string s = absl::StrCat(view->generation, " ", JobPhaseName(view->phase), " ", view->world_size, " '",
                               view->end_reason, "' '", view->merged_config, "'", view->closed ? " closed " : "",
                               view->closed_reason);
  if (view->tp_init) absl::StrAppend(&s, " tp ", view->tp_init->tp_size, "/", view->tp_init->tp_groups.size());
  for (const MemberView& m : view->members) {
    if (m.rank >= 0) absl::StrAppend(&s, " [", m.rank, " ", m.worker_id, m.finished ? " done" : "", "]");
  }
  return s;
}

// Aborts (a finding) naming the failed check's line.
void Check(bool condition, int line = __builtin_LINE()) {
  if (condition) return;
  std::fprintf(stderr, "job_fuzzer: the check at fuzz/job_fuzzer.cc:%d failed\n", line);
  std::abort();
}

// Counts answers: every call must be answered exactly once.
class Answers {
 public:
  template <typename T>
  Done<T> Expect() {
    ++expected_;
    return [this](absl::StatusOr<T>) { ++answered_; };
  }
  StatusDone ExpectStatus() {
    ++expected_;
    return [this](absl::Status) { ++answered_; };
  }
  bool AllAnswered() const { return answered_.load() == expected_; }
  bool TooMany() const { return answered_.load() > expected_; }

 private:
  int expected_ = 0;
  std::atomic<int> answered_{0};
};

TimerQueue& Timers() {
  static TimerQueue* timers = new TimerQueue;  // one thread for every input
  return *timers;
}

void Sync(Job& job) {
  auto done = std::make_shared<std::promise<absl::Status>>();
  job.Sync([done](absl::Status s) { done->set_value(s); });
  if (done->get_future().wait_for(10s) != std::future_status::ready) std::abort();  // a hung job
}

// Who makes a call: mostly the job's members (one shared key), sometimes someone else.
const Caller& PickCaller(Input& in) {
  static const Caller kMember{Sha256("job-token-for-fuzz"), Sha256("member-key-for-fuzz"), false};
  static const Caller kOtherKey{Sha256("job-token-for-fuzz"), Sha256("another-member-key"), false};
  static const Caller kOtherJob{Sha256("another-jobs-token"), Sha256("member-key-for-fuzz"), false};
  static const Caller kAdmin{Sha256("the-admin-token-x"), Sha256("member-key-for-fuzz"), true};
  static const Caller kNobody{"", Sha256("member-key-for-fuzz"), false};
  switch (in.Int(16)) {
    case 11:
    case 12: return kOtherKey;
    case 13: return kOtherJob;
    case 14: return kAdmin;
    case 15: return kNobody;
    default: return kMember;
  }
}

const char* const kConfigs[] = {
    "{}",
    R"({"train_batch_size": 8, "train_micro_batch_size_per_gpu": 4})",
    R"({"bf16": {"enabled": true}, "tensor_parallel": {"autotp_size": 2}})",
    R"({"tensor_parallel": {"tp": {"tp_size": 2, "tp_group": [0, 1]}}})",
    "[1, 2]",
    R"({"fp16": {"enabled": true}})",
};

}  // namespace
}  // namespace tpcoord

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace tpcoord;
  Input in(data, size);
  auto sqlite = *OpenSqliteStateStore(":memory:");
  testing::FailingStateStore store(sqlite.get());
  StoreQuota quota(1 << 16);
  JobOptions options;
  options.lease = 3600s;  // no lease runs out while an input runs
  options.max_parked_calls = 16;
  JobContext context{nullptr, &Timers(), &quota, options, nullptr};
  Answers answers;
  {
    StateCommitter committer(&store);
    context.committer = &committer;
    // Every Job of this input: a deadline callback on the (shared) timer thread may hold the last reference
    // to one for a moment, so the input waits until all are gone before the quota and context it lent them.
    std::vector<std::weak_ptr<Job>> jobs_made;
    auto make_job = [&] {
      auto made = std::make_shared<Job>("fuzz", &context);
      jobs_made.push_back(made);
      return made;
    };
    auto job = make_job();
    std::vector<uint64_t> calls;
    struct OpenSession {
      uint64_t generation;
      int rank;
      uint64_t id;
    };
    std::vector<OpenSession> sessions;
    uint64_t next_session = 1;
    bool fail_next = false;
    for (int op = 0; op < 200 && !in.done(); ++op) {
      const std::string before = Durable(job->View(true));
      const int failures_before = store.failures();
      if (fail_next) store.FailWrite(1, absl::ResourceExhaustedError("full"));
      const uint64_t generation = in.Int(3);
      const int rank = in.Int(5) - (in.Int(8) == 0 ? 1 : 0);
      const Millis wait = in.Int(4) == 0 ? 1ms : 3600s;
      const std::string key = absl::StrCat("k", in.Int(3));
      const Caller& caller = PickCaller(in);
      const bool existed = job->View(false).has_value();
      // Whoever holds neither the job's token nor the admin's (another job's token holder, a caller without
      // a token; or the job's members, when another job's token holder created it) changes nothing.
      const bool outsider = existed && !job->Authorize(caller).ok();
      const int kind = in.Int(24);
      switch (kind) {
        case 0: {
          std::optional<std::vector<int>> group;
          if (in.Int(2)) group = std::vector<int>{in.Int(4), in.Int(4)};
          absl::StatusOr<TpInitArgs> args = NormalizeTpInitArgs(1 + in.Int(3), static_cast<Dtype>(in.Int(3)), group);
          if (args.ok()) job->Record(caller, *args, answers.Expect<RecordOutcome>());
          break;
        }
        case 1: {
          JoinArgs args{absl::StrCat("w", in.Int(6)), absl::StrCat("h", in.Int(3)), 1 + in.Int(4), std::nullopt,
                        in.Int(3)};
          if (in.Int(3) == 0) args.requested_rank = in.Int(5);
          calls.push_back(job->Join(caller, args, wait, answers.Expect<Assignment>()));
          break;
        }
        case 2:
          job->Merge(caller, kConfigs[in.Int(6)], in.Int(4) == 0, generation, rank, answers.Expect<MergeOutcome>());
          break;
        case 3:
          job->PublishUniqueIds(caller, generation, rank,
                                {{UniqueIdSlot{{static_cast<GroupKind>(in.Int(3)), in.Int(3)}, in.Int(2)},
                                  std::string(kUniqueIdBytes, static_cast<char>('a' + in.Int(2)))}},
                                answers.ExpectStatus());
          break;
        case 4:
          calls.push_back(job->GetUniqueIds(caller, generation, rank, {GroupId{static_cast<GroupKind>(in.Int(3)), in.Int(3)}},
                                            wait, answers.Expect<UniqueIds>()));
          break;
        case 5: job->StoreSet(caller, generation, key, std::string(in.Int(4) * 8000, 'v'), answers.ExpectStatus()); break;
        case 6: calls.push_back(job->StoreGet(caller, generation, key, wait, answers.Expect<std::string>())); break;
        case 7: job->StoreAdd(caller, generation, key, in.Big(), answers.Expect<int64_t>()); break;
        case 8: job->StoreCompareSet(caller, generation, key, in.Int(2) ? "" : "v", "w", answers.Expect<std::string>()); break;
        case 9: job->StoreDelete(caller, generation, key, answers.Expect<bool>()); break;
        case 10:
          calls.push_back(job->StoreWait(caller, generation, {key, "k9"}, wait, answers.ExpectStatus()));
          break;
        case 11:
          (void)job->StoreCheck(caller, generation, {key});
          (void)job->StoreNumKeys(caller, generation);
          break;
        case 12:
          calls.push_back(job->Barrier(caller, generation, rank, absl::StrCat("b", in.Int(2)), in.Int(4), wait,
                                       answers.ExpectStatus()));
          break;
        case 13: (void)job->Heartbeat(caller, generation, rank); break;
        case 14:
          job->Leave(caller, generation, rank, in.Int(2) == 0, "r", answers.ExpectStatus(), /*fatal=*/in.Int(2) == 0);
          break;
        case 21: {  // a member session opens; its on_end may never run (replaced, or closed first)
          if (job->OpenSession(caller, generation, rank, next_session, [](absl::Status) {}).ok()) {
            sessions.push_back({generation, rank, next_session});
          }
          ++next_session;
          break;
        }
        case 22:  // an open session's stream closes: its process died, or it left first
          if (!sessions.empty()) {
            const OpenSession& s = sessions[in.Int(static_cast<int>(sessions.size()))];
            job->CloseSession(s.generation, s.rank, s.id);
          }
          break;
        case 15:
          if (!calls.empty()) job->Cancel(calls[in.Int(static_cast<int>(calls.size()))]);
          break;
        case 16: job->Delete(caller, in.Int(2) == 0, answers.ExpectStatus()); break;
        case 17: job->ExpireIfIdleSince(in.Int(2) ? 0 : INT64_MAX, answers.Expect<bool>()); break;
        case 18: fail_next = true; continue;
        case 20: job->Create(caller, "", answers.ExpectStatus()); break;
        case 23: job->Close(caller, in.Int(2) ? "" : "done", answers.ExpectStatus()); break;
        case 19: {  // a restart: what the store holds must be what the job showed
          Sync(*job);
          const std::string shown = Durable(job->View(true));
          job->Shutdown();
          auto restored = make_job();
          std::map<std::string, std::vector<StateEntry>> jobs = SplitByJob(*sqlite->Scan(job_storage::kJobsPrefix));
          if (jobs.count("fuzz")) {
            absl::StatusOr<StoredJob> stored = DecodeJob("fuzz", jobs["fuzz"]);
            Check(stored.ok());
            restored->Restore(*std::move(stored));
          }
          job = restored;
          Sync(*job);
          Check(Durable(job->View(true)) == shown);
          calls.clear();
          sessions.clear();
          break;
        }
      }
      Sync(*job);
      if (job->gone()) job = make_job();  // as the registry would
      if (fail_next && store.failures() > failures_before) Check(Durable(job->View(true)) == before);
      // Cancelling (a client giving up its own call), expiry, restarts and a session's stream closing are not
      // the picked caller's acts.
      const bool callers_op = kind != 15 && kind != 17 && kind != 19 && kind != 22;
      if (outsider && callers_op) Check(Durable(job->View(true)) == before);
      fail_next = false;
      store.Heal();
      Check(!answers.TooMany());
    }
    job->Shutdown();
    job.reset();
    for (int i = 0; i < 1000; ++i) {
      if (std::all_of(jobs_made.begin(), jobs_made.end(), [](const std::weak_ptr<Job>& j) { return j.expired(); })) break;
      std::this_thread::sleep_for(1ms);
    }
    for (const std::weak_ptr<Job>& j : jobs_made) Check(j.expired());  // else something holds a Job for good
  }  // the committer has written (and answered) everything
  for (int i = 0; i < 1000 && !answers.AllAnswered(); ++i) std::this_thread::sleep_for(1ms);
  Check(answers.AllAnswered());
  return 0;
}
