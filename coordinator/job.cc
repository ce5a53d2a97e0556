#include "coordinator/job.h"

#include <algorithm>
#include <charconv>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/config_merge.h"
#include "common/deepspeed_error.h"
#include "common/ds_config.h"
#include "common/identifiers.h"
#include "common/rank_assignment.h"

namespace tpcoord {
namespace {

constexpr size_t kMaxListedMissing = 16;

int64_t UnixMillisNow() {
  return std::chrono::duration_cast<Millis>(std::chrono::system_clock::now().time_since_epoch()).count();
}

std::string Seconds(Millis d) {
  return d.count() % 1000 == 0 ? absl::StrCat(d.count() / 1000, "s") : absl::StrCat(d.count(), "ms");
}

}  // namespace

// The first few items of a list that may be long, and how many there were: what messages and views show of
// who is missing, without building ten thousand strings for a world of ten thousand.
class Job::Shortlist {
 public:
  template <typename MakeItem>
  void Add(MakeItem make_item) {
    if (shown_.size() < kMaxListedMissing) shown_.push_back(make_item());
    ++total_;
  }
  bool empty() const { return total_ == 0; }
  // "a, b, c", or "a, b, ... and 9984 more".
  std::string ToString() const {
    std::string text = absl::StrJoin(shown_, ", ");
    if (total_ > shown_.size()) absl::StrAppend(&text, " and ", total_ - shown_.size(), " more");
    return text;
  }

 private:
  std::vector<std::string> shown_;
  size_t total_ = 0;
};

// Callbacks collected under the job mutex and run after it is released. Declare before the lock so the
// lock is destroyed first.
class Job::Completions {
 public:
  Completions() = default;
  Completions(const Completions&) = delete;
  Completions& operator=(const Completions&) = delete;
  ~Completions() {
    for (auto& fn : fns_) fn();
  }
  void Add(std::function<void()> fn) { fns_.push_back(std::move(fn)); }

 private:
  std::vector<std::function<void()>> fns_;
};

struct Job::Waiter {
  enum class Kind { kJoin, kUniqueIds, kStoreGet, kStoreWait, kBarrier };
  Kind kind = Kind::kJoin;
  TimerQueue::Id timer = 0;
  Millis wait{0};
  int rank = -1;                   // kUniqueIds, kBarrier
  std::string worker_id;           // kJoin
  std::vector<GroupId> groups;     // kUniqueIds, in the order asked
  std::vector<std::string> keys;   // kStoreGet (one key), kStoreWait
  std::string barrier;             // kBarrier
  Done<Assignment> on_join;
  Done<std::vector<std::string>> on_ids;
  Done<std::string> on_value;
  StatusDone on_status;            // kStoreWait, kBarrier
};

struct Job::Member {
  std::string worker_id;
  std::string host;
  std::optional<int> requested_rank;
  int rank = -1;
  uint64_t join_waiter = 0;  // the parked Join, 0 once answered
  Clock::time_point last_heartbeat;
  bool finished = false;
  bool merged = false;
};

struct Job::BarrierState {
  std::vector<uint64_t> waiter_of_rank;  // 0: not arrived
  int arrived = 0;
};

struct Job::Generation {
  uint64_t number = 0;
  JobPhase phase = JobPhase::kIdle;
  int world_size = 0;
  Mesh mesh;
  std::vector<Member> members;                      // arrival order
  std::unordered_map<std::string, size_t> by_worker;  // worker_id -> index in members
  std::vector<size_t> by_rank;                      // rank -> index in members, once running
  std::string end_reason;

  // Config agreement (G27): the first config merged in this generation, and merged results by TP group
  // for configs byte-identical to it.
  std::string reference_text;
  nlohmann::json reference;
  int reference_rank = -1;
  std::unordered_map<int, std::string> merged_by_tp_group;
  int merged_members = 0;

  std::map<GroupId, std::string> unique_ids;
  std::map<GroupId, std::vector<uint64_t>> id_waiters;

  std::unordered_map<std::string, std::string> kv;
  size_t kv_bytes = 0;
  std::unordered_map<std::string, std::vector<uint64_t>> key_waiters;

  std::map<std::string, BarrierState> barriers;

