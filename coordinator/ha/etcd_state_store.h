// The StateStore on an etcd cluster (--state-store etcd://...): the coordinator's keyspace under
// <prefix>/state/, each Write one etcd Txn guarded by the leader's fence (leader_election.h), so that a
// coordinator that no longer leads cannot change anything. Reads are linearizable.
//
// etcd bounds a Txn (--max-txn-ops, 128 by default; --max-request-bytes, 1.5 MiB): a Write beyond either is
// applied as several fenced Txns in order, each atomic (a coordinator killed between two of them leaves the
// first applied; README "High availability" says when that can happen: worlds of tens of thousands of ranks).
#ifndef TPCOORD_COORDINATOR_HA_ETCD_STATE_STORE_H_
#define TPCOORD_COORDINATOR_HA_ETCD_STATE_STORE_H_

#include <functional>
#include <memory>
#include <string>

#include "coordinator/ha/etcd_connection.h"
#include "coordinator/ha/leader_election.h"
#include "coordinator/store/state_store.h"

namespace tpcoord {

// `on_fenced`: called (once or more) when a write is refused because another coordinator leads now, or
// when its outcome is unknown (etcd unreachable or without quorum: a proposal that timed out may still be
// applied); the Write answers UNAVAILABLE, and the caller must stop using its in-memory state (the
// coordinator steps down and reads the state again when it leads next).
std::unique_ptr<StateStore> MakeEtcdStateStore(EtcdConnection* etcd, Fence fence,
                                               std::function<void(const std::string&)> on_fenced);

}  // namespace tpcoord

#endif  // TPCOORD_COORDINATOR_HA_ETCD_STATE_STORE_H_
