// A member's session (coordinator.proto, Session): one stream that carries a worker's whole rendezvous as
// calls, its heartbeats, and its generation's end.
//
// A call's steps run one after the other through JobCalls, exactly as the unary RPCs would run them;
// calls run concurrently with each other and with heartbeats. Once a join step is answered (or a first
// heartbeat names an existing member), the stream is that member's session in its job (Job::OpenSession):
// the job ends the stream with the generation, and a stream that ends from the client's side is the member
// gone (Job::CloseSession decides whether that ends the generation). A call still waiting when the stream
// ends is cancelled in its job.
//
// A stream may carry several members (tp-agent's: one host's workers), each in a slot of its own
// (SessionRequest.member) that keeps every rule above; their messages may come in batches, and then their
// events go out in batches too: whatever is made while a write is out goes in the next one. The stream's
// end with members unfinished ends the generation naming the host and those ranks (Job::CloseSessions).
//
// Answers go out in the order they are made, one write at a time; the stream finishes once the writes
// queued before its end are out. A group's unique IDs are encoded once and referenced by every answer that
// carries them (answers.h).
#ifndef TPCOORD_COORDINATOR_RPC_SESSION_REACTOR_H_
#define TPCOORD_COORDINATOR_RPC_SESSION_REACTOR_H_

#include <grpcpp/grpcpp.h>

#include <string>

#include "coordinator/rpc/job_calls.h"

namespace tpcoord {

// Serves one Session stream; gRPC owns the reactor and it frees itself once done. `calls` must outlive every
// session.
grpc::ServerBidiReactor<grpc::ByteBuffer, grpc::ByteBuffer>* StartSession(grpc::CallbackServerContext* ctx,
                                                                          const JobCalls* calls,
                                                                          const std::string& admin_token_sha256);

}  // namespace tpcoord

#endif  // TPCOORD_COORDINATOR_RPC_SESSION_REACTOR_H_
