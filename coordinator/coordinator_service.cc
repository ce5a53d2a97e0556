#include "coordinator/coordinator_service.h"

#include <google/protobuf/descriptor.h>
#include <google/protobuf/stubs/logging.h>
#include <grpcpp/alarm.h>
#include <grpcpp/support/proto_buffer_reader.h>

#include <algorithm>
#include <iostream>
#include <mutex>
#include <utility>

#include "absl/base/call_once.h"
#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "common/mutex.h"
#include "common/deepspeed_error.h"
#include "common/identifiers.h"
#include "common/limits.h"
#include "common/wire.h"
#include "coordinator/request_checks.h"

namespace tpcoord {
namespace {

// absl::Status -> grpc::Status; the codes share their numbers. DeepSpeed errors keep their exact text as
// the message and carry the job context in the "tpcoord-context" trailing metadata.
grpc::Status ToGrpc(grpc::CallbackServerContext* ctx, const absl::Status& status) {
  if (status.ok()) return grpc::Status::OK;
  if (std::optional<std::string> context = ErrorContext(status)) ctx->AddTrailingMetadata("tpcoord-context", *context);
  return grpc::Status(static_cast<grpc::StatusCode>(status.code()), std::string(status.message()));
}

// Protobuf reports why a message does not parse (a string field holding invalid UTF-8, say) only through
// its log. While a request is parsed on this thread, that log line becomes part of the answer instead of
// a line on the coordinator's stderr (which a hostile client could otherwise flood).
thread_local std::string* parse_log = nullptr;

void CapturingLogHandler(google::protobuf::LogLevel level, const char* file, int line, const std::string& message) {
  if (parse_log != nullptr) {
    if (parse_log->empty()) *parse_log = message;
    return;
  }
  static const char* const kLevels[] = {"INFO", "WARNING", "ERROR", "FATAL"};
  std::cerr << "[libprotobuf " << kLevels[std::clamp<int>(level, 0, 3)] << " " << file << ":" << line << "] "
            << message << std::endl;
}

// Every value the call's metadata holds under `name`.
std::vector<absl::string_view> MetadataValues(const grpc::CallbackServerContext* ctx, absl::string_view name) {
  std::vector<absl::string_view> values;
  auto [first, last] = ctx->client_metadata().equal_range(grpc::string_ref(name.data(), name.size()));
  for (auto it = first; it != last; ++it) values.emplace_back(it->second.data(), it->second.size());
  return values;
}

// The job a request names (every request but ListJobs has a job_id), for error messages.
template <typename Request>
std::string JobIdOf(const Request& request) {
  const google::protobuf::FieldDescriptor* field = Request::descriptor()->FindFieldByName("job_id");
  return field ? Request::GetReflection()->GetString(request, field) : std::string();
}

template <typename Request>
absl::Status Parse(const grpc::ByteBuffer& bytes, Request* request) {
  static absl::once_flag once;
  absl::call_once(once, [] { google::protobuf::SetLogHandler(&CapturingLogHandler); });
  std::string why;
  parse_log = &why;
  grpc::ProtoBufferReader reader(const_cast<grpc::ByteBuffer*>(&bytes));
  const bool ok = request->ParseFromZeroCopyStream(&reader);
  parse_log = nullptr;
  if (ok) return absl::OkStatus();
  return absl::InvalidArgumentError(absl::StrCat("the request is not a valid ", Request::descriptor()->full_name(),
                                                 " message (", bytes.Length(), " bytes)",
                                                 why.empty() ? "" : ": ", why));
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
    if (status.ok()) {
      grpc::Slice slice(response.SerializeAsString());
      *out_ = grpc::ByteBuffer(&slice, 1);
    }
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
}

absl::Status NoSuchJob(const std::string& job_id) {
  return absl::NotFoundError(absl::StrCat("job ", job_id, " does not exist"));
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
                                     if (absl::Status s = Parse(*in, &call->request); !s.ok()) {
                                       call->Reply(s);
                                       return reactor;
                                     }
                                     // Every call needs a token: a call without one learns nothing, not even
                                     // whether its job exists.
                                     absl::StatusOr<Caller> caller = IdentifyCaller(
                                         MetadataValues(ctx, kAuthorizationMetadata),
                                         MetadataValues(ctx, kMemberKeyMetadata), admin_token_sha256_);
                                     if (caller.ok() && caller->token_sha256.empty()) caller = MissingTokenError();
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

// A member's session (coordinator.proto, Session): reads heartbeats until the stream ends. Its job ends it
// with the generation (OpenSession's on_end); a stream that ends from the client's side is a member gone
// (Job::CloseSession decides whether that ends the generation). gRPC runs OnDone once, after Finish; the
// reactor frees itself there, unless the job's on_end still holds it (it then only finds it finished).
class SessionReactor final : public grpc::ServerBidiReactor<grpc::ByteBuffer, grpc::ByteBuffer> {
 public:
  static SessionReactor* Start(grpc::CallbackServerContext* ctx, JobRegistry* registry,
                               const std::string& admin_token_sha256) {
    auto reactor = std::shared_ptr<SessionReactor>(new SessionReactor(ctx, registry, admin_token_sha256));
    reactor->self_ = reactor;
    reactor->StartRead(&reactor->in_);
    return reactor.get();
  }

  void OnReadDone(bool ok) override {
    if (!ok) return End(absl::OkStatus());  // the client closed its side, or went away
    v1::HeartbeatRequest beat;
    absl::Status status = Parse(in_, &beat);
    if (status.ok()) status = CheckRequest(beat);
    if (status.ok()) status = job_ ? Renew(beat) : Open(beat);
    if (!status.ok()) return End(status);
    {
      MutexLock lock(&mu_);
      if (ending_) return;  // ended by the job meanwhile: no read after Finish
    }
    StartRead(&in_);
  }

  void OnWriteDone(bool) override {
    MutexLock lock(&mu_);
    writing_ = false;
    if (ending_) FinishLocked();
  }

  void OnDone() override {
    if (job_) job_->CloseSession(generation_, rank_, id_);
    std::shared_ptr<SessionReactor> self = std::move(self_);  // may free this object: the last thing done here
  }

  // Finishes the stream with `status` (once; later calls do nothing).
  void End(const absl::Status& status) {
    MutexLock lock(&mu_);
    if (ending_) return;
    ending_ = true;
    status_ = ToGrpc(ctx_, status);
    if (!writing_) FinishLocked();
  }

 private:
  SessionReactor(grpc::CallbackServerContext* ctx, JobRegistry* registry, const std::string& admin_token_sha256)
      : ctx_(ctx), registry_(registry), admin_token_sha256_(admin_token_sha256) {}

  absl::Status Open(const v1::HeartbeatRequest& beat) {
    absl::StatusOr<Caller> caller = IdentifyCaller(MetadataValues(ctx_, kAuthorizationMetadata),
                                                   MetadataValues(ctx_, kMemberKeyMetadata), admin_token_sha256_);
    if (caller.ok() && caller->token_sha256.empty()) caller = MissingTokenError();
    if (!caller.ok()) return WithJobContext(beat.job_id(), caller.status());
    std::shared_ptr<Job> job = registry_->Find(beat.job_id());
    if (!job) return NoSuchJob(beat.job_id());
    static std::atomic<uint64_t> next_id{1};
    const uint64_t id = next_id.fetch_add(1);
    std::weak_ptr<SessionReactor> weak = self_;
    absl::StatusOr<Millis> lease = job->OpenSession(*caller, beat.generation(), beat.rank(), id,
                                                    [weak](absl::Status why) {
                                                      if (auto reactor = weak.lock()) reactor->End(why);
                                                    });
    if (!lease.ok()) return lease.status();
    caller_ = *std::move(caller);
    job_ = std::move(job);
    generation_ = beat.generation();
    rank_ = beat.rank();
    id_ = id;
    MutexLock lock(&mu_);
    if (ending_) return absl::OkStatus();  // the generation ended already
    event_.set_lease_ms(static_cast<uint32_t>(lease->count()));
    grpc::Slice slice(event_.SerializeAsString());
    out_ = grpc::ByteBuffer(&slice, 1);
    writing_ = true;
    StartWrite(&out_);
    return absl::OkStatus();
  }

  absl::Status Renew(const v1::HeartbeatRequest& beat) {
    if (beat.job_id() != job_->id() || beat.generation() != generation_ || beat.rank() != rank_) {
      return WithJobContext(job_->id(), absl::InvalidArgumentError(absl::StrCat(
          "a session's heartbeats must name the member that opened it (generation ", generation_, " rank ", rank_,
          "); this one names job ", beat.job_id(), " generation ", beat.generation(), " rank ", beat.rank())));
    }
    return job_->Heartbeat(caller_, generation_, rank_).status();
  }

  void FinishLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    if (finished_) return;
    finished_ = true;
    Finish(status_);
  }

  grpc::CallbackServerContext* const ctx_;
  JobRegistry* const registry_;
  const std::string admin_token_sha256_;
  std::shared_ptr<SessionReactor> self_;  // until OnDone
  grpc::ByteBuffer in_;
  // Set by the first heartbeat, on gRPC's reaction thread; read by the later reactions only.
  std::shared_ptr<Job> job_;
  Caller caller_;
  uint64_t generation_ = 0;
  int rank_ = 0;
  uint64_t id_ = 0;

  Mutex mu_;
  v1::SessionEvent event_ ABSL_GUARDED_BY(mu_);
  grpc::ByteBuffer out_ ABSL_GUARDED_BY(mu_);
  bool writing_ ABSL_GUARDED_BY(mu_) = false;
  bool ending_ ABSL_GUARDED_BY(mu_) = false;
  bool finished_ ABSL_GUARDED_BY(mu_) = false;
  grpc::Status status_ ABSL_GUARDED_BY(mu_);
};

CoordinatorService::CoordinatorService(JobRegistry* registry, const JobOptions& options,
                                       std::string admin_token_sha256)
    : registry_(registry), options_(options), admin_token_sha256_(std::move(admin_token_sha256)) {
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
                                       return SessionReactor::Start(ctx, registry_, admin_token_sha256_);
                                     }));
}

