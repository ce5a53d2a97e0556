// One training job as the coordinator sees it: its recorded tp_model_init arguments and its current
// generation (one rendezvous of world_size workers) with everything that belongs to that generation.
// The generation's state lives in plain parts, each owning its data (completions.h, parked_calls.h,
// key_value_store.h, unique_id_table.h, barrier_set.h, config_agreement.h, lease_monitor.h, job_view.h);
// this class keeps the generation lifecycle: joining, running, completed or failed, and the next one.
//
// Thread-safety: every public method may be called from any thread. One mutex guards the job. Every call
// answers exactly once through its callback, never under that mutex, possibly before the method returns.
//
// Who may do what (caller.h): every call names its Caller, and the job admits it under its lock in the same
// step that serves it, so that no change slips between the check and the call. A job is bound at creation
// to its creator's token; every call must carry that token (or the admin token). Calls that act as a rank
// must also carry the member key that rank joined with, and store calls the key of some member: holding the
// job's token is not enough to speak for another worker.
//
// How state changes (the one commit path, Mutate, over commit_queue.h):
//   - A change is decided under the mutex against the job's current state. If it needs durable writes, they
//     go to the StateCommitter, and the change is applied in memory, and answered, only once they are on
//     disk. A write that fails answers its error and changes nothing: memory never holds what the store
//     does not.
//   - Changes are decided and applied in the order they were asked for. While a write is on its way to
//     disk, later changes queue; the next batch takes every queued change that touches something no earlier
//     change of the batch touches (a store key, a group's unique ID, a member, a barrier; some changes touch
//     the whole job), so concurrent writers share one transaction.
//   - Reads (GetUniqueIds, StoreGet, StoreWait, StoreCheck, StoreNumKeys, Heartbeat, View) see only what is
//     durable, and never wait for a write.
//
// Invariants:
//   - A parked call is in parked_ until it is answered; whoever answers it takes it out first.
//   - Everything generation-scoped lives in gen_ and is dropped when the next generation starts.
//   - header_ and merged_config_ are exactly what the state store holds of the job.
//   - header_.token_sha256 never changes once the job is born.
#ifndef TPCOORD_COORDINATOR_JOB_JOB_H_
#define TPCOORD_COORDINATOR_JOB_JOB_H_

#include <atomic>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "common/limits.h"
#include "common/log_line.h"
#include "common/mesh.h"
#include "common/mutex.h"
#include "common/tp_init_args.h"
#include "coordinator/job/caller.h"
#include "coordinator/job/commit_queue.h"
#include "coordinator/job/completions.h"
#include "coordinator/job/job_view.h"
#include "coordinator/job/key_value_store.h"
#include "coordinator/job/metrics.h"
#include "coordinator/job/parked_calls.h"
#include "coordinator/job/progress_history.h"
#include "coordinator/job/timer_queue.h"
#include "coordinator/store/job_storage.h"
#include "coordinator/store/state_committer.h"

namespace tpcoord {

struct JobOptions {
  Millis lease{10000};         // a member silent this long ends the generation
  Millis default_wait{60000};  // for wait_timeout_ms == 0
  size_t max_parked_calls = kMaxParkedCallsPerJob;
  bool only_admin_creates_jobs = false;  // --job-creation admin
  bool admin_token = false;              // --admin-token-file is set: an admin may delete any job
  // How an operator removes a job while the coordinator is stopped ("tp-coordinator --state-dir D
  // --forget-job"), named to the users of a job whose token binding is unreadable.
  std::string forget_job_command = "tp-coordinator --forget-job";
  // Receives one line per generation event (joining, running, ended, completed); may be empty.
  std::function<void(const LogLine&)> log;
};

// What every job of one coordinator shares. Everything must outlive the jobs.
struct JobContext {
  StateCommitter* committer = nullptr;
  TimerQueue* timers = nullptr;
  StoreQuota* store_quota = nullptr;
  JobOptions options;
  // Runs (not under any job lock) when a job is gone — deleted, expired, or created by a call that left no
  // state — so that its registry can drop it.
  std::function<void(const std::shared_ptr<class Job>&)> on_gone;
  Metrics* metrics = nullptr;  // may be null
};

struct JoinArgs {
  std::string worker_id;
  std::string host;
  int world_size = 0;
  std::optional<int> requested_rank;
  int tp_size = 0;         // 0: the recorded tp_size, or 1
  int min_world_size = 0;  // 0: world_size (see JoinRequest.min_world_size)
  Millis rejoin_timeout{0};
};

struct RecordOutcome {
  TpInitRecord record;
  bool created = false;
};

struct MergeOutcome {
  std::string merged_config;  // compact JSON, keys sorted
  bool tp_init_recorded = false;
};

class Job : public std::enable_shared_from_this<Job> {
 public:
  // A job that does not exist yet: it comes to exist with its first durable change (a record, a Join).
  Job(std::string id, const JobContext* context);
  ~Job();
  Job(const Job&) = delete;
  Job& operator=(const Job&) = delete;

