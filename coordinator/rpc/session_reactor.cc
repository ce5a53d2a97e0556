#include "coordinator/rpc/session_reactor.h"

#include <atomic>
#include <chrono>
#include <deque>
#include <map>
#include <set>
#include <algorithm>
#include <memory>
#include <optional>
#include <vector>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/deepspeed_error.h"
#include "common/identifiers.h"
#include "common/limits.h"
#include "common/mutex.h"
#include "common/wire.h"
#include "coordinator/rpc/answers.h"
#include "coordinator/rpc/call_codec.h"
#include "coordinator/rpc/request_checks.h"

namespace tpcoord {
namespace {

// A session's member: the job, generation and rank its stream speaks for.
struct Member {
  std::shared_ptr<Job> job;
  uint64_t generation = 0;
  int rank = 0;
};

// A call in flight on a session: its request, the answer it builds, and the step it is at.
struct Call {
  uint32_t slot = 0;  // the member slot it acts for (SessionRequest.member)
  v1::SessionRequest request;
  v1::SessionEvent answer;
  UniqueIdAnswer unique_ids;  // the get_unique_id step's answer, spliced into `answer` when sent
  int step = 0;
  int first_step = -1;
  std::chrono::steady_clock::time_point start = std::chrono::steady_clock::now();
  // What steps whose answers the session event has no field for write into (they answer a status only).
  v1::PublishUniqueIdResponse published;
  v1::BarrierResponse barrier;
  v1::LeaveResponse left;
};

// Fills a step's empty job_id, generation and rank with the session's member's; INVALID_ARGUMENT when the
// step names another member, FAILED_PRECONDITION when the session has none yet.
template <typename Request>
absl::Status AsMember(const std::optional<Member>& m, Request* req) {
  if (!m) {
    return absl::FailedPreconditionError(absl::StrCat("this session has no member yet: its ",
                                                      Request::descriptor()->name(), " step needs a join step first"));
  }
  if (req->job_id().empty()) req->set_job_id(m->job->id());
  if (req->generation() == 0) req->set_generation(m->generation);
  if (req->rank() == 0) req->set_rank(m->rank);
  if (req->job_id() != m->job->id() || req->generation() != m->generation || req->rank() != m->rank) {
    return WithJobContext(m->job->id(), absl::InvalidArgumentError(absl::StrCat(
                                            "a session's steps act as its member (generation ", m->generation, " rank ",
                                            m->rank, "); this ", Request::descriptor()->name(), " names job ",
                                            req->job_id(), " generation ", req->generation(), " rank ", req->rank())));
  }
  return absl::OkStatus();
}

// The steps a session call may have, in the order they run (SessionRequest's field order), each served by
// its job call (job_calls.h) exactly as the unary RPC of the same name.
struct Step {
  const char* metric;  // Metrics::CallFinished's name of a call starting here
  bool (v1::SessionRequest::*has)() const;
  // Acts as the session's member (AsMember), or null: record and join, which come before there is one.
  absl::Status (*as_member)(const std::optional<Member>&, v1::SessionRequest&);
  WaitingCall (*run)(const JobCalls&, const Caller&, Call&, StatusDone);
};

constexpr int kJoin = 1;  // the step that makes a stream a member's session
const Step kSteps[] = {
    {"Session:record", &v1::SessionRequest::has_record, nullptr,
     [](const JobCalls& calls, const Caller& caller, Call& call, StatusDone done) {
       return calls.Record(caller, *call.request.mutable_record(), Millis(0), call.answer.mutable_record(),
                           std::move(done));
     }},
    {"Session:join", &v1::SessionRequest::has_join, nullptr,
     [](const JobCalls& calls, const Caller& caller, Call& call, StatusDone done) {
       v1::JoinRequest& req = *call.request.mutable_join();
       return calls.Join(caller, req, calls.Wait(req.wait_timeout_ms()), call.answer.mutable_join(), std::move(done));
     }},
    {"Session:merge_config", &v1::SessionRequest::has_merge_config,
     [](const std::optional<Member>& m, v1::SessionRequest& r) { return AsMember(m, r.mutable_merge_config()); },
     [](const JobCalls& calls, const Caller& caller, Call& call, StatusDone done) {
       return calls.Merge(caller, *call.request.mutable_merge_config(), Millis(0), call.answer.mutable_merge_config(),
                          std::move(done));
     }},
    {"Session:publish_unique_id", &v1::SessionRequest::has_publish_unique_id,
     [](const std::optional<Member>& m, v1::SessionRequest& r) { return AsMember(m, r.mutable_publish_unique_id()); },
     [](const JobCalls& calls, const Caller& caller, Call& call, StatusDone done) {
       return calls.PublishUniqueId(caller, *call.request.mutable_publish_unique_id(), Millis(0), &call.published,
                                    std::move(done));
     }},
    {"Session:get_unique_id", &v1::SessionRequest::has_get_unique_id,
     [](const std::optional<Member>& m, v1::SessionRequest& r) { return AsMember(m, r.mutable_get_unique_id()); },
     [](const JobCalls& calls, const Caller& caller, Call& call, StatusDone done) {
       v1::GetUniqueIdRequest& req = *call.request.mutable_get_unique_id();
       return calls.GetUniqueId(caller, req, calls.Wait(req.wait_timeout_ms()), &call.unique_ids, std::move(done));
     }},
    {"Session:barrier", &v1::SessionRequest::has_barrier,
     [](const std::optional<Member>& m, v1::SessionRequest& r) { return AsMember(m, r.mutable_barrier()); },
     [](const JobCalls& calls, const Caller& caller, Call& call, StatusDone done) {
       v1::BarrierRequest& req = *call.request.mutable_barrier();
       return calls.Barrier(caller, req, calls.Wait(req.wait_timeout_ms()), &call.barrier, std::move(done));
     }},
    {"Session:leave", &v1::SessionRequest::has_leave,
     [](const std::optional<Member>& m, v1::SessionRequest& r) { return AsMember(m, r.mutable_leave()); },
     [](const JobCalls& calls, const Caller& caller, Call& call, StatusDone done) {
       return calls.Leave(caller, *call.request.mutable_leave(), Millis(0), &call.left, std::move(done));
     }},
};
constexpr int kStepCount = sizeof(kSteps) / sizeof(kSteps[0]);

bool HasAnyStep(const v1::SessionRequest& r) {
  for (const Step& step : kSteps) {
    if ((r.*step.has)()) return true;
  }
  return false;
}

class SessionReactor final : public grpc::ServerBidiReactor<grpc::ByteBuffer, grpc::ByteBuffer> {
 public:
  static SessionReactor* Start(grpc::CallbackServerContext* ctx, const JobCalls* calls,
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
        const v1::SessionRequest& first = message.batch_size() > 0 ? message.batch(0) : message;
        const std::string& job = first.has_join() ? first.join().job_id() : first.job_id();
        status = ValidateJobId(job).ok() ? WithJobContext(job, caller.status()) : caller.status();
      }
    }
    if (status.ok() && message.batch_size() > 0) {
      status = CheckBatch(message);
      for (int i = 0; status.ok() && i < message.batch_size(); ++i) status = Handle(*message.mutable_batch(i));
    } else if (status.ok()) {
      status = Handle(message);
    }
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
    if (ok && writes_.empty() && !batching_.empty()) QueueBatchLocked();
    if (ok && !writes_.empty()) return StartWrite(&writes_.front());
    writes_.clear();
    batching_.clear();
    writing_ = false;
    if (ending_) FinishLocked();
  }

