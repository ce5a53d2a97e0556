// A member's session (coordinator.proto, Session): one stream that carries a worker's whole rendezvous as
// calls, its heartbeats, and its generation's end.
//
// A call's steps run one after the other through MemberCalls, exactly as the unary RPCs would run them;
// calls run concurrently with each other and with heartbeats. Once a join step is answered (or a first
// heartbeat names an existing member), the stream is that member's session in its job (Job::OpenSession):
// the job ends the stream with the generation, and a stream that ends from the client's side is the member
// gone (Job::CloseSession decides whether that ends the generation). A call still waiting when the stream
// ends is cancelled in its job.
//
// Answers go out in the order they are made, one write at a time; the stream finishes once the writes
// queued before its end are out. Sessions are served from completion queues of their own (SessionServer).
#ifndef TPCOORD_COORDINATOR_SESSION_REACTOR_H_
#define TPCOORD_COORDINATOR_SESSION_REACTOR_H_

#include <grpcpp/grpcpp.h>

#include <memory>
#include <thread>
#include <vector>

#include "common/mutex.h"
#include "coordinator/coordinator_service.h"

namespace tpcoord {

// Serves the Session method of `service` from `cqs` (added to the server's builder with AddCompletionQueue;
// the service marked Session as raw asynchronous), one thread per queue, until destroyed, which must come
// after the server's Shutdown.
//
// Why queues of its own rather than gRPC's callback API, like the unary methods: gRPC 1.51 as Debian builds
// it (with its internal assertions) checks, on every completion, that the completed tag is one its queue
// waits for, by a linear scan of every outstanding tag of that queue under its lock (grpc_cq_end_op ->
// cq_check_tag). Every callback call of a process shares one queue, and every open session keeps tags
// outstanding, so each message cost O(open sessions): at 40,000 workers half of the coordinator's CPU. On
// kSessionQueues queues each scan covers a share.
class SessionServer {
 public:
  SessionServer(CoordinatorService* service, std::vector<std::unique_ptr<grpc::ServerCompletionQueue>> cqs);
  // After the server's Shutdown: waits (up to 10 s) for every session to end, then drains the queues.
  ~SessionServer();
  SessionServer(const SessionServer&) = delete;
  SessionServer& operator=(const SessionServer&) = delete;

  CoordinatorService* service() const { return service_; }
  // A session reactor came to be / went (including the one waiting for the next call on each queue).
  void Arrived();
  void Left();

 private:
  CoordinatorService* const service_;
  std::vector<std::unique_ptr<grpc::ServerCompletionQueue>> cqs_;
  std::vector<std::thread> threads_;
  Mutex mu_;
  CondVar idle_{&mu_};
  int live_ ABSL_GUARDED_BY(mu_) = 0;
};

// How many completion queues (and threads) serve sessions.
inline constexpr int kSessionQueues = 8;

}  // namespace tpcoord

#endif  // TPCOORD_COORDINATOR_SESSION_REACTOR_H_
