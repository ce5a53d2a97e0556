// Every job the coordinator knows, by job_id: a sharded map, so that concurrent calls for different jobs
// rarely contend on one mutex. A job is in the registry from its first call until it is gone (deleted,
// expired after --job-ttl, or created by a call that left no state); at most `max_jobs` at once.
//
// Thread-safety: every method may be called from any thread. Lock order: a shard's lock, then a job's.
#ifndef TPCOORD_COORDINATOR_JOB_JOB_REGISTRY_H_
#define TPCOORD_COORDINATOR_JOB_JOB_REGISTRY_H_

#include <array>
#include <atomic>
#include <functional>
#include <memory>
#include <string>
#include <unordered_map>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "common/mutex.h"
#include "coordinator/job/job.h"

namespace tpcoord {

// A job pinned for a call that may create it (see Job::TryPin); unpinned when this goes away.
class PinnedJob {
 public:
  explicit PinnedJob(std::shared_ptr<Job> job) : job_(std::move(job)) {}
  PinnedJob(PinnedJob&& other) = default;
  PinnedJob& operator=(PinnedJob&& other) = delete;
  ~PinnedJob() {
    if (job_) job_->Unpin();
  }
  Job* operator->() const { return job_.get(); }
  const std::shared_ptr<Job>& get() const { return job_; }

 private:
  std::shared_ptr<Job> job_;
};

class JobRegistry {
 public:
  // `context` must outlive the registry and every job; the registry sets its on_gone.
  JobRegistry(JobContext* context, size_t max_jobs);
  ~JobRegistry();  // Shutdown()
  JobRegistry(const JobRegistry&) = delete;
  JobRegistry& operator=(const JobRegistry&) = delete;

  struct Restored {
    size_t jobs = 0;
    std::vector<std::string> corrupt;  // one message per job that answers DATA_LOSS
  };
  // Loads every job the state store holds. A job whose stored state cannot be read is kept and answers
  // DATA_LOSS (until deleted), so that one bad entry does not keep every other job from being served. Call
  // once, before serving.
  absl::StatusOr<Restored> Restore();

  // The job, pinned, created if it does not exist (it exists for others once its first change is
  // durable). RESOURCE_EXHAUSTED when `max_jobs` jobs exist; UNAVAILABLE once shutting down.
  absl::StatusOr<PinnedJob> GetOrCreate(const std::string& job_id);
  // nullptr when the job does not exist.
  std::shared_ptr<Job> Find(const std::string& job_id) const;
  // Up to `limit` jobs with ids after `after` for which `visible` holds, in id order.
  std::vector<std::shared_ptr<Job>> Page(const std::string& after, size_t limit,
                                         const std::function<bool(const Job&)>& visible) const;
  size_t size() const { return size_.load(); }
  Metrics* metrics() const { return context_->metrics; }

  // Every `interval`, deletes the jobs nothing has happened to for `ttl` and that nothing runs or waits in.
  void ExpireIdleJobs(Millis ttl, Millis interval) ABSL_LOCKS_EXCLUDED(sweep_mu_);

  // Every job answers UNAVAILABLE from now on, and no job is created. When it returns, no expiry sweep runs
  // or will run.
  void Shutdown() ABSL_LOCKS_EXCLUDED(sweep_mu_);

 private:
  struct Shard {
    mutable Mutex mu;
    std::unordered_map<std::string, std::shared_ptr<Job>> jobs ABSL_GUARDED_BY(mu);
  };
  Shard& ShardFor(const std::string& job_id) const;
  void Forget(const std::shared_ptr<Job>& job);
  void Sweep(Millis ttl, Millis interval) ABSL_LOCKS_EXCLUDED(sweep_mu_);
  void ScheduleSweep(Millis ttl, Millis interval) ABSL_EXCLUSIVE_LOCKS_REQUIRED(sweep_mu_);
  std::vector<std::shared_ptr<Job>> All() const;

  JobContext* const context_;
  const size_t max_jobs_;
  std::atomic<size_t> size_{0};
  std::atomic<bool> stopping_{false};
  mutable std::array<Shard, 16> shards_;
  Mutex sweep_mu_;
  TimerQueue::Id sweep_timer_ ABSL_GUARDED_BY(sweep_mu_) = 0;
};

}  // namespace tpcoord

#endif  // TPCOORD_COORDINATOR_JOB_JOB_REGISTRY_H_
