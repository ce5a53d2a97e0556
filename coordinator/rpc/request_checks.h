// The checks every request passes before it reaches a job, one function per RPC, in the manner of etcd's
// checkPutRequest: sizes, charsets, ranges and counts against common/limits.h. Each failure is
// INVALID_ARGUMENT naming the job (when its id is valid), the field and the value. What a check returns is
// the request in the domain's terms. Pure: no state, no gRPC calls; fuzzed by fuzz/request_checks_fuzzer.cc.
#ifndef TPCOORD_COORDINATOR_RPC_REQUEST_CHECKS_H_
#define TPCOORD_COORDINATOR_RPC_REQUEST_CHECKS_H_

#include <string>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "common/mesh.h"
#include "common/tp_init_args.h"
#include "coordinator/job/job.h"
#include "tpcoord/v1/coordinator.pb.h"

namespace tpcoord {

absl::StatusOr<TpInitArgs> CheckRequest(const v1::RecordTpInitArgsRequest& req);
absl::Status CheckRequest(const v1::MergeConfigRequest& req);
absl::StatusOr<JoinArgs> CheckRequest(const v1::JoinRequest& req);
absl::StatusOr<UniqueIds> CheckRequest(const v1::PublishUniqueIdRequest& req);
absl::StatusOr<std::vector<GroupId>> CheckRequest(const v1::GetUniqueIdRequest& req);
absl::Status CheckRequest(const v1::StoreSetRequest& req);
absl::Status CheckRequest(const v1::StoreGetRequest& req);
absl::Status CheckRequest(const v1::StoreAddRequest& req);
absl::Status CheckRequest(const v1::StoreCompareSetRequest& req);
absl::Status CheckRequest(const v1::StoreCheckRequest& req);
absl::Status CheckRequest(const v1::StoreDeleteRequest& req);
absl::Status CheckRequest(const v1::StoreNumKeysRequest& req);
absl::Status CheckRequest(const v1::StoreWaitRequest& req);
absl::Status CheckRequest(const v1::BarrierRequest& req);
absl::Status CheckRequest(const v1::HeartbeatRequest& req);
absl::Status CheckRequest(const v1::LeaveRequest& req);
// Returns the page size to use.
absl::StatusOr<int> CheckRequest(const v1::ListJobsRequest& req);
absl::Status CheckRequest(const v1::GetJobRequest& req);
absl::Status CheckRequest(const v1::DeleteJobRequest& req);
// Returns the SHA-256 of job_token, or "" when there is none.
absl::StatusOr<std::string> CheckRequest(const v1::CreateJobRequest& req);
absl::Status CheckRequest(const v1::CloseJobRequest& req);

}  // namespace tpcoord

#endif  // TPCOORD_COORDINATOR_RPC_REQUEST_CHECKS_H_
