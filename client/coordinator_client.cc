#include "client/coordinator_client.h"

#include <unistd.h>

#include <algorithm>
#include <random>
#include <thread>

#include "grpc/health/v1/health.grpc.pb.h"

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "client/backoff.h"
#include "client/client_rpc.h"
#include "common/deepspeed_error.h"
#include "common/limits.h"
#include "common/secrets.h"
#include "common/wire.h"

namespace tpcoord {
namespace {

using Clock = std::chrono::steady_clock;

// At most `max` bytes of `text`, cut at a character boundary (the reason is a proto string: UTF-8).
std::string TruncateUtf8(const std::string& text, size_t max) {
  if (text.size() <= max) return text;
  size_t end = max;
  while (end > 0 && (static_cast<unsigned char>(text[end]) & 0xC0) == 0x80) --end;
  return text.substr(0, end);
}

}  // namespace

std::string MakeWorkerId(const std::string& host) {
  std::random_device random;
  return absl::StrCat(host, ":", getpid(), ":", absl::Hex(random(), absl::kZeroPad8));
}

namespace {

// Whether an attempt failed for want of a coordinator rather than because of its answer.
bool Unreachable(const grpc::Status& s, bool own_deadline) {
  switch (s.error_code()) {
    case grpc::StatusCode::UNAVAILABLE:
    case grpc::StatusCode::CANCELLED: return true;
    case grpc::StatusCode::DEADLINE_EXCEEDED: return own_deadline;
    default: return false;
  }
}

}  // namespace

CoordinatorClient::CoordinatorClient(ClientOptions options) : impl_(std::make_unique<Impl>(std::move(options))) {}

CoordinatorClient::~CoordinatorClient() = default;

const ClientOptions& CoordinatorClient::options() const { return impl_->options; }

absl::Status CoordinatorClient::WaitForConnected(Millis timeout) {
  const Clock::time_point deadline = Clock::now() + timeout;
  Targets::Target* target = impl_->targets.Current();
  if (impl_->targets.WaitForReady()) {
    if (impl_->targets.AwaitConnected(target, deadline)) return absl::OkStatus();
  } else {
    while (Clock::now() < deadline) {
      target = impl_->targets.Current();
      const Clock::time_point since = Clock::now();
      if (target->channel->WaitForConnected(std::chrono::system_clock::now() +
                                            std::min<Clock::duration>(deadline - Clock::now(), Millis(500)))) {
        impl_->targets.NoteReachable();
        return absl::OkStatus();
      }
      impl_->targets.NoteUnreachable(target, since);
      impl_->targets.Follow(target, "");
    }
  }
  return absl::UnavailableError(absl::StrCat(
      "cannot reach the coordinator at ", impl_->options.address, " within ", timeout.count(), " ms: ",
      DescribeTransportError(target->address, impl_->targets.ProbeError(target), impl_->options.credentials.tls())));
}

template <typename Request, typename Response>
absl::Status CoordinatorClient::Impl::Call(Method<Request, Response> method, const Request& request, Response* response,
                                           const std::string& member_key, bool idempotent,
                                           std::optional<Millis> budget) {
  Request copy = request;
  return Attempts<Request, Response>(method, copy, response, member_key, idempotent,
                                     budget.value_or(options.retry_budget),
                                     [this](Request&, Millis) { return options.call_timeout; });
}

template <typename Request, typename Response>
absl::Status CoordinatorClient::Impl::Wait(Method<Request, Response> method, Request request, Response* response,
                                           Millis wait, const std::string& member_key) {
  // Each attempt asks the coordinator to wait for what is left, and gives it room to answer.
  return Attempts<Request, Response>(method, request, response, member_key, /*idempotent=*/true, wait,
                                     [this](Request& r, Millis left) {
                                       r.set_wait_timeout_ms(WaitMillis(left));
                                       return left + options.wait_slack;
                                     });
}

template <typename Request, typename Response>
absl::Status CoordinatorClient::Impl::Attempts(Method<Request, Response> method, Request& request, Response* response,
                                               const std::string& member_key, bool idempotent, Millis budget,
                                               const std::function<Millis(Request&, Millis)>& prepare) {
  const Clock::time_point give_up = Clock::now() + budget;
  Backoff backoff(options.initial_backoff, options.max_backoff);
  int hops = 0;      // calls sent straight to a leader a standby named
  size_t tried = 1;  // coordinators tried since the last backoff
  for (bool first = true;; first = false) {
    // The first attempt asks for the whole wait ("timed out after 1s", not "after 999ms" on a busy machine);
    // a later one for what is left, rounded up.
    const Millis left = first ? budget : std::max(Millis(1), std::chrono::ceil<Millis>(give_up - Clock::now()));
    const Millis attempt = prepare(request, left);
    const Clock::time_point attempt_start = Clock::now();
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + attempt);
    ctx.set_wait_for_ready(targets.WaitForReady());  // a coordinator that is still starting is waited for
    targets.AddCredentials(&ctx, member_key);
    Targets::Target* target = targets.Current();
    if (targets.WaitForReady() && !targets.AwaitConnected(target, give_up)) {
      return absl::UnavailableError(
          absl::StrCat("cannot reach the coordinator at ", target->address, ": ",
                       DescribeTransportError(target->address, targets.ProbeError(target), options.credentials.tls())));
    }
    const grpc::Status s = targets.Reachable(target)
                               ? (target->stub.get()->*method)(&ctx, request, response)
                               : grpc::Status(grpc::StatusCode::UNAVAILABLE,
                                              absl::StrCat("cannot connect to the coordinator at ", target->address));
    if (s.ok()) return absl::OkStatus();
    // The client's own deadline, not the coordinator's answer (which always names what it waited for).
    const bool own_deadline =
        s.error_code() == grpc::StatusCode::DEADLINE_EXCEEDED && s.error_message() == "Deadline Exceeded";
    absl::Status status(static_cast<absl::StatusCode>(s.error_code()), s.error_message());
    if (own_deadline) {
      status = absl::DeadlineExceededError(
          absl::StrCat("no answer from the coordinator at ", target->address, " within ", attempt.count(), " ms"));
    }
    for (const auto& [key, value] : ctx.GetServerTrailingMetadata()) {
      if (key == "tpcoord-context")
        status = CoordinatorAnswer(s.error_code(), s.error_message(), std::string(value.data(), value.size()));
    }
    // A standby refused the call without acting on it: even a call that is not idempotent goes to the leader.
    const std::string leader = s.error_code() == grpc::StatusCode::UNAVAILABLE ? LeaderNamedIn(ctx) : "";
    if (!Unreachable(s, own_deadline) || !(idempotent || !leader.empty())) return status;
    if (leader.empty()) targets.NoteUnreachable(target, attempt_start);
    targets.Follow(target, leader);
    // Straight to the leader a standby named (unless standbys disagree), and to every other replica once,
    // whatever is left of the budget; then back off.
    if (!leader.empty() ? hops++ < 2 : tried++ < targets.TargetCount()) continue;
    if (Clock::now() + backoff.bound() >= give_up) return status;
    std::this_thread::sleep_for(backoff.Next());
    tried = 1;
  }
}

