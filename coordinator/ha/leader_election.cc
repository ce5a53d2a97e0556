#include "coordinator/ha/leader_election.h"

#include <algorithm>
#include <utility>

#include "absl/strings/str_cat.h"

namespace tpcoord {
namespace {

using Clock = std::chrono::steady_clock;
namespace pb = etcdserverpb;

}  // namespace

LeaderElection::LeaderElection(EtcdConnection* etcd, Millis ttl, std::function<void(const std::string&)> log)
    : etcd_(etcd), key_(etcd->target().prefix + "/leader"), ttl_(std::max(ttl, Millis(2000))), log_(std::move(log)) {}

LeaderElection::~LeaderElection() {
  int64_t lease;
  {
    std::lock_guard<std::mutex> lock(mu_);
    stopping_ = true;
    lease = lost_ ? 0 : lease_;
  }
  wake_.notify_all();
  if (keepalive_.joinable()) keepalive_.join();
  if (lease != 0) {
    pb::LeaseRevokeRequest req;
    req.set_id(lease);
    pb::LeaseRevokeResponse resp;
    if (absl::Status s = etcd_->LeaseRevoke(req, &resp); !s.ok()) {
      log_(absl::StrCat("could not resign (the lease expires by itself): ", s.message()));
    }
  }
}

absl::StatusOr<bool> LeaderElection::TryAcquire(const std::string& address, std::string* holder, int64_t* revision) {
  pb::LeaseGrantRequest grant;
  grant.set_ttl(std::chrono::duration_cast<std::chrono::seconds>(ttl_).count());
  pb::LeaseGrantResponse granted;
  if (absl::Status s = etcd_->LeaseGrant(grant, &granted); !s.ok()) return s;
  if (!granted.error().empty()) return absl::UnavailableError(absl::StrCat(etcd_->name(), ": ", granted.error()));

  // Put the key only if nobody holds it; otherwise read who does.
  pb::TxnRequest txn;
  pb::Compare* free = txn.add_compare();
  free->set_key(key_);
  free->set_target(pb::Compare::CREATE);
  free->set_result(pb::Compare::EQUAL);
  free->set_create_revision(0);
  pb::PutRequest* put = txn.add_success()->mutable_request_put();
  put->set_key(key_);
  put->set_value(address);
  put->set_lease(granted.id());
  txn.add_failure()->mutable_request_range()->set_key(key_);
  pb::TxnResponse resp;
  absl::Status s = etcd_->Txn(txn, &resp);
  if (s.ok()) *revision = resp.header().revision();
  if (s.ok() && resp.succeeded()) {
    std::lock_guard<std::mutex> lock(mu_);
    lease_ = granted.id();
    return true;
  }
  // Not leading: the lease is of no use (left alone, it would only expire).
  pb::LeaseRevokeRequest revoke;
  revoke.set_id(granted.id());
  pb::LeaseRevokeResponse revoked;
  (void)etcd_->LeaseRevoke(revoke, &revoked);
  if (!s.ok()) return s;
  *holder = "";
  if (resp.responses_size() > 0 && resp.responses(0).response_range().kvs_size() > 0) {
    *holder = resp.responses(0).response_range().kvs(0).value();
  }
  return false;
}

void LeaderElection::WaitForVacancy(int64_t from_revision) {
  grpc::ClientContext ctx;
  // Bounded: a watch on a member cut off from the cluster would never report anything. Campaigning again
  // every few seconds costs one Txn.
  ctx.set_deadline(std::chrono::system_clock::now() + std::max(ttl_, Millis(3000)));
  ctx.set_wait_for_ready(true);
  std::unique_ptr<pb::Watch::Stub> stub = pb::Watch::NewStub(etcd_->StreamChannel());
  auto stream = stub->Watch(&ctx);
  pb::WatchRequest req;
  pb::WatchCreateRequest* create = req.mutable_create_request();
  create->set_key(key_);
  create->set_start_revision(from_revision);
  create->add_filters(pb::WatchCreateRequest::NOPUT);
  if (!stream->Write(req)) {
    etcd_->NextMember();
    return;
  }
  pb::WatchResponse event;
  while (stream->Read(&event)) {
    if (event.canceled()) break;
    bool vacant = false;
    for (const pb::Event& e : event.events()) vacant = vacant || e.type() == pb::Event::DELETE;
    if (vacant) {
      ctx.TryCancel();
      break;
    }
  }
  const grpc::Status status = stream->Finish();
  if (!status.ok() && status.error_code() != grpc::StatusCode::CANCELLED &&
      status.error_code() != grpc::StatusCode::DEADLINE_EXCEEDED) {
    etcd_->NextMember();
  }
}

absl::StatusOr<Fence> LeaderElection::Campaign(const std::string& address,
                                               const std::function<void(const std::string&)>& on_leader) {
  std::string last_seen = "-";
  while (true) {
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (stopping_) return absl::CancelledError("stopped before leading");
    }
    std::string holder;
    int64_t revision = 0;
    absl::StatusOr<bool> acquired = TryAcquire(address, &holder, &revision);
    if (acquired.ok() && *acquired) {
      // The fence is the revision that created the key: the Txn's own.
      keepalive_ = std::thread([this] { KeepAlive(); });
      return Fence{key_, revision};
    }
    if (!acquired.ok()) {
      log_(absl::StrCat("campaign: ", acquired.status().message(), "; trying again"));
      std::this_thread::sleep_for(Millis(500));
    } else {
      if (holder != last_seen) on_leader(holder);
      last_seen = holder;
      WaitForVacancy(revision + 1);
    }
  }
}

