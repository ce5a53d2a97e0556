// The arguments of deepspeed.tp_model_init, and the rule that records them for a job across calls.
//
// DeepSpeed keeps one process-global record that is never cleared (spec §1.2, gap G1). tpcoord keeps one
// record per job, shared by every worker of the job, and compares tp_groups as sorted rank lists instead of
// by handle identity or size alone (gap G2). Because every worker of a job records through the same record,
// a job legitimately holds several TP groups (rank 0 records {0,1}, rank 2 records {2,3}); they must be
// disjoint and of equal size.
#ifndef TPCOORD_COMMON_TP_INIT_ARGS_H_
#define TPCOORD_COMMON_TP_INIT_ARGS_H_

#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "common/dtype.h"
#include "common/limits.h"

namespace tpcoord {

// Global ranks of a process group: ascending, distinct, >= 0.
using RankList = std::vector<int>;

// One tp_model_init call (or, for a merge, the record as it applies to one caller).
struct TpInitArgs {
  int tp_size = 1;
  Dtype dtype = Dtype::kFloat32;
  std::optional<RankList> tp_group;  // nullopt: DeepSpeed's tp_group=None
};

// What a job holds after every tp_model_init call so far.
struct TpInitRecord {
  int tp_size = 1;
  Dtype dtype = Dtype::kFloat32;
  bool has_tp_group = false;
  std::vector<RankList> tp_groups;  // distinct, pairwise disjoint, equal size; first-recorded order
};

// Checks one call's arguments on their own and returns them with the group sorted: 1 <= tp_size <= 65536
// (DeepSpeed accepts anything here), group ranks in [0, 1000000) without duplicates, and a group whose size
// equals tp_size (DeepSpeed defers that check to the merge; failing at record time keeps a bad record from
// being stored). INVALID_ARGUMENT for malformed values; the DeepSpeed size-mismatch text otherwise.
absl::StatusOr<TpInitArgs> NormalizeTpInitArgs(int tp_size, Dtype dtype,
                                               std::optional<std::vector<int>> tp_group);

// The record rule (spec §1.2). `current` is the job's record (nullopt before the first call); `call` comes
// from NormalizeTpInitArgs. Returns the record after the call, or DeepSpeed's
// "Conflicting tp_model_init arguments detected across multiple calls." when:
//   - tp_size or dtype differ from the record;
//   - exactly one of the record and the call has a tp_group;
//   - the call's group differs in size from the recorded groups, or overlaps a recorded group without
//     being equal to it (G2: DeepSpeed compares sizes only, and only after deepspeed.initialize ran, G3).
// An identical call returns the record unchanged; a new disjoint group of the same size is appended.
absl::StatusOr<TpInitRecord> RecordTpInitArgs(const std::optional<TpInitRecord>& current,
                                              const TpInitArgs& call);

// The record as it applies to one merge. For a member of a generation, pass its TP group from the mesh: the
// Join checked that every recorded group is a TP group of the mesh, so a member whose group was recorded
// gets exactly that group, and one whose group was not recorded gets the group it will use. A standalone
// merge (member_tp_group == nullptr) uses the first recorded group, as DeepSpeed keeps the first stored one.
TpInitArgs ArgsForMerge(const TpInitRecord& record, const RankList* member_tp_group);

// "[0, 1, 2]".
std::string RankListString(const RankList& ranks);

// "tp_size=2 dtype=torch.bfloat16 tp_group=[0, 1]" for logs and error context.
std::string DescribeTpInitArgs(const TpInitArgs& args);

}  // namespace tpcoord

#endif  // TPCOORD_COMMON_TP_INIT_ARGS_H_
