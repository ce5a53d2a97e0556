#include "coordinator/job/job.h"

#include <algorithm>
#include <set>
#include <unordered_set>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "common/config_merge.h"
#include "common/deepspeed_error.h"
#include "common/ds_config.h"
#include "common/identifiers.h"
#include "common/limits.h"
#include "common/rank_assignment.h"
#include "common/secrets.h"
#include "coordinator/job/barrier_set.h"
#include "coordinator/job/config_agreement.h"
#include "coordinator/job/lease_monitor.h"
#include "coordinator/job/unique_id_table.h"

namespace tpcoord {
namespace {

int64_t UnixMillisNow() {
  return std::chrono::duration_cast<Millis>(std::chrono::system_clock::now().time_since_epoch()).count();
}

std::string Seconds(Millis d) {
  return d.count() % 1000 == 0 ? absl::StrCat(d.count() / 1000, "s") : absl::StrCat(d.count(), "ms");
}

// Items a change claims in its batch (see Batch).
std::string StoreItem(absl::string_view key) { return absl::StrCat("kv/", key); }
std::string SlotItem(const UniqueIdSlot& slot) { return absl::StrCat("id/", GroupName(slot.group), "/", slot.root); }
std::string MemberItem(int rank) { return absl::StrCat("member/", rank); }
std::string BarrierItem(absl::string_view name) { return absl::StrCat("barrier/", name); }

// A generation in this phase is over: it completed or failed.
bool Over(JobPhase phase) { return phase == JobPhase::kCompleted || phase == JobPhase::kFailed; }

// Job::pins_ of an unborn job that is gone: no call may pin it any more.
constexpr int64_t kGonePins = -1;

// How calls learn that a generation ended: ABORTED (rejoin the next one), or FAILED_PRECONDITION when a
// member left on a configuration error that no restart cures (stop too).
absl::Status GenerationEnded(const JobHeader& header) {
  const std::string what = absl::StrCat("generation ", header.generation, " ended: ", header.end_reason);
  return header.end_fatal ? absl::FailedPreconditionError(what) : absl::AbortedError(what);
}

}  // namespace

struct Job::Member {
  std::string worker_id;
  std::string host;
  std::optional<int> requested_rank;
  std::string key_sha256;  // the member key its seat is bound to
  int rank = -1;           // once the world is complete
  uint64_t join_call = 0;  // the parked Join while joining
  bool merged = false;
};

struct Job::Generation {
  Generation(const JobContext& context, const Mesh& mesh)
      : mesh(mesh), kv(context.store_quota), barriers(kMaxBarriersPerGeneration), leases(context.options.lease) {}

  Mesh mesh;
  std::vector<Member> members;                        // joining: in arrival order; from running on: by rank
  std::unordered_map<std::string, size_t> by_worker;  // worker_id -> index in members
  std::unordered_set<std::string> member_keys;        // every member's key_sha256, from running on
  ConfigAgreement agreement;
  int merged_members = 0;
  UniqueIdTable ids;
  KeyValueStore kv;
  BarrierSet barriers;
  LeaseMonitor leases;
  TimerQueue::Id lease_timer = 0;
  struct Session {
    uint64_t id;
    SessionEnd on_end;
  };
  std::unordered_map<int, Session> sessions;  // rank -> its open session
  // While joining: the world-size range (JoinRequest.min_world_size) and when the first Join came.
  int min_world_size = 0;
  Millis rejoin_timeout{0};
  Clock::time_point joining_since;
  TimerQueue::Id shrink_timer = 0;

  struct Timing {
    std::string phase;
    int64_t start_unix_ms;
    Clock::time_point start;
    std::optional<Clock::time_point> end;
  };
  std::vector<Timing> timings;

  void IndexMembers() {
    by_worker.clear();
    member_keys.clear();
    for (size_t i = 0; i < members.size(); ++i) {
      by_worker.emplace(members[i].worker_id, i);
      member_keys.insert(members[i].key_sha256);
    }
  }
};

// What the changes of one batch claim, so that nothing a change decided on is changed before it is
// applied, by an earlier change of the same batch or by a batch still on its way to disk: each claims the
// items it reads and writes (a store key, a group's unique ID, a member, a barrier), or the whole job, or
// nothing (a change that reads nothing when it is decided, and so only waits for whole-job changes).
class Job::Batch {
 public:
  explicit Batch(const Held& held) : held_(held) {}

  bool ClaimJob() {
    if (changes_ > 0 || held_.whole_jobs > 0 || !held_.items.empty()) return false;
    whole_job_ = true;
    return true;
  }
  bool Claim(const std::string& item) {
    return ClaimNothing() && held_.items.count(item) == 0 && items_.insert(item).second;
  }
  bool ClaimNothing() const { return !whole_job_ && held_.whole_jobs == 0; }
  // No change joins a batch that a whole-job change holds.
  bool closed() const { return whole_job_ && changes_ > 0; }
  void Accepted() { ++changes_; }
  bool empty() const { return changes_ == 0; }
  bool whole_job() const { return whole_job_; }
  const std::set<std::string>& items() const { return items_; }

  StateWrites writes;
  int64_t store_bytes = 0;  // what the batch's store writes add to the StoreQuota

 private:
  const Held& held_;
  bool whole_job_ = false;
  size_t changes_ = 0;
  std::set<std::string> items_;
};

struct Job::Decision {
  enum class Kind { kWait, kReject, kApply };
  Kind kind = Kind::kApply;
  absl::Status rejection;                                     // kReject, final (with the job's context)
  std::function<void(Completions&)> apply;                    // kApply: runs once the batch is durable
  std::function<void(absl::Status, Completions&)> answer_error;  // set by Drain: answers the caller an error