  struct Timing {
    std::string phase;
    int64_t start_unix_ms;
    Clock::time_point start;
    std::optional<Clock::time_point> end;
  };
  std::vector<Timing> timings;
  TimerQueue::Id lease_timer = 0;
};

Job::Job(std::string id, StateStore* store, TimerQueue* timers, const JobOptions& options)
    : id_(std::move(id)), store_(store), timers_(timers), options_(options),
      gen_(std::make_unique<Generation>()) {}

Job::~Job() { Shutdown(); }

void Job::Shutdown() {
  Completions done;
  std::lock_guard<std::mutex> lock(mu_);
  if (gen_->lease_timer) timers_->Cancel(gen_->lease_timer);
  gen_->lease_timer = 0;
  const absl::Status status = WithJobContext(id_, absl::UnavailableError("the coordinator is shutting down"));
  for (auto& [id, waiter] : waiters_) {
    Detach(id, *waiter);
    Fail(*waiter, status, done);
  }
  waiters_.clear();
}

void Job::Restore(const PersistedJob& persisted) {
  std::lock_guard<std::mutex> lock(mu_);
  tp_init_ = persisted.tp_init;
  merged_config_ = persisted.merged_config;
  gen_->number = persisted.generation;
  gen_->world_size = persisted.world_size;
  gen_->phase = persisted.phase;
  gen_->end_reason = persisted.end_reason;
  if (gen_->phase == JobPhase::kJoining || gen_->phase == JobPhase::kRunning) {
    gen_->phase = JobPhase::kFailed;
    gen_->end_reason = absl::StrCat("the coordinator restarted while generation ", gen_->number, " was ",
                                    JobPhaseName(persisted.phase), "; rejoin to start generation ",
                                    gen_->number + 1);
  }
}

void Job::LogEvent(const std::string& what) const {
  if (options_.log) options_.log(absl::StrCat("job ", id_, " generation ", gen_->number, ": ", what));
}

PersistedJob Job::Persisted() const {
  return PersistedJob{id_, tp_init_, merged_config_, gen_->number, gen_->phase, gen_->world_size,
                      gen_->end_reason};
}

absl::Status Job::WithContext(absl::Status status) const {
  std::string detail;
  if (IsDeepSpeedError(status) && tp_init_.has_value()) {
    detail = absl::StrCat("recorded ", DescribeTpInitArgs(ArgsForMerge(*tp_init_, nullptr)));
  }
  return WithJobContext(id_, std::move(status), detail);
}

// --- tp_model_init and the config merge -----------------------------------------------------------------

absl::StatusOr<RecordOutcome> Job::Record(const TpInitArgs& call) {
  std::lock_guard<std::mutex> lock(mu_);
  absl::StatusOr<TpInitRecord> updated = RecordTpInitArgs(tp_init_, call);
  if (!updated.ok()) {
    return WithJobContext(id_, updated.status(),
                          absl::StrCat("recorded ", DescribeTpInitArgs(ArgsForMerge(*tp_init_, nullptr)),
                                       "; this call ", DescribeTpInitArgs(call)));
  }
  const bool created = !tp_init_.has_value();
  const bool changed = created || updated->tp_groups.size() != tp_init_->tp_groups.size();
  if (changed) {
    PersistedJob next = Persisted();
    next.tp_init = *updated;
    if (absl::Status s = store_->SaveJob(next); !s.ok()) return WithContext(s);
    tp_init_ = *updated;
  }
  return RecordOutcome{*tp_init_, created};
}

absl::StatusOr<MergeOutcome> Job::Merge(absl::string_view config_text, bool has_mpu, uint64_t generation,
                                        int rank) {
  std::lock_guard<std::mutex> lock(mu_);
  const bool recorded = tp_init_.has_value();
  auto merge_json = [&](const nlohmann::json& config, const RankList* tp_group) -> absl::StatusOr<std::string> {
    std::optional<TpInitArgs> args;
    if (recorded) args = ArgsForMerge(*tp_init_, tp_group);
    absl::StatusOr<nlohmann::json> merged = MergeTpInitIntoConfig(args, config, has_mpu);
    if (!merged.ok()) return merged.status();
    return merged->dump();
  };
  auto persist_merged = [&](const std::string& merged) -> absl::Status {
    if (merged == merged_config_) return absl::OkStatus();
    PersistedJob next = Persisted();
    next.merged_config = merged;
    if (absl::Status s = store_->SaveJob(next); !s.ok()) return s;
    merged_config_ = merged;
    return absl::OkStatus();
  };

  if (generation == 0) {  // standalone: validate and merge, no agreement check
    absl::StatusOr<nlohmann::json> config = ParseDsConfig(config_text);
    if (!config.ok()) return WithContext(config.status());
    absl::StatusOr<std::string> merged = merge_json(*config, nullptr);
    if (!merged.ok()) return WithContext(merged.status());
    if (absl::Status s = persist_merged(*merged); !s.ok()) return WithContext(s);
    return MergeOutcome{*merged, recorded};
  }

  if (absl::Status s = CheckGeneration(generation); !s.ok()) return WithContext(s);
  if (absl::Status s = CheckRank(rank); !s.ok()) return WithContext(s);
  Generation& g = *gen_;
  const GroupId tp_group = g.mesh.tp_group_of(rank);
  const RankList tp_ranks = g.mesh.Ranks(tp_group);

  std::string merged;
  if (g.reference_rank >= 0 && config_text == g.reference_text) {
    auto cached = g.merged_by_tp_group.find(tp_group.index);
    if (cached != g.merged_by_tp_group.end()) {
      merged = cached->second;
    } else {
      absl::StatusOr<std::string> m = merge_json(g.reference, &tp_ranks);
      if (!m.ok()) return WithContext(m.status());
      merged = *m;
      g.merged_by_tp_group.emplace(tp_group.index, merged);
    }
  } else {
    absl::StatusOr<nlohmann::json> config = ParseDsConfig(config_text);
    if (!config.ok()) return WithContext(config.status());
    if (g.reference_rank >= 0) {
      if (std::optional<JsonDifference> diff = FirstDifference(g.reference, *config)) {
        return WithContext(absl::FailedPreconditionError(absl::StrCat(
            "the config of rank ", rank, " differs from the config rank ", g.reference_rank,
            " merged first in generation ", g.number, " at ", diff->path.empty() ? "/" : diff->path,
            ": rank ", g.reference_rank, " has ", diff->left, ", rank ", rank, " has ", diff->right,
            "; every worker of a job must use the same DeepSpeed config")));
      }
    }
    absl::StatusOr<std::string> m = merge_json(*config, &tp_ranks);
    if (!m.ok()) return WithContext(m.status());
    merged = *m;
    if (g.reference_rank < 0) {
      if (absl::Status s = persist_merged(merged); !s.ok()) return WithContext(s);
      g.reference_text = std::string(config_text);
      g.reference = *std::move(config);
      g.reference_rank = rank;
      g.merged_by_tp_group.emplace(tp_group.index, merged);
      BeginPhase("merge");
    }
  }
  Member& member = g.members[g.by_rank[rank]];
  if (!member.merged) {
    member.merged = true;
    if (++g.merged_members == g.world_size) EndPhase("merge");
  }
  return MergeOutcome{merged, recorded};
}

// --- Join and generations -------------------------------------------------------------------------------

uint64_t Job::Join(const JoinArgs& args, Millis wait, Done<Assignment> on_done) {
  Completions done;
  std::lock_guard<std::mutex> lock(mu_);
  auto reject = [&](absl::Status status) {
    done.Add([on_done, s = WithContext(std::move(status))] { on_done(s); });
    return uint64_t{0};
  };

  int tp_size = args.tp_size;
  if (tp_init_.has_value()) {
    if (tp_size != 0 && tp_size != tp_init_->tp_size) {
      return reject(absl::FailedPreconditionError(
          absl::StrCat("Join asks for tp_size ", tp_size, " but tp_model_init recorded tp_size ",
                       tp_init_->tp_size, " for this job")));
    }
    tp_size = tp_init_->tp_size;
  } else if (tp_size == 0) {
    tp_size = 1;
  }
  absl::StatusOr<Mesh> mesh = Mesh::Create(args.world_size, tp_size);
  if (!mesh.ok()) return reject(mesh.status());
  if (args.requested_rank && (*args.requested_rank < 0 || *args.requested_rank >= args.world_size)) {
    return reject(absl::InvalidArgumentError(absl::StrCat("requested_rank ", *args.requested_rank,
                                                          " is out of range for world_size ",
                                                          args.world_size)));
  }

  Generation& g = *gen_;
  if (g.phase == JobPhase::kRunning) {
    auto it = g.by_worker.find(args.worker_id);
    if (it != g.by_worker.end()) {  // a retried Join of a member: answer it again
      const Member& m = g.members[it->second];
      Assignment a{g.number, m.rank, g.mesh, options_.lease / 4, options_.lease};
      done.Add([on_done, a] { on_done(a); });
      return 0;
    }
    EndGeneration(absl::StrCat("worker ", args.worker_id, " (host ", args.host, ") joined while generation ",
                               g.number, " was running"),
                  done);
  }
  if (gen_->phase != JobPhase::kJoining) {  // start the next generation
    auto next = std::make_unique<Generation>();
    next->number = gen_->number + 1;
    next->phase = JobPhase::kJoining;
    next->world_size = args.world_size;
    next->mesh = *mesh;
    // Remember who was in the previous generation, so a join timeout can say who has not come back.
    previous_members_.clear();
    for (const Member& m : gen_->members) {
      if (m.rank >= 0) previous_members_.push_back({m.rank, m.host, m.worker_id});
    }
    gen_ = std::move(next);
    BeginPhase("join");
    LogEvent(absl::StrCat("joining, world_size ", args.world_size, ", tp_size ", tp_size));
  }
  Generation& j = *gen_;
  if (args.world_size != j.world_size || tp_size != j.mesh.tp_size()) {
    return reject(absl::FailedPreconditionError(absl::StrCat(
        "Join asks for world_size ", args.world_size, " and tp_size ", tp_size, ", but the ", j.members.size(),
        " worker(s) already in generation ", j.number, " joined with world_size ", j.world_size,
        " and tp_size ", j.mesh.tp_size())));
  }
  if (args.requested_rank) {
    for (const Member& m : j.members) {
      if (m.requested_rank == args.requested_rank && m.worker_id != args.worker_id) {
        return reject(absl::AlreadyExistsError(
            absl::StrCat("requested_rank ", *args.requested_rank, " is already held by worker ", m.worker_id,
                         " (host ", m.host, ") in generation ", j.number)));
      }
    }
  }

  auto existing = j.by_worker.find(args.worker_id);
  if (existing != j.by_worker.end()) {  // a retry: the new call replaces the old one
    Member& m = j.members[existing->second];
    if (auto w = waiters_.find(m.join_waiter); w != waiters_.end()) {
      std::unique_ptr<Waiter> old = std::move(w->second);
      waiters_.erase(w);
      Fail(*old, absl::CancelledError("replaced by a newer Join from the same worker_id"), done);
    }
    m.host = args.host;
    m.requested_rank = args.requested_rank;
  } else {
    j.by_worker.emplace(args.worker_id, j.members.size());
    j.members.push_back(Member{args.worker_id, args.host, args.requested_rank});
  }
  Waiter waiter;
  waiter.kind = Waiter::Kind::kJoin;
  waiter.worker_id = args.worker_id;
  waiter.on_join = std::move(on_done);
  const uint64_t id = Park(std::move(waiter), wait);
  j.members[j.by_worker[args.worker_id]].join_waiter = id;
  if (static_cast<int>(j.members.size()) == j.world_size) {
    CompleteWorld(done);
    return 0;
  }
  return id;
}

void Job::CompleteWorld(Completions& done) {
  Generation& g = *gen_;
  std::vector<RankRequest> requests;
  for (const Member& m : g.members) requests.push_back({m.host, m.requested_rank});
  const std::vector<int> ranks = AssignRanks(requests, g.mesh.tp_size());

  // The recorded tp_groups must be TP groups of this mesh: the groups are what tpcoord shards with, so a
  // recorded group is honoured or rejected, never silently replaced (DeepSpeed gap G4).
  absl::Status status;
  if (tp_init_.has_value() && tp_init_->has_tp_group) {
    for (const RankList& group : tp_init_->tp_groups) {
      if (g.mesh.TpGroupIndex(group) < 0) {
        status = absl::FailedPreconditionError(absl::StrCat(
            "the recorded tp_group ", RankListString(group), " is not a TP group of the mesh (world_size ",
            g.world_size, ", tp_size ", g.mesh.tp_size(), "), whose TP groups are the contiguous blocks ",
            RankListString(g.mesh.Ranks({GroupKind::kTp, 0})), ", ...; record the groups of that layout"));
        break;
      }
    }
  }
  g.by_rank.assign(g.world_size, 0);
  for (size_t i = 0; i < g.members.size(); ++i) {
    g.members[i].rank = ranks[i];
    g.by_rank[ranks[i]] = i;
  }
  if (status.ok()) {
    PersistedJob next = Persisted();
    next.phase = JobPhase::kRunning;
    status = store_->SaveJob(next);
  }
  if (!status.ok()) {
    g.phase = JobPhase::kFailed;
    g.end_reason = std::string(status.message());
    LogEvent(absl::StrCat("failed to start: ", g.end_reason));
    for (Member& m : g.members) {
      if (auto w = waiters_.find(m.join_waiter); w != waiters_.end()) {
        std::unique_ptr<Waiter> waiter = std::move(w->second);
        waiters_.erase(w);
        Fail(*waiter, status, done);
      }
      m.join_waiter = 0;
    }
    return;
  }

  g.phase = JobPhase::kRunning;
  EndPhase("join");
  BeginPhase("run");
  LogEvent(absl::StrCat("running: ", g.world_size, " workers = tp ", g.mesh.tp_size(), " x dp ", g.mesh.dp_size()));
  const Clock::time_point now = Clock::now();
  for (Member& m : g.members) {
    m.last_heartbeat = now;
    auto w = waiters_.find(m.join_waiter);
    m.join_waiter = 0;
    if (w == waiters_.end()) continue;
    std::unique_ptr<Waiter> waiter = std::move(w->second);
    waiters_.erase(w);
    timers_->Cancel(waiter->timer);
    Assignment a{g.number, m.rank, g.mesh, options_.lease / 4, options_.lease};
    done.Add([fn = std::move(waiter->on_join), a] { fn(a); });
  }
  ScheduleLeaseCheck(now + options_.lease);
}

void Job::EndGeneration(const std::string& reason, Completions& done) {
  Generation& g = *gen_;
  g.phase = JobPhase::kFailed;
  g.end_reason = reason;
  EndPhase("run");
  LogEvent(absl::StrCat("ended: ", reason));
  if (g.lease_timer) timers_->Cancel(g.lease_timer);
  g.lease_timer = 0;
  if (absl::Status s = store_->SaveJob(Persisted()); !s.ok()) {
    // The generation ends either way; after a restart it would be marked failed anyway.
  }
  const absl::Status aborted = WithJobContext(
      id_, absl::AbortedError(absl::StrCat("generation ", g.number, " ended: ", reason)));
  for (auto& [id, waiter] : waiters_) Fail(*waiter, aborted, done);
  waiters_.clear();
}

void Job::ScheduleLeaseCheck(Clock::time_point when) {
  std::weak_ptr<Job> weak = weak_from_this();
  gen_->lease_timer = timers_->Schedule(when, [weak] {
    if (auto job = weak.lock()) job->CheckLeases();
  });
}

void Job::CheckLeases() {
  Completions done;
  std::lock_guard<std::mutex> lock(mu_);
  Generation& g = *gen_;
  g.lease_timer = 0;
  if (g.phase != JobPhase::kRunning) return;
  const Clock::time_point now = Clock::now();
  Clock::time_point next = now + options_.lease;
  std::vector<int> expired;
  for (int rank = 0; rank < g.world_size; ++rank) {
    const Member& m = g.members[g.by_rank[rank]];
    if (m.finished) continue;
    const Clock::time_point deadline = m.last_heartbeat + options_.lease;
    if (deadline <= now) expired.push_back(rank);
    else next = std::min(next, deadline);
  }
  if (expired.empty()) {
    ScheduleLeaseCheck(next);
    return;
  }
  const Member& first = g.members[g.by_rank[expired.front()]];
  std::string reason = absl::StrCat("rank ", first.rank, " (host ", first.host, ", worker ", first.worker_id,
                                    ") missed its heartbeat lease of ", Seconds(options_.lease));
  if (expired.size() > 1) absl::StrAppend(&reason, ", and ", expired.size() - 1, " more rank(s) with it");
  EndGeneration(reason, done);
}

absl::Status Job::CheckGeneration(uint64_t generation) const {
  const Generation& g = *gen_;
  if (generation == 0 || generation > g.number) {
    return absl::FailedPreconditionError(
        absl::StrCat("generation ", generation, " does not exist; the job is in generation ", g.number));
  }
  if (generation < g.number) {
    return absl::FailedPreconditionError(absl::StrCat("generation ", generation,
                                                      " is over; the job is in generation ", g.number,
                                                      ": rejoin"));
  }
  switch (g.phase) {
    case JobPhase::kRunning:
    case JobPhase::kCompleted: return absl::OkStatus();
    case JobPhase::kFailed:
      return absl::AbortedError(absl::StrCat("generation ", generation, " ended: ", g.end_reason));
    default:
      return absl::FailedPreconditionError(
          absl::StrCat("generation ", generation, " is still ", JobPhaseName(g.phase), "; wait for Join"));
  }
}

absl::Status Job::CheckRank(int rank) const {
  if (rank < 0 || rank >= gen_->world_size) {
    return absl::InvalidArgumentError(absl::StrCat("rank ", rank, " is out of range for world_size ",
                                                   gen_->world_size, " of generation ", gen_->number));
  }
  return absl::OkStatus();
}

// --- parked calls ---------------------------------------------------------------------------------------

uint64_t Job::Park(Waiter waiter, Millis wait) {
  const uint64_t id = next_waiter_id_++;
  waiter.wait = wait;
  std::weak_ptr<Job> weak = weak_from_this();
  waiter.timer = timers_->Schedule(Clock::now() + wait, [weak, id] {
    if (auto job = weak.lock()) job->Expire(id);
  });
  waiters_.emplace(id, std::make_unique<Waiter>(std::move(waiter)));
  return id;
}

void Job::Fail(Waiter& waiter, absl::Status status, Completions& done) {
  timers_->Cancel(waiter.timer);
  switch (waiter.kind) {
    case Waiter::Kind::kJoin: done.Add([fn = std::move(waiter.on_join), status] { fn(status); }); break;
    case Waiter::Kind::kUniqueIds: done.Add([fn = std::move(waiter.on_ids), status] { fn(status); }); break;
    case Waiter::Kind::kStoreGet: done.Add([fn = std::move(waiter.on_value), status] { fn(status); }); break;
    case Waiter::Kind::kStoreWait:
    case Waiter::Kind::kBarrier: done.Add([fn = std::move(waiter.on_status), status] { fn(status); }); break;
  }
}

// Removes every trace of a waiter that is about to fail: its Join membership, barrier arrival or
// registration under groups and keys.
void Job::Cancel(uint64_t waiter_id) {
  Completions done;
  std::lock_guard<std::mutex> lock(mu_);
  auto it = waiters_.find(waiter_id);
  if (it == waiters_.end()) return;
  std::unique_ptr<Waiter> waiter = std::move(it->second);
  waiters_.erase(it);
  Detach(waiter_id, *waiter);
  Fail(*waiter, WithJobContext(id_, absl::CancelledError("the client cancelled the call")), done);
}

void Job::Expire(uint64_t waiter_id) {
  Completions done;
  std::lock_guard<std::mutex> lock(mu_);
  auto it = waiters_.find(waiter_id);
  if (it == waiters_.end()) return;
  std::unique_ptr<Waiter> waiter = std::move(it->second);
  waiters_.erase(it);
  waiter->timer = 0;
  std::string what;
  switch (waiter->kind) {
    case Waiter::Kind::kJoin: {
      const Generation& g = *gen_;
      what = absl::StrCat("Join timed out after ", Seconds(waiter->wait), " in generation ", g.number, ": ",
                          g.members.size(), " of ", g.world_size, " workers joined; missing: ",
                          MissingForJoin().ToString());
      break;
    }
    case Waiter::Kind::kUniqueIds:
      what = absl::StrCat("GetUniqueId timed out after ", Seconds(waiter->wait), " waiting for ",
                          MissingForWaiter(*waiter).ToString());
      break;
    case Waiter::Kind::kStoreGet:
    case Waiter::Kind::kStoreWait:
      what = absl::StrCat("store wait timed out after ", Seconds(waiter->wait), "; keys never set: ",
                          MissingForWaiter(*waiter).ToString());
      break;
    case Waiter::Kind::kBarrier:
      what = absl::StrCat("barrier \"", waiter->barrier, "\" timed out after ", Seconds(waiter->wait),
                          "; ranks that never arrived: ", MissingForWaiter(*waiter).ToString());
      break;
  }
  Detach(waiter_id, *waiter);
  Fail(*waiter, WithJobContext(id_, absl::DeadlineExceededError(what)), done);
}

void Job::Detach(uint64_t waiter_id, const Waiter& waiter) {
  Generation& g = *gen_;
  auto erase_from = [waiter_id](std::vector<uint64_t>& ids) {
    ids.erase(std::remove(ids.begin(), ids.end(), waiter_id), ids.end());
  };
  switch (waiter.kind) {
    case Waiter::Kind::kJoin: {
      // A worker that stops waiting leaves the joining world.
      auto it = g.by_worker.find(waiter.worker_id);
      if (g.phase != JobPhase::kJoining || it == g.by_worker.end() ||
          g.members[it->second].join_waiter != waiter_id) {
        return;
      }
      g.members.erase(g.members.begin() + static_cast<long>(it->second));
      g.by_worker.clear();
      for (size_t i = 0; i < g.members.size(); ++i) g.by_worker.emplace(g.members[i].worker_id, i);
      break;
    }
    case Waiter::Kind::kUniqueIds:
      for (const GroupId& group : waiter.groups) {
        if (auto it = g.id_waiters.find(group); it != g.id_waiters.end()) erase_from(it->second);
      }
      break;
    case Waiter::Kind::kStoreGet:
    case Waiter::Kind::kStoreWait:
      for (const std::string& key : waiter.keys) {
        if (auto it = g.key_waiters.find(key); it != g.key_waiters.end()) erase_from(it->second);
      }
      break;
    case Waiter::Kind::kBarrier:
      if (auto it = g.barriers.find(waiter.barrier); it != g.barriers.end() &&
          it->second.waiter_of_rank[waiter.rank] == waiter_id) {
        it->second.waiter_of_rank[waiter.rank] = 0;
        --it->second.arrived;
      }
      break;
  }
}

std::string Job::DescribeRank(int rank) const {
  const Member& m = gen_->members[gen_->by_rank[rank]];
  return absl::StrCat("rank ", rank, " (host ", m.host, ")");
}

Job::Shortlist Job::MissingForJoin() const {
  const Generation& g = *gen_;
  std::vector<bool> requested(g.world_size, false);
  int unrequested = 0;
  for (const Member& m : g.members) {
    if (m.requested_rank) requested[*m.requested_rank] = true;
    else ++unrequested;
  }
  Shortlist missing;
  if (unrequested == 0) {  // every worker asked for its rank: the free ranks are exactly who is missing
    for (int r = 0; r < g.world_size; ++r) {
      if (!requested[r]) missing.Add([r] { return absl::StrCat("rank ", r); });
    }
    return missing;
  }
  for (const PreviousMember& p : previous_members_) {
    if (!g.by_worker.count(p.worker_id)) {
      missing.Add([&] { return absl::StrCat("rank ", p.rank, " of generation ", g.number - 1, " (host ", p.host, ")"); });
    }
  }
  if (missing.empty()) {
    missing.Add([&] { return absl::StrCat(g.world_size - static_cast<int>(g.members.size()), " worker(s)"); });
  }
  return missing;
}

Job::Shortlist Job::MissingForWaiter(const Waiter& waiter) const {
  const Generation& g = *gen_;
  Shortlist missing;
  switch (waiter.kind) {
    case Waiter::Kind::kJoin: return MissingForJoin();
    case Waiter::Kind::kUniqueIds:
      for (const GroupId& group : waiter.groups) {
        if (g.unique_ids.count(group)) continue;
        missing.Add([&] {
          return absl::StrCat("the unique id of ", GroupName(group), " from its leader ",
                              DescribeRank(g.mesh.Leader(group)));
        });
      }
      break;
    case Waiter::Kind::kStoreGet:
    case Waiter::Kind::kStoreWait:
      for (const std::string& key : waiter.keys) {
        if (!g.kv.count(key)) missing.Add([&] { return QuoteForError(key); });
      }
      break;
    case Waiter::Kind::kBarrier:
      if (auto it = g.barriers.find(waiter.barrier); it != g.barriers.end()) {
        for (int r = 0; r < g.world_size; ++r) {
          if (it->second.waiter_of_rank[r] == 0 && r != waiter.rank) missing.Add([&] { return DescribeRank(r); });
        }
      }
      break;
  }
  return missing;
}

// --- unique IDs -----------------------------------------------------------------------------------------

absl::Status Job::PublishUniqueIds(uint64_t generation, int rank,
                                   const std::vector<std::pair<GroupId, std::string>>& ids) {
  Completions done;
  std::lock_guard<std::mutex> lock(mu_);
  if (absl::Status s = CheckGeneration(generation); !s.ok()) return WithContext(s);
  if (absl::Status s = CheckRank(rank); !s.ok()) return WithContext(s);
  Generation& g = *gen_;
  // Validate every entry before storing any.
  for (size_t i = 0; i < ids.size(); ++i) {
    const auto& [group, bytes] = ids[i];
    if (!g.mesh.Contains(group)) {
      return WithContext(absl::InvalidArgumentError(absl::StrCat(
          "ids[", i, "].group ", GroupName(group), " is not a group of the mesh (", g.mesh.dp_size(),
          " TP groups, ", g.mesh.tp_size(), " DP groups, 1 world group)")));
    }
    if (bytes.size() != kUniqueIdBytes) {
      return WithContext(absl::InvalidArgumentError(absl::StrCat("ids[", i, "].id for ", GroupName(group),
                                                                 " is ", bytes.size(), " bytes; a NCCL unique "
                                                                 "id is exactly ", kUniqueIdBytes, " bytes")));
    }
    if (g.mesh.Leader(group) != rank) {
      return WithContext(absl::PermissionDeniedError(
          absl::StrCat("rank ", rank, " may not publish the unique id of ", GroupName(group),
                       ": only its leader, rank ", g.mesh.Leader(group), ", may")));
    }
    for (size_t k = 0; k < i; ++k) {
      if (ids[k].first == group) {
        return WithContext(absl::InvalidArgumentError(
            absl::StrCat("ids[", k, "] and ids[", i, "] both publish ", GroupName(group))));
      }
    }
    if (auto it = g.unique_ids.find(group); it != g.unique_ids.end() && it->second != bytes) {
      return WithContext(absl::FailedPreconditionError(
          absl::StrCat("the unique id of ", GroupName(group), " in generation ", g.number,
                       " was already published with different bytes; a communicator has one id")));
    }
  }
  if (g.unique_ids.empty() && !ids.empty()) BeginPhase("unique_ids");
  for (const auto& [group, bytes] : ids) {
    if (!g.unique_ids.emplace(group, bytes).second) continue;
    auto waiting = g.id_waiters.find(group);
    if (waiting == g.id_waiters.end()) continue;
    std::vector<uint64_t> ready = std::move(waiting->second);
    g.id_waiters.erase(waiting);
    for (uint64_t id : ready) {
      auto w = waiters_.find(id);
      if (w == waiters_.end()) continue;
      Waiter& waiter = *w->second;
      std::vector<std::string> answer;
      for (const GroupId& wanted : waiter.groups) {
        auto found = g.unique_ids.find(wanted);
        if (found == g.unique_ids.end()) break;
        answer.push_back(found->second);
      }
      if (answer.size() != waiter.groups.size()) continue;
      timers_->Cancel(waiter.timer);
      done.Add([fn = std::move(waiter.on_ids), answer = std::move(answer)] { fn(answer); });
      waiters_.erase(w);
    }
  }
  const int total = g.mesh.num_groups(GroupKind::kTp) + g.mesh.num_groups(GroupKind::kDp) + 1;
  if (static_cast<int>(g.unique_ids.size()) == total) EndPhase("unique_ids");
  return absl::OkStatus();
}

uint64_t Job::GetUniqueIds(uint64_t generation, int rank, std::vector<GroupId> groups, Millis wait,
                           Done<std::vector<std::string>> on_done) {
  Completions done;
  std::lock_guard<std::mutex> lock(mu_);
  auto reject = [&](absl::Status status) {
    done.Add([on_done, s = WithContext(std::move(status))] { on_done(s); });
    return uint64_t{0};
  };
  if (absl::Status s = CheckGeneration(generation); !s.ok()) return reject(s);
  if (absl::Status s = CheckRank(rank); !s.ok()) return reject(s);
  Generation& g = *gen_;
  std::vector<std::string> answer;
  for (size_t i = 0; i < groups.size(); ++i) {
    const GroupId& group = groups[i];
    if (!g.mesh.Contains(group)) {
      return reject(absl::InvalidArgumentError(
          absl::StrCat("groups[", i, "] ", GroupName(group), " is not a group of the mesh")));
    }
    if (!g.mesh.IsMember(group, rank)) {
      return reject(absl::PermissionDeniedError(
          absl::StrCat("rank ", rank, " is not a member of ", GroupName(group), " ",
                       RankListString(g.mesh.Ranks(group)))));
    }
    if (auto it = g.unique_ids.find(group); it != g.unique_ids.end()) answer.push_back(it->second);
  }
  if (answer.size() == groups.size()) {
    done.Add([on_done, answer = std::move(answer)] { on_done(answer); });
    return 0;
  }
  Waiter waiter;
  waiter.kind = Waiter::Kind::kUniqueIds;
  waiter.rank = rank;
  waiter.groups = groups;
  waiter.on_ids = std::move(on_done);
  const uint64_t id = Park(std::move(waiter), wait);
  for (const GroupId& group : groups) {
    if (!g.unique_ids.count(group)) g.id_waiters[group].push_back(id);
  }
  return id;
}

// --- the key-value store --------------------------------------------------------------------------------

void Job::WakeKey(const std::string& key, Completions& done) {
  Generation& g = *gen_;
  auto waiting = g.key_waiters.find(key);
  if (waiting == g.key_waiters.end()) return;
  std::vector<uint64_t> ids = std::move(waiting->second);
  g.key_waiters.erase(waiting);
  for (uint64_t id : ids) {
    auto w = waiters_.find(id);
    if (w == waiters_.end()) continue;
    Waiter& waiter = *w->second;
    const bool ready = std::all_of(waiter.keys.begin(), waiter.keys.end(),
                                   [&](const std::string& k) { return g.kv.count(k) > 0; });
    if (!ready) continue;  // still registered under its other missing keys
    timers_->Cancel(waiter.timer);
    if (waiter.kind == Waiter::Kind::kStoreGet) {
      done.Add([fn = std::move(waiter.on_value), value = g.kv[key]] { fn(value); });
    } else {
      done.Add([fn = std::move(waiter.on_status)] { fn(absl::OkStatus()); });
    }
    waiters_.erase(w);
  }
}

absl::Status Job::StoreSet(uint64_t generation, const std::string& key, std::string value) {
  Completions done;
  std::lock_guard<std::mutex> lock(mu_);
  if (absl::Status s = CheckGeneration(generation); !s.ok()) return WithContext(s);
  if (value.size() > kMaxStoreValueBytes) {
    return WithContext(absl::InvalidArgumentError(absl::StrCat("value for key ", QuoteForError(key), " is ",
                                                               value.size(), " bytes; the limit is ",
                                                               kMaxStoreValueBytes)));
  }
  Generation& g = *gen_;
  auto it = g.kv.find(key);
  const size_t old_bytes = it == g.kv.end() ? 0 : key.size() + it->second.size();
  const size_t new_bytes = g.kv_bytes - old_bytes + key.size() + value.size();
  if (new_bytes > options_.max_store_bytes) {
    return WithContext(absl::ResourceExhaustedError(absl::StrCat(
        "the key-value store of generation ", g.number, " would hold ", new_bytes, " bytes; the limit is ",
        options_.max_store_bytes)));
  }
  g.kv_bytes = new_bytes;
  g.kv[key] = std::move(value);
  WakeKey(key, done);
  return absl::OkStatus();
}

absl::StatusOr<int64_t> Job::StoreAdd(uint64_t generation, const std::string& key, int64_t delta) {
  Completions done;
  std::lock_guard<std::mutex> lock(mu_);
  if (absl::Status s = CheckGeneration(generation); !s.ok()) return WithContext(s);
  Generation& g = *gen_;
  int64_t value = 0;
  auto it = g.kv.find(key);
  if (it != g.kv.end()) {
    const std::string& text = it->second;
    auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), value);
    if (ec != std::errc() || end != text.data() + text.size()) {
      return WithContext(absl::FailedPreconditionError(
          absl::StrCat("key ", QuoteForError(key), " holds ", QuoteForError(text), ", not an integer to add to")));
    }
  }
  value += delta;
  std::string text = std::to_string(value);
  g.kv_bytes += text.size() + (it == g.kv.end() ? key.size() : 0) - (it == g.kv.end() ? 0 : it->second.size());
  g.kv[key] = std::move(text);
  WakeKey(key, done);
  return value;
}

