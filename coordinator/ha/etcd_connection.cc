#include "coordinator/ha/etcd_connection.h"

#include <thread>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"

namespace tpcoord {

absl::StatusOr<EtcdTarget> ParseEtcdTarget(const std::string& url) {
  constexpr absl::string_view kScheme = "etcd://";
  if (!absl::StartsWith(url, kScheme)) {
    return absl::InvalidArgumentError(
        absl::StrCat("state store \"", url, "\" is not etcd://HOST:PORT[,HOST:PORT]/PREFIX"));
  }
  absl::string_view rest = absl::string_view(url).substr(kScheme.size());
  EtcdTarget target;
  const size_t slash = rest.find('/');
  target.prefix = slash == absl::string_view::npos ? "/tpcoord" : std::string(rest.substr(slash));
  while (target.prefix.size() > 1 && target.prefix.back() == '/') target.prefix.pop_back();
  if (target.prefix == "/") {
    return absl::InvalidArgumentError(
        absl::StrCat("state store \"", url, "\": give a key prefix such as /tpcoord, not /"));
  }
  for (absl::string_view endpoint : absl::StrSplit(rest.substr(0, slash), ',')) {
    const size_t colon = endpoint.rfind(':');
    if (endpoint.empty() || colon == absl::string_view::npos || colon == 0 || colon + 1 == endpoint.size()) {
      return absl::InvalidArgumentError(
          absl::StrCat("state store \"", url, "\": endpoint \"", endpoint, "\" is not HOST:PORT"));
    }
    target.endpoints.emplace_back(endpoint);
  }
  return target;
}

std::string PrefixEnd(const std::string& prefix) {
  std::string end = prefix;
  while (!end.empty()) {
    if (static_cast<unsigned char>(end.back()) < 0xff) {
      end.back() = static_cast<char>(static_cast<unsigned char>(end.back()) + 1);
      return end;
    }
    end.pop_back();
  }
  return std::string(1, '\0');  // every key
}

EtcdConnection::EtcdConnection(EtcdTarget target, const EtcdCredentials& credentials, Millis call_timeout)
    : target_(std::move(target)),
      name_(absl::StrCat("etcd at ", absl::StrJoin(target_.endpoints, ","))),
      call_timeout_(call_timeout) {
  std::shared_ptr<grpc::ChannelCredentials> channel_credentials = grpc::InsecureChannelCredentials();
  if (!credentials.ca.empty() || !credentials.cert.empty()) {
    grpc::SslCredentialsOptions ssl;
    ssl.pem_root_certs = credentials.ca;
    ssl.pem_cert_chain = credentials.cert;
    ssl.pem_private_key = credentials.key;
    channel_credentials = grpc::SslCredentials(ssl);
  }
  for (const std::string& endpoint : target_.endpoints) {
    grpc::ChannelArguments args;
    // A member that comes back is used again within a second, not after gRPC's two-minute backoff.
    args.SetInt(GRPC_ARG_INITIAL_RECONNECT_BACKOFF_MS, 100);
    args.SetInt(GRPC_ARG_MAX_RECONNECT_BACKOFF_MS, 1000);
    // gRPC takes this for the connect timeout as well. A starting etcd member accepts connections before it
    // serves them and then never answers the ones it accepted early: give up on such a connection after 2 s
    // (gRPC's default, 20 s, would hold the member unusable that long), not after 100 ms (etcd's HTTP/2
    // handshake, behind its protocol multiplexer, can take longer than that on a busy machine).
    args.SetInt(GRPC_ARG_MIN_RECONNECT_BACKOFF_MS, 2000);
    // etcd answers a Range of the whole state in one message (--max-request-bytes bounds requests only).
    args.SetMaxReceiveMessageSize(-1);
    channels_.push_back(grpc::CreateCustomChannel(endpoint, channel_credentials, args));
    kv_.push_back(etcdserverpb::KV::NewStub(channels_.back()));
    lease_.push_back(etcdserverpb::Lease::NewStub(channels_.back()));
  }
}

absl::Status EtcdConnection::Error(const std::string& what, const grpc::Status& status) const {
  return absl::Status(static_cast<absl::StatusCode>(status.error_code()),
                      absl::StrCat(name_, ": ", what, ": ", status.error_message()));
}

template <typename Stub, typename Request, typename Response>
absl::Status EtcdConnection::Unary(const char* what,
                                   grpc::Status (Stub::*method)(grpc::ClientContext*, const Request&, Response*),
                                   const std::vector<std::unique_ptr<Stub>>& stubs, const Request& request,
                                   Response* response) {
  const auto give_up = std::chrono::steady_clock::now() + call_timeout_;
  // Each member gets a share of the deadline, so that one that hangs (no quorum) or is down leaves time for
  // the others; but at least a second, for a new connection's handshake.
  const Millis per_member = std::max(Millis(1000), call_timeout_ / static_cast<int64_t>(2 * stubs.size()));
  grpc::Status last;
  std::string last_endpoint;
  for (int attempt = 0; std::chrono::steady_clock::now() < give_up; ++attempt) {
    const size_t member = current_.load() % stubs.size();
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + per_member);
    // Waiting for the member is what lets its connection be made: gRPC reports a channel that failed once as
    // failed, and fails calls that do not wait at once, until a new connection is up; and with the
    // synchronous API nothing advances that connection but a call waiting on it.
    ctx.set_wait_for_ready(true);
    last = ((*stubs[member]).*method)(&ctx, request, response);
    if (last.ok()) return absl::OkStatus();
    last_endpoint = target_.endpoints[member];
    switch (last.error_code()) {
      case grpc::StatusCode::UNAVAILABLE:        // down, or "etcdserver: no leader"
      case grpc::StatusCode::DEADLINE_EXCEEDED:  // no quorum: "etcdserver: request timed out"
      case grpc::StatusCode::CANCELLED: break;
      default: return Error(what, last);  // etcd's answer
    }
    size_t expected = member;  // move on, unless another call already did
    current_.compare_exchange_strong(expected, member + 1);
    // Once every member was tried, a short pause: a cluster electing a leader answers in a moment.
    if ((attempt + 1) % stubs.size() == 0) std::this_thread::sleep_for(Millis(100));
  }
  return absl::UnavailableError(absl::StrCat(name_, ": ", what, ": no member answered within ", call_timeout_.count(),
                                             " ms (last, ", last_endpoint, ": ", last.error_message(), ")"));
}

