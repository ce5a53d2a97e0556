#include "client/member_session.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <condition_variable>
#include <map>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <utility>

#include "absl/strings/str_cat.h"
#include "client/backoff.h"
#include "client/client_rpc.h"
#include "common/secrets.h"
#include "common/wire.h"

namespace tpcoord {
namespace {
using Clock = std::chrono::steady_clock;
using SessionStream = grpc::ClientReaderWriter<v1::SessionRequest, v1::SessionEvent>;

// The stream ended with the coordinator's verdict, not for want of a coordinator.
bool Verdict(grpc::StatusCode code) {
  switch (code) {
    case grpc::StatusCode::ABORTED:
    case grpc::StatusCode::FAILED_PRECONDITION:
    case grpc::StatusCode::NOT_FOUND:
    case grpc::StatusCode::PERMISSION_DENIED:
    case grpc::StatusCode::UNAUTHENTICATED:
    case grpc::StatusCode::INVALID_ARGUMENT: return true;
    default: return false;
  }
}
}  // namespace

class MemberSession::Impl {
 public:
  Impl(CoordinatorClient::Impl* client, std::string member_key, std::optional<Membership> membership,
       std::function<void(absl::Status)> on_lost)
      : client_(client),
        member_key_(member_key.empty() ? RandomSecret() : std::move(member_key)),
        on_lost_(std::move(on_lost)),
        membership_(std::move(membership)),
        thread_([this] { Run(); }) {}
  ~Impl();

  CoordinatorClient::Impl* client() const { return client_; }
  const std::string& member_key() const { return member_key_; }

  // The membership this session holds: FAILED_PRECONDITION before its Join was answered.
  absl::StatusOr<Membership> membership() {
    std::lock_guard<std::mutex> lock(mu_);
    if (!membership_) return absl::FailedPreconditionError("this member session has not joined yet");
    return *membership_;
  }
  void SetMembership(Membership m) {
    {
      std::lock_guard<std::mutex> lock(mu_);
      membership_ = std::move(m);
    }
    wake_.notify_all();  // heartbeats start
  }

  // Sends a call of `steps` and waits for its answer, for at most `patience` (0: a call that does not park,
  // which waits as long as the session may be re-opened, plus one call_timeout).
  absl::StatusOr<v1::SessionEvent> Call(v1::SessionRequest steps, Millis patience = Millis(0));

  // Writes `beat` (a heartbeat with more in it) as the member's, if a stream is open and there is a member.
  void SendHeartbeat(v1::SessionRequest beat) {
    std::lock_guard<std::mutex> write(write_mu_);
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (!membership_ || !open_ || stopping_) return;
      beat.set_job_id(membership_->job_id);
      beat.set_generation(membership_->generation);
      beat.set_rank(membership_->rank);
    }
    if (stream_ != nullptr) stream_->Write(beat);
  }

  bool WaitUntilOpen(Millis timeout) {
    std::unique_lock<std::mutex> lock(mu_);
    return wake_.wait_for(lock, timeout, [this] { return open_; });
  }

 private:
  struct Pending {
    v1::SessionRequest request;
    uint64_t sent_on = 0;  // the stream it was last written to (guarded by write_mu_)
    std::optional<v1::SessionEvent> answer;
  };

  void Run();
  // One stream, until it ends: its final status (OK once stopping).
  grpc::Status Stream(bool* opened);
  // Writes `p` to the current stream unless it went there already. Needs write_mu_.
  void SendLocked(Pending* p);

  CoordinatorClient::Impl* const client_;
  const std::string member_key_;
  const std::function<void(absl::Status)> on_lost_;

  std::mutex mu_;
  std::condition_variable wake_;
  bool stopping_ = false;
  bool open_ = false;  // the coordinator holds the member's session
  std::optional<Membership> membership_;
  std::optional<absl::Status> lost_;      // the session is over: every call answers this
  std::map<uint64_t, Pending*> pending_;  // calls in flight, by call_id
  uint64_t next_call_ = 1;
  grpc::ClientContext* stream_ctx_ = nullptr;  // the open stream's, while there is one

