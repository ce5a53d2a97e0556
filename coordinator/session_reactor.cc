#include "coordinator/session_reactor.h"

#include <atomic>
#include <chrono>
#include <iostream>
#include <deque>
#include <map>
#include <memory>
#include <optional>
#include <thread>
#include <utility>

#include "absl/strings/str_cat.h"
#include "common/deepspeed_error.h"
#include "common/identifiers.h"
#include "common/limits.h"
#include "common/mutex.h"
#include "coordinator/call_codec.h"
#include "coordinator/coordinator_service.h"
#include "coordinator/request_checks.h"

namespace tpcoord {
namespace {

// The steps of a call, in the order they run (SessionRequest's field order).
enum Step { kRecord, kJoin, kMerge, kPublish, kGet, kBarrier, kLeave, kSteps };

bool HasStep(const v1::SessionRequest& r, int step) {
  switch (step) {
    case kRecord: return r.has_record();
    case kJoin: return r.has_join();
    case kMerge: return r.has_merge_config();
    case kPublish: return r.has_publish_unique_id();
    case kGet: return r.has_get_unique_id();
    case kBarrier: return r.has_barrier();
    case kLeave: return r.has_leave();
  }
  return false;
}

bool HasAnyStep(const v1::SessionRequest& r) {
  for (int step = 0; step < kSteps; ++step) {
    if (HasStep(r, step)) return true;
  }
  return false;
}

// One completion-queue operation of a session: its tag. The queue's thread runs `fn` with the result.
struct SessionOp {
  class SessionReactor* session;
  void (SessionReactor::*fn)(bool ok);
};

class SessionReactor final : public std::enable_shared_from_this<SessionReactor> {
 public:
  // Asks `service` for the next Session call on `cq`; the new reactor owns itself until the call is done.
  static void Await(SessionServer* server, grpc::ServerCompletionQueue* cq) {
    CoordinatorService* service = server->service();
    auto reactor = std::shared_ptr<SessionReactor>(new SessionReactor(server, cq));
    SessionReactor* r = reactor.get();
    r->self_ = std::move(reactor);
    server->Arrived();
    r->ctx_.AsyncNotifyWhenDone(&r->done_op_);
    service->RequestSession(&r->ctx_, &r->stream_, cq, &r->started_op_);
  }

  ~SessionReactor() { server_->Left(); }

  void OnStarted(bool ok) {
    if (!ok) {  // the server is shutting down: this call never started, and no done tag comes
      MutexLock lock(&mu_);
      done_ = true;  // MaybeRelease lets it go
      return;
    }
    Await(server_, cq_);  // the next call
    StartRead();
  }

  void OnReadDone(bool ok) {
    Settled();
    if (!ok) return End(absl::OkStatus());  // the client closed its side, or went away
    v1::SessionRequest message;
    absl::Status status = ParseRequest(in_, &message);
    if (status.ok() && !caller_) {
      absl::StatusOr<Caller> caller = IdentifyCall(&ctx_, *admin_token_sha256_);
      if (caller.ok()) {
        caller_ = *std::move(caller);
      } else {
        const std::string& job = message.has_join() ? message.join().job_id() : message.job_id();
        status = ValidateJobId(job).ok() ? WithJobContext(job, caller.status()) : caller.status();
      }
    }
    if (status.ok()) status = message.call_id() == 0 ? Heartbeat(message) : StartCall(std::move(message));
    if (!status.ok()) return End(status);
    StartRead();
  }

  void OnWriteDone(bool ok) {
    MutexLock lock(&mu_);
    --pending_ops_;
    writes_.pop_front();
    if (ok && !writes_.empty()) return StartWriteLocked();
    writes_.clear();
    writing_ = false;
    if (ending_) FinishLocked();
  }

  void OnFinishDone(bool) { Settled(); }

  // The call is over (finished, or the client went away): its waits are cancelled and its member, if it
  // has one and has not finished, is gone. The reactor goes once its last operation has come back.
  void OnDone(bool) {
    CancelWaits();
    if (std::optional<Member> m = member()) m->job->CloseSession(m->generation, m->rank, id_);
    MutexLock lock(&mu_);
    done_ = true;
  }

