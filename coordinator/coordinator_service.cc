#include "coordinator/coordinator_service.h"

#include <algorithm>
#include <mutex>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "common/deepspeed_error.h"
#include "common/dtype.h"
#include "common/identifiers.h"
#include "common/wire.h"

namespace tpcoord {
namespace {

constexpr int kMaxGroupsPerCall = 16;
constexpr int kMaxKeysPerCall = 1024;
constexpr size_t kMaxReasonLength = 1024;

// absl::Status -> grpc::Status; the codes share their numbers. DeepSpeed errors keep their exact text as
// the message and carry the job context in the "tpcoord-context" trailing metadata.
grpc::Status ToGrpc(grpc::CallbackServerContext* ctx, const absl::Status& status) {
  if (status.ok()) return grpc::Status::OK;
  if (std::optional<std::string> context = ErrorContext(status)) ctx->AddTrailingMetadata("tpcoord-context", *context);
  return grpc::Status(static_cast<grpc::StatusCode>(status.code()), std::string(status.message()));
}

grpc::ServerUnaryReactor* Reply(grpc::CallbackServerContext* ctx, const absl::Status& status) {
  grpc::ServerUnaryReactor* reactor = ctx->DefaultReactor();
  reactor->Finish(ToGrpc(ctx, status));
  return reactor;
}

// A reactor for a call parked in a job: the job finishes it through the done callback; a client that goes
// away cancels the parked call. gRPC runs OnCancel and OnDone only after the handler returned, so the
// handler can record the waiter id without racing them.
class ParkedReactor final : public grpc::ServerUnaryReactor {
 public:
  ParkedReactor(grpc::CallbackServerContext* ctx, std::shared_ptr<Job> job) : ctx_(ctx), job_(std::move(job)) {}

  void Finish(const absl::Status& status) { grpc::ServerUnaryReactor::Finish(ToGrpc(ctx_, status)); }

  void set_waiter(uint64_t id) {
    std::lock_guard<std::mutex> lock(mu_);
    waiter_ = id;
  }

  void OnCancel() override {
    uint64_t id;
    {
      std::lock_guard<std::mutex> lock(mu_);
      id = waiter_;
    }
    if (id != 0) job_->Cancel(id);
  }

  void OnDone() override { delete this; }