  std::mutex write_mu_;              // one writer at a time on the stream; taken before mu_, never after
  SessionStream* stream_ = nullptr;  // guarded by write_mu_
  uint64_t stream_number_ = 0;       // guarded by write_mu_
  std::thread thread_;               // last
};

MemberSession::Impl::~Impl() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stopping_ = true;
    if (!lost_) lost_ = absl::CancelledError("the member session was closed");
    if (stream_ctx_) stream_ctx_->TryCancel();
  }
  wake_.notify_all();
  thread_.join();
}

void MemberSession::Impl::SendLocked(Pending* p) {
  if (stream_ == nullptr || p->sent_on == stream_number_) return;
  p->sent_on = stream_number_;
  stream_->Write(p->request);  // a broken stream fails here; its end sends the call again on the next one
}

absl::StatusOr<v1::SessionEvent> MemberSession::Impl::Call(v1::SessionRequest steps, Millis patience) {
  Pending p;
  p.request = std::move(steps);
  if (patience == Millis(0)) patience = client_->options.retry_budget + client_->options.call_timeout;
  const Clock::time_point give_up = Clock::now() + patience;
  uint64_t id;
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (lost_) return *lost_;
    id = next_call_++;
    p.request.set_call_id(id);
    pending_[id] = &p;
  }
  {
    std::lock_guard<std::mutex> write(write_mu_);
    SendLocked(&p);
  }
  std::unique_lock<std::mutex> lock(mu_);
  wake_.wait_until(lock, give_up, [&] { return p.answer.has_value() || lost_.has_value(); });
  pending_.erase(id);
  if (!p.answer) {
    if (lost_) return *lost_;
    return absl::DeadlineExceededError(absl::StrCat("no answer from the coordinator at ", client_->options.address,
                                                    " on this member's session within ", patience.count(), " ms"));
  }
  const v1::SessionEvent& a = *p.answer;
  if (a.status_code() != 0) return CoordinatorAnswer(a.status_code(), a.status_message(), a.status_context());
  return std::move(*p.answer);
}

void MemberSession::Impl::Run() {
  const ClientOptions& options = client_->options;
  Clock::time_point last_open = Clock::now();
  Backoff backoff(options.initial_backoff, options.max_backoff);
  while (true) {
    bool opened = false;
    const grpc::Status s = Stream(&opened);
    std::unique_lock<std::mutex> lock(mu_);
    open_ = false;
    if (stopping_) return;
    if (opened) {
      last_open = Clock::now();
      backoff.Reset();
    }
    absl::Status lost;
    if (Verdict(s.error_code())) {
      lost = absl::Status(static_cast<absl::StatusCode>(s.error_code()), s.error_message());
    } else if (Clock::now() - last_open > options.retry_budget) {
      lost = absl::UnavailableError(
          absl::StrCat("the coordinator at ", options.address, " has not held this member's session for ",
                       std::chrono::duration_cast<std::chrono::seconds>(Clock::now() - last_open).count(),
                       " s: ", s.error_message()));
    }
    if (!lost.ok()) {
      lost_ = lost;
      const bool member = membership_.has_value();
      lock.unlock();
      wake_.notify_all();  // calls in flight answer it
      if (member) on_lost_(lost);
      return;
    }
    if (wake_.wait_for(lock, backoff.Next(), [this] { return stopping_; })) return;
  }
}

