// The proto answers built from the domain's values, once each, for the unary service and the session alike.
#ifndef TPCOORD_COORDINATOR_RPC_ANSWERS_H_
#define TPCOORD_COORDINATOR_RPC_ANSWERS_H_

#include <grpcpp/grpcpp.h>

#include "coordinator/job/job.h"
#include "coordinator/job/job_view.h"
#include "coordinator/rpc/call_codec.h"
#include "tpcoord/v1/coordinator.pb.h"

namespace tpcoord {

// Join's answer: the generation, the rank, the mesh and this rank's groups, the heartbeat cadence.
void AssignmentToProto(const Assignment& assignment, v1::JoinResponse* out);
// GetUniqueId's answer: the IDs of the groups asked, in order, each group's shared by every answer.
struct UniqueIdAnswer {
  SharedUniqueIds groups;
};
// Its bytes (a GetUniqueIdResponse), each group's encoded once, on its first answer, and referenced after.
AnswerBytes UniqueIdBytes(const UniqueIdAnswer& answer);
grpc::ByteBuffer SerializeAnswer(const UniqueIdAnswer& answer);
// What tpctl shows of a job (GetJob, ListJobs).
void JobViewToProto(const JobView& view, v1::JobStatus* out);

}  // namespace tpcoord

#endif  // TPCOORD_COORDINATOR_RPC_ANSWERS_H_
