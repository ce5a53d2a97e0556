// A membership's session (coordinator.proto, Session), held by a background thread: a heartbeat every
// heartbeat_interval up one stream, and the generation's end pushed down it the moment the coordinator
// decides it. Calls `on_lost` once, from that thread, when the coordinator ends the session (ABORTED naming
// the rank that failed; NOT_FOUND for a deleted job; FAILED_PRECONDITION for a stale generation), or when
// it has been unreachable for the client's whole retry budget, and stops. A coordinator that restarts within
// the budget is not a loss: the session is opened again and the generation goes on. While the session is
// open, this process's death ends the generation at once, naming its rank.
#ifndef TPCOORD_WORKER_CLIENT_MEMBER_SESSION_H_
#define TPCOORD_WORKER_CLIENT_MEMBER_SESSION_H_

#include <functional>
#include <memory>

#include "absl/status/status.h"
#include "worker/client/coordinator_client.h"

namespace tpcoord {

class MemberSession {
 public:
  MemberSession(CoordinatorClient* client, Membership membership, std::function<void(absl::Status)> on_lost);
  ~MemberSession();  // closes the session (call Leave first, or the coordinator takes it for a death)
  MemberSession(const MemberSession&) = delete;
  MemberSession& operator=(const MemberSession&) = delete;

  // Whether the coordinator holds the session (it answered its first heartbeat) within `timeout`: from then
  // on this process's death ends the generation at once; before, only the lease would notice it.
  bool WaitUntilOpen(Millis timeout);

 private:
  class Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace tpcoord

#endif  // TPCOORD_WORKER_CLIENT_MEMBER_SESSION_H_