grpc::Status MemberSession::Impl::Stream(bool* opened) {
  // Nothing else moves a failed connection forward when the session is this client's only traffic (its
  // stream does not wait for ready: see Reachable), so the session waits for it here, with one coordinator
  // too.
  const Clock::time_point since = Clock::now();
  if (Targets::Target* target = client_->targets.Current();
      !target->channel->WaitForConnected(std::chrono::system_clock::now() + Millis(1000))) {
    client_->targets.NoteUnreachable(target, since);
    client_->targets.Follow(target, "");
    return grpc::Status(grpc::StatusCode::UNAVAILABLE,
                        absl::StrCat("cannot connect to the coordinator at ", target->address));
  }
  grpc::ClientContext ctx;  // not wait_for_ready: an unreachable coordinator fails the stream, and Run retries
  client_->targets.AddCredentials(&ctx, member_key_);
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (stopping_) return grpc::Status::OK;
    stream_ctx_ = &ctx;
  }
  Targets::Target* target = client_->targets.Current();
  std::unique_ptr<SessionStream> stream = target->stub->Session(&ctx);
  // A member opens its session with a heartbeat before anything else; then every call in flight goes again.
  {
    std::lock_guard<std::mutex> write(write_mu_);
    stream_ = stream.get();
    ++stream_number_;
    std::lock_guard<std::mutex> lock(mu_);
    if (membership_) {
      v1::SessionRequest beat;
      beat.set_job_id(membership_->job_id);
      beat.set_generation(membership_->generation);
      beat.set_rank(membership_->rank);
      stream->Write(beat);
    }
    for (auto& [id, p] : pending_) SendLocked(p);
  }
  // The reader hands answers to their calls and sees the stream's end the moment the coordinator ends it;
  // this thread beats until then.
  bool ended = false;
  std::thread reader([&] {
    v1::SessionEvent event;
    while (stream->Read(&event)) {
      if (!*opened) client_->targets.NoteReachable();
      *opened = true;
      std::lock_guard<std::mutex> lock(mu_);
      if (event.lease_ms() > 0 && event.status_code() == 0) open_ = true;
      auto it = pending_.find(event.call_id());
      if (event.call_id() != 0 && it != pending_.end()) {
        if (event.status_code() == static_cast<int>(grpc::StatusCode::UNAVAILABLE)) {
          // The coordinator cannot serve the call now (it is stopping): like a unary call, it goes again, on
          // the next stream, once this one is given up.
          ctx.TryCancel();
        } else {
          it->second->answer = std::move(event);
        }
      }
      wake_.notify_all();
    }
    std::lock_guard<std::mutex> lock(mu_);
    ended = true;
    wake_.notify_all();
  });
  while (true) {
    v1::SessionRequest beat;
    {
      std::unique_lock<std::mutex> lock(mu_);
      const Millis interval = membership_ ? std::max(membership_->heartbeat_interval, Millis(10)) : Millis(3600000);
      const bool had_membership = membership_.has_value();
      if (wake_.wait_for(lock, interval,
                         [&] { return stopping_ || ended || membership_.has_value() != had_membership; })) {
        if (stopping_ || ended) break;
        continue;  // it just joined: beat from now on
      }
      beat.set_job_id(membership_->job_id);
      beat.set_generation(membership_->generation);
      beat.set_rank(membership_->rank);
    }
    std::lock_guard<std::mutex> write(write_mu_);
    if (!stream->Write(beat)) break;
  }
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (stopping_) ctx.TryCancel();
  }
  reader.join();
  {
    std::lock_guard<std::mutex> write(write_mu_);
    stream_ = nullptr;
  }
  grpc::Status status = stream->Finish();
  // A standby, or a coordinator gone: the session moves to the leader (the membership stays the same).
  if (status.error_code() == grpc::StatusCode::UNAVAILABLE || status.error_code() == grpc::StatusCode::CANCELLED) {
    client_->targets.Follow(target, LeaderNamedIn(ctx));
  }
  std::lock_guard<std::mutex> lock(mu_);
  stream_ctx_ = nullptr;
  return stopping_ ? grpc::Status::OK : status;
}

// --- the calls ------------------------------------------------------------------------------------------

MemberSession::MemberSession(CoordinatorClient* client, std::string member_key,
                             std::function<void(absl::Status)> on_lost)
    : impl_(std::make_unique<Impl>(client->impl(), std::move(member_key), std::nullopt, std::move(on_lost))) {}

MemberSession::MemberSession(CoordinatorClient* client, Membership membership,
                             std::function<void(absl::Status)> on_lost)
    : impl_(std::make_unique<Impl>(client->impl(), std::string(membership.member_key),
                                   std::optional<Membership>(membership), std::move(on_lost))) {}