absl::StatusOr<std::string> Job::StoreCompareSet(uint64_t generation, const std::string& key,
                                                 const std::string& expected, std::string desired) {
  Completions done;
  std::lock_guard<std::mutex> lock(mu_);
  if (absl::Status s = CheckGeneration(generation); !s.ok()) return WithContext(s);
  if (desired.size() > kMaxStoreValueBytes) {
    return WithContext(absl::InvalidArgumentError(absl::StrCat(
        "desired_value is ", desired.size(), " bytes; the limit is ", kMaxStoreValueBytes)));
  }
  Generation& g = *gen_;
  auto it = g.kv.find(key);
  if (it == g.kv.end()) {
    if (!expected.empty()) return expected;
    g.kv_bytes += key.size() + desired.size();
    g.kv.emplace(key, desired);
    WakeKey(key, done);
    return desired;
  }
  if (it->second != expected) return it->second;
  g.kv_bytes += desired.size() - it->second.size();
  it->second = desired;
  return desired;
}

absl::StatusOr<bool> Job::StoreCheck(uint64_t generation, const std::vector<std::string>& keys) {
  std::lock_guard<std::mutex> lock(mu_);
  if (absl::Status s = CheckGeneration(generation); !s.ok()) return WithContext(s);
  return std::all_of(keys.begin(), keys.end(), [&](const std::string& k) { return gen_->kv.count(k) > 0; });
}

