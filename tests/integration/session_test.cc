// The whole rendezvous on member sessions (coordinator.proto, Session), through a real tp-coordinator: one
// stream per worker carries record, Join, merge, unique IDs, barrier and Leave as calls; the rules of a
// stream (steps in order, one member per stream, steps act as that member, call ids) hold at the wire;
// and a stream that closes while its Join waits leaves no worker behind. Streams are raw gRPC streams, as
// an independent client would open them.
#include <gtest/gtest.h>

#include <map>
#include <set>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/algorithm/container.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "common/limits.h"
#include "tests/support/coordinator_test.h"

namespace tpcoord {
namespace {

using testing::Deadline;

constexpr char kConfig[] = R"({"train_batch_size": 8, "bf16": {"enabled": true}})";

// One worker's stream, with its own member key.
class RawSession {
 public:
  RawSession(v1::Coordinator::Stub* stub, int worker)
      : ctx_(testing::Credentials(testing::kTestToken, absl::StrCat("session-test-member-key-", worker), 60)),
        stream_(stub->Session(ctx_.get())) {}

  bool Send(v1::SessionRequest message) { return stream_->Write(message); }
  // The next event; nullopt once the stream ended (see Finish).
  std::optional<v1::SessionEvent> Next() {
    v1::SessionEvent event;
    if (!stream_->Read(&event)) return std::nullopt;
    return event;
  }
  // Sends call `id` and returns its answer.
  v1::SessionEvent Call(uint64_t id, v1::SessionRequest steps) {
    steps.set_call_id(id);
    EXPECT_TRUE(Send(steps));
    std::optional<v1::SessionEvent> event = Next();
    EXPECT_TRUE(event.has_value()) << "the stream ended: " << Finish().error_message();
    EXPECT_EQ(event.value_or(v1::SessionEvent()).call_id(), id);
    return event.value_or(v1::SessionEvent());
  }
  grpc::Status Finish() {
    if (!finished_) {
      stream_->WritesDone();
      while (stream_->Read(&ignored_)) {
      }
      status_ = stream_->Finish();
      finished_ = true;
    }
    return status_;
  }
  void Cancel() { ctx_->TryCancel(); }

