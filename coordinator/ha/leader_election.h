// Leader election among coordinators sharing one etcd cluster, with fencing.
//
// The leader holds the key <prefix>/leader, whose value is its advertised address, bound to an etcd lease
// it keeps alive. Standbys watch that key and campaign when it goes (its holder revoked the lease on
// SIGTERM, or stopped renewing it: killed, paused, cut off). A lease alone does not give mutual exclusion: a
// leader paused past its lease still believes it leads when it wakes. So every state write is a Txn that
// compares the leader key's create_revision with the one this leader created (Fence): once another
// coordinator has created the key anew, the old leader's writes fail, and it steps down.
//
// Thread-safe.
#ifndef TPCOORD_COORDINATOR_HA_LEADER_ELECTION_H_
#define TPCOORD_COORDINATOR_HA_LEADER_ELECTION_H_

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <mutex>
#include <string>
#include <thread>

#include "absl/status/statusor.h"
#include "coordinator/ha/etcd_connection.h"

namespace tpcoord {

// What a leader's writes must prove: the leader key still has the create_revision it gave it.
struct Fence {
  std::string key;
  int64_t create_revision = 0;
};

class LeaderElection {
 public:
  using Millis = std::chrono::milliseconds;

  // `ttl`: the lease (whole seconds, >= 2: etcd's minimum); a standby takes over within about this long of
  // the leader's death.
  LeaderElection(EtcdConnection* etcd, Millis ttl, std::function<void(const std::string&)> log);
  // Resigns: revokes the lease, so that a standby takes over at once.
  ~LeaderElection();
  LeaderElection(const LeaderElection&) = delete;
  LeaderElection& operator=(const LeaderElection&) = delete;

  // Blocks until this process leads (then keeps its lease alive and returns the fence its writes carry).
  // `address`: what clients are sent to while this process leads (the leader key's value). `on_leader`:
  // called with the leader's address whenever a standby learns it ("" while there is none).
  absl::StatusOr<Fence> Campaign(const std::string& address, const std::function<void(const std::string&)>& on_leader);

  // Called once, from some thread, when this process stops leading: its lease could not be renewed in
  // time or has expired, or Fenced() was called (at once, from this call, if that happened already). A
  // process must stop serving then.
  void OnLost(std::function<void(const std::string& reason)> on_lost);
  // Another coordinator leads: a write of ours was refused. Fires OnLost.
  void Fenced(const std::string& why);

  const std::string& key() const { return key_; }

 private:
  // One try: true with the key if it was free, else false with its holder's address. `revision`: etcd's
  // revision after the try (the key's create_revision when taken).
  absl::StatusOr<bool> TryAcquire(const std::string& address, std::string* holder, int64_t* revision);
  // Blocks until the leader key is deleted (or a few seconds pass, or the watch fails).
  void WaitForVacancy(int64_t from_revision);
  void KeepAlive();
  void Lose(const std::string& reason);

  EtcdConnection* const etcd_;
  const std::string key_;
  const Millis ttl_;
  const std::function<void(const std::string&)> log_;

  std::mutex mu_;
  std::condition_variable wake_;
  bool stopping_ = false;
  bool lost_ = false;
  std::string lost_reason_;
  int64_t lease_ = 0;  // while leading
  std::function<void(const std::string&)> on_lost_;
  std::thread keepalive_;
};

}  // namespace tpcoord

#endif  // TPCOORD_COORDINATOR_HA_LEADER_ELECTION_H_
