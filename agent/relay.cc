#include "agent/relay.h"

#include <grpcpp/generic/generic_stub.h>
#include <grpcpp/support/proto_buffer_reader.h>
#include <grpcpp/support/proto_buffer_writer.h>

#include <algorithm>
#include <deque>
#include <utility>

#include "absl/strings/str_cat.h"
#include "common/secrets.h"

namespace tpcoord {
namespace {

constexpr char kSessionMethod[] = "/tpcoord.v1.Coordinator/Session";
constexpr char kStoreGetMethod[] = "/tpcoord.v1.Coordinator/StoreGet";
constexpr auto kBarrierHold = std::chrono::seconds(1);  // the longest a barrier arrival is held

// Whether a session call is a barrier arrival and nothing else.
bool IsBarrierArrival(const v1::SessionRequest& m) {
  return m.call_id() != 0 && m.has_barrier() && !m.has_record() && !m.has_join() && !m.has_merge_config() &&
         !m.has_publish_unique_id() && !m.has_get_unique_id() && !m.has_leave() && !m.has_progress();
}

// A unary call, relayed: read the request, call upstream with it as the agent, answer what came back.
class UnaryRelay final : public grpc::ServerGenericBidiReactor {
 public:
  static UnaryRelay* Start(grpc::GenericCallbackServerContext* ctx, Relay* relay) {
    auto call = std::shared_ptr<UnaryRelay>(new UnaryRelay(ctx, relay));
    call->self_ = call;
    call->StartRead(&call->request_);
    return call.get();
  }

  void OnReadDone(bool ok) override {
    if (!ok) return Reply(grpc::Status(grpc::StatusCode::INVALID_ARGUMENT, "the call carried no request"), {}, "");
    if (ctx_->method() == kStoreGetMethod) {
      std::weak_ptr<UnaryRelay> weak = self_;
      shared_ = relay_->SharedStoreGet(
          ctx_->method(), request_, ctx_->deadline(),
          [weak](const grpc::Status& status, const grpc::ByteBuffer& response, const std::string& context) {
            if (std::shared_ptr<UnaryRelay> self = weak.lock()) self->Reply(status, response, context);
          });
      if (shared_) return;
    }
    relay_->CallUpstream(&up_, ctx_->method(), &request_, &response_, ctx_->deadline(),
                         [this](const grpc::Status& status, const std::string& context) {
                           Reply(status, response_, context);
                         });
  }

  // A call of its own is answered once its upstream call ends (cancelled with it); one sharing another's
  // ends at once.
  void OnCancel() override {
    if (shared_) return Reply(grpc::Status(grpc::StatusCode::CANCELLED, "the call was cancelled"), {}, "");
    up_.TryCancel();
  }

  void OnDone() override {
    std::shared_ptr<UnaryRelay> self = std::move(self_);  // may free this object: the last thing done here
  }

 private:
  UnaryRelay(grpc::GenericCallbackServerContext* ctx, Relay* relay) : ctx_(ctx), relay_(relay) {}

  void Reply(const grpc::Status& status, const grpc::ByteBuffer& response, const std::string& context) {
    MutexLock lock(&mu_);
    if (replied_) return;
    replied_ = true;
    if (!context.empty()) ctx_->AddTrailingMetadata("tpcoord-context", context);
    if (!status.ok()) return Finish(status);
    if (&response != &response_) response_ = response;
    StartWriteAndFinish(&response_, grpc::WriteOptions(), grpc::Status::OK);
  }

  grpc::GenericCallbackServerContext* const ctx_;
  Relay* const relay_;
  std::shared_ptr<UnaryRelay> self_;  // until OnDone
  // Set on gRPC's reaction thread before the upstream call starts.
  bool shared_ = false;
  grpc::ClientContext up_;
  grpc::ByteBuffer request_;
  grpc::ByteBuffer response_;
  Mutex mu_;
  bool replied_ ABSL_GUARDED_BY(mu_) = false;
};

// A worker's session, relayed as one member slot of the agent's upstream session.
class LocalSession final : public grpc::ServerGenericBidiReactor, public LocalSessionSink {
 public:
  static LocalSession* Start(grpc::GenericCallbackServerContext* ctx, Relay* relay) {
    auto session = std::shared_ptr<LocalSession>(new LocalSession(ctx, relay));
    session->self_ = session;
    session->StartRead(&session->in_);
    return session.get();
  }