 private:
  std::unique_ptr<grpc::ClientContext> ctx_;
  std::unique_ptr<grpc::ClientReaderWriter<v1::SessionRequest, v1::SessionEvent>> stream_;
  v1::SessionEvent ignored_;
  bool finished_ = false;
  grpc::Status status_;
};

v1::SessionRequest JoinStep(const std::string& job, int worker, int world_size, std::optional<int> rank = {}) {
  v1::SessionRequest steps;
  v1::JoinRequest* join = steps.mutable_join();
  join->set_job_id(job);
  join->set_worker_id(absl::StrCat("worker-", worker));
  join->set_host(absl::StrCat("host-", worker / 2));
  join->set_world_size(world_size);
  if (rank) join->set_requested_rank(*rank);
  join->set_wait_timeout_ms(30000);
  return steps;
}

void ExpectStatus(const v1::SessionEvent& event, grpc::StatusCode code, const std::string& message) {
  EXPECT_EQ(event.status_code(), static_cast<int>(code)) << event.status_message();
  EXPECT_EQ(event.status_message(), message);
}

class SessionTest : public testing::CoordinatorTest {
 protected:
  v1::JobStatus Job(const std::string& job) {
    v1::GetJobRequest req;
    req.set_job_id(job);
    v1::GetJobResponse resp;
    (void)stub_->GetJob(Deadline().get(), req, &resp);  // an empty status while the job does not exist yet
    return resp.job();
  }
};

// Four workers, TP 2: three calls each (record + join + merge, unique IDs, barrier) on one stream per
// worker. Every member of a group holds the same ID bytes; the merged config is the same everywhere; a
// stream that then closes without a Leave ends the generation naming its rank.
TEST_F(SessionTest, TheWholeRendezvousRunsOnOneStreamPerWorker) {
  constexpr int kWorld = 4;
  std::vector<std::unique_ptr<RawSession>> sessions;
  for (int i = 0; i < kWorld; ++i) sessions.push_back(std::make_unique<RawSession>(stub_.get(), i));
  std::vector<v1::SessionEvent> joined(kWorld), ids(kWorld), barrier(kWorld);
  std::vector<std::thread> workers;
  for (int i = 0; i < kWorld; ++i) {
    workers.emplace_back([&, i] {
      RawSession& s = *sessions[i];
      v1::SessionRequest first = JoinStep("run", i, kWorld, i);
      first.mutable_record()->set_job_id("run");
      first.mutable_record()->set_tp_size(2);
      first.mutable_record()->set_dtype(v1::DTYPE_BF16);
      first.mutable_merge_config()->set_config_json(kConfig);
      joined[i] = s.Call(1, first);
      const v1::JoinResponse& me = joined[i].join();
      // Rank r of TP 2: the TP leaders (0, 2) make their TP group's ID, ranks 0 and 1 their DP group's, rank 0
      // the world's; every rank asks for the groups it does not lead.
      v1::SessionRequest second;
      auto publish = [&](v1::GroupKind kind, int index) {
        v1::UniqueId* id = second.mutable_publish_unique_id()->add_ids();
        id->mutable_group()->set_kind(kind);
        id->mutable_group()->set_index(index);
        id->set_id(std::string(128, static_cast<char>('a' + me.rank())));
      };
      auto get = [&](v1::GroupKind kind, int index) {
        v1::GroupRef* group = second.mutable_get_unique_id()->add_groups();
        group->set_kind(kind);
        group->set_index(index);
      };
      if (me.tp_group().ranks(0) == me.rank()) publish(v1::GROUP_KIND_TP, me.tp_group().index());
      else get(v1::GROUP_KIND_TP, me.tp_group().index());
      if (me.dp_group().ranks(0) == me.rank()) publish(v1::GROUP_KIND_DP, me.dp_group().index());
      else get(v1::GROUP_KIND_DP, me.dp_group().index());
      if (me.rank() == 0) publish(v1::GROUP_KIND_WORLD, 0);
      else get(v1::GROUP_KIND_WORLD, 0);
      if (second.has_get_unique_id()) second.mutable_get_unique_id()->set_wait_timeout_ms(30000);
      ids[i] = s.Call(2, second);
      v1::SessionRequest third;
      third.mutable_barrier()->set_name("ready");
      third.mutable_barrier()->set_wait_timeout_ms(30000);
      barrier[i] = s.Call(3, third);
    });
  }
  for (auto& w : workers) w.join();

  std::map<std::string, std::string> id_of_group;  // "kind/index" -> the bytes every member got
  for (int i = 0; i < kWorld; ++i) {
    EXPECT_EQ(joined[i].status_code(), 0) << joined[i].status_message();
    EXPECT_TRUE(joined[i].record().created() || joined[i].record().recorded().tp_size() == 2);
    EXPECT_EQ(joined[i].join().rank(), i);
    EXPECT_EQ(joined[i].join().generation(), 1u);
    EXPECT_EQ(joined[i].join().mesh().dp_size(), 2);
    EXPECT_GT(joined[i].lease_ms(), 0u);  // the join's answer opened the member's session
    EXPECT_EQ(joined[i].merge_config().merged_config_json(), joined[0].merge_config().merged_config_json());
    EXPECT_TRUE(absl::StrContains(joined[i].merge_config().merged_config_json(), R"("autotp_size":2)"))
        << joined[i].merge_config().merged_config_json();
    EXPECT_EQ(ids[i].status_code(), 0) << ids[i].status_message();
    for (const v1::UniqueId& id : ids[i].unique_ids().ids()) {
      const std::string group = absl::StrCat(id.group().kind(), "/", id.group().index());
      auto [it, first] = id_of_group.emplace(group, id.id());
      EXPECT_EQ(it->second, id.id()) << "rank " << i << " got other bytes for " << group;
    }
    EXPECT_EQ(barrier[i].status_code(), 0) << barrier[i].status_message();
  }
  EXPECT_EQ(id_of_group.at(absl::StrCat(v1::GROUP_KIND_WORLD, "/0")), std::string(128, 'a'));
  EXPECT_EQ(id_of_group.at(absl::StrCat(v1::GROUP_KIND_TP, "/1")), std::string(128, 'c'));
  EXPECT_EQ(id_of_group.at(absl::StrCat(v1::GROUP_KIND_DP, "/1")), std::string(128, 'b'));
  EXPECT_EQ(Job("run").phase(), v1::PHASE_RUNNING);

  sessions[3]->Cancel();  // rank 3's process goes away
  for (int i = 0; i < 3; ++i) {
    std::optional<v1::SessionEvent> more = sessions[i]->Next();
    EXPECT_FALSE(more.has_value());
    grpc::Status end = sessions[i]->Finish();
    EXPECT_EQ(end.error_code(), grpc::StatusCode::ABORTED);
    EXPECT_TRUE(absl::StartsWith(end.error_message(), "job run: generation 1 ended: rank 3 (host host-1, worker worker-3)"))
        << end.error_message();
  }
}

// What one stream may and may not do, each answered as its call's status while the stream stays open.
TEST_F(SessionTest, AStreamHoldsOneMemberAndItsStepsActAsThatMember) {
  RawSession s(stub_.get(), 0);
  v1::SessionRequest merge;
  merge.mutable_merge_config()->set_config_json(kConfig);
  ExpectStatus(s.Call(1, merge), grpc::StatusCode::FAILED_PRECONDITION,
               "this session has no member yet: its MergeConfigRequest step needs a join step first");
  ExpectStatus(s.Call(2, v1::SessionRequest()), grpc::StatusCode::INVALID_ARGUMENT, "call 2 has no step");
  v1::SessionRequest bad_join = JoinStep("rules", 0, 0);
  ExpectStatus(s.Call(3, bad_join), grpc::StatusCode::INVALID_ARGUMENT,
               "job rules: world_size 0 is out of range; it must be between 1 and 1000000");

  v1::SessionRequest record;
  record.mutable_record()->set_job_id("rules");
  record.mutable_record()->set_tp_size(1);
  record.mutable_record()->set_dtype(v1::DTYPE_BF16);
  v1::SessionRequest join = JoinStep("rules", 0, 1);
  *join.mutable_record() = record.record();
  join.mutable_merge_config()->set_config_json(R"({"fp16": {"enabled": true}})");
  // The join ran, the merge failed with DeepSpeed's text (and its job context), and the session is open.
  v1::SessionEvent conflict = s.Call(4, join);
  ExpectStatus(conflict, grpc::StatusCode::FAILED_PRECONDITION,
               "Conflicting dtype: config uses torch.float16 but tp_model_init requested torch.bfloat16.");
  EXPECT_FALSE(conflict.status_context().empty());
  EXPECT_EQ(conflict.join().rank(), 0);
  EXPECT_GT(conflict.lease_ms(), 0u);

  ExpectStatus(s.Call(5, JoinStep("rules", 0, 1)), grpc::StatusCode::FAILED_PRECONDITION,
               "this session is rank 0's of generation 1 already: join the next generation on a new session");
  v1::SessionRequest barrier;
  barrier.mutable_barrier()->set_name("b");
  barrier.mutable_barrier()->set_rank(5);
  ExpectStatus(s.Call(6, barrier), grpc::StatusCode::INVALID_ARGUMENT,
               "job rules: a session's steps act as its member (generation 1 rank 0); this BarrierRequest names job "
               "rules generation 1 rank 5");
  merge.mutable_merge_config()->set_config_json(kConfig);
  EXPECT_EQ(s.Call(7, merge).status_code(), 0);

  v1::SessionRequest leave;
  leave.mutable_leave()->set_finished(true);
  EXPECT_EQ(s.Call(8, leave).status_code(), 0);
  EXPECT_TRUE(s.Finish().ok() || s.Finish().error_code() == grpc::StatusCode::ABORTED) << s.Finish().error_message();
  EXPECT_EQ(Job("rules").phase(), v1::PHASE_COMPLETED) << Job("rules").end_reason();
}

// Progress rides on the member's heartbeats: kept as the job's (GetJob), refused on a call with an answer
// that leaves the stream open, and a report that is not valid ends the stream naming the field.
TEST_F(SessionTest, ProgressRidesOnHeartbeatsAndABadReportEndsTheStream) {
  RawSession s(stub_.get(), 0);
  v1::SessionRequest join = JoinStep("progress", 0, 1);
  ASSERT_EQ(s.Call(1, join).status_code(), 0);
  v1::SessionRequest beat;
  beat.set_job_id("progress");
  beat.set_generation(1);
  beat.set_rank(0);
  v1::TrainingProgress* p = beat.mutable_progress();
  p->set_step(3);
  p->set_total_steps(10);
  p->set_loss(4.5);
  p->set_tokens_per_second(1000);
  p->set_step_seconds(0.25);
  p->set_eval_loss(4.75);
  ASSERT_TRUE(s.Send(beat));
  v1::SessionRequest on_a_call;
  *on_a_call.mutable_progress() = beat.progress();
  on_a_call.mutable_barrier()->set_name("b");
  // The call's answer comes after the heartbeat was read: the report is in.
  ExpectStatus(s.Call(2, on_a_call), grpc::StatusCode::INVALID_ARGUMENT,
               "call 2 carries progress, which rides on a heartbeat (call_id 0), not on a call");
  const v1::JobStatus job = Job("progress");
  EXPECT_EQ(job.progress().step(), 3);
  EXPECT_EQ(job.progress().total_steps(), 10);
  EXPECT_EQ(job.progress().loss(), 4.5);
  EXPECT_EQ(job.progress().eval_loss(), 4.75);
  EXPECT_EQ(job.healthy_members(), 1);

  beat.mutable_progress()->set_step_seconds(-1);
  ASSERT_TRUE(s.Send(beat));
  const grpc::Status ended = s.Finish();
  EXPECT_EQ(ended.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_EQ(ended.error_message(), "job progress: progress.step_seconds is -1; it must be finite and at least 0");
  EXPECT_EQ(Job("progress").progress().step_seconds(), 0.25);  // the bad report changed nothing
}

// A call id may be in flight once, and a stream holds at most 16 calls in flight: breaking either rule is a
// broken client, whose stream is ended naming the call.
TEST_F(SessionTest, ACallIdTwiceInFlightOrTooManyCallsEndTheStream) {
  {
    RawSession s(stub_.get(), 0);
    v1::SessionRequest join = JoinStep("ids", 0, 2);
    join.set_call_id(1);
    ASSERT_TRUE(s.Send(join));  // parks: the world needs two
    join.mutable_join()->set_worker_id("worker-other");
    s.Send(join);
    // The stream ends, and its parked Join is cancelled first: that Join's CANCELLED answer may still be
    // written before the end (it was, once in an ASan run); nothing else is.
    for (std::optional<v1::SessionEvent> event = s.Next(); event; event = s.Next()) {
      EXPECT_EQ(event->call_id(), 1u);
      EXPECT_EQ(event->status_code(), static_cast<int>(grpc::StatusCode::CANCELLED)) << event->status_message();
    }
    const grpc::Status end = s.Finish();
    EXPECT_EQ(end.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
    EXPECT_EQ(end.error_message(), "call_id 1 is already in flight on this session");
  }
  RawSession a(stub_.get(), 1), b(stub_.get(), 2);
  std::thread other([&] { EXPECT_EQ(b.Call(1, JoinStep("ids", 2, 2)).status_code(), 0); });
  ASSERT_EQ(a.Call(1, JoinStep("ids", 1, 2)).status_code(), 0);
  other.join();
  for (uint64_t id = 2; id <= 18; ++id) {  // barriers that nobody else enters: they park
    v1::SessionRequest barrier;
    barrier.set_call_id(id);
    barrier.mutable_barrier()->set_name(absl::StrCat("alone-", id));
    barrier.mutable_barrier()->set_wait_timeout_ms(30000);
    if (!a.Send(barrier)) break;
  }
  const grpc::Status end = a.Finish();
  EXPECT_EQ(end.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_EQ(end.error_message(), "call 18: a session has at most 16 calls in flight");
}

// A worker whose stream closes while its Join waits is gone: its Join is cancelled, so the generation does
// not start with a worker that no longer exists.
TEST_F(SessionTest, AStreamClosedWhileItsJoinWaitsLeavesNoWorkerBehind) {
  {
    RawSession gone(stub_.get(), 0);
    v1::SessionRequest join = JoinStep("wait", 0, 2);
    join.set_call_id(1);
    ASSERT_TRUE(gone.Send(join));
    for (int i = 0; i < 200 && Job("wait").member_count() == 0; ++i) {
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    ASSERT_EQ(Job("wait").member_count(), 1);
    gone.Cancel();
    gone.Finish();
  }
  for (int i = 0; i < 200 && Job("wait").member_count() != 0; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  EXPECT_EQ(Job("wait").member_count(), 0);
  RawSession a(stub_.get(), 1), b(stub_.get(), 2);
  std::thread other([&] { EXPECT_EQ(b.Call(1, JoinStep("wait", 2, 2)).join().generation(), 1u); });
  const v1::SessionEvent joined = a.Call(1, JoinStep("wait", 1, 2));
  other.join();
  EXPECT_EQ(joined.status_code(), 0) << joined.status_message();
  const v1::JobStatus job = Job("wait");
  EXPECT_EQ(job.member_count(), 2);
  for (const v1::Member& m : job.members()) EXPECT_NE(m.worker_id(), "worker-0");
}

// Events of a stream of several members come in batches: every event, in order, with its batch unpacked.
std::vector<v1::SessionEvent> Unbatched(const v1::SessionEvent& event) {
  if (event.batch_size() == 0) return {event};
  std::vector<v1::SessionEvent> out(event.batch().begin(), event.batch().end());
  return out;
}

// Reads `session` until the calls `ids` are answered; returns their answers by call id.
std::map<uint64_t, v1::SessionEvent> AnswersTo(RawSession& session, std::vector<uint64_t> ids) {
  std::map<uint64_t, v1::SessionEvent> answers;
  while (answers.size() < ids.size()) {
    std::optional<v1::SessionEvent> event = session.Next();
    if (!event) {
      ADD_FAILURE() << "the stream ended: " << session.Finish().error_message();
      break;
    }
    for (const v1::SessionEvent& e : Unbatched(*event)) {
      if (absl::c_linear_search(ids, e.call_id())) answers[e.call_id()] = e;
    }
  }
  return answers;
}

// Two agents, each one stream carrying its host's two workers (slots 0 and 1): the joins go up as one batch
// per host, answers come back in batches naming their slot, the unique IDs and the barrier run per member
// as on a worker's own stream; then an agent's stream closes with its members unfinished, and the
// generation ends naming that host and both its ranks.
TEST_F(SessionTest, OneStreamCarriesAHostsMembers) {
  constexpr int kWorld = 4;
  std::vector<std::unique_ptr<RawSession>> agents;
  for (int host = 0; host < 2; ++host) agents.push_back(std::make_unique<RawSession>(stub_.get(), 100 + host));
  std::vector<std::thread> threads;
  std::vector<std::map<uint64_t, v1::SessionEvent>> joined(2), ids(2), barrier(2);
  for (int host = 0; host < 2; ++host) {
    threads.emplace_back([&, host] {
      RawSession& agent = *agents[host];
      v1::SessionRequest joins;
      for (uint32_t slot = 0; slot < 2; ++slot) {
        v1::SessionRequest join = JoinStep("hosts", 2 * host + slot, kWorld);
        join.mutable_join()->set_tp_size(2);
        join.set_member(slot);
        join.set_call_id(10 + slot);
        *joins.add_batch() = join;
      }
      ASSERT_TRUE(agent.Send(joins));
      joined[host] = AnswersTo(agent, {10, 11});
      // Each host is one TP group: its first rank makes the TP group's ID; the DP groups span the hosts.
      v1::SessionRequest steps;
      for (uint32_t slot = 0; slot < 2; ++slot) {
        const v1::JoinResponse& me = joined[host][10 + slot].join();
        v1::SessionRequest call;
        call.set_member(slot);
        call.set_call_id(20 + slot);
        auto group = [](v1::GroupKind kind, int index) {
          v1::GroupRef g;
          g.set_kind(kind);
          g.set_index(index);
          return g;
        };
        for (const v1::GroupRef& g : {group(v1::GROUP_KIND_TP, me.tp_group().index()),
                                      group(v1::GROUP_KIND_DP, me.dp_group().index()), group(v1::GROUP_KIND_WORLD, 0)}) {
          const int leader = g.kind() == v1::GROUP_KIND_TP   ? me.tp_group().ranks(0)
                             : g.kind() == v1::GROUP_KIND_DP ? me.dp_group().ranks(0)
                                                             : 0;
          if (leader == me.rank()) {
            v1::UniqueId* id = call.mutable_publish_unique_id()->add_ids();
            *id->mutable_group() = g;
            id->set_id(std::string(128, static_cast<char>('a' + me.rank())));
          } else {
            *call.mutable_get_unique_id()->add_groups() = g;
          }
        }
        if (call.has_get_unique_id()) call.mutable_get_unique_id()->set_wait_timeout_ms(30000);
        *steps.add_batch() = call;
      }
      ASSERT_TRUE(agent.Send(steps));
      ids[host] = AnswersTo(agent, {20, 21});
      v1::SessionRequest arrivals;
      for (uint32_t slot = 0; slot < 2; ++slot) {
        v1::SessionRequest call;
        call.set_member(slot);
        call.set_call_id(30 + slot);
        call.mutable_barrier()->set_name("ready");
        call.mutable_barrier()->set_wait_timeout_ms(30000);
        *arrivals.add_batch() = call;
      }
      ASSERT_TRUE(agent.Send(arrivals));
      barrier[host] = AnswersTo(agent, {30, 31});
    });
  }
  for (std::thread& t : threads) t.join();
  std::set<int> ranks;
  for (int host = 0; host < 2; ++host) {
    for (uint32_t slot = 0; slot < 2; ++slot) {
      const v1::SessionEvent& join = joined[host][10 + slot];
      EXPECT_EQ(join.status_code(), 0) << join.status_message();
      EXPECT_EQ(join.member(), slot);
      EXPECT_GT(join.lease_ms(), 0u);
      ranks.insert(join.join().rank());
      // Both ranks of a host are one TP group (rank assignment keeps TP groups within a host).
      EXPECT_EQ(join.join().tp_group().ranks(0), 2 * (join.join().rank() / 2));
      const v1::SessionEvent& got = ids[host][20 + slot];
      EXPECT_EQ(got.status_code(), 0) << got.status_message();
      EXPECT_EQ(got.member(), slot);
      for (const v1::UniqueId& id : got.unique_ids().ids()) {
        // The ID of a group is its leader's bytes.
        const int leader = id.group().kind() == v1::GROUP_KIND_TP   ? 2 * id.group().index()
                           : id.group().kind() == v1::GROUP_KIND_DP ? id.group().index()
                                                                    : 0;
        EXPECT_EQ(id.id(), std::string(128, static_cast<char>('a' + leader)));
      }
      EXPECT_EQ(barrier[host][30 + slot].status_code(), 0) << barrier[host][30 + slot].status_message();
    }
  }
  EXPECT_EQ(ranks, (std::set<int>{0, 1, 2, 3}));
  EXPECT_EQ(Job("hosts").phase(), v1::PHASE_RUNNING);
  const int gone_rank = joined[1][10].join().rank() / 2 * 2;
  agents[1]->Cancel();
  for (int i = 0; i < 500 && Job("hosts").phase() == v1::PHASE_RUNNING; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  EXPECT_EQ(Job("hosts").end_reason(),
            absl::StrCat("host host-1 is gone with ranks ", gone_rank, ", ", gone_rank + 1,
                         ": its agent's session closed before they finished (the agent or its host died, or it lost "
                         "its connection)"));
  // The other agent's stream ends with the generation, naming that host.
  std::optional<v1::SessionEvent> more;
  while ((more = agents[0]->Next())) {
  }
  const grpc::Status end = agents[0]->Finish();
  EXPECT_EQ(end.error_code(), grpc::StatusCode::ABORTED);
  EXPECT_TRUE(absl::StrContains(end.error_message(), "host host-1 is gone with ranks")) << end.error_message();
}

// An agent reports one worker's process gone: the generation ends naming that rank, with the agent's why.
// A slot beyond the session's, a batch in a batch, and a second job on one stream are refused.
TEST_F(SessionTest, AnAgentReportsAWorkerGoneAndItsStreamKeepsItsRules) {
  RawSession agent(stub_.get(), 200);
  RawSession other(stub_.get(), 201);
  v1::SessionRequest joins;
  for (uint32_t slot = 0; slot < 2; ++slot) {
    v1::SessionRequest join = JoinStep("gone", slot, 2);
    join.set_member(slot);
    join.set_call_id(1 + slot);
    *joins.add_batch() = join;
  }
  ASSERT_TRUE(agent.Send(joins));
  std::map<uint64_t, v1::SessionEvent> joined = AnswersTo(agent, {1, 2});
  ASSERT_EQ(joined[2].status_code(), 0) << joined[2].status_message();
  // A second job on the same stream.
  v1::SessionRequest elsewhere = JoinStep("gone-other", 9, 1);
  elsewhere.set_member(2);
  elsewhere.set_call_id(3);
  ASSERT_TRUE(agent.Send(elsewhere));
  const v1::SessionEvent refused = AnswersTo(agent, {3})[3];
  EXPECT_EQ(refused.status_code(), static_cast<int>(grpc::StatusCode::FAILED_PRECONDITION));
  EXPECT_EQ(refused.status_message(),
            "job gone-other: a session's members are of one job; member slot 0 of this session is job gone's");
  v1::SessionRequest gone;
  gone.set_member(1);
  gone.set_gone("exited with signal 9 (SIGKILL), seen by tp-agent on host-0");
  ASSERT_TRUE(agent.Send(gone));
  for (int i = 0; i < 500 && Job("gone").phase() == v1::PHASE_RUNNING; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  EXPECT_EQ(Job("gone").end_reason(),
            absl::StrCat("rank ", joined[2].join().rank(),
                         " (host host-0, worker worker-1) is gone: exited with signal 9 (SIGKILL), seen by tp-agent on "
                         "host-0"));

  v1::SessionRequest slot;
  slot.set_member(kMaxSessionMembers);
  ASSERT_TRUE(other.Send(slot));
  EXPECT_EQ(other.Finish().error_message(), "member 256 is not a slot of a session (0..255)");
  RawSession nested(stub_.get(), 202);
  v1::SessionRequest outer;
  outer.add_batch()->add_batch();
  ASSERT_TRUE(nested.Send(outer));
  EXPECT_EQ(nested.Finish().error_message(), "batch[0] carries a batch of its own");
}

}  // namespace
}  // namespace tpcoord