  // Builds the job from what the state store holds, after a restart. A running generation goes on: its
  // members keep their ranks, unique IDs and store entries, and every lease starts afresh. A joining one
  // waits for its workers' retried Joins. Call once, on a new job, before any other call.
  void Restore(StoredJob stored);
  // The job's stored state is unreadable: every call but Delete answers `status` (DATA_LOSS), with what the
  // caller can do about it. `token_sha256`: the job's token binding, if its header could still be read (its
  // owner may then delete it); "" when it is lost, and only the admin, or an operator with the coordinator
  // stopped, can remove the job. Returns what calls will answer.
  absl::Status MarkCorrupt(absl::Status status, std::string token_sha256);

  const std::string& id() const { return id_; }
  // The store holds the job: it is visible to every call, not only to the ones that create it.
  bool exists() const { return born_.load(std::memory_order_acquire) && !gone(); }
  // Deleted, expired, or never came to exist: its registry drops it and every call answers NOT_FOUND.
  bool gone() const { return gone_.load(std::memory_order_acquire); }
  // A job that does not exist yet is gone as soon as nothing is pending in it and nobody holds a pin: a
  // caller about to make a call that may create it pins it first (false: it is gone already; make a new one).
  // Lock-free on a job that exists.
  bool TryPin() ABSL_LOCKS_EXCLUDED(mu_);
  void Unpin() ABSL_LOCKS_EXCLUDED(mu_);

  // Creates the job, idle, bound to `token_sha256` (empty: the caller's token). ALREADY_EXISTS if it exists.
  void Create(const Caller& caller, std::string token_sha256, StatusDone done);
  void Record(const Caller& caller, const TpInitArgs& args, Done<RecordOutcome> done);
  // generation == 0: a dry run against the record, which changes nothing (the job need not exist).
  // Otherwise `rank` must be the caller's seat in that generation, and the config must agree with the first
  // one merged in it, which becomes the job's merged config.
  void Merge(const Caller& caller, std::string config_text, bool has_mpu, uint64_t generation, int rank,
             Done<MergeOutcome> done);

  // Calls that may park return an id for Cancel. Join binds the worker's seat to the caller's member key.
  uint64_t Join(const Caller& caller, JoinArgs args, Millis wait, Done<Assignment> done);
  // Answers the IDs of `groups` in the order asked, each group's roots in root order (Mesh::UniqueIdRoots).
  uint64_t GetUniqueIds(const Caller& caller, uint64_t generation, int rank, std::vector<GroupId> groups, Millis wait,
                        Done<SharedUniqueIds> done);
  // The same, the IDs in one list (tests, tools).
  uint64_t GetUniqueIds(const Caller& caller, uint64_t generation, int rank, std::vector<GroupId> groups, Millis wait,
                        Done<UniqueIds> done);
  uint64_t StoreGet(const Caller& caller, uint64_t generation, std::string key, Millis wait, Done<std::string> done);
  uint64_t StoreWait(const Caller& caller, uint64_t generation, std::vector<std::string> keys, Millis wait,
                     StatusDone done);
  // `round`: see BarrierRequest.round (0: the next one).
  uint64_t Barrier(const Caller& caller, uint64_t generation, int rank, std::string name, uint64_t round, Millis wait,
                   StatusDone done);
  // The client gave up on a parked call: it is answered CANCELLED. Unknown ids are ignored.
  void Cancel(uint64_t call);

  void PublishUniqueIds(const Caller& caller, uint64_t generation, int rank, UniqueIds ids, StatusDone done);
  void StoreSet(const Caller& caller, uint64_t generation, std::string key, std::string value, StatusDone done);
  void StoreAdd(const Caller& caller, uint64_t generation, std::string key, int64_t delta, Done<int64_t> done);
  void StoreCompareSet(const Caller& caller, uint64_t generation, std::string key, std::string expected,
                       std::string desired, Done<std::string> done);
  void StoreDelete(const Caller& caller, uint64_t generation, std::string key, Done<bool> done);
  absl::StatusOr<bool> StoreCheck(const Caller& caller, uint64_t generation, const std::vector<std::string>& keys);
  absl::StatusOr<int64_t> StoreNumKeys(const Caller& caller, uint64_t generation);

