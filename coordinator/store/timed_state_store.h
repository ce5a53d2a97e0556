// A StateStore that times every Write and tells `on_write` (the coordinator's metrics) how long it took and
// how it ended; otherwise it is the store it wraps.
#ifndef TPCOORD_COORDINATOR_STORE_TIMED_STATE_STORE_H_
#define TPCOORD_COORDINATOR_STORE_TIMED_STATE_STORE_H_

#include <functional>
#include <string>
#include <utility>
#include <vector>

#include "coordinator/store/state_store.h"

namespace tpcoord {

class TimedStateStore : public StateStore {
 public:
  using OnWrite = std::function<void(double seconds, const absl::Status& status)>;
  // `store` must outlive this.
  TimedStateStore(StateStore* store, OnWrite on_write) : store_(store), on_write_(std::move(on_write)) {}
  absl::Status Write(const StateWrites& writes, absl::string_view what) override;
  absl::StatusOr<std::vector<StateEntry>> Scan(absl::string_view prefix) override { return store_->Scan(prefix); }
  const std::string& name() const override { return store_->name(); }

 private:
  StateStore* const store_;
  const OnWrite on_write_;
};

}  // namespace tpcoord

#endif  // TPCOORD_COORDINATOR_STORE_TIMED_STATE_STORE_H_