  // Lets go of this reactor's hold on itself once the call is done and no operation is outstanding (then
  // none is started any more). Run by the queue's thread after every operation's handler, never inside one,
  // so that a handler that starts an operation counts it first.
  void MaybeRelease() {
    std::shared_ptr<SessionReactor> self;
    MutexLock lock(&mu_);
    if (!done_ || pending_ops_ > 0 || released_) return;
    released_ = true;
    self = std::move(self_);  // freed after the lock, by the caller's reference going
  }

  // Finishes the stream with `status` once the queued answers are out (once; later calls do nothing). Its
  // waiting calls are cancelled first, so that the client, once it sees the end, sees their effect too (a
  // Join cancelled is a worker no generation counts).
  void End(const absl::Status& status) {
    CancelWaits();
    MutexLock lock(&mu_);
    if (ending_) return;
    ending_ = true;
    status_ = ToGrpc(&ctx_, status);
    if (!writing_) FinishLocked();
  }

 private:
  struct Member {
    std::shared_ptr<Job> job;
    uint64_t generation = 0;
    int rank = 0;
  };

  // A call in flight: its request, the answer it builds, and the step it is at.
  struct Call {
    v1::SessionRequest request;
    v1::SessionEvent answer;
    int step = 0;
  };

  SessionReactor(SessionServer* server, grpc::ServerCompletionQueue* cq)
      : server_(server),
        cq_(cq),
        calls_api_(&server->service()->calls()),
        registry_(server->service()->registry()),
        admin_token_sha256_(&server->service()->admin_token_sha256()),
        id_(NextId()) {}

  // --- the stream's operations (one read and one write at a time; Finish after the last write) ------------

  void StartRead() {
    MutexLock lock(&mu_);
    if (ending_ || released_) return;  // ended meanwhile: no read after Finish
    ++pending_ops_;
    stream_.Read(&in_, &read_op_);
  }

  void StartWriteLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    if (released_) return;
    ++pending_ops_;
    stream_.Write(writes_.front(), &write_op_);
  }

  // An operation came back.
  void Settled() {
    MutexLock lock(&mu_);
    --pending_ops_;
  }

  static uint64_t NextId() {
    static std::atomic<uint64_t> next{1};
    return next.fetch_add(1);
  }

  std::optional<Member> member() {
    MutexLock lock(&mu_);
    return member_;
  }

  // Cancels every call in flight in its job (each then answers CANCELLED, to nobody).
  void CancelWaits() {
    std::map<uint64_t, WaitingCall> calls;
    {
      MutexLock lock(&mu_);
      calls.swap(calls_);
    }
    for (auto& [id, parked] : calls) {
      if (parked.job) parked.job->Cancel(parked.id);
    }
  }

  // --- heartbeats -----------------------------------------------------------------------------------------

  absl::Status Heartbeat(const v1::SessionRequest& message) {
    if (HasAnyStep(message)) {
      return absl::InvalidArgumentError("a session message with steps needs a call_id (nonzero)");
    }
    v1::HeartbeatRequest beat;
    beat.set_job_id(message.job_id());
    beat.set_generation(message.generation());
    beat.set_rank(message.rank());
    if (absl::Status s = CheckRequest(beat); !s.ok()) return s;
    std::optional<Member> m = member();
    if (!m) {  // the first heartbeat opens the session of an existing member
      absl::StatusOr<std::shared_ptr<Job>> job = calls_api_->ExistingJob(beat.job_id());
      if (!job.ok()) return job.status();
      absl::StatusOr<Millis> lease = Bind(*job, beat.generation(), beat.rank());
      if (!lease.ok()) return lease.status();
      v1::SessionEvent event;
      event.set_lease_ms(static_cast<uint32_t>(lease->count()));
      Send(event);
      return absl::OkStatus();
    }
    if (beat.job_id() != m->job->id() || beat.generation() != m->generation || beat.rank() != m->rank) {
      return WithJobContext(m->job->id(), absl::InvalidArgumentError(absl::StrCat(
          "a session's heartbeats must name the member that opened it (generation ", m->generation, " rank ", m->rank,
          "); this one names job ", beat.job_id(), " generation ", beat.generation(), " rank ", beat.rank())));
    }
    return m->job->Heartbeat(*caller_, m->generation, m->rank).status();
  }