absl::StatusOr<bool> Job::StoreDelete(uint64_t generation, const std::string& key) {
  std::lock_guard<std::mutex> lock(mu_);
  if (absl::Status s = CheckGeneration(generation); !s.ok()) return WithContext(s);
  auto it = gen_->kv.find(key);
  if (it == gen_->kv.end()) return false;
  gen_->kv_bytes -= key.size() + it->second.size();
  gen_->kv.erase(it);
  return true;
}

absl::StatusOr<int64_t> Job::StoreNumKeys(uint64_t generation) {
  std::lock_guard<std::mutex> lock(mu_);
  if (absl::Status s = CheckGeneration(generation); !s.ok()) return WithContext(s);
  return static_cast<int64_t>(gen_->kv.size());
}

uint64_t Job::StoreGet(uint64_t generation, std::string key, Millis wait, Done<std::string> on_done) {
  Completions done;
  std::lock_guard<std::mutex> lock(mu_);
  if (absl::Status s = CheckGeneration(generation); !s.ok()) {
    done.Add([on_done, s = WithContext(s)] { on_done(s); });
    return 0;
  }
  if (auto it = gen_->kv.find(key); it != gen_->kv.end()) {
    done.Add([on_done, value = it->second] { on_done(value); });
    return 0;
  }
  Waiter waiter;
  waiter.kind = Waiter::Kind::kStoreGet;
  waiter.keys = {key};
  waiter.on_value = std::move(on_done);
  const uint64_t id = Park(std::move(waiter), wait);
  gen_->key_waiters[key].push_back(id);
  return id;
}