  // Renews the member's lease, and keeps `progress` (if any) as the job's latest; returns the lease length.
  absl::StatusOr<Millis> Heartbeat(const Caller& caller, uint64_t generation, int rank,
                                   const TrainingProgress* progress = nullptr);
  // `fatal` (with finished=false): see LeaveRequest.fatal.
  void Leave(const Caller& caller, uint64_t generation, int rank, bool finished, std::string reason, StatusDone done,
             bool fatal = false);

  // A member's session (coordinator.proto, Session). OpenSession admits the caller as member `rank`, renews
  // its lease and returns the lease's length; `on_end` runs once, never under the job's lock, with why the
  // session ends: the generation ended (ABORTED), the coordinator stops (UNAVAILABLE), the job was deleted
  // (ABORTED). A newer session of the same rank replaces an older one, whose on_end then never runs.
  using SessionEnd = std::function<void(absl::Status)>;
  absl::StatusOr<Millis> OpenSession(const Caller& caller, uint64_t generation, int rank, uint64_t session,
                                     SessionEnd on_end);
  // Session `session` of `rank` closed. If it is still the rank's session, its generation runs, and the
  // member has neither finished nor left, the member is gone (its process died, or it dropped its
  // connection): the generation ends now, naming it.
  void CloseSession(uint64_t generation, int rank, uint64_t session);
  // The same for a session of several members (tp-agent's: one host's workers) that closed, `several`, or
  // for one member of it whose process is gone, with why (`gone`, which then names the cause): the
  // generation ends naming the host and the ranks that had not finished, or the one rank.
  void CloseSessions(uint64_t generation, std::vector<int> ranks, uint64_t session, bool several, std::string gone);

  // Closes the job (torchrun's set_closed): no new generation starts in it; a running one goes on, and one
  // still joining ends, its waiting Joins answered as every later Join is (see CloseJobRequest). Creates the
  // job, bound to the caller's token, if it does not exist. Closing a closed job changes nothing: the first
  // reason stays. Kept in the job's header until the job is deleted.
  void Close(const Caller& caller, std::string reason, StatusDone done);

  // Forgets the job and everything it holds. FAILED_PRECONDITION while a generation runs or workers wait in
  // Join, unless `force`: then every parked call is answered ABORTED.
  void Delete(const Caller& caller, bool force, StatusDone done);
  // Deletes the job if nothing happened to it since `cutoff_unix_ms` and nothing runs or waits in it;
  // answers whether it did.
  void ExpireIfIdleSince(int64_t cutoff_unix_ms, Done<bool> done);

  // Whether `caller` may read the job (View): it carries the job's token or the admin token. NOT_FOUND while
  // the job does not exist. The token never changes, so what this admits stays admitted. A corrupt job
  // answers its DATA_LOSS to whoever may see it, and to every caller once its token binding is lost.
  absl::Status Authorize(const Caller& caller) const ABSL_LOCKS_EXCLUDED(mu_);
  // nullopt while the job does not exist (yet, or any more). `with_details`: members and history too.
  std::optional<JobView> View(bool with_details) const;
  // The job's loss curve (progress_history.h).
  std::vector<CurvePoint> Curve() const ABSL_LOCKS_EXCLUDED(mu_);
  // Answers once every call made before it has been applied (or answered with its error).
  void Sync(StatusDone done);

  // The coordinator is stopping: every parked call, and every call from now on, answers UNAVAILABLE
  // (clients retry against the restarted coordinator).
  void Shutdown();

 private:
  // Where Job's members are defined, by concern (as etcd spreads EtcdServer's):
  //   job.cc             lifecycle: the commit path's ends, restore, shutdown, the header, delete and expire
  //   job_admission.cc   who may do what (the checks every call makes first)
  //   job_config.cc      Create, tp_model_init's record, the config merge
  //   job_close.cc       Close: no new generation (torchrun's set_closed)
  //   job_join.cc        Join (a JoinPlan), seating a world, shrinking, the generation lifecycle
  //   job_parked.cc      parked calls: park, cancel, expire, and each kind's behaviour side by side
  //   job_unique_ids.cc  publishing and getting NCCL unique IDs
  //   job_store.cc       the key-value store
  //   job_membership.cc  barriers, heartbeats, sessions, leases, leaving
  //   job_view.cc        phase timings, what is missing, the operator's view
  // over commit_queue.h (the one commit path) and job_internal.h (Member, Generation).
  struct Member;
  struct Generation;
  struct JoinPlan;
  using Batch = CommitQueue::Batch;
  using Decision = CommitQueue::Decision;
  using Decide = CommitQueue::Decide;
  using Clock = TimerQueue::Clock;

