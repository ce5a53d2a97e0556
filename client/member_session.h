// A worker's member session (coordinator.proto, Session): one stream, held by a background thread, that
// carries the worker's rendezvous as calls (Join, merge, unique IDs, barriers, Leave), a heartbeat every
// heartbeat_interval once it is a member, and the generation's end pushed down it the moment the coordinator
// decides it.
//
// Calls block their caller until the coordinator answers, for at most their wait (calls that park: Join,
// GetUniqueIds, Barrier) or the client's call_timeout (the others), plus the client's wait_slack. A stream
// lost while calls are in flight (the coordinator restarts, is briefly unreachable, or fails over) is opened
// again, to the leader, within the client's retry budget: the member's session first, then every call in
// flight, sent again as it was (every step is idempotent, a barrier keeps its round). The worker therefore
// rides out a coordinator restart in the middle of its rendezvous as it would with unary calls, holding one
// stream instead of one call per step.
//
// Calls `on_lost` once, from the session's thread, when the coordinator ends the session of a member
// (ABORTED naming the rank that failed; NOT_FOUND for a deleted job; FAILED_PRECONDITION for a stale
// generation), or when it has been unreachable for the client's whole retry budget, and stops; calls in
// flight then answer that status. While the session is open, this process's death ends the generation at
// once, naming its rank.
#ifndef TPCOORD_CLIENT_MEMBER_SESSION_H_
#define TPCOORD_CLIENT_MEMBER_SESSION_H_

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "client/coordinator_client.h"
#include "common/training_progress.h"

namespace tpcoord {

class MemberSession {
 public:
  // A session for a worker about to join; its stream carries `member_key` ("": a fresh random one), the
  // key its Join binds the seat to.
  MemberSession(CoordinatorClient* client, std::string member_key, std::function<void(absl::Status)> on_lost);
  // The session of an existing membership (joined elsewhere): its first heartbeat opens it.
  MemberSession(CoordinatorClient* client, Membership membership, std::function<void(absl::Status)> on_lost);
  ~MemberSession();  // closes the session (Leave first, or the coordinator takes it for a death)
  MemberSession(const MemberSession&) = delete;
  MemberSession& operator=(const MemberSession&) = delete;

  // Joins on this session (request.member_key is ignored: the session's key is the seat's); once answered,
  // the session is the member's. A session holds one membership: join the next generation on a new one.
  absl::StatusOr<Membership> Join(const JoinRequest& request, Millis wait);
  // The member's merge (CoordinatorClient::MergeConfig with a membership).
  absl::StatusOr<std::string> MergeConfig(const std::string& config_json, bool has_mpu);
  // Publishes the IDs of the roots m is (`mine`, may be empty), then returns those of `theirs` (may be empty),
  // in order, each group's roots in root order, once all their roots published them: one call.
  absl::StatusOr<UniqueIds> ExchangeUniqueIds(const Membership& m, const UniqueIds& mine,
                                              const std::vector<GroupId>& theirs, Millis wait);
  absl::Status Barrier(const std::string& name, Millis wait);
  // `fatal`: see LeaveRequest.fatal.
  absl::Status Leave(bool finished, const std::string& reason, bool fatal = false);

  // Sends `progress` with a heartbeat, now, without waiting for anything: a report made while the stream is
  // being reopened (or before the Join was answered) is dropped, and the next one goes. A step out of range
  // is not sent, and a rate that is not finite goes as 0.
  void ReportProgress(const TrainingProgress& progress);

  // Whether the coordinator holds the session (it answered the Join, or the first heartbeat, on it) within
  // `timeout`: from then on this process's death ends the generation at once.
  bool WaitUntilOpen(Millis timeout);

 private:
  class Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace tpcoord

#endif  // TPCOORD_CLIENT_MEMBER_SESSION_H_
