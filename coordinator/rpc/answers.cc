#include "coordinator/rpc/answers.h"

#include <memory>
#include <mutex>
#include <string>
#include <utility>

#include "common/wire.h"

namespace tpcoord {

void AssignmentToProto(const Assignment& a, v1::JoinResponse* out) {
  const Mesh& mesh = a.mesh;
  out->set_generation(a.generation);
  out->set_rank(a.rank);
  out->mutable_mesh()->set_world_size(mesh.world_size());
  out->mutable_mesh()->set_tp_size(mesh.tp_size());
  out->mutable_mesh()->set_dp_size(mesh.dp_size());
  out->set_tp_rank(mesh.tp_rank(a.rank));
  out->set_dp_rank(mesh.dp_rank(a.rank));
  *out->mutable_tp_group() = GroupToProto(mesh, mesh.tp_group_of(a.rank));
  *out->mutable_dp_group() = GroupToProto(mesh, mesh.dp_group_of(a.rank));
  out->set_heartbeat_interval_ms(static_cast<uint32_t>(a.heartbeat_interval.count()));
  out->set_lease_ms(static_cast<uint32_t>(a.lease.count()));
}

AnswerBytes UniqueIdBytes(const UniqueIdAnswer& answer) {
  AnswerBytes bytes;
  for (const std::shared_ptr<const GroupUniqueIds>& group : answer.groups) {
    std::call_once(group->encode_once, [&group] {
      v1::GetUniqueIdResponse ids;  // the group's entries of GetUniqueIdResponse.ids
      for (const auto& [slot, id_bytes] : group->ids) {
        v1::UniqueId* id = ids.add_ids();
        *id->mutable_group() = GroupIdToProto(slot.group);
        id->set_root(slot.root);
        id->set_id(id_bytes);
      }
      std::string encoded = ids.SerializeAsString();
      group->encoded = std::make_shared<const grpc::Slice>(encoded.data(), encoded.size());
    });
    bytes.Append(*static_cast<const grpc::Slice*>(group->encoded.get()));
  }
  return bytes;
}

grpc::ByteBuffer SerializeAnswer(const UniqueIdAnswer& answer) { return UniqueIdBytes(answer).ToByteBuffer(); }

void JobViewToProto(const JobView& view, v1::JobStatus* out) {
  out->set_job_id(view.job_id);
  out->set_tp_init_recorded(view.tp_init.has_value());
  if (view.tp_init) TpInitRecordToProto(*view.tp_init, out->mutable_tp_init());
  out->set_merged_config_json(view.merged_config);
  out->set_generation(view.generation);
  out->set_phase(static_cast<v1::Phase>(static_cast<int>(view.phase) + 1));
  out->set_world_size(view.world_size);
  out->set_member_count(view.member_count);
  out->set_end_reason(view.end_reason);
  out->set_closed(view.closed);
  out->set_closed_reason(view.closed_reason);
  for (const MemberView& m : view.members) {
    v1::Member* member = out->add_members();
    member->set_rank(m.rank);
    member->set_host(m.host);
    member->set_worker_id(m.worker_id);
    member->set_finished(m.finished);
    member->set_last_heartbeat_age_ms(m.heartbeat_age_ms);
  }
  for (const std::string& missing : view.missing) out->add_missing(missing);
  for (const PhaseTimingView& t : view.timings) {
    v1::PhaseTiming* timing = out->add_timings();
    timing->set_phase(t.phase);
    timing->set_start_unix_ms(t.start_unix_ms);
    timing->set_duration_ms(t.duration_ms);
  }
  out->set_healthy_members(view.healthy_members);
  if (view.progress) {
    TrainingProgress latest = *view.progress;
    latest.eval_loss = view.eval_loss;  // the latest eval loss, whichever report brought it
    TrainingProgressToProto(latest, out->mutable_progress());
  }
  for (const GenerationRecord& r : view.history) {
    v1::GenerationEvent* event = out->add_history();
    event->set_generation(r.generation);
    event->set_phase(static_cast<v1::Phase>(static_cast<int>(r.phase) + 1));
    event->set_world_size(r.world_size);
    event->set_tp_size(r.tp_size);
    event->set_started_unix_ms(r.started_unix_ms);
    event->set_running_unix_ms(r.running_unix_ms);
    event->set_ended_unix_ms(r.ended_unix_ms);
    event->set_end_cause(std::string(EndCauseName(r.end_cause)));
    event->set_end_rank(r.end_rank);
    event->set_end_reason(r.end_reason);
  }
}

}  // namespace tpcoord
