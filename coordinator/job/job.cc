// Job's lifecycle: the ends of the commit path (commit_queue.h), pins, restore and shutdown, the header and
// its history, deleting and expiring. The other concerns live beside it (job.h lists them).
#include "coordinator/job/job.h"

#include <algorithm>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "common/deepspeed_error.h"
#include "common/ds_config.h"
#include "common/identifiers.h"
#include "coordinator/job/job_internal.h"

namespace tpcoord {

using job_internal::GenerationEnded;
using job_internal::kGonePins;
using job_internal::Over;
using job_internal::UnixMillisNow;

Job::Job(std::string id, const JobContext* context)
    : id_(std::move(id)),
      context_(context),
      options_(context->options),
      gen_(std::make_unique<Generation>(*context, Mesh())),
      parked_(context->timers, context->options.max_parked_calls),
      commits_([this](absl::Status status) {
        mu_.AssertHeld();
        return WithContext(std::move(status));
      }) {}

Job::~Job() { Shutdown(); }

// --- the commit path (commit_queue.h) -------------------------------------------------------------------

void Job::Mutate(StatusDone done, Decide decide) {
  Enqueue(std::move(decide),
          [done = std::move(done)](absl::Status s, Completions& c) { c.Answer(done, std::move(s)); });
}

void Job::Enqueue(Decide decide, CommitQueue::AnswerError answer_error) {
  Completions done;
  MutexLock lock(&mu_);
  commits_.Push(std::move(decide), std::move(answer_error));
  Drain(done);
}

Job::Decision Job::Rejected(absl::Status status) const { return Decision::Reject(WithContext(std::move(status))); }

void Job::Drain(Completions& done) {
  commits_.Drain(done, [this](StateWrites writes) {
    context_->committer->Submit(std::move(writes), absl::StrCat("write of job ", id_),
                                [self = shared_from_this()](absl::Status s) { self->Written(s); });
  });
  MaybeGone(done);
}

void Job::Written(const absl::Status& status) {
  Completions done;
  MutexLock lock(&mu_);
  commits_.Written(status, done);  // the committer answers a job's batches in the order they were submitted
  Drain(done);
}

void Job::MaybeGone(Completions& done) {
  if (born_ || gone() || !commits_.idle() || parked_.size() > 0) return;
  int64_t unpinned = 0;
  if (!pins_.compare_exchange_strong(unpinned, kGonePins)) return;  // pinned: its call will come
  gone_.store(true, std::memory_order_release);
  if (!stopping_ && context_->on_gone)
    done.Add([self = shared_from_this(), on_gone = context_->on_gone] { on_gone(self); });
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
    if (config.ok())
      g.agreement.SetReference(stored.reference->rank, std::move(stored.reference->config_text), *config);
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
          : absl::StrCat(
                "; its token binding is lost with it, so no job token can delete it: stop the coordinator "
                "and run ",
                options_.forget_job_command, " ", id_,
                options_.admin_token
                    ? absl::StrCat(", or delete it with the admin token (tpctl delete ", id_, " --force)")
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
  if (!stopping_ && context_->on_gone)
    done.Add([self = shared_from_this(), on_gone = context_->on_gone] { on_gone(self); });
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

}  // namespace tpcoord
