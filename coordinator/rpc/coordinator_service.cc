#include "coordinator/rpc/coordinator_service.h"

#include <google/protobuf/descriptor.h>
#include <grpcpp/alarm.h>

#include <algorithm>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "common/deepspeed_error.h"
#include "common/identifiers.h"
#include "common/mutex.h"
#include "common/wire.h"
#include "coordinator/rpc/call_codec.h"
#include "coordinator/rpc/request_checks.h"
#include "coordinator/rpc/session_reactor.h"

namespace tpcoord {
namespace {

// The job a request names (every request but ListJobs has a job_id), for error messages.
template <typename Request>
std::string JobIdOf(const Request& request) {
  const google::protobuf::FieldDescriptor* field = Request::descriptor()->FindFieldByName("job_id");
  return field ? Request::GetReflection()->GetString(request, field) : std::string();
}

}  // namespace

void RunOnGrpcThread(std::function<void()> fn) {
  struct Hop {
    grpc::Alarm alarm;
    std::function<void()> fn;
  };
  auto* hop = new Hop{grpc::Alarm(), std::move(fn)};
  hop->alarm.Set(gpr_time_0(GPR_CLOCK_MONOTONIC), [hop](bool) {
    hop->fn();
    delete hop;  // gRPC holds the alarm until its callback returns
  });
}

// A parked call's reactor: a client that goes away cancels the call in its job. gRPC runs OnCancel and
// OnDone only after the handler returned.
class ParkedReactor final : public grpc::ServerUnaryReactor {
 public:
  // The call waits in `job` under `id`.
  void Parked(std::shared_ptr<Job> job, uint64_t id) {
    MutexLock lock(&mu_);
    job_ = std::move(job);
    id_ = id;
  }
  void OnCancel() override {
    std::shared_ptr<Job> job;
    uint64_t id;
    {
      MutexLock lock(&mu_);
      job = job_;
      id = id_;
    }
    if (job) job->Cancel(id);
  }
  void OnDone() override { delete this; }

 private:
  Mutex mu_;
  std::shared_ptr<Job> job_ ABSL_GUARDED_BY(mu_);
  uint64_t id_ ABSL_GUARDED_BY(mu_) = 0;
};

// One unary call served from raw bytes: its request and response, answered exactly once with Reply, from
// any thread, which also frees it. Calls that never park use gRPC's default reactor, which costs no extra
// callback; calls that may park (parker() != nullptr) a ParkedReactor.
template <typename Request, typename Response>
class UnaryCall {
 public:
  UnaryCall(grpc::CallbackServerContext* ctx, grpc::ByteBuffer* out, ParkedReactor* parker)
      : ctx_(ctx), out_(out), parker_(parker), reactor_(parker ? parker : ctx->DefaultReactor()) {}

  grpc::CallbackServerContext* context() const { return ctx_; }
  // Who makes the call (set before the handler runs).
  Caller caller;
  grpc::ServerUnaryReactor* reactor() const { return reactor_; }
  // Valid until the handler returns, even once the call is answered.
  ParkedReactor* parker() const { return parker_; }
  Request request;
  Response response;

  void Reply(const absl::Status& status) {
    if (status.ok()) *out_ = SerializeAnswer(response);
    grpc::ServerUnaryReactor* reactor = reactor_;
    const grpc::Status answer = ToGrpc(ctx_, status);
    delete this;
    reactor->Finish(answer);
  }

