// What tp-agent serves its host's workers on its local socket: the coordinator's own service (coordinator.proto),
// relayed upstream as the agent, so that a worker under an agent runs unchanged and carries no secret.
//
// Every call goes up with the agent's credentials: its job token (and TLS), and its member key in place of the
// worker's, so that all the host's seats are bound to the agent's key. The agent is the host's identity; a
// worker proves itself to the agent by its uid (local_socket.h), not by a secret.
//
// - A unary call goes up as it is, with its deadline, and its answer comes back as it is (with the
//   coordinator's error context, never its leader hint: the agent follows the leader itself). Identical
//   StoreGets in flight (the same job, generation and key: every rank reads its peers' addresses while
//   Gloo sets up) go up once, and each waiter gets the answer.
// - A Session goes up as one member slot of the agent's one upstream session (upstream_session.h), which
//   carries every local session of the host at once: their messages in batches, their events fanned out.
//   Its unique-ID exchange calls go to the host's broker first (host_unique_ids.h), which answers what it
//   can on the host and sends up only the rest. Barrier arrivals are held until every worker of the host
//   has arrived (at most a second), and go up as one message.
//
// Thread-safe; the Relay must outlive the gRPC server that serves it.
#ifndef TPCOORD_AGENT_RELAY_H_
#define TPCOORD_AGENT_RELAY_H_

#include <grpcpp/generic/async_generic_service.h>

#include <chrono>
#include <condition_variable>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <mutex>
#include <string>
#include <thread>
#include <tuple>
#include <vector>

#include "agent/host_unique_ids.h"
#include "agent/upstream_session.h"
#include "client/targets.h"
#include "common/mutex.h"

namespace tpcoord {

class Relay final : public grpc::CallbackGenericService {
 public:
  // `host`: the host's name, for what the agent reports of its workers; `workers`: how many it started.
  Relay(Targets* targets, std::string host, int workers);
  ~Relay() override;  // after the server that serves it is shut down: ends the upstream sessions first

  grpc::ServerGenericBidiReactor* CreateReactor(grpc::GenericCallbackServerContext* ctx) override;

  Targets* targets() const { return targets_; }
  const std::string& member_key() const { return member_key_; }
  const std::string& host() const { return host_; }
  HostUniqueIds& unique_ids() { return unique_ids_; }

  // The upstream session a new local session joins: the open one, or a new one once it has ended or is
  // closing.
  std::shared_ptr<UpstreamSession> Upstream();

  // Calls `method` upstream as the agent (its credentials, the coordinator `targets` names now), with
  // `request` into `*response` on `*up` until `deadline`; `done` gets the status and the coordinator's error
  // context. A call that fails for want of the coordinator moves to the leader it named, or the next one.
  using UpstreamDone = std::function<void(const grpc::Status&, const std::string& context)>;
  void CallUpstream(grpc::ClientContext* up, const std::string& method, const grpc::ByteBuffer* request,
                    grpc::ByteBuffer* response, std::chrono::system_clock::time_point deadline, UpstreamDone done);

  // A StoreGet `request` (serialized) of a worker: true when it is on its way upstream, alone or with an
  // identical one in flight; `done` gets the answer (a status, the response, the error context). False: the
  // request does not parse (relay it as it is).
  using UnaryDone = std::function<void(const grpc::Status&, const grpc::ByteBuffer&, const std::string&)>;
  bool SharedStoreGet(const std::string& method, const grpc::ByteBuffer& request,
                      std::chrono::system_clock::time_point deadline, UnaryDone done);

  // A barrier arrival (a call of one barrier step) of `slot` on `upstream`, in `generation`: held until every
  // worker of the host has arrived at the same barrier and round, then sent up with theirs as one message.
  void Arrive(uint64_t generation, std::shared_ptr<UpstreamSession> upstream, uint32_t slot,
              v1::SessionRequest message);

  // What became of a call upstream that began at `since` on `target`: a failed connection (UNAVAILABLE), or
  // an answer. While calls fail for want of the coordinator, the agent says so about every 10 s (the first
  // after 5 s): the address, how long, and the transport's reason in words, as tp-worker does on its own.
  void Reached(Targets::Target* target, std::chrono::steady_clock::time_point since, const grpc::Status& status);

  // A heartbeat (no progress) of an open member's session `from`, in `slot` of `upstream`: the agent sends
  // its host's heartbeats together, once per heartbeat interval (the coordinator's, from the Join answers),
  // the latest of each worker that beat since the last. A worker that stops beating is left out, and its
  // lease runs out as it would without an agent.
  void Beat(std::shared_ptr<UpstreamSession> upstream, uint32_t slot, std::weak_ptr<LocalSessionSink> from,
            v1::SessionRequest message);
  // The coordinator's heartbeat interval, from a Join answer (the shortest seen is kept).
  void BeatEvery(std::chrono::milliseconds interval);

  struct Counts {
    int64_t store_gets = 0, store_gets_shared = 0;
    int64_t barrier_arrivals = 0, barrier_messages = 0;
    int64_t heartbeats = 0, heartbeat_messages = 0;
  };
  Counts counts();

 private:
  Targets* const targets_;
  const std::string member_key_;  // the agent's: every seat of this host is bound to it
  const std::string host_;
  struct SharedGet;
  struct HeldBarrier {
    std::chrono::steady_clock::time_point since;
    std::vector<std::tuple<std::shared_ptr<UpstreamSession>, uint32_t, v1::SessionRequest>> arrivals;
  };
  // Sends held arrivals up, one message per upstream session.
  void Flush(std::vector<HeldBarrier> held);
  // Sends up the arrivals held for a second or more.
  void FlushOld(std::chrono::steady_clock::time_point now);
  // Sends the heartbeats gathered, once an interval has passed since the last.
  void FlushBeats(std::chrono::steady_clock::time_point now);

  const int workers_;
  HostUniqueIds unique_ids_;
  Mutex mu_;
  std::shared_ptr<UpstreamSession> upstream_ ABSL_GUARDED_BY(mu_);
  std::vector<std::weak_ptr<UpstreamSession>> opened_ ABSL_GUARDED_BY(mu_);  // every one, to end them at exit
  std::map<std::string, std::shared_ptr<SharedGet>> gets_ ABSL_GUARDED_BY(mu_);  // by job, generation, key
  std::map<std::string, HeldBarrier> barriers_ ABSL_GUARDED_BY(mu_);  // by generation, name, round
  Counts counts_ ABSL_GUARDED_BY(mu_);
  struct PendingBeat {
    std::shared_ptr<UpstreamSession> upstream;
    UpstreamSession::Beat beat;
  };
  std::map<std::pair<UpstreamSession*, uint32_t>, PendingBeat> beats_ ABSL_GUARDED_BY(mu_);
  std::chrono::milliseconds beat_every_ ABSL_GUARDED_BY(mu_){1000};
  std::chrono::steady_clock::time_point beats_sent_ ABSL_GUARDED_BY(mu_);
  // The oldest call that failed for want of the coordinator since the last report (the ticker reports it:
  // finding the transport's reason may take a moment, never on a gRPC thread).
  std::optional<std::pair<Targets::Target*, std::chrono::steady_clock::time_point>> unreachable_
      ABSL_GUARDED_BY(mu_);
  // Ends the broker's waits whose time ran out, ten times a second.
  std::mutex ticker_mu_;
  std::condition_variable ticker_cv_;
  bool stopping_ = false;  // guarded by ticker_mu_
  std::thread ticker_;
};

}  // namespace tpcoord

#endif  // TPCOORD_AGENT_RELAY_H_
