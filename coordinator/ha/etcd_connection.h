// A connection to an etcd cluster over its v3 gRPC API (proto/etcd/etcd.proto): one channel per member
// endpoint, and calls that move on to the next member when one cannot answer (down, partitioned from the
// Raft leader, or without quorum), until the call's deadline. Shared by the etcd state store and the leader
// election.
//
//   etcd://10.0.0.1:2379,10.0.0.2:2379,10.0.0.3:2379/tpcoord   (the path is the key prefix; default /tpcoord)
//
// Thread-safe.
#ifndef TPCOORD_COORDINATOR_HA_ETCD_CONNECTION_H_
#define TPCOORD_COORDINATOR_HA_ETCD_CONNECTION_H_

#include <atomic>
#include <chrono>
#include <memory>
#include <string>
#include <vector>

#include <grpcpp/grpcpp.h>

#include "absl/status/statusor.h"
#include "etcd/etcd.grpc.pb.h"

namespace tpcoord {

struct EtcdTarget {
  std::vector<std::string> endpoints;  // host:port of each member
  std::string prefix;                  // every key tpcoord writes starts with it ("/tpcoord")
};

// Parses "etcd://HOST:PORT[,HOST:PORT...][/PREFIX]". INVALID_ARGUMENT naming what is wrong.
absl::StatusOr<EtcdTarget> ParseEtcdTarget(const std::string& url);

struct EtcdCredentials {  // PEM contents; all empty: plaintext
  std::string ca, cert, key;
};

class EtcdConnection {
 public:
  using Millis = std::chrono::milliseconds;

  EtcdConnection(EtcdTarget target, const EtcdCredentials& credentials, Millis call_timeout);

  const EtcdTarget& target() const { return target_; }
  // "etcd at 10.0.0.1:2379,10.0.0.2:2379", for messages.
  const std::string& name() const { return name_; }

  // A unary call on etcdserverpb.KV or .Lease, tried on each member in turn while members cannot answer,
  // until `timeout` (default: the connection's call timeout). UNAVAILABLE naming the cluster and the last
  // member's error when none answered; etcd's own answers (say, INVALID_ARGUMENT "etcdserver: too many
  // operations in txn request") are returned as they are.
  absl::Status Txn(const etcdserverpb::TxnRequest& request, etcdserverpb::TxnResponse* response);
  absl::Status Range(const etcdserverpb::RangeRequest& request, etcdserverpb::RangeResponse* response);
  absl::Status LeaseGrant(const etcdserverpb::LeaseGrantRequest& request, etcdserverpb::LeaseGrantResponse* response);
  absl::Status LeaseRevoke(const etcdserverpb::LeaseRevokeRequest& request,
                           etcdserverpb::LeaseRevokeResponse* response);

  // The member to open a stream (Watch, LeaseKeepAlive) on: the one the last call succeeded on. Move on
  // with NextMember() when a stream on it fails.
  std::shared_ptr<grpc::Channel> StreamChannel() const;
  void NextMember();

  // An "etcd..." error for `what` from a gRPC status.
  absl::Status Error(const std::string& what, const grpc::Status& status) const;

 private:
  template <typename Stub, typename Request, typename Response>
  absl::Status Unary(const char* what, grpc::Status (Stub::*method)(grpc::ClientContext*, const Request&, Response*),
                     const std::vector<std::unique_ptr<Stub>>& stubs, const Request& request, Response* response);

  const EtcdTarget target_;
  const std::string name_;
  const Millis call_timeout_;
  std::vector<std::shared_ptr<grpc::Channel>> channels_;
  std::vector<std::unique_ptr<etcdserverpb::KV::Stub>> kv_;
  std::vector<std::unique_ptr<etcdserverpb::Lease::Stub>> lease_;
  std::atomic<size_t> current_{0};
};

// The end of the range of every key that starts with `prefix` (etcd's "range_end" for a prefix).
std::string PrefixEnd(const std::string& prefix);

}  // namespace tpcoord

#endif  // TPCOORD_COORDINATOR_HA_ETCD_CONNECTION_H_
