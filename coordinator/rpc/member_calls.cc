#include "coordinator/rpc/member_calls.h"

#include <algorithm>
#include <optional>
#include <utility>

#include "absl/strings/str_cat.h"
#include "common/limits.h"
#include "common/wire.h"
#include "coordinator/rpc/request_checks.h"

namespace tpcoord {
namespace {

// `done` with the job's status, after `fill` wrote a value into the response.
template <typename T, typename Fill>
Done<T> Filling(StatusDone done, Fill fill) {
  return [done = std::move(done), fill](absl::StatusOr<T> value) {
    if (value.ok()) fill(*std::move(value));
    done(value.status());
  };
}

}  // namespace

Millis MemberCalls::Wait(uint32_t wait_timeout_ms) const {
  return std::min(wait_timeout_ms == 0 ? options_.default_wait : Millis(wait_timeout_ms), Millis(kMaxWaitMs));
}

absl::Status NoSuchJobError(const std::string& job_id) {
  return absl::NotFoundError(absl::StrCat("job ", job_id, " does not exist"));
}

absl::StatusOr<std::shared_ptr<Job>> MemberCalls::ExistingJob(const std::string& job_id) const {
  std::shared_ptr<Job> job = registry_->Find(job_id);
  if (!job) return NoSuchJobError(job_id);
  return job;
}

void MemberCalls::Record(const Caller& caller, const v1::RecordTpInitArgsRequest& req,
                         v1::RecordTpInitArgsResponse* out, StatusDone done) const {
  absl::StatusOr<TpInitArgs> args = CheckRequest(req);
  if (!args.ok()) return done(args.status());
  absl::StatusOr<PinnedJob> job = registry_->GetOrCreate(req.job_id());
  if (!job.ok()) return done(job.status());
  (*job)->Record(caller, *args, Filling<RecordOutcome>(std::move(done), [out](RecordOutcome o) {
                   TpInitRecordToProto(o.record, out->mutable_recorded());
                   out->set_created(o.created);
                 }));
}

void MemberCalls::Merge(const Caller& caller, const v1::MergeConfigRequest& req, v1::MergeConfigResponse* out,
                        StatusDone done) const {
  if (absl::Status s = CheckRequest(req); !s.ok()) return done(s);
  // A dry run may name a job that does not exist: it is validated against no record, and leaves no job
  // behind.
  std::shared_ptr<Job> job;
  std::optional<PinnedJob> pin;
  if (req.generation() == 0) {
    absl::StatusOr<PinnedJob> pinned = registry_->GetOrCreate(req.job_id());
    if (!pinned.ok()) return done(pinned.status());
    job = pinned->get();
    pin.emplace(*std::move(pinned));
  } else {
    absl::StatusOr<std::shared_ptr<Job>> existing = ExistingJob(req.job_id());
    if (!existing.ok()) return done(existing.status());
    job = *std::move(existing);
  }
  job->Merge(caller, req.config_json(), req.has_mpu(), req.generation(), req.rank(),
             Filling<MergeOutcome>(std::move(done), [out](MergeOutcome o) {
               out->set_merged_config_json(std::move(o.merged_config));
               out->set_tp_init_recorded(o.tp_init_recorded);
             }));
}

WaitingCall MemberCalls::Join(const Caller& caller, const v1::JoinRequest& req, Millis wait, v1::JoinResponse* out,
                             StatusDone done) const {
  absl::StatusOr<JoinArgs> args = CheckRequest(req);
  if (!args.ok()) return done(args.status()), WaitingCall{};
  absl::StatusOr<PinnedJob> job = registry_->GetOrCreate(req.job_id());
  if (!job.ok()) return done(job.status()), WaitingCall{};
  std::shared_ptr<Job> parked_in = job->get();
  const uint64_t id = parked_in->Join(caller, *std::move(args), wait,
                                      Filling<Assignment>(std::move(done), [out](Assignment a) {
                                        const Mesh& mesh = a.mesh;
                                        out->set_generation(a.generation);
                                        out->set_rank(a.rank);
                                        out->mutable_mesh()->set_world_size(mesh.world_size());
                                        out->mutable_mesh()->set_tp_size(mesh.tp_size());
                                        out->mutable_mesh()->set_dp_size(mesh.dp_size());
                                        out->set_tp_rank(mesh.tp_rank(a.rank));
                                        out->set_dp_rank(mesh.dp_rank(a.rank));
                                        *out->mutable_tp_group() = GroupToProto(mesh, mesh.tp_group_of(a.rank));
                                        *out->mutable_dp_group() = GroupToProto(mesh, mesh.dp_group_of(a.rank));
                                        out->set_heartbeat_interval_ms(
                                            static_cast<uint32_t>(a.heartbeat_interval.count()));
                                        out->set_lease_ms(static_cast<uint32_t>(a.lease.count()));
                                      }));
  return WaitingCall{std::move(parked_in), id};
}

void MemberCalls::PublishUniqueIds(const Caller& caller, const v1::PublishUniqueIdRequest& req,
                                   StatusDone done) const {
  absl::StatusOr<UniqueIds> ids = CheckRequest(req);
  if (!ids.ok()) return done(ids.status());
  absl::StatusOr<std::shared_ptr<Job>> job = ExistingJob(req.job_id());
  if (!job.ok()) return done(job.status());
  (*job)->PublishUniqueIds(caller, req.generation(), req.rank(), *std::move(ids), std::move(done));
}

WaitingCall MemberCalls::GetUniqueIds(const Caller& caller, const v1::GetUniqueIdRequest& req, Millis wait,
                                     v1::GetUniqueIdResponse* out, StatusDone done) const {
  absl::StatusOr<std::vector<GroupId>> groups = CheckRequest(req);
  if (!groups.ok()) return done(groups.status()), WaitingCall{};
  absl::StatusOr<std::shared_ptr<Job>> job = ExistingJob(req.job_id());
  if (!job.ok()) return done(job.status()), WaitingCall{};
  const uint64_t id = (*job)->GetUniqueIds(caller, req.generation(), req.rank(), *std::move(groups), wait,
                                           Filling<UniqueIds>(std::move(done), [out](UniqueIds ids) {
                                             for (auto& [slot, bytes] : ids) {
                                               v1::UniqueId* id = out->add_ids();
                                               *id->mutable_group() = GroupIdToProto(slot.group);
                                               id->set_root(slot.root);
                                               id->set_id(std::move(bytes));
                                             }
                                           }));
  return WaitingCall{*std::move(job), id};
}

WaitingCall MemberCalls::Barrier(const Caller& caller, const v1::BarrierRequest& req, Millis wait,
                                StatusDone done) const {
  if (absl::Status s = CheckRequest(req); !s.ok()) return done(s), WaitingCall{};
  absl::StatusOr<std::shared_ptr<Job>> job = ExistingJob(req.job_id());
  if (!job.ok()) return done(job.status()), WaitingCall{};
  const uint64_t id =
      (*job)->Barrier(caller, req.generation(), req.rank(), req.name(), req.round(), wait, std::move(done));
  return WaitingCall{*std::move(job), id};
}

void MemberCalls::Leave(const Caller& caller, const v1::LeaveRequest& req, StatusDone done) const {
  if (absl::Status s = CheckRequest(req); !s.ok()) return done(s);
  absl::StatusOr<std::shared_ptr<Job>> job = ExistingJob(req.job_id());
  if (!job.ok()) return done(job.status());
  (*job)->Leave(caller, req.generation(), req.rank(), req.finished(), req.reason(), std::move(done), req.fatal());
}

}  // namespace tpcoord