  // The commit path (commit_queue.h): `decide` runs under the lock once every earlier change is applied; a
  // call that the job cannot serve, or whose decide throws, is answered through `done`.
  template <typename T>
  void Mutate(Done<T> done, Decide decide) ABSL_LOCKS_EXCLUDED(mu_);
  void Mutate(StatusDone done, Decide decide) ABSL_LOCKS_EXCLUDED(mu_);
  void Enqueue(Decide decide, CommitQueue::AnswerError answer_error) ABSL_LOCKS_EXCLUDED(mu_);
  Decision Rejected(absl::Status status) const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Decides what can be decided now and sends what must be written to the committer.
  void Drain(Completions& done) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void Written(const absl::Status& status) ABSL_LOCKS_EXCLUDED(mu_);
  // An unborn job that nothing refers to any more is gone.
  void MaybeGone(Completions& done) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Whether calls are served at all: NOT_FOUND once gone, UNAVAILABLE once stopping, DATA_LOSS if corrupt.
  absl::Status CheckServing() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Admission (see the top of this file). CheckCaller: the job exists and `caller` carries its token or the
  // admin token. CheckCreator: the same, or the job does not exist and `caller` may create it.
  absl::Status CheckCaller(const Caller& caller) const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  absl::Status CheckCreator(const Caller& caller) const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // CheckCaller, CheckLive, CheckRank, and the caller's member key is the one `rank` joined with.
  absl::Status CheckMember(const Caller& caller, uint64_t generation, int rank, bool allow_completed = false) const
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // CheckCaller, CheckLive, and the caller's member key is that of some member (store calls name no rank).
  absl::Status CheckAnyMember(const Caller& caller, uint64_t generation) const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  JobHeader NextHeader() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Stamps `next` with when its generation started, ran and ended (as it differs from header_), and writes
  // it with its generation's history record.
  void WriteHeader(Batch& batch, JobHeader& next) const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // WriteHeader without the header (for a generation that another header write supersedes); returns `next`.
  const JobHeader& StampAndRecord(Batch& batch, JobHeader& next) const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // The one way header_ changes while serving: also keeps history_ and counts the generation's transitions.
  void ApplyHeader(const JobHeader& header) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  // The generation lifecycle. A Join is decided into a plan (the writes it needs are in `batch`), and the
  // plan applied once they are durable.
  absl::StatusOr<std::shared_ptr<JoinPlan>> PlanJoin(Batch& batch, const Caller& caller, const JoinArgs& args)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void ApplyJoin(JoinPlan& plan, Completions& done) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // The members of a complete world, by rank: `arrived`, each given the rank AssignRanks picks for it
  // (requested ranks kept, TP groups within a host where the hosts allow). What Join and Shrink share.
  static std::vector<Member> SeatWorld(std::vector<Member> arrived, int tp_size);
  // The writes that keep a complete world (its members by rank).
  void WriteWorld(Batch& batch, const std::vector<Member>& world) const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void StartGeneration(const JobHeader& header, Completions& done) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // The world of generation `next` is complete: its members (by rank) learn their ranks; `joiner` (if not
  // empty) is answered through `joiner_done`, the others through their parked Joins.
  void StartRunning(const JobHeader& next, std::vector<Member> world, const std::string& joiner,
                    Done<Assignment> joiner_done, Completions& done) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // A joining generation with a world-size range: once rejoin_timeout has passed since its first Join, it
  // starts with the whole TP groups that are there, if they are at least min_world_size workers.
  void ScheduleShrink() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void Shrink(uint64_t generation) ABSL_LOCKS_EXCLUDED(mu_);
  // Once every member left finished, the completion is written (a change of its own, after theirs).
  void MaybeComplete() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void Complete(const JobHeader& header) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void Forget(Completions& done) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  Assignment AssignmentOf(int rank) const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void EndGeneration(const JobHeader& header, Completions& done) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void ScheduleLeaseCheck(Clock::time_point when) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void CheckLeases() ABSL_LOCKS_EXCLUDED(mu_);
  // OK when `generation` is the current one and running; `allow_completed` also lets a completed one pass.
  absl::Status CheckLive(uint64_t generation, bool allow_completed = false) const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  absl::Status CheckRank(int rank) const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  bool HasWorkers() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  // Parked calls.
  absl::Status CheckPark() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void Park(uint64_t call, ParkedCall parked, Millis wait, Completions& done) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void Expire(uint64_t call) ABSL_LOCKS_EXCLUDED(mu_);
  // Answers parked call `call` (if it is still parked) with why(it), in order with every other change.
  void EndParked(uint64_t call, std::function<absl::Status(const Parked&)> why) ABSL_LOCKS_EXCLUDED(mu_);
  // A change nobody waits for the answer of (a deadline, a lease check, a completion).
  void EnqueueInternal(Decide decide) ABSL_LOCKS_EXCLUDED(mu_);
  // Each kind of parked call (job_parked.cc, side by side): what it still waits for, what its timeout says
  // (`waited`: how long, `missing`: Missing's list), and how it leaves the generation when it stops waiting
  // (a joining member, a barrier arrival, watches).
  Shortlist Missing(const JoinCall& p) const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  Shortlist Missing(const UniqueIdsCall& p) const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  Shortlist Missing(const StoreGetCall& p) const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  Shortlist Missing(const StoreWaitCall& p) const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  Shortlist Missing(const BarrierCall& p) const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  std::string TimedOut(const JoinCall& p, const std::string& waited, const std::string& missing) const
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  std::string TimedOut(const UniqueIdsCall& p, const std::string& waited, const std::string& missing) const;
  std::string TimedOut(const StoreGetCall& p, const std::string& waited, const std::string& missing) const;
  std::string TimedOut(const StoreWaitCall& p, const std::string& waited, const std::string& missing) const;
  std::string TimedOut(const BarrierCall& p, const std::string& waited, const std::string& missing) const;
  void Detach(uint64_t call, const JoinCall& p) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void Detach(uint64_t call, const UniqueIdsCall& p) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void Detach(uint64_t call, const StoreGetCall& p) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void Detach(uint64_t call, const StoreWaitCall& p) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void Detach(uint64_t call, const BarrierCall& p) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void FailAllParked(const absl::Status& status, Completions& done) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Ends every open session of the generation with `status`.
  void EndSessions(const absl::Status& status, Completions& done) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void WakeKey(const std::string& key, Completions& done) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Puts `value` under `key` in the generation's store (RESOURCE_EXHAUSTED past the store quota): written,
  // then applied, waking the key's waiters, and answered by `answer`. What StoreSet, StoreAdd and
  // StoreCompareSet share.
  Decision DecideStorePut(Batch& batch, const std::string& key, std::string value,
                          std::function<void(Completions&)> answer) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void WakeGroup(const GroupId& group, Completions& done) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  // Views and messages.
  void BeginPhase(const std::string& phase) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void EndPhase(const std::string& phase) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  std::string DescribeRank(int rank) const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  Shortlist MissingForJoin() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  absl::Status WithContext(absl::Status status) const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // `event`: a short name for JSON logs ("running"); `rank`: the rank it is about, if any.
  void LogEvent(absl::string_view event, const std::string& what, int rank = -1) const
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  const std::string id_;
  const JobContext* const context_;
  const JobOptions& options_;
  std::atomic<uint64_t> next_call_{1};
  std::atomic<bool> gone_{false};

