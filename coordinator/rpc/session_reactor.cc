#include "coordinator/rpc/session_reactor.h"

#include <atomic>
#include <chrono>
#include <deque>
#include <map>
#include <memory>
#include <optional>
#include <utility>

#include "absl/strings/str_cat.h"
#include "common/deepspeed_error.h"
#include "common/identifiers.h"
#include "common/limits.h"
#include "common/mutex.h"
#include "common/wire.h"
#include "coordinator/rpc/call_codec.h"
#include "coordinator/rpc/request_checks.h"

namespace tpcoord {
namespace {

// The steps of a call, in the order they run (SessionRequest's field order).
enum Step { kRecord, kJoin, kMerge, kPublish, kGet, kBarrier, kLeave, kSteps };

// The metrics' name of a call whose first step is `step` (Metrics::CallFinished).
const char* CallName(int step) {
  static const char* const kNames[] = {"Session:record",  "Session:join",    "Session:merge_config",
                                       "Session:publish_unique_id", "Session:get_unique_id",
                                       "Session:barrier", "Session:leave",   "Session:none"};
  return kNames[step];
}

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

class SessionReactor final : public grpc::ServerBidiReactor<grpc::ByteBuffer, grpc::ByteBuffer> {
 public:
  static SessionReactor* Start(grpc::CallbackServerContext* ctx, const MemberCalls* calls,
                               const std::string& admin_token_sha256) {
    auto reactor = std::shared_ptr<SessionReactor>(new SessionReactor(ctx, calls, admin_token_sha256));
    reactor->self_ = reactor;
    reactor->StartRead(&reactor->in_);
    return reactor.get();
  }

  void OnReadDone(bool ok) override {
    if (!ok) return End(absl::OkStatus());  // the client closed its side, or went away
    v1::SessionRequest message;
    absl::Status status = ParseRequest(in_, &message);
    if (status.ok() && !caller_) {
      absl::StatusOr<Caller> caller = IdentifyCall(ctx_, admin_token_sha256_);
      if (caller.ok()) {
        caller_ = *std::move(caller);
      } else {
        const std::string& job = message.has_join() ? message.join().job_id() : message.job_id();
        status = ValidateJobId(job).ok() ? WithJobContext(job, caller.status()) : caller.status();
      }
    }
    if (status.ok()) status = message.call_id() == 0 ? Heartbeat(message) : StartCall(std::move(message));
    if (!status.ok()) return End(status);
    {
      MutexLock lock(&mu_);
      if (ending_) return;  // ended meanwhile: no read after Finish
    }
    StartRead(&in_);
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
    CancelWaits();
    if (std::optional<Member> m = member()) m->job->CloseSession(m->generation, m->rank, id_);
    std::shared_ptr<SessionReactor> self = std::move(self_);  // may free this object: the last thing done here
  }

  // Finishes the stream with `status` once the queued answers are out (once; later calls do nothing). Its
  // waiting calls are cancelled first, so that the client, once it sees the end, sees their effect too (a
  // Join cancelled is a worker no generation counts).
  void End(const absl::Status& status) {
    CancelWaits();
    MutexLock lock(&mu_);
    if (ending_) return;
    ending_ = true;
    status_ = ToGrpc(ctx_, status);
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
    int first_step = kSteps;
    std::chrono::steady_clock::time_point start = std::chrono::steady_clock::now();
  };

