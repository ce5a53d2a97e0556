// DeepSpeed's (DP x TP) process mesh (spec §3.3): a row-major grid of D rows and T columns over ranks
// 0..W-1. TP groups are the rows (contiguous ranks), DP groups the columns (strided ranks):
//   W=4, T=2: TP {0,1},{2,3}   DP {0,2},{1,3}
//   W=8, T=4: TP {0-3},{4-7}   DP {0,4},{1,5},{2,6},{3,7}
// Unlike DeepSpeed's DeviceMesh path, a shape that leaves ranks outside every group is rejected up front
// (gap G12).
#ifndef TPCOORD_COMMON_MESH_H_
#define TPCOORD_COMMON_MESH_H_

#include <string>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "common/tp_init_args.h"

namespace tpcoord {

enum class GroupKind { kTp, kDp, kWorld };

struct GroupId {
  GroupKind kind = GroupKind::kWorld;
  int index = 0;

  bool operator==(const GroupId& o) const { return kind == o.kind && index == o.index; }
  bool operator<(const GroupId& o) const { return kind != o.kind ? kind < o.kind : index < o.index; }
};

// "tp/1", "dp/0", "world".
std::string GroupName(const GroupId& group);

// NCCL's scalable bootstrap (ncclCommInitRankScalable, NCCL >= 2.23): a communicator of more than this many
// ranks starts from ceil(size / kRanksPerUniqueIdRoot) unique IDs, each made by its own root process, so
// that no root serves more than this many ranks (NCCL staggers the contacts to one root past 256).
inline constexpr int kRanksPerUniqueIdRoot = 256;

// One of a communicator's unique IDs: root 0 (the only one of a group up to kRanksPerUniqueIdRoot ranks) is
// made by the group's leader.
struct UniqueIdSlot {
  GroupId group;
  int root = 0;

  bool operator==(const UniqueIdSlot& o) const { return group == o.group && root == o.root; }
  bool operator<(const UniqueIdSlot& o) const { return group == o.group ? root < o.root : group < o.group; }
};

// Unique IDs and the slots they fill.
using UniqueIds = std::vector<std::pair<UniqueIdSlot, std::string>>;

// "world", "world root 3".
std::string SlotName(const UniqueIdSlot& slot);

class Mesh {
 public:
  Mesh() : Mesh(1, 1) {}  // a world of one
  // INVALID_ARGUMENT unless 1 <= tp_size <= world_size <= kMaxWorldSize and tp_size divides world_size.
  static absl::StatusOr<Mesh> Create(int world_size, int tp_size);

  int world_size() const { return world_size_; }
  int tp_size() const { return tp_size_; }
  int dp_size() const { return world_size_ / tp_size_; }
  int num_groups(GroupKind kind) const;

  int tp_rank(int rank) const { return rank % tp_size_; }
  int dp_rank(int rank) const { return rank / tp_size_; }
  GroupId tp_group_of(int rank) const { return {GroupKind::kTp, rank / tp_size_}; }
  GroupId dp_group_of(int rank) const { return {GroupKind::kDp, rank % tp_size_}; }

  // False for an unknown kind or an index out of range.
  bool Contains(const GroupId& group) const;
  // Ascending ranks of a group; `group` must satisfy Contains.
  RankList Ranks(const GroupId& group) const;
  int GroupSize(const GroupId& group) const;
  // The group's lowest rank, which publishes its (first) unique ID.
  int Leader(const GroupId& group) const { return RootRank({group, 0}); }
  bool IsMember(const GroupId& group, int rank) const;

  // How many unique IDs the group's communicator starts from: ceil(size / kRanksPerUniqueIdRoot).
  int UniqueIdRoots(const GroupId& group) const;
  // The rank that makes the ID of `slot`: the first of the slot.root-th of UniqueIdRoots(group) near-equal
  // slices of the group's ranks, split as NCCL's bootstrap splits them among its roots (the first
  // size % roots slices one rank longer), so each root is one of the ranks it serves.
  int RootRank(const UniqueIdSlot& slot) const;
  // The roots of the groups `rank` belongs to that it makes the ID of, in (group, root) order.
  std::vector<UniqueIdSlot> RootSlotsOf(int rank) const;

  // Every group in DeepSpeed's explicit new_group order (spec §3.2): DP groups t = 0..T-1, then TP groups
  // d = 0..D-1. The world group is not part of that order.
  std::vector<GroupId> NewGroupOrder() const;

  // The TP group index whose ranks are exactly `ranks` (sorted), or -1.
  int TpGroupIndex(const RankList& ranks) const;

 private:
  Mesh(int world_size, int tp_size) : world_size_(world_size), tp_size_(tp_size) {}
  int world_size_;
  int tp_size_;
};

}  // namespace tpcoord

#endif  // TPCOORD_COMMON_MESH_H_