uint64_t Job::StoreWait(uint64_t generation, std::vector<std::string> keys, Millis wait, StatusDone on_done) {
  Completions done;
  std::lock_guard<std::mutex> lock(mu_);
  if (absl::Status s = CheckGeneration(generation); !s.ok()) {
    done.Add([on_done, s = WithContext(s)] { on_done(s); });
    return 0;
  }
  std::vector<std::string> missing;
  for (const std::string& key : keys) {
    if (!gen_->kv.count(key)) missing.push_back(key);
  }
  if (missing.empty()) {
    done.Add([on_done] { on_done(absl::OkStatus()); });
    return 0;
  }
  Waiter waiter;
  waiter.kind = Waiter::Kind::kStoreWait;
  waiter.keys = std::move(keys);
  waiter.on_status = std::move(on_done);
  const uint64_t id = Park(std::move(waiter), wait);
  for (const std::string& key : missing) gen_->key_waiters[key].push_back(id);
  return id;
}

// --- barriers, heartbeats, leaving ----------------------------------------------------------------------

uint64_t Job::Barrier(uint64_t generation, int rank, std::string name, Millis wait, StatusDone on_done) {
  Completions done;
  std::lock_guard<std::mutex> lock(mu_);
  absl::Status status = CheckGeneration(generation);
  if (status.ok()) status = CheckRank(rank);
  if (!status.ok()) {
    done.Add([on_done, s = WithContext(status)] { on_done(s); });
    return 0;
  }
  Generation& g = *gen_;
  BarrierState& barrier = g.barriers[name];
  if (barrier.waiter_of_rank.empty()) {
    barrier.waiter_of_rank.assign(g.world_size, 0);
    BeginPhase("barrier:" + name);
  }
  if (uint64_t previous = barrier.waiter_of_rank[rank]) {  // a retry replaces the earlier call
    if (auto w = waiters_.find(previous); w != waiters_.end()) {
      std::unique_ptr<Waiter> old = std::move(w->second);
      waiters_.erase(w);
      Fail(*old, absl::CancelledError("replaced by a newer Barrier call from the same rank"), done);
    }
    barrier.waiter_of_rank[rank] = 0;
    --barrier.arrived;
  }
  if (barrier.arrived + 1 == g.world_size) {  // the last one: release everybody and reset the barrier
    for (uint64_t id : barrier.waiter_of_rank) {
      auto w = waiters_.find(id);
      if (w == waiters_.end()) continue;
      timers_->Cancel(w->second->timer);
      done.Add([fn = std::move(w->second->on_status)] { fn(absl::OkStatus()); });
      waiters_.erase(w);
    }
    done.Add([on_done] { on_done(absl::OkStatus()); });
    EndPhase("barrier:" + name);
    g.barriers.erase(name);
    return 0;
  }
  Waiter waiter;
  waiter.kind = Waiter::Kind::kBarrier;
  waiter.rank = rank;
  waiter.barrier = name;
  waiter.on_status = std::move(on_done);
  const uint64_t id = Park(std::move(waiter), wait);
  barrier.waiter_of_rank[rank] = id;
  ++barrier.arrived;
  return id;
}

