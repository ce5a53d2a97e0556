// A typed client of the tp-coordinator, for tp-worker, tpctl and anything else that talks to it. Its
// public headers name no gRPC, LibTorch or NCCL type: the gRPC stub lives behind a pimpl (client_rpc.h),
// so a user of this library compiles against absl and the protocol's plain messages only.
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
// Errors keep the coordinator's code and message; DeepSpeed's conflict texts stay exact and carry the
// job context line (common/deepspeed_error.h, ErrorContext).
//
// Credentials (README "Security"): every call carries the client's token; calls that act as a member carry
// that membership's member key, drawn at random for each Join unless the caller brings its own.
//
// Thread-safe: one client may serve a worker's main thread, its member session and a c10d store.
#ifndef TPCOORD_CLIENT_COORDINATOR_CLIENT_H_
#define TPCOORD_CLIENT_COORDINATOR_CLIENT_H_

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "client/credentials.h"
#include "common/mesh.h"
#include "common/tp_init_args.h"
#include "tpcoord/v1/coordinator.pb.h"  // the protocol's messages, as views of jobs (no gRPC in it)

namespace tpcoord {

using Millis = std::chrono::milliseconds;

struct ClientOptions {
  std::string address = "127.0.0.1:50051";
  ClientCredentials credentials;
  Millis call_timeout{10000};  // deadline of each attempt of a call that does not wait
  Millis retry_budget{60000};  // how long an unreachable coordinator is retried, per call
  Millis initial_backoff{50};
  Millis max_backoff{1000};  // also caps gRPC's reconnect backoff
  Millis wait_slack{5000};   // gRPC deadline beyond a parked call's wait
  // A worker waits for a coordinator that is not up yet (each attempt until its deadline). A tool asking
  // once (tpctl) sets false: an unreachable coordinator is reported at once, with gRPC's reason (a refused
  // connection, a failed TLS handshake), as UNAVAILABLE.
  bool wait_for_ready = true;
  // While calls wait for a coordinator they cannot reach, one line about every 10 s (the first after 5 s):
  // the address, how long, and what the transport says, in words ("nothing listens there", "an HTTP
  // server answers there, not a tpcoord coordinator"). Default: to stderr.
  std::function<void(const std::string&)> log_waiting;
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
  int tp_size = 0;         // 0: the recorded tp_size
  std::string member_key;  // this worker's secret (16-1024 visible ASCII); "": a fresh random one
  int min_world_size = 0;  // 0: world_size; see coordinator.proto
  Millis rejoin_timeout{0};
};

class CoordinatorClient {
 public:
  explicit CoordinatorClient(ClientOptions options);
  ~CoordinatorClient();
  CoordinatorClient(const CoordinatorClient&) = delete;
  CoordinatorClient& operator=(const CoordinatorClient&) = delete;

  const ClientOptions& options() const;

  // Waits until the connection to the coordinator is up: UNAVAILABLE naming the address after `timeout`.
  absl::Status WaitForConnected(Millis timeout);

  // --- a job's TP init args and config (tp_model_init; tpctl record / merge) ---
  // `created`: set to whether this call made the record (false: it matched the one there).
  absl::StatusOr<TpInitRecord> RecordTpInitArgs(const std::string& job_id, const TpInitArgs& args,
                                                bool* created = nullptr);
  // A dry run against the job's record: returns the merged config JSON, changes nothing.
  absl::StatusOr<std::string> MergeConfig(const std::string& job_id, const std::string& config_json, bool has_mpu);

  // --- membership (tp-worker) ---
  absl::StatusOr<Membership> Join(const JoinRequest& request, Millis wait);
  // The member's merge: its config must agree with the generation's first one. Returns the merged config.
  absl::StatusOr<std::string> MergeConfig(const Membership& m, const std::string& config_json, bool has_mpu);

  absl::Status PublishUniqueIds(const Membership& m, const UniqueIds& ids);
  // The IDs of `groups`, in order, each group's roots in root order, once all their roots published them.
  absl::StatusOr<UniqueIds> GetUniqueIds(const Membership& m, const std::vector<GroupId>& groups, Millis wait);

  // The generation's key-value store, as member `m`.
  absl::Status StoreSet(const Membership& m, const std::string& key, const std::string& value);
  absl::StatusOr<std::string> StoreGet(const Membership& m, const std::string& key, Millis wait);
  absl::StatusOr<int64_t> StoreAdd(const Membership& m, const std::string& key, int64_t delta);
  absl::StatusOr<std::string> StoreCompareSet(const Membership& m, const std::string& key, const std::string& expected,
                                              const std::string& desired);
  absl::StatusOr<bool> StoreCheck(const Membership& m, const std::vector<std::string>& keys);
  absl::StatusOr<bool> StoreDelete(const Membership& m, const std::string& key);
  absl::StatusOr<int64_t> StoreNumKeys(const Membership& m);
  absl::Status StoreWait(const Membership& m, const std::vector<std::string>& keys, Millis wait);

  // Every rank's n-th call with `name` in a generation is round n of that barrier; a retry of a round that
  // already completed returns at once.
  absl::Status Barrier(const Membership& m, const std::string& name, Millis wait);
  // One unary heartbeat (tools and tests; a worker beats on its MemberSession).
  absl::StatusOr<Millis> Heartbeat(const Membership& m);
  // `fatal`: see LeaveRequest.fatal.
  absl::Status Leave(const Membership& m, bool finished, const std::string& reason, bool fatal = false);

  // --- jobs (tpctl; the admin token or the job's) ---
  // `job_token`: the token the job's workers will carry; "" the caller's.
  absl::Status CreateJob(const std::string& job_id, const std::string& job_token);
  // `force`: also a job whose generation is running (its workers are told it ended).
  absl::Status DeleteJob(const std::string& job_id, bool force);
  // No new generation starts in the job from now on (torchrun's set_closed); `reason` may be "".
  absl::Status CloseJob(const std::string& job_id, const std::string& reason);
  absl::StatusOr<v1::JobStatus> GetJob(const std::string& job_id);
  // Every job the caller may see, a page at a time underneath.
  absl::StatusOr<std::vector<v1::JobStatus>> ListJobs();
  // The coordinator's gRPC health status: true when it serves (false while it drains, or as an HA standby);
  // with several addresses, true when one of them serves.
  absl::StatusOr<bool> Serving();

  // The client library's own parts (MemberSession) reach the channels through this; opaque to everyone
  // else (client_rpc.h is internal).
  struct Impl;
  Impl* impl() const { return impl_.get(); }

 private:
  std::unique_ptr<Impl> impl_;
};

// What a gRPC transport error (a failed connection or handshake) means to someone who typed `address`: the
// cause in words, then gRPC's own text. `tls`: whether the client speaks TLS.
std::string DescribeTransportError(const std::string& address, const std::string& error, bool tls);

// "host:pid:nonce", unique per process.
std::string MakeWorkerId(const std::string& host);

}  // namespace tpcoord

#endif  // TPCOORD_CLIENT_COORDINATOR_CLIENT_H_