absl::StatusOr<TpInitRecord> CoordinatorClient::RecordTpInitArgs(const std::string& job_id, const TpInitArgs& args,
                                                                 bool* created) {
  v1::RecordTpInitArgsRequest req;
  req.set_job_id(job_id);
  req.set_tp_size(args.tp_size);
  req.set_dtype(DtypeToProto(args.dtype));
  if (args.tp_group) req.mutable_tp_group()->mutable_ranks()->Add(args.tp_group->begin(), args.tp_group->end());
  v1::RecordTpInitArgsResponse resp;
  if (absl::Status s = impl_->Call(&v1::Coordinator::Stub::RecordTpInitArgs, req, &resp); !s.ok()) {
    return s;
  }
  if (created) *created = resp.created();
  const v1::TpInitArgs& r = resp.recorded();
  absl::StatusOr<Dtype> dtype = DtypeFromProto(r.dtype());
  if (!dtype.ok()) return dtype.status();
  TpInitRecord record{r.tp_size(), *dtype, r.has_tp_group(), {}};
  for (const v1::RankList& group : r.tp_groups())
    record.tp_groups.emplace_back(group.ranks().begin(), group.ranks().end());
  return record;
}

absl::StatusOr<std::string> CoordinatorClient::MergeConfig(const std::string& job_id, const std::string& config_json,
                                                           bool has_mpu) {
  v1::MergeConfigRequest req;
  req.set_job_id(job_id);
  req.set_config_json(config_json);
  req.set_has_mpu(has_mpu);
  v1::MergeConfigResponse resp;
  if (absl::Status s = impl_->Call(&v1::Coordinator::Stub::MergeConfig, req, &resp); !s.ok()) return s;
  return std::move(*resp.mutable_merged_config_json());
}

