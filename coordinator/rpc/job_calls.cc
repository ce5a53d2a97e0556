#include "coordinator/rpc/job_calls.h"

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "common/limits.h"

namespace tpcoord {

Millis JobCalls::Wait(uint32_t wait_timeout_ms) const {
  return std::min(wait_timeout_ms == 0 ? options_.default_wait : Millis(wait_timeout_ms), Millis(kMaxWaitMs));
}

absl::Status NoSuchJobError(const std::string& job_id) {
  return absl::NotFoundError(absl::StrCat("job ", job_id, " does not exist"));
}

absl::StatusOr<std::shared_ptr<Job>> JobCalls::ExistingJob(const std::string& job_id) const {
  std::shared_ptr<Job> job = registry_->Find(job_id);
  if (!job) return NoSuchJobError(job_id);
  return job;
}

}  // namespace tpcoord