absl::Status EtcdConnection::Txn(const etcdserverpb::TxnRequest& request, etcdserverpb::TxnResponse* response) {
  return Unary("txn", &etcdserverpb::KV::Stub::Txn, kv_, request, response);
}

absl::Status EtcdConnection::Range(const etcdserverpb::RangeRequest& request, etcdserverpb::RangeResponse* response) {
  return Unary("range", &etcdserverpb::KV::Stub::Range, kv_, request, response);
}

absl::Status EtcdConnection::LeaseGrant(const etcdserverpb::LeaseGrantRequest& request,
                                        etcdserverpb::LeaseGrantResponse* response) {
  return Unary("lease grant", &etcdserverpb::Lease::Stub::LeaseGrant, lease_, request, response);
}

absl::Status EtcdConnection::LeaseRevoke(const etcdserverpb::LeaseRevokeRequest& request,
                                         etcdserverpb::LeaseRevokeResponse* response) {
  return Unary("lease revoke", &etcdserverpb::Lease::Stub::LeaseRevoke, lease_, request, response);
}

std::shared_ptr<grpc::Channel> EtcdConnection::StreamChannel() const {
  return channels_[current_.load() % channels_.size()];
}

void EtcdConnection::NextMember() { current_.fetch_add(1); }

}  // namespace tpcoord