  void OnDone() override {
    CancelWaits();
    std::map<uint32_t, Member> members;
    bool several = false;
    {
      MutexLock lock(&mu_);
      members.swap(members_);
      several = several_;
    }
    if (!several) {
      for (const auto& [slot, m] : members) m.job->CloseSession(m.generation, m.rank, id_);
    } else if (!members.empty()) {  // one job: its host's ranks, by generation
      std::map<uint64_t, std::vector<int>> ranks;
      for (const auto& [slot, m] : members) ranks[m.generation].push_back(m.rank);
      for (auto& [generation, of] : ranks) {
        std::sort(of.begin(), of.end());
        members.begin()->second.job->CloseSessions(generation, std::move(of), id_, /*several=*/true, "");
      }
    }
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
  SessionReactor(grpc::CallbackServerContext* ctx, const JobCalls* calls, const std::string& admin_token_sha256)
      : ctx_(ctx), calls_(calls), admin_token_sha256_(admin_token_sha256), id_(NextId()) {}

  static uint64_t NextId() {
    static std::atomic<uint64_t> next{1};
    return next.fetch_add(1);
  }

  std::optional<Member> member(uint32_t slot) {
    MutexLock lock(&mu_);
    auto it = members_.find(slot);
    if (it == members_.end()) return std::nullopt;
    return it->second;
  }

  // A message with a batch carries nothing else, and none of its messages carries a batch.
  absl::Status CheckBatch(const v1::SessionRequest& message) {
    if (message.call_id() != 0 || !message.job_id().empty() || message.generation() != 0 || message.rank() != 0 ||
        message.member() != 0 || !message.gone().empty() || message.has_progress() || HasAnyStep(message)) {
      return absl::InvalidArgumentError("a session message with a batch carries nothing but its batch");
    }
    if (message.batch_size() > kMaxSessionBatch) {
      return absl::InvalidArgumentError(
          absl::StrCat("a batch of ", message.batch_size(), " messages; at most ", kMaxSessionBatch));
    }
    for (int i = 0; i < message.batch_size(); ++i) {
      if (message.batch(i).batch_size() > 0) {
        return absl::InvalidArgumentError(absl::StrCat("batch[", i, "] carries a batch of its own"));
      }
    }
    MutexLock lock(&mu_);
    several_ = true;
    return absl::OkStatus();
  }

  // One message, alone or from a batch.
  absl::Status Handle(v1::SessionRequest& message) {
    if (message.member() >= kMaxSessionMembers) {
      return absl::InvalidArgumentError(
          absl::StrCat("member ", message.member(), " is not a slot of a session (0..", kMaxSessionMembers - 1, ")"));
    }
    if (message.gone().size() > kMaxReasonBytes) {
      return absl::InvalidArgumentError(
          absl::StrCat("gone is ", message.gone().size(), " bytes; at most ", kMaxReasonBytes));
    }
    if (message.member() != 0) {
      MutexLock lock(&mu_);
      several_ = true;
    }
    return message.call_id() == 0 ? Heartbeat(message) : StartCall(std::move(message));
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
    const uint32_t slot = message.member();
    v1::HeartbeatRequest beat;
    beat.set_job_id(message.job_id());
    beat.set_generation(message.generation());
    beat.set_rank(message.rank());
    if (!message.gone().empty()) return Gone(slot, message.gone());
    if (absl::Status s = CheckRequest(beat); !s.ok()) return s;
    std::optional<TrainingProgress> progress;
    if (message.has_progress()) progress = TrainingProgressFromProto(message.progress());
    std::optional<Member> m = member(slot);
    if (!m) {  // the first heartbeat opens the session of an existing member
      absl::StatusOr<std::shared_ptr<Job>> job = calls_->ExistingJob(beat.job_id());
      if (!job.ok()) return job.status();
      absl::StatusOr<Millis> lease = Bind(slot, *job, beat.generation(), beat.rank());
      if (!lease.ok()) return lease.status();
      v1::SessionEvent event;
      event.set_lease_ms(static_cast<uint32_t>(lease->count()));
      Send(slot, event, nullptr);
      if (!progress) return absl::OkStatus();
      m = member(slot);
    }
    if (beat.job_id() != m->job->id() || beat.generation() != m->generation || beat.rank() != m->rank) {
      return WithJobContext(m->job->id(), absl::InvalidArgumentError(absl::StrCat(
                                              "a session's heartbeats must name the member that opened it (generation ",
                                              m->generation, " rank ", m->rank, "); this one names job ", beat.job_id(),
                                              " generation ", beat.generation(), " rank ", beat.rank())));
    }
    return m->job->Heartbeat(*caller_, m->generation, m->rank, progress ? &*progress : nullptr).status();
  }

  // The member of `slot` is gone (its agent saw its process exit): as if its own session had closed.
  absl::Status Gone(uint32_t slot, const std::string& why) {
    std::optional<Member> m;
    {
      MutexLock lock(&mu_);
      auto it = members_.find(slot);
      if (it == members_.end()) {
        return absl::FailedPreconditionError(absl::StrCat("member slot ", slot, " of this session holds no member"));
      }
      m = it->second;
      members_.erase(it);
    }
    m->job->CloseSessions(m->generation, {m->rank}, id_, /*several=*/false, why);
    return absl::OkStatus();
  }

  // Makes `slot` of this stream the session of member `rank` of `generation` in `job`; returns its lease.
  absl::StatusOr<Millis> Bind(uint32_t slot, std::shared_ptr<Job> job, uint64_t generation, int rank) {
    {
      MutexLock lock(&mu_);
      for (const auto& [other, m] : members_) {
        if (m.job->id() != job->id()) {
          return WithJobContext(job->id(), absl::FailedPreconditionError(absl::StrCat(
                                               "a session's members are of one job; member slot ", other,
                                               " of this session is job ", m.job->id(), "'s")));
        }
      }
    }
    std::weak_ptr<SessionReactor> weak = self_;
    absl::StatusOr<Millis> lease = job->OpenSession(*caller_, generation, rank, id_, [weak](absl::Status why) {
      if (auto reactor = weak.lock()) reactor->End(why);
    });
    if (!lease.ok()) return lease.status();
    MutexLock lock(&mu_);
    members_[slot] = Member{std::move(job), generation, rank};
    return lease;
  }

  // --- calls ----------------------------------------------------------------------------------------------

  absl::Status StartCall(v1::SessionRequest message) {
    const uint64_t id = message.call_id();
    auto call = std::make_shared<Call>();
    call->slot = message.member();
    call->request = std::move(message);
    call->answer.set_call_id(id);
    {
      MutexLock lock(&mu_);
      if (in_flight_.count(id) > 0) {
        return absl::InvalidArgumentError(absl::StrCat("call_id ", id, " is already in flight on this session"));
      }
      if (calls_of_slot_[call->slot] >= kMaxSessionCalls) {
        return absl::InvalidArgumentError(absl::StrCat("call ", id, ": a session has at most ", kMaxSessionCalls,
                                                       " calls in flight", several_ ? " per member" : ""));
      }
      ++calls_of_slot_[call->slot];
      in_flight_[id] = WaitingCall{};
    }
    for (int step = kStepCount - 1; step >= 0; --step) {
      if ((call->request.*kSteps[step].has)()) call->first_step = step;
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
    while (call->step < kStepCount && !(call->request.*kSteps[call->step].has)()) ++call->step;
    if (call->step == kStepCount) return Answer(call, absl::OkStatus());
    const int step = call->step;
    std::weak_ptr<SessionReactor> weak = self_;
    StatusDone next = [weak, call, step](absl::Status status) {
      std::shared_ptr<SessionReactor> self = weak.lock();
      if (!self) return;
      {
        MutexLock lock(&self->mu_);
        call->step = step + 1;
        if (step == kJoin) self->joining_.erase(call->slot);
        if (auto it = self->in_flight_.find(call->answer.call_id()); it != self->in_flight_.end()) it->second = {};
      }
      if (status.ok() && step == kJoin) status = self->JoinAnswered(call.get());
      if (!status.ok()) return self->Answer(call, status);
      self->RunSteps(call);
    };
    if (absl::Status s = Admit(*call, step); !s.ok()) return Answer(call, s);
    WaitingCall parked = kSteps[step].run(*calls_, *caller_, *call, std::move(next));
    if (!parked.job) return;
    MutexLock lock(&mu_);
    auto it = in_flight_.find(call->answer.call_id());
    if (call->step == step && it != in_flight_.end()) it->second = std::move(parked);  // still waiting
  }

  // Whether step `step` of `call` may run on this session: a join only on a session with no member and no
  // join in flight; the others only as its member.
  absl::Status Admit(Call& call, int step) {
    if (kSteps[step].as_member) return kSteps[step].as_member(member(call.slot), call.request);
    if (step != kJoin) return absl::OkStatus();
    MutexLock lock(&mu_);
    auto m = members_.find(call.slot);
    if (m != members_.end() || joining_.count(call.slot) > 0) {
      const std::string session = several_ ? absl::StrCat("member slot ", call.slot, " of this session") : "this session";
      return absl::FailedPreconditionError(
          m != members_.end() ? absl::StrCat(session, " is rank ", m->second.rank, "'s of generation ",
                                             m->second.generation, " already: join the next generation on a new session")
                              : absl::StrCat(session, " has a join in flight already"));
    }
    joining_.insert(call.slot);
    return absl::OkStatus();
  }

  // A join step answered: this stream becomes the new member's session.
  absl::Status JoinAnswered(Call* call) {
    const v1::JoinResponse& join = call->answer.join();
    absl::StatusOr<std::shared_ptr<Job>> job = calls_->ExistingJob(call->request.join().job_id());
    if (!job.ok()) return job.status();
    absl::StatusOr<Millis> lease = Bind(call->slot, *std::move(job), join.generation(), join.rank());
    if (!lease.ok()) return lease.status();
    call->answer.set_lease_ms(static_cast<uint32_t>(lease->count()));
    return absl::OkStatus();
  }

  void Answer(const std::shared_ptr<Call>& call, const absl::Status& status) {
    v1::SessionEvent& answer = call->answer;
    {
      MutexLock lock(&mu_);
      in_flight_.erase(answer.call_id());
      if (--calls_of_slot_[call->slot] == 0) calls_of_slot_.erase(call->slot);
    }
    if (!status.ok()) {
      answer.set_status_code(static_cast<int>(status.code()));
      answer.set_status_message(std::string(status.message()));
      if (std::optional<std::string> context = ErrorContext(status)) answer.set_status_context(*context);
    }
    if (Metrics* metrics = calls_->metrics()) {
      metrics->CallFinished(call->first_step < 0 ? "Session:none" : kSteps[call->first_step].metric,
                            absl::StatusCodeToString(status.code()),
                            std::chrono::duration<double>(std::chrono::steady_clock::now() - call->start).count());
    }
    const bool answered_ids = status.ok() && call->request.has_get_unique_id();
    Send(call->slot, answer, answered_ids ? &call->unique_ids : nullptr);
  }

  // Queues `event` for `slot` (with `ids` as its unique_ids). On a stream of one member each event is one
  // message; on a stream of several, the events queued while a write is out go together, as one batch.
  void Send(uint32_t slot, v1::SessionEvent& event, const UniqueIdAnswer* ids) {
    if (slot != 0) event.set_member(slot);
    AnswerBytes bytes;
    bytes.Append(event);
    if (ids) bytes.AppendField(v1::SessionEvent::kUniqueIdsFieldNumber, UniqueIdBytes(*ids));
    MutexLock lock(&mu_);
    if (ending_) return;
    if (several_) {
      batching_.push_back(std::move(bytes));
      if (writing_) return;
      QueueBatchLocked();
    } else {
      writes_.push_back(bytes.ToByteBuffer());
      if (writing_) return;
    }
    writing_ = true;
    StartWrite(&writes_.front());
  }

  // The events batching as one message, queued for writing.
  void QueueBatchLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    AnswerBytes batch;
    for (const AnswerBytes& event : batching_) batch.AppendField(v1::SessionEvent::kBatchFieldNumber, event);
    batching_.clear();
    writes_.push_back(batch.ToByteBuffer());
  }

  void FinishLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    if (finished_) return;
    finished_ = true;
    if (Metrics* metrics = calls_->metrics()) {
      metrics->CallFinished("Session", absl::StatusCodeToString(static_cast<absl::StatusCode>(status_.error_code())),
                            std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count());
    }
    Finish(status_);
  }