  void OnReadDone(bool ok) override {
    if (!ok) return Closed();
    v1::SessionRequest message;
    bool member_before = false;
    {
      MutexLock lock(&mu_);
      member_before = member_.has_value();
    }
    grpc::ProtoBufferReader reader(&in_);
    if (!message.ParseFromZeroCopyStream(&reader)) {
      return Fail(grpc::Status(grpc::StatusCode::INVALID_ARGUMENT,
                               absl::StrCat("the request is not a valid tpcoord.v1.SessionRequest message (",
                                            in_.Length(), " bytes)")));
    }
    if (message.member() != 0 || message.batch_size() > 0 || !message.gone().empty()) {
      return Fail(grpc::Status(grpc::StatusCode::INVALID_ARGUMENT,
                               "a worker's session through tp-agent is its own: it names no member slot and carries "
                               "no batch and no gone (the agent sets those upstream)"));
    }
    Note(message);
    if (!upstream_) {
      for (int attempt = 0; attempt < 2 && !slot_; ++attempt) {
        upstream_ = relay_->Upstream();
        slot_ = upstream_->Attach(self_);
      }
      if (!slot_) {
        return Fail(grpc::Status(grpc::StatusCode::RESOURCE_EXHAUSTED,
                                 absl::StrCat("tp-agent on host ", relay_->host(), " holds at most ",
                                              kMaxSessionMembers, " worker sessions at once")));
      }
    }
    if (IsBarrierArrival(message) && Arrive(message)) {
      // held with the host's other arrivals
    } else if (member_before && message.call_id() == 0 && !message.has_progress() && message.gone().empty()) {
      relay_->Beat(upstream_, *slot_, self_, std::move(message));  // goes up with the host's others
    } else if (!Broker(message)) {
      upstream_->Send(*slot_, std::move(message));
    }
    MutexLock lock(&mu_);
    if (!ending_) StartRead(&in_);
  }

  void Deliver(const v1::SessionEvent& event) override {
    if (event.has_join() && event.status_code() == 0 && event.join().generation() != 0) Seated(event.join());
    grpc::ByteBuffer bytes;
    bool own = false;
    if (!grpc::GenericSerialize<grpc::ProtoBufferWriter, v1::SessionEvent>(event, &bytes, &own).ok()) return;
    MutexLock lock(&mu_);
    if (ending_) return;
    writes_.push_back(std::move(bytes));
    if (writing_) return;
    writing_ = true;
    StartWrite(&writes_.front());
  }

  void End(const grpc::Status& status, const std::string& context) override {
    MutexLock lock(&mu_);
    upstream_ended_ = true;
    EndLocked(status, context);
  }

  void OnWriteDone(bool ok) override {
    MutexLock lock(&mu_);
    writes_.pop_front();
    if (ok && !writes_.empty()) return StartWrite(&writes_.front());
    writes_.clear();
    writing_ = false;
    if (ending_) FinishLocked();
  }

  void OnDone() override {
    Closed();
    std::shared_ptr<LocalSession> self = std::move(self_);  // may free this object: the last thing done here
  }

 private:
  LocalSession(grpc::GenericCallbackServerContext* ctx, Relay* relay) : ctx_(ctx), relay_(relay) {}

  // What a message says of the member this session is: the job (a join step's), or an existing member's
  // generation and rank (a heartbeat that opens the session).
  void Note(const v1::SessionRequest& message) {
    MutexLock lock(&mu_);
    if (message.has_join()) job_ = message.join().job_id();
    if (message.call_id() == 0 && message.generation() != 0 && !member_) {
      job_ = message.job_id();
      member_ = std::make_pair(message.generation(), message.rank());
    }
  }

  void Seated(const v1::JoinResponse& join) {
    std::string job;
    {
      MutexLock lock(&mu_);
      member_ = std::make_pair(join.generation(), join.rank());
      job = job_;
    }
    if (join.heartbeat_interval_ms() > 0) relay_->BeatEvery(std::chrono::milliseconds(join.heartbeat_interval_ms()));
    absl::StatusOr<Mesh> mesh = Mesh::Create(join.mesh().world_size(), join.mesh().tp_size());
    if (mesh.ok()) relay_->unique_ids().Seat(job, join.generation(), join.rank(), *mesh);
  }