absl::StatusOr<std::shared_ptr<Job>> CoordinatorService::ExistingJob(const std::string& job_id) const {
  std::shared_ptr<Job> job = registry_->Find(job_id);
  if (!job) return NoSuchJob(job_id);
  return job;
}

Millis CoordinatorService::WaitFor(const grpc::CallbackServerContext* ctx, uint32_t wait_timeout_ms) const {
  Millis wait = wait_timeout_ms == 0 ? options_.default_wait : Millis(wait_timeout_ms);
  wait = std::min(wait, Millis(kMaxWaitMs));
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
  absl::StatusOr<TpInitArgs> args = CheckRequest(call->request);
  if (!args.ok()) return call->Reply(args.status());
  absl::StatusOr<PinnedJob> job = registry_->GetOrCreate(call->request.job_id());
  if (!job.ok()) return call->Reply(job.status());
  (*job)->Record(call->caller, *args, AnswerWith<RecordOutcome>(call, [](RecordOutcome o, auto* resp) {
                   TpInitRecordToProto(o.record, resp->mutable_recorded());
                   resp->set_created(o.created);
                 }));
}

void CoordinatorService::HandleMergeConfig(UnaryCall<v1::MergeConfigRequest, v1::MergeConfigResponse>* call) {
  const v1::MergeConfigRequest& req = call->request;
  if (absl::Status s = CheckRequest(req); !s.ok()) return call->Reply(s);
  // A dry run may name a job that does not exist: it is validated against no record, and leaves no job
  // behind.
  std::shared_ptr<Job> job;
  std::optional<PinnedJob> pin;
  if (req.generation() == 0) {
    absl::StatusOr<PinnedJob> pinned = registry_->GetOrCreate(req.job_id());
    if (!pinned.ok()) return call->Reply(pinned.status());
    job = pinned->get();
    pin.emplace(*std::move(pinned));
  } else {
    absl::StatusOr<std::shared_ptr<Job>> existing = ExistingJob(req.job_id());
    if (!existing.ok()) return call->Reply(existing.status());
    job = *std::move(existing);
  }
  job->Merge(call->caller, req.config_json(), req.has_mpu(), req.generation(), req.rank(),
                AnswerWith<MergeOutcome>(call, [](MergeOutcome o, auto* resp) {
                  resp->set_merged_config_json(std::move(o.merged_config));
                  resp->set_tp_init_recorded(o.tp_init_recorded);
                }));
}

