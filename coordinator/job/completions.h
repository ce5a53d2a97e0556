// How a job answers its calls. Every call gets its answer through a callback that runs exactly once, and
// never under the job's lock: answers are collected in a Completions while the lock is held and run when
// it is released, so that a callback may call into the job again.
#ifndef TPCOORD_COORDINATOR_JOB_COMPLETIONS_H_
#define TPCOORD_COORDINATOR_JOB_COMPLETIONS_H_

#include <chrono>
#include <cstdint>
#include <functional>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "common/mesh.h"

namespace tpcoord {

using Millis = std::chrono::milliseconds;

template <typename T>
using Done = std::function<void(absl::StatusOr<T>)>;
using StatusDone = std::function<void(absl::Status)>;

// What Join answers every member once the world is complete.
struct Assignment {
  uint64_t generation = 0;
  int rank = 0;
  Mesh mesh;
  Millis heartbeat_interval{0};
  Millis lease{0};
};

// Callbacks collected under a lock and run, in order, when this object is destroyed. Declare it before the
// lock guard so that the guard is destroyed (the lock released) first.
class Completions {
 public:
  Completions() = default;
  Completions(const Completions&) = delete;
  Completions& operator=(const Completions&) = delete;
  ~Completions() {
    // A callback may add more (a completion that completes another call).
    for (size_t i = 0; i < fns_.size(); ++i) {
      std::function<void()> fn = std::move(fns_[i]);
      fn();
    }
  }

  void Add(std::function<void()> fn) { fns_.push_back(std::move(fn)); }

  template <typename T>
  void Answer(Done<T> done, absl::StatusOr<T> value) {
    Add([done = std::move(done), value = std::move(value)]() mutable { done(std::move(value)); });
  }
  void Answer(StatusDone done, absl::Status status) {
    Add([done = std::move(done), status = std::move(status)] { done(status); });
  }

 private:
  std::vector<std::function<void()>> fns_;
};

}  // namespace tpcoord

#endif  // TPCOORD_COORDINATOR_JOB_COMPLETIONS_H_
