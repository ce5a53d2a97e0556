// The one commit path of a Job (job.h, "How state changes"): every change is decided under the job's lock
// against the job's current state, in the order it was asked for; a change that needs durable writes goes
// to disk with others in a batch, and is applied in memory, and answered, only once its batch is written.
//
// Invariants:
//   - Changes are decided in the order they were queued (Push; PushFront puts one that belongs with the
//     change just applied ahead of every later one), and applied in that order.
//   - A batch takes the queued changes, from the front, that claim nothing an earlier change of the batch,
//     or a batch still on its way to disk, claims (Batch); a change that cannot join waits, and so does
//     every change queued after it. A whole-job change is alone in its batch.
//   - A batch that writes nothing is applied at once. The others are applied, or answered their write's
//     error, in the order they were submitted: the committer answers one job's writes in order.
//   - A change whose decide throws is answered INTERNAL and changes nothing.
//   - What a batch claimed is held from its submission until it is applied.
//
// Not thread-safe: a part of its Job, used under the job's lock.
#ifndef TPCOORD_COORDINATOR_JOB_COMMIT_QUEUE_H_
#define TPCOORD_COORDINATOR_JOB_COMMIT_QUEUE_H_

#include <cstdint>
#include <deque>
#include <functional>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "coordinator/job/completions.h"
#include "coordinator/store/state_store.h"

namespace tpcoord {

class CommitQueue {
 public:
  // What the batches on their way to disk hold: a change that touches any of it waits until they are applied.
  struct Held {
    std::multiset<std::string> items;
    int whole_jobs = 0;
  };

  // What the changes of one batch claim, so that nothing a change decided on is changed before it is
  // applied, by an earlier change of the same batch or by a batch still on its way to disk: each claims the
  // items it reads and writes (a store key, a group's unique ID, a member, a barrier), or the whole job, or
  // nothing (a change that reads nothing when it is decided, and so only waits for whole-job changes).
  class Batch {
   public:
    explicit Batch(const Held& held) : held_(held) {}

    bool ClaimJob() {
      if (changes_ > 0 || held_.whole_jobs > 0 || !held_.items.empty()) return false;
      whole_job_ = true;
      return true;
    }
    bool Claim(const std::string& item) {
      return ClaimNothing() && held_.items.count(item) == 0 && items_.insert(item).second;
    }
    bool ClaimNothing() const { return !whole_job_ && held_.whole_jobs == 0; }
    // No change joins a batch that a whole-job change holds.
    bool closed() const { return whole_job_ && changes_ > 0; }
    void Accepted() { ++changes_; }
    bool empty() const { return changes_ == 0; }
    bool whole_job() const { return whole_job_; }
    const std::set<std::string>& items() const { return items_; }

    StateWrites writes;
    int64_t store_bytes = 0;  // what the batch's store writes add to the StoreQuota

   private:
    const Held& held_;
    bool whole_job_ = false;
    size_t changes_ = 0;
    std::set<std::string> items_;
  };

  // What deciding a change came to: wait (it cannot join this batch), reject it (answered at once, changes
  // nothing), or apply it once the batch's writes are durable.
  struct Decision {
    enum class Kind { kWait, kReject, kApply };
    Kind kind = Kind::kApply;
    absl::Status rejection;                   // kReject, final (with the job's context)
    std::function<void(Completions&)> apply;  // kApply: runs once the batch is durable

    static Decision Wait() { return {Kind::kWait, {}, {}}; }
    static Decision Reject(absl::Status status) { return {Kind::kReject, std::move(status), {}}; }
    static Decision Apply(std::function<void(Completions&)> apply) { return {Kind::kApply, {}, std::move(apply)}; }
  };

  using Decide = std::function<Decision(Batch&)>;
  // Answers the change's caller an error (the rejection, or its batch's failed write).
  using AnswerError = std::function<void(absl::Status, Completions&)>;
  // Hands a batch's writes to disk; the owner calls Written once they are durable or failed.
  using Submit = std::function<void(StateWrites)>;
  // The owner's context for an error (WithContext: the job's id).
  using Context = std::function<absl::Status(absl::Status)>;

  explicit CommitQueue(Context context) : context_(std::move(context)) {}
  CommitQueue(const CommitQueue&) = delete;
  CommitQueue& operator=(const CommitQueue&) = delete;

  void Push(Decide decide, AnswerError answer_error);
  void PushFront(Decide decide, AnswerError answer_error);

  // Decides every change that can be decided now: batches that write nothing are applied at once, the
  // others handed to `submit`, until the front change must wait.
  void Drain(Completions& done, const Submit& submit);
  // The oldest batch submitted is durable (`status` OK: its changes are applied) or failed (each is
  // answered the error); what it claimed is released. Call Drain after.
  void Written(const absl::Status& status, Completions& done);

  // Nothing queued and nothing on its way to disk.
  bool idle() const { return queue_.empty() && in_flight_.empty(); }

 private:
  struct Change {
    Decide decide;
    AnswerError answer_error;
  };
  struct Decided {
    std::function<void(Completions&)> apply;
    AnswerError answer_error;
  };
  // A batch on its way to disk: what it claimed, and its changes, to apply in order.
  struct InFlight {
    std::vector<std::string> items;
    bool whole_job = false;
    std::vector<Decided> changes;
  };

  const Context context_;
  std::deque<Change> queue_;
  std::deque<InFlight> in_flight_;  // oldest first
  Held held_;
};

}  // namespace tpcoord

#endif  // TPCOORD_COORDINATOR_JOB_COMMIT_QUEUE_H_