  static Decision Wait() { return {Kind::kWait, {}, {}, {}}; }
  static Decision Reject(absl::Status status) { return {Kind::kReject, std::move(status), {}, {}}; }
  static Decision Apply(std::function<void(Completions&)> apply) { return {Kind::kApply, {}, std::move(apply), {}}; }
};

struct Job::Mutation {
  Decide decide;
  std::function<void(absl::Status, Completions&)> answer_error;
};

Job::Job(std::string id, const JobContext* context)
    : id_(std::move(id)),
      context_(context),
      options_(context->options),
      gen_(std::make_unique<Generation>(*context, Mesh())),
      parked_(context->timers, context->options.max_parked_calls) {}

Job::~Job() { Shutdown(); }

// --- the commit path ------------------------------------------------------------------------------------

template <typename T>
void Job::Mutate(Done<T> done, Decide decide) {
  auto mutation = std::make_unique<Mutation>();
  mutation->decide = std::move(decide);
  mutation->answer_error = [done = std::move(done)](absl::Status s, Completions& c) { c.Answer<T>(done, std::move(s)); };
  Enqueue(std::move(mutation));
}

void Job::Mutate(StatusDone done, Decide decide) {
  auto mutation = std::make_unique<Mutation>();
  mutation->decide = std::move(decide);
  mutation->answer_error = [done = std::move(done)](absl::Status s, Completions& c) { c.Answer(done, std::move(s)); };
  Enqueue(std::move(mutation));
}

void Job::Enqueue(std::unique_ptr<Mutation> mutation) {
  Completions done;
  MutexLock lock(&mu_);
  queue_.push_back(std::move(mutation));
  Drain(done);
}

Job::Decision Job::Rejected(absl::Status status) const { return Decision::Reject(WithContext(std::move(status))); }

void Job::Drain(Completions& done) {
  bool blocked = false;  // the first queued change waits for a batch on its way to disk
  while (!queue_.empty() && !blocked) {
    Batch batch(held_);
    std::vector<Decision> decided;
    while (!queue_.empty() && !batch.closed()) {
      Mutation& m = *queue_.front();
      Decision d;
      try {
        d = m.decide(batch);
      } catch (const std::exception& e) {  // a bug, not the caller's fault: answer it, keep serving
        d = Rejected(absl::InternalError(absl::StrCat("internal error: ", e.what())));
      }
      if (d.kind == Decision::Kind::kWait) {  // first of the next batch
        blocked = batch.empty();
        break;
      }
      if (d.kind == Decision::Kind::kReject) {
        m.answer_error(d.rejection, done);
      } else {
        d.answer_error = std::move(m.answer_error);
        decided.push_back(std::move(d));
      }
      queue_.pop_front();
      batch.Accepted();
    }
    if (batch.writes.empty()) {  // nothing to wait for: applied in order, now
      for (Decision& d : decided) d.apply(done);
      continue;
    }
    // The batch holds what it claimed until it is applied; the next batch may go to disk meanwhile.
    held_.items.insert(batch.items().begin(), batch.items().end());
    held_.whole_jobs += batch.whole_job() ? 1 : 0;
    in_flight_.push_back({std::vector<std::string>(batch.items().begin(), batch.items().end()), batch.whole_job()});
    context_->committer->Submit(
        std::move(batch.writes), absl::StrCat("write of job ", id_),
        [self = shared_from_this(), decided = std::move(decided)](absl::Status s) mutable {
          self->Written(s, std::move(decided));
        });
  }
  MaybeGone(done);
}

void Job::Written(const absl::Status& status, std::vector<Decision> batch) {
  Completions done;
  MutexLock lock(&mu_);
  // The committer answers a job's batches in the order they were submitted: this one is the oldest.
  const InFlight& written = in_flight_.front();
  for (const std::string& item : written.items) held_.items.erase(held_.items.find(item));
  held_.whole_jobs -= written.whole_job ? 1 : 0;
  in_flight_.pop_front();
  for (Decision& d : batch) {
    if (status.ok()) d.apply(done);
    else d.answer_error(WithContext(status), done);
  }
  Drain(done);
}

void Job::MaybeGone(Completions& done) {
  if (born_ || gone() || !in_flight_.empty() || !queue_.empty() || parked_.size() > 0) return;
  int64_t unpinned = 0;
  if (!pins_.compare_exchange_strong(unpinned, kGonePins)) return;  // pinned: its call will come
  gone_.store(true, std::memory_order_release);
  if (!stopping_ && context_->on_gone) done.Add([self = shared_from_this(), on_gone = context_->on_gone] { on_gone(self); });
}

bool Job::TryPin() {
  int64_t pins = pins_.load();
  do {
    if (pins == kGonePins) return false;
  } while (!pins_.compare_exchange_weak(pins, pins + 1));
  if (!gone()) return true;  // deleted meanwhile
  Unpin();
  return false;
}

void Job::Unpin() {
  if (pins_.fetch_sub(1) != 1 || born_) return;
  Completions done;  // the last pin of a job that may never have come to exist
  MutexLock lock(&mu_);
  MaybeGone(done);
}

void Job::Sync(StatusDone on_done) {
  Mutate(on_done, [on_done](Batch& batch) -> Decision {
    if (!batch.ClaimJob()) return Decision::Wait();
    return Decision::Apply([on_done](Completions& c) { c.Answer(on_done, absl::OkStatus()); });
  });
}

absl::Status Job::CheckServing() const {
  if (stopping_) return absl::UnavailableError("the coordinator is shutting down; retry");
  if (gone()) return absl::NotFoundError("the job does not exist");
  return corrupt_;
}

JobHeader Job::NextHeader() const {
  JobHeader next = header_;
  next.updated_unix_ms = UnixMillisNow();
  if (!born_) next.created_unix_ms = next.updated_unix_ms;
  return next;
}

void Job::WriteHeader(Batch& batch, JobHeader& next) const {
  batch.writes.push_back(job_storage::PutHeader(id_, StampAndRecord(batch, next)));
}

const JobHeader& Job::StampAndRecord(Batch& batch, JobHeader& next) const {
  const bool new_generation = next.generation != header_.generation;
  if (new_generation) {
    next.generation_started_unix_ms = next.updated_unix_ms;
    next.running_unix_ms = next.ended_unix_ms = 0;
    next.end_cause = EndCause::kNone;
    next.end_rank = -1;
  }
  if (next.phase == JobPhase::kRunning && next.running_unix_ms == 0) next.running_unix_ms = next.updated_unix_ms;
  if (Over(next.phase) && (new_generation || !Over(header_.phase))) next.ended_unix_ms = next.updated_unix_ms;
  if (next.generation == 0) return next;
  batch.writes.push_back(job_storage::PutGenerationRecord(id_, RecordOf(next)));
  if (new_generation && next.generation > kMaxGenerationHistory) {
    batch.writes.push_back(job_storage::DeleteGenerationRecord(id_, next.generation - kMaxGenerationHistory));
  }
  return next;
}

void Job::ApplyHeader(const JobHeader& header) {
  const bool new_generation = header.generation != header_.generation;
  if (Metrics* metrics = context_->metrics) {
    if (new_generation && header.generation > 0) metrics->GenerationStarted();
    if (Over(header.phase) && (new_generation || !Over(header_.phase))) {
      metrics->GenerationEnded(header.phase == JobPhase::kCompleted ? "completed" : EndCauseName(header.end_cause));
    }
  }
  header_ = header;
  born_ = true;
  if (header_.generation == 0) return;
  if (history_.empty() || history_.back().generation != header_.generation) {
    history_.push_back(RecordOf(header_));
    while (history_.size() > kMaxGenerationHistory) history_.pop_front();
  } else {
    history_.back() = RecordOf(header_);
  }
}

// --- restore and shutdown -------------------------------------------------------------------------------

void Job::Restore(StoredJob stored) {
  Completions done;
  MutexLock lock(&mu_);
  header_ = std::move(stored.header);  // not ApplyHeader: nothing happened, it is only read back
  born_ = true;
  history_.assign(stored.history.begin(), stored.history.end());
  merged_config_ = std::move(stored.merged_config);
  if (header_.generation == 0) return;
  gen_ = std::make_unique<Generation>(*context_, *Mesh::Create(header_.world_size, header_.tp_size));
  Generation& g = *gen_;
  for (size_t r = 0; r < stored.members.size(); ++r) {
    Member m;
    m.worker_id = std::move(stored.members[r].worker_id);
    m.host = std::move(stored.members[r].host);
    m.key_sha256 = std::move(stored.members[r].key_sha256);
    m.rank = static_cast<int>(r);
    g.members.push_back(std::move(m));
  }
  g.IndexMembers();
  for (auto& [slot, id] : stored.unique_ids) g.ids.Put(slot, std::move(id));
  for (auto& [key, value] : stored.kv) g.kv.Put(key, std::move(value));
  for (const auto& [name, rounds] : stored.barrier_rounds) g.barriers.RestoreRounds(name, rounds);
  if (stored.reference) {
    absl::StatusOr<nlohmann::json> config = ParseDsConfig(stored.reference->config_text);
    if (config.ok()) g.agreement.SetReference(stored.reference->rank, std::move(stored.reference->config_text), *config);
  }
  if (g.members.empty()) return;
  g.leases.Start(header_.world_size, Clock::now());
  for (int rank : stored.finished) g.leases.Finish(rank);
  if (header_.phase == JobPhase::kRunning) {
    BeginPhase("run");
    ScheduleLeaseCheck(Clock::now() + options_.lease);
    MaybeComplete();  // every member finished just before the restart
  }
}

absl::Status Job::MarkCorrupt(absl::Status status, std::string token_sha256) {
  MutexLock lock(&mu_);
  born_ = true;
  // Each remedy named is one the caller can carry out.
  const std::string remedy =
      !token_sha256.empty()
          ? absl::StrCat("; delete the job (tpctl delete ", id_, ") to start it afresh")
          : absl::StrCat("; its token binding is lost with it, so no job token can delete it: stop the coordinator "
                         "and run ", options_.forget_job_command, " ", id_,
                         options_.admin_token ? absl::StrCat(", or delete it with the admin token (tpctl delete ", id_,
                                                             " --force)")
                                              : "");
  absl::Status corrupt(status.code(), absl::StrCat(status.message(), remedy));
  status.ForEachPayload(
      [&corrupt](absl::string_view url, const absl::Cord& payload) { corrupt.SetPayload(url, payload); });
  corrupt_ = WithContext(std::move(corrupt));
  header_.token_sha256 = std::move(token_sha256);
  header_.phase = JobPhase::kFailed;
  header_.end_reason = std::string(corrupt_.message());
  return corrupt_;
}

void Job::Shutdown() {
  Completions done;
  MutexLock lock(&mu_);
  stopping_ = true;
  if (gen_->lease_timer) context_->timers->Cancel(gen_->lease_timer);
  gen_->lease_timer = 0;
  const absl::Status stopping = WithJobContext(id_, absl::UnavailableError("the coordinator is shutting down; retry"));
  FailAllParked(stopping, done);
  EndSessions(stopping, done);
}

void Job::LogEvent(absl::string_view event, const std::string& what, int rank) const {
  if (!options_.log) return;
  LogLine line;
  line.message = what;
  line.event = std::string(event);
  line.job = id_;
  line.generation = header_.generation;
  line.rank = rank;
  options_.log(line);
}

absl::Status Job::WithContext(absl::Status status) const {
  std::string detail;
  if (IsDeepSpeedError(status) && header_.tp_init.has_value()) {
    detail = absl::StrCat("recorded ", DescribeTpInitArgs(ArgsForMerge(*header_.tp_init, nullptr)));
  }
  return WithJobContext(id_, std::move(status), detail);
}

// --- tp_model_init and the config merge -----------------------------------------------------------------

void Job::Create(const Caller& caller, std::string token_sha256, StatusDone on_done) {
  Mutate(on_done, [this, caller, token_sha256 = std::move(token_sha256), on_done](Batch& batch) -> Decision {
    mu_.AssertHeld();
    if (!batch.ClaimJob()) return Decision::Wait();
    if (absl::Status s = CheckServing(); !s.ok()) return Rejected(s);
    if (absl::Status s = CheckCreator(caller); !s.ok()) return Rejected(s);
    if (born_) return Rejected(absl::AlreadyExistsError("the job already exists"));
    JobHeader next = NextHeader();
    next.token_sha256 = token_sha256.empty() ? caller.token_sha256 : token_sha256;
    WriteHeader(batch, next);
    return Decision::Apply([this, next, on_done](Completions& c) {
      mu_.AssertHeld();
      ApplyHeader(next);
      LogEvent("created", "created");
      c.Answer(on_done, absl::OkStatus());
    });
  });
}

void Job::Record(const Caller& caller, const TpInitArgs& args, Done<RecordOutcome> on_done) {
  Mutate(on_done, [this, caller, args, on_done](Batch& batch) -> Decision {
    mu_.AssertHeld();
    if (!batch.ClaimJob()) return Decision::Wait();
    if (absl::Status s = CheckServing(); !s.ok()) return Rejected(s);
    if (absl::Status s = CheckCreator(caller); !s.ok()) return Rejected(s);
    absl::StatusOr<TpInitRecord> updated = RecordTpInitArgs(header_.tp_init, args);
    if (!updated.ok()) {
      return Decision::Reject(WithJobContext(
          id_, updated.status(),
          absl::StrCat("recorded ", DescribeTpInitArgs(ArgsForMerge(*header_.tp_init, nullptr)), "; this call ",
                       DescribeTpInitArgs(args))));
    }
    const bool created = !header_.tp_init.has_value();
    if (!created && updated->tp_groups.size() == header_.tp_init->tp_groups.size()) {
      return Decision::Apply([on_done, outcome = RecordOutcome{*updated, false}](Completions& c) {
        c.Answer<RecordOutcome>(on_done, outcome);
      });
    }
    JobHeader next = NextHeader();
    if (!born_) next.token_sha256 = caller.token_sha256;  // this call creates the job
    next.tp_init = *updated;
    WriteHeader(batch, next);
    return Decision::Apply([this, next, created, on_done](Completions& c) {
      mu_.AssertHeld();
      ApplyHeader(next);
      c.Answer<RecordOutcome>(on_done, RecordOutcome{*next.tp_init, created});
    });
  });
}

void Job::Merge(const Caller& caller, std::string config_text, bool has_mpu, uint64_t generation, int rank,
                Done<MergeOutcome> on_done) {
  Mutate(on_done, [this, caller, text = std::move(config_text), has_mpu, generation, rank,
                   on_done](Batch& batch) -> Decision {
    mu_.AssertHeld();
    if (!batch.ClaimJob()) return Decision::Wait();
    if (absl::Status s = CheckServing(); !s.ok()) return Rejected(s);
    const bool recorded = header_.tp_init.has_value();
    auto merge = [&](const nlohmann::json& config, const RankList* tp_group) -> absl::StatusOr<std::string> {
      mu_.AssertHeld();
      std::optional<TpInitArgs> args;
      if (recorded) args = ArgsForMerge(*header_.tp_init, tp_group);
      absl::StatusOr<nlohmann::json> merged = MergeTpInitIntoConfig(args, config, has_mpu);
      if (!merged.ok()) return merged.status();
      return merged->dump();
    };
    auto answer = [on_done, recorded](std::string merged) {
      return [on_done, recorded, merged = std::move(merged)](Completions& c) {
        c.Answer<MergeOutcome>(on_done, MergeOutcome{merged, recorded});
      };
    };

    if (generation == 0) {  // a dry run: validate and merge against the record, change nothing
      if (absl::Status s = CheckCreator(caller); !s.ok()) return Rejected(s);
      absl::StatusOr<nlohmann::json> config = ParseDsConfig(text);
      if (!config.ok()) return Rejected(config.status());
      absl::StatusOr<std::string> merged = merge(*config, nullptr);
      if (!merged.ok()) return Rejected(merged.status());
      return Decision::Apply(answer(*merged));
    }

    if (absl::Status s = CheckMember(caller, generation, rank); !s.ok()) return Rejected(s);
    Generation& g = *gen_;
    const GroupId tp_group = g.mesh.tp_group_of(rank);
    const RankList tp_ranks = g.mesh.Ranks(tp_group);
    auto count_member = [this, rank] {
      mu_.AssertHeld();
      Member& m = gen_->members[rank];
      if (m.merged) return;
      m.merged = true;
      if (++gen_->merged_members == header_.world_size) EndPhase("merge");
    };

    if (g.agreement.has_reference() && text == g.agreement.reference_text()) {  // the common case: no parse
      std::string merged;
      if (const std::string* cached = g.agreement.MergedFor(tp_group.index)) {
        merged = *cached;
      } else {
        absl::StatusOr<std::string> m = merge(g.agreement.reference(), &tp_ranks);
        if (!m.ok()) return Rejected(m.status());
        merged = *m;
      }
      return Decision::Apply([this, tp_group, merged, count_member, reply = answer(merged)](Completions& c) {
        mu_.AssertHeld();
        gen_->agreement.CacheMerged(tp_group.index, merged);
        count_member();
        reply(c);
      });
    }
    absl::StatusOr<nlohmann::json> config = ParseDsConfig(text);
    if (!config.ok()) return Rejected(config.status());
    if (absl::Status s = g.agreement.Check(rank, *config, header_.generation); !s.ok()) return Rejected(s);
    absl::StatusOr<std::string> merged = merge(*config, &tp_ranks);
    if (!merged.ok()) return Rejected(merged.status());
    if (g.agreement.has_reference()) {  // equal after parsing, though not byte for byte
      return Decision::Apply([count_member, reply = answer(*merged)](Completions& c) {
        count_member();
        reply(c);
      });
    }
    // The first merge of the generation: its config becomes the reference every member must agree with.
    batch.writes.push_back(job_storage::PutReference(id_, {rank, text}));
    if (*merged != merged_config_) batch.writes.push_back(job_storage::PutMergedConfig(id_, *merged));
    return Decision::Apply([this, rank, text, config = *std::move(config), merged = *merged, tp_group, count_member,
                            reply = answer(*merged)](Completions& c) mutable {
      mu_.AssertHeld();
      gen_->agreement.SetReference(rank, text, std::move(config));
      gen_->agreement.CacheMerged(tp_group.index, merged);
      merged_config_ = merged;
      BeginPhase("merge");
      count_member();
      reply(c);
    });
  });
}

// --- Join and the generation lifecycle ------------------------------------------------------------------

uint64_t Job::Join(const Caller& caller, JoinArgs args, Millis wait, Done<Assignment> on_done) {
  const uint64_t call = next_call_.fetch_add(1);
  Mutate(on_done, [this, caller, args = std::move(args), call, wait, on_done](Batch& batch) {
    mu_.AssertHeld();
    return DecideJoin(batch, caller, args, call, wait, on_done);
  });
  return call;
}

Assignment Job::AssignmentOf(int rank) const {
  return Assignment{header_.generation, rank, gen_->mesh, options_.lease / 4, options_.lease};
}

Job::Decision Job::DecideJoin(Batch& batch, const Caller& caller, const JoinArgs& args, uint64_t call, Millis wait,
                              Done<Assignment> done) {
  if (!batch.ClaimJob()) return Decision::Wait();
  if (absl::Status s = CheckServing(); !s.ok()) return Rejected(s);
  if (absl::Status s = CheckCreator(caller); !s.ok()) return Rejected(s);
  if (caller.member_key_sha256.empty()) {
    return Rejected(absl::UnauthenticatedError(absl::StrCat(
        "Join must carry the worker's member key (metadata ", kMemberKeyMetadata,
        "): a random secret of the worker's own, which every call it makes as a member carries")));
  }
  int tp_size = args.tp_size;
  if (header_.tp_init.has_value()) {
    if (tp_size != 0 && tp_size != header_.tp_init->tp_size) {
      return Rejected(absl::FailedPreconditionError(absl::StrCat("Join asks for tp_size ", tp_size,
                                                                 " but tp_model_init recorded tp_size ",
                                                                 header_.tp_init->tp_size, " for this job")));
    }
    tp_size = header_.tp_init->tp_size;
  } else if (tp_size == 0) {
    tp_size = 1;
  }
  absl::StatusOr<Mesh> mesh = Mesh::Create(args.world_size, tp_size);
  if (!mesh.ok()) return Rejected(mesh.status());
  const int min_world_size = args.min_world_size > 0 ? std::min(args.min_world_size, args.world_size) : args.world_size;
  if (args.requested_rank && (*args.requested_rank < 0 || *args.requested_rank >= args.world_size)) {
    return Rejected(absl::InvalidArgumentError(absl::StrCat("requested_rank ", *args.requested_rank,
                                                            " is out of range for world_size ", args.world_size)));
  }
  const Generation& g = *gen_;
  // A worker_id that holds a seat (running, or joining) is the same worker only if it proves it with the
  // seat's member key: a retry after a lost answer or a restart. Anyone else is refused, not seated.
  if (header_.phase == JobPhase::kRunning || header_.phase == JobPhase::kJoining) {
    if (auto it = g.by_worker.find(args.worker_id); it != g.by_worker.end()) {
      if (!ConstantTimeEquals(g.members[it->second].key_sha256, caller.member_key_sha256)) {
        return Rejected(absl::PermissionDeniedError(absl::StrCat(
            "worker ", args.worker_id, " already holds a seat in generation ", header_.generation,
            " under another member key; a Join is that worker's only with the key it joined with")));
      }
      if (header_.phase == JobPhase::kRunning) {  // a retry: the same answer
        return Decision::Apply([done, a = AssignmentOf(g.members[it->second].rank)](Completions& c) {
          c.Answer<Assignment>(done, a);
        });
      }
    }
  }

  // This Join opens the next generation unless one is joining; a running one ends first.
  const bool fresh = header_.phase != JobPhase::kJoining;
  std::optional<JobHeader> superseded;  // the running generation this Join ends
  if (header_.phase == JobPhase::kRunning) {
    superseded = NextHeader();
    superseded->phase = JobPhase::kFailed;
    superseded->end_cause = EndCause::kWorkerRejoined;
    superseded->end_reason = absl::StrCat("worker ", args.worker_id, " (host ", args.host, ") joined while generation ",
                                          header_.generation, " was running");
  }
  JobHeader next = NextHeader();
  if (!born_) next.token_sha256 = caller.token_sha256;  // this Join creates the job
  if (fresh) {
    next.generation = header_.generation + 1;
    next.phase = JobPhase::kJoining;
    next.world_size = args.world_size;
    next.tp_size = tp_size;
    next.end_reason.clear();
    next.end_fatal = false;
  } else {
    if (args.world_size != header_.world_size || tp_size != header_.tp_size) {
      return Rejected(absl::FailedPreconditionError(absl::StrCat(
          "Join asks for world_size ", args.world_size, " and tp_size ", tp_size, ", but the ", g.members.size(),
          " worker(s) already in generation ", header_.generation, " joined with world_size ", header_.world_size,
          " and tp_size ", header_.tp_size)));
    }
    // (A joining generation restored after a restart has no members yet: its first Join sets the range.)
    if (!g.members.empty() && (min_world_size != g.min_world_size || args.rejoin_timeout != g.rejoin_timeout)) {
      return Rejected(absl::FailedPreconditionError(absl::StrCat(
          "Join asks for a world of ", min_world_size, " to ", args.world_size, " workers after ",
          args.rejoin_timeout.count(), " ms, but the worker(s) already in generation ", header_.generation,
          " joined for ", g.min_world_size, " to ", header_.world_size, " after ", g.rejoin_timeout.count(), " ms")));
    }
    if (args.requested_rank) {
      for (const Member& m : g.members) {
        if (m.requested_rank == args.requested_rank && m.worker_id != args.worker_id) {
          return Rejected(absl::AlreadyExistsError(absl::StrCat("requested_rank ", *args.requested_rank,
                                                                " is already held by worker ", m.worker_id, " (host ",
                                                                m.host, ") in generation ", header_.generation)));
        }
      }
    }
  }

  // The joining world with this worker in it (a retried Join replaces the worker's earlier one). Only the
  // Join that completes the world copies it: ten thousand Joins cost O(world), not O(world^2).
  Member joiner{args.worker_id, args.host, args.requested_rank, caller.member_key_sha256};
  uint64_t replaced = 0;
  size_t joined = 1;
  if (!fresh) {
    auto same = g.by_worker.find(args.worker_id);
    if (same != g.by_worker.end()) replaced = g.members[same->second].join_call;
    joined = g.members.size() + (same == g.by_worker.end() ? 1 : 0);
  }
  const bool complete = static_cast<int>(joined) == args.world_size;
  if (!complete) {
    if (absl::Status s = CheckPark(); !s.ok()) return Rejected(s);
  }

  absl::Status start_error;
  auto world = std::make_shared<std::vector<Member>>();  // by rank, once complete
  if (complete) {
    std::vector<Member> arrived = fresh ? std::vector<Member>() : g.members;
    if (auto same = g.by_worker.find(args.worker_id); !fresh && same != g.by_worker.end()) {
      arrived[same->second] = joiner;
    } else {
      arrived.push_back(joiner);
    }
    std::vector<RankRequest> requests;
    for (const Member& m : arrived) requests.push_back({m.host, m.requested_rank});
    const std::vector<int> ranks = AssignRanks(requests, tp_size);
    world->resize(arrived.size());
    for (size_t i = 0; i < arrived.size(); ++i) {
      arrived[i].rank = ranks[i];
      (*world)[ranks[i]] = std::move(arrived[i]);
    }
    // The recorded tp_groups must be TP groups of this mesh: the groups are what tpcoord shards with, so a
    // recorded group is honoured or rejected, never silently replaced (DeepSpeed gap G4).
    if (header_.tp_init.has_value() && header_.tp_init->has_tp_group) {
      for (const RankList& group : header_.tp_init->tp_groups) {
        if (mesh->TpGroupIndex(group) >= 0) continue;
        start_error = absl::FailedPreconditionError(absl::StrCat(
            "the recorded tp_group ", RankListString(group), " is not a TP group of the mesh (world_size ",
            args.world_size, ", tp_size ", tp_size, "), whose TP groups are the contiguous blocks ",
            RankListString(mesh->Ranks({GroupKind::kTp, 0})), ", ...; record the groups of that layout"));
        break;
      }
    }
    next.phase = start_error.ok() ? JobPhase::kRunning : JobPhase::kFailed;
    next.end_reason = std::string(start_error.message());
    next.end_cause = start_error.ok() ? EndCause::kNone : EndCause::kStartFailed;
  }

  if (fresh) batch.writes.push_back(job_storage::ClearGeneration(id_));
  if (superseded) StampAndRecord(batch, *superseded);  // its header is `next`'s
  if (fresh || complete) WriteHeader(batch, next);
  if (complete && start_error.ok()) {
    std::vector<StoredMember> stored;
    for (const Member& m : *world) stored.push_back({m.worker_id, m.host, m.key_sha256});
    job_storage::PutMembers(id_, stored, &batch.writes);
  }

  return Decision::Apply([this, fresh, superseded, next, world, complete, start_error, replaced, joiner, call, wait,
                          done, min_world_size, rejoin_timeout = args.rejoin_timeout,
                          sets_range = fresh || g.members.empty()](Completions& c) mutable {
    mu_.AssertHeld();
    if (superseded) EndGeneration(*superseded, c);
    if (fresh) StartGeneration(next, c);
    if (sets_range) {
      gen_->min_world_size = min_world_size;
      gen_->rejoin_timeout = rejoin_timeout;
      gen_->joining_since = Clock::now();
    }
    if (replaced != 0) {
      if (std::optional<Parked> old = parked_.Take(replaced)) {
        FailParkedCall(old->call, WithJobContext(id_, absl::CancelledError("replaced by a newer Join from the same worker_id")), c);
      }
    }
    Generation& g = *gen_;
    if (!complete) {  // park until the world is complete
      std::string worker_id = joiner.worker_id;
      joiner.join_call = call;
      auto it = g.by_worker.find(joiner.worker_id);
      if (it == g.by_worker.end()) {
        g.by_worker.emplace(joiner.worker_id, g.members.size());
        g.members.push_back(std::move(joiner));
      } else {
        g.members[it->second] = std::move(joiner);
      }
      if (!fresh) ApplyHeader(next);
      Park(call, JoinCall{std::move(worker_id), done}, wait, c);
      ScheduleShrink();
      return;
    }
    if (!start_error.ok()) {
      ApplyHeader(next);
      const absl::Status status = WithContext(start_error);
      LogEvent("start_failed", absl::StrCat("failed to start: ", start_error.message()));
      for (const Member& m : g.members) {
        if (std::optional<Parked> p = parked_.Take(m.join_call)) FailParkedCall(p->call, status, c);
      }
      c.Answer<Assignment>(done, status);
      return;
    }
    StartRunning(next, std::move(*world), joiner.worker_id, done, c);
  });
}

void Job::StartRunning(const JobHeader& next, std::vector<Member> world, const std::string& joiner,
                       Done<Assignment> joiner_done, Completions& c) {
  Generation& g = *gen_;
  if (g.shrink_timer) context_->timers->Cancel(g.shrink_timer);
  g.shrink_timer = 0;
  // The world is complete: every member learns its rank.
  std::vector<uint64_t> waiting;
  for (const Member& m : world) waiting.push_back(m.join_call);
  g.members = std::move(world);
  for (Member& m : g.members) m.join_call = 0;
  g.IndexMembers();
  g.mesh = *Mesh::Create(next.world_size, next.tp_size);
  ApplyHeader(next);
  const Clock::time_point now = Clock::now();
  g.leases.Start(header_.world_size, now);
  EndPhase("join");
  BeginPhase("run");
  LogEvent("running", absl::StrCat("running: ", header_.world_size, " workers = tp ", g.mesh.tp_size(), " x dp ", g.mesh.dp_size()));
  for (size_t rank = 0; rank < waiting.size(); ++rank) {
    if (!joiner.empty() && g.members[rank].worker_id == joiner) {
      c.Answer<Assignment>(joiner_done, AssignmentOf(static_cast<int>(rank)));
    } else if (std::optional<Parked> p = parked_.Take(waiting[rank])) {
      c.Answer<Assignment>(std::move(std::get<JoinCall>(p->call).done), AssignmentOf(static_cast<int>(rank)));
    }
  }
  ScheduleLeaseCheck(now + options_.lease);
}

void Job::ScheduleShrink() {
  Generation& g = *gen_;
  const int whole_groups = static_cast<int>(g.members.size()) / header_.tp_size * header_.tp_size;
  if (g.shrink_timer || g.min_world_size >= header_.world_size || whole_groups < g.min_world_size) return;
  std::weak_ptr<Job> weak = weak_from_this();
  g.shrink_timer = context_->timers->Schedule(g.joining_since + g.rejoin_timeout, [weak, generation = header_.generation] {
    if (auto job = weak.lock()) job->Shrink(generation);
  });
}

void Job::Shrink(uint64_t generation) {
  EnqueueInternal([this, generation](Batch& batch) -> Decision {
    mu_.AssertHeld();
    if (!batch.ClaimJob()) return Decision::Wait();
    auto nothing = [this, generation](Completions&) {
      mu_.AssertHeld();
      if (header_.generation == generation) gen_->shrink_timer = 0;
    };
    if (stopping_ || header_.generation != generation || header_.phase != JobPhase::kJoining) {
      return Decision::Apply(nothing);
    }
    const Generation& g = *gen_;
    const int tp_size = header_.tp_size;
    const int world_size = static_cast<int>(g.members.size()) / tp_size * tp_size;
    // Recorded TP groups name ranks of the full world; a smaller one would not honour them.
    if (world_size < g.min_world_size || world_size == 0 ||
        (header_.tp_init.has_value() && header_.tp_init->has_tp_group)) {
      return Decision::Apply(nothing);
    }
    // Requested ranks keep their order (arrival order for the rest) and are renumbered from 0.
    std::vector<size_t> order(g.members.size());
    for (size_t i = 0; i < order.size(); ++i) order[i] = i;
    std::stable_sort(order.begin(), order.end(), [&g](size_t a, size_t b) {
      return g.members[a].requested_rank.value_or(INT32_MAX) < g.members[b].requested_rank.value_or(INT32_MAX);
    });
    std::vector<Member> arrived;
    std::vector<RankRequest> requests;
    for (int i = 0; i < world_size; ++i) {
      arrived.push_back(g.members[order[i]]);
      if (arrived.back().requested_rank) arrived.back().requested_rank = i;
      requests.push_back({arrived.back().host, arrived.back().requested_rank});
    }
    std::vector<uint64_t> left_over;
    for (size_t i = world_size; i < order.size(); ++i) left_over.push_back(g.members[order[i]].join_call);
    const std::vector<int> ranks = AssignRanks(requests, tp_size);
    std::vector<Member> world(world_size);
    for (int i = 0; i < world_size; ++i) {
      arrived[i].rank = ranks[i];
      world[ranks[i]] = std::move(arrived[i]);
    }
    JobHeader next = NextHeader();
    next.phase = JobPhase::kRunning;
    next.world_size = world_size;
    next.end_reason.clear();
    next.end_fatal = false;
    WriteHeader(batch, next);
    std::vector<StoredMember> stored;
    for (const Member& m : world) stored.push_back({m.worker_id, m.host, m.key_sha256});
    job_storage::PutMembers(id_, stored, &batch.writes);
    return Decision::Apply([this, next, world = std::move(world), left_over, nothing](Completions& c) mutable {
      mu_.AssertHeld();
      nothing(c);
      const int wanted = header_.world_size;
      const Mesh mesh = *Mesh::Create(next.world_size, next.tp_size);
      LogEvent("shrinking", absl::StrCat("shrinking: ", next.world_size, " of ", wanted, " workers joined within ",
                            Seconds(gen_->rejoin_timeout), "; starting with tp ", mesh.tp_size(), " x dp ",
                            mesh.dp_size()));
      for (uint64_t call : left_over) {
        if (std::optional<Parked> p = parked_.Take(call)) {
          FailParkedCall(p->call, WithJobContext(id_, absl::FailedPreconditionError(absl::StrCat(
                                      "generation ", next.generation, " started with ", next.world_size, " of ",
                                      wanted, " workers (whole TP groups of ", next.tp_size,
                                      ") without this one; join again when it ends"))),
                         c);
        }
      }
      StartRunning(next, std::move(world), "", nullptr, c);
    });
  });
}

void Job::StartGeneration(const JobHeader& header, Completions& done) {
  // Calls still parked in the generation that is over (a store wait after completion, say) end with it.
  FailAllParked(WithJobContext(id_, absl::FailedPreconditionError(absl::StrCat(
                                        "generation ", header_.generation, " is over; the job is in generation ",
                                        header.generation, ": rejoin"))),
                done);
  previous_members_.clear();
  for (const Member& m : gen_->members) {
    if (m.rank >= 0) previous_members_.push_back({m.rank, m.host, m.worker_id});
  }
  if (gen_->lease_timer) context_->timers->Cancel(gen_->lease_timer);
  if (gen_->shrink_timer) context_->timers->Cancel(gen_->shrink_timer);
  gen_ = std::make_unique<Generation>(*context_, *Mesh::Create(header.world_size, header.tp_size));
  gen_->joining_since = Clock::now();
  ApplyHeader(header);
  BeginPhase("join");
  LogEvent("joining", absl::StrCat("joining, world_size ", header.world_size, ", tp_size ", header.tp_size));
}

void Job::EndGeneration(const JobHeader& header, Completions& done) {
  ApplyHeader(header);
  EndPhase("run");
  LogEvent("ended", absl::StrCat("ended: ", header.end_reason), header.end_rank);
  if (gen_->lease_timer) context_->timers->Cancel(gen_->lease_timer);
  gen_->lease_timer = 0;
  const absl::Status ended = WithJobContext(id_, GenerationEnded(header));
  FailAllParked(ended, done);
  EndSessions(ended, done);
}

void Job::EndSessions(const absl::Status& status, Completions& done) {
  for (auto& [rank, session] : gen_->sessions) {
    done.Add([on_end = std::move(session.on_end), status] { on_end(status); });
  }
  gen_->sessions.clear();
}

void Job::MaybeComplete() {
  if (header_.phase != JobPhase::kRunning || !gen_->leases.AllFinished()) return;
  auto mutation = std::make_unique<Mutation>();
  mutation->answer_error = [](absl::Status, Completions&) {};  // retried by the next restart's MaybeComplete
  mutation->decide = [this, generation = header_.generation](Batch& batch) -> Decision {
    mu_.AssertHeld();
    if (!batch.ClaimJob()) return Decision::Wait();
    if (header_.generation != generation || header_.phase != JobPhase::kRunning) return Decision::Apply([](Completions&) {});
    JobHeader next = NextHeader();
    next.phase = JobPhase::kCompleted;
    WriteHeader(batch, next);
    return Decision::Apply([this, next](Completions&) {
      mu_.AssertHeld();
      Complete(next);
    });
  };
  queue_.push_front(std::move(mutation));  // it belongs with the change just applied, before any later one
}

void Job::Complete(const JobHeader& header) {
  ApplyHeader(header);
  EndPhase("run");
  LogEvent("completed", "completed: every worker finished");
  if (gen_->lease_timer) context_->timers->Cancel(gen_->lease_timer);
  gen_->lease_timer = 0;
}

void Job::ScheduleLeaseCheck(Clock::time_point when) {
  std::weak_ptr<Job> weak = weak_from_this();
  gen_->lease_timer = context_->timers->Schedule(when, [weak] {
    if (auto job = weak.lock()) job->CheckLeases();
  });
}

void Job::CheckLeases() {
  EnqueueInternal([this](Batch& batch) -> Decision {
    mu_.AssertHeld();
    if (!batch.ClaimJob()) return Decision::Wait();
    if (stopping_ || header_.phase != JobPhase::kRunning) return Decision::Apply([](Completions&) {});
    const Generation& g = *gen_;
    const std::vector<int> expired = g.leases.Expired(Clock::now());
    if (expired.empty()) {
      return Decision::Apply([this](Completions&) {
        mu_.AssertHeld();
        ScheduleLeaseCheck(std::min(gen_->leases.NextDeadline(), Clock::now() + options_.lease));
      });
    }
    const Member& first = g.members[expired.front()];
    JobHeader next = NextHeader();
    next.phase = JobPhase::kFailed;
    next.end_reason = absl::StrCat("rank ", first.rank, " (host ", first.host, ", worker ", first.worker_id,
                                   ") missed its heartbeat lease of ", Seconds(options_.lease));
    if (expired.size() > 1) absl::StrAppend(&next.end_reason, ", and ", expired.size() - 1, " more rank(s) with it");
    next.end_cause = EndCause::kLeaseExpired;
    next.end_rank = first.rank;
    WriteHeader(batch, next);
    return Decision::Apply([this, next](Completions& c) {
      mu_.AssertHeld();
      EndGeneration(next, c);
    });
  });
}

absl::Status Job::CheckLive(uint64_t generation, bool allow_completed) const {
  if (!born_) return absl::NotFoundError("the job does not exist");
  if (header_.generation == 0) {
    return absl::FailedPreconditionError(
        absl::StrCat("generation ", generation, " does not exist; the job has no generation yet"));
  }
  if (generation == 0 || generation > header_.generation) {
    return absl::FailedPreconditionError(absl::StrCat("generation ", generation,
                                                      " does not exist; the job is in generation ", header_.generation));
  }
  if (generation < header_.generation) {
    return absl::FailedPreconditionError(absl::StrCat("generation ", generation, " is over; the job is in generation ",
                                                      header_.generation, ": rejoin"));
  }
  switch (header_.phase) {
    case JobPhase::kRunning: return absl::OkStatus();
    case JobPhase::kCompleted:
      if (allow_completed) return absl::OkStatus();
      return absl::FailedPreconditionError(
          absl::StrCat("generation ", generation, " has completed: every member left finished"));
    case JobPhase::kFailed:
      return GenerationEnded(header_);
    default:
      return absl::FailedPreconditionError(
          absl::StrCat("generation ", generation, " is still ", JobPhaseName(header_.phase), "; wait for Join"));
  }
}

absl::Status Job::CheckRank(int rank) const {
  if (rank < 0 || rank >= header_.world_size || rank >= static_cast<int>(gen_->members.size())) {
    return absl::InvalidArgumentError(absl::StrCat("rank ", rank, " is out of range for world_size ",
                                                   header_.world_size, " of generation ", header_.generation));
  }
  return absl::OkStatus();
}

absl::Status Job::CheckCaller(const Caller& caller) const {
  if (caller.token_sha256.empty()) return MissingTokenError();
  if (!born_) return absl::NotFoundError("the job does not exist");
  if (caller.admin) return absl::OkStatus();
  if (header_.token_sha256.empty()) {  // stored before jobs had tokens, or unreadable
    if (!corrupt_.ok()) return corrupt_;  // why, and what can be done about it
    return absl::PermissionDeniedError("the job is bound to no token; only the coordinator's admin token may use it");
  }
  if (!ConstantTimeEquals(caller.token_sha256, header_.token_sha256)) {
    return absl::PermissionDeniedError("the call's token is not the job's token");
  }
  return absl::OkStatus();
}

absl::Status Job::CheckCreator(const Caller& caller) const {
  if (born_ || caller.token_sha256.empty()) return CheckCaller(caller);
  if (options_.only_admin_creates_jobs && !caller.admin) {
    return absl::PermissionDeniedError(
        "the job does not exist, and on this coordinator only the admin token creates jobs (--job-creation admin); "
        "ask its operator to create it (tpctl create)");
  }
  return absl::OkStatus();
}

absl::Status Job::CheckMember(const Caller& caller, uint64_t generation, int rank, bool allow_completed) const {
  if (absl::Status s = CheckCaller(caller); !s.ok()) return s;
  if (absl::Status s = CheckLive(generation, allow_completed); !s.ok()) return s;
  if (absl::Status s = CheckRank(rank); !s.ok()) return s;
  if (caller.member_key_sha256.empty()) {
    return absl::UnauthenticatedError(absl::StrCat("a call acting as rank ", rank, " must carry the member key it "
                                                   "joined with (metadata ", kMemberKeyMetadata, ")"));
  }
  if (!ConstantTimeEquals(caller.member_key_sha256, gen_->members[rank].key_sha256)) {
    return absl::PermissionDeniedError(absl::StrCat("the call's member key is not the one rank ", rank,
                                                    " of generation ", generation, " joined with"));
  }
  return absl::OkStatus();
}

absl::Status Job::CheckAnyMember(const Caller& caller, uint64_t generation) const {
  if (absl::Status s = CheckCaller(caller); !s.ok()) return s;
  if (absl::Status s = CheckLive(generation); !s.ok()) return s;
  if (caller.member_key_sha256.empty()) {
    return absl::UnauthenticatedError(absl::StrCat("store calls must carry the member key of a member of generation ",
                                                   generation, " (metadata ", kMemberKeyMetadata, ")"));
  }
  if (gen_->member_keys.count(caller.member_key_sha256) == 0) {
    return absl::PermissionDeniedError(
        absl::StrCat("the call's member key is not that of any member of generation ", generation));
  }
  return absl::OkStatus();
}

absl::Status Job::Authorize(const Caller& caller) const {
  MutexLock lock(&mu_);
  if (absl::Status s = CheckCaller(caller); !s.ok()) return WithContext(s);
  return corrupt_;
}

bool Job::HasWorkers() const {
  return header_.phase == JobPhase::kRunning || (header_.phase == JobPhase::kJoining && !gen_->members.empty());
}

// --- parked calls ---------------------------------------------------------------------------------------

absl::Status Job::CheckPark() const { return parked_.CheckRoom(); }

void Job::Park(uint64_t call, ParkedCall parked, Millis wait, Completions& done) {
  if (stopping_) {  // a call decided before the coordinator began to stop, applied after
    FailParkedCall(parked, WithJobContext(id_, absl::UnavailableError("the coordinator is shutting down; retry")), done);
    return;
  }
  std::weak_ptr<Job> weak = weak_from_this();
  parked_.Park(call, std::move(parked), wait, [weak, call] {
    if (auto job = weak.lock()) job->Expire(call);
  });
}

void Job::Cancel(uint64_t call) {
  EndParked(call, [this](const Parked&) {
    return WithJobContext(id_, absl::CancelledError("the client cancelled the call"));
  });
}

void Job::Expire(uint64_t call) {
  EndParked(call, [this](const Parked& parked) {
    mu_.AssertHeld();
    const std::string missing = MissingFor(parked.call).ToString();
    const std::string waited = Seconds(parked.wait);
    std::string what;
    std::visit(
        [&](const auto& p) {
          mu_.AssertHeld();
          using T = std::decay_t<decltype(p)>;
          if constexpr (std::is_same_v<T, JoinCall>) {
            what = absl::StrCat("Join timed out after ", waited, " in generation ", header_.generation, ": ",
                                gen_->members.size(), " of ", header_.world_size, " workers joined; missing: ", missing);
          } else if constexpr (std::is_same_v<T, UniqueIdsCall>) {
            what = absl::StrCat("GetUniqueId timed out after ", waited, " waiting for ", missing);
          } else if constexpr (std::is_same_v<T, BarrierCall>) {
            what = absl::StrCat("barrier \"", p.name, "\" timed out after ", waited, "; ranks that never arrived: ",
                                missing);
          } else {
            what = absl::StrCat("store wait timed out after ", waited, "; keys never set: ", missing);
          }
        },
        parked.call);
    return WithJobContext(id_, absl::DeadlineExceededError(what));
  });
}

void Job::EndParked(uint64_t call, std::function<absl::Status(const Parked&)> why) {
  // Claims nothing: it reads nothing when it is decided, and its effect is applied in order.
  EnqueueInternal([this, call, why = std::move(why)](Batch& batch) {
    if (!batch.ClaimNothing()) return Decision::Wait();
    return Decision::Apply([this, call, why](Completions& c) {
      mu_.AssertHeld();
      std::optional<Parked> parked = parked_.Take(call);
      if (!parked) return;
      const absl::Status status = why(*parked);  // before Detach: it may name who is missing
      Detach(call, parked->call);
      FailParkedCall(parked->call, status, c);
    });
  });
}

void Job::EnqueueInternal(Decide decide) {
  auto mutation = std::make_unique<Mutation>();
  mutation->decide = std::move(decide);
  mutation->answer_error = [](absl::Status, Completions&) {};  // nobody to answer: its effect is all there is
  Enqueue(std::move(mutation));
}

void Job::Detach(uint64_t call, const ParkedCall& parked) {
  Generation& g = *gen_;
  std::visit(
      [&](const auto& p) {
        mu_.AssertHeld();
        using T = std::decay_t<decltype(p)>;
        if constexpr (std::is_same_v<T, JoinCall>) {
          // A worker that stops waiting leaves the joining world.
          auto it = g.by_worker.find(p.worker_id);
          if (header_.phase != JobPhase::kJoining || it == g.by_worker.end() || g.members[it->second].join_call != call) {
            return;
          }
          g.members.erase(g.members.begin() + static_cast<long>(it->second));
          g.IndexMembers();
        } else if constexpr (std::is_same_v<T, UniqueIdsCall>) {
          for (const GroupId& group : p.groups) g.ids.watchers().Unwatch(call, group);
        } else if constexpr (std::is_same_v<T, StoreGetCall>) {
          g.kv.watchers().Unwatch(call, p.key);
        } else if constexpr (std::is_same_v<T, StoreWaitCall>) {
          for (const std::string& key : p.keys) g.kv.watchers().Unwatch(call, key);
        } else {
          g.barriers.Depart(p.name, p.rank, call);
        }
      },
      parked);
}

void Job::FailAllParked(const absl::Status& status, Completions& done) {
  for (Parked& p : parked_.TakeAll()) FailParkedCall(p.call, status, done);
}

// --- unique IDs -----------------------------------------------------------------------------------------

void Job::PublishUniqueIds(const Caller& caller, uint64_t generation, int rank,
                           UniqueIds ids, StatusDone on_done) {
  Mutate(on_done, [this, caller, generation, rank, ids = std::move(ids), on_done](Batch& batch) -> Decision {
    mu_.AssertHeld();
    for (const auto& [slot, bytes] : ids) {
      if (!batch.Claim(SlotItem(slot))) return Decision::Wait();
    }
    if (absl::Status s = CheckServing(); !s.ok()) return Rejected(s);
    if (absl::Status s = CheckMember(caller, generation, rank); !s.ok()) return Rejected(s);
    const Generation& g = *gen_;
    if (absl::Status s = g.ids.CheckPublish(g.mesh, rank, ids, header_.generation); !s.ok()) return Rejected(s);
    UniqueIds fresh;
    for (const auto& [slot, bytes] : ids) {
      if (!g.ids.Find(slot)) {
        batch.writes.push_back(job_storage::PutUniqueId(id_, slot, bytes));
        fresh.emplace_back(slot, bytes);
      }
    }
    return Decision::Apply([this, fresh = std::move(fresh), on_done](Completions& c) mutable {
      mu_.AssertHeld();
      Generation& g = *gen_;
      if (g.ids.size() == 0 && !fresh.empty()) BeginPhase("unique_ids");
      for (auto& [slot, bytes] : fresh) {
        g.ids.Put(slot, std::move(bytes));
        if (g.ids.Complete(g.mesh, slot.group)) WakeGroup(slot.group, c);
      }
      const Mesh& mesh = g.mesh;
      const int total = mesh.num_groups(GroupKind::kTp) * mesh.UniqueIdRoots({GroupKind::kTp, 0}) +
                        mesh.num_groups(GroupKind::kDp) * mesh.UniqueIdRoots({GroupKind::kDp, 0}) +
                        mesh.UniqueIdRoots({GroupKind::kWorld, 0});
      if (!fresh.empty() && static_cast<int>(g.ids.size()) == total) EndPhase("unique_ids");
      c.Answer(on_done, absl::OkStatus());
    });
  });
}

void Job::WakeGroup(const GroupId& group, Completions& done) {
  Generation& g = *gen_;
  for (uint64_t call : g.ids.watchers().Take(group)) {
    const Parked* parked = parked_.Find(call);
    if (!parked) continue;
    const auto& p = std::get<UniqueIdsCall>(parked->call);
    std::optional<UniqueIds> answer = g.ids.Lookup(g.mesh, p.groups);
    if (!answer) continue;  // still watched under the groups it lacks
    std::optional<Parked> taken = parked_.Take(call);
    done.Answer<UniqueIds>(std::move(std::get<UniqueIdsCall>(taken->call).done), *std::move(answer));
  }
}

uint64_t Job::GetUniqueIds(const Caller& caller, uint64_t generation, int rank, std::vector<GroupId> groups,
                           Millis wait, Done<UniqueIds> on_done) {
  const uint64_t call = next_call_.fetch_add(1);
  Completions done;
  MutexLock lock(&mu_);
  absl::Status status = CheckServing();
  if (status.ok()) status = CheckMember(caller, generation, rank);
  if (status.ok()) status = gen_->ids.CheckGet(gen_->mesh, rank, groups);
  if (!status.ok()) {
    done.Answer<UniqueIds>(on_done, WithContext(status));
    return call;
  }
  if (std::optional<UniqueIds> answer = gen_->ids.Lookup(gen_->mesh, groups)) {
    done.Answer<UniqueIds>(on_done, *std::move(answer));
    return call;
  }
  if (absl::Status s = CheckPark(); !s.ok()) {
    done.Answer<UniqueIds>(on_done, WithContext(s));
    return call;
  }
  for (const GroupId& group : groups) {
    if (!gen_->ids.Complete(gen_->mesh, group)) gen_->ids.watchers().Watch(call, group);
  }
  Park(call, UniqueIdsCall{rank, std::move(groups), std::move(on_done)}, wait, done);
  return call;
}

// --- the key-value store --------------------------------------------------------------------------------

void Job::WakeKey(const std::string& key, Completions& done) {
  Generation& g = *gen_;
  for (uint64_t call : g.kv.watchers().Take(key)) {
    const Parked* parked = parked_.Find(call);
    if (!parked) continue;
    if (const auto* wait = std::get_if<StoreWaitCall>(&parked->call); wait && !g.kv.ContainsAll(wait->keys)) {
      continue;  // still watched under the keys it lacks
    }
    std::optional<Parked> taken = parked_.Take(call);
    if (auto* get = std::get_if<StoreGetCall>(&taken->call)) {
      done.Answer<std::string>(std::move(get->done), *g.kv.Find(key));
    } else {
      done.Answer(std::move(std::get<StoreWaitCall>(taken->call).done), absl::OkStatus());
    }
  }
}

void Job::StoreSet(const Caller& caller, uint64_t generation, std::string key, std::string value,
                   StatusDone on_done) {
  Mutate(on_done, [this, caller, generation, key = std::move(key), value = std::move(value), on_done](Batch& batch) -> Decision {
    mu_.AssertHeld();
    if (!batch.Claim(StoreItem(key))) return Decision::Wait();
    if (absl::Status s = CheckServing(); !s.ok()) return Rejected(s);
    if (absl::Status s = CheckAnyMember(caller, generation); !s.ok()) return Rejected(s);
    return DecideStorePut(batch, key, value, [on_done](Completions& c) { c.Answer(on_done, absl::OkStatus()); });
  });
}

void Job::StoreAdd(const Caller& caller, uint64_t generation, std::string key, int64_t delta,
                   Done<int64_t> on_done) {
  Mutate(on_done, [this, caller, generation, key = std::move(key), delta, on_done](Batch& batch) -> Decision {
    mu_.AssertHeld();
    if (!batch.Claim(StoreItem(key))) return Decision::Wait();
    if (absl::Status s = CheckServing(); !s.ok()) return Rejected(s);
    if (absl::Status s = CheckAnyMember(caller, generation); !s.ok()) return Rejected(s);
    absl::StatusOr<int64_t> sum = gen_->kv.Sum(key, delta);
    if (!sum.ok()) return Rejected(sum.status());
    return DecideStorePut(batch, key, std::to_string(*sum),
                          [on_done, sum = *sum](Completions& c) { c.Answer<int64_t>(on_done, sum); });
  });
}

void Job::StoreCompareSet(const Caller& caller, uint64_t generation, std::string key, std::string expected,
                          std::string desired, Done<std::string> on_done) {
  Mutate(on_done, [this, caller, generation, key = std::move(key), expected = std::move(expected),
                   desired = std::move(desired), on_done](Batch& batch) -> Decision {
    mu_.AssertHeld();
    if (!batch.Claim(StoreItem(key))) return Decision::Wait();
    if (absl::Status s = CheckServing(); !s.ok()) return Rejected(s);
    if (absl::Status s = CheckAnyMember(caller, generation); !s.ok()) return Rejected(s);
    // c10d compareSet: a missing key is set only when `expected` is empty, a present one only when it holds
    // `expected`; the answer is the value afterwards (`expected` for a key that stays missing).
    const std::string* current = gen_->kv.Find(key);
    const bool swap = current ? *current == expected : expected.empty();
    if (!swap) {
      return Decision::Apply([on_done, value = current ? *current : expected](Completions& c) {
        c.Answer<std::string>(on_done, value);
      });
    }
    return DecideStorePut(batch, key, desired,
                          [on_done, desired](Completions& c) { c.Answer<std::string>(on_done, desired); });
  });
}

Job::Decision Job::DecideStorePut(Batch& batch, const std::string& key, std::string value,
                                  std::function<void(Completions&)> answer) {
  const int64_t delta = gen_->kv.PutDelta(key, value.size());
  if (absl::Status s = context_->store_quota->CheckFits(batch.store_bytes + delta); !s.ok()) return Rejected(s);
  batch.store_bytes += delta;
  batch.writes.push_back(job_storage::PutStoreValue(id_, key, value));
  return Decision::Apply([this, key, value = std::move(value), answer = std::move(answer)](Completions& c) {
    mu_.AssertHeld();
    gen_->kv.Put(key, value);
    WakeKey(key, c);
    answer(c);
  });
}

void Job::StoreDelete(const Caller& caller, uint64_t generation, std::string key, Done<bool> on_done) {
  Mutate(on_done, [this, caller, generation, key = std::move(key), on_done](Batch& batch) -> Decision {
    mu_.AssertHeld();
    if (!batch.Claim(StoreItem(key))) return Decision::Wait();
    if (absl::Status s = CheckServing(); !s.ok()) return Rejected(s);
    if (absl::Status s = CheckAnyMember(caller, generation); !s.ok()) return Rejected(s);
    if (!gen_->kv.Contains(key)) {
      return Decision::Apply([on_done](Completions& c) { c.Answer<bool>(on_done, false); });
    }
    batch.writes.push_back(job_storage::DeleteStoreValue(id_, key));
    return Decision::Apply([this, key, on_done](Completions& c) {
      mu_.AssertHeld();
      gen_->kv.Erase(key);
      c.Answer<bool>(on_done, true);
    });
  });
}

absl::StatusOr<bool> Job::StoreCheck(const Caller& caller, uint64_t generation, const std::vector<std::string>& keys) {
  MutexLock lock(&mu_);
  absl::Status status = CheckServing();
  if (status.ok()) status = CheckAnyMember(caller, generation);
  if (!status.ok()) return WithContext(status);
  return gen_->kv.ContainsAll(keys);
}

absl::StatusOr<int64_t> Job::StoreNumKeys(const Caller& caller, uint64_t generation) {
  MutexLock lock(&mu_);
  absl::Status status = CheckServing();
  if (status.ok()) status = CheckAnyMember(caller, generation);
  if (!status.ok()) return WithContext(status);
  return static_cast<int64_t>(gen_->kv.size());
}

uint64_t Job::StoreGet(const Caller& caller, uint64_t generation, std::string key, Millis wait,
                       Done<std::string> on_done) {
  const uint64_t call = next_call_.fetch_add(1);
  Completions done;
  MutexLock lock(&mu_);
  absl::Status status = CheckServing();
  if (status.ok()) status = CheckAnyMember(caller, generation);
  if (status.ok()) {
    if (const std::string* value = gen_->kv.Find(key)) {
      done.Answer<std::string>(on_done, *value);
      return call;
    }
    status = CheckPark();
  }
  if (!status.ok()) {
    done.Answer<std::string>(on_done, WithContext(status));
    return call;
  }
  gen_->kv.watchers().Watch(call, key);
  Park(call, StoreGetCall{std::move(key), std::move(on_done)}, wait, done);
  return call;
}

uint64_t Job::StoreWait(const Caller& caller, uint64_t generation, std::vector<std::string> keys, Millis wait,
                        StatusDone on_done) {
  const uint64_t call = next_call_.fetch_add(1);
  Completions done;
  MutexLock lock(&mu_);
  absl::Status status = CheckServing();
  if (status.ok()) status = CheckAnyMember(caller, generation);
  if (status.ok()) {
    if (gen_->kv.ContainsAll(keys)) {
      done.Answer(on_done, absl::OkStatus());
      return call;
    }
    status = CheckPark();
  }
  if (!status.ok()) {
    done.Answer(on_done, WithContext(status));
    return call;
  }
  for (const std::string& key : keys) {
    if (!gen_->kv.Contains(key)) gen_->kv.watchers().Watch(call, key);
  }
  Park(call, StoreWaitCall{std::move(keys), std::move(on_done)}, wait, done);
  return call;
}

// --- barriers, heartbeats, leaving ----------------------------------------------------------------------

uint64_t Job::Barrier(const Caller& caller, uint64_t generation, int rank, std::string name, uint64_t round,
                      Millis wait, StatusDone on_done) {
  const uint64_t call = next_call_.fetch_add(1);
  Mutate(on_done, [this, caller, generation, rank, name = std::move(name), round, wait, call,
                   on_done](Batch& batch) -> Decision {
    mu_.AssertHeld();
    if (!batch.Claim(BarrierItem(name))) return Decision::Wait();
    if (absl::Status s = CheckServing(); !s.ok()) return Rejected(s);
    if (absl::Status s = CheckMember(caller, generation, rank); !s.ok()) return Rejected(s);
    const BarrierSet& barriers = gen_->barriers;
    const uint64_t completed = barriers.completed(name);
    if (round != 0 && round <= completed) {  // a retry whose answer was lost: that round is past
      return Decision::Apply([on_done](Completions& c) { c.Answer(on_done, absl::OkStatus()); });
    }
    if (round > completed + 1) {
      return Rejected(absl::FailedPreconditionError(absl::StrCat(
          "rank ", rank, " asks for round ", round, " of barrier \"", name, "\", which has completed ", completed,
          " round(s); the next is ", completed + 1)));
    }
    if (absl::Status s = gen_->barriers.CheckRoom(name); !s.ok()) return Rejected(s);
    const bool arrived_before = barriers.CallOf(name, rank) != 0;
    const bool last = barriers.arrived(name) + (arrived_before ? 0 : 1) == header_.world_size;
    if (!last) {
      if (absl::Status s = CheckPark(); !s.ok()) return Rejected(s);
      return Decision::Apply([this, name, rank, call, wait, on_done](Completions& c) {
        mu_.AssertHeld();
        if (gen_->barriers.arrived(name) == 0) BeginPhase("barrier:" + name);
        const uint64_t replaced = gen_->barriers.Arrive(name, header_.world_size, rank, call);
        if (std::optional<Parked> old = parked_.Take(replaced)) {
          FailParkedCall(old->call,
                         WithJobContext(id_, absl::CancelledError("replaced by a newer Barrier call from the same rank")), c);
        }
        Park(call, BarrierCall{rank, name, on_done}, wait, c);
      });
    }
    batch.writes.push_back(job_storage::PutBarrierRounds(id_, name, completed + 1));
    return Decision::Apply([this, name, rank, on_done](Completions& c) {
      mu_.AssertHeld();
      if (gen_->barriers.arrived(name) == 0) BeginPhase("barrier:" + name);
      const uint64_t replaced = gen_->barriers.Arrive(name, header_.world_size, rank, 0);
      if (std::optional<Parked> old = parked_.Take(replaced)) {
        FailParkedCall(old->call,
                       WithJobContext(id_, absl::CancelledError("replaced by a newer Barrier call from the same rank")), c);
      }
      for (uint64_t call : gen_->barriers.Complete(name)) {
        if (std::optional<Parked> p = parked_.Take(call)) c.Answer(std::move(std::get<BarrierCall>(p->call).done), absl::OkStatus());
      }
      EndPhase("barrier:" + name);
      c.Answer(on_done, absl::OkStatus());
    });
  });
  return call;
}

absl::StatusOr<Millis> Job::Heartbeat(const Caller& caller, uint64_t generation, int rank,
                                      const TrainingProgress* progress) {
  MutexLock lock(&mu_);
  absl::Status status = CheckServing();
  if (status.ok()) status = CheckMember(caller, generation, rank);
  if (!status.ok()) return WithContext(status);
  gen_->leases.Renew(rank, Clock::now());
  if (progress) {
    if (absl::Status s = CheckTrainingProgress(*progress); !s.ok()) return WithJobContext(id_, s);
    progress_.Add(*progress);
  }
  return options_.lease;
}

absl::StatusOr<Millis> Job::OpenSession(const Caller& caller, uint64_t generation, int rank, uint64_t session,
                                        SessionEnd on_end) {
  MutexLock lock(&mu_);
  absl::Status status = CheckServing();
  if (status.ok()) status = CheckMember(caller, generation, rank);
  if (!status.ok()) return WithContext(status);
  gen_->leases.Renew(rank, Clock::now());
  gen_->sessions[rank] = {session, std::move(on_end)};
  return options_.lease;
}

void Job::CloseSession(uint64_t generation, int rank, uint64_t session) {
  EnqueueInternal([this, generation, rank, session](Batch& batch) -> Decision {
    mu_.AssertHeld();
    if (!batch.ClaimJob()) return Decision::Wait();
    const bool current = header_.generation == generation && gen_->sessions.count(rank) > 0 &&
                         gen_->sessions.at(rank).id == session;
    auto forget = [this, current, rank](Completions&) {
      mu_.AssertHeld();
      if (current) gen_->sessions.erase(rank);
    };
    if (!current || stopping_ || header_.phase != JobPhase::kRunning || gen_->leases.finished(rank)) {
      return Decision::Apply(forget);
    }
    const Member& m = gen_->members[rank];
    JobHeader next = NextHeader();
    next.phase = JobPhase::kFailed;
    next.end_reason = absl::StrCat("rank ", rank, " (host ", m.host, ", worker ", m.worker_id,
                                   ") is gone: its session closed before it finished (the process died or lost "
                                   "its connection)");
    next.end_cause = EndCause::kWorkerGone;
    next.end_rank = rank;
    WriteHeader(batch, next);
    return Decision::Apply([this, next, forget](Completions& c) {
      mu_.AssertHeld();
      forget(c);
      EndGeneration(next, c);
    });
  });
}

void Job::Leave(const Caller& caller, uint64_t generation, int rank, bool finished, std::string reason,
                StatusDone on_done, bool fatal) {
  Mutate(on_done, [this, caller, generation, rank, finished, reason = std::move(reason), on_done,
                   fatal](Batch& batch) -> Decision {
    mu_.AssertHeld();
    // Finishing touches only the member, unless it is the last one (which completes the generation in the
    // same write); leaving early ends the generation.
    const bool last = finished && header_.phase == JobPhase::kRunning && CheckRank(rank).ok() &&
                      gen_->leases.unfinished() == 1 && !gen_->leases.finished(rank);
    if (!(finished && !last ? batch.Claim(MemberItem(rank)) : batch.ClaimJob())) return Decision::Wait();
    if (absl::Status s = CheckServing(); !s.ok()) return Rejected(s);
    if (absl::Status s = CheckMember(caller, generation, rank, /*allow_completed=*/finished); !s.ok()) {
      return Rejected(s);
    }
    const Member& m = gen_->members[rank];
    if (finished) {
      if (gen_->leases.finished(rank)) {  // a retry
        return Decision::Apply([on_done](Completions& c) { c.Answer(on_done, absl::OkStatus()); });
      }
      batch.writes.push_back(job_storage::PutFinished(id_, rank));
      std::optional<JobHeader> completed;
      if (last) {
        completed = NextHeader();
        completed->phase = JobPhase::kCompleted;
        WriteHeader(batch, *completed);
      }
      return Decision::Apply([this, rank, completed, on_done](Completions& c) {
        mu_.AssertHeld();
        gen_->leases.Finish(rank);
        if (completed) Complete(*completed);
        else MaybeComplete();  // the last ones finished together, in one batch
        c.Answer(on_done, absl::OkStatus());
      });
    }
    JobHeader next = NextHeader();
    next.phase = JobPhase::kFailed;
    next.end_reason = absl::StrCat("rank ", rank, " (host ", m.host, ", worker ", m.worker_id, ") left",
                                   reason.empty() ? "" : ": ", reason);
    next.end_fatal = fatal;
    next.end_cause = EndCause::kWorkerLeft;
    next.end_rank = rank;
    WriteHeader(batch, next);
    return Decision::Apply([this, next, on_done](Completions& c) {
      mu_.AssertHeld();
      EndGeneration(next, c);
      c.Answer(on_done, absl::OkStatus());
    });
  });
}

// --- deleting and expiring ------------------------------------------------------------------------------

void Job::Forget(Completions& done) {
  const absl::Status deleted = WithJobContext(id_, absl::AbortedError("the job was deleted"));
  FailAllParked(deleted, done);
  EndSessions(deleted, done);
  if (gen_->lease_timer) context_->timers->Cancel(gen_->lease_timer);
  gen_ = std::make_unique<Generation>(*context_, Mesh());  // releases the store's bytes
  header_ = JobHeader();
  history_.clear();
  progress_ = ProgressHistory();
  merged_config_.clear();
  corrupt_ = absl::OkStatus();
  born_ = false;
  LogEvent("deleted", "deleted");
  gone_.store(true, std::memory_order_release);
  if (!stopping_ && context_->on_gone) done.Add([self = shared_from_this(), on_gone = context_->on_gone] { on_gone(self); });
}

void Job::Delete(const Caller& caller, bool force, StatusDone on_done) {
  Mutate(on_done, [this, caller, force, on_done](Batch& batch) -> Decision {
    mu_.AssertHeld();
    if (!batch.ClaimJob()) return Decision::Wait();
    if (stopping_) return Rejected(absl::UnavailableError("the coordinator is shutting down; retry"));
    if (gone() || !born_) return Rejected(absl::NotFoundError("the job does not exist"));
    if (absl::Status s = CheckCaller(caller); !s.ok()) return Rejected(s);
    if (!force && HasWorkers()) {
      return Rejected(absl::FailedPreconditionError(absl::StrCat(
          "generation ", header_.generation, " is ", JobPhaseName(header_.phase), " with ", gen_->members.size(),
          " worker(s); stop them first, or delete with force (tpctl delete --force) to end it")));
    }
    job_storage::DeleteJob(id_, &batch.writes);
    return Decision::Apply([this, on_done](Completions& c) {
      mu_.AssertHeld();
      Forget(c);
      c.Answer(on_done, absl::OkStatus());
    });
  });
}

void Job::ExpireIfIdleSince(int64_t cutoff_unix_ms, Done<bool> on_done) {
  Mutate(on_done, [this, cutoff_unix_ms, on_done](Batch& batch) -> Decision {
    mu_.AssertHeld();
    if (!batch.ClaimJob()) return Decision::Wait();
    const bool idle = !stopping_ && !gone() && born_ && corrupt_.ok() && !HasWorkers() && parked_.size() == 0 &&
                      header_.updated_unix_ms < cutoff_unix_ms;
    if (!idle) return Decision::Apply([on_done](Completions& c) { c.Answer<bool>(on_done, false); });
    job_storage::DeleteJob(id_, &batch.writes);
    return Decision::Apply([this, on_done](Completions& c) {
      mu_.AssertHeld();
      LogEvent("expired", "expired: inactive for longer than --job-ttl");
      Forget(c);
      c.Answer<bool>(on_done, true);
    });
  });
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

std::string Job::DescribeRank(int rank) const {
  if (rank < 0 || rank >= static_cast<int>(gen_->members.size())) return absl::StrCat("rank ", rank);
  return absl::StrCat("rank ", rank, " (host ", gen_->members[rank].host, ")");
}

Shortlist Job::MissingForJoin() const {
  const Generation& g = *gen_;
  std::vector<bool> requested(header_.world_size, false);
  int unrequested = 0;
  for (const Member& m : g.members) {
    if (m.requested_rank) requested[*m.requested_rank] = true;
    else ++unrequested;
  }
  Shortlist missing;
  if (unrequested == 0) {  // every worker asked for its rank: the free ranks are exactly who is missing
    for (int r = 0; r < header_.world_size; ++r) {
      if (!requested[r]) missing.Add([r] { return absl::StrCat("rank ", r); });
    }
    return missing;
  }
  for (const PreviousMember& p : previous_members_) {
    if (!g.by_worker.count(p.worker_id)) {
      missing.Add([&] {
        mu_.AssertHeld();
        return absl::StrCat("rank ", p.rank, " of generation ", header_.generation - 1, " (host ", p.host, ")");
      });
    }
  }
  if (missing.empty()) {
    missing.Add([&] {
      mu_.AssertHeld();
      return absl::StrCat(header_.world_size - static_cast<int>(g.members.size()), " worker(s)");
    });
  }
  return missing;
}

Shortlist Job::MissingFor(const ParkedCall& parked) const {
  const Generation& g = *gen_;
  Shortlist missing;
  std::visit(
      [&](const auto& p) {
        mu_.AssertHeld();
        using T = std::decay_t<decltype(p)>;
        if constexpr (std::is_same_v<T, JoinCall>) {
          missing = MissingForJoin();
        } else if constexpr (std::is_same_v<T, UniqueIdsCall>) {
          for (const GroupId& group : p.groups) {
            const bool one_root = g.mesh.UniqueIdRoots(group) == 1;
            for (const UniqueIdSlot& slot : g.ids.Missing(g.mesh, group)) {
              missing.Add([&, slot] {
                mu_.AssertHeld();
                return absl::StrCat("the unique id of ", SlotName(slot), one_root ? " from its leader " : " from ",
                                    DescribeRank(g.mesh.RootRank(slot)));
              });
            }
          }
        } else if constexpr (std::is_same_v<T, StoreGetCall>) {
          missing.Add([&] { return QuoteForError(p.key); });
        } else if constexpr (std::is_same_v<T, StoreWaitCall>) {
          for (const std::string& key : p.keys) {
            if (!g.kv.Contains(key)) missing.Add([&] { return QuoteForError(key); });
          }
        } else {
          for (int r : g.barriers.Missing(p.name, header_.world_size)) {
            missing.Add([&] {
              mu_.AssertHeld();
              return DescribeRank(r);
            });
          }
        }
      },
      parked);
  return missing;
}

std::vector<CurvePoint> Job::Curve() const {
  MutexLock lock(&mu_);
  return progress_.curve();
}

std::optional<JobView> Job::View(bool with_details) const {
  MutexLock lock(&mu_);
  if (!born_ || gone()) return std::nullopt;
  const Generation& g = *gen_;
  JobView view;
  view.job_id = id_;
  view.tp_init = header_.tp_init;
  view.merged_config = merged_config_;
  view.generation = header_.generation;
  view.phase = header_.phase;
  view.world_size = header_.world_size;
  view.end_reason = header_.end_reason;
  view.member_count = static_cast<int>(g.members.size());
  view.parked_calls = parked_.size();
  view.progress = progress_.latest();
  view.eval_loss = progress_.eval_loss();
  for (const auto& t : g.timings) {
    view.timings.push_back(
        {t.phase, t.start_unix_ms, t.end ? std::chrono::duration_cast<Millis>(*t.end - t.start).count() : -1});
  }
  // What the job waits for, per awaited event rather than per parked call: ten thousand calls parked in one
  // barrier are one line, and the view costs O(world size), not O(world size squared).
  if (header_.phase == JobPhase::kJoining) view.missing.push_back("join: " + MissingForJoin().ToString());
  for (const std::string& name : g.barriers.Open()) {
    Shortlist ranks;
    for (int r : g.barriers.Missing(name, header_.world_size)) {
      ranks.Add([&] {
        mu_.AssertHeld();
        return DescribeRank(r);
      });
    }
    view.missing.push_back(absl::StrCat("barrier \"", name, "\": ", ranks.ToString()));
  }
  for (const GroupId& group : g.ids.watchers().Keys()) {
    view.missing.push_back(absl::StrCat("the unique id of ", GroupName(group), " from its leader ",
                                        DescribeRank(g.mesh.Leader(group))));
  }
  Shortlist keys;
  for (const std::string& key : g.kv.watchers().Keys()) keys.Add([&] { return QuoteForError(key); });
  if (!keys.empty()) view.missing.push_back("store keys " + keys.ToString());
  const Clock::time_point now = Clock::now();
  const bool live = g.leases.started() && header_.phase == JobPhase::kRunning;
  if (live) {
    for (int rank = 0; rank < header_.world_size; ++rank) {
      if (g.leases.finished(rank) || g.leases.AgeMs(rank, now) <= options_.lease.count()) ++view.healthy_members;
    }
  }
  if (!with_details) return view;
  view.history.assign(history_.begin(), history_.end());
  for (size_t i = 0; i < g.members.size() && view.members.size() < static_cast<size_t>(kMaxMembersInView); ++i) {
    const Member& m = g.members[i];
    const bool finished = m.rank >= 0 && g.leases.started() && g.leases.finished(m.rank);
    view.members.push_back({m.rank, m.host, m.worker_id, finished, live && m.rank >= 0 ? g.leases.AgeMs(m.rank, now) : -1});
  }
  std::sort(view.members.begin(), view.members.end(), [](const MemberView& a, const MemberView& b) {
    return a.rank != b.rank ? a.rank < b.rank : a.worker_id < b.worker_id;
  });
  return view;
}

}  // namespace tpcoord
