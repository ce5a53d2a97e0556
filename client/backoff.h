// How a client waits between tries at an unreachable coordinator: exponential backoff with full jitter
// (each wait uniform in [0, the current bound], the bound doubling up to a maximum), as AWS's architecture
// blog recommends so that many clients do not retry in step. One for the unary calls' retries and the
// member session's reconnects.
//
// Not thread-safe: one per retry loop.
#ifndef TPCOORD_CLIENT_BACKOFF_H_
#define TPCOORD_CLIENT_BACKOFF_H_

#include <chrono>
#include <random>

namespace tpcoord {

class Backoff {
 public:
  using Millis = std::chrono::milliseconds;

  Backoff(Millis initial, Millis max) : initial_(initial), max_(max), bound_(initial) {}

  // The next wait, and doubles the bound for the one after.
  Millis Next();
  // The bound as it started (after a success).
  void Reset() { bound_ = initial_; }
  // The bound the next wait is drawn under.
  Millis bound() const { return bound_; }

 private:
  const Millis initial_;
  const Millis max_;
  Millis bound_;
};

}  // namespace tpcoord

#endif  // TPCOORD_CLIENT_BACKOFF_H_
