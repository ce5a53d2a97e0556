// The gRPC side of CoordinatorClient, behind its pimpl: the retry loop every call goes through, over the
// coordinators' channels (targets.h), and the requests and answers a call and a member session share.
// Internal to the client library; users include coordinator_client.h, which names none of this.
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
#include "client/coordinator_client.h"
#include "client/targets.h"
#include "tpcoord/v1/coordinator.grpc.pb.h"

namespace tpcoord {

struct CoordinatorClient::Impl {
  explicit Impl(ClientOptions options) : targets(std::move(options)) {}

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
  // Attempts until an answer, or while unreachable until `budget` has passed; `prepare` readies the request
  // for an attempt with `left` of the budget and returns the attempt's deadline.
  template <typename Request, typename Response>
  absl::Status Attempts(Method<Request, Response> method, Request& request, Response* response,
                        const std::string& member_key, bool idempotent, Millis budget,
                        const std::function<Millis(Request&, Millis)>& prepare);

  // The n-th barrier request of `name` in m's generation is its round n (BarrierRequest.round).
  v1::BarrierRequest BarrierRequestOf(const Membership& m, const std::string& name);

  Targets targets;  // the coordinators, their channels, credentials, and what waiting says
  const ClientOptions& options = targets.options;
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

}  // namespace tpcoord

#endif  // TPCOORD_CLIENT_CLIENT_RPC_H_
