// The gRPC side of CoordinatorClient, behind its pimpl: the channel, the stub and the retry loop that
// every call goes through. Internal to the client library (coordinator_client.cc, member_session.cc);
// users include coordinator_client.h, which names none of this.
#ifndef TPCOORD_WORKER_CLIENT_CLIENT_RPC_H_
#define TPCOORD_WORKER_CLIENT_CLIENT_RPC_H_

#include <chrono>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <tuple>

#include <grpcpp/grpcpp.h>

#include "absl/status/status.h"
#include "tpcoord/v1/coordinator.grpc.pb.h"
#include "worker/client/coordinator_client.h"

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

  // Adds the token and `member_key` to a call.
  void AddCredentials(grpc::ClientContext* ctx, const std::string& member_key) const;

  const ClientOptions options;
  const std::shared_ptr<grpc::Channel> channel;
  const std::unique_ptr<v1::Coordinator::Stub> stub;
  std::mutex rounds_mu;
  std::map<std::tuple<std::string, uint64_t, std::string>, uint64_t> barrier_rounds;  // (job, generation, name)
};

}  // namespace tpcoord

#endif  // TPCOORD_WORKER_CLIENT_CLIENT_RPC_H_