  SessionReactor(grpc::CallbackServerContext* ctx, const MemberCalls* calls, const std::string& admin_token_sha256)
      : ctx_(ctx), member_calls_(calls), admin_token_sha256_(admin_token_sha256), id_(NextId()) {}

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
      calls.swap(in_flight_);
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
    std::optional<TrainingProgress> progress;
    if (message.has_progress()) progress = TrainingProgressFromProto(message.progress());
    std::optional<Member> m = member();
    if (!m) {  // the first heartbeat opens the session of an existing member
      absl::StatusOr<std::shared_ptr<Job>> job = member_calls_->ExistingJob(beat.job_id());
      if (!job.ok()) return job.status();
      absl::StatusOr<Millis> lease = Bind(*job, beat.generation(), beat.rank());
      if (!lease.ok()) return lease.status();
      v1::SessionEvent event;
      event.set_lease_ms(static_cast<uint32_t>(lease->count()));
      Send(event);
      if (!progress) return absl::OkStatus();
      m = member();
    }
    if (beat.job_id() != m->job->id() || beat.generation() != m->generation || beat.rank() != m->rank) {
      return WithJobContext(m->job->id(), absl::InvalidArgumentError(absl::StrCat(
          "a session's heartbeats must name the member that opened it (generation ", m->generation, " rank ", m->rank,
          "); this one names job ", beat.job_id(), " generation ", beat.generation(), " rank ", beat.rank())));
    }
    return m->job->Heartbeat(*caller_, m->generation, m->rank, progress ? &*progress : nullptr).status();
  }

  // Makes this stream the session of member `rank` of `generation` in `job`; returns its lease.
  absl::StatusOr<Millis> Bind(std::shared_ptr<Job> job, uint64_t generation, int rank) {
    std::weak_ptr<SessionReactor> weak = self_;
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
      if (in_flight_.count(id) > 0) {
        return absl::InvalidArgumentError(absl::StrCat("call_id ", id, " is already in flight on this session"));
      }
      if (static_cast<int>(in_flight_.size()) >= kMaxSessionCalls) {
        return absl::InvalidArgumentError(absl::StrCat("call ", id, ": a session has at most ", kMaxSessionCalls,
                                                       " calls in flight"));
      }
      in_flight_[id] = WaitingCall{};
    }
    for (int step = kSteps - 1; step >= 0; --step) {
      if (HasStep(call->request, step)) call->first_step = step;
    }
    if (call->request.has_progress()) {
      Answer(call, absl::InvalidArgumentError(absl::StrCat(
                       "call ", id, " carries progress, which rides on a heartbeat (call_id 0), not on a call")));
    } else if (!HasAnyStep(call->request)) {
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
    std::weak_ptr<SessionReactor> weak = self_;
    StatusDone next = [weak, call, step](absl::Status status) {
      std::shared_ptr<SessionReactor> self = weak.lock();
      if (!self) return;
      {
        MutexLock lock(&self->mu_);
        call->step = step + 1;
        if (step == kJoin) self->joining_ = false;
        if (auto it = self->in_flight_.find(call->answer.call_id()); it != self->in_flight_.end()) it->second = {};
      }
      if (status.ok() && step == kJoin) status = self->JoinAnswered(call.get());
      if (!status.ok()) return self->Answer(call, status);
      self->RunSteps(call);
    };
    WaitingCall parked;
    if (absl::Status s = RunStep(call.get(), step, std::move(next), &parked); !s.ok()) return Answer(call, s);
    if (!parked.job) return;
    MutexLock lock(&mu_);
    auto it = in_flight_.find(call->answer.call_id());
    if (call->step == step && it != in_flight_.end()) it->second = std::move(parked);  // still waiting
  }

  // Starts step `step` of `call`, which answers through `next`; a step that cannot start returns why.
  absl::Status RunStep(Call* call, int step, StatusDone next, WaitingCall* parked) {
    v1::SessionRequest& r = call->request;
    v1::SessionEvent& a = call->answer;
    const Caller& caller = *caller_;
    absl::Status as_member;
    switch (step) {
      case kRecord:
        member_calls_->Record(caller, r.record(), a.mutable_record(), std::move(next));
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
        *parked = member_calls_->Join(caller, r.join(), member_calls_->Wait(r.join().wait_timeout_ms()), a.mutable_join(),
                                   std::move(next));
        return absl::OkStatus();
      case kMerge:
        if (as_member = AsMember(r.mutable_merge_config()); !as_member.ok()) return as_member;
        member_calls_->Merge(caller, r.merge_config(), a.mutable_merge_config(), std::move(next));
        return absl::OkStatus();
      case kPublish:
        if (as_member = AsMember(r.mutable_publish_unique_id()); !as_member.ok()) return as_member;
        member_calls_->PublishUniqueIds(caller, r.publish_unique_id(), std::move(next));
        return absl::OkStatus();
      case kGet:
        if (as_member = AsMember(r.mutable_get_unique_id()); !as_member.ok()) return as_member;
        *parked = member_calls_->GetUniqueIds(caller, r.get_unique_id(),
                                           member_calls_->Wait(r.get_unique_id().wait_timeout_ms()),
                                           a.mutable_unique_ids(), std::move(next));
        return absl::OkStatus();
      case kBarrier:
        if (as_member = AsMember(r.mutable_barrier()); !as_member.ok()) return as_member;
        *parked = member_calls_->Barrier(caller, r.barrier(), member_calls_->Wait(r.barrier().wait_timeout_ms()),
                                      std::move(next));
        return absl::OkStatus();
      case kLeave:
        if (as_member = AsMember(r.mutable_leave()); !as_member.ok()) return as_member;
        member_calls_->Leave(caller, r.leave(), std::move(next));
        return absl::OkStatus();
    }
    return absl::InternalError(absl::StrCat("no step ", step));
  }

