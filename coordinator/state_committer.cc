#include "coordinator/state_committer.h"

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

StateCommitter::StateCommitter(StateStore* store) : store_(store), thread_([this] { Run(); }) {}

StateCommitter::~StateCommitter() {
  {
    absl::MutexLock lock(&mu_);
    stopping_ = true;
  }
  thread_.join();
}

void StateCommitter::Submit(StateWrites writes, std::string what, std::function<void(absl::Status)> done) {
  absl::MutexLock lock(&mu_);
  queue_.push_back({std::move(writes), std::move(what), std::move(done)});
}

bool StateCommitter::HasWork() const { return stopping_ || !queue_.empty(); }

void StateCommitter::Run() {
  while (true) {
    std::deque<Pending> group;
    {
      absl::MutexLock lock(&mu_);
      mu_.Await(absl::Condition(this, &StateCommitter::HasWork));
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
  if (group.size() > 1) {
    StateWrites all;
    for (Pending& p : group) all.insert(all.end(), p.writes.begin(), p.writes.end());
    const absl::Status status = store_->Write(all, absl::StrCat(group.front().what, " and ", group.size() - 1, " more"));
    if (status.ok()) {
      for (Pending& p : group) p.done(absl::OkStatus());
      return;
    }
    // Each submission on its own, so that one that cannot be written does not fail the others.
  }
  for (Pending& p : group) p.done(store_->Write(p.writes, p.what));
}

}  // namespace tpcoord
