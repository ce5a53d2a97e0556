// Every job the coordinator knows, by job_id. A sharded map: concurrent calls for different jobs rarely
// contend on the same mutex. Jobs live as long as the registry (state is small once a generation ends).
#ifndef TPCOORD_COORDINATOR_JOB_REGISTRY_H_
#define TPCOORD_COORDINATOR_JOB_REGISTRY_H_

#include <array>
#include <memory>
#include <mutex>
#include <string>
#include <unordered_map>
#include <vector>

#include "coordinator/job.h"

namespace tpcoord {

class JobRegistry {
 public:
  // `store` and `timers` must outlive the registry.
  JobRegistry(StateStore* store, TimerQueue* timers, const JobOptions& options);

  // Loads every job the state store holds. Call once, before serving.
  absl::Status Restore();

  // `job_id` must be valid (ValidateJobId).
  std::shared_ptr<Job> GetOrCreate(const std::string& job_id);
  // nullptr when the job does not exist.
  std::shared_ptr<Job> Find(const std::string& job_id) const;
  // Sorted by job_id.
  std::vector<std::shared_ptr<Job>> All() const;

 private:
  struct Shard {
    mutable std::mutex mu;
    std::unordered_map<std::string, std::shared_ptr<Job>> jobs;
  };
  Shard& ShardFor(const std::string& job_id) const;

  StateStore* const store_;
  TimerQueue* const timers_;
  const JobOptions options_;
  mutable std::array<Shard, 16> shards_;
};

}  // namespace tpcoord

#endif  // TPCOORD_COORDINATOR_JOB_REGISTRY_H_