  grpc::CallbackServerContext* const ctx_;
  const JobCalls* const calls_;
  const std::string admin_token_sha256_;
  const uint64_t id_;  // this session's, for Job::OpenSession / CloseSession
  const std::chrono::steady_clock::time_point start_ = std::chrono::steady_clock::now();
  std::shared_ptr<SessionReactor> self_;  // until OnDone
  grpc::ByteBuffer in_;
  // Set by the first message, on gRPC's reaction thread, before any call starts; read-only afterwards.
  std::optional<Caller> caller_;

  Mutex mu_;
  std::map<uint32_t, Member> members_ ABSL_GUARDED_BY(mu_);  // by slot
  std::set<uint32_t> joining_ ABSL_GUARDED_BY(mu_);           // the slots with a join step in flight
  bool several_ ABSL_GUARDED_BY(mu_) = false;  // the client used a slot other than 0, or a batch
  std::map<uint64_t, WaitingCall> in_flight_ ABSL_GUARDED_BY(mu_);  // in flight, by call_id: the wait each is in
  std::map<uint32_t, int> calls_of_slot_ ABSL_GUARDED_BY(mu_);      // how many of them each slot has
  std::deque<grpc::ByteBuffer> writes_ ABSL_GUARDED_BY(mu_);        // the front one is being written
  std::vector<AnswerBytes> batching_ ABSL_GUARDED_BY(mu_);  // with several_: the events the next write carries
  bool writing_ ABSL_GUARDED_BY(mu_) = false;
  bool ending_ ABSL_GUARDED_BY(mu_) = false;
  bool finished_ ABSL_GUARDED_BY(mu_) = false;
  grpc::Status status_ ABSL_GUARDED_BY(mu_);
};

}  // namespace

grpc::ServerBidiReactor<grpc::ByteBuffer, grpc::ByteBuffer>* StartSession(grpc::CallbackServerContext* ctx,
                                                                          const JobCalls* calls,
                                                                          const std::string& admin_token_sha256) {
  return SessionReactor::Start(ctx, calls, admin_token_sha256);
}

}  // namespace tpcoord