// --- Join and unique IDs --------------------------------------------------------------------------------

void CoordinatorService::HandleJoin(UnaryCall<v1::JoinRequest, v1::JoinResponse>* call) {
  absl::StatusOr<JoinArgs> args = CheckRequest(call->request);
  if (!args.ok()) return call->Reply(args.status());
  absl::StatusOr<PinnedJob> job = registry_->GetOrCreate(call->request.job_id());
  if (!job.ok()) return call->Reply(job.status());
  const Millis wait = WaitFor(call->context(), call->request.wait_timeout_ms());
  ParkedReactor* parker = call->parker();  // the Join may answer, and free `call`, before it returns
  parker->Parked(job->get(), (*job)->Join(call->caller, *std::move(args), wait,
                                  AnswerWith<Assignment>(call, [](Assignment a, v1::JoinResponse* resp) {
                                    const Mesh& mesh = a.mesh;
                                    resp->set_generation(a.generation);
                                    resp->set_rank(a.rank);
                                    resp->mutable_mesh()->set_world_size(mesh.world_size());
                                    resp->mutable_mesh()->set_tp_size(mesh.tp_size());
                                    resp->mutable_mesh()->set_dp_size(mesh.dp_size());
                                    resp->set_tp_rank(mesh.tp_rank(a.rank));
                                    resp->set_dp_rank(mesh.dp_rank(a.rank));
                                    *resp->mutable_tp_group() = GroupToProto(mesh, mesh.tp_group_of(a.rank));
                                    *resp->mutable_dp_group() = GroupToProto(mesh, mesh.dp_group_of(a.rank));
                                    resp->set_heartbeat_interval_ms(static_cast<uint32_t>(a.heartbeat_interval.count()));
                                    resp->set_lease_ms(static_cast<uint32_t>(a.lease.count()));
                                  })));
}