  // Hands a barrier arrival to the relay, to go up with the host's others; false before the session is a
  // member's.
  bool Arrive(const v1::SessionRequest& message) {
    std::optional<std::pair<uint64_t, int>> member;
    {
      MutexLock lock(&mu_);
      member = member_;
    }
    if (!member) return false;
    relay_->Arrive(member->first, upstream_, *slot_, message);
    return true;
  }

  // Hands a unique-ID exchange to the host's broker; false when it is not one the broker takes.
  bool Broker(const v1::SessionRequest& message) {
    std::optional<std::pair<uint64_t, int>> member;
    {
      MutexLock lock(&mu_);
      member = member_;
    }
    if (!member || message.call_id() == 0) return false;
    std::weak_ptr<LocalSession> weak = self_;
    std::shared_ptr<UpstreamSession> upstream = upstream_;
    const uint32_t slot = *slot_;
    return relay_->unique_ids().Exchange(
        member->first, member->second, message,
        [weak](v1::SessionEvent event) {
          if (std::shared_ptr<LocalSession> self = weak.lock()) self->Deliver(event);
        },
        [upstream, slot](v1::SessionRequest call, UpstreamSession::CallDone done) {
          upstream->Call(slot, std::move(call), std::move(done));
        });
  }

  // The worker's side ended (it hung up, or died): its member is gone, unless the upstream ended first.
  void Closed() {
    {
      MutexLock lock(&mu_);
      if (closed_) return;
      closed_ = true;
      if (!upstream_ended_ && upstream_ && slot_) {
        upstream_->Detach(*slot_, absl::StrCat("its session with tp-agent on host ", relay_->host(),
                                               " closed before it finished (the process died or hung up)"));
      }
      EndLocked(grpc::Status::OK, "");
    }
  }

  void Fail(const grpc::Status& status) {
    MutexLock lock(&mu_);
    if (upstream_ && slot_) upstream_->Detach(*slot_, absl::StrCat("its session broke tp-agent's rules: ",
                                                                   status.error_message()));
    EndLocked(status, "");
  }

  void EndLocked(const grpc::Status& status, const std::string& context) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    if (ending_) return;
    ending_ = true;
    status_ = status;
    if (!context.empty()) ctx_->AddTrailingMetadata("tpcoord-context", context);
    if (!writing_) FinishLocked();
  }

  void FinishLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    if (finished_) return;
    finished_ = true;
    Finish(status_);
  }

  grpc::GenericCallbackServerContext* const ctx_;
  Relay* const relay_;
  std::shared_ptr<LocalSession> self_;  // until OnDone
  grpc::ByteBuffer in_;
  // Set by the first message, on gRPC's reaction thread, before anything else reads them.
  std::shared_ptr<UpstreamSession> upstream_;
  std::optional<uint32_t> slot_;

  Mutex mu_;
  std::string job_ ABSL_GUARDED_BY(mu_);
  std::optional<std::pair<uint64_t, int>> member_ ABSL_GUARDED_BY(mu_);  // generation, rank
  std::deque<grpc::ByteBuffer> writes_ ABSL_GUARDED_BY(mu_);  // the front one is being written
  bool writing_ ABSL_GUARDED_BY(mu_) = false;
  bool ending_ ABSL_GUARDED_BY(mu_) = false;
  bool finished_ ABSL_GUARDED_BY(mu_) = false;
  bool closed_ ABSL_GUARDED_BY(mu_) = false;
  bool upstream_ended_ ABSL_GUARDED_BY(mu_) = false;
  grpc::Status status_ ABSL_GUARDED_BY(mu_);
};

}  // namespace

Relay::Relay(Targets* targets, std::string host, int workers)
    : targets_(targets),
      member_key_(RandomSecret()),
      host_(host),
      workers_(workers),
      unique_ids_(std::move(host), workers) {
  ticker_ = std::thread([this] {
    std::unique_lock<std::mutex> lock(ticker_mu_);
    while (!ticker_cv_.wait_for(lock, std::chrono::milliseconds(100), [this] { return stopping_; })) {
      lock.unlock();
      unique_ids_.Expire(HostUniqueIds::Clock::now());
      FlushOld(std::chrono::steady_clock::now());
      FlushBeats(std::chrono::steady_clock::now());
      std::optional<std::pair<Targets::Target*, std::chrono::steady_clock::time_point>> unreachable;
      {
        MutexLock relay_lock(&mu_);
        unreachable.swap(unreachable_);
      }
      if (unreachable) targets_->NoteUnreachable(unreachable->first, unreachable->second);
      lock.lock();
    }
  });
}