  mutable Mutex mu_;
  std::atomic<bool> born_{false};  // the store holds the job; changed under mu_
  std::atomic<int64_t> pins_{0};   // kGonePins once an unborn job is gone; changed to it only under mu_
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  absl::Status corrupt_ ABSL_GUARDED_BY(mu_);
  JobHeader header_ ABSL_GUARDED_BY(mu_);
  std::deque<GenerationRecord> history_ ABSL_GUARDED_BY(mu_);  // what the store holds, oldest first
  ProgressHistory progress_ ABSL_GUARDED_BY(mu_);              // the job's, across generations
  std::string merged_config_ ABSL_GUARDED_BY(mu_);
  std::unique_ptr<Generation> gen_ ABSL_GUARDED_BY(mu_);
  // Who was in the generation before gen_, so that a Join timeout can say who has not come back.
  struct PreviousMember {
    int rank;
    std::string host;
    std::string worker_id;
  };
  std::vector<PreviousMember> previous_members_ ABSL_GUARDED_BY(mu_);
  ParkedCalls parked_ ABSL_GUARDED_BY(mu_);
  CommitQueue commits_ ABSL_GUARDED_BY(mu_);
};

}  // namespace tpcoord

#endif  // TPCOORD_COORDINATOR_JOB_JOB_H_
