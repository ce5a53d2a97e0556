// A typed client of the tp-coordinator for workers (and tools). No LibTorch in here.
//
// Every call has a deadline. While the coordinator cannot be reached (starting, restarting after kill -9,
// stopping with SIGTERM, briefly unreachable), a call is retried with exponential backoff and full jitter
// until its retry budget (the worker's --timeout) is spent: UNAVAILABLE, CANCELLED (this client never
// cancels its own calls, so that came from a connection or server going away) and an attempt that got no
// answer within its own deadline are retried; every answer the coordinator gives is final. Retries are
// safe because the coordinator makes them so (see coordinator.proto); StoreAdd, which is not idempotent, is
// the one call never retried. The channel reconnects within about a second of the coordinator coming back.
// Calls that wait in the coordinator (Join, GetUniqueIds, StoreGet, StoreWait, Barrier) pass what is left
// of their wait to the coordinator on every attempt and set the gRPC deadline a little later, so that a
// timeout arrives as the coordinator's DEADLINE_EXCEEDED naming what is missing.
//
// Credentials (README "Security"): every call carries the client's token; calls that act as a member carry
// that membership's member key, drawn at random for each Join unless the caller brings its own.
//
// Thread-safe: one client may serve a worker's main thread, its heartbeat thread and a c10d store.
#ifndef TPCOORD_WORKER_COORDINATOR_CLIENT_H_
#define TPCOORD_WORKER_COORDINATOR_CLIENT_H_

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <tuple>
#include <utility>
#include <vector>

#include <grpcpp/grpcpp.h>

#include "absl/status/statusor.h"
#include "common/mesh.h"
#include "common/tp_init_args.h"
#include "tpcoord/v1/coordinator.grpc.pb.h"

namespace tpcoord {

using Millis = std::chrono::milliseconds;

// How a client proves who it is, and checks that it talks to the real coordinator.
struct ClientCredentials {
  std::string token;     // the job's bearer token (tpctl: the job's or the admin's); "" none
  std::string tls_ca;    // PEM of the CA that signed the coordinator's certificate
  std::string tls_cert;  // PEM of this client's certificate, for mutual TLS (with tls_key)
  std::string tls_key;
  // TLS when any of the three is given (with no CA, the system's roots verify the coordinator).
  bool tls() const { return !tls_ca.empty() || !tls_cert.empty() || !tls_key.empty(); }
};

// Where credentials come from: files named by flags (each may be empty), else the environment:
// TPCOORD_TLS_CA, TPCOORD_TLS_CERT, TPCOORD_TLS_KEY (file paths), TPCOORD_TOKEN_FILE, or TPCOORD_TOKEN (the
// token itself). NOT_FOUND / INVALID_ARGUMENT naming the file or variable that is wrong.
struct CredentialFiles {
  std::string tls_ca, tls_cert, tls_key, token;
};
absl::StatusOr<ClientCredentials> LoadClientCredentials(const CredentialFiles& files);
// TLS (verifying the coordinator, presenting the client's certificate if any) or plaintext.
std::shared_ptr<grpc::ChannelCredentials> ChannelCredentialsFor(const ClientCredentials& credentials);

struct ClientOptions {
  std::string address = "127.0.0.1:50051";
  ClientCredentials credentials;
  Millis call_timeout{10000};      // deadline of each attempt of a call that does not wait
  Millis retry_budget{60000};      // how long an unreachable coordinator is retried, per call
  Millis initial_backoff{50};
  Millis max_backoff{1000};        // also caps gRPC's reconnect backoff
  Millis wait_slack{5000};         // gRPC deadline beyond a parked call's wait
};

// What Join answers a worker: its place in one generation of the job, and the key that proves it.
struct Membership {
  std::string job_id;
  uint64_t generation = 0;
  int rank = 0;
  std::string member_key;  // the secret the seat is bound to; carried by every call made as this member
  Mesh mesh;
  Millis heartbeat_interval{0};
  Millis lease{0};

  int world_size() const { return mesh.world_size(); }
  int tp_rank() const { return mesh.tp_rank(rank); }
  int dp_rank() const { return mesh.dp_rank(rank); }
  GroupId tp_group() const { return mesh.tp_group_of(rank); }
  GroupId dp_group() const { return mesh.dp_group_of(rank); }
};

struct JoinRequest {
  std::string job_id;
  std::string worker_id;
  std::string host;
  int world_size = 0;
  std::optional<int> requested_rank;
  int tp_size = 0;  // 0: the recorded tp_size
  std::string member_key;  // this worker's secret (16-1024 visible ASCII); "": a fresh random one
  int min_world_size = 0;  // 0: world_size; see coordinator.proto
  Millis rejoin_timeout{0};
};

class CoordinatorClient {
 public:
  explicit CoordinatorClient(ClientOptions options);
  // For tests and benchmarks that manage channels themselves.
  CoordinatorClient(std::shared_ptr<grpc::Channel> channel, ClientOptions options);

