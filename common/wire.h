// Conversions between the wire messages (proto/tpcoord/v1) and the domain types of common/. Used by the
// coordinator's handlers and by clients; no gRPC in here, only the generated messages.
#ifndef TPCOORD_COMMON_WIRE_H_
#define TPCOORD_COMMON_WIRE_H_

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "common/dtype.h"
#include "common/mesh.h"
#include "common/tp_init_args.h"
#include "common/training_progress.h"
#include "tpcoord/v1/coordinator.pb.h"

namespace tpcoord {

// INVALID_ARGUMENT naming `field` for DTYPE_UNSPECIFIED or an unknown enum value.
absl::StatusOr<Dtype> DtypeFromProto(v1::Dtype dtype, absl::string_view field = "dtype");
v1::Dtype DtypeToProto(Dtype dtype);

absl::StatusOr<GroupId> GroupIdFromProto(const v1::GroupRef& group, absl::string_view field = "group");
v1::GroupRef GroupIdToProto(const GroupId& group);
v1::Group GroupToProto(const Mesh& mesh, const GroupId& group);

void TpInitRecordToProto(const TpInitRecord& record, v1::TpInitArgs* out);

TrainingProgress TrainingProgressFromProto(const v1::TrainingProgress& progress);
void TrainingProgressToProto(const TrainingProgress& progress, v1::TrainingProgress* out);

}  // namespace tpcoord

#endif  // TPCOORD_COMMON_WIRE_H_
