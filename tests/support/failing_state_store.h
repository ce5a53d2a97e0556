// A StateStore test double that wraps a real one and fails writes on command, to prove that a write that
// fails leaves everything as it was. It also counts writes, to observe group commit.
#ifndef TPCOORD_TESTS_SUPPORT_FAILING_STATE_STORE_H_
#define TPCOORD_TESTS_SUPPORT_FAILING_STATE_STORE_H_

#include <deque>
#include <string>

#include "absl/status/status.h"
#include "common/mutex.h"
#include "coordinator/store/state_store.h"

namespace tpcoord::testing {

class FailingStateStore final : public StateStore {
 public:
  // `inner` must outlive this store.
  explicit FailingStateStore(StateStore* inner) : inner_(inner) {}

  // The `n`-th write from now (1: the next one) fails with `status` and changes nothing.
  void FailWrite(int n, absl::Status status) {
    MutexLock lock(&mu_);
    fail_at_ = writes_ + n;
    failure_ = std::move(status);
  }
  // Every write from now fails with `status` until Heal().
  void FailEveryWrite(absl::Status status) {
    MutexLock lock(&mu_);
    failure_ = std::move(status);
    fail_all_ = true;
  }
  void Heal() {
    MutexLock lock(&mu_);
    fail_all_ = false;
    fail_at_ = 0;
  }
  int writes() const {
    MutexLock lock(&mu_);
    return writes_;
  }
  // How many writes failed on command.
  int failures() const {
    MutexLock lock(&mu_);
    return failures_;
  }

  absl::Status Write(const StateWrites& writes, absl::string_view what) override {
    {
      MutexLock lock(&mu_);
      ++writes_;
      if (fail_all_ || writes_ == fail_at_) {
        ++failures_;
        return failure_;
      }
    }
    return inner_->Write(writes, what);
  }
  absl::StatusOr<std::vector<StateEntry>> Scan(absl::string_view prefix) override { return inner_->Scan(prefix); }
  const std::string& name() const override { return inner_->name(); }

 private:
  StateStore* const inner_;
  mutable Mutex mu_;
  int writes_ ABSL_GUARDED_BY(mu_) = 0;
  int failures_ ABSL_GUARDED_BY(mu_) = 0;
  int fail_at_ ABSL_GUARDED_BY(mu_) = 0;
  bool fail_all_ ABSL_GUARDED_BY(mu_) = false;
  absl::Status failure_ ABSL_GUARDED_BY(mu_);
};

}  // namespace tpcoord::testing

#endif  // TPCOORD_TESTS_SUPPORT_FAILING_STATE_STORE_H_
