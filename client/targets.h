// The coordinators a client talks to (ClientOptions::address: one, or several HA replicas) and how it reaches
// them: a gRPC channel and stub per coordinator, the one to call now (the leader, as far as the client
// knows), following a standby's hint to the leader, the credentials every call carries, and what the client
// says while it waits for a coordinator it cannot reach (the address, how long, the transport's reason in
// words). Shared by CoordinatorClient's calls and MemberSession's stream. Internal to the client library.
//
// Thread-safe.
#ifndef TPCOORD_CLIENT_TARGETS_H_
#define TPCOORD_CLIENT_TARGETS_H_

#include <chrono>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include <grpcpp/grpcpp.h>

#include "client/coordinator_client.h"
#include "tpcoord/v1/coordinator.grpc.pb.h"

namespace tpcoord {

class Targets {
 public:
  using Clock = std::chrono::steady_clock;

  // One coordinator of the list.
  struct Target {
    std::string address;
    std::shared_ptr<grpc::Channel> channel;
    std::unique_ptr<v1::Coordinator::Stub> stub;
  };

  explicit Targets(ClientOptions options);
  Targets(const Targets&) = delete;
  Targets& operator=(const Targets&) = delete;

  // The coordinator to call now: the leader, as far as this client knows. Never null; stays valid (the list
  // never shrinks).
  Target* Current();
  size_t TargetCount();
  // After a call on `used` failed for want of a coordinator: go to `leader` (a standby's answer names it in
  // its trailing metadata; it may be one this client was not given) or else to the next in the list.
  void Follow(const Target* used, const std::string& leader);

  // Whether each attempt waits for its coordinator to be up: with one address, as the options say; with
  // several, never (a dead replica must fail at once, so that the next is tried).
  bool WaitForReady() const { return options.wait_for_ready && !replicas; }
  // With several coordinators: whether `target`'s connection is up, or comes up within a second. (gRPC
  // reports a channel whose connection failed as failed, and fails calls that do not wait for it, until a
  // new connection is up; and with the synchronous API only a thread waiting on the channel moves that
  // connection forward. This is that thread.) With one coordinator: true, the attempt itself waits.
  bool Reachable(Target* target);
  // With one coordinator, for a call that waits for it: blocks until `target`'s connection is up (true) or
  // `give_up` passes (false), saying why every 10 s meanwhile (ClientOptions::log_waiting).
  bool AwaitConnected(Target* target, Clock::time_point give_up);
  // What waiting calls and sessions report: a failed connection to `target` (tried since `since`), or one
  // that is up.
  void NoteUnreachable(Target* target, Clock::time_point since);
  void NoteReachable();
  // The transport's reason why `target` cannot be reached now ("" if it can), from a call that does not wait.
  std::string ProbeError(Target* target);

  // Adds the token and `member_key` to a call.
  void AddCredentials(grpc::ClientContext* ctx, const std::string& member_key) const;

  const ClientOptions options;
  const bool replicas;  // options.address lists several coordinators

 private:
  std::mutex targets_mu_;
  std::vector<std::unique_ptr<Target>> targets_;  // never shrinks: a Target* stays valid
  size_t current_ = 0;
  std::mutex waiting_mu_;
  std::optional<Clock::time_point> unreachable_since_;  // guarded by waiting_mu_
  Clock::time_point next_report_;                       // guarded by waiting_mu_
};

// The leader a standby named in its answer (coordinator/ha/standby_service.h: trailing metadata
// "tpcoord-leader"); "" if none.
std::string LeaderNamedIn(const grpc::ClientContext& ctx);
// The error context the coordinator gave a failed call (trailing metadata "tpcoord-context"); "" if none.
std::string ContextNamedIn(const grpc::ClientContext& ctx);

}  // namespace tpcoord

#endif  // TPCOORD_CLIENT_TARGETS_H_
