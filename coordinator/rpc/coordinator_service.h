// The gRPC face of the coordinator. It only translates: it parses a call's request from raw bytes,
// identifies its caller from the call's credentials (caller.h), hands both to the job call that serves it
// (job_calls.h: checks, the job, its answer), and turns the answer into the reply. One line per RPC.
//
// Credentials are read here from the call's metadata, so that one check works over TLS and over plaintext
// alike (gRPC's AuthMetadataProcessor needs secure server credentials, and aborts the process on insecure
// ones).
//
// The member session (session_reactor.h) serves its steps through the same job calls.
//
// Every method is served from raw bytes: the request is parsed here, so that bytes that are not a valid
// message (garbage, invalid UTF-8 in a string field) are answered INVALID_ARGUMENT naming the message,
// where gRPC's own parsing answers an empty UNIMPLEMENTED. No exception leaves a handler: a bug is answered
// INTERNAL naming the method. Calls that wait park in their job (callback API), holding no thread.
#ifndef TPCOORD_COORDINATOR_RPC_COORDINATOR_SERVICE_H_
#define TPCOORD_COORDINATOR_RPC_COORDINATOR_SERVICE_H_

#include "coordinator/job/job_registry.h"
#include "coordinator/rpc/job_calls.h"
#include "tpcoord/v1/coordinator.grpc.pb.h"

namespace tpcoord {

// Runs `fn` on one of gRPC's threads (see JobContext::apply_on).
void RunOnGrpcThread(std::function<void()> fn);

class CoordinatorService final : public v1::Coordinator::CallbackService {
 public:
  // `registry` must outlive the service. `admin_token_sha256`: the hash of the admin token ("" none).
  CoordinatorService(JobRegistry* registry, const JobOptions& options, std::string admin_token_sha256);

 private:
  // Serves RPC `name` from raw bytes with `method` of the job calls; a call whose request has
  // wait_timeout_ms may park in its job (a ParkedReactor cancels it there if its client goes away).
  template <typename Request, typename Response>
  void Serve(const char* name, JobCalls::Method<Request, Response> method);

  // How long a parked call may wait: JobCalls::Wait, and ending a little before the client's own gRPC
  // deadline, so that our DEADLINE_EXCEEDED, which names what is missing, reaches the client.
  Millis WaitFor(const grpc::CallbackServerContext* ctx, uint32_t wait_timeout_ms) const;

  const std::string admin_token_sha256_;
  const JobCalls calls_;  // every job call, unary or on a session
};

}  // namespace tpcoord

#endif  // TPCOORD_COORDINATOR_RPC_COORDINATOR_SERVICE_H_