absl::StatusOr<Millis> Job::Heartbeat(uint64_t generation, int rank) {
  std::lock_guard<std::mutex> lock(mu_);
  if (absl::Status s = CheckGeneration(generation); !s.ok()) return WithContext(s);
  if (absl::Status s = CheckRank(rank); !s.ok()) return WithContext(s);
  Member& m = gen_->members[gen_->by_rank[rank]];
  m.last_heartbeat = Clock::now();
  return options_.lease;
}

absl::Status Job::Leave(uint64_t generation, int rank, bool finished, const std::string& reason) {
  Completions done;
  std::lock_guard<std::mutex> lock(mu_);
  if (absl::Status s = CheckGeneration(generation); !s.ok()) return WithContext(s);
  if (absl::Status s = CheckRank(rank); !s.ok()) return WithContext(s);
  Generation& g = *gen_;
  Member& m = g.members[g.by_rank[rank]];
  if (!finished) {
    if (g.phase == JobPhase::kRunning) {
      EndGeneration(absl::StrCat("rank ", rank, " (host ", m.host, ", worker ", m.worker_id, ") left",
                                 reason.empty() ? "" : ": ", reason),
                    done);
    }
    return absl::OkStatus();
  }
  if (m.finished || g.phase != JobPhase::kRunning) return absl::OkStatus();
  const bool last = std::all_of(g.members.begin(), g.members.end(),
                                [&](const Member& other) { return other.finished || &other == &m; });
  if (last) {
    PersistedJob next = Persisted();
    next.phase = JobPhase::kCompleted;
    if (absl::Status s = store_->SaveJob(next); !s.ok()) return WithContext(s);
    g.phase = JobPhase::kCompleted;
    EndPhase("run");
    LogEvent("completed: every worker finished");
    if (g.lease_timer) timers_->Cancel(g.lease_timer);
    g.lease_timer = 0;
  }
  m.finished = true;
  return absl::OkStatus();
}

