// Durable coordinator state: what a coordinator killed with SIGKILL must still know when it restarts on the
// same state directory. Per job that is the recorded tp_model_init arguments, the latest merged config and
// the current generation with its phase. Membership, unique IDs, key-value entries and barriers are not
// kept: they belong to a generation, and a restart ends the running generation (workers rejoin).
#ifndef TPCOORD_COORDINATOR_STATE_STORE_H_
#define TPCOORD_COORDINATOR_STATE_STORE_H_

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include "absl/strings/string_view.h"
#include <vector>

#include "absl/status/statusor.h"
#include "common/tp_init_args.h"

namespace tpcoord {

enum class JobPhase { kIdle, kJoining, kRunning, kCompleted, kFailed };

inline absl::string_view JobPhaseName(JobPhase phase) {
  switch (phase) {
    case JobPhase::kIdle: return "idle";
    case JobPhase::kJoining: return "joining";
    case JobPhase::kRunning: return "running";
    case JobPhase::kCompleted: return "completed";
    case JobPhase::kFailed: return "failed";
  }
  return "unknown";
}

struct PersistedJob {
  std::string job_id;
  std::optional<TpInitRecord> tp_init;
  std::string merged_config;  // "" until a merge succeeded
  uint64_t generation = 0;    // 0: none yet
  JobPhase phase = JobPhase::kIdle;
  int world_size = 0;
  std::string end_reason;
};

class StateStore {
 public:
  virtual ~StateStore() = default;

  // Replaces the job's row atomically. On error nothing was written.
  virtual absl::Status SaveJob(const PersistedJob& job) = 0;

  // Every saved job, in job_id order.
  virtual absl::StatusOr<std::vector<PersistedJob>> LoadJobs() = 0;
};

// An SQLite database at `path` (created if missing; ":memory:" for tests). Thread-safe.
absl::StatusOr<std::unique_ptr<StateStore>> OpenSqliteStateStore(const std::string& path);

}  // namespace tpcoord

#endif  // TPCOORD_COORDINATOR_STATE_STORE_H_