  // Makes this stream the session of member `rank` of `generation` in `job`; returns its lease.
  absl::StatusOr<Millis> Bind(std::shared_ptr<Job> job, uint64_t generation, int rank) {
    std::weak_ptr<SessionReactor> weak = weak_from_this();
    absl::StatusOr<Millis> lease = job->OpenSession(*caller_, generation, rank, id_, [weak](absl::Status why) {
      if (auto reactor = weak.lock()) reactor->End(why);
    });
    if (!lease.ok()) return lease.status();
    MutexLock lock(&mu_);
    member_ = Member{std::move(job), generation, rank};
    return lease;
  }

  // --- calls ----------------------------------------------------------------------------------------------

  absl::Status StartCall(v1::SessionRequest message) {
    const uint64_t id = message.call_id();
    auto call = std::make_shared<Call>();
    call->request = std::move(message);
    call->answer.set_call_id(id);
    {
      MutexLock lock(&mu_);
      if (calls_.count(id) > 0) {
        return absl::InvalidArgumentError(absl::StrCat("call_id ", id, " is already in flight on this session"));
      }
      if (static_cast<int>(calls_.size()) >= kMaxSessionCalls) {
        return absl::InvalidArgumentError(absl::StrCat("call ", id, ": a session has at most ", kMaxSessionCalls,
                                                       " calls in flight"));
      }
      calls_[id] = WaitingCall{};
    }
    if (!HasAnyStep(call->request)) {
      Answer(call, absl::InvalidArgumentError(absl::StrCat("call ", id, " has no step")));
    } else {
      RunSteps(call);
    }
    return absl::OkStatus();
  }

  // Runs the call's steps from call->step on, until one waits or the call is answered.
  void RunSteps(const std::shared_ptr<Call>& call) {
    while (call->step < kSteps && !HasStep(call->request, call->step)) ++call->step;
    if (call->step == kSteps) return Answer(call, absl::OkStatus());
    const int step = call->step;
    std::weak_ptr<SessionReactor> weak = weak_from_this();
    StatusDone next = [weak, call, step](absl::Status status) {
      std::shared_ptr<SessionReactor> self = weak.lock();
      if (!self) return;
      {
        MutexLock lock(&self->mu_);
        call->step = step + 1;
        if (step == kJoin) self->joining_ = false;
        if (auto it = self->calls_.find(call->answer.call_id()); it != self->calls_.end()) it->second = {};
      }
      if (status.ok() && step == kJoin) status = self->JoinAnswered(call.get());
      if (!status.ok()) return self->Answer(call, status);
      self->RunSteps(call);
    };
    WaitingCall parked;
    if (absl::Status s = RunStep(call.get(), step, std::move(next), &parked); !s.ok()) return Answer(call, s);
    if (!parked.job) return;
    MutexLock lock(&mu_);
    auto it = calls_.find(call->answer.call_id());
    if (call->step == step && it != calls_.end()) it->second = std::move(parked);  // still waiting
  }

