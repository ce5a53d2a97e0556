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

// Requests of calls that may park in a job carry how long they may wait.
template <typename Request, typename = void>
struct Parks : std::false_type {};
template <typename Request>
struct Parks<Request, std::void_t<decltype(std::declval<Request>().wait_timeout_ms())>> : std::true_type {};

}  // namespace

template <typename Request, typename Response>
void CoordinatorService::Serve(const char* name, JobCalls::Method<Request, Response> method) {
  constexpr bool parks = Parks<Request>::value;
  const google::protobuf::ServiceDescriptor* service =
      google::protobuf::DescriptorPool::generated_pool()->FindServiceByName(v1::Coordinator::service_full_name());
  const int index = service->FindMethodByName(name)->index();
  MarkMethodRawCallback(
      index, new grpc::internal::CallbackUnaryHandler<grpc::ByteBuffer, grpc::ByteBuffer>(
                 [this, name, method](grpc::CallbackServerContext* ctx, const grpc::ByteBuffer* in,
                                      grpc::ByteBuffer* out) -> grpc::ServerUnaryReactor* {
                   auto* call = new UnaryCall<Request, Response>(ctx, out, parks ? new ParkedReactor : nullptr);
                   grpc::ServerUnaryReactor* reactor = call->reactor();  // `call` may be gone below
                   if (absl::Status s = ParseRequest(*in, &call->request); !s.ok()) {
                     call->Reply(s);
                     return reactor;
                   }
                   // Every call needs a token: a call without one learns nothing, not even whether its job
                   // exists.
                   absl::StatusOr<Caller> caller = IdentifyCall(ctx, admin_token_sha256_);
                   if (!caller.ok()) {
                     // Named only when it is a valid id: the request is not checked yet.
                     const std::string job = JobIdOf(call->request);
                     call->Reply(ValidateJobId(job).ok() ? WithJobContext(job, caller.status()) : caller.status());
                     return reactor;
                   }
                   call->caller = *std::move(caller);
                   try {
                     Millis wait(0);
                     if constexpr (parks) wait = WaitFor(ctx, call->request.wait_timeout_ms());
                     ParkedReactor* parker = call->parker();  // the call may answer, and free `call`, at once
                     WaitingCall waiting = (calls_.*method)(call->caller, call->request, wait, &call->response,
                                                            [call](absl::Status s) { call->Reply(s); });
                     if (parker) parker->Parked(std::move(waiting.job), waiting.id);
                   } catch (const std::exception& e) {  // a bug: answer it, keep serving
                     // Calls throw only before they hand the call to a job, never after.
                     call->Reply(absl::InternalError(absl::StrCat("internal error in ", name, ": ", e.what())));
                   }
                   return reactor;
                 }));
}

CoordinatorService::CoordinatorService(JobRegistry* registry, const JobOptions& options, std::string admin_token_sha256)
    : admin_token_sha256_(std::move(admin_token_sha256)), calls_(registry, options) {
  // Every job call, one line each: its name in the proto, and what serves it (job_calls.h).
  Serve("RecordTpInitArgs", &JobCalls::Record);
  Serve("MergeConfig", &JobCalls::Merge);
  Serve("Join", &JobCalls::Join);
  Serve("PublishUniqueId", &JobCalls::PublishUniqueId);
  Serve("GetUniqueId", &JobCalls::GetUniqueId);
  Serve("Barrier", &JobCalls::Barrier);
  Serve("Heartbeat", &JobCalls::Heartbeat);
  Serve("Leave", &JobCalls::Leave);
  Serve("StoreSet", &JobCalls::StoreSet);
  Serve("StoreGet", &JobCalls::StoreGet);
  Serve("StoreAdd", &JobCalls::StoreAdd);
  Serve("StoreCompareSet", &JobCalls::StoreCompareSet);
  Serve("StoreCheck", &JobCalls::StoreCheck);
  Serve("StoreDelete", &JobCalls::StoreDelete);
  Serve("StoreNumKeys", &JobCalls::StoreNumKeys);
  Serve("StoreWait", &JobCalls::StoreWait);
  Serve("ListJobs", &JobCalls::ListJobs);
  Serve("GetJob", &JobCalls::GetJob);
  Serve("DeleteJob", &JobCalls::DeleteJob);
  Serve("CreateJob", &JobCalls::CreateJob);
  Serve("CloseJob", &JobCalls::CloseJob);
  const int session = google::protobuf::DescriptorPool::generated_pool()
                          ->FindServiceByName(v1::Coordinator::service_full_name())
                          ->FindMethodByName("Session")
                          ->index();
  MarkMethodRawCallback(session, new grpc::internal::CallbackBidiHandler<grpc::ByteBuffer, grpc::ByteBuffer>(
                                     [this](grpc::CallbackServerContext* ctx) {
                                       return StartSession(ctx, &calls_, admin_token_sha256_);
                                     }));
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

}  // namespace tpcoord
