#include "worker/comm/unique_id_exchange.h"

#include <algorithm>

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

namespace {

// Publishes `mine` (if any) and returns the IDs of `theirs` (if any).
using PublishAndGet = std::function<absl::StatusOr<UniqueIds>(const UniqueIds& mine, const std::vector<GroupId>& theirs)>;

absl::StatusOr<std::map<GroupId, std::vector<std::string>>> Exchange(const Membership& m,
                                                                     const std::vector<GroupId>& groups,
                                                                     const UniqueIdSource& source,
                                                                     const PublishAndGet& publish_and_get) {
  std::map<GroupId, std::vector<std::string>> ids;
  UniqueIds mine;
  for (const UniqueIdSlot& slot : m.mesh.RootSlotsOf(m.rank)) {
    if (std::find(groups.begin(), groups.end(), slot.group) == groups.end()) continue;
    absl::StatusOr<std::string> id = source();
    if (!id.ok()) return id.status();
    mine.push_back({slot, *std::move(id)});
  }
  std::vector<GroupId> theirs;
  for (const GroupId& group : groups) {
    if (m.mesh.UniqueIdRoots(group) > 1 || m.mesh.Leader(group) != m.rank) theirs.push_back(group);
  }
  absl::StatusOr<UniqueIds> got = publish_and_get(mine, theirs);
  if (!got.ok()) return got.status();
  for (auto& [slot, bytes] : mine) {  // the groups the caller is the only root of
    if (m.mesh.UniqueIdRoots(slot.group) == 1) ids[slot.group] = {std::move(bytes)};
  }
  for (auto& [slot, bytes] : *got) ids[slot.group].push_back(std::move(bytes));
  for (const GroupId& group : theirs) {
    if (static_cast<int>(ids[group].size()) != m.mesh.UniqueIdRoots(group)) {
      return absl::InternalError(absl::StrCat("the coordinator answered ", ids[group].size(), " unique ids for ",
                                              GroupName(group), ", which starts from ", m.mesh.UniqueIdRoots(group)));
    }
  }
  return ids;
}

}  // namespace

absl::StatusOr<std::map<GroupId, std::vector<std::string>>> ExchangeUniqueIds(MemberSession& session,
                                                                              const Membership& m,
                                                                              const std::vector<GroupId>& groups,
                                                                              const UniqueIdSource& source,
                                                                              Millis wait) {
  return Exchange(m, groups, source, [&](const UniqueIds& mine, const std::vector<GroupId>& theirs) {
    return session.ExchangeUniqueIds(m, mine, theirs, wait);  // one call
  });
}

absl::StatusOr<std::map<GroupId, std::vector<std::string>>> ExchangeUniqueIds(CoordinatorClient& client,
                                                                              const Membership& m,
                                                                              const std::vector<GroupId>& groups,
                                                                              const UniqueIdSource& source,
                                                                              Millis wait) {
  return Exchange(m, groups, source,
                  [&](const UniqueIds& mine, const std::vector<GroupId>& theirs) -> absl::StatusOr<UniqueIds> {
                    if (!mine.empty()) {
                      if (absl::Status s = client.PublishUniqueIds(m, mine); !s.ok()) return s;
                    }
                    if (theirs.empty()) return UniqueIds();
                    return client.GetUniqueIds(m, theirs, wait);
                  });
}

}  // namespace tpcoord