Relay::~Relay() {
  std::vector<std::weak_ptr<UpstreamSession>> opened;
  {
    MutexLock lock(&mu_);
    opened.swap(opened_);
    upstream_.reset();
  }
  for (const std::weak_ptr<UpstreamSession>& weak : opened) {
    if (std::shared_ptr<UpstreamSession> upstream = weak.lock()) upstream->CancelAndWait(std::chrono::seconds(5));
  }
  {
    std::lock_guard<std::mutex> lock(ticker_mu_);
    stopping_ = true;
  }
  ticker_cv_.notify_all();
  ticker_.join();
}

grpc::ServerGenericBidiReactor* Relay::CreateReactor(grpc::GenericCallbackServerContext* ctx) {
  if (ctx->method() == kSessionMethod) return LocalSession::Start(ctx, this);
  return UnaryRelay::Start(ctx, this);
}

// One StoreGet upstream, and the workers' calls waiting for its answer.
struct Relay::SharedGet {
  grpc::ClientContext up;
  grpc::ByteBuffer request;
  grpc::ByteBuffer response;
  std::vector<UnaryDone> waiters;  // guarded by Relay::mu_
};

void Relay::CallUpstream(grpc::ClientContext* up, const std::string& method, const grpc::ByteBuffer* request,
                         grpc::ByteBuffer* response, std::chrono::system_clock::time_point deadline,
                         UpstreamDone done) {
  Targets::Target* target = targets_->Current();
  const auto start = std::chrono::steady_clock::now();
  up->set_deadline(deadline);
  targets_->AddCredentials(up, member_key_);
  grpc::GenericStub stub(target->channel);
  stub.UnaryCall(up, method, grpc::StubOptions(), request, response,
                 [this, up, target, start, done = std::move(done)](grpc::Status status) {
                   if (status.error_code() == grpc::StatusCode::UNAVAILABLE) {
                     targets_->Follow(target, LeaderNamedIn(*up));
                   }
                   Reached(target, start, status);
                   done(status, ContextNamedIn(*up));
                 });
}

bool Relay::SharedStoreGet(const std::string& method, const grpc::ByteBuffer& request,
                           std::chrono::system_clock::time_point deadline, UnaryDone done) {
  v1::StoreGetRequest parsed;
  grpc::ByteBuffer copy = request;
  grpc::ProtoBufferReader reader(&copy);
  if (!parsed.ParseFromZeroCopyStream(&reader)) return false;
  // Calls differ only in how long each waits (what is left of its own): the same job, generation and key.
  const std::string key = absl::StrCat(parsed.job_id(), "\n", parsed.generation(), "\n", parsed.key());
  auto get = std::make_shared<SharedGet>();
  {
    MutexLock lock(&mu_);
    ++counts_.store_gets;
    if (auto it = gets_.find(key); it != gets_.end()) {
      ++counts_.store_gets_shared;
      it->second->waiters.push_back(std::move(done));
      return true;
    }
    get->waiters.push_back(std::move(done));
    gets_[key] = get;
  }
  get->request = request;
  CallUpstream(&get->up, method, &get->request, &get->response, deadline,
               [this, get, key](const grpc::Status& status, const std::string& context) {
                 std::vector<UnaryDone> waiters;
                 {
                   MutexLock lock(&mu_);
                   if (auto it = gets_.find(key); it != gets_.end() && it->second == get) gets_.erase(it);
                   waiters.swap(get->waiters);
                 }
                 for (UnaryDone& waiter : waiters) waiter(status, get->response, context);
               });
  return true;
}