absl::StatusOr<std::string> CoordinatorClient::MergeConfig(const Membership& m, const std::string& config_json,
                                                           bool has_mpu) {
  v1::MergeConfigRequest req;
  req.set_job_id(m.job_id);
  req.set_config_json(config_json);
  req.set_has_mpu(has_mpu);
  req.set_generation(m.generation);
  req.set_rank(m.rank);
  v1::MergeConfigResponse resp;
  if (absl::Status s = impl_->Call(&v1::Coordinator::Stub::MergeConfig, req, &resp, m.member_key); !s.ok()) return s;
  return std::move(*resp.mutable_merged_config_json());
}

uint32_t WaitMillis(Millis wait) { return static_cast<uint32_t>(std::clamp<int64_t>(wait.count(), 1, UINT32_MAX)); }

v1::JoinRequest JoinRequestToProto(const JoinRequest& request) {
  v1::JoinRequest req;
  req.set_job_id(request.job_id);
  req.set_worker_id(request.worker_id);
  req.set_host(request.host);
  req.set_world_size(request.world_size);
  req.set_min_world_size(request.min_world_size);
  req.set_rejoin_timeout_ms(static_cast<uint32_t>(request.rejoin_timeout.count()));
  if (request.requested_rank) req.set_requested_rank(*request.requested_rank);
  req.set_tp_size(request.tp_size);
  return req;
}

absl::StatusOr<Membership> MembershipFrom(const std::string& job_id, const std::string& member_key,
                                          const v1::JoinResponse& resp) {
  absl::StatusOr<Mesh> mesh = Mesh::Create(resp.mesh().world_size(), resp.mesh().tp_size());
  if (!mesh.ok())
    return absl::InternalError(absl::StrCat("the coordinator answered an invalid mesh: ", mesh.status().message()));
  return Membership{job_id,
                    resp.generation(),
                    resp.rank(),
                    member_key,
                    *mesh,
                    Millis(resp.heartbeat_interval_ms()),
                    Millis(resp.lease_ms())};
}

v1::PublishUniqueIdRequest PublishRequestOf(const Membership& m, const UniqueIds& ids) {
  v1::PublishUniqueIdRequest req;
  req.set_job_id(m.job_id);
  req.set_generation(m.generation);
  req.set_rank(m.rank);
  for (const auto& [slot, bytes] : ids) {
    v1::UniqueId* id = req.add_ids();
    *id->mutable_group() = GroupIdToProto(slot.group);
    id->set_root(slot.root);
    id->set_id(bytes);
  }
  return req;
}

v1::GetUniqueIdRequest GetRequestOf(const Membership& m, const std::vector<GroupId>& groups) {
  v1::GetUniqueIdRequest req;
  req.set_job_id(m.job_id);
  req.set_generation(m.generation);
  req.set_rank(m.rank);
  for (const GroupId& group : groups) *req.add_groups() = GroupIdToProto(group);
  return req;
}

