#include "coordinator/job/unique_id_table.h"

#include "absl/strings/str_cat.h"

namespace tpcoord {

const std::string* UniqueIdTable::Find(const UniqueIdSlot& slot) const {
  auto it = ids_.find(slot);
  return it == ids_.end() ? nullptr : &it->second;
}

bool UniqueIdTable::Complete(const Mesh& mesh, const GroupId& group) const {
  // The group's slots are adjacent in the map, in root order.
  const int roots = mesh.UniqueIdRoots(group);
  auto it = ids_.find({group, roots - 1});
  return it != ids_.end() && std::distance(ids_.lower_bound({group, 0}), it) == roots - 1;
}

std::vector<UniqueIdSlot> UniqueIdTable::Missing(const Mesh& mesh, const GroupId& group) const {
  std::vector<UniqueIdSlot> missing;
  for (int root = 0; root < mesh.UniqueIdRoots(group); ++root) {
    if (!Find({group, root})) missing.push_back({group, root});
  }
  return missing;
}

absl::Status UniqueIdTable::CheckPublish(const Mesh& mesh, int rank, const UniqueIds& ids, uint64_t generation) const {
  for (size_t i = 0; i < ids.size(); ++i) {
    const auto& [slot, bytes] = ids[i];
    if (!mesh.Contains(slot.group)) {
      return absl::InvalidArgumentError(absl::StrCat("ids[", i, "].group ", GroupName(slot.group),
                                                     " is not a group of the mesh (", mesh.dp_size(), " TP groups, ",
                                                     mesh.tp_size(), " DP groups, 1 world group)"));
    }
    const int roots = mesh.UniqueIdRoots(slot.group);
    if (slot.root < 0 || slot.root >= roots) {
      return absl::InvalidArgumentError(
          absl::StrCat("ids[", i, "].root ", slot.root, " is not a root of ", GroupName(slot.group), ": its ",
                       mesh.GroupSize(slot.group), " ranks start from ", roots, " unique id(s), roots 0..", roots - 1));
    }
    if (const int maker = mesh.RootRank(slot); maker != rank) {
      return absl::PermissionDeniedError(
          absl::StrCat("rank ", rank, " may not publish the unique id of ", SlotName(slot), ": only ",
                       roots == 1 ? "its leader" : "that root", ", rank ", maker, ", may"));
    }
    for (size_t k = 0; k < i; ++k) {
      if (ids[k].first == slot) {
        return absl::InvalidArgumentError(absl::StrCat("ids[", k, "] and ids[", i, "] both publish ", SlotName(slot)));
      }
    }
    if (const std::string* published = Find(slot); published && *published != bytes) {
      return absl::FailedPreconditionError(absl::StrCat("the unique id of ", SlotName(slot), " in generation ",
                                                        generation,
                                                        " was already published with different bytes; a "
                                                        "communicator root has one id"));
    }
  }
  return absl::OkStatus();
}

absl::Status UniqueIdTable::CheckGet(const Mesh& mesh, int rank, const std::vector<GroupId>& groups) const {
  for (size_t i = 0; i < groups.size(); ++i) {
    const GroupId& group = groups[i];
    if (!mesh.Contains(group)) {
      return absl::InvalidArgumentError(
          absl::StrCat("groups[", i, "] ", GroupName(group), " is not a group of the mesh"));
    }
    if (!mesh.IsMember(group, rank)) {
      return absl::PermissionDeniedError(absl::StrCat("rank ", rank, " is not a member of ", GroupName(group), " ",
                                                      RankListString(mesh.Ranks(group))));
    }
  }
  return absl::OkStatus();
}

std::optional<UniqueIds> UniqueIdTable::Lookup(const Mesh& mesh, const std::vector<GroupId>& groups) const {
  UniqueIds out;
  for (const GroupId& group : groups) {
    if (!Complete(mesh, group)) return std::nullopt;
    for (auto it = ids_.lower_bound({group, 0}); it != ids_.end() && it->first.group == group; ++it) {
      out.push_back(*it);
    }
  }
  return out;
}

std::optional<SharedUniqueIds> UniqueIdTable::Shared(const Mesh& mesh, const std::vector<GroupId>& groups) {
  SharedUniqueIds out;
  out.reserve(groups.size());
  for (const GroupId& group : groups) {
    std::shared_ptr<const GroupUniqueIds>& shared = shared_[group];
    if (!shared) {
      std::optional<UniqueIds> ids = Lookup(mesh, {group});
      if (!ids) {
        shared_.erase(group);
        return std::nullopt;
      }
      auto made = std::make_shared<GroupUniqueIds>();
      made->ids = *std::move(ids);
      shared = std::move(made);
    }
    out.push_back(shared);
  }
  return out;
}

UniqueIds Flatten(const SharedUniqueIds& groups) {
  UniqueIds out;
  for (const auto& group : groups) out.insert(out.end(), group->ids.begin(), group->ids.end());
  return out;
}

}  // namespace tpcoord
