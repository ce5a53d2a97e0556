// The NCCL unique IDs of one job generation: for every communicator of its mesh (every TP group, every DP
// group, the world) one ID per root (Mesh::UniqueIdRoots: one up to 256 ranks, then one per 256), and
// which parked GetUniqueId calls wait for which groups. A group is complete once all its roots published.
//
// Not thread-safe: a plain part of its Job, used under the job's lock.
#ifndef TPCOORD_COORDINATOR_JOB_UNIQUE_ID_TABLE_H_
#define TPCOORD_COORDINATOR_JOB_UNIQUE_ID_TABLE_H_

#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "common/mesh.h"
#include "coordinator/job/watchers.h"

namespace tpcoord {

// The IDs of one complete group, made once when an answer first needs them and shared, never copied, by
// every answer that carries them: a world of 100,000 ranks has 391 IDs (50 KB), asked for by every host.
// Never changed once made (a root has one ID: publishing other bytes is refused).
struct GroupUniqueIds {
  UniqueIds ids;  // the group's roots in root order
  // The transport's encoding of `ids`, made once by the first answer that sends them (coordinator/rpc/
  // answers.cc); opaque here.
  mutable std::once_flag encode_once;
  mutable std::shared_ptr<const void> encoded;
};
// The groups of one answer, in the order asked.
using SharedUniqueIds = std::vector<std::shared_ptr<const GroupUniqueIds>>;
// All their IDs in one list.
UniqueIds Flatten(const SharedUniqueIds& groups);

class UniqueIdTable {
 public:
  const std::string* Find(const UniqueIdSlot& slot) const;
  const std::map<UniqueIdSlot, std::string>& ids() const { return ids_; }
  size_t size() const { return ids_.size(); }
  void Put(const UniqueIdSlot& slot, std::string id) { ids_.emplace(slot, std::move(id)); }

  // Whether every root of `group` has published.
  bool Complete(const Mesh& mesh, const GroupId& group) const;
  // The roots of `group` that have not.
  std::vector<UniqueIdSlot> Missing(const Mesh& mesh, const GroupId& group) const;

  // Checks a PublishUniqueId of `ids` by `rank` in `mesh`, entry by entry, before anything is stored: each
  // slot must be of the mesh (INVALID_ARGUMENT), made by `rank` (PERMISSION_DENIED), named once, and not
  // published before with other bytes (FAILED_PRECONDITION). Sizes were checked with the request.
  absl::Status CheckPublish(const Mesh& mesh, int rank, const UniqueIds& ids, uint64_t generation) const;
  // Checks that `rank` may ask for `groups`: each of the mesh (INVALID_ARGUMENT) and holding `rank`
  // (PERMISSION_DENIED).
  absl::Status CheckGet(const Mesh& mesh, int rank, const std::vector<GroupId>& groups) const;

  // The IDs of `groups` in order, each group's roots in root order, once every one of them is published.
  std::optional<UniqueIds> Lookup(const Mesh& mesh, const std::vector<GroupId>& groups) const;
  // The same, each group's IDs shared (made on the first ask).
  std::optional<SharedUniqueIds> Shared(const Mesh& mesh, const std::vector<GroupId>& groups);

  // Parked GetUniqueId calls, watched under each group they wait for that is not complete.
  Watchers<GroupId>& watchers() { return watchers_; }
  const Watchers<GroupId>& watchers() const { return watchers_; }

 private:
  std::map<UniqueIdSlot, std::string> ids_;
  std::map<GroupId, std::shared_ptr<const GroupUniqueIds>> shared_;  // complete groups asked for so far
  Watchers<GroupId> watchers_;
};

}  // namespace tpcoord

#endif  // TPCOORD_COORDINATOR_JOB_UNIQUE_ID_TABLE_H_
