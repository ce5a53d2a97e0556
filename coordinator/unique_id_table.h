// The NCCL unique IDs of one job generation, one per communicator of its mesh (every TP group, every DP
// group, the world), and which parked GetUniqueId calls wait for which of them.
//
// Not thread-safe: a plain part of its Job, used under the job's lock.
#ifndef TPCOORD_COORDINATOR_UNIQUE_ID_TABLE_H_
#define TPCOORD_COORDINATOR_UNIQUE_ID_TABLE_H_

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "common/mesh.h"
#include "coordinator/watchers.h"

namespace tpcoord {

class UniqueIdTable {
 public:
  const std::string* Find(const GroupId& group) const;
  const std::map<GroupId, std::string>& ids() const { return ids_; }
  size_t size() const { return ids_.size(); }
  void Put(const GroupId& group, std::string id) { ids_.emplace(group, std::move(id)); }

  // Checks a PublishUniqueId of `ids` by `rank` in `mesh`, entry by entry, before anything is stored: each
  // group must be of the mesh (INVALID_ARGUMENT), led by `rank` (PERMISSION_DENIED), named once, and not
  // published before with other bytes (FAILED_PRECONDITION). Sizes were checked with the request.
  absl::Status CheckPublish(const Mesh& mesh, int rank, const std::vector<std::pair<GroupId, std::string>>& ids,
                            uint64_t generation) const;
  // Checks that `rank` may ask for `groups`: each of the mesh (INVALID_ARGUMENT) and holding `rank`
  // (PERMISSION_DENIED).
  absl::Status CheckGet(const Mesh& mesh, int rank, const std::vector<GroupId>& groups) const;

  // The IDs of `groups` in order, once every one of them is published.
  std::optional<std::vector<std::string>> Lookup(const std::vector<GroupId>& groups) const;

  // Parked GetUniqueId calls, watched under each group they wait for that is not published.
  Watchers<GroupId>& watchers() { return watchers_; }
  const Watchers<GroupId>& watchers() const { return watchers_; }

 private:
  std::map<GroupId, std::string> ids_;
  Watchers<GroupId> watchers_;
};

}  // namespace tpcoord

#endif  // TPCOORD_COORDINATOR_UNIQUE_ID_TABLE_H_