void Relay::Arrive(uint64_t generation, std::shared_ptr<UpstreamSession> upstream, uint32_t slot,
                   v1::SessionRequest message) {
  const std::string key =
      absl::StrCat(generation, "\n", message.barrier().name(), "\n", message.barrier().round());
  std::vector<HeldBarrier> full;
  {
    MutexLock lock(&mu_);
    ++counts_.barrier_arrivals;
    HeldBarrier& held = barriers_[key];
    if (held.arrivals.empty()) held.since = std::chrono::steady_clock::now();
    held.arrivals.emplace_back(std::move(upstream), slot, std::move(message));
    if (static_cast<int>(held.arrivals.size()) >= workers_) {
      full.push_back(std::move(held));
      barriers_.erase(key);
    }
  }
  Flush(std::move(full));
}

void Relay::FlushOld(std::chrono::steady_clock::time_point now) {
  std::vector<HeldBarrier> old;
  {
    MutexLock lock(&mu_);
    for (auto it = barriers_.begin(); it != barriers_.end();) {
      if (now - it->second.since < kBarrierHold) {
        ++it;
        continue;
      }
      old.push_back(std::move(it->second));
      it = barriers_.erase(it);
    }
  }
  Flush(std::move(old));
}

void Relay::Flush(std::vector<HeldBarrier> held) {
  for (HeldBarrier& barrier : held) {
    std::map<UpstreamSession*, std::vector<std::pair<uint32_t, v1::SessionRequest>>> by_upstream;
    std::map<UpstreamSession*, std::shared_ptr<UpstreamSession>> upstreams;
    for (auto& [upstream, slot, message] : barrier.arrivals) {
      by_upstream[upstream.get()].emplace_back(slot, std::move(message));
      upstreams[upstream.get()] = upstream;
    }
    {
      MutexLock lock(&mu_);
      counts_.barrier_messages += static_cast<int64_t>(by_upstream.size());
    }
    for (auto& [upstream, messages] : by_upstream) upstreams[upstream]->SendAll(std::move(messages));
  }
}

void Relay::Beat(std::shared_ptr<UpstreamSession> upstream, uint32_t slot, std::weak_ptr<LocalSessionSink> from,
                 v1::SessionRequest message) {
  MutexLock lock(&mu_);
  ++counts_.heartbeats;
  UpstreamSession* key = upstream.get();
  beats_[{key, slot}] = PendingBeat{std::move(upstream), UpstreamSession::Beat{slot, std::move(from), std::move(message)}};
}

void Relay::BeatEvery(std::chrono::milliseconds interval) {
  MutexLock lock(&mu_);
  beat_every_ = std::max(std::chrono::milliseconds(100), std::min(beat_every_, interval));
}

void Relay::FlushBeats(std::chrono::steady_clock::time_point now) {
  std::map<UpstreamSession*, std::pair<std::shared_ptr<UpstreamSession>, std::vector<UpstreamSession::Beat>>> by_upstream;
  {
    MutexLock lock(&mu_);
    if (beats_.empty() || now - beats_sent_ < beat_every_) return;
    beats_sent_ = now;
    for (auto& [key, pending] : beats_) {
      auto& [upstream, beats] = by_upstream[key.first];
      upstream = pending.upstream;
      beats.push_back(std::move(pending.beat));
    }
    beats_.clear();
    counts_.heartbeat_messages += static_cast<int64_t>(by_upstream.size());
  }
  for (auto& [key, entry] : by_upstream) entry.first->SendBeats(std::move(entry.second));
}

void Relay::Reached(Targets::Target* target, std::chrono::steady_clock::time_point since, const grpc::Status& status) {
  if (status.error_code() != grpc::StatusCode::UNAVAILABLE) {
    targets_->NoteReachable();
    return;
  }
  MutexLock lock(&mu_);
  if (!unreachable_ || since < unreachable_->second) unreachable_ = std::make_pair(target, since);
}

Relay::Counts Relay::counts() {
  MutexLock lock(&mu_);
  return counts_;
}

std::shared_ptr<UpstreamSession> Relay::Upstream() {
  MutexLock lock(&mu_);
  if (!upstream_ || upstream_->Closing()) {
    upstream_ = UpstreamSession::Open(
        targets_, member_key_,
        [this](Targets::Target* target, std::chrono::steady_clock::time_point since, const grpc::Status& status) {
          Reached(target, since, status);
        });
    opened_.erase(std::remove_if(opened_.begin(), opened_.end(), [](const auto& w) { return w.expired(); }),
                  opened_.end());
    opened_.push_back(upstream_);
  }
  return upstream_;
}

}  // namespace tpcoord
