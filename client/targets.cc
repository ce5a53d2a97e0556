#include "client/targets.h"

#include <algorithm>
#include <iostream>
#include <utility>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "common/limits.h"
#include "common/secrets.h"
#include "grpc/health/v1/health.grpc.pb.h"

namespace tpcoord {
namespace {

using Clock = std::chrono::steady_clock;

std::shared_ptr<grpc::ChannelCredentials> ChannelCredentialsFor(const ClientCredentials& credentials) {
  if (!credentials.tls()) return grpc::InsecureChannelCredentials();
  grpc::SslCredentialsOptions ssl;
  ssl.pem_root_certs = credentials.tls_ca;
  ssl.pem_cert_chain = credentials.tls_cert;
  ssl.pem_private_key = credentials.tls_key;
  return grpc::SslCredentials(ssl);
}

// `replicas`: one of several coordinators (HA). Then HTTP/2 keepalive pings find a coordinator that stopped
// answering (frozen, its machine gone) within seconds even while a stream is open, so that the client moves
// on to the leader; with one coordinator there is nowhere to go, and an open session simply waits for it.
std::shared_ptr<grpc::Channel> MakeChannel(const ClientOptions& options, const std::string& address, bool replicas) {
  grpc::ChannelArguments args;
  // gRPC's default reconnect backoff grows to two minutes: a coordinator back after a 10 s outage would be
  // noticed 17 s late. Reconnect within about a second instead.
  args.SetInt(GRPC_ARG_INITIAL_RECONNECT_BACKOFF_MS, 100);
  args.SetInt(GRPC_ARG_MAX_RECONNECT_BACKOFF_MS, static_cast<int>(options.max_backoff.count()));
  // gRPC also takes this for the connect timeout: a TLS handshake with a busy coordinator may take longer
  // than a short one, and one that never completes (a frozen coordinator) is left after 5 s.
  args.SetInt(GRPC_ARG_MIN_RECONNECT_BACKOFF_MS, 5000);
  args.SetMaxReceiveMessageSize(kMaxRequestBytes);
  if (replicas) {
    args.SetInt(GRPC_ARG_KEEPALIVE_TIME_MS, 2000);
    args.SetInt(GRPC_ARG_KEEPALIVE_TIMEOUT_MS, 2000);
  }
  return grpc::CreateCustomChannel(address, ChannelCredentialsFor(options.credentials), args);
}

}  // namespace

std::string LeaderNamedIn(const grpc::ClientContext& ctx) {
  for (const auto& [key, value] : ctx.GetServerTrailingMetadata()) {
    if (key == "tpcoord-leader") return std::string(value.data(), value.size());
  }
  return "";
}

std::string ContextNamedIn(const grpc::ClientContext& ctx) {
  for (const auto& [key, value] : ctx.GetServerTrailingMetadata()) {
    if (key == "tpcoord-context") return std::string(value.data(), value.size());
  }
  return "";
}

Targets::Targets(ClientOptions options_in)
    : options(std::move(options_in)), replicas(absl::StrContains(options.address, ',')) {
  for (absl::string_view address : absl::StrSplit(options.address, ',', absl::SkipWhitespace())) {
    const std::string a(absl::StripAsciiWhitespace(address));
    targets_.push_back(std::make_unique<Target>(Target{a, MakeChannel(options, a, replicas), nullptr}));
    targets_.back()->stub = v1::Coordinator::NewStub(targets_.back()->channel);
  }
  if (targets_.empty()) {  // an empty address fails every call with gRPC's own message
    targets_.push_back(std::make_unique<Target>(Target{"", MakeChannel(options, "", false), nullptr}));
    targets_.back()->stub = v1::Coordinator::NewStub(targets_.back()->channel);
  }
}

bool Targets::Reachable(Target* target) {
  if (!replicas) return true;
  const Clock::time_point since = Clock::now();
  if (target->channel->WaitForConnected(std::chrono::system_clock::now() + Millis(1000))) return true;
  NoteUnreachable(target, since);
  return false;
}

bool Targets::AwaitConnected(Target* target, Clock::time_point give_up) {
  const Clock::time_point since = Clock::now();
  while (true) {
    const Clock::time_point now = Clock::now();
    const Millis slice = std::chrono::ceil<Millis>(std::min(give_up, now + Millis(1000)) - now);
    if (target->channel->WaitForConnected(std::chrono::system_clock::now() + std::max(slice, Millis(0)))) {
      NoteReachable();
      return true;
    }
    NoteUnreachable(target, since);
    if (Clock::now() >= give_up) return false;
  }
}

void Targets::NoteReachable() {
  std::lock_guard<std::mutex> lock(waiting_mu_);
  unreachable_since_.reset();
}

void Targets::NoteUnreachable(Target* target, Clock::time_point since) {
  const Clock::time_point now = Clock::now();
  Millis waited;
  {
    std::lock_guard<std::mutex> lock(waiting_mu_);
    if (!unreachable_since_) {
      unreachable_since_ = since;
      next_report_ = since + Millis(5000);
    } else if (since < *unreachable_since_) {  // an older caller: the first line comes 5 s after it began
      if (next_report_ == *unreachable_since_ + Millis(5000)) next_report_ = since + Millis(5000);
      unreachable_since_ = since;
    }
    if (now < next_report_) return;
    next_report_ = now + Millis(10000);
    waited = std::chrono::duration_cast<Millis>(now - *unreachable_since_);
  }
  const std::string error = ProbeError(target);
  if (error.empty()) return;  // it just came up
  const std::string line =
      absl::StrCat("still waiting for the coordinator at ", target->address, " after ", waited.count() / 1000,
                   " s: ", DescribeTransportError(target->address, error, options.credentials.tls()));
  if (options.log_waiting)
    options.log_waiting(line);
  else
    std::cerr << "warning: " << line << std::endl;
}

std::string Targets::ProbeError(Target* target) {
  grpc::ClientContext ctx;  // fails at once on a failed connection, with the transport's reason
  ctx.set_deadline(std::chrono::system_clock::now() + Millis(2000));
  grpc::health::v1::HealthCheckResponse resp;
  const grpc::Status s =
      grpc::health::v1::Health::NewStub(target->channel)->Check(&ctx, grpc::health::v1::HealthCheckRequest(), &resp);
  if (s.ok()) return "";
  return s.error_message().empty() ? absl::StrCat("gRPC status ", s.error_code()) : s.error_message();
}

std::string DescribeTransportError(const std::string& address, const std::string& error, bool tls) {
  auto has = [&error](absl::string_view text) { return absl::StrContains(absl::AsciiStrToLower(error), text); };
  std::string cause;
  if (has("connection refused")) {
    cause = "nothing listens there (connection refused)";
  } else if (has("http1") || has("http/1") || has("parsing http/2")) {
    cause = "an HTTP/1 server answers there, not a tpcoord coordinator (a metrics or status port?)";
  } else if (tls && (has("handshake") || has("ssl") || has("tls") || has("wrong_version"))) {
    cause =
        "the TLS handshake failed: the server there does not speak TLS (a plaintext coordinator?), or its "
        "certificate is not trusted by --tls-ca";
  } else if (!tls && (has("socket closed") || has("connection reset") || has("end of file") || has("eof") ||
                      has("goaway") || has("handshake"))) {
    cause = "the server there closes the connection: a TLS coordinator (give --tls-ca), or not a gRPC server";
  } else if (has("dns") || has("resolve") || has("name or service not known")) {
    cause = "the host name does not resolve";
  } else if (has("timed out") || has("deadline") || has("no route") || has("unreachable")) {
    cause = "no answer from that address (a firewall, a wrong host, or a frozen process)";
  }
  return cause.empty() ? error : absl::StrCat(cause, " [", error, "]");
}

size_t Targets::TargetCount() {
  std::lock_guard<std::mutex> lock(targets_mu_);
  return targets_.size();
}

Targets::Target* Targets::Current() {
  std::lock_guard<std::mutex> lock(targets_mu_);
  return targets_[current_].get();
}

void Targets::Follow(const Target* used, const std::string& leader) {
  std::lock_guard<std::mutex> lock(targets_mu_);
  if (targets_[current_].get() != used) return;  // another call already moved on
  if (!leader.empty()) {
    for (size_t i = 0; i < targets_.size(); ++i) {
      if (targets_[i]->address == leader) {
        current_ = i;
        return;
      }
    }
    if (targets_.size() < 16) {  // bounded: a leader address per replica, not one per answer
      targets_.push_back(std::make_unique<Target>(Target{leader, MakeChannel(options, leader, true), nullptr}));
      targets_.back()->stub = v1::Coordinator::NewStub(targets_.back()->channel);
      current_ = targets_.size() - 1;
      return;
    }
  }
  current_ = (current_ + 1) % targets_.size();
}

void Targets::AddCredentials(grpc::ClientContext* ctx, const std::string& member_key) const {
  if (!options.credentials.token.empty()) {
    ctx->AddMetadata(std::string(kAuthorizationMetadata), absl::StrCat("Bearer ", options.credentials.token));
  }
  if (!member_key.empty()) ctx->AddMetadata(std::string(kMemberKeyMetadata), member_key);
}

}  // namespace tpcoord
