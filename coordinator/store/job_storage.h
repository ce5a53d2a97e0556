// How a job's durable state is laid out in the StateStore, and how it is read back. The keys and value
// messages are documented in proto/tpcoord/state/v1/state.proto.
//
// What is kept: the job's header (recorded tp_model_init args, generation, phase, world shape, why it ended,
// timestamps, the hash of its token), its latest merged config, and of the current generation everything
// its members need to go on after a coordinator restart: who holds which rank under which member key
// (hashed), who has finished, the config they agreed on, the NCCL unique IDs, the key-value entries and how
// many rounds each barrier completed. Not kept: calls parked in the coordinator (their clients retry),
// workers still joining (they retry their Join), and heartbeat times (every lease starts afresh when the
// coordinator does).
#ifndef TPCOORD_COORDINATOR_STORE_JOB_STORAGE_H_
#define TPCOORD_COORDINATOR_STORE_JOB_STORAGE_H_

#include <cstdint>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/types/span.h"
#include "common/mesh.h"
#include "common/tp_init_args.h"
#include "coordinator/store/state_store.h"

namespace tpcoord {

enum class JobPhase { kIdle, kJoining, kRunning, kCompleted, kFailed };

absl::string_view JobPhaseName(JobPhase phase);

// Why a generation failed (tpctl events, tpcoord_generations_ended_total{reason}).
enum class EndCause { kNone, kLeaseExpired, kWorkerGone, kWorkerLeft, kWorkerRejoined, kStartFailed, kJobClosed };

// "lease_expired", "worker_gone", "worker_left", "worker_rejoined", "start_failed", "job_closed"; "" for kNone.
absl::string_view EndCauseName(EndCause cause);

// What a job is between calls: its record and the state of its latest generation.
struct JobHeader {
  std::optional<TpInitRecord> tp_init;
  uint64_t generation = 0;  // 0: none yet
  JobPhase phase = JobPhase::kIdle;
  int world_size = 0;
  int tp_size = 0;
  std::string end_reason;
  bool end_fatal = false;  // see LeaveRequest.fatal
  int64_t created_unix_ms = 0;
  int64_t updated_unix_ms = 0;
  std::string token_sha256;  // the job's bearer token, hashed (caller.h); empty: bound to none
  // How the current generation went, for its GenerationRecord (Job stamps them as the phase changes).
  EndCause end_cause = EndCause::kNone;
  int end_rank = -1;  // the rank that ended it, if one did
  int64_t generation_started_unix_ms = 0;
  int64_t running_unix_ms = 0;  // 0: never ran
  int64_t ended_unix_ms = 0;    // 0: not over
  // CloseJob (torchrun's set_closed): no new generation starts. Kept until the job is deleted.
  bool closed = false;
  std::string closed_reason;  // the first CloseJob's
};

// One generation of a job's history: what the header said of it last.
struct GenerationRecord {
  uint64_t generation = 0;
  JobPhase phase = JobPhase::kJoining;
  int world_size = 0;
  int tp_size = 0;
  int64_t started_unix_ms = 0;
  int64_t running_unix_ms = 0;
  int64_t ended_unix_ms = 0;
  EndCause end_cause = EndCause::kNone;
  int end_rank = -1;
  std::string end_reason;
};

// The record of `header`'s generation (which must be > 0).
GenerationRecord RecordOf(const JobHeader& header);

struct StoredMember {
  std::string worker_id;
  std::string host;
  std::string key_sha256;  // the member key the seat is bound to, hashed
};

// The config the members of a generation agreed on (spec gap G27): the first one merged, and by whom.
struct StoredReference {
  int rank = 0;
  std::string config_text;
};

// Everything the state store holds of one job.
struct StoredJob {
  JobHeader header;
  std::string merged_config;
  std::optional<StoredReference> reference;
  std::vector<StoredMember> members;  // indexed by rank: empty, or exactly header.world_size of them
  std::set<int> finished;             // ranks that left finished
  std::map<UniqueIdSlot, std::string> unique_ids;
  std::map<std::string, std::string> kv;
  std::map<std::string, uint64_t> barrier_rounds;  // completed rounds by barrier name
  std::vector<GenerationRecord> history;           // by generation, at most kMaxGenerationHistory
};

// The writes that store each piece. `job` must be a valid job id.
namespace job_storage {

inline constexpr absl::string_view kJobsPrefix = "j/";

StateWrite PutHeader(absl::string_view job, const JobHeader& header);
StateWrite PutMergedConfig(absl::string_view job, absl::string_view config);
StateWrite PutReference(absl::string_view job, const StoredReference& reference);
// The members of a complete world, `by_rank`, in chunks of 1024 ranks.
void PutMembers(absl::string_view job, const std::vector<StoredMember>& by_rank, StateWrites* out);
StateWrite PutFinished(absl::string_view job, int rank);
StateWrite PutUniqueId(absl::string_view job, const UniqueIdSlot& slot, absl::string_view id);
StateWrite PutStoreValue(absl::string_view job, absl::string_view key, absl::string_view value);
StateWrite DeleteStoreValue(absl::string_view job, absl::string_view key);
StateWrite PutBarrierRounds(absl::string_view job, absl::string_view name, uint64_t completed);
StateWrite PutGenerationRecord(absl::string_view job, const GenerationRecord& record);
StateWrite DeleteGenerationRecord(absl::string_view job, uint64_t generation);
// Everything of the current generation, as the next one starts.
StateWrite ClearGeneration(absl::string_view job);
// Everything of the job.
void DeleteJob(absl::string_view job, StateWrites* out);

}  // namespace job_storage

// A whole store read (Scan of job_storage::kJobsPrefix) split by job, in job id order.
std::map<std::string, std::vector<StateEntry>> SplitByJob(std::vector<StateEntry> entries);

// Reads one job back from its entries. DATA_LOSS naming the job and the key when an entry cannot be
// decoded or the entries contradict each other (members that do not cover the world, a rank or group
// outside the mesh, ...). The message says what is wrong, not what to do: that depends on who asks.
absl::StatusOr<StoredJob> DecodeJob(absl::string_view job, absl::Span<const StateEntry> entries);

// The token binding (JobHeader.token_sha256) of a job DecodeJob refused, if its header can still be read:
// then its owner can still prove who it is, and delete it. "" when the header is lost too.
std::string StoredTokenSha256(absl::string_view job, absl::Span<const StateEntry> entries);

}  // namespace tpcoord

#endif  // TPCOORD_COORDINATOR_STORE_JOB_STORAGE_H_