absl::StatusOr<UniqueIds> UniqueIdsFrom(v1::GetUniqueIdResponse* resp) {
  UniqueIds ids;
  for (v1::UniqueId& id : *resp->mutable_ids()) {
    absl::StatusOr<GroupId> group = GroupIdFromProto(id.group(), "ids.group");
    if (!group.ok()) return absl::InternalError(absl::StrCat("the coordinator answered ", group.status().message()));
    ids.push_back({{*group, id.root()}, std::move(*id.mutable_id())});
  }
  return ids;
}

v1::BarrierRequest CoordinatorClient::Impl::BarrierRequestOf(const Membership& m, const std::string& name) {
  v1::BarrierRequest req;
  req.set_job_id(m.job_id);
  req.set_generation(m.generation);
  req.set_rank(m.rank);
  req.set_name(name);
  std::lock_guard<std::mutex> lock(rounds_mu);
  req.set_round(++barrier_rounds[{m.job_id, m.generation, name}]);
  return req;
}

v1::LeaveRequest LeaveRequestOf(const Membership& m, bool finished, const std::string& reason, bool fatal) {
  v1::LeaveRequest req;
  req.set_job_id(m.job_id);
  req.set_generation(m.generation);
  req.set_rank(m.rank);
  req.set_finished(finished);
  req.set_reason(TruncateUtf8(reason, kMaxReasonBytes));
  req.set_fatal(fatal);
  return req;
}

absl::Status CoordinatorAnswer(int code, const std::string& message, const std::string& context) {
  absl::Status status(static_cast<absl::StatusCode>(code), message);
  // Only DeepSpeed's conflict errors carry a context line: keep them recognisable as such, text exact.
  if (!context.empty()) {
    status = DeepSpeedError(status.message());
    SetErrorContext(&status, context);
  }
  return status;
}

absl::StatusOr<Membership> CoordinatorClient::Join(const JoinRequest& request, Millis wait) {
  const std::string member_key = request.member_key.empty() ? RandomSecret() : request.member_key;
  v1::JoinResponse resp;
  if (absl::Status s = impl_->Wait(&v1::Coordinator::Stub::Join, JoinRequestToProto(request), &resp, wait, member_key);
      !s.ok()) {
    return s;
  }
  return MembershipFrom(request.job_id, member_key, resp);
}

absl::Status CoordinatorClient::PublishUniqueIds(const Membership& m, const UniqueIds& ids) {
  v1::PublishUniqueIdResponse resp;
  return impl_->Call(&v1::Coordinator::Stub::PublishUniqueId, PublishRequestOf(m, ids), &resp, m.member_key);
}

absl::StatusOr<UniqueIds> CoordinatorClient::GetUniqueIds(const Membership& m, const std::vector<GroupId>& groups,
                                                          Millis wait) {
  v1::GetUniqueIdResponse resp;
  if (absl::Status s =
          impl_->Wait(&v1::Coordinator::Stub::GetUniqueId, GetRequestOf(m, groups), &resp, wait, m.member_key);
      !s.ok()) {
    return s;
  }
  return UniqueIdsFrom(&resp);
}

namespace {

// Every store request names the member's job and generation.
template <typename Request>
Request StoreRequest(const Membership& m) {
  Request req;
  req.set_job_id(m.job_id);
  req.set_generation(m.generation);
  return req;
}

}  // namespace

absl::Status CoordinatorClient::StoreSet(const Membership& m, const std::string& key, const std::string& value) {
  auto req = StoreRequest<v1::StoreSetRequest>(m);
  req.set_key(key);
  req.set_value(value);
  v1::StoreSetResponse resp;
  return impl_->Call(&v1::Coordinator::Stub::StoreSet, req, &resp, m.member_key);
}

