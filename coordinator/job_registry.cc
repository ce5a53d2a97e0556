#include "coordinator/job_registry.h"

#include <algorithm>
#include <functional>

namespace tpcoord {

JobRegistry::JobRegistry(StateStore* store, TimerQueue* timers, const JobOptions& options)
    : store_(store), timers_(timers), options_(options) {}

JobRegistry::Shard& JobRegistry::ShardFor(const std::string& job_id) const {
  return shards_[std::hash<std::string>{}(job_id) % shards_.size()];
}

absl::Status JobRegistry::Restore() {
  absl::StatusOr<std::vector<PersistedJob>> jobs = store_->LoadJobs();
  if (!jobs.ok()) return jobs.status();
  for (const PersistedJob& persisted : *jobs) GetOrCreate(persisted.job_id)->Restore(persisted);
  return absl::OkStatus();
}

std::shared_ptr<Job> JobRegistry::GetOrCreate(const std::string& job_id) {
  Shard& shard = ShardFor(job_id);
  std::lock_guard<std::mutex> lock(shard.mu);
  std::shared_ptr<Job>& job = shard.jobs[job_id];
  if (!job) job = std::make_shared<Job>(job_id, store_, timers_, options_);
  return job;
}

std::shared_ptr<Job> JobRegistry::Find(const std::string& job_id) const {
  Shard& shard = ShardFor(job_id);
  std::lock_guard<std::mutex> lock(shard.mu);
  auto it = shard.jobs.find(job_id);
  return it == shard.jobs.end() ? nullptr : it->second;
}

std::vector<std::shared_ptr<Job>> JobRegistry::All() const {
  std::vector<std::shared_ptr<Job>> all;
  for (Shard& shard : shards_) {
    std::lock_guard<std::mutex> lock(shard.mu);
    for (const auto& [id, job] : shard.jobs) all.push_back(job);
  }
  std::sort(all.begin(), all.end(), [](const auto& a, const auto& b) { return a->id() < b->id(); });
  return all;
}

}  // namespace tpcoord
