#include "common/mesh.h"

#include <algorithm>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"

namespace tpcoord {

std::string GroupName(const GroupId& group) {
  switch (group.kind) {
    case GroupKind::kTp: return absl::StrCat("tp/", group.index);
    case GroupKind::kDp: return absl::StrCat("dp/", group.index);
    case GroupKind::kWorld: return "world";
  }
  return "unknown";
}

std::string SlotName(const UniqueIdSlot& slot) {
  return slot.root == 0 ? GroupName(slot.group) : absl::StrCat(GroupName(slot.group), " root ", slot.root);
}

absl::StatusOr<Mesh> Mesh::Create(int world_size, int tp_size) {
  if (world_size < 1 || world_size > kMaxWorldSize) {
    return absl::InvalidArgumentError(
        absl::StrCat("world_size ", world_size, " is out of range; it must be between 1 and ", kMaxWorldSize));
  }
  if (tp_size < 1) {
    return absl::InvalidArgumentError(absl::StrCat("tp_size ", tp_size, " must be at least 1"));
  }
  if (tp_size > world_size) {
    return absl::InvalidArgumentError(absl::StrCat("tp_size ", tp_size, " is larger than world_size ",
                                                   world_size, ": a TP group cannot span more ranks than exist"));
  }
  if (world_size % tp_size != 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        world_size, " is not divisible by ", tp_size, " (world_size ", world_size, ", tp_size ", tp_size,
        "): ", world_size % tp_size, " rank(s) would belong to no TP group"));
  }
  return Mesh(world_size, tp_size);
}

int Mesh::num_groups(GroupKind kind) const {
  switch (kind) {
    case GroupKind::kTp: return dp_size();
    case GroupKind::kDp: return tp_size_;
    case GroupKind::kWorld: return 1;
  }
  return 0;
}

bool Mesh::Contains(const GroupId& group) const {
  return group.index >= 0 && group.index < num_groups(group.kind);
}

RankList Mesh::Ranks(const GroupId& group) const {
  RankList ranks;
  switch (group.kind) {
    case GroupKind::kTp:
      for (int i = 0; i < tp_size_; ++i) ranks.push_back(group.index * tp_size_ + i);
      break;
    case GroupKind::kDp:
      for (int j = 0; j < dp_size(); ++j) ranks.push_back(group.index + j * tp_size_);
      break;
    case GroupKind::kWorld:
      for (int r = 0; r < world_size_; ++r) ranks.push_back(r);
      break;
  }
  return ranks;
}

int Mesh::GroupSize(const GroupId& group) const {
  return group.kind == GroupKind::kTp ? tp_size_ : group.kind == GroupKind::kDp ? dp_size() : world_size_;
}

namespace {

// The group-local position (0 .. size-1) of the first rank that root `root` of `roots` serves.
int FirstPositionOfRoot(int root, int size, int roots) {
  return root * (size / roots) + std::min(root, size % roots);
}

}  // namespace

int Mesh::UniqueIdRoots(const GroupId& group) const {
  return (GroupSize(group) + kRanksPerUniqueIdRoot - 1) / kRanksPerUniqueIdRoot;
}

int Mesh::RootRank(const UniqueIdSlot& slot) const {
  const int p = FirstPositionOfRoot(slot.root, GroupSize(slot.group), UniqueIdRoots(slot.group));
  switch (slot.group.kind) {
    case GroupKind::kTp: return slot.group.index * tp_size_ + p;
    case GroupKind::kDp: return slot.group.index + p * tp_size_;
    case GroupKind::kWorld: return p;
  }
  return 0;
}

std::vector<UniqueIdSlot> Mesh::RootSlotsOf(int rank) const {
  std::vector<UniqueIdSlot> slots;
  const std::pair<GroupId, int> positions[] = {{tp_group_of(rank), tp_rank(rank)},
                                               {dp_group_of(rank), dp_rank(rank)},
                                               {{GroupKind::kWorld, 0}, rank}};
  for (const auto& [group, position] : positions) {
    const int size = GroupSize(group), roots = UniqueIdRoots(group);
    // The root whose slice holds `position`, if `position` starts it.
    for (int root = std::min(position / std::max(1, size / roots), roots - 1); root >= 0; --root) {
      const int first = FirstPositionOfRoot(root, size, roots);
      if (first == position) slots.push_back({group, root});
      if (first <= position) break;
    }
  }
  std::sort(slots.begin(), slots.end());
  return slots;
}

bool Mesh::IsMember(const GroupId& group, int rank) const {
  if (rank < 0 || rank >= world_size_) return false;
  switch (group.kind) {
    case GroupKind::kTp: return tp_group_of(rank).index == group.index;
    case GroupKind::kDp: return dp_group_of(rank).index == group.index;
    case GroupKind::kWorld: return true;
  }
  return false;
}

std::vector<GroupId> Mesh::NewGroupOrder() const {
  std::vector<GroupId> order;
  for (int t = 0; t < tp_size_; ++t) order.push_back({GroupKind::kDp, t});
  for (int d = 0; d < dp_size(); ++d) order.push_back({GroupKind::kTp, d});
  return order;
}

int Mesh::TpGroupIndex(const RankList& ranks) const {
  if (static_cast<int>(ranks.size()) != tp_size_ || ranks.front() % tp_size_ != 0) return -1;
  for (size_t i = 0; i < ranks.size(); ++i) {
    if (ranks[i] != ranks.front() + static_cast<int>(i) || ranks[i] >= world_size_) return -1;
  }
  return ranks.front() / tp_size_;
}

}  // namespace tpcoord
