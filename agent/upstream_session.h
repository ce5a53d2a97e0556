// The agent's session upstream (coordinator.proto, Session): one stream that carries the sessions of all the
// host's workers, each in a member slot of its own (SessionRequest.member). The coordinator keeps its rules
// per slot, so every check and error text a worker would meet on a stream of its own stays.
//
// - What the local sessions send goes up in batches: whatever they send while a write is out goes in the next
//   one (K joins made at once are one message, as are K barrier arrivals). Each call gets an upstream call_id
//   of its own (local sessions number their calls independently) and its answer goes back under the local one.
// - Events come back batched; each goes to its slot's local session, without the slot.
// - A local session that ends while its slot holds a member (the worker died, or finished and hung up) is
//   reported gone, naming why: for an unfinished member the coordinator ends the generation naming its rank
//   and host, as a worker's own stream closing would; for a finished one it only forgets the session.
// - When the stream ends (the coordinator ended the generation, was restarted, or failed over), every local
//   session holding a member ends with the coordinator's status, and the others with UNAVAILABLE, so that
//   their clients open their session again (the next one goes up on a new stream) and send their calls again.
// - Once no local session is left on it, the stream is closed from the agent's side.
//
// Thread-safe. Created by Open; gRPC holds it until its stream is done.
#ifndef TPCOORD_AGENT_UPSTREAM_SESSION_H_
#define TPCOORD_AGENT_UPSTREAM_SESSION_H_

#include <grpcpp/grpcpp.h>

#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "client/targets.h"
#include "common/mutex.h"
#include "tpcoord/v1/coordinator.grpc.pb.h"

namespace tpcoord {

// What the upstream session tells a local session.
class LocalSessionSink {
 public:
  virtual ~LocalSessionSink() = default;
  // An event for the local session's member (its `member` cleared, its call_id the local one).
  virtual void Deliver(const v1::SessionEvent& event) = 0;
  // The upstream stream ended: end the local one with `status` (and `context`, the coordinator's error context,
  // as trailing metadata "tpcoord-context" when not empty).
  virtual void End(const grpc::Status& status, const std::string& context) = 0;
};

class UpstreamSession final : public grpc::ClientBidiReactor<v1::SessionRequest, v1::SessionEvent> {
 public:
  // Opens a stream to the coordinator `targets` names now, as the agent (its token and `member_key`);
  // `ended` learns how it ended (with the target and when it was opened).
  using Ended = std::function<void(Targets::Target*, std::chrono::steady_clock::time_point, const grpc::Status&)>;
  static std::shared_ptr<UpstreamSession> Open(Targets* targets, const std::string& member_key, Ended ended);

  // A member slot for `local`; nullopt when this stream is closing or ended, or when every slot is taken.
  std::optional<uint32_t> Attach(std::weak_ptr<LocalSessionSink> local);
  // Sends `message` (a local session's: no member, batch or gone) as `slot`'s.
  void Send(uint32_t slot, v1::SessionRequest message);
  // Sends several slots' messages in one batch (up to the batch limit): a host's barrier arrivals.
  void SendAll(std::vector<std::pair<uint32_t, v1::SessionRequest>> messages);
  // A slot's heartbeat, and the local session it is from.
  struct Beat {
    uint32_t slot = 0;
    std::weak_ptr<LocalSessionSink> from;
    v1::SessionRequest message;
  };
  // Sends the host's heartbeats in one batch; a beat whose slot no longer holds its local session is dropped.
  void SendBeats(std::vector<Beat> beats);
  // Sends `message` as `slot`'s call, of the agent's own (tp-agent's unique-ID broker): `done` gets its answer,
  // or an UNAVAILABLE event when this stream ends first or no longer takes calls.
  using CallDone = std::function<void(const v1::SessionEvent&)>;
  void Call(uint32_t slot, v1::SessionRequest message, CallDone done);
  // `slot`'s local session ended first: its member, if it has one, is gone for `why`.
  void Detach(uint32_t slot, const std::string& why);
  // Whether a new local session must go up on another stream: this one is closing or has ended.
  bool Closing();
  // Cancels the stream and waits (at most `timeout`) until it is done: the agent's exit.
  void CancelAndWait(std::chrono::milliseconds timeout);

  void OnReadDone(bool ok) override;
  void OnWriteDone(bool ok) override;
  void OnWritesDoneDone(bool) override {}
  void OnDone(const grpc::Status& status) override;

 private:
  struct Slot {
    std::weak_ptr<LocalSessionSink> local;
    bool detached = false;  // its local session ended
    bool bound = false;     // the coordinator holds a member in it (one of its events carried a lease)
    std::set<uint64_t> calls;  // upstream call_ids in flight
  };

  UpstreamSession(Targets* targets, Targets::Target* target, Ended ended)
      : targets_(targets), target_(target), ended_(std::move(ended)) {}

  // A call in flight upstream: whose it is, and where its answer goes.
  struct InFlight {
    uint32_t slot = 0;
    uint64_t local_id = 0;  // a local session's call_id; 0 for the agent's own
    CallDone done;          // the agent's own call's
  };

  // Routes one event: the local session to give it to, or (a call of the agent's own) its `done`.
  std::shared_ptr<LocalSessionSink> RouteLocked(v1::SessionEvent& event, CallDone* done)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Forgets a detached slot once nothing more can come for it (reporting a member in it gone first).
  void SettleLocked(uint32_t slot, const std::string& why) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void QueueLocked(v1::SessionRequest message) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Queues `message` as `slot`'s without starting a write; false if the slot takes no more messages.
  bool AddLocked(uint32_t slot, v1::SessionRequest& message) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Starts the next write (the queued messages, as one batch), or the half-close once closing and drained.
  void WriteLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  Targets* const targets_;
  Targets::Target* const target_;
  const Ended ended_;
  const std::chrono::steady_clock::time_point opened_ = std::chrono::steady_clock::now();
  grpc::ClientContext ctx_;
  v1::SessionEvent in_;
  v1::SessionRequest out_;  // the write in flight
  std::shared_ptr<UpstreamSession> self_;  // until OnDone

  Mutex mu_;
  std::map<uint32_t, Slot> slots_ ABSL_GUARDED_BY(mu_);
  std::map<uint64_t, InFlight> calls_ ABSL_GUARDED_BY(mu_);  // by upstream call_id
  uint64_t next_call_ ABSL_GUARDED_BY(mu_) = 1;
  std::vector<v1::SessionRequest> queued_ ABSL_GUARDED_BY(mu_);
  bool writing_ ABSL_GUARDED_BY(mu_) = false;
  bool closing_ ABSL_GUARDED_BY(mu_) = false;  // no local session left: half-close once the writes are out
  bool half_closed_ ABSL_GUARDED_BY(mu_) = false;
  bool broken_ ABSL_GUARDED_BY(mu_) = false;  // a write failed: the stream is ending
  bool done_ ABSL_GUARDED_BY(mu_) = false;
  bool finished_ ABSL_GUARDED_BY(mu_) = false;  // OnDone has run to its end
  CondVar finished_cv_{&mu_};
};

}  // namespace tpcoord

#endif  // TPCOORD_AGENT_UPSTREAM_SESSION_H_