 private:
  grpc::CallbackServerContext* const ctx_;
  grpc::ByteBuffer* const out_;
  ParkedReactor* const parker_;
  grpc::ServerUnaryReactor* const reactor_;
};

namespace {

// A callback that answers `call` with its job's answer, filling the response with `fill` when it is a value.
template <typename T, typename Call, typename Fill>
Done<T> AnswerWith(Call* call, Fill fill) {
  return [call, fill](absl::StatusOr<T> value) {
    if (value.ok()) fill(*std::move(value), &call->response);
    call->Reply(value.status());
  };
}

template <typename Call>
StatusDone AnswerWith(Call* call) {
  return [call](absl::Status status) { call->Reply(status); };
}

void JobViewToProto(const JobView& view, v1::JobStatus* out) {
  out->set_job_id(view.job_id);
  out->set_tp_init_recorded(view.tp_init.has_value());
  if (view.tp_init) TpInitRecordToProto(*view.tp_init, out->mutable_tp_init());
  out->set_merged_config_json(view.merged_config);
  out->set_generation(view.generation);
  out->set_phase(static_cast<v1::Phase>(static_cast<int>(view.phase) + 1));
  out->set_world_size(view.world_size);
  out->set_member_count(view.member_count);
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
  out->set_healthy_members(view.healthy_members);
  if (view.progress) {
    TrainingProgress latest = *view.progress;
    latest.eval_loss = view.eval_loss;  // the latest eval loss, whichever report brought it
    TrainingProgressToProto(latest, out->mutable_progress());
  }
  for (const GenerationRecord& r : view.history) {
    v1::GenerationEvent* event = out->add_history();
    event->set_generation(r.generation);
    event->set_phase(static_cast<v1::Phase>(static_cast<int>(r.phase) + 1));
    event->set_world_size(r.world_size);
    event->set_tp_size(r.tp_size);
    event->set_started_unix_ms(r.started_unix_ms);
    event->set_running_unix_ms(r.running_unix_ms);
    event->set_ended_unix_ms(r.ended_unix_ms);
    event->set_end_cause(std::string(EndCauseName(r.end_cause)));
    event->set_end_rank(r.end_rank);
    event->set_end_reason(r.end_reason);
  }
}


}  // namespace

template <typename Request, typename Response>
void CoordinatorService::Serve(const char* method, Handler<Request, Response> handler, bool parks) {
  const google::protobuf::ServiceDescriptor* service =
      google::protobuf::DescriptorPool::generated_pool()->FindServiceByName(v1::Coordinator::service_full_name());
  const int index = service->FindMethodByName(method)->index();
  MarkMethodRawCallback(index, new grpc::internal::CallbackUnaryHandler<grpc::ByteBuffer, grpc::ByteBuffer>(
                                   [this, method, handler, parks](grpc::CallbackServerContext* ctx,
                                                                  const grpc::ByteBuffer* in,
                                                                  grpc::ByteBuffer* out) -> grpc::ServerUnaryReactor* {
                                     auto* call = new UnaryCall<Request, Response>(ctx, out, parks ? new ParkedReactor : nullptr);
                                     grpc::ServerUnaryReactor* reactor = call->reactor();  // `call` may be gone below
                                     if (absl::Status s = ParseRequest(*in, &call->request); !s.ok()) {
                                       call->Reply(s);
                                       return reactor;
                                     }
                                     // Every call needs a token: a call without one learns nothing, not even
                                     // whether its job exists.
                                     absl::StatusOr<Caller> caller = IdentifyCall(ctx, admin_token_sha256_);
                                     if (!caller.ok()) {
                                       // Named only when it is a valid id: the request is not checked yet.
                                       const std::string job = JobIdOf(call->request);
                                       call->Reply(ValidateJobId(job).ok() ? WithJobContext(job, caller.status())
                                                                           : caller.status());
                                       return reactor;
                                     }
                                     call->caller = *std::move(caller);
                                     try {
                                       (this->*handler)(call);
                                     } catch (const std::exception& e) {  // a bug: answer it, keep serving
                                       // Handlers throw only before they hand the call to a job, never after.
                                       call->Reply(absl::InternalError(absl::StrCat("internal error in ", method,
                                                                                    ": ", e.what())));
                                     }
                                     return reactor;
                                   }));
}

CoordinatorService::CoordinatorService(JobRegistry* registry, const JobOptions& options,
                                       std::string admin_token_sha256)
    : registry_(registry),
      admin_token_sha256_(std::move(admin_token_sha256)),
      calls_(registry, options) {
  Serve("RecordTpInitArgs", &CoordinatorService::HandleRecordTpInitArgs);
  Serve("MergeConfig", &CoordinatorService::HandleMergeConfig);
  Serve("Join", &CoordinatorService::HandleJoin, /*parks=*/true);
  Serve("PublishUniqueId", &CoordinatorService::HandlePublishUniqueId);
  Serve("GetUniqueId", &CoordinatorService::HandleGetUniqueId, /*parks=*/true);
  Serve("StoreSet", &CoordinatorService::HandleStoreSet);
  Serve("StoreGet", &CoordinatorService::HandleStoreGet, /*parks=*/true);
  Serve("StoreAdd", &CoordinatorService::HandleStoreAdd);
  Serve("StoreCompareSet", &CoordinatorService::HandleStoreCompareSet);
  Serve("StoreCheck", &CoordinatorService::HandleStoreCheck);
  Serve("StoreDelete", &CoordinatorService::HandleStoreDelete);
  Serve("StoreNumKeys", &CoordinatorService::HandleStoreNumKeys);
  Serve("StoreWait", &CoordinatorService::HandleStoreWait, /*parks=*/true);
  Serve("Barrier", &CoordinatorService::HandleBarrier, /*parks=*/true);
  Serve("Heartbeat", &CoordinatorService::HandleHeartbeat);
  Serve("Leave", &CoordinatorService::HandleLeave);
  Serve("ListJobs", &CoordinatorService::HandleListJobs);
  Serve("GetJob", &CoordinatorService::HandleGetJob);
  Serve("DeleteJob", &CoordinatorService::HandleDeleteJob);
  Serve("CreateJob", &CoordinatorService::HandleCreateJob);
  const int session = google::protobuf::DescriptorPool::generated_pool()
                          ->FindServiceByName(v1::Coordinator::service_full_name())
                          ->FindMethodByName("Session")
                          ->index();
  MarkMethodRawCallback(session, new grpc::internal::CallbackBidiHandler<grpc::ByteBuffer, grpc::ByteBuffer>(
                                     [this](grpc::CallbackServerContext* ctx) {
                                       return StartSession(ctx, &calls_, admin_token_sha256_);
                                     }));
}

absl::StatusOr<std::shared_ptr<Job>> CoordinatorService::ExistingJob(const std::string& job_id) const {
  return calls_.ExistingJob(job_id);
}

Millis CoordinatorService::WaitFor(const grpc::CallbackServerContext* ctx, uint32_t wait_timeout_ms) const {
  Millis wait = calls_.Wait(wait_timeout_ms);
  const auto deadline = ctx->deadline();
  if (deadline != std::chrono::system_clock::time_point::max()) {
    const Millis left = std::chrono::duration_cast<Millis>(deadline - std::chrono::system_clock::now());
    const Millis margin = std::min(Millis(500), left / 10);
    wait = std::max(Millis(0), std::min(wait, left - margin));
  }
  return wait;
}

// --- tp_model_init and the config merge -----------------------------------------------------------------

void CoordinatorService::HandleRecordTpInitArgs(UnaryCall<v1::RecordTpInitArgsRequest, v1::RecordTpInitArgsResponse>* call) {
  calls_.Record(call->caller, call->request, &call->response, AnswerWith(call));
}

void CoordinatorService::HandleMergeConfig(UnaryCall<v1::MergeConfigRequest, v1::MergeConfigResponse>* call) {
  calls_.Merge(call->caller, call->request, &call->response, AnswerWith(call));
}

// --- Join and unique IDs --------------------------------------------------------------------------------

void CoordinatorService::HandleJoin(UnaryCall<v1::JoinRequest, v1::JoinResponse>* call) {
  ParkedReactor* parker = call->parker();  // the Join may answer, and free `call`, before it returns
  WaitingCall parked = calls_.Join(call->caller, call->request, WaitFor(call->context(), call->request.wait_timeout_ms()),
                                  &call->response, AnswerWith(call));
  parker->Parked(std::move(parked.job), parked.id);
}

void CoordinatorService::HandlePublishUniqueId(UnaryCall<v1::PublishUniqueIdRequest, v1::PublishUniqueIdResponse>* call) {
  calls_.PublishUniqueIds(call->caller, call->request, AnswerWith(call));
}

void CoordinatorService::HandleGetUniqueId(UnaryCall<v1::GetUniqueIdRequest, v1::GetUniqueIdResponse>* call) {
  ParkedReactor* parker = call->parker();
  WaitingCall parked = calls_.GetUniqueIds(call->caller, call->request,
                                          WaitFor(call->context(), call->request.wait_timeout_ms()), &call->response,
                                          AnswerWith(call));
  parker->Parked(std::move(parked.job), parked.id);
}

// --- the key-value store --------------------------------------------------------------------------------

void CoordinatorService::HandleStoreSet(UnaryCall<v1::StoreSetRequest, v1::StoreSetResponse>* call) {
  if (absl::Status s = CheckRequest(call->request); !s.ok()) return call->Reply(s);
  absl::StatusOr<std::shared_ptr<Job>> job = ExistingJob(call->request.job_id());
  if (!job.ok()) return call->Reply(job.status());
  v1::StoreSetRequest& req = call->request;
  (*job)->StoreSet(call->caller, req.generation(), std::move(*req.mutable_key()), std::move(*req.mutable_value()), AnswerWith(call));
}

void CoordinatorService::HandleStoreGet(UnaryCall<v1::StoreGetRequest, v1::StoreGetResponse>* call) {
  if (absl::Status s = CheckRequest(call->request); !s.ok()) return call->Reply(s);
  absl::StatusOr<std::shared_ptr<Job>> job = ExistingJob(call->request.job_id());
  if (!job.ok()) return call->Reply(job.status());
  const v1::StoreGetRequest& req = call->request;
  ParkedReactor* parker = call->parker();
  parker->Parked(*job, (*job)->StoreGet(call->caller, req.generation(), req.key(), WaitFor(call->context(), req.wait_timeout_ms()),
                                      AnswerWith<std::string>(
                                          call, [](std::string v, v1::StoreGetResponse* resp) { resp->set_value(std::move(v)); })));
}

void CoordinatorService::HandleStoreAdd(UnaryCall<v1::StoreAddRequest, v1::StoreAddResponse>* call) {
  if (absl::Status s = CheckRequest(call->request); !s.ok()) return call->Reply(s);
  absl::StatusOr<std::shared_ptr<Job>> job = ExistingJob(call->request.job_id());
  if (!job.ok()) return call->Reply(job.status());
  const v1::StoreAddRequest& req = call->request;
  (*job)->StoreAdd(call->caller, req.generation(), req.key(), req.delta(),
                   AnswerWith<int64_t>(call, [](int64_t v, v1::StoreAddResponse* resp) { resp->set_value(v); }));
}

void CoordinatorService::HandleStoreCompareSet(UnaryCall<v1::StoreCompareSetRequest, v1::StoreCompareSetResponse>* call) {
  if (absl::Status s = CheckRequest(call->request); !s.ok()) return call->Reply(s);
  absl::StatusOr<std::shared_ptr<Job>> job = ExistingJob(call->request.job_id());
  if (!job.ok()) return call->Reply(job.status());
  const v1::StoreCompareSetRequest& req = call->request;
  (*job)->StoreCompareSet(call->caller, req.generation(), req.key(), req.expected_value(), req.desired_value(),
                          AnswerWith<std::string>(
                              call, [](std::string v, v1::StoreCompareSetResponse* resp) { resp->set_value(std::move(v)); }));
}

void CoordinatorService::HandleStoreCheck(UnaryCall<v1::StoreCheckRequest, v1::StoreCheckResponse>* call) {
  if (absl::Status s = CheckRequest(call->request); !s.ok()) return call->Reply(s);
  absl::StatusOr<std::shared_ptr<Job>> job = ExistingJob(call->request.job_id());
  if (!job.ok()) return call->Reply(job.status());
  const std::vector<std::string> keys(call->request.keys().begin(), call->request.keys().end());
  absl::StatusOr<bool> present = (*job)->StoreCheck(call->caller, call->request.generation(), keys);
  if (present.ok()) call->response.set_all_present(*present);
  call->Reply(present.status());
}

void CoordinatorService::HandleStoreDelete(UnaryCall<v1::StoreDeleteRequest, v1::StoreDeleteResponse>* call) {
  if (absl::Status s = CheckRequest(call->request); !s.ok()) return call->Reply(s);
  absl::StatusOr<std::shared_ptr<Job>> job = ExistingJob(call->request.job_id());
  if (!job.ok()) return call->Reply(job.status());
  (*job)->StoreDelete(call->caller, call->request.generation(), call->request.key(),
                      AnswerWith<bool>(call, [](bool d, v1::StoreDeleteResponse* resp) { resp->set_deleted(d); }));
}

void CoordinatorService::HandleStoreNumKeys(UnaryCall<v1::StoreNumKeysRequest, v1::StoreNumKeysResponse>* call) {
  if (absl::Status s = CheckRequest(call->request); !s.ok()) return call->Reply(s);
  absl::StatusOr<std::shared_ptr<Job>> job = ExistingJob(call->request.job_id());
  if (!job.ok()) return call->Reply(job.status());
  absl::StatusOr<int64_t> n = (*job)->StoreNumKeys(call->caller, call->request.generation());
  if (n.ok()) call->response.set_num_keys(*n);
  call->Reply(n.status());
}

void CoordinatorService::HandleStoreWait(UnaryCall<v1::StoreWaitRequest, v1::StoreWaitResponse>* call) {
  if (absl::Status s = CheckRequest(call->request); !s.ok()) return call->Reply(s);
  absl::StatusOr<std::shared_ptr<Job>> job = ExistingJob(call->request.job_id());
  if (!job.ok()) return call->Reply(job.status());
  const v1::StoreWaitRequest& req = call->request;
  ParkedReactor* parker = call->parker();
  parker->Parked(*job, (*job)->StoreWait(call->caller, req.generation(), std::vector<std::string>(req.keys().begin(), req.keys().end()),
                                       WaitFor(call->context(), req.wait_timeout_ms()), AnswerWith(call)));
}

// --- barriers, heartbeats, leaving ----------------------------------------------------------------------

void CoordinatorService::HandleBarrier(UnaryCall<v1::BarrierRequest, v1::BarrierResponse>* call) {
  ParkedReactor* parker = call->parker();
  WaitingCall parked =
      calls_.Barrier(call->caller, call->request, WaitFor(call->context(), call->request.wait_timeout_ms()), AnswerWith(call));
  parker->Parked(std::move(parked.job), parked.id);
}

void CoordinatorService::HandleHeartbeat(UnaryCall<v1::HeartbeatRequest, v1::HeartbeatResponse>* call) {
  if (absl::Status s = CheckRequest(call->request); !s.ok()) return call->Reply(s);
  absl::StatusOr<std::shared_ptr<Job>> job = ExistingJob(call->request.job_id());
  if (!job.ok()) return call->Reply(job.status());
  absl::StatusOr<Millis> lease = (*job)->Heartbeat(call->caller, call->request.generation(), call->request.rank());
  if (lease.ok()) call->response.set_lease_ms(static_cast<uint32_t>(lease->count()));
  call->Reply(lease.status());
}

void CoordinatorService::HandleLeave(UnaryCall<v1::LeaveRequest, v1::LeaveResponse>* call) {
  calls_.Leave(call->caller, call->request, AnswerWith(call));
}

// --- operator views -------------------------------------------------------------------------------------

void CoordinatorService::HandleListJobs(UnaryCall<v1::ListJobsRequest, v1::ListJobsResponse>* call) {
  absl::StatusOr<int> page_size = CheckRequest(call->request);
  if (!page_size.ok()) return call->Reply(page_size.status());
  const Caller& caller = call->caller;
  // One more than the page, to tell whether another page follows.
  const std::vector<std::shared_ptr<Job>> jobs = registry_->Page(
      call->request.page_token(), *page_size + 1, [&caller](const Job& job) {
        const absl::Status s = job.Authorize(caller);
        return s.ok() || s.code() == absl::StatusCode::kDataLoss;  // listed, to be seen and deleted
      });
  for (size_t i = 0; i < jobs.size(); ++i) {
    if (static_cast<int>(i) == *page_size) {
      call->response.set_next_page_token(jobs[i - 1]->id());
      break;
    }
    std::optional<JobView> view = jobs[i]->View(false);
    if (!view) continue;
    view->merged_config.clear();
    view->timings.clear();
    JobViewToProto(*view, call->response.add_jobs());
  }
  call->Reply(absl::OkStatus());
}

void CoordinatorService::HandleGetJob(UnaryCall<v1::GetJobRequest, v1::GetJobResponse>* call) {
  if (absl::Status s = CheckRequest(call->request); !s.ok()) return call->Reply(s);
  std::shared_ptr<Job> job = registry_->Find(call->request.job_id());
  if (job) {
    if (absl::Status s = job->Authorize(call->caller); !s.ok()) return call->Reply(s);
  }
  std::optional<JobView> view = job ? job->View(true) : std::nullopt;
  if (!view) return call->Reply(NoSuchJobError(call->request.job_id()));
  JobViewToProto(*view, call->response.mutable_job());
  call->Reply(absl::OkStatus());
}

void CoordinatorService::HandleDeleteJob(UnaryCall<v1::DeleteJobRequest, v1::DeleteJobResponse>* call) {
  if (absl::Status s = CheckRequest(call->request); !s.ok()) return call->Reply(s);
  absl::StatusOr<std::shared_ptr<Job>> job = ExistingJob(call->request.job_id());
  if (!job.ok()) return call->Reply(job.status());
  (*job)->Delete(call->caller, call->request.force(), AnswerWith(call));
}

void CoordinatorService::HandleCreateJob(UnaryCall<v1::CreateJobRequest, v1::CreateJobResponse>* call) {
  absl::StatusOr<std::string> token_sha256 = CheckRequest(call->request);
  if (!token_sha256.ok()) return call->Reply(token_sha256.status());
  absl::StatusOr<PinnedJob> job = registry_->GetOrCreate(call->request.job_id());
  if (!job.ok()) return call->Reply(job.status());
  (*job)->Create(call->caller, *std::move(token_sha256), AnswerWith(call));
}

}  // namespace tpcoord
