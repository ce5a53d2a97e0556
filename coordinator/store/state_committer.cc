#include "coordinator/store/state_committer.h"

#include <utility>

#include "absl/strings/str_cat.h"

namespace tpcoord {
namespace {

// One transaction holds at most this much, so that a flood of large store values cannot make one commit
// (and every call waiting for it) take arbitrarily long.
constexpr size_t kMaxGroupBytes = size_t{64} << 20;
constexpr size_t kMaxGroupWrites = 100000;

size_t Bytes(const StateWrites& writes) {
  size_t bytes = 0;
  for (const StateWrite& w : writes) bytes += w.key.size() + w.value.size();
  return bytes;
}

}  // namespace

StateCommitter::StateCommitter(StateStore* store, std::function<void(std::function<void()>)> run_callbacks)
    : store_(store), run_callbacks_(std::move(run_callbacks)), thread_([this] { Run(); }) {}

StateCommitter::~StateCommitter() {
  {
    MutexLock lock(&mu_);
    stopping_ = true;
    work_.Signal();
  }
  thread_.join();
  MutexLock lock(&mu_);
  while (running_callbacks_ > 0) callbacks_done_.Wait();
}

void StateCommitter::Submit(StateWrites writes, std::string what, std::function<void(absl::Status)> done) {
  MutexLock lock(&mu_);
  queue_.push_back({std::move(writes), std::move(what), std::move(done)});
  work_.Signal();
}

bool StateCommitter::HasWork() const { return stopping_ || !queue_.empty(); }

void StateCommitter::Run() {
  while (true) {
    std::deque<Pending> group;
    {
      MutexLock lock(&mu_);
      while (!HasWork()) work_.Wait();
      if (queue_.empty()) return;  // stopping, and everything submitted is written
      size_t bytes = 0, writes = 0;
      while (!queue_.empty() && (group.empty() || (bytes + Bytes(queue_.front().writes) <= kMaxGroupBytes &&
                                                   writes + queue_.front().writes.size() <= kMaxGroupWrites))) {
        bytes += Bytes(queue_.front().writes);
        writes += queue_.front().writes.size();
        group.push_back(std::move(queue_.front()));
        queue_.pop_front();
      }
    }
    Commit(group);
  }
}

void StateCommitter::Commit(std::deque<Pending>& group) {
  std::vector<absl::Status> outcomes;
  if (group.size() > 1) {
    StateWrites all;
    for (Pending& p : group) all.insert(all.end(), p.writes.begin(), p.writes.end());
    const absl::Status status =
        store_->Write(all, absl::StrCat(group.front().what, " and ", group.size() - 1, " more"));
    if (status.ok()) outcomes.assign(group.size(), absl::OkStatus());
    // Otherwise each submission on its own, so that one that cannot be written does not fail the others.
  }
  if (outcomes.empty()) {
    for (Pending& p : group) outcomes.push_back(store_->Write(p.writes, p.what));
  }
  auto callbacks = [group = std::move(group), outcomes = std::move(outcomes)]() mutable {
    for (size_t i = 0; i < group.size(); ++i) group[i].done(outcomes[i]);
  };
  if (!run_callbacks_) return callbacks();
  {
    MutexLock lock(&mu_);
    ++running_callbacks_;
  }
  run_callbacks_([this, callbacks = std::move(callbacks)]() mutable {
    callbacks();
    MutexLock lock(&mu_);
    if (--running_callbacks_ == 0) callbacks_done_.SignalAll();
  });
}

}  // namespace tpcoord
