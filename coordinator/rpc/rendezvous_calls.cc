// The rendezvous family of JobCalls (job_calls.h): tp_model_init's record, the config merge, Join, NCCL
// unique IDs, barriers, heartbeats and leaving.
#include <optional>
#include <utility>

#include "common/wire.h"
#include "coordinator/rpc/answers.h"
#include "coordinator/rpc/job_calls.h"

namespace tpcoord {

WaitingCall JobCalls::Record(const Caller& caller, v1::RecordTpInitArgsRequest& req, Millis,
                             v1::RecordTpInitArgsResponse* out, StatusDone done) const {
  absl::StatusOr<TpInitArgs> args = CheckRequest(req);
  if (!args.ok()) return done(args.status()), WaitingCall{};
  absl::StatusOr<PinnedJob> job = registry_->GetOrCreate(req.job_id());
  if (!job.ok()) return done(job.status()), WaitingCall{};
  (*job)->Record(caller, *args, Filling<RecordOutcome>(std::move(done), [out](RecordOutcome o) {
                   TpInitRecordToProto(o.record, out->mutable_recorded());
                   out->set_created(o.created);
                 }));
  return {};
}

WaitingCall JobCalls::Merge(const Caller& caller, v1::MergeConfigRequest& req, Millis, v1::MergeConfigResponse* out,
                            StatusDone done) const {
  if (absl::Status s = CheckRequest(req); !s.ok()) return done(s), WaitingCall{};
  // A dry run may name a job that does not exist: it is validated against no record, and leaves no job
  // behind.
  std::shared_ptr<Job> job;
  std::optional<PinnedJob> pin;
  if (req.generation() == 0) {
    absl::StatusOr<PinnedJob> pinned = registry_->GetOrCreate(req.job_id());
    if (!pinned.ok()) return done(pinned.status()), WaitingCall{};
    job = pinned->get();
    pin.emplace(*std::move(pinned));
  } else {
    absl::StatusOr<std::shared_ptr<Job>> existing = ExistingJob(req.job_id());
    if (!existing.ok()) return done(existing.status()), WaitingCall{};
    job = *std::move(existing);
  }
  job->Merge(caller, std::move(*req.mutable_config_json()), req.has_mpu(), req.generation(), req.rank(),
             Filling<MergeOutcome>(std::move(done), [out](MergeOutcome o) {
               out->set_merged_config_json(std::move(o.merged_config));
               out->set_tp_init_recorded(o.tp_init_recorded);
             }));
  return {};
}

WaitingCall JobCalls::Join(const Caller& caller, v1::JoinRequest& req, Millis wait, v1::JoinResponse* out,
                           StatusDone done) const {
  absl::StatusOr<JoinArgs> args = CheckRequest(req);
  if (!args.ok()) return done(args.status()), WaitingCall{};
  absl::StatusOr<PinnedJob> job = registry_->GetOrCreate(req.job_id());
  if (!job.ok()) return done(job.status()), WaitingCall{};
  std::shared_ptr<Job> parked_in = job->get();
  const uint64_t id =
      parked_in->Join(caller, *std::move(args), wait,
                      Filling<Assignment>(std::move(done), [out](Assignment a) { AssignmentToProto(a, out); }));
  return WaitingCall{std::move(parked_in), id};
}

WaitingCall JobCalls::PublishUniqueId(const Caller& caller, v1::PublishUniqueIdRequest& req, Millis,
                                      v1::PublishUniqueIdResponse*, StatusDone done) const {
  absl::StatusOr<UniqueIds> ids = CheckRequest(req);
  if (!ids.ok()) return done(ids.status()), WaitingCall{};
  absl::StatusOr<std::shared_ptr<Job>> job = ExistingJob(req.job_id());
  if (!job.ok()) return done(job.status()), WaitingCall{};
  (*job)->PublishUniqueIds(caller, req.generation(), req.rank(), *std::move(ids), std::move(done));
  return {};
}

WaitingCall JobCalls::GetUniqueId(const Caller& caller, v1::GetUniqueIdRequest& req, Millis wait,
                                  UniqueIdAnswer* out, StatusDone done) const {
  absl::StatusOr<std::vector<GroupId>> groups = CheckRequest(req);
  if (!groups.ok()) return done(groups.status()), WaitingCall{};
  absl::StatusOr<std::shared_ptr<Job>> job = ExistingJob(req.job_id());
  if (!job.ok()) return done(job.status()), WaitingCall{};
  const uint64_t id = (*job)->GetUniqueIds(
      caller, req.generation(), req.rank(), *std::move(groups), wait,
      Filling<SharedUniqueIds>(std::move(done), [out](SharedUniqueIds ids) { out->groups = std::move(ids); }));
  return WaitingCall{*std::move(job), id};
}

WaitingCall JobCalls::Barrier(const Caller& caller, v1::BarrierRequest& req, Millis wait, v1::BarrierResponse*,
                              StatusDone done) const {
  absl::StatusOr<std::shared_ptr<Job>> job = Checked(req);
  if (!job.ok()) return done(job.status()), WaitingCall{};
  const uint64_t id = (*job)->Barrier(caller, req.generation(), req.rank(), std::move(*req.mutable_name()), req.round(),
                                      wait, std::move(done));
  return WaitingCall{*std::move(job), id};
}

WaitingCall JobCalls::Heartbeat(const Caller& caller, v1::HeartbeatRequest& req, Millis, v1::HeartbeatResponse* out,
                                StatusDone done) const {
  absl::StatusOr<std::shared_ptr<Job>> job = Checked(req);
  if (!job.ok()) return done(job.status()), WaitingCall{};
  absl::StatusOr<Millis> lease = (*job)->Heartbeat(caller, req.generation(), req.rank());
  if (lease.ok()) out->set_lease_ms(static_cast<uint32_t>(lease->count()));
  done(lease.status());
  return {};
}

WaitingCall JobCalls::Leave(const Caller& caller, v1::LeaveRequest& req, Millis, v1::LeaveResponse*,
                            StatusDone done) const {
  absl::StatusOr<std::shared_ptr<Job>> job = Checked(req);
  if (!job.ok()) return done(job.status()), WaitingCall{};
  (*job)->Leave(caller, req.generation(), req.rank(), req.finished(), std::move(*req.mutable_reason()), std::move(done),
                req.fatal());
  return {};
}

}  // namespace tpcoord
