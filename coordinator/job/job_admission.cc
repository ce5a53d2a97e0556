// Admission: who may do what to a job (job.h, "Who may do what"), checked under the job's lock in the same
// step that serves the call.
#include "coordinator/job/job.h"

#include <algorithm>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "common/secrets.h"
#include "coordinator/job/job_internal.h"

namespace tpcoord {

using job_internal::GenerationEnded;

absl::Status Job::CheckLive(uint64_t generation, bool allow_completed) const {
  if (!born_) return absl::NotFoundError("the job does not exist");
  if (header_.generation == 0) {
    return absl::FailedPreconditionError(
        absl::StrCat("generation ", generation, " does not exist; the job has no generation yet"));
  }
  if (generation == 0 || generation > header_.generation) {
    return absl::FailedPreconditionError(
        absl::StrCat("generation ", generation, " does not exist; the job is in generation ", header_.generation));
  }
  if (generation < header_.generation) {
    return absl::FailedPreconditionError(
        absl::StrCat("generation ", generation, " is over; the job is in generation ", header_.generation, ": rejoin"));
  }
  switch (header_.phase) {
    case JobPhase::kRunning: return absl::OkStatus();
    case JobPhase::kCompleted:
      if (allow_completed) return absl::OkStatus();
      return absl::FailedPreconditionError(
          absl::StrCat("generation ", generation, " has completed: every member left finished"));
    case JobPhase::kFailed: return GenerationEnded(header_);
    default:
      return absl::FailedPreconditionError(
          absl::StrCat("generation ", generation, " is still ", JobPhaseName(header_.phase), "; wait for Join"));
  }
}

absl::Status Job::CheckRank(int rank) const {
  if (rank < 0 || rank >= header_.world_size || rank >= static_cast<int>(gen_->members.size())) {
    return absl::InvalidArgumentError(absl::StrCat("rank ", rank, " is out of range for world_size ",
                                                   header_.world_size, " of generation ", header_.generation));
  }
  return absl::OkStatus();
}

absl::Status Job::CheckCaller(const Caller& caller) const {
  if (caller.token_sha256.empty()) return MissingTokenError();
  if (!born_) return absl::NotFoundError("the job does not exist");
  if (caller.admin) return absl::OkStatus();
  if (header_.token_sha256.empty()) {     // stored before jobs had tokens, or unreadable
    if (!corrupt_.ok()) return corrupt_;  // why, and what can be done about it
    return absl::PermissionDeniedError("the job is bound to no token; only the coordinator's admin token may use it");
  }
  if (!ConstantTimeEquals(caller.token_sha256, header_.token_sha256)) {
    return absl::PermissionDeniedError("the call's token is not the job's token");
  }
  return absl::OkStatus();
}

absl::Status Job::CheckCreator(const Caller& caller) const {
  if (born_ || caller.token_sha256.empty()) return CheckCaller(caller);
  if (options_.only_admin_creates_jobs && !caller.admin) {
    return absl::PermissionDeniedError(
        "the job does not exist, and on this coordinator only the admin token creates jobs (--job-creation admin); "
        "ask its operator to create it (tpctl create)");
  }
  return absl::OkStatus();
}

absl::Status Job::CheckMember(const Caller& caller, uint64_t generation, int rank, bool allow_completed) const {
  if (absl::Status s = CheckCaller(caller); !s.ok()) return s;
  if (absl::Status s = CheckLive(generation, allow_completed); !s.ok()) return s;
  if (absl::Status s = CheckRank(rank); !s.ok()) return s;
  if (caller.member_key_sha256.empty()) {
    return absl::UnauthenticatedError(absl::StrCat("a call acting as rank ", rank,
                                                   " must carry the member key it "
                                                   "joined with (metadata ",
                                                   kMemberKeyMetadata, ")"));
  }
  if (!ConstantTimeEquals(caller.member_key_sha256, gen_->members[rank].key_sha256)) {
    return absl::PermissionDeniedError(absl::StrCat("the call's member key is not the one rank ", rank,
                                                    " of generation ", generation, " joined with"));
  }
  return absl::OkStatus();
}

absl::Status Job::CheckAnyMember(const Caller& caller, uint64_t generation) const {
  if (absl::Status s = CheckCaller(caller); !s.ok()) return s;
  if (absl::Status s = CheckLive(generation); !s.ok()) return s;
  if (caller.member_key_sha256.empty()) {
    return absl::UnauthenticatedError(absl::StrCat("store calls must carry the member key of a member of generation ",
                                                   generation, " (metadata ", kMemberKeyMetadata, ")"));
  }
  if (gen_->member_keys.count(caller.member_key_sha256) == 0) {
    return absl::PermissionDeniedError(
        absl::StrCat("the call's member key is not that of any member of generation ", generation));
  }
  return absl::OkStatus();
}

absl::Status Job::Authorize(const Caller& caller) const {
  MutexLock lock(&mu_);
  if (absl::Status s = CheckCaller(caller); !s.ok()) return WithContext(s);
  return corrupt_;
}

bool Job::HasWorkers() const {
  return header_.phase == JobPhase::kRunning || (header_.phase == JobPhase::kJoining && !gen_->members.empty());
}

}  // namespace tpcoord