void CoordinatorService::HandlePublishUniqueId(UnaryCall<v1::PublishUniqueIdRequest, v1::PublishUniqueIdResponse>* call) {
  absl::StatusOr<UniqueIds> ids = CheckRequest(call->request);
  if (!ids.ok()) return call->Reply(ids.status());
  absl::StatusOr<std::shared_ptr<Job>> job = ExistingJob(call->request.job_id());
  if (!job.ok()) return call->Reply(job.status());
  (*job)->PublishUniqueIds(call->caller, call->request.generation(), call->request.rank(), *std::move(ids), AnswerWith(call));
}

void CoordinatorService::HandleGetUniqueId(UnaryCall<v1::GetUniqueIdRequest, v1::GetUniqueIdResponse>* call) {
  absl::StatusOr<std::vector<GroupId>> groups = CheckRequest(call->request);
  if (!groups.ok()) return call->Reply(groups.status());
  absl::StatusOr<std::shared_ptr<Job>> job = ExistingJob(call->request.job_id());
  if (!job.ok()) return call->Reply(job.status());
  const v1::GetUniqueIdRequest& req = call->request;
  ParkedReactor* parker = call->parker();
  parker->Parked(*job, (*job)->GetUniqueIds(
                         call->caller, req.generation(), req.rank(), *groups, WaitFor(call->context(), req.wait_timeout_ms()),
                         AnswerWith<UniqueIds>(call, [](UniqueIds ids, v1::GetUniqueIdResponse* resp) {
                           for (auto& [slot, bytes] : ids) {
                             v1::UniqueId* out = resp->add_ids();
                             *out->mutable_group() = GroupIdToProto(slot.group);
                             out->set_root(slot.root);
                             out->set_id(std::move(bytes));
                           }
                         })));
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
  if (absl::Status s = CheckRequest(call->request); !s.ok()) return call->Reply(s);
  absl::StatusOr<std::shared_ptr<Job>> job = ExistingJob(call->request.job_id());
  if (!job.ok()) return call->Reply(job.status());
  const v1::BarrierRequest& req = call->request;
  ParkedReactor* parker = call->parker();
  parker->Parked(*job, (*job)->Barrier(call->caller, req.generation(), req.rank(), req.name(), req.round(),
                                     WaitFor(call->context(), req.wait_timeout_ms()), AnswerWith(call)));
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
  if (absl::Status s = CheckRequest(call->request); !s.ok()) return call->Reply(s);
  absl::StatusOr<std::shared_ptr<Job>> job = ExistingJob(call->request.job_id());
  if (!job.ok()) return call->Reply(job.status());
  const v1::LeaveRequest& req = call->request;
  (*job)->Leave(call->caller, req.generation(), req.rank(), req.finished(), req.reason(), AnswerWith(call),
                req.fatal());
}

// --- operator views -------------------------------------------------------------------------------------

void CoordinatorService::HandleListJobs(UnaryCall<v1::ListJobsRequest, v1::ListJobsResponse>* call) {
  absl::StatusOr<int> page_size = CheckRequest(call->request);
  if (!page_size.ok()) return call->Reply(page_size.status());
  const Caller& caller = call->caller;
  // One more than the page, to tell whether another page follows.
  const std::vector<std::shared_ptr<Job>> jobs = registry_->Page(
      call->request.page_token(), *page_size + 1, [&caller](const Job& job) { return job.Authorize(caller).ok(); });
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
  if (!view) return call->Reply(NoSuchJob(call->request.job_id()));
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