  const ClientOptions& options() const { return options_; }

  // Waits until the connection to the coordinator is up: UNAVAILABLE naming the address after `timeout`.
  absl::Status WaitForConnected(Millis timeout);

  absl::StatusOr<TpInitRecord> RecordTpInitArgs(const std::string& job_id, const TpInitArgs& args);
  // A dry run against the job's record: returns the merged config JSON, changes nothing.
  absl::StatusOr<std::string> MergeConfig(const std::string& job_id, const std::string& config_json, bool has_mpu);
  // The member's merge: its config must agree with the generation's first one. Returns the merged config.
  absl::StatusOr<std::string> MergeConfig(const Membership& m, const std::string& config_json, bool has_mpu);
  absl::StatusOr<Membership> Join(const JoinRequest& request, Millis wait);

  absl::Status PublishUniqueIds(const Membership& m, const std::vector<std::pair<GroupId, std::string>>& ids);
  // The IDs of `groups`, in order, once their leaders published them.
  absl::StatusOr<std::vector<std::string>> GetUniqueIds(const Membership& m, const std::vector<GroupId>& groups,
                                                        Millis wait);

  // The generation's key-value store, as member `m`.
  absl::Status StoreSet(const Membership& m, const std::string& key, const std::string& value);
  absl::StatusOr<std::string> StoreGet(const Membership& m, const std::string& key, Millis wait);
  absl::StatusOr<int64_t> StoreAdd(const Membership& m, const std::string& key, int64_t delta);
  absl::StatusOr<std::string> StoreCompareSet(const Membership& m, const std::string& key,
                                              const std::string& expected, const std::string& desired);
  absl::StatusOr<bool> StoreCheck(const Membership& m, const std::vector<std::string>& keys);
  absl::StatusOr<bool> StoreDelete(const Membership& m, const std::string& key);
  absl::StatusOr<int64_t> StoreNumKeys(const Membership& m);
  absl::Status StoreWait(const Membership& m, const std::vector<std::string>& keys, Millis wait);

  // Every rank's n-th call with `name` in a generation is round n of that barrier; a retry of a round that
  // already completed returns at once.
  absl::Status Barrier(const Membership& m, const std::string& name, Millis wait);
  absl::StatusOr<Millis> Heartbeat(const Membership& m);
  // `fatal`: see LeaveRequest.fatal.
  absl::Status Leave(const Membership& m, bool finished, const std::string& reason, bool fatal = false);
  absl::StatusOr<v1::JobStatus> GetJob(const std::string& job_id);

 private:
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

  friend class MemberSession;
  // Adds the token and `member_key` to a call.
  void AddCredentials(grpc::ClientContext* ctx, const std::string& member_key) const;

  ClientOptions options_;
  std::shared_ptr<grpc::Channel> channel_;
  std::unique_ptr<v1::Coordinator::Stub> stub_;
  std::mutex rounds_mu_;
  std::map<std::tuple<std::string, uint64_t, std::string>, uint64_t> barrier_rounds_;  // (job, generation, name)
};

// A membership's session (coordinator.proto, Session), held by a background thread: a heartbeat every
// heartbeat_interval up one stream, and the generation's end pushed down it the moment the coordinator
// decides it. Calls `on_lost` once, from that thread, when the coordinator ends the session (ABORTED naming
// the rank that failed; NOT_FOUND for a deleted job; FAILED_PRECONDITION for a stale generation), or when
// it has been unreachable for the client's whole retry budget, and stops. A coordinator that restarts within
// the budget is not a loss: the session is opened again and the generation goes on. While the session is
// open, this process's death ends the generation at once, naming its rank.
class MemberSession {
 public:
  MemberSession(CoordinatorClient* client, Membership membership, std::function<void(absl::Status)> on_lost);
  ~MemberSession();  // closes the session (call Leave first, or the coordinator takes it for a death)
  MemberSession(const MemberSession&) = delete;
  MemberSession& operator=(const MemberSession&) = delete;

 private:
  void Run();
  // One stream, until it ends: its final status (OK once stopping).
  grpc::Status Stream(bool* opened);

  CoordinatorClient* const client_;
  const Membership membership_;
  const std::function<void(absl::Status)> on_lost_;
  std::mutex mu_;
  std::condition_variable wake_;
  bool stopping_ = false;
  grpc::ClientContext* stream_ctx_ = nullptr;  // the open stream's, while there is one
  std::thread thread_;  // last
};

// "host:pid:nonce", unique per process.
std::string MakeWorkerId(const std::string& host);

}  // namespace tpcoord

#endif  // TPCOORD_WORKER_COORDINATOR_CLIENT_H_
