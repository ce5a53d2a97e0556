#include "client/backoff.h"

#include <algorithm>

namespace tpcoord {

Backoff::Millis Backoff::Next() {
  thread_local std::mt19937_64 rng(std::random_device{}());
  std::uniform_int_distribution<int64_t> jitter(0, bound_.count());
  const Millis wait(jitter(rng));
  bound_ = std::min(bound_ * 2, max_);
  return wait;
}

}  // namespace tpcoord
