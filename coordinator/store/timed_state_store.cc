#include "coordinator/store/timed_state_store.h"

#include <chrono>

namespace tpcoord {

absl::Status TimedStateStore::Write(const StateWrites& writes, absl::string_view what) {
  const auto start = std::chrono::steady_clock::now();
  absl::Status status = store_->Write(writes, what);
  on_write_(std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count(), status);
  return status;
}

}  // namespace tpcoord
