// Group commit. Jobs hand their durable changes to one StateCommitter, whose thread writes everything
// submitted while the previous transaction was on its way to disk in one transaction: a thousand leaders
// publishing unique IDs at once cost a few fsyncs, not a thousand.
//
// Thread-safety: Submit may be called from any thread, including from a `done` callback.
#ifndef TPCOORD_COORDINATOR_STORE_STATE_COMMITTER_H_
#define TPCOORD_COORDINATOR_STORE_STATE_COMMITTER_H_

#include <deque>
#include <functional>
#include <string>
#include <thread>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "common/mutex.h"
#include "coordinator/store/state_store.h"

namespace tpcoord {

class StateCommitter {
 public:
  // `store` must outlive the committer. `run_callbacks` runs the callbacks of each transaction, all of them
  // in one function, on some thread of its choosing (empty: the committer's own thread).
  explicit StateCommitter(StateStore* store, std::function<void(std::function<void()>)> run_callbacks = {});
  // Writes everything already submitted and waits for its callbacks to have run, then stops the thread.
  ~StateCommitter();
  StateCommitter(const StateCommitter&) = delete;
  StateCommitter& operator=(const StateCommitter&) = delete;

  StateStore* store() const { return store_; }

  // Writes `writes` atomically and then runs `done` with the outcome. Submissions are written, and their
  // callbacks run, in the order they were made; a transaction that fails is retried one submission at a
  // time, so each `done` gets the outcome of its own writes. `what` names the change in error messages.
  void Submit(StateWrites writes, std::string what, std::function<void(absl::Status)> done);

 private:
  struct Pending {
    StateWrites writes;
    std::string what;
    std::function<void(absl::Status)> done;
  };
  bool HasWork() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void Run();
  void Commit(std::deque<Pending>& group);

  StateStore* const store_;
  const std::function<void(std::function<void()>)> run_callbacks_;
  Mutex mu_;
  std::deque<Pending> queue_ ABSL_GUARDED_BY(mu_);
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  int running_callbacks_ ABSL_GUARDED_BY(mu_) = 0;  // handed to run_callbacks_, not yet returned
  CondVar work_{&mu_};
  CondVar callbacks_done_{&mu_};
  std::thread thread_;  // last: starts once the members above exist
};

}  // namespace tpcoord

#endif  // TPCOORD_COORDINATOR_STORE_STATE_COMMITTER_H_