  // A join step answered: this stream becomes the new member's session.
  absl::Status JoinAnswered(Call* call) {
    const v1::JoinResponse& join = call->answer.join();
    absl::StatusOr<std::shared_ptr<Job>> job = member_calls_->ExistingJob(call->request.join().job_id());
    if (!job.ok()) return job.status();
    absl::StatusOr<Millis> lease = Bind(*std::move(job), join.generation(), join.rank());
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
      in_flight_.erase(answer.call_id());
    }
    if (!status.ok()) {
      answer.set_status_code(static_cast<int>(status.code()));
      answer.set_status_message(std::string(status.message()));
      if (std::optional<std::string> context = ErrorContext(status)) answer.set_status_context(*context);
    }
    if (Metrics* metrics = member_calls_->metrics()) {
      metrics->CallFinished(CallName(call->first_step), absl::StatusCodeToString(status.code()),
                            std::chrono::duration<double>(std::chrono::steady_clock::now() - call->start).count());
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
    StartWrite(&writes_.front());
  }

  void FinishLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    if (finished_) return;
    finished_ = true;
    if (Metrics* metrics = member_calls_->metrics()) {
      metrics->CallFinished("Session", absl::StatusCodeToString(static_cast<absl::StatusCode>(status_.error_code())),
                            std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count());
    }
    Finish(status_);
  }

  grpc::CallbackServerContext* const ctx_;
  const MemberCalls* const member_calls_;
  const std::string admin_token_sha256_;
  const uint64_t id_;  // this session's, for Job::OpenSession / CloseSession
  const std::chrono::steady_clock::time_point start_ = std::chrono::steady_clock::now();
  std::shared_ptr<SessionReactor> self_;  // until OnDone
  grpc::ByteBuffer in_;
  // Set by the first message, on gRPC's reaction thread, before any call starts; read-only afterwards.
  std::optional<Caller> caller_;

  Mutex mu_;
  std::optional<Member> member_ ABSL_GUARDED_BY(mu_);
  bool joining_ ABSL_GUARDED_BY(mu_) = false;  // a join step is in flight
  std::map<uint64_t, WaitingCall> in_flight_ ABSL_GUARDED_BY(mu_);  // in flight, by call_id: the wait each is in
  std::deque<grpc::ByteBuffer> writes_ ABSL_GUARDED_BY(mu_);  // the front one is being written
  bool writing_ ABSL_GUARDED_BY(mu_) = false;
  bool ending_ ABSL_GUARDED_BY(mu_) = false;
  bool finished_ ABSL_GUARDED_BY(mu_) = false;
  grpc::Status status_ ABSL_GUARDED_BY(mu_);
};

}  // namespace

grpc::ServerBidiReactor<grpc::ByteBuffer, grpc::ByteBuffer>* StartSession(grpc::CallbackServerContext* ctx,
                                                                           const MemberCalls* calls,
                                                                           const std::string& admin_token_sha256) {
  return SessionReactor::Start(ctx, calls, admin_token_sha256);
}

}  // namespace tpcoord
