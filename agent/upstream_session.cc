#include "agent/upstream_session.h"

#include <utility>

#include "common/limits.h"

namespace tpcoord {

std::shared_ptr<UpstreamSession> UpstreamSession::Open(Targets* targets, const std::string& member_key,
                                                       Ended ended) {
  std::shared_ptr<UpstreamSession> session(new UpstreamSession(targets, targets->Current(), std::move(ended)));
  session->self_ = session;
  targets->AddCredentials(&session->ctx_, member_key);
  session->target_->stub->async()->Session(&session->ctx_, session.get());
  session->StartRead(&session->in_);
  session->StartCall();
  return session;
}

std::optional<uint32_t> UpstreamSession::Attach(std::weak_ptr<LocalSessionSink> local) {
  MutexLock lock(&mu_);
  if (closing_ || done_ || broken_) return std::nullopt;
  for (uint32_t slot = 0; slot < kMaxSessionMembers; ++slot) {
    if (slots_.count(slot) > 0) continue;
    slots_[slot].local = std::move(local);
    return slot;
  }
  return std::nullopt;
}

void UpstreamSession::CancelAndWait(std::chrono::milliseconds timeout) {
  ctx_.TryCancel();
  const auto give_up = std::chrono::steady_clock::now() + timeout;
  MutexLock lock(&mu_);
  while (!finished_ && finished_cv_.WaitUntil(give_up)) {
  }
}

bool UpstreamSession::Closing() {
  MutexLock lock(&mu_);
  return closing_ || done_ || broken_;
}

void UpstreamSession::Send(uint32_t slot, v1::SessionRequest message) {
  MutexLock lock(&mu_);
  if (AddLocked(slot, message)) WriteLocked();
}

void UpstreamSession::SendAll(std::vector<std::pair<uint32_t, v1::SessionRequest>> messages) {
  MutexLock lock(&mu_);
  for (auto& [slot, message] : messages) AddLocked(slot, message);
  WriteLocked();
}

void UpstreamSession::SendBeats(std::vector<Beat> beats) {
  MutexLock lock(&mu_);
  for (Beat& beat : beats) {
    auto it = slots_.find(beat.slot);
    if (it == slots_.end() || it->second.local.owner_before(beat.from) || beat.from.owner_before(it->second.local)) {
      continue;  // the slot is another session's now
    }
    AddLocked(beat.slot, beat.message);
  }
  WriteLocked();
}

bool UpstreamSession::AddLocked(uint32_t slot, v1::SessionRequest& message) {
  auto it = slots_.find(slot);
  if (done_ || broken_ || it == slots_.end() || it->second.detached) return false;
  message.set_member(slot);
  if (message.call_id() != 0) {
    const uint64_t id = next_call_++;
    calls_[id] = InFlight{slot, message.call_id(), nullptr};
    it->second.calls.insert(id);
    message.set_call_id(id);
  }
  queued_.push_back(std::move(message));
  return true;
}

void UpstreamSession::Call(uint32_t slot, v1::SessionRequest message, CallDone done) {
  {
    MutexLock lock(&mu_);
    auto it = slots_.find(slot);
    if (!done_ && !broken_ && it != slots_.end() && !it->second.detached) {
      const uint64_t id = next_call_++;
      calls_[id] = InFlight{slot, 0, std::move(done)};
      it->second.calls.insert(id);
      message.set_member(slot);
      message.set_call_id(id);
      QueueLocked(std::move(message));
      return;
    }
  }
  v1::SessionEvent unavailable;
  unavailable.set_status_code(static_cast<int>(grpc::StatusCode::UNAVAILABLE));
  unavailable.set_status_message("tp-agent's session with the coordinator ended before the call went up");
  done(unavailable);
}

void UpstreamSession::Detach(uint32_t slot, const std::string& why) {
  MutexLock lock(&mu_);
  auto it = slots_.find(slot);
  if (done_ || it == slots_.end() || it->second.detached) return;
  it->second.detached = true;
  it->second.local.reset();
  SettleLocked(slot, why);
  bool attached = false;
  for (const auto& [other, s] : slots_) attached = attached || !s.detached;
  if (!attached) {
    closing_ = true;
    WriteLocked();
  }
}

void UpstreamSession::SettleLocked(uint32_t slot, const std::string& why) {
  auto it = slots_.find(slot);
  if (it == slots_.end() || !it->second.detached) return;
  if (it->second.bound) {
    v1::SessionRequest gone;
    gone.set_member(slot);
    gone.set_gone(why.substr(0, kMaxReasonBytes));
    QueueLocked(std::move(gone));
  } else if (!it->second.calls.empty()) {
    return;  // a join may still make it a member: decided by its answer
  }
  for (uint64_t id : it->second.calls) {
    if (!calls_[id].done) calls_.erase(id);  // the agent's own calls are answered all the same
  }
  slots_.erase(it);
}

void UpstreamSession::QueueLocked(v1::SessionRequest message) {
  if (done_ || broken_) return;
  queued_.push_back(std::move(message));
  WriteLocked();
}

void UpstreamSession::WriteLocked() {
  if (writing_ || done_ || broken_ || half_closed_) return;
  if (queued_.empty()) {
    if (closing_) {
      half_closed_ = true;
      StartWritesDone();
    }
    return;
  }
  // Always a batch, even of one: the coordinator then treats the stream as a host's (events batched, its
  // end naming the host) from its first message on.
  out_.Clear();
  const size_t n = std::min<size_t>(queued_.size(), kMaxSessionBatch);
  for (size_t i = 0; i < n; ++i) *out_.add_batch() = std::move(queued_[i]);
  queued_.erase(queued_.begin(), queued_.begin() + static_cast<std::ptrdiff_t>(n));
  writing_ = true;
  StartWrite(&out_);
}

void UpstreamSession::OnWriteDone(bool ok) {
  MutexLock lock(&mu_);
  writing_ = false;
  if (!ok) {  // the stream is ending: OnDone says how
    broken_ = true;
    queued_.clear();
    return;
  }
  WriteLocked();
}

std::shared_ptr<LocalSessionSink> UpstreamSession::RouteLocked(v1::SessionEvent& event, CallDone* done) {
  const uint32_t slot = event.member();
  if (event.call_id() != 0) {
    const uint64_t id = event.call_id();
    auto call = calls_.find(id);
    if (call == calls_.end()) return nullptr;
    if (auto s = slots_.find(call->second.slot); s != slots_.end()) s->second.calls.erase(id);
    if (call->second.done) {
      *done = std::move(call->second.done);
      calls_.erase(call);
      event.clear_member();
      return nullptr;
    }
    event.set_call_id(call->second.local_id);
    calls_.erase(call);
  }
  auto it = slots_.find(slot);
  if (it == slots_.end()) return nullptr;
  Slot& s = it->second;
  if (event.lease_ms() != 0) s.bound = true;
  if (s.detached) {
    SettleLocked(slot, "its session with tp-agent closed while it was joining (the process died)");
    return nullptr;
  }
  event.clear_member();
  return s.local.lock();
}

void UpstreamSession::OnReadDone(bool ok) {
  if (!ok) return;  // the stream is ending: OnDone follows
  std::vector<std::pair<std::shared_ptr<LocalSessionSink>, v1::SessionEvent>> deliveries;
  std::vector<std::pair<CallDone, v1::SessionEvent>> answers;  // to the agent's own calls
  {
    MutexLock lock(&mu_);
    std::vector<v1::SessionEvent*> events;
    if (in_.batch_size() > 0) {
      for (v1::SessionEvent& event : *in_.mutable_batch()) events.push_back(&event);
    } else {
      events.push_back(&in_);
    }
    for (v1::SessionEvent* event : events) {
      CallDone done;
      if (std::shared_ptr<LocalSessionSink> local = RouteLocked(*event, &done)) {
        deliveries.emplace_back(std::move(local), std::move(*event));
      } else if (done) {
        answers.emplace_back(std::move(done), std::move(*event));
      }
    }
    in_.Clear();
  }
  for (auto& [local, event] : deliveries) local->Deliver(event);
  for (auto& [done, event] : answers) done(event);
  StartRead(&in_);
}

void UpstreamSession::OnDone(const grpc::Status& status) {
  const std::string context = ContextNamedIn(ctx_);
  if (status.error_code() == grpc::StatusCode::UNAVAILABLE) targets_->Follow(target_, LeaderNamedIn(ctx_));
  if (ended_) ended_(target_, opened_, status);
  std::vector<std::pair<std::shared_ptr<LocalSessionSink>, bool>> locals;
  std::vector<CallDone> unanswered;  // the agent's own calls
  {
    MutexLock lock(&mu_);
    done_ = true;
    for (auto& [id, call] : calls_) {
      if (call.done) unanswered.push_back(std::move(call.done));
    }
    for (auto& [slot, s] : slots_) {
      if (std::shared_ptr<LocalSessionSink> local = s.local.lock()) locals.emplace_back(std::move(local), s.bound);
    }
    slots_.clear();
    calls_.clear();
    queued_.clear();
  }
  // A member's session ends as the coordinator ended it; a session with no member yet is only asked to open
  // again (its calls are sent again on the next stream).
  const grpc::Status reopen(grpc::StatusCode::UNAVAILABLE,
                            status.ok() ? "tp-agent's session with the coordinator was closed; open it again"
                                        : "tp-agent's session with the coordinator ended (" + status.error_message() +
                                              "); open it again");
  for (auto& [local, bound] : locals) local->End(bound ? status : reopen, bound ? context : "");
  v1::SessionEvent ended;
  ended.set_status_code(static_cast<int>(reopen.error_code()));
  ended.set_status_message(reopen.error_message());
  for (CallDone& done : unanswered) done(ended);
  std::shared_ptr<UpstreamSession> self = std::move(self_);  // may free this object once it goes
  MutexLock lock(&mu_);
  finished_ = true;
  finished_cv_.SignalAll();
}

}  // namespace tpcoord
