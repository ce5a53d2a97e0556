// The operators' family of JobCalls (job_calls.h): listing, reading, creating, closing and deleting jobs (tpctl,
// and a torchrun rendezvous backend's set_closed).
#include <utility>
#include <vector>

#include "coordinator/rpc/answers.h"
#include "coordinator/rpc/job_calls.h"

namespace tpcoord {

WaitingCall JobCalls::ListJobs(const Caller& caller, v1::ListJobsRequest& req, Millis, v1::ListJobsResponse* out,
                               StatusDone done) const {
  absl::StatusOr<int> page_size = CheckRequest(req);
  if (!page_size.ok()) return done(page_size.status()), WaitingCall{};
  // One more than the page, to tell whether another page follows.
  const std::vector<std::shared_ptr<Job>> jobs =
      registry_->Page(req.page_token(), *page_size + 1, [&caller](const Job& job) {
        const absl::Status s = job.Authorize(caller);
        return s.ok() || s.code() == absl::StatusCode::kDataLoss;  // listed, to be seen and deleted
      });
  for (size_t i = 0; i < jobs.size(); ++i) {
    if (static_cast<int>(i) == *page_size) {
      out->set_next_page_token(jobs[i - 1]->id());
      break;
    }
    std::optional<JobView> view = jobs[i]->View(false);
    if (!view) continue;
    view->merged_config.clear();
    view->timings.clear();
    JobViewToProto(*view, out->add_jobs());
  }
  done(absl::OkStatus());
  return {};
}

WaitingCall JobCalls::GetJob(const Caller& caller, v1::GetJobRequest& req, Millis, v1::GetJobResponse* out,
                             StatusDone done) const {
  if (absl::Status s = CheckRequest(req); !s.ok()) return done(s), WaitingCall{};
  std::shared_ptr<Job> job = registry_->Find(req.job_id());
  if (job) {
    if (absl::Status s = job->Authorize(caller); !s.ok()) return done(s), WaitingCall{};
  }
  std::optional<JobView> view = job ? job->View(true) : std::nullopt;
  if (!view) return done(NoSuchJobError(req.job_id())), WaitingCall{};
  JobViewToProto(*view, out->mutable_job());
  done(absl::OkStatus());
  return {};
}

WaitingCall JobCalls::DeleteJob(const Caller& caller, v1::DeleteJobRequest& req, Millis, v1::DeleteJobResponse*,
                                StatusDone done) const {
  absl::StatusOr<std::shared_ptr<Job>> job = Checked(req);
  if (!job.ok()) return done(job.status()), WaitingCall{};
  (*job)->Delete(caller, req.force(), std::move(done));
  return {};
}

WaitingCall JobCalls::CreateJob(const Caller& caller, v1::CreateJobRequest& req, Millis, v1::CreateJobResponse*,
                                StatusDone done) const {
  absl::StatusOr<std::string> token_sha256 = CheckRequest(req);
  if (!token_sha256.ok()) return done(token_sha256.status()), WaitingCall{};
  absl::StatusOr<PinnedJob> job = registry_->GetOrCreate(req.job_id());
  if (!job.ok()) return done(job.status()), WaitingCall{};
  (*job)->Create(caller, *std::move(token_sha256), std::move(done));
  return {};
}

WaitingCall JobCalls::CloseJob(const Caller& caller, v1::CloseJobRequest& req, Millis, v1::CloseJobResponse*,
                               StatusDone done) const {
  if (absl::Status s = CheckRequest(req); !s.ok()) return done(s), WaitingCall{};
  absl::StatusOr<PinnedJob> job = registry_->GetOrCreate(req.job_id());
  if (!job.ok()) return done(job.status()), WaitingCall{};
  (*job)->Close(caller, std::move(*req.mutable_reason()), std::move(done));
  return {};
}

}  // namespace tpcoord
