// A job's durable state is written under its keys and read back whole; entries that cannot be decoded or
// contradict each other are DATA_LOSS naming the job and the key.
#include "coordinator/store/job_storage.h"

#include <gtest/gtest.h>

namespace tpcoord {
namespace {

std::vector<StateEntry> Entries(const StateWrites& writes) {
  std::map<std::string, std::string> kv;
  for (const StateWrite& w : writes) {
    EXPECT_EQ(w.kind, StateWrite::Kind::kPut);
    kv[w.key] = w.value;
  }
  std::vector<StateEntry> entries;
  for (auto& [k, v] : kv) entries.push_back({k, v});
  return entries;
}

StateWrites Running() {
  JobHeader h;
  h.tp_init = TpInitRecord{2, Dtype::kBFloat16, true, {{0, 1}, {2, 3}}};
  h.generation = 3;
  h.phase = JobPhase::kRunning;
  h.world_size = 4;
  h.tp_size = 2;
  h.created_unix_ms = 1;
  h.updated_unix_ms = 2;
  h.token_sha256 = std::string(32, 't');
  StateWrites w = {job_storage::PutHeader("j1", h), job_storage::PutMergedConfig("j1", "{\"a\":1}"),
                   job_storage::PutReference("j1", {1, "{\"a\": 1}"}), job_storage::PutFinished("j1", 2),
                   job_storage::PutUniqueId("j1", {{GroupKind::kDp, 1}}, std::string(128, 'd')),
                   job_storage::PutStoreValue("j1", "/default_pg/0//cuda//0", std::string("\0\1", 2)),
                   job_storage::PutBarrierRounds("j1", "ready", 5)};
  job_storage::PutMembers("j1", {{"w0", "a"}, {"w1", "a"}, {"w2", "b"}, {"w3", "b"}}, &w);
  return w;
}

TEST(JobStorageTest, ARunningGenerationReadsBackWhole) {
  absl::StatusOr<StoredJob> job = DecodeJob("j1", Entries(Running()));
  ASSERT_TRUE(job.ok()) << job.status();
  EXPECT_EQ(job->header.generation, 3u);
  EXPECT_EQ(job->header.phase, JobPhase::kRunning);
  EXPECT_EQ(job->header.tp_init->tp_groups, (std::vector<RankList>{{0, 1}, {2, 3}}));
  EXPECT_EQ(job->merged_config, "{\"a\":1}");
  EXPECT_EQ(job->reference->rank, 1);
  ASSERT_EQ(job->members.size(), 4u);
  EXPECT_EQ(job->members[2].worker_id, "w2");
  EXPECT_EQ(job->members[2].host, "b");
  EXPECT_EQ(job->finished, std::set<int>({2}));
  EXPECT_EQ(job->unique_ids.at({{GroupKind::kDp, 1}}), std::string(128, 'd'));
  EXPECT_EQ(job->kv.at("/default_pg/0//cuda//0"), std::string("\0\1", 2));
  EXPECT_EQ(job->barrier_rounds.at("ready"), 5u);
}

TEST(JobStorageTest, TheClosedStateReadsBack) {
  JobHeader header;
  header.closed = true;
  header.closed_reason = "torchrun on host h finished";
  header.end_cause = EndCause::kJobClosed;
  absl::StatusOr<StoredJob> job = DecodeJob("j1", Entries({job_storage::PutHeader("j1", header)}));
  ASSERT_TRUE(job.ok()) << job.status();
  EXPECT_TRUE(job->header.closed);
  EXPECT_EQ(job->header.closed_reason, "torchrun on host h finished");
  EXPECT_EQ(job->header.end_cause, EndCause::kJobClosed);
  EXPECT_EQ(EndCauseName(EndCause::kJobClosed), "job_closed");
}

TEST(JobStorageTest, GenerationRecordsReadBackInGenerationOrder) {
  StateWrites w = Running();
  JobHeader h;
  h.generation = 2;
  h.phase = JobPhase::kFailed;
  h.world_size = 4;
  h.tp_size = 2;
  h.end_cause = EndCause::kWorkerGone;
  h.end_rank = 3;
  h.end_reason = "rank 3 is gone";
  h.generation_started_unix_ms = 10;
  h.running_unix_ms = 11;
  h.ended_unix_ms = 12;
  w.push_back(job_storage::PutGenerationRecord("j1", RecordOf(h)));
  h.generation = 10;  // sorts after 2 only because the key pads it
  h.phase = JobPhase::kCompleted;
  w.push_back(job_storage::PutGenerationRecord("j1", RecordOf(h)));
  EXPECT_EQ(w.back().key, "j/j1/history/00000000000000000010");
  absl::StatusOr<StoredJob> job = DecodeJob("j1", Entries(w));
  ASSERT_TRUE(job.ok()) << job.status();
  ASSERT_EQ(job->history.size(), 2u);
  const GenerationRecord& r = job->history[0];
  EXPECT_EQ(r.generation, 2u);
  EXPECT_EQ(r.phase, JobPhase::kFailed);
  EXPECT_EQ(r.end_cause, EndCause::kWorkerGone);
  EXPECT_EQ(r.end_rank, 3);
  EXPECT_EQ(r.end_reason, "rank 3 is gone");
  EXPECT_EQ(r.started_unix_ms, 10);
  EXPECT_EQ(r.running_unix_ms, 11);
  EXPECT_EQ(r.ended_unix_ms, 12);
  EXPECT_EQ(job->history[1].generation, 10u);
  EXPECT_EQ(EndCauseName(EndCause::kLeaseExpired), "lease_expired");
}

TEST(JobStorageTest, MembersOfABigWorldAreChunked) {
  std::vector<StoredMember> members;
  for (int r = 0; r < 3000; ++r) members.push_back({"w" + std::to_string(r), "h"});
  StateWrites w;
  job_storage::PutMembers("j1", members, &w);
  EXPECT_EQ(w.size(), 3u);
  EXPECT_EQ(w[1].key, "j/j1/g/members/00001024");
}

TEST(JobStorageTest, SplitByJobGroupsEntries) {
  std::map<std::string, std::vector<StateEntry>> jobs =
      SplitByJob({{"j/a", ""}, {"j/a/config", ""}, {"j/ab", ""}, {"j/ab/g/done/00000000", ""}});
  ASSERT_EQ(jobs.size(), 2u);
  EXPECT_EQ(jobs["a"].size(), 2u);
  EXPECT_EQ(jobs["ab"].size(), 2u);
}

TEST(JobStorageTest, CorruptEntriesAreDataLossNamingTheKey) {
  auto decode_with = [](const std::string& key, const std::string& value) {
    std::vector<StateEntry> entries = Entries(Running());
    bool replaced = false;
    for (StateEntry& e : entries) {
      if (e.key == key) {
        e.value = value;
        replaced = true;
      }
    }
    if (!replaced) entries.push_back({key, value});
    std::sort(entries.begin(), entries.end(), [](const auto& a, const auto& b) { return a.key < b.key; });
    return DecodeJob("j1", entries).status();
  };
  absl::Status header = decode_with("j/j1", "\xff\xff garbage");
  EXPECT_EQ(header.code(), absl::StatusCode::kDataLoss);
  // What is wrong, naming the job once; what to do about it depends on who asks (Job::MarkCorrupt).
  EXPECT_EQ(header.message(), "job j1: the stored state is corrupt: key \"j/j1\": not a JobHeader message");
  EXPECT_EQ(decode_with("j/j1/g/id/tp/00000009", std::string(128, 'x')).code(), absl::StatusCode::kDataLoss);
  EXPECT_EQ(decode_with("j/j1/g/id/tp/00000000", "short").code(), absl::StatusCode::kDataLoss);
  EXPECT_EQ(decode_with("j/j1/g/done/00000007", "").code(), absl::StatusCode::kDataLoss);
  EXPECT_EQ(decode_with("j/j1/g/what", "").code(), absl::StatusCode::kDataLoss);
  EXPECT_EQ(decode_with("j/j1/history/00000000000000000003", "\xff garbage").code(), absl::StatusCode::kDataLoss);
  EXPECT_EQ(decode_with("j/j1/history/3", "").code(), absl::StatusCode::kDataLoss);
  // A record under another generation's key is not that generation's.
  EXPECT_EQ(decode_with("j/j1/history/00000000000000000003", std::string("\x08\x04\x10\x04", 4)).code(),
            absl::StatusCode::kDataLoss);
  EXPECT_EQ(decode_with("j/j1/g/members/00000000", "\x08\x05").code(), absl::StatusCode::kDataLoss);
  // A running generation without its members cannot go on.
  std::vector<StateEntry> no_members;
  for (const StateEntry& e : Entries(Running())) {
    if (e.key.find("/members/") == std::string::npos) no_members.push_back(e);
  }
  EXPECT_NE(DecodeJob("j1", no_members).status().message().find("missing for a running generation"), std::string::npos);
}

// A job refused for a corrupt entry keeps its token binding while its header can be read.
TEST(JobStorageTest, TheTokenBindingOutlivesCorruptionElsewhere) {
  std::vector<StateEntry> entries = Entries(Running());
  const std::string token(32, 't');  // Running()'s
  entries.push_back({"j/j1/zzz", "junk"});
  EXPECT_EQ(DecodeJob("j1", entries).status().code(), absl::StatusCode::kDataLoss);
  EXPECT_EQ(StoredTokenSha256("j1", entries), token);
  for (StateEntry& e : entries) {
    if (e.key == "j/j1") e.value = "\xff\xfe{bad";
  }
  EXPECT_EQ(StoredTokenSha256("j1", entries), "");
}

}  // namespace
}  // namespace tpcoord
