// The gRPC side of CoordinatorClient, behind its pimpl: the channel, the stub and the retry loop that
// every call goes through. Internal to the client library (coordinator_client.cc, member_session.cc);
// users include coordinator_client.h, which names none of this.
#ifndef TPCOORD_CLIENT_CLIENT_RPC_H_
#define TPCOORD_CLIENT_CLIENT_RPC_H_

#include <chrono>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <tuple>
#include <vector>

#include <grpcpp/grpcpp.h>

#include "absl/status/status.h"
#include "tpcoord/v1/coordinator.grpc.pb.h"
#include "client/coordinator_client.h"

namespace tpcoord {

struct CoordinatorClient::Impl {
  explicit Impl(ClientOptions options);

  template <typename Request, typename Response>
  using Method = grpc::Status (v1::Coordinator::Stub::*)(grpc::ClientContext*, const Request&, Response*);

  // A call that answers at once: each attempt gets call_timeout; retried for `budget` while unreachable
  // (not at all unless `idempotent`). `member_key`: carried when the call acts as a member.
  template <typename Request, typename Response>
  absl::Status Call(Method<Request, Response> method, const Request& request, Response* response,
                    const std::string& member_key = "", bool idempotent = true,
                    std::optional<Millis> budget = std::nullopt);
  // A call that waits in the coordinator for up to `wait`, retried while unreachable within that time.
  template <typename Request, typename Response>
  absl::Status Wait(Method<Request, Response> method, Request request, Response* response, Millis wait,
                    const std::string& member_key);
  // Attempts until an answer, or until `give_up` while unreachable; `prepare` readies the request for an
  // attempt with `left` until give_up and returns the attempt's deadline.
  template <typename Request, typename Response>
  absl::Status Attempts(Method<Request, Response> method, Request& request, Response* response,
                        const std::string& member_key, bool idempotent, std::chrono::steady_clock::time_point give_up,
                        const std::function<Millis(Request&, Millis)>& prepare);

  // The n-th barrier request of `name` in m's generation is its round n (BarrierRequest.round).
  v1::BarrierRequest BarrierRequestOf(const Membership& m, const std::string& name);

  // Adds the token and `member_key` to a call.
  void AddCredentials(grpc::ClientContext* ctx, const std::string& member_key) const;

  // One coordinator of options.address (a comma-separated list: HA replicas).
  struct Target {
    std::string address;
    std::shared_ptr<grpc::Channel> channel;
    std::unique_ptr<v1::Coordinator::Stub> stub;
  };
  // The coordinator to call now: the leader, as far as this client knows.
  Target* Current();
  size_t TargetCount();
  // After a call on `used` failed for want of a coordinator: go to `leader` (a standby's answer names it
  // in its trailing metadata; it may be one this client was not given) or else to the next in the list.
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
  bool AwaitConnected(Target* target, std::chrono::steady_clock::time_point give_up);
  // What waiting calls and sessions report: a failed connection to `target` (tried since `since`), or one
  // that is up.
  void NoteUnreachable(Target* target, std::chrono::steady_clock::time_point since);
  void NoteReachable();
  // The transport's reason why `target` cannot be reached now ("" if it can), from a call that does not wait.
  std::string ProbeError(Target* target);

  const ClientOptions options;
  const bool replicas;  // options.address lists several coordinators
  std::mutex targets_mu;
  std::vector<std::unique_ptr<Target>> targets;  // never shrinks: a Target* stays valid
  size_t current = 0;
  std::mutex waiting_mu;
  std::optional<std::chrono::steady_clock::time_point> unreachable_since;  // guarded by waiting_mu
  std::chrono::steady_clock::time_point next_report;                       // guarded by waiting_mu
  std::mutex rounds_mu;
  std::map<std::tuple<std::string, uint64_t, std::string>, uint64_t> barrier_rounds;  // (job, generation, name)
};

// A wait as a request's wait_timeout_ms (at least 1: 0 would mean the coordinator's default).
uint32_t WaitMillis(Millis wait);

// The requests and answers of the rendezvous, the same on a unary call and on a member session.
v1::JoinRequest JoinRequestToProto(const JoinRequest& request);
absl::StatusOr<Membership> MembershipFrom(const std::string& job_id, const std::string& member_key,
                                          const v1::JoinResponse& resp);
v1::PublishUniqueIdRequest PublishRequestOf(const Membership& m, const UniqueIds& ids);
v1::GetUniqueIdRequest GetRequestOf(const Membership& m, const std::vector<GroupId>& groups);
absl::StatusOr<UniqueIds> UniqueIdsFrom(v1::GetUniqueIdResponse* resp);
v1::LeaveRequest LeaveRequestOf(const Membership& m, bool finished, const std::string& reason, bool fatal);
// The coordinator's error answer as a status; `context` (its "tpcoord-context") marks a DeepSpeed error.
absl::Status CoordinatorAnswer(int code, const std::string& message, const std::string& context);

// The leader a standby named in its answer (coordinator/standby_service.h: trailing metadata
// "tpcoord-leader"); "" if none.
std::string LeaderNamedIn(const grpc::ClientContext& ctx);

}  // namespace tpcoord

#endif  // TPCOORD_CLIENT_CLIENT_RPC_H_