absl::StatusOr<std::string> CoordinatorClient::StoreGet(const Membership& m, const std::string& key, Millis wait) {
  auto req = StoreRequest<v1::StoreGetRequest>(m);
  req.set_key(key);
  v1::StoreGetResponse resp;
  if (absl::Status s = impl_->Wait(&v1::Coordinator::Stub::StoreGet, req, &resp, wait, m.member_key); !s.ok()) return s;
  return std::move(*resp.mutable_value());
}

absl::StatusOr<int64_t> CoordinatorClient::StoreAdd(const Membership& m, const std::string& key, int64_t delta) {
  auto req = StoreRequest<v1::StoreAddRequest>(m);
  req.set_key(key);
  req.set_delta(delta);
  v1::StoreAddResponse resp;
  if (absl::Status s = impl_->Call(&v1::Coordinator::Stub::StoreAdd, req, &resp, m.member_key, /*idempotent=*/false);
      !s.ok()) {
    return s;
  }
  return resp.value();
}

absl::StatusOr<std::string> CoordinatorClient::StoreCompareSet(const Membership& m, const std::string& key,
                                                               const std::string& expected,
                                                               const std::string& desired) {
  auto req = StoreRequest<v1::StoreCompareSetRequest>(m);
  req.set_key(key);
  req.set_expected_value(expected);
  req.set_desired_value(desired);
  v1::StoreCompareSetResponse resp;
  if (absl::Status s = impl_->Call(&v1::Coordinator::Stub::StoreCompareSet, req, &resp, m.member_key); !s.ok())
    return s;
  return std::move(*resp.mutable_value());
}

absl::StatusOr<bool> CoordinatorClient::StoreCheck(const Membership& m, const std::vector<std::string>& keys) {
  auto req = StoreRequest<v1::StoreCheckRequest>(m);
  for (const std::string& key : keys) req.add_keys(key);
  v1::StoreCheckResponse resp;
  if (absl::Status s = impl_->Call(&v1::Coordinator::Stub::StoreCheck, req, &resp, m.member_key); !s.ok()) return s;
  return resp.all_present();
}

absl::StatusOr<bool> CoordinatorClient::StoreDelete(const Membership& m, const std::string& key) {
  auto req = StoreRequest<v1::StoreDeleteRequest>(m);
  req.set_key(key);
  v1::StoreDeleteResponse resp;
  if (absl::Status s = impl_->Call(&v1::Coordinator::Stub::StoreDelete, req, &resp, m.member_key); !s.ok()) return s;
  return resp.deleted();
}

absl::StatusOr<int64_t> CoordinatorClient::StoreNumKeys(const Membership& m) {
  auto req = StoreRequest<v1::StoreNumKeysRequest>(m);
  v1::StoreNumKeysResponse resp;
  if (absl::Status s = impl_->Call(&v1::Coordinator::Stub::StoreNumKeys, req, &resp, m.member_key); !s.ok()) return s;
  return resp.num_keys();
}

absl::Status CoordinatorClient::StoreWait(const Membership& m, const std::vector<std::string>& keys, Millis wait) {
  auto req = StoreRequest<v1::StoreWaitRequest>(m);
  for (const std::string& key : keys) req.add_keys(key);
  v1::StoreWaitResponse resp;
  return impl_->Wait(&v1::Coordinator::Stub::StoreWait, req, &resp, wait, m.member_key);
}

absl::Status CoordinatorClient::Barrier(const Membership& m, const std::string& name, Millis wait) {
  v1::BarrierResponse resp;
  return impl_->Wait(&v1::Coordinator::Stub::Barrier, impl_->BarrierRequestOf(m, name), &resp, wait, m.member_key);
}

absl::StatusOr<Millis> CoordinatorClient::Heartbeat(const Membership& m) {
  v1::HeartbeatRequest req;
  req.set_job_id(m.job_id);
  req.set_generation(m.generation);
  req.set_rank(m.rank);
  v1::HeartbeatResponse resp;
  // One attempt: callers that beat (tests, tools) retry themselves.
  if (absl::Status s =
          impl_->Call(&v1::Coordinator::Stub::Heartbeat, req, &resp, m.member_key, /*idempotent=*/true, Millis(0));
      !s.ok()) {
    return s;
  }
  return Millis(resp.lease_ms());
}

