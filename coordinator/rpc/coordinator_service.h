// The gRPC face of the coordinator. Each handler only translates: its request passed its checks
// (request_checks.h), its caller is identified from the call's credentials (caller.h), it calls one
// JobRegistry/Job method, which decides what the caller may do, and the job's answer becomes the reply.
//
// Credentials are read here from the call's metadata, so that one check works over TLS and over plaintext
// alike (gRPC's AuthMetadataProcessor needs secure server credentials, and aborts the process on insecure
// ones).
//
// The rendezvous calls are served by MemberCalls, shared with the member session (session_reactor.h).
//
// Every method is served from raw bytes: the request is parsed here, so that bytes that are not a valid
// message (garbage, invalid UTF-8 in a string field) are answered INVALID_ARGUMENT naming the message,
// where gRPC's own parsing answers an empty UNIMPLEMENTED. No exception leaves a handler: a bug is answered
// INTERNAL naming the method. Calls that wait park in their job (callback API), holding no thread.
#ifndef TPCOORD_COORDINATOR_RPC_COORDINATOR_SERVICE_H_
#define TPCOORD_COORDINATOR_RPC_COORDINATOR_SERVICE_H_

#include "coordinator/job/job_registry.h"
#include "coordinator/rpc/member_calls.h"
#include "tpcoord/v1/coordinator.grpc.pb.h"

namespace tpcoord {

template <typename Request, typename Response>
class UnaryCall;

// Runs `fn` on one of gRPC's threads (see JobContext::apply_on).
void RunOnGrpcThread(std::function<void()> fn);

class CoordinatorService final : public v1::Coordinator::CallbackService {
 public:
  // `registry` must outlive the service. `admin_token_sha256`: the hash of the admin token ("" none).
  CoordinatorService(JobRegistry* registry, const JobOptions& options, std::string admin_token_sha256);

 private:
  template <typename Request, typename Response>
  using Handler = void (CoordinatorService::*)(UnaryCall<Request, Response>*);
  // Serves `method` from raw bytes with `handler`; `parks`: its calls may wait in a job.
  template <typename Request, typename Response>
  void Serve(const char* method, Handler<Request, Response> handler, bool parks = false);

  void HandleRecordTpInitArgs(UnaryCall<v1::RecordTpInitArgsRequest, v1::RecordTpInitArgsResponse>* call);
  void HandleMergeConfig(UnaryCall<v1::MergeConfigRequest, v1::MergeConfigResponse>* call);
  void HandleJoin(UnaryCall<v1::JoinRequest, v1::JoinResponse>* call);
  void HandlePublishUniqueId(UnaryCall<v1::PublishUniqueIdRequest, v1::PublishUniqueIdResponse>* call);
  void HandleGetUniqueId(UnaryCall<v1::GetUniqueIdRequest, v1::GetUniqueIdResponse>* call);
  void HandleStoreSet(UnaryCall<v1::StoreSetRequest, v1::StoreSetResponse>* call);
  void HandleStoreGet(UnaryCall<v1::StoreGetRequest, v1::StoreGetResponse>* call);
  void HandleStoreAdd(UnaryCall<v1::StoreAddRequest, v1::StoreAddResponse>* call);
  void HandleStoreCompareSet(UnaryCall<v1::StoreCompareSetRequest, v1::StoreCompareSetResponse>* call);
  void HandleStoreCheck(UnaryCall<v1::StoreCheckRequest, v1::StoreCheckResponse>* call);
  void HandleStoreDelete(UnaryCall<v1::StoreDeleteRequest, v1::StoreDeleteResponse>* call);
  void HandleStoreNumKeys(UnaryCall<v1::StoreNumKeysRequest, v1::StoreNumKeysResponse>* call);
  void HandleStoreWait(UnaryCall<v1::StoreWaitRequest, v1::StoreWaitResponse>* call);
  void HandleBarrier(UnaryCall<v1::BarrierRequest, v1::BarrierResponse>* call);
  void HandleHeartbeat(UnaryCall<v1::HeartbeatRequest, v1::HeartbeatResponse>* call);
  void HandleLeave(UnaryCall<v1::LeaveRequest, v1::LeaveResponse>* call);
  void HandleListJobs(UnaryCall<v1::ListJobsRequest, v1::ListJobsResponse>* call);
  void HandleGetJob(UnaryCall<v1::GetJobRequest, v1::GetJobResponse>* call);
  void HandleDeleteJob(UnaryCall<v1::DeleteJobRequest, v1::DeleteJobResponse>* call);
  void HandleCreateJob(UnaryCall<v1::CreateJobRequest, v1::CreateJobResponse>* call);

  // The job a call within a generation names: NOT_FOUND unless it exists.
  absl::StatusOr<std::shared_ptr<Job>> ExistingJob(const std::string& job_id) const;
  // How long a parked call may wait: MemberCalls::Wait,
  // and ending a little before the client's own gRPC deadline, so that our DEADLINE_EXCEEDED, which names
  // what is missing, reaches the client.
  Millis WaitFor(const grpc::CallbackServerContext* ctx, uint32_t wait_timeout_ms) const;

  JobRegistry* const registry_;
  const std::string admin_token_sha256_;
  const MemberCalls calls_;  // what the rendezvous calls do, unary or on a session
};

}  // namespace tpcoord

#endif  // TPCOORD_COORDINATOR_RPC_COORDINATOR_SERVICE_H_