  // Starts step `step` of `call`, which answers through `next`; a step that cannot start returns why.
  absl::Status RunStep(Call* call, int step, StatusDone next, WaitingCall* parked) {
    v1::SessionRequest& r = call->request;
    v1::SessionEvent& a = call->answer;
    const Caller& caller = *caller_;
    absl::Status as_member;
    switch (step) {
      case kRecord:
        calls_api_->Record(caller, r.record(), a.mutable_record(), std::move(next));
        return absl::OkStatus();
      case kJoin: {
        MutexLock lock(&mu_);
        if (member_ || joining_) {
          return absl::FailedPreconditionError(
              member_ ? absl::StrCat("this session is rank ", member_->rank, "'s of generation ", member_->generation,
                                     " already: join the next generation on a new session")
                      : "this session has a join in flight already");
        }
        joining_ = true;
      }
        *parked = calls_api_->Join(caller, r.join(), calls_api_->Wait(r.join().wait_timeout_ms()), a.mutable_join(),
                                   std::move(next));
        return absl::OkStatus();
      case kMerge:
        if (as_member = AsMember(r.mutable_merge_config()); !as_member.ok()) return as_member;
        calls_api_->Merge(caller, r.merge_config(), a.mutable_merge_config(), std::move(next));
        return absl::OkStatus();
      case kPublish:
        if (as_member = AsMember(r.mutable_publish_unique_id()); !as_member.ok()) return as_member;
        calls_api_->PublishUniqueIds(caller, r.publish_unique_id(), std::move(next));
        return absl::OkStatus();
      case kGet:
        if (as_member = AsMember(r.mutable_get_unique_id()); !as_member.ok()) return as_member;
        *parked = calls_api_->GetUniqueIds(caller, r.get_unique_id(),
                                           calls_api_->Wait(r.get_unique_id().wait_timeout_ms()),
                                           a.mutable_unique_ids(), std::move(next));
        return absl::OkStatus();
      case kBarrier:
        if (as_member = AsMember(r.mutable_barrier()); !as_member.ok()) return as_member;
        *parked = calls_api_->Barrier(caller, r.barrier(), calls_api_->Wait(r.barrier().wait_timeout_ms()),
                                      std::move(next));
        return absl::OkStatus();
      case kLeave:
        if (as_member = AsMember(r.mutable_leave()); !as_member.ok()) return as_member;
        calls_api_->Leave(caller, r.leave(), std::move(next));
        return absl::OkStatus();
    }
    return absl::InternalError(absl::StrCat("no step ", step));
  }

  // A join step answered: this stream becomes the new member's session.
  absl::Status JoinAnswered(Call* call) {
    const v1::JoinResponse& join = call->answer.join();
    std::shared_ptr<Job> job = registry_->Find(call->request.join().job_id());
    if (!job) return absl::NotFoundError(absl::StrCat("job ", call->request.join().job_id(), " does not exist"));
    absl::StatusOr<Millis> lease = Bind(std::move(job), join.generation(), join.rank());
    if (!lease.ok()) return lease.status();
    call->answer.set_lease_ms(static_cast<uint32_t>(lease->count()));
    return absl::OkStatus();
  }

  // Fills a step's empty job_id, generation and rank with this session's member's; INVALID_ARGUMENT when the
  // step names another member, FAILED_PRECONDITION when the session has none yet.
  template <typename Request>
  absl::Status AsMember(Request* req) {
    std::optional<Member> m = member();
    if (!m) {
      return absl::FailedPreconditionError(absl::StrCat(
          "this session has no member yet: its ", Request::descriptor()->name(), " step needs a join step first"));
    }
    if (req->job_id().empty()) req->set_job_id(m->job->id());
    if (req->generation() == 0) req->set_generation(m->generation);
    if (req->rank() == 0) req->set_rank(m->rank);
    if (req->job_id() != m->job->id() || req->generation() != m->generation || req->rank() != m->rank) {
      return WithJobContext(m->job->id(), absl::InvalidArgumentError(absl::StrCat(
          "a session's steps act as its member (generation ", m->generation, " rank ", m->rank, "); this ",
          Request::descriptor()->name(), " names job ", req->job_id(), " generation ", req->generation(), " rank ",
          req->rank())));
    }
    return absl::OkStatus();
  }

  void Answer(const std::shared_ptr<Call>& call, const absl::Status& status) {
    v1::SessionEvent& answer = call->answer;
    {
      MutexLock lock(&mu_);
      calls_.erase(answer.call_id());
    }
    if (!status.ok()) {
      answer.set_status_code(static_cast<int>(status.code()));
      answer.set_status_message(std::string(status.message()));
      if (std::optional<std::string> context = ErrorContext(status)) answer.set_status_context(*context);
    }
    Send(answer);
  }

  void Send(const v1::SessionEvent& event) {
    grpc::ByteBuffer bytes = SerializeAnswer(event);
    MutexLock lock(&mu_);
    if (ending_) return;
    writes_.push_back(std::move(bytes));
    if (writing_) return;
    writing_ = true;
    StartWriteLocked();
  }