absl::Status CoordinatorClient::Leave(const Membership& m, bool finished, const std::string& reason, bool fatal) {
  v1::LeaveResponse resp;
  return impl_->Call(&v1::Coordinator::Stub::Leave, LeaveRequestOf(m, finished, reason, fatal), &resp, m.member_key);
}

absl::StatusOr<v1::JobStatus> CoordinatorClient::GetJob(const std::string& job_id) {
  v1::GetJobRequest req;
  req.set_job_id(job_id);
  v1::GetJobResponse resp;
  if (absl::Status s = impl_->Call(&v1::Coordinator::Stub::GetJob, req, &resp); !s.ok()) return s;
  return std::move(*resp.mutable_job());
}

absl::Status CoordinatorClient::CreateJob(const std::string& job_id, const std::string& job_token) {
  v1::CreateJobRequest req;
  req.set_job_id(job_id);
  req.set_job_token(job_token);
  v1::CreateJobResponse resp;
  return impl_->Call(&v1::Coordinator::Stub::CreateJob, req, &resp);
}

absl::Status CoordinatorClient::DeleteJob(const std::string& job_id, bool force) {
  v1::DeleteJobRequest req;
  req.set_job_id(job_id);
  req.set_force(force);
  v1::DeleteJobResponse resp;
  return impl_->Call(&v1::Coordinator::Stub::DeleteJob, req, &resp);
}

absl::Status CoordinatorClient::CloseJob(const std::string& job_id, const std::string& reason) {
  v1::CloseJobRequest req;
  req.set_job_id(job_id);
  req.set_reason(reason);
  v1::CloseJobResponse resp;
  return impl_->Call(&v1::Coordinator::Stub::CloseJob, req, &resp);
}

absl::StatusOr<std::vector<v1::JobStatus>> CoordinatorClient::ListJobs() {
  std::vector<v1::JobStatus> jobs;
  v1::ListJobsRequest req;
  req.set_page_size(500);
  do {
    v1::ListJobsResponse resp;
    if (absl::Status s = impl_->Call(&v1::Coordinator::Stub::ListJobs, req, &resp); !s.ok()) return s;
    for (v1::JobStatus& job : *resp.mutable_jobs()) jobs.push_back(std::move(job));
    req.set_page_token(resp.next_page_token());
  } while (!req.page_token().empty());
  return jobs;
}

absl::StatusOr<bool> CoordinatorClient::Serving() {
  // With HA replicas, whether one of them serves (the leader; standbys report NOT_SERVING).
  absl::StatusOr<bool> answer = absl::UnavailableError("no coordinator given");
  for (size_t i = 0, n = impl_->targets.TargetCount(); i < n; ++i) {
    Targets::Target* target = impl_->targets.Current();
    auto health = grpc::health::v1::Health::NewStub(target->channel);
    grpc::health::v1::HealthCheckResponse resp;
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + impl_->options.call_timeout);
    ctx.set_wait_for_ready(impl_->targets.WaitForReady());
    impl_->targets.AddCredentials(&ctx, "");
    const grpc::Status s = impl_->targets.Reachable(target)
                               ? health->Check(&ctx, grpc::health::v1::HealthCheckRequest(), &resp)
                               : grpc::Status(grpc::StatusCode::UNAVAILABLE,
                                              absl::StrCat("cannot connect to the coordinator at ", target->address));
    if (s.ok() && resp.status() == grpc::health::v1::HealthCheckResponse::SERVING) return true;
    if (s.ok()) {
      answer = false;
    } else if (!answer.ok()) {
      answer = absl::Status(static_cast<absl::StatusCode>(s.error_code()), s.error_message());
    }
    impl_->targets.Follow(target, "");
  }
  return answer;
}

}  // namespace tpcoord