// --- phase timings and views ----------------------------------------------------------------------------

void Job::BeginPhase(const std::string& phase) {
  gen_->timings.push_back({phase, UnixMillisNow(), Clock::now(), std::nullopt});
}

void Job::EndPhase(const std::string& phase) {
  for (auto it = gen_->timings.rbegin(); it != gen_->timings.rend(); ++it) {
    if (it->phase == phase && !it->end) {
      it->end = Clock::now();
      return;
    }
  }
}

JobView Job::View(bool with_members) const {
  std::lock_guard<std::mutex> lock(mu_);
  const Generation& g = *gen_;
  JobView view;
  view.job_id = id_;
  view.tp_init = tp_init_;
  view.merged_config = merged_config_;
  view.generation = g.number;
  view.phase = g.phase;
  view.world_size = g.world_size;
  view.end_reason = g.end_reason;
  for (const auto& t : g.timings) {
    view.timings.push_back(
        {t.phase, t.start_unix_ms, t.end ? std::chrono::duration_cast<Millis>(*t.end - t.start).count() : -1});
  }
  // What the job is waiting for, per awaited event rather than per parked call: ten thousand calls parked in
  // one barrier are one line, and the view costs O(world size), not O(world size squared).
  if (g.phase == JobPhase::kJoining) view.missing.push_back("join: " + MissingForJoin().ToString());
  for (const auto& [name, barrier] : g.barriers) {
    Shortlist ranks;
    for (int r = 0; r < g.world_size; ++r) {
      if (barrier.waiter_of_rank[r] == 0) ranks.Add([&] { return DescribeRank(r); });
    }
    view.missing.push_back(absl::StrCat("barrier \"", name, "\": ", ranks.ToString()));
  }
  for (const auto& [group, ids] : g.id_waiters) {
    if (ids.empty() || g.unique_ids.count(group)) continue;
    view.missing.push_back(absl::StrCat("the unique id of ", GroupName(group), " from its leader ",
                                        DescribeRank(g.mesh.Leader(group))));
  }
  std::vector<std::string> keys;
  for (const auto& [key, ids] : g.key_waiters) {
    if (!ids.empty() && !g.kv.count(key)) keys.push_back(key);
  }
  std::sort(keys.begin(), keys.end());
  Shortlist key_list;
  for (const std::string& key : keys) key_list.Add([&] { return QuoteForError(key); });
  if (!key_list.empty()) view.missing.push_back("store keys " + key_list.ToString());
  if (!with_members) return view;
  const Clock::time_point now = Clock::now();
  for (const Member& m : g.members) {
    const int64_t age = m.rank >= 0 && g.phase == JobPhase::kRunning
                            ? std::chrono::duration_cast<Millis>(now - m.last_heartbeat).count()
                            : -1;
    view.members.push_back({m.rank, m.host, m.worker_id, m.finished, age});
  }
  std::sort(view.members.begin(), view.members.end(), [](const MemberView& a, const MemberView& b) {
    return a.rank != b.rank ? a.rank < b.rank : a.worker_id < b.worker_id;
  });
  return view;
}

}  // namespace tpcoord