  void FinishLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    if (finished_ || released_) return;
    finished_ = true;
    ++pending_ops_;
    stream_.Finish(status_, &finish_op_);
  }

  SessionServer* const server_;
  grpc::ServerCompletionQueue* const cq_;
  const MemberCalls* const calls_api_;
  JobRegistry* const registry_;
  const std::string* const admin_token_sha256_;
  const uint64_t id_;  // this session's, for Job::OpenSession / CloseSession
  grpc::ServerContext ctx_;
  grpc::ServerAsyncReaderWriter<grpc::ByteBuffer, grpc::ByteBuffer> stream_{&ctx_};
  SessionOp started_op_{this, &SessionReactor::OnStarted};
  SessionOp read_op_{this, &SessionReactor::OnReadDone};
  SessionOp write_op_{this, &SessionReactor::OnWriteDone};
  SessionOp finish_op_{this, &SessionReactor::OnFinishDone};
  SessionOp done_op_{this, &SessionReactor::OnDone};
  std::shared_ptr<SessionReactor> self_;  // until done, with no operation outstanding
  grpc::ByteBuffer in_;
  // Set by the first message, on gRPC's reaction thread, before any call starts; read-only afterwards.
  std::optional<Caller> caller_;

  Mutex mu_;
  std::optional<Member> member_ ABSL_GUARDED_BY(mu_);
  bool joining_ ABSL_GUARDED_BY(mu_) = false;  // a join step is in flight
  std::map<uint64_t, WaitingCall> calls_ ABSL_GUARDED_BY(mu_);  // in flight, by call_id: the wait each is in
  std::deque<grpc::ByteBuffer> writes_ ABSL_GUARDED_BY(mu_);  // the front one is being written
  bool writing_ ABSL_GUARDED_BY(mu_) = false;
  bool ending_ ABSL_GUARDED_BY(mu_) = false;
  bool finished_ ABSL_GUARDED_BY(mu_) = false;
  bool done_ ABSL_GUARDED_BY(mu_) = false;  // the done tag came back (or the call never started)
  bool released_ ABSL_GUARDED_BY(mu_) = false;  // self_ let go: no operation starts any more
  int pending_ops_ ABSL_GUARDED_BY(mu_) = 0;  // reads, writes and the finish outstanding
  grpc::Status status_ ABSL_GUARDED_BY(mu_);
};

}  // namespace

SessionServer::SessionServer(CoordinatorService* service, std::vector<std::unique_ptr<grpc::ServerCompletionQueue>> cqs)
    : service_(service), cqs_(std::move(cqs)) {
  for (auto& cq : cqs_) {
    SessionReactor::Await(this, cq.get());
    threads_.emplace_back([cq = cq.get()] {
      void* tag;
      bool ok;
      while (cq->Next(&tag, &ok)) {
        SessionOp* op = static_cast<SessionOp*>(tag);
        // Alive until the handler returns, even if it lets go of the last reference (an operation is
        // outstanding until now, so the reactor still holds itself).
        std::shared_ptr<SessionReactor> session = op->session->shared_from_this();
        (session.get()->*op->fn)(ok);
        session->MaybeRelease();
      }
    });
  }
}

void SessionServer::Arrived() {
  MutexLock lock(&mu_);
  ++live_;
}

void SessionServer::Left() {
  MutexLock lock(&mu_);
  if (--live_ == 0) idle_.SignalAll();
}

SessionServer::~SessionServer() {
  // The server has shut down, so every call is over or cancelled, and each session comes to its end (its
  // job hears of its member's going) while everything it calls into is still there. No operation may be
  // started on a queue once it is shut down: the queues go only once no session is left.
  {
    MutexLock lock(&mu_);
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
    while (live_ > 0 && idle_.WaitUntil(deadline)) {
    }
    if (live_ > 0) std::cerr << "tp-coordinator: " << live_ << " member session(s) did not end at shutdown" << std::endl;
  }
  for (auto& cq : cqs_) cq->Shutdown();
  for (std::thread& t : threads_) t.join();
}

}  // namespace tpcoord