 private:
  grpc::CallbackServerContext* const ctx_;
  const std::shared_ptr<Job> job_;
  std::mutex mu_;
  uint64_t waiter_ = 0;
};

absl::Status CheckCount(absl::string_view field, int count, int max) {
  if (count < 1 || count > max) {
    return absl::InvalidArgumentError(absl::StrCat(field, " has ", count, " entries; give 1 to ", max));
  }
  return absl::OkStatus();
}

void JobViewToProto(const JobView& view, v1::JobStatus* out) {
  out->set_job_id(view.job_id);
  out->set_tp_init_recorded(view.tp_init.has_value());
  if (view.tp_init) TpInitRecordToProto(*view.tp_init, out->mutable_tp_init());
  out->set_merged_config_json(view.merged_config);
  out->set_generation(view.generation);
  out->set_phase(static_cast<v1::Phase>(static_cast<int>(view.phase) + 1));
  out->set_world_size(view.world_size);
  out->set_end_reason(view.end_reason);
  for (const MemberView& m : view.members) {
    v1::Member* member = out->add_members();
    member->set_rank(m.rank);
    member->set_host(m.host);
    member->set_worker_id(m.worker_id);
    member->set_finished(m.finished);
    member->set_last_heartbeat_age_ms(m.heartbeat_age_ms);
  }
  for (const std::string& missing : view.missing) out->add_missing(missing);
  for (const PhaseTimingView& t : view.timings) {
    v1::PhaseTiming* timing = out->add_timings();
    timing->set_phase(t.phase);
    timing->set_start_unix_ms(t.start_unix_ms);
    timing->set_duration_ms(t.duration_ms);
  }
}

}  // namespace

CoordinatorService::CoordinatorService(JobRegistry* registry, const JobOptions& options)
    : registry_(registry), options_(options) {}

absl::StatusOr<std::shared_ptr<Job>> CoordinatorService::ExistingJob(const std::string& job_id) const {
  if (absl::Status s = ValidateJobId(job_id); !s.ok()) return s;
  std::shared_ptr<Job> job = registry_->Find(job_id);
  if (!job) return absl::NotFoundError(absl::StrCat("job ", job_id, " does not exist"));
  return job;
}

absl::StatusOr<std::shared_ptr<Job>> CoordinatorService::StoreJob(const std::string& job_id,
                                                                  const std::vector<std::string>& keys) const {
  absl::StatusOr<std::shared_ptr<Job>> job = ExistingJob(job_id);
  if (!job.ok()) return job;
  absl::Status status = CheckCount("keys", static_cast<int>(keys.size()), kMaxKeysPerCall);
  for (const std::string& key : keys) {
    if (status.ok()) status = ValidateStoreKey(key);
  }
  if (!status.ok()) return WithJobContext(job_id, status);
  return job;
}

Millis CoordinatorService::WaitFor(const grpc::CallbackServerContext* ctx, uint32_t wait_timeout_ms) const {
  Millis wait = wait_timeout_ms == 0 ? options_.default_wait : Millis(wait_timeout_ms);
  wait = std::min(wait, options_.max_wait);
  const auto deadline = ctx->deadline();
  if (deadline != std::chrono::system_clock::time_point::max()) {
    const Millis left = std::chrono::duration_cast<Millis>(deadline - std::chrono::system_clock::now());
    const Millis margin = std::min(Millis(500), left / 10);
    wait = std::max(Millis(0), std::min(wait, left - margin));
  }
  return wait;
}

// --- tp_model_init and the config merge -----------------------------------------------------------------

grpc::ServerUnaryReactor* CoordinatorService::RecordTpInitArgs(grpc::CallbackServerContext* ctx,
                                                               const v1::RecordTpInitArgsRequest* req,
                                                               v1::RecordTpInitArgsResponse* resp) {
  if (absl::Status s = ValidateJobId(req->job_id()); !s.ok()) return Reply(ctx, s);
  absl::StatusOr<Dtype> dtype = DtypeFromProto(req->dtype());
  if (!dtype.ok()) return Reply(ctx, WithJobContext(req->job_id(), dtype.status()));
  std::optional<std::vector<int>> group;
  if (req->has_tp_group()) group.emplace(req->tp_group().ranks().begin(), req->tp_group().ranks().end());
  absl::StatusOr<TpInitArgs> args = NormalizeTpInitArgs(req->tp_size(), *dtype, std::move(group));
  if (!args.ok()) return Reply(ctx, WithJobContext(req->job_id(), args.status()));

  absl::StatusOr<RecordOutcome> outcome = registry_->GetOrCreate(req->job_id())->Record(*args);
  if (!outcome.ok()) return Reply(ctx, outcome.status());
  TpInitRecordToProto(outcome->record, resp->mutable_recorded());
  resp->set_created(outcome->created);
  return Reply(ctx, absl::OkStatus());
}

grpc::ServerUnaryReactor* CoordinatorService::MergeConfig(grpc::CallbackServerContext* ctx,
                                                          const v1::MergeConfigRequest* req,
                                                          v1::MergeConfigResponse* resp) {
  absl::StatusOr<std::shared_ptr<Job>> job;
  if (req->generation() == 0) {
    if (absl::Status s = ValidateJobId(req->job_id()); !s.ok()) return Reply(ctx, s);
    job = registry_->GetOrCreate(req->job_id());
  } else {
    job = ExistingJob(req->job_id());
    if (!job.ok()) return Reply(ctx, job.status());
  }
  absl::StatusOr<MergeOutcome> outcome =
      (*job)->Merge(req->config_json(), req->has_mpu(), req->generation(), req->rank());
  if (!outcome.ok()) return Reply(ctx, outcome.status());
  resp->set_merged_config_json(std::move(outcome->merged_config));
  resp->set_tp_init_recorded(outcome->tp_init_recorded);
  return Reply(ctx, absl::OkStatus());
}

// --- Join and unique IDs --------------------------------------------------------------------------------

grpc::ServerUnaryReactor* CoordinatorService::Join(grpc::CallbackServerContext* ctx, const v1::JoinRequest* req,
                                                   v1::JoinResponse* resp) {
  absl::Status status = ValidateJobId(req->job_id());
  if (status.ok()) status = ValidateWorkerId(req->worker_id());
  if (status.ok()) status = ValidateHost(req->host());
  if (status.ok() && (req->tp_size() < 0 || req->tp_size() > kMaxTpSize)) {
    status = absl::InvalidArgumentError(
        absl::StrCat("tp_size ", req->tp_size(), " is out of range; give 0 (the recorded tp_size) to ", kMaxTpSize));
  }
  if (!status.ok()) return Reply(ctx, WithJobContext(req->job_id(), status));

  JoinArgs args{req->worker_id(), req->host(), req->world_size(), std::nullopt, req->tp_size()};
  if (req->has_requested_rank()) args.requested_rank = req->requested_rank();
  std::shared_ptr<Job> job = registry_->GetOrCreate(req->job_id());
  auto* reactor = new ParkedReactor(ctx, job);
  reactor->set_waiter(job->Join(args, WaitFor(ctx, req->wait_timeout_ms()),
                                [reactor, resp](absl::StatusOr<Assignment> a) {
                                  if (a.ok()) {
                                    const Mesh& mesh = a->mesh;
                                    resp->set_generation(a->generation);
                                    resp->set_rank(a->rank);
                                    resp->mutable_mesh()->set_world_size(mesh.world_size());
                                    resp->mutable_mesh()->set_tp_size(mesh.tp_size());
                                    resp->mutable_mesh()->set_dp_size(mesh.dp_size());
                                    resp->set_tp_rank(mesh.tp_rank(a->rank));
                                    resp->set_dp_rank(mesh.dp_rank(a->rank));
                                    *resp->mutable_tp_group() = GroupToProto(mesh, mesh.tp_group_of(a->rank));
                                    *resp->mutable_dp_group() = GroupToProto(mesh, mesh.dp_group_of(a->rank));
                                    resp->set_heartbeat_interval_ms(static_cast<uint32_t>(a->heartbeat_interval.count()));
                                    resp->set_lease_ms(static_cast<uint32_t>(a->lease.count()));
                                  }
                                  reactor->Finish(a.status());
                                }));
  return reactor;
}

grpc::ServerUnaryReactor* CoordinatorService::PublishUniqueId(grpc::CallbackServerContext* ctx,
                                                              const v1::PublishUniqueIdRequest* req,
                                                              v1::PublishUniqueIdResponse* resp) {
  absl::StatusOr<std::shared_ptr<Job>> job = ExistingJob(req->job_id());
  if (!job.ok()) return Reply(ctx, job.status());
  if (absl::Status s = CheckCount("ids", req->ids_size(), kMaxGroupsPerCall); !s.ok()) {
    return Reply(ctx, WithJobContext(req->job_id(), s));
  }
  std::vector<std::pair<GroupId, std::string>> ids;
  for (int i = 0; i < req->ids_size(); ++i) {
    absl::StatusOr<GroupId> group = GroupIdFromProto(req->ids(i).group(), absl::StrCat("ids[", i, "].group"));
    if (!group.ok()) return Reply(ctx, WithJobContext(req->job_id(), group.status()));
    ids.emplace_back(*group, req->ids(i).id());
  }
  return Reply(ctx, (*job)->PublishUniqueIds(req->generation(), req->rank(), ids));
}

grpc::ServerUnaryReactor* CoordinatorService::GetUniqueId(grpc::CallbackServerContext* ctx,
                                                          const v1::GetUniqueIdRequest* req,
                                                          v1::GetUniqueIdResponse* resp) {
  absl::StatusOr<std::shared_ptr<Job>> job = ExistingJob(req->job_id());
  if (!job.ok()) return Reply(ctx, job.status());
  if (absl::Status s = CheckCount("groups", req->groups_size(), kMaxGroupsPerCall); !s.ok()) {
    return Reply(ctx, WithJobContext(req->job_id(), s));
  }
  std::vector<GroupId> groups;
  for (int i = 0; i < req->groups_size(); ++i) {
    absl::StatusOr<GroupId> group = GroupIdFromProto(req->groups(i), absl::StrCat("groups[", i, "]"));
    if (!group.ok()) return Reply(ctx, WithJobContext(req->job_id(), group.status()));
    groups.push_back(*group);
  }
  auto* reactor = new ParkedReactor(ctx, *job);
  reactor->set_waiter((*job)->GetUniqueIds(
      req->generation(), req->rank(), groups, WaitFor(ctx, req->wait_timeout_ms()),
      [reactor, resp, groups](absl::StatusOr<std::vector<std::string>> ids) {
        if (ids.ok()) {
          for (size_t i = 0; i < groups.size(); ++i) {
            v1::UniqueId* out = resp->add_ids();
            *out->mutable_group() = GroupIdToProto(groups[i]);
            out->set_id((*ids)[i]);
          }
        }
        reactor->Finish(ids.status());
      }));
  return reactor;
}

// --- the key-value store --------------------------------------------------------------------------------

grpc::ServerUnaryReactor* CoordinatorService::StoreSet(grpc::CallbackServerContext* ctx,
                                                       const v1::StoreSetRequest* req, v1::StoreSetResponse*) {
  absl::StatusOr<std::shared_ptr<Job>> job = StoreJob(req->job_id(), {req->key()});
  if (!job.ok()) return Reply(ctx, job.status());
  return Reply(ctx, (*job)->StoreSet(req->generation(), req->key(), req->value()));
}

grpc::ServerUnaryReactor* CoordinatorService::StoreGet(grpc::CallbackServerContext* ctx,
                                                       const v1::StoreGetRequest* req, v1::StoreGetResponse* resp) {
  absl::StatusOr<std::shared_ptr<Job>> job = StoreJob(req->job_id(), {req->key()});
  if (!job.ok()) return Reply(ctx, job.status());
  auto* reactor = new ParkedReactor(ctx, *job);
  reactor->set_waiter((*job)->StoreGet(req->generation(), req->key(), WaitFor(ctx, req->wait_timeout_ms()),
                                       [reactor, resp](absl::StatusOr<std::string> value) {
                                         if (value.ok()) resp->set_value(*std::move(value));
                                         reactor->Finish(value.status());
                                       }));
  return reactor;
}

grpc::ServerUnaryReactor* CoordinatorService::StoreAdd(grpc::CallbackServerContext* ctx,
                                                       const v1::StoreAddRequest* req, v1::StoreAddResponse* resp) {
  absl::StatusOr<std::shared_ptr<Job>> job = StoreJob(req->job_id(), {req->key()});
  if (!job.ok()) return Reply(ctx, job.status());
  absl::StatusOr<int64_t> value = (*job)->StoreAdd(req->generation(), req->key(), req->delta());
  if (value.ok()) resp->set_value(*value);
  return Reply(ctx, value.status());
}

grpc::ServerUnaryReactor* CoordinatorService::StoreCompareSet(grpc::CallbackServerContext* ctx,
                                                              const v1::StoreCompareSetRequest* req,
                                                              v1::StoreCompareSetResponse* resp) {
  absl::StatusOr<std::shared_ptr<Job>> job = StoreJob(req->job_id(), {req->key()});
  if (!job.ok()) return Reply(ctx, job.status());
  absl::StatusOr<std::string> value =
      (*job)->StoreCompareSet(req->generation(), req->key(), req->expected_value(), req->desired_value());
  if (value.ok()) resp->set_value(*std::move(value));
  return Reply(ctx, value.status());
}

grpc::ServerUnaryReactor* CoordinatorService::StoreCheck(grpc::CallbackServerContext* ctx,
                                                         const v1::StoreCheckRequest* req,
                                                         v1::StoreCheckResponse* resp) {
  const std::vector<std::string> keys(req->keys().begin(), req->keys().end());
  absl::StatusOr<std::shared_ptr<Job>> job = StoreJob(req->job_id(), keys);
  if (!job.ok()) return Reply(ctx, job.status());
  absl::StatusOr<bool> present = (*job)->StoreCheck(req->generation(), keys);
  if (present.ok()) resp->set_all_present(*present);
  return Reply(ctx, present.status());
}

grpc::ServerUnaryReactor* CoordinatorService::StoreDelete(grpc::CallbackServerContext* ctx,
                                                          const v1::StoreDeleteRequest* req,
                                                          v1::StoreDeleteResponse* resp) {
  absl::StatusOr<std::shared_ptr<Job>> job = StoreJob(req->job_id(), {req->key()});
  if (!job.ok()) return Reply(ctx, job.status());
  absl::StatusOr<bool> deleted = (*job)->StoreDelete(req->generation(), req->key());
  if (deleted.ok()) resp->set_deleted(*deleted);
  return Reply(ctx, deleted.status());
}

grpc::ServerUnaryReactor* CoordinatorService::StoreNumKeys(grpc::CallbackServerContext* ctx,
                                                           const v1::StoreNumKeysRequest* req,
                                                           v1::StoreNumKeysResponse* resp) {
  absl::StatusOr<std::shared_ptr<Job>> job = ExistingJob(req->job_id());
  if (!job.ok()) return Reply(ctx, job.status());
  absl::StatusOr<int64_t> n = (*job)->StoreNumKeys(req->generation());
  if (n.ok()) resp->set_num_keys(*n);
  return Reply(ctx, n.status());
}

grpc::ServerUnaryReactor* CoordinatorService::StoreWait(grpc::CallbackServerContext* ctx,
                                                        const v1::StoreWaitRequest* req, v1::StoreWaitResponse*) {
  std::vector<std::string> keys(req->keys().begin(), req->keys().end());
  absl::StatusOr<std::shared_ptr<Job>> job = StoreJob(req->job_id(), keys);
  if (!job.ok()) return Reply(ctx, job.status());
  auto* reactor = new ParkedReactor(ctx, *job);
  reactor->set_waiter((*job)->StoreWait(req->generation(), std::move(keys), WaitFor(ctx, req->wait_timeout_ms()),
                                        [reactor](absl::Status s) { reactor->Finish(s); }));
  return reactor;
}

// --- barriers, heartbeats, leaving ----------------------------------------------------------------------

grpc::ServerUnaryReactor* CoordinatorService::Barrier(grpc::CallbackServerContext* ctx,
                                                      const v1::BarrierRequest* req, v1::BarrierResponse*) {
  absl::StatusOr<std::shared_ptr<Job>> job = ExistingJob(req->job_id());
  if (!job.ok()) return Reply(ctx, job.status());
  if (absl::Status s = ValidateBarrierName(req->name()); !s.ok()) {
    return Reply(ctx, WithJobContext(req->job_id(), s));
  }
  auto* reactor = new ParkedReactor(ctx, *job);
  reactor->set_waiter((*job)->Barrier(req->generation(), req->rank(), req->name(),
                                      WaitFor(ctx, req->wait_timeout_ms()),
                                      [reactor](absl::Status s) { reactor->Finish(s); }));
  return reactor;
}

grpc::ServerUnaryReactor* CoordinatorService::Heartbeat(grpc::CallbackServerContext* ctx,
                                                        const v1::HeartbeatRequest* req,
                                                        v1::HeartbeatResponse* resp) {
  absl::StatusOr<std::shared_ptr<Job>> job = ExistingJob(req->job_id());
  if (!job.ok()) return Reply(ctx, job.status());
  absl::StatusOr<Millis> lease = (*job)->Heartbeat(req->generation(), req->rank());
  if (lease.ok()) resp->set_lease_ms(static_cast<uint32_t>(lease->count()));
  return Reply(ctx, lease.status());
}

grpc::ServerUnaryReactor* CoordinatorService::Leave(grpc::CallbackServerContext* ctx, const v1::LeaveRequest* req,
                                                    v1::LeaveResponse*) {
  absl::StatusOr<std::shared_ptr<Job>> job = ExistingJob(req->job_id());
  if (!job.ok()) return Reply(ctx, job.status());
  if (req->reason().size() > kMaxReasonLength) {
    return Reply(ctx, WithJobContext(req->job_id(),
                                     absl::InvalidArgumentError(absl::StrCat(
                                         "reason is ", req->reason().size(), " bytes; the limit is ",
                                         kMaxReasonLength))));
  }
  return Reply(ctx, (*job)->Leave(req->generation(), req->rank(), req->finished(), req->reason()));
}

// --- operator views -------------------------------------------------------------------------------------

grpc::ServerUnaryReactor* CoordinatorService::ListJobs(grpc::CallbackServerContext* ctx,
                                                       const v1::ListJobsRequest*, v1::ListJobsResponse* resp) {
  for (const std::shared_ptr<Job>& job : registry_->All()) JobViewToProto(job->View(false), resp->add_jobs());
  return Reply(ctx, absl::OkStatus());
}

grpc::ServerUnaryReactor* CoordinatorService::GetJob(grpc::CallbackServerContext* ctx, const v1::GetJobRequest* req,
                                                     v1::GetJobResponse* resp) {
  absl::StatusOr<std::shared_ptr<Job>> job = ExistingJob(req->job_id());
  if (!job.ok()) return Reply(ctx, job.status());
  JobViewToProto((*job)->View(true), resp->mutable_job());
  return Reply(ctx, absl::OkStatus());
}

}  // namespace tpcoord
