// Creating a job, tp_model_init's record (spec §1.2), and the config merge (spec §1.4) with the agreement of
// every member of a generation on one config (G27).
#include "coordinator/job/job.h"

#include <algorithm>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "common/config_merge.h"
#include "common/deepspeed_error.h"
#include "common/ds_config.h"
#include "coordinator/job/job_internal.h"

namespace tpcoord {

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
  {
    // A record that matches the one stored (every worker of a job records the same) changes nothing: it is
    // answered from what is applied, without a place in the commit queue.
    Completions done;
    MutexLock lock(&mu_);
    if (born_ && header_.tp_init.has_value() && CheckServing().ok() && CheckCreator(caller).ok()) {
      absl::StatusOr<TpInitRecord> updated = RecordTpInitArgs(header_.tp_init, args);
      if (updated.ok() && updated->tp_groups.size() == header_.tp_init->tp_groups.size()) {
        done.Answer<RecordOutcome>(on_done, RecordOutcome{*std::move(updated), false});
        return;
      }
    }
  }
  Mutate(on_done, [this, caller, args, on_done](Batch& batch) -> Decision {
    mu_.AssertHeld();
    if (!batch.ClaimJob()) return Decision::Wait();
    if (absl::Status s = CheckServing(); !s.ok()) return Rejected(s);
    if (absl::Status s = CheckCreator(caller); !s.ok()) return Rejected(s);
    absl::StatusOr<TpInitRecord> updated = RecordTpInitArgs(header_.tp_init, args);
    if (!updated.ok()) {
      return Decision::Reject(
          WithJobContext(id_, updated.status(),
                         absl::StrCat("recorded ", DescribeTpInitArgs(ArgsForMerge(*header_.tp_init, nullptr)),
                                      "; this call ", DescribeTpInitArgs(args))));
    }
    const bool created = !header_.tp_init.has_value();
    // The first record in a job whose generation joined without one (config-only AutoTP) must agree with
    // the TP size that generation runs with: a record is the job's for good, and every later Join follows it.
    if (created && (header_.phase == JobPhase::kJoining || header_.phase == JobPhase::kRunning) &&
        args.tp_size != header_.tp_size) {
      return Rejected(absl::FailedPreconditionError(absl::StrCat(
          "tp_model_init records tp_size ", args.tp_size, ", but generation ", header_.generation, " is ",
          JobPhaseName(header_.phase), " with tp_size ", header_.tp_size,
          ", joined without a record (config-only AutoTP: the config's tensor_parallel.autotp_size); record tp_size ",
          header_.tp_size, ", or none")));
    }
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
  Mutate(on_done,
         [this, caller, text = std::move(config_text), has_mpu, generation, rank, on_done](Batch& batch) -> Decision {
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
           // Config-only AutoTP: the config's autotp_size must be the TP size the generation joined with.
           if (!recorded) {
             if (absl::Status s = CheckConfigOnlyTpSize(*config, g.mesh.tp_size(), header_.generation); !s.ok()) {
               return Rejected(s);
             }
           }
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
           return Decision::Apply([this, rank, text, config = *std::move(config), merged = *merged, tp_group,
                                   count_member, reply = answer(*merged)](Completions& c) mutable {
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

}  // namespace tpcoord
