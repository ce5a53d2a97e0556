// The gRPC face of the coordinator. Each handler only translates: it validates the request's shape, calls
// one JobRegistry/Job method and writes the reply. Calls that wait park a reactor in the job (callback
// API), so a parked call holds no thread.
#ifndef TPCOORD_COORDINATOR_COORDINATOR_SERVICE_H_
#define TPCOORD_COORDINATOR_COORDINATOR_SERVICE_H_

#include "coordinator/job_registry.h"
#include "tpcoord/v1/coordinator.grpc.pb.h"

namespace tpcoord {

class CoordinatorService final : public v1::Coordinator::CallbackService {
 public:
  // `registry` must outlive the service.
  CoordinatorService(JobRegistry* registry, const JobOptions& options);

  grpc::ServerUnaryReactor* RecordTpInitArgs(grpc::CallbackServerContext* ctx,
                                             const v1::RecordTpInitArgsRequest* req,
                                             v1::RecordTpInitArgsResponse* resp) override;
  grpc::ServerUnaryReactor* MergeConfig(grpc::CallbackServerContext* ctx, const v1::MergeConfigRequest* req,
                                        v1::MergeConfigResponse* resp) override;
  grpc::ServerUnaryReactor* Join(grpc::CallbackServerContext* ctx, const v1::JoinRequest* req,
                                 v1::JoinResponse* resp) override;
  grpc::ServerUnaryReactor* PublishUniqueId(grpc::CallbackServerContext* ctx,
                                            const v1::PublishUniqueIdRequest* req,
                                            v1::PublishUniqueIdResponse* resp) override;
  grpc::ServerUnaryReactor* GetUniqueId(grpc::CallbackServerContext* ctx, const v1::GetUniqueIdRequest* req,
                                        v1::GetUniqueIdResponse* resp) override;
  grpc::ServerUnaryReactor* StoreSet(grpc::CallbackServerContext* ctx, const v1::StoreSetRequest* req,
                                     v1::StoreSetResponse* resp) override;
  grpc::ServerUnaryReactor* StoreGet(grpc::CallbackServerContext* ctx, const v1::StoreGetRequest* req,
                                     v1::StoreGetResponse* resp) override;
  grpc::ServerUnaryReactor* StoreAdd(grpc::CallbackServerContext* ctx, const v1::StoreAddRequest* req,
                                     v1::StoreAddResponse* resp) override;
  grpc::ServerUnaryReactor* StoreCompareSet(grpc::CallbackServerContext* ctx,
                                            const v1::StoreCompareSetRequest* req,
                                            v1::StoreCompareSetResponse* resp) override;
  grpc::ServerUnaryReactor* StoreCheck(grpc::CallbackServerContext* ctx, const v1::StoreCheckRequest* req,
                                       v1::StoreCheckResponse* resp) override;
  grpc::ServerUnaryReactor* StoreDelete(grpc::CallbackServerContext* ctx, const v1::StoreDeleteRequest* req,
                                        v1::StoreDeleteResponse* resp) override;
  grpc::ServerUnaryReactor* StoreNumKeys(grpc::CallbackServerContext* ctx, const v1::StoreNumKeysRequest* req,
                                         v1::StoreNumKeysResponse* resp) override;
  grpc::ServerUnaryReactor* StoreWait(grpc::CallbackServerContext* ctx, const v1::StoreWaitRequest* req,
                                      v1::StoreWaitResponse* resp) override;
  grpc::ServerUnaryReactor* Barrier(grpc::CallbackServerContext* ctx, const v1::BarrierRequest* req,
                                    v1::BarrierResponse* resp) override;
  grpc::ServerUnaryReactor* Heartbeat(grpc::CallbackServerContext* ctx, const v1::HeartbeatRequest* req,
                                      v1::HeartbeatResponse* resp) override;
  grpc::ServerUnaryReactor* Leave(grpc::CallbackServerContext* ctx, const v1::LeaveRequest* req,
                                  v1::LeaveResponse* resp) override;
  grpc::ServerUnaryReactor* ListJobs(grpc::CallbackServerContext* ctx, const v1::ListJobsRequest* req,
                                     v1::ListJobsResponse* resp) override;
  grpc::ServerUnaryReactor* GetJob(grpc::CallbackServerContext* ctx, const v1::GetJobRequest* req,
                                   v1::GetJobResponse* resp) override;

 private:
  // The job a generation-scoped call names: INVALID_ARGUMENT for a malformed id, NOT_FOUND if unknown.
  absl::StatusOr<std::shared_ptr<Job>> ExistingJob(const std::string& job_id) const;
  // ExistingJob for a key-value store call, after checking its keys (1..1024 valid keys).
  absl::StatusOr<std::shared_ptr<Job>> StoreJob(const std::string& job_id, const std::vector<std::string>& keys) const;
  // How long a parked call may wait: the request's wait_timeout_ms (0: the default, capped), but ending
  // a little before the client's own gRPC deadline so that our DEADLINE_EXCEEDED, which names what is
  // missing, reaches the client.
  Millis WaitFor(const grpc::CallbackServerContext* ctx, uint32_t wait_timeout_ms) const;

  JobRegistry* const registry_;
  const JobOptions options_;
};

}  // namespace tpcoord

#endif  // TPCOORD_COORDINATOR_COORDINATOR_SERVICE_H_
