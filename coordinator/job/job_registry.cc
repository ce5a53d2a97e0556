#include "coordinator/job/job_registry.h"

#include <algorithm>
#include <functional>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "common/identifiers.h"
#include "coordinator/store/job_storage.h"

namespace tpcoord {
namespace {

int64_t UnixMillisNow() {
  return std::chrono::duration_cast<Millis>(std::chrono::system_clock::now().time_since_epoch()).count();
}

}  // namespace

JobRegistry::JobRegistry(JobContext* context, size_t max_jobs) : context_(context), max_jobs_(max_jobs) {
  context_->on_gone = [this](const std::shared_ptr<Job>& job) { Forget(job); };
}

JobRegistry::Shard& JobRegistry::ShardFor(const std::string& job_id) const {
  return shards_[std::hash<std::string>{}(job_id) % shards_.size()];
}

absl::StatusOr<JobRegistry::Restored> JobRegistry::Restore() {
  absl::StatusOr<std::vector<StateEntry>> entries = context_->committer->store()->Scan(job_storage::kJobsPrefix);
  if (!entries.ok()) return entries.status();
  Restored restored;
  for (auto& [id, job_entries] : SplitByJob(*std::move(entries))) {
    if (!ValidateJobId(id).ok()) {
      restored.corrupt.push_back(
          absl::StrCat("ignored ", job_entries.size(), " stored entries under the invalid job id ", QuoteForError(id)));
      continue;
    }
    auto job = std::make_shared<Job>(id, context_);
    absl::StatusOr<StoredJob> stored = DecodeJob(id, job_entries);
    if (stored.ok()) {
      job->Restore(*std::move(stored));
    } else {
      const absl::Status corrupt = job->MarkCorrupt(stored.status(), StoredTokenSha256(id, job_entries));
      restored.corrupt.push_back(std::string(corrupt.message()));
    }
    Shard& shard = ShardFor(id);
    MutexLock lock(&shard.mu);
    shard.jobs.emplace(id, std::move(job));
    ++size_;
    ++restored.jobs;
  }
  return restored;
}

absl::StatusOr<PinnedJob> JobRegistry::GetOrCreate(const std::string& job_id) {
  if (stopping_) return absl::UnavailableError("the coordinator is shutting down; retry");
  Shard& shard = ShardFor(job_id);
  MutexLock lock(&shard.mu);
  std::shared_ptr<Job>& job = shard.jobs[job_id];
  if (job && job->TryPin()) return PinnedJob(job);
  if (!job) ++size_;  // the slot is new; a gone job's slot is reused
  if (size_ > max_jobs_) {
    if (!job) {
      shard.jobs.erase(job_id);
      --size_;
    }
    return absl::ResourceExhaustedError(absl::StrCat("job ", job_id, ": the coordinator holds ", max_jobs_,
                                                     " jobs, its limit (--max-jobs); delete jobs that are "
                                                     "done (tpctl delete) or let them expire (--job-ttl)"));
  }
  job = std::make_shared<Job>(job_id, context_);
  job->TryPin();
  return PinnedJob(job);
}

std::shared_ptr<Job> JobRegistry::Find(const std::string& job_id) const {
  Shard& shard = ShardFor(job_id);
  MutexLock lock(&shard.mu);
  auto it = shard.jobs.find(job_id);
  if (it == shard.jobs.end() || !it->second->exists()) return nullptr;
  return it->second;
}

void JobRegistry::Forget(const std::shared_ptr<Job>& job) {
  Shard& shard = ShardFor(job->id());
  MutexLock lock(&shard.mu);
  auto it = shard.jobs.find(job->id());
  if (it == shard.jobs.end() || it->second != job) return;  // already replaced by a new job of that id
  shard.jobs.erase(it);
  --size_;
}

std::vector<std::shared_ptr<Job>> JobRegistry::All() const {
  std::vector<std::shared_ptr<Job>> all;
  for (Shard& shard : shards_) {
    MutexLock lock(&shard.mu);
    for (const auto& [id, job] : shard.jobs) {
      if (job->exists()) all.push_back(job);
    }
  }
  std::sort(all.begin(), all.end(), [](const auto& a, const auto& b) { return a->id() < b->id(); });
  return all;
}

std::vector<std::shared_ptr<Job>> JobRegistry::Page(const std::string& after, size_t limit,
                                                    const std::function<bool(const Job&)>& visible) const {
  std::vector<std::shared_ptr<Job>> all = All();
  auto first = std::upper_bound(all.begin(), all.end(), after,
                                [](const std::string& id, const std::shared_ptr<Job>& job) { return id < job->id(); });
  std::vector<std::shared_ptr<Job>> page;
  for (auto it = first; it != all.end() && page.size() < limit; ++it) {
    if (visible(**it)) page.push_back(*it);
  }
  return page;
}

void JobRegistry::ExpireIdleJobs(Millis ttl, Millis interval) {
  MutexLock lock(&sweep_mu_);
  if (!stopping_) ScheduleSweep(ttl, interval);
}

void JobRegistry::ScheduleSweep(Millis ttl, Millis interval) {
  sweep_timer_ =
      context_->timers->Schedule(TimerQueue::Clock::now() + interval, [this, ttl, interval] { Sweep(ttl, interval); });
}

void JobRegistry::Sweep(Millis ttl, Millis interval) {
  MutexLock lock(&sweep_mu_);
  if (stopping_) return;
  const int64_t cutoff = UnixMillisNow() - ttl.count();
  for (const std::shared_ptr<Job>& job : All()) job->ExpireIfIdleSince(cutoff, [](absl::StatusOr<bool>) {});
  ScheduleSweep(ttl, interval);
}

void JobRegistry::Shutdown() {
  stopping_ = true;
  {
    // A sweep that is running finishes first; the next one never starts.
    MutexLock lock(&sweep_mu_);
    context_->timers->Cancel(sweep_timer_);
  }
  for (const std::shared_ptr<Job>& job : All()) job->Shutdown();
}

JobRegistry::~JobRegistry() { Shutdown(); }

}  // namespace tpcoord
