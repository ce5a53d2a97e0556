#include "coordinator/store/job_storage.h"

#include <utility>

#include "absl/status/status.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "common/deepspeed_error.h"
#include "common/dtype.h"
#include "common/identifiers.h"
#include "tpcoord/state/v1/state.pb.h"

namespace tpcoord {
namespace {

namespace pb = tpcoord::state::v1;

constexpr int kMembersPerChunk = 1024;

std::string JobKey(absl::string_view job) { return absl::StrCat(job_storage::kJobsPrefix, job); }
std::string GenerationKey(absl::string_view job, absl::string_view rest) {
  return absl::StrCat(job_storage::kJobsPrefix, job, "/g/", rest);
}
std::string RankKey(int rank) { return absl::StrFormat("%08d", rank); }

absl::string_view GroupKindName(GroupKind kind) {
  switch (kind) {
    case GroupKind::kTp: return "tp";
    case GroupKind::kDp: return "dp";
    case GroupKind::kWorld: return "world";
  }
  return "?";
}

std::string Serialize(const google::protobuf::MessageLite& message) {
  std::string bytes;
  message.SerializeToString(&bytes);
  return bytes;
}

pb::Phase PhaseToProto(JobPhase phase) { return static_cast<pb::Phase>(static_cast<int>(phase) + 1); }

// A decoding error for `key` of `job`.
absl::Status Corrupt(absl::string_view job, absl::string_view key, absl::string_view what) {
  return WithJobContext(
      job, absl::DataLossError(absl::StrCat("the stored state is corrupt: key ", QuoteForError(key), ": ", what)));
}

std::string HistoryKey(absl::string_view job, uint64_t generation) {
  return absl::StrFormat("%s%s/history/%020d", job_storage::kJobsPrefix, job, generation);
}

bool ValidEndCause(int cause) {
  return cause >= static_cast<int>(EndCause::kNone) && cause <= static_cast<int>(EndCause::kJobClosed);
}

bool ParseRank(absl::string_view text, int* rank) {
  return text.size() == 8 && absl::SimpleAtoi(text, rank) && *rank >= 0 && *rank < kMaxWorldSize;
}

}  // namespace

absl::string_view JobPhaseName(JobPhase phase) {
  switch (phase) {
    case JobPhase::kIdle: return "idle";
    case JobPhase::kJoining: return "joining";
    case JobPhase::kRunning: return "running";
    case JobPhase::kCompleted: return "completed";
    case JobPhase::kFailed: return "failed";
  }
  return "unknown";
}

absl::string_view EndCauseName(EndCause cause) {
  switch (cause) {
    case EndCause::kNone: return "";
    case EndCause::kLeaseExpired: return "lease_expired";
    case EndCause::kWorkerGone: return "worker_gone";
    case EndCause::kWorkerLeft: return "worker_left";
    case EndCause::kWorkerRejoined: return "worker_rejoined";
    case EndCause::kStartFailed: return "start_failed";
    case EndCause::kJobClosed: return "job_closed";
  }
  return "unknown";
}

GenerationRecord RecordOf(const JobHeader& h) {
  return GenerationRecord{h.generation,      h.phase,         h.world_size, h.tp_size,  h.generation_started_unix_ms,
                          h.running_unix_ms, h.ended_unix_ms, h.end_cause,  h.end_rank, h.end_reason};
}

namespace job_storage {

StateWrite PutHeader(absl::string_view job, const JobHeader& header) {
  pb::JobHeader out;
  if (header.tp_init) {
    pb::TpInitRecord* record = out.mutable_tp_init();
    record->set_tp_size(header.tp_init->tp_size);
    record->set_dtype(static_cast<int>(header.tp_init->dtype));
    record->set_has_tp_group(header.tp_init->has_tp_group);
    for (const RankList& group : header.tp_init->tp_groups) {
      record->add_tp_groups()->mutable_ranks()->Add(group.begin(), group.end());
    }
  }
  out.set_generation(header.generation);
  out.set_phase(PhaseToProto(header.phase));
  out.set_world_size(header.world_size);
  out.set_tp_size(header.tp_size);
  out.set_end_reason(header.end_reason);
  out.set_end_fatal(header.end_fatal);
  out.set_created_unix_ms(header.created_unix_ms);
  out.set_updated_unix_ms(header.updated_unix_ms);
  out.set_token_sha256(header.token_sha256);
  out.set_end_cause(static_cast<int>(header.end_cause));
  out.set_end_rank(header.end_rank);
  out.set_generation_started_unix_ms(header.generation_started_unix_ms);
  out.set_running_unix_ms(header.running_unix_ms);
  out.set_ended_unix_ms(header.ended_unix_ms);
  out.set_closed(header.closed);
  out.set_closed_reason(header.closed_reason);
  return StateWrite::Put(JobKey(job), Serialize(out));
}

StateWrite PutGenerationRecord(absl::string_view job, const GenerationRecord& r) {
  pb::GenerationRecord out;
  out.set_generation(r.generation);
  out.set_phase(PhaseToProto(r.phase));
  out.set_world_size(r.world_size);
  out.set_tp_size(r.tp_size);
  out.set_started_unix_ms(r.started_unix_ms);
  out.set_running_unix_ms(r.running_unix_ms);
  out.set_ended_unix_ms(r.ended_unix_ms);
  out.set_end_cause(static_cast<int>(r.end_cause));
  out.set_end_rank(r.end_rank);
  out.set_end_reason(r.end_reason);
  return StateWrite::Put(HistoryKey(job, r.generation), Serialize(out));
}

StateWrite DeleteGenerationRecord(absl::string_view job, uint64_t generation) {
  return StateWrite::Delete(HistoryKey(job, generation));
}

StateWrite PutMergedConfig(absl::string_view job, absl::string_view config) {
  return StateWrite::Put(absl::StrCat(JobKey(job), "/config"), std::string(config));
}

StateWrite PutReference(absl::string_view job, const StoredReference& reference) {
  pb::Reference out;
  out.set_rank(reference.rank);
  out.set_config_text(reference.config_text);
  return StateWrite::Put(GenerationKey(job, "reference"), Serialize(out));
}

void PutMembers(absl::string_view job, const std::vector<StoredMember>& by_rank, StateWrites* out) {
  for (size_t first = 0; first < by_rank.size(); first += kMembersPerChunk) {
    pb::MemberChunk chunk;
    chunk.set_first_rank(static_cast<int>(first));
    for (size_t r = first; r < std::min(by_rank.size(), first + kMembersPerChunk); ++r) {
      pb::MemberChunk::Member* m = chunk.add_members();
      m->set_worker_id(by_rank[r].worker_id);
      m->set_host(by_rank[r].host);
      m->set_key_sha256(by_rank[r].key_sha256);
    }
    out->push_back(
        StateWrite::Put(GenerationKey(job, "members/" + RankKey(static_cast<int>(first))), Serialize(chunk)));
  }
}

StateWrite PutFinished(absl::string_view job, int rank) {
  return StateWrite::Put(GenerationKey(job, "done/" + RankKey(rank)), "");
}

StateWrite PutUniqueId(absl::string_view job, const UniqueIdSlot& slot, absl::string_view id) {
  return StateWrite::Put(GenerationKey(job, absl::StrCat("id/", GroupKindName(slot.group.kind), "/",
                                                         RankKey(slot.group.index), "/", RankKey(slot.root))),
                         std::string(id));
}

StateWrite PutStoreValue(absl::string_view job, absl::string_view key, absl::string_view value) {
  return StateWrite::Put(GenerationKey(job, absl::StrCat("kv/", key)), std::string(value));
}

StateWrite DeleteStoreValue(absl::string_view job, absl::string_view key) {
  return StateWrite::Delete(GenerationKey(job, absl::StrCat("kv/", key)));
}

StateWrite PutBarrierRounds(absl::string_view job, absl::string_view name, uint64_t completed) {
  pb::BarrierRounds out;
  out.set_completed(completed);
  return StateWrite::Put(GenerationKey(job, absl::StrCat("barrier/", name)), Serialize(out));
}

StateWrite ClearGeneration(absl::string_view job) { return StateWrite::DeletePrefix(GenerationKey(job, "")); }

void DeleteJob(absl::string_view job, StateWrites* out) {
  out->push_back(StateWrite::Delete(JobKey(job)));
  out->push_back(StateWrite::DeletePrefix(absl::StrCat(JobKey(job), "/")));
}

}  // namespace job_storage

std::map<std::string, std::vector<StateEntry>> SplitByJob(std::vector<StateEntry> entries) {
  std::map<std::string, std::vector<StateEntry>> jobs;
  for (StateEntry& entry : entries) {
    absl::string_view rest = entry.key;
    if (!absl::ConsumePrefix(&rest, job_storage::kJobsPrefix)) continue;
    const std::string job(rest.substr(0, rest.find('/')));
    jobs[job].push_back(std::move(entry));
  }
  return jobs;
}

absl::StatusOr<StoredJob> DecodeJob(absl::string_view job, absl::Span<const StateEntry> entries) {
  StoredJob stored;
  bool has_header = false;
  std::map<int, pb::MemberChunk> chunks;
  const std::string job_key = JobKey(job);
  for (const StateEntry& entry : entries) {
    absl::string_view rest = entry.key;
    if (!absl::ConsumePrefix(&rest, job_key)) return Corrupt(job, entry.key, "not a key of this job");
    if (rest.empty()) {
      pb::JobHeader header;
      if (!header.ParseFromString(entry.value)) return Corrupt(job, entry.key, "not a JobHeader message");
      JobHeader& h = stored.header;
      if (header.has_tp_init()) {
        const pb::TpInitRecord& r = header.tp_init();
        if (r.dtype() < 0 || r.dtype() > static_cast<int>(Dtype::kBFloat16)) {
          return Corrupt(job, entry.key, absl::StrCat("dtype ", r.dtype(), " is not a dtype"));
        }
        TpInitRecord record{r.tp_size(), static_cast<Dtype>(r.dtype()), r.has_tp_group(), {}};
        for (const pb::RankList& g : r.tp_groups()) record.tp_groups.emplace_back(g.ranks().begin(), g.ranks().end());
        h.tp_init = std::move(record);
      }
      if (header.phase() < pb::PHASE_IDLE || header.phase() > pb::PHASE_FAILED) {
        return Corrupt(job, entry.key, absl::StrCat("phase ", header.phase(), " is not a phase"));
      }
      h.generation = header.generation();
      h.phase = static_cast<JobPhase>(header.phase() - 1);
      h.world_size = header.world_size();
      h.tp_size = header.tp_size();
      h.end_reason = header.end_reason();
      h.end_fatal = header.end_fatal();
      h.created_unix_ms = header.created_unix_ms();
      h.updated_unix_ms = header.updated_unix_ms();
      h.token_sha256 = header.token_sha256();
      if (!ValidEndCause(header.end_cause())) {
        return Corrupt(job, entry.key, absl::StrCat("end_cause ", header.end_cause(), " is not a cause"));
      }
      h.end_cause = static_cast<EndCause>(header.end_cause());
      h.end_rank = header.end_rank();
      h.generation_started_unix_ms = header.generation_started_unix_ms();
      h.running_unix_ms = header.running_unix_ms();
      h.ended_unix_ms = header.ended_unix_ms();
      h.closed = header.closed();
      h.closed_reason = header.closed_reason();
      has_header = true;
      continue;
    }
    if (rest == "/config") {
      stored.merged_config = entry.value;
      continue;
    }
    if (absl::ConsumePrefix(&rest, "/history/")) {
      pb::GenerationRecord r;
      uint64_t generation = 0;
      if (rest.size() != 20 || !absl::SimpleAtoi(rest, &generation) || !r.ParseFromString(entry.value) ||
          r.generation() != generation || r.phase() < pb::PHASE_JOINING || r.phase() > pb::PHASE_FAILED ||
          !ValidEndCause(r.end_cause())) {
        return Corrupt(job, entry.key, "not the GenerationRecord of its generation");
      }
      stored.history.push_back(GenerationRecord{
          r.generation(), static_cast<JobPhase>(r.phase() - 1), r.world_size(), r.tp_size(), r.started_unix_ms(),
          r.running_unix_ms(), r.ended_unix_ms(), static_cast<EndCause>(r.end_cause()), r.end_rank(), r.end_reason()});
      continue;
    }
    if (!absl::ConsumePrefix(&rest, "/g/")) return Corrupt(job, entry.key, "unknown key");
    int rank = 0;
    if (rest == "reference") {
      pb::Reference reference;
      if (!reference.ParseFromString(entry.value)) return Corrupt(job, entry.key, "not a Reference message");
      stored.reference = StoredReference{reference.rank(), reference.config_text()};
    } else if (absl::ConsumePrefix(&rest, "members/")) {
      pb::MemberChunk chunk;
      if (!ParseRank(rest, &rank) || !chunk.ParseFromString(entry.value) || chunk.first_rank() != rank) {
        return Corrupt(job, entry.key, "not a MemberChunk message for its rank");
      }
      chunks.emplace(rank, std::move(chunk));
    } else if (absl::ConsumePrefix(&rest, "done/")) {
      if (!ParseRank(rest, &rank)) return Corrupt(job, entry.key, "not a rank");
      stored.finished.insert(rank);
    } else if (absl::ConsumePrefix(&rest, "id/")) {
      UniqueIdSlot slot;  // kind/index/root
      const std::vector<absl::string_view> parts = absl::StrSplit(rest, '/');
      const absl::string_view kind = parts[0];
      if (kind == "tp")
        slot.group.kind = GroupKind::kTp;
      else if (kind == "dp")
        slot.group.kind = GroupKind::kDp;
      else if (kind == "world")
        slot.group.kind = GroupKind::kWorld;
      else
        return Corrupt(job, entry.key, "not a group kind");
      if (parts.size() != 3 || !ParseRank(parts[1], &slot.group.index) || !ParseRank(parts[2], &slot.root) ||
          entry.value.size() != kUniqueIdBytes) {
        return Corrupt(job, entry.key, "not a unique id of a group");
      }
      stored.unique_ids[slot] = entry.value;
    } else if (absl::ConsumePrefix(&rest, "kv/")) {
      if (!ValidateStoreKey(rest).ok() || entry.value.size() > kMaxStoreValueBytes) {
        return Corrupt(job, entry.key, "not a store entry");
      }
      stored.kv.emplace(std::string(rest), entry.value);
    } else if (absl::ConsumePrefix(&rest, "barrier/")) {
      pb::BarrierRounds rounds;
      if (!ValidateBarrierName(rest).ok() || !rounds.ParseFromString(entry.value)) {
        return Corrupt(job, entry.key, "not a barrier's rounds");
      }
      stored.barrier_rounds.emplace(std::string(rest), rounds.completed());
    } else {
      return Corrupt(job, entry.key, "unknown key");
    }
  }

  // The pieces must describe one consistent generation.
  const JobHeader& h = stored.header;
  if (!has_header) return Corrupt(job, job_key, "missing, while other keys of the job exist");
  if (h.tp_init.has_value()) {
    std::optional<TpInitRecord> none;
    for (const RankList& group : h.tp_init->tp_groups) {
      if (!NormalizeTpInitArgs(h.tp_init->tp_size, h.tp_init->dtype, group).ok()) {
        return Corrupt(job, job_key, "a recorded tp_group is invalid");
      }
    }
    if (h.tp_init->tp_size < 1 || h.tp_init->tp_size > kMaxTpSize) return Corrupt(job, job_key, "bad recorded tp_size");
  }
  const bool has_generation_data = stored.reference || !chunks.empty() || !stored.finished.empty() ||
                                   !stored.unique_ids.empty() || !stored.kv.empty() || !stored.barrier_rounds.empty();
  if (h.generation == 0) {
    if (h.phase != JobPhase::kIdle || has_generation_data) return Corrupt(job, job_key, "generation 0 is not idle");
    return stored;
  }
  absl::StatusOr<Mesh> mesh = Mesh::Create(h.world_size, h.tp_size);
  if (!mesh.ok()) return Corrupt(job, job_key, mesh.status().message());
  for (const auto& [first, chunk] : chunks) {
    if (first != static_cast<int>(stored.members.size()))
      return Corrupt(job, GenerationKey(job, "members/"), "a chunk is missing");
    for (const pb::MemberChunk::Member& m : chunk.members())
      stored.members.push_back({m.worker_id(), m.host(), m.key_sha256()});
  }
  if (!stored.members.empty() && static_cast<int>(stored.members.size()) != h.world_size) {
    return Corrupt(job, GenerationKey(job, "members/"),
                   absl::StrCat(stored.members.size(), " members for a world of ", h.world_size));
  }
  if (stored.members.empty() && (h.phase == JobPhase::kRunning || h.phase == JobPhase::kCompleted)) {
    return Corrupt(job, GenerationKey(job, "members/"), "missing for a running generation");
  }
  for (int rank : stored.finished) {
    if (rank >= static_cast<int>(stored.members.size()))
      return Corrupt(job, GenerationKey(job, "done/" + RankKey(rank)), "no such member");
  }
  for (const auto& [slot, id] : stored.unique_ids) {
    if (!mesh->Contains(slot.group) || slot.root >= mesh->UniqueIdRoots(slot.group)) {
      return Corrupt(job, GenerationKey(job, "id/"), absl::StrCat(SlotName(slot), " is not a unique id of the mesh"));
    }
  }
  if (stored.reference && (stored.reference->rank < 0 || stored.reference->rank >= h.world_size)) {
    return Corrupt(job, GenerationKey(job, "reference"), "its rank is outside the world");
  }
  return stored;
}

std::string StoredTokenSha256(absl::string_view job, absl::Span<const StateEntry> entries) {
  const std::string job_key = JobKey(job);
  for (const StateEntry& entry : entries) {
    pb::JobHeader header;
    if (entry.key == job_key && header.ParseFromString(entry.value)) return header.token_sha256();
  }
  return "";
}

}  // namespace tpcoord
