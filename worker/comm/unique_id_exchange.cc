#include "worker/comm/unique_id_exchange.h"

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"

#ifdef TPCOORD_HAVE_NCCL
#include <nccl.h>
#endif

namespace tpcoord {

bool HaveNccl() {
#ifdef TPCOORD_HAVE_NCCL
  return true;
#else
  return false;
#endif
}

absl::StatusOr<std::string> NcclUniqueId() {
#ifdef TPCOORD_HAVE_NCCL
  ncclUniqueId id;
  const ncclResult_t result = ncclGetUniqueId(&id);
  if (result != ncclSuccess) {
    return absl::UnavailableError(absl::StrCat("ncclGetUniqueId failed: ", ncclGetErrorString(result)));
  }
  static_assert(sizeof(id.internal) == 128, "NCCL_UNIQUE_ID_BYTES changed");
  return std::string(id.internal, sizeof(id.internal));
#else
  return absl::UnimplementedError("this build has no NCCL (CUDA toolkit and NCCL were not found at build time)");
#endif
}

absl::StatusOr<std::map<GroupId, std::string>> ExchangeUniqueIds(CoordinatorClient& client, const Membership& m,
                                                                 const std::vector<GroupId>& groups,
                                                                 const UniqueIdSource& source, Millis wait) {
  std::map<GroupId, std::string> ids;
  std::vector<std::pair<GroupId, std::string>> mine;
  std::vector<GroupId> theirs;
  for (const GroupId& group : groups) {
    if (m.mesh.Leader(group) != m.rank) {
      theirs.push_back(group);
      continue;
    }
    absl::StatusOr<std::string> id = source();
    if (!id.ok()) return id.status();
    ids[group] = *id;
    mine.emplace_back(group, *std::move(id));
  }
  if (!mine.empty()) {
    if (absl::Status s = client.PublishUniqueIds(m, mine); !s.ok()) return s;
  }
  if (!theirs.empty()) {
    absl::StatusOr<std::vector<std::string>> got = client.GetUniqueIds(m, theirs, wait);
    if (!got.ok()) return got.status();
    for (size_t i = 0; i < theirs.size(); ++i) ids[theirs[i]] = std::move((*got)[i]);
  }
  return ids;
}

}  // namespace tpcoord
