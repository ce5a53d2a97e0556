#include "coordinator/unique_id_table.h"

#include "absl/strings/str_cat.h"

namespace tpcoord {

const std::string* UniqueIdTable::Find(const GroupId& group) const {
  auto it = ids_.find(group);
  return it == ids_.end() ? nullptr : &it->second;
}

absl::Status UniqueIdTable::CheckPublish(const Mesh& mesh, int rank,
                                         const std::vector<std::pair<GroupId, std::string>>& ids,
                                         uint64_t generation) const {
  for (size_t i = 0; i < ids.size(); ++i) {
    const auto& [group, bytes] = ids[i];
    if (!mesh.Contains(group)) {
      return absl::InvalidArgumentError(absl::StrCat("ids[", i, "].group ", GroupName(group),
                                                     " is not a group of the mesh (", mesh.dp_size(), " TP groups, ",
                                                     mesh.tp_size(), " DP groups, 1 world group)"));
    }
    if (mesh.Leader(group) != rank) {
      return absl::PermissionDeniedError(absl::StrCat("rank ", rank, " may not publish the unique id of ",
                                                      GroupName(group), ": only its leader, rank ",
                                                      mesh.Leader(group), ", may"));
    }
    for (size_t k = 0; k < i; ++k) {
      if (ids[k].first == group) {
        return absl::InvalidArgumentError(absl::StrCat("ids[", k, "] and ids[", i, "] both publish ", GroupName(group)));
      }
    }
    if (const std::string* published = Find(group); published && *published != bytes) {
      return absl::FailedPreconditionError(absl::StrCat("the unique id of ", GroupName(group), " in generation ",
                                                        generation,
                                                        " was already published with different bytes; a "
                                                        "communicator has one id"));
    }
  }
  return absl::OkStatus();
}

absl::Status UniqueIdTable::CheckGet(const Mesh& mesh, int rank, const std::vector<GroupId>& groups) const {
  for (size_t i = 0; i < groups.size(); ++i) {
    const GroupId& group = groups[i];
    if (!mesh.Contains(group)) {
      return absl::InvalidArgumentError(absl::StrCat("groups[", i, "] ", GroupName(group), " is not a group of the mesh"));
    }
    if (!mesh.IsMember(group, rank)) {
      return absl::PermissionDeniedError(absl::StrCat("rank ", rank, " is not a member of ", GroupName(group), " ",
                                                      RankListString(mesh.Ranks(group))));
    }
  }
  return absl::OkStatus();
}

std::optional<std::vector<std::string>> UniqueIdTable::Lookup(const std::vector<GroupId>& groups) const {
  std::vector<std::string> out;
  for (const GroupId& group : groups) {
    const std::string* id = Find(group);
    if (!id) return std::nullopt;
    out.push_back(*id);
  }
  return out;
}

}  // namespace tpcoord
