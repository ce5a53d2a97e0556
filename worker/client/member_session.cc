#include "worker/client/member_session.h"

#include <algorithm>
#include <chrono>
#include <condition_variable>
#include <mutex>
#include <random>
#include <string>
#include <thread>
#include <utility>

#include "absl/strings/str_cat.h"
#include "worker/client/client_rpc.h"

namespace tpcoord {
namespace {
using Clock = std::chrono::steady_clock;
}  // namespace

class MemberSession::Impl {
 public:
  Impl(CoordinatorClient::Impl* client, Membership membership, std::function<void(absl::Status)> on_lost)
      : client_(client), membership_(std::move(membership)), on_lost_(std::move(on_lost)), thread_([this] { Run(); }) {}
  ~Impl();

  bool WaitUntilOpen(Millis timeout) {
    std::unique_lock<std::mutex> lock(mu_);
    return wake_.wait_for(lock, timeout, [this] { return open_; });
  }

 private:
  void Run();
  // One stream, until it ends: its final status (OK once stopping).
  grpc::Status Stream(bool* opened);

  CoordinatorClient::Impl* const client_;
  const Membership membership_;
  const std::function<void(absl::Status)> on_lost_;
  std::mutex mu_;
  std::condition_variable wake_;
  bool stopping_ = false;
  bool open_ = false;  // the coordinator has answered a session's first heartbeat
  grpc::ClientContext* stream_ctx_ = nullptr;  // the open stream's, while there is one
  std::thread thread_;  // last
};

MemberSession::MemberSession(CoordinatorClient* client, Membership membership,
                             std::function<void(absl::Status)> on_lost)
    : impl_(std::make_unique<Impl>(client->impl_.get(), std::move(membership), std::move(on_lost))) {}

MemberSession::~MemberSession() = default;

bool MemberSession::WaitUntilOpen(Millis timeout) { return impl_->WaitUntilOpen(timeout); }

MemberSession::Impl::~Impl() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stopping_ = true;
    if (stream_ctx_) stream_ctx_->TryCancel();
  }
  wake_.notify_all();
  thread_.join();
}

void MemberSession::Impl::Run() {
  thread_local std::mt19937_64 rng(std::random_device{}());
  const ClientOptions& options = client_->options;
  Clock::time_point last_open = Clock::now();
  Millis backoff = options.initial_backoff;
  while (true) {
    bool opened = false;
    const grpc::Status s = Stream(&opened);
    std::unique_lock<std::mutex> lock(mu_);
    if (stopping_) return;
    if (opened) {
      last_open = Clock::now();
      backoff = options.initial_backoff;
    }
    const grpc::StatusCode code = s.error_code();
    absl::Status lost;
    if (code == grpc::StatusCode::ABORTED || code == grpc::StatusCode::FAILED_PRECONDITION ||
        code == grpc::StatusCode::NOT_FOUND || code == grpc::StatusCode::PERMISSION_DENIED ||
        code == grpc::StatusCode::UNAUTHENTICATED || code == grpc::StatusCode::INVALID_ARGUMENT) {
      lost = absl::Status(static_cast<absl::StatusCode>(code), s.error_message());  // the coordinator's verdict
    } else if (Clock::now() - last_open > options.retry_budget) {
      lost = absl::UnavailableError(absl::StrCat(
          "the coordinator at ", options.address, " has not held this member's session for ",
          std::chrono::duration_cast<std::chrono::seconds>(Clock::now() - last_open).count(), " s: ",
          s.error_message()));
    }
    if (!lost.ok()) {
      lock.unlock();
      on_lost_(lost);
      return;
    }
    std::uniform_int_distribution<int64_t> jitter(0, backoff.count());
    if (wake_.wait_for(lock, Millis(jitter(rng)), [this] { return stopping_; })) return;
    backoff = std::min(backoff * 2, options.max_backoff);
  }
}

grpc::Status MemberSession::Impl::Stream(bool* opened) {
  if (CoordinatorClient::Impl::Target* target = client_->Current(); !client_->Reachable(target)) {
    client_->Follow(target, "");
    return grpc::Status(grpc::StatusCode::UNAVAILABLE,
                        absl::StrCat("cannot connect to the coordinator at ", target->address));
  }
  grpc::ClientContext ctx;  // not wait_for_ready: an unreachable coordinator fails the stream, and Run retries
  client_->AddCredentials(&ctx, membership_.member_key);
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (stopping_) return grpc::Status::OK;
    stream_ctx_ = &ctx;
  }
  CoordinatorClient::Impl::Target* target = client_->Current();
  std::unique_ptr<grpc::ClientReaderWriter<v1::HeartbeatRequest, v1::SessionEvent>> stream =
      target->stub->Session(&ctx);
  // The reader sees the stream's end the moment the coordinator ends it; the writer beats until then.
  bool ended = false;
  std::thread reader([&] {
    v1::SessionEvent event;
    while (stream->Read(&event)) {
      *opened = true;
      std::lock_guard<std::mutex> lock(mu_);
      open_ = true;
      wake_.notify_all();
    }
    std::lock_guard<std::mutex> lock(mu_);
    ended = true;
    wake_.notify_all();
  });
  v1::HeartbeatRequest beat;
  beat.set_job_id(membership_.job_id);
  beat.set_generation(membership_.generation);
  beat.set_rank(membership_.rank);
  const Millis interval = std::max(membership_.heartbeat_interval, Millis(10));
  while (stream->Write(beat)) {
    std::unique_lock<std::mutex> lock(mu_);
    if (wake_.wait_for(lock, interval, [&] { return stopping_ || ended; })) break;
  }
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (stopping_) ctx.TryCancel();
  }
  reader.join();
  grpc::Status status = stream->Finish();
  // A standby, or a coordinator gone: the session moves to the leader (the membership stays the same).
  if (status.error_code() == grpc::StatusCode::UNAVAILABLE || status.error_code() == grpc::StatusCode::CANCELLED) {
    client_->Follow(target, LeaderNamedIn(ctx));
  }
  std::lock_guard<std::mutex> lock(mu_);
  stream_ctx_ = nullptr;
  return stopping_ ? grpc::Status::OK : status;
}

}  // namespace tpcoord
