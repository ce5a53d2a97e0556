#include "coordinator/rpc/request_checks.h"

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "common/deepspeed_error.h"
#include "common/dtype.h"
#include "common/identifiers.h"
#include "common/limits.h"
#include "common/secrets.h"
#include "common/wire.h"

namespace tpcoord {
namespace {

// Runs `checks` in order until one fails; the failure names the job (once its id is known to be valid).
absl::Status InJob(const std::string& job_id, std::initializer_list<std::function<absl::Status()>> checks) {
  if (absl::Status s = ValidateJobId(job_id); !s.ok()) return s;
  for (const auto& check : checks) {
    if (absl::Status s = check(); !s.ok()) return WithJobContext(job_id, s);
  }
  return absl::OkStatus();
}

absl::Status CheckCount(absl::string_view field, int count, int max) {
  if (count < 1 || count > max) {
    return absl::InvalidArgumentError(absl::StrCat(field, " has ", count, " entries; give 1 to ", max));
  }
  return absl::OkStatus();
}

// A call acting within a generation: the generation Join answered, and a rank of it.
absl::Status CheckMember(uint64_t generation, int rank) {
  if (generation == 0) {
    return absl::InvalidArgumentError("generation 0 is not a generation; give the one Join answered");
  }
  if (rank < 0 || rank >= kMaxWorldSize) {
    return absl::InvalidArgumentError(
        absl::StrCat("rank ", rank, " is out of range; ranks are in [0, ", kMaxWorldSize, ")"));
  }
  return absl::OkStatus();
}

absl::Status CheckGeneration(uint64_t generation) { return CheckMember(generation, 0); }

absl::Status CheckValue(absl::string_view field, absl::string_view key, size_t size) {
  if (size > kMaxStoreValueBytes) {
    return absl::InvalidArgumentError(absl::StrCat(field, " for key ", QuoteForError(key), " is ", size,
                                                   " bytes; the limit is ", kMaxStoreValueBytes));
  }
  return absl::OkStatus();
}

template <typename Keys>
absl::Status CheckKeys(const Keys& keys) {
  if (absl::Status s = CheckCount("keys", keys.size(), kMaxKeysPerCall); !s.ok()) return s;
  for (const std::string& key : keys) {
    if (absl::Status s = ValidateStoreKey(key); !s.ok()) return s;
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<TpInitArgs> CheckRequest(const v1::RecordTpInitArgsRequest& req) {
  absl::StatusOr<TpInitArgs> args = absl::InternalError("unchecked");
  absl::Status status =
      InJob(req.job_id(), {[&] {
              absl::StatusOr<Dtype> dtype = DtypeFromProto(req.dtype());
              if (!dtype.ok()) return dtype.status();
              std::optional<std::vector<int>> group;
              if (req.has_tp_group()) {
                if (absl::Status s = CheckCount("tp_group.ranks", req.tp_group().ranks_size(), kMaxTpSize); !s.ok()) {
                  return s;
                }
                group.emplace(req.tp_group().ranks().begin(), req.tp_group().ranks().end());
              }
              args = NormalizeTpInitArgs(req.tp_size(), *dtype, std::move(group));
              return args.status();
            }});
  if (!status.ok()) return status;
  return args;
}

absl::Status CheckRequest(const v1::MergeConfigRequest& req) {
  return InJob(
      req.job_id(), {[&] {
        if (req.config_json().size() > kMaxConfigBytes) {
          return absl::InvalidArgumentError(absl::StrCat("config_json is ", req.config_json().size(),
                                                         " bytes; the limit is ", kMaxConfigBytes, " bytes (1 MiB)"));
        }
        return req.generation() == 0 ? absl::OkStatus() : CheckMember(req.generation(), req.rank());
      }});
}

absl::StatusOr<JoinArgs> CheckRequest(const v1::JoinRequest& req) {
  absl::Status status =
      InJob(req.job_id(),
            {[&] { return ValidateWorkerId(req.worker_id()); }, [&] { return ValidateHost(req.host()); },
             [&] {
               if (req.world_size() < 1 || req.world_size() > kMaxWorldSize) {
                 return absl::InvalidArgumentError(absl::StrCat(
                     "world_size ", req.world_size(), " is out of range; it must be between 1 and ", kMaxWorldSize));
               }
               if (req.tp_size() < 0 || req.tp_size() > kMaxTpSize) {
                 return absl::InvalidArgumentError(absl::StrCat(
                     "tp_size ", req.tp_size(), " is out of range; give 0 (the recorded tp_size) to ", kMaxTpSize));
               }
               if (req.min_world_size() < 0 || req.min_world_size() > req.world_size()) {
                 return absl::InvalidArgumentError(absl::StrCat(
                     "min_world_size ", req.min_world_size(), " is out of range; it must be between 1 and world_size ",
                     req.world_size(), " (0: world_size)"));
               }
               if (req.rejoin_timeout_ms() > kMaxWaitMs) {
                 return absl::InvalidArgumentError(absl::StrCat("rejoin_timeout_ms ", req.rejoin_timeout_ms(),
                                                                " is out of range; at most ", kMaxWaitMs));
               }
               return absl::OkStatus();
             }});
  if (!status.ok()) return status;
  JoinArgs args{req.worker_id(), req.host(), req.world_size(), std::nullopt, req.tp_size()};
  if (req.has_requested_rank()) args.requested_rank = req.requested_rank();
  args.min_world_size = req.min_world_size() == 0 ? req.world_size() : req.min_world_size();
  args.rejoin_timeout = Millis(req.rejoin_timeout_ms());
  return args;
}

absl::StatusOr<UniqueIds> CheckRequest(const v1::PublishUniqueIdRequest& req) {
  UniqueIds ids;
  absl::Status status =
      InJob(req.job_id(), {[&] { return CheckMember(req.generation(), req.rank()); },
                           [&] { return CheckCount("ids", req.ids_size(), kMaxGroupsPerCall); },
                           [&] {
                             for (int i = 0; i < req.ids_size(); ++i) {
                               absl::StatusOr<GroupId> group =
                                   GroupIdFromProto(req.ids(i).group(), absl::StrCat("ids[", i, "].group"));
                               if (!group.ok()) return group.status();
                               if (req.ids(i).id().size() != kUniqueIdBytes) {
                                 return absl::InvalidArgumentError(absl::StrCat(
                                     "ids[", i, "].id for ", GroupName(*group), " is ", req.ids(i).id().size(),
                                     " bytes; a NCCL unique id is exactly ", kUniqueIdBytes, " bytes"));
                               }
                               ids.push_back({{*group, req.ids(i).root()}, req.ids(i).id()});
                             }
                             return absl::OkStatus();
                           }});
  if (!status.ok()) return status;
  return ids;
}

absl::StatusOr<std::vector<GroupId>> CheckRequest(const v1::GetUniqueIdRequest& req) {
  std::vector<GroupId> groups;
  absl::Status status = InJob(req.job_id(), {[&] { return CheckMember(req.generation(), req.rank()); },
                                             [&] { return CheckCount("groups", req.groups_size(), kMaxGroupsPerCall); },
                                             [&] {
                                               for (int i = 0; i < req.groups_size(); ++i) {
                                                 absl::StatusOr<GroupId> group =
                                                     GroupIdFromProto(req.groups(i), absl::StrCat("groups[", i, "]"));
                                                 if (!group.ok()) return group.status();
                                                 groups.push_back(*group);
                                               }
                                               return absl::OkStatus();
                                             }});
  if (!status.ok()) return status;
  return groups;
}

absl::Status CheckRequest(const v1::StoreSetRequest& req) {
  return InJob(req.job_id(),
               {[&] { return CheckGeneration(req.generation()); }, [&] { return ValidateStoreKey(req.key()); },
                [&] { return CheckValue("value", req.key(), req.value().size()); }});
}

absl::Status CheckRequest(const v1::StoreGetRequest& req) {
  return InJob(req.job_id(),
               {[&] { return CheckGeneration(req.generation()); }, [&] { return ValidateStoreKey(req.key()); }});
}

absl::Status CheckRequest(const v1::StoreAddRequest& req) {
  return InJob(req.job_id(),
               {[&] { return CheckGeneration(req.generation()); }, [&] { return ValidateStoreKey(req.key()); }});
}

absl::Status CheckRequest(const v1::StoreCompareSetRequest& req) {
  return InJob(req.job_id(),
               {[&] { return CheckGeneration(req.generation()); }, [&] { return ValidateStoreKey(req.key()); },
                [&] { return CheckValue("expected_value", req.key(), req.expected_value().size()); },
                [&] { return CheckValue("desired_value", req.key(), req.desired_value().size()); }});
}

absl::Status CheckRequest(const v1::StoreCheckRequest& req) {
  return InJob(req.job_id(),
               {[&] { return CheckGeneration(req.generation()); }, [&] { return CheckKeys(req.keys()); }});
}

absl::Status CheckRequest(const v1::StoreDeleteRequest& req) {
  return InJob(req.job_id(),
               {[&] { return CheckGeneration(req.generation()); }, [&] { return ValidateStoreKey(req.key()); }});
}

absl::Status CheckRequest(const v1::StoreNumKeysRequest& req) {
  return InJob(req.job_id(), {[&] { return CheckGeneration(req.generation()); }});
}

absl::Status CheckRequest(const v1::StoreWaitRequest& req) {
  return InJob(req.job_id(),
               {[&] { return CheckGeneration(req.generation()); }, [&] { return CheckKeys(req.keys()); }});
}

absl::Status CheckRequest(const v1::BarrierRequest& req) {
  return InJob(req.job_id(), {[&] { return CheckMember(req.generation(), req.rank()); },
                              [&] { return ValidateBarrierName(req.name()); }});
}

absl::Status CheckRequest(const v1::HeartbeatRequest& req) {
  return InJob(req.job_id(), {[&] { return CheckMember(req.generation(), req.rank()); }});
}

absl::Status CheckRequest(const v1::LeaveRequest& req) {
  return InJob(req.job_id(), {[&] { return CheckMember(req.generation(), req.rank()); },
                              [&] {
                                if (req.reason().size() > kMaxReasonBytes) {
                                  return absl::InvalidArgumentError(absl::StrCat(
                                      "reason is ", req.reason().size(), " bytes; the limit is ", kMaxReasonBytes));
                                }
                                return absl::OkStatus();
                              }});
}

absl::StatusOr<int> CheckRequest(const v1::ListJobsRequest& req) {
  if (req.page_size() < 0 || req.page_size() > kMaxListPageSize) {
    return absl::InvalidArgumentError(absl::StrCat("page_size ", req.page_size(), " is out of range; give 0 (",
                                                   kDefaultListPageSize, ") to ", kMaxListPageSize));
  }
  if (!req.page_token().empty()) {
    if (absl::Status s = ValidateJobId(req.page_token()); !s.ok()) {
      return absl::InvalidArgumentError(
          absl::StrCat("page_token ", QuoteForError(req.page_token()), " is not a next_page_token ListJobs gave"));
    }
  }
  return req.page_size() == 0 ? kDefaultListPageSize : req.page_size();
}

absl::Status CheckRequest(const v1::GetJobRequest& req) { return ValidateJobId(req.job_id()); }

absl::Status CheckRequest(const v1::DeleteJobRequest& req) { return ValidateJobId(req.job_id()); }

absl::StatusOr<std::string> CheckRequest(const v1::CreateJobRequest& req) {
  const std::string& token = req.job_token();
  if (absl::Status s =
          InJob(req.job_id(), {[&] { return token.empty() ? absl::OkStatus() : CheckSecret("job_token", token); }});
      !s.ok()) {
    return s;
  }
  return token.empty() ? std::string() : Sha256(token);
}

absl::Status CheckRequest(const v1::CloseJobRequest& req) {
  return InJob(req.job_id(), {[&] { return ValidatePrintableText("reason", req.reason(), kMaxReasonBytes); }});
}

}  // namespace tpcoord