MemberSession::~MemberSession() = default;

bool MemberSession::WaitUntilOpen(Millis timeout) { return impl_->WaitUntilOpen(timeout); }

void MemberSession::ReportProgress(const TrainingProgress& progress) {
  // The coordinator ends a session whose report is not valid: a rate that is not a number (a step timed at
  // 0 s) goes as 0, and a report that is still not valid (a step out of range) does not go at all.
  auto rate = [](double value) { return std::isfinite(value) && value >= 0 ? value : 0.0; };
  TrainingProgress sent = progress;
  sent.tokens_per_second = rate(progress.tokens_per_second);
  sent.step_seconds = rate(progress.step_seconds);
  if (!CheckTrainingProgress(sent).ok()) return;
  v1::SessionRequest beat;
  TrainingProgressToProto(sent, beat.mutable_progress());
  impl_->SendHeartbeat(std::move(beat));
}

absl::StatusOr<Membership> MemberSession::Join(const JoinRequest& request, Millis wait) {
  v1::SessionRequest steps;
  *steps.mutable_join() = JoinRequestToProto(request);
  steps.mutable_join()->set_wait_timeout_ms(WaitMillis(wait));
  absl::StatusOr<v1::SessionEvent> answer = impl_->Call(std::move(steps), wait + impl_->client()->options.wait_slack);
  if (!answer.ok()) return answer.status();
  absl::StatusOr<Membership> m = MembershipFrom(request.job_id, impl_->member_key(), answer->join());
  if (m.ok()) impl_->SetMembership(*m);
  return m;
}

absl::StatusOr<std::string> MemberSession::MergeConfig(const std::string& config_json, bool has_mpu) {
  v1::SessionRequest steps;
  steps.mutable_merge_config()->set_config_json(config_json);
  steps.mutable_merge_config()->set_has_mpu(has_mpu);
  absl::StatusOr<v1::SessionEvent> answer = impl_->Call(std::move(steps));
  if (!answer.ok()) return answer.status();
  return std::move(*answer->mutable_merge_config()->mutable_merged_config_json());
}

absl::StatusOr<UniqueIds> MemberSession::ExchangeUniqueIds(const Membership& m, const UniqueIds& mine,
                                                           const std::vector<GroupId>& theirs, Millis wait) {
  v1::SessionRequest steps;
  if (!mine.empty()) *steps.mutable_publish_unique_id() = PublishRequestOf(m, mine);
  if (!theirs.empty()) {
    *steps.mutable_get_unique_id() = GetRequestOf(m, theirs);
    steps.mutable_get_unique_id()->set_wait_timeout_ms(WaitMillis(wait));
  }
  if (mine.empty() && theirs.empty()) return UniqueIds();
  absl::StatusOr<v1::SessionEvent> answer =
      impl_->Call(std::move(steps), theirs.empty() ? Millis(0) : wait + impl_->client()->options.wait_slack);
  if (!answer.ok()) return answer.status();
  return UniqueIdsFrom(answer->mutable_unique_ids());
}

absl::Status MemberSession::Barrier(const std::string& name, Millis wait) {
  absl::StatusOr<Membership> m = impl_->membership();
  if (!m.ok()) return m.status();
  v1::SessionRequest steps;
  *steps.mutable_barrier() = impl_->client()->BarrierRequestOf(*m, name);
  steps.mutable_barrier()->set_wait_timeout_ms(WaitMillis(wait));
  return impl_->Call(std::move(steps), wait + impl_->client()->options.wait_slack).status();
}

absl::Status MemberSession::Leave(bool finished, const std::string& reason, bool fatal) {
  absl::StatusOr<Membership> m = impl_->membership();
  if (!m.ok()) return m.status();
  v1::SessionRequest steps;
  *steps.mutable_leave() = LeaveRequestOf(*m, finished, reason, fatal);
  return impl_->Call(std::move(steps)).status();
}

}  // namespace tpcoord