void LeaderElection::KeepAlive() {
  const Millis interval = ttl_ / 3;
  // Until when the lease is known to live: the send time of the last renewal etcd confirmed, plus its TTL.
  Clock::time_point valid_until = Clock::now() + ttl_;
  std::string failure;
  while (true) {
    grpc::ClientContext ctx;
    // A stream lives half a lease at most: one on a member that hangs cannot outlast the lease unnoticed.
    ctx.set_deadline(std::chrono::system_clock::now() + ttl_ / 2);
    ctx.set_wait_for_ready(true);  // see EtcdConnection: else a member's failed connection is never remade
    std::unique_ptr<pb::Lease::Stub> stub = pb::Lease::NewStub(etcd_->StreamChannel());
    auto stream = stub->LeaseKeepAlive(&ctx);
    pb::LeaseKeepAliveRequest req;
    req.set_id(lease_);
    bool renewed = false;  // by this stream
    while (true) {
      const Clock::time_point sent = Clock::now();
      if (!stream->Write(req)) break;
      pb::LeaseKeepAliveResponse resp;
      if (!stream->Read(&resp)) break;
      if (resp.ttl() <= 0) return Lose(absl::StrCat("its etcd lease ", lease_, " has expired"));
      valid_until = sent + std::chrono::seconds(resp.ttl());
      renewed = true;
      std::unique_lock<std::mutex> lock(mu_);
      if (wake_.wait_for(lock, interval, [this] { return stopping_ || lost_; })) {
        ctx.TryCancel();
        break;
      }
    }
    const grpc::Status status = stream->Finish();
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (stopping_ || lost_) return;
    }
    // A stream that ends at its deadline after renewing is the normal rotation; one that renewed nothing
    // (its member is down or cut off, and waiting for it timed out) means: try another member.
    if (!renewed || status.error_code() != grpc::StatusCode::DEADLINE_EXCEEDED) {
      failure = status.error_message();
      etcd_->NextMember();
    }
    if (Clock::now() >= valid_until) {
      return Lose(absl::StrCat("its etcd lease could not be renewed within ", ttl_.count(), " ms (", failure, ")"));
    }
    std::this_thread::sleep_for(Millis(50));
  }
}

void LeaderElection::OnLost(std::function<void(const std::string&)> on_lost) {
  std::string lost_already;
  {
    std::lock_guard<std::mutex> lock(mu_);
    on_lost_ = on_lost;
    if (!lost_) return;
    lost_already = lost_reason_;
  }
  on_lost(lost_already);  // lost between Campaign and this call: told now, not never
}

void LeaderElection::Fenced(const std::string& why) { Lose(why); }

void LeaderElection::Lose(const std::string& reason) {
  std::function<void(const std::string&)> on_lost;
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (lost_ || stopping_) return;
    lost_ = true;
    lost_reason_ = reason;
    on_lost = on_lost_;
  }
  wake_.notify_all();
  if (on_lost) on_lost(reason);
}

}  // namespace tpcoord
