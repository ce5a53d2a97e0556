// Real worker processes (rendezvous_probe, on the real client library) against a real coordinator:
// ranks and groups, byte-identical NCCL unique IDs across every group, Gloo all-reduce over the
// coordinator's c10d store, multi-root ID arrays for groups of more than 256 ranks, and join deadlines
// that name the missing ranks.
#include <gtest/gtest.h>

#include <map>
#include <set>
#include <thread>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "common/limits.h"
#include "tests/support/coordinator_test.h"
#include "worker/comm/unique_id_exchange.h"

namespace tpcoord {
namespace {

using testing::Subprocess;

class RendezvousTest : public testing::CoordinatorTest {
 protected:
  std::unique_ptr<Subprocess> Probe(const std::string& job, std::vector<std::string> args) {
    std::vector<std::string> argv = {testing::BinPath("tests/integration/rendezvous_probe"), "--coordinator",
                                     coordinator_->address(), "--job", job};
    argv.insert(argv.end(), args.begin(), args.end());
    auto probe = Subprocess::Start(argv, testing::TokenEnv());
    EXPECT_TRUE(probe.ok()) << probe.status();
    return probe.ok() ? *std::move(probe) : nullptr;
  }

  // Waits for every probe to exit 0 and returns their stdouts.
  static std::vector<std::string> Finish(std::vector<std::unique_ptr<Subprocess>>& probes) {
    std::vector<std::string> outs;
    for (auto& p : probes) {
      absl::StatusOr<int> code = p->Wait(std::chrono::seconds(90));
      EXPECT_TRUE(code.ok()) << code.status();
      EXPECT_EQ(code.value_or(-1), 0) << p->Stdout() << p->Stderr();
      outs.push_back(p->Stdout());
    }
    return outs;
  }

};

// "key=value" fields of the line starting with `prefix`.
std::map<std::string, std::string> Fields(const std::string& out, const std::string& prefix) {
  std::map<std::string, std::string> fields;
  for (absl::string_view line : absl::StrSplit(out, '\n')) {
    if (!absl::StartsWith(line, prefix)) continue;
    for (absl::string_view part : absl::StrSplit(line, ' ')) {
      std::vector<std::string> kv = absl::StrSplit(part, absl::MaxSplits('=', 1));
      if (kv.size() == 2) fields[kv[0]] = kv[1];
    }
  }
  return fields;
}

TEST_F(RendezvousTest, FourWorkersGetDeepSpeedsLayoutAndIdenticalUniqueIds) {
  std::vector<std::unique_ptr<Subprocess>> probes;
  // Two hosts, arriving interleaved: each host must end up holding one whole TP group.
  for (int i = 0; i < 4; ++i) {
    probes.push_back(Probe("ids", {"--world-size", "4", "--tp-size", "2", "--host", i % 2 ? "node-b" : "node-a", "--ids"}));
  }
  std::vector<std::string> outs = Finish(probes);
  std::map<int, std::map<std::string, std::string>> joined;  // rank -> fields
  std::map<std::string, std::set<std::string>> ids;           // group -> distinct ids seen
  std::map<std::string, int> members;                         // group -> members that printed it
  for (int i = 0; i < 4; ++i) {
    auto f = Fields(outs[i], "joined");
    const int rank = std::stoi(f["rank"]);
    joined[rank] = f;
    EXPECT_EQ(f["generation"], "1");
    // Arrival order alternates hosts; host-aware assignment puts node-a on ranks 0,1.
    EXPECT_EQ(rank / 2, i % 2) << outs[i];
    for (absl::string_view line : absl::StrSplit(outs[i], '\n')) {
      std::vector<std::string> parts = absl::StrSplit(line, ' ');
      if (parts.size() == 3 && parts[0] == "id") {
        ids[parts[1]].insert(parts[2]);
        members[parts[1]]++;
        EXPECT_EQ(parts[2].size(), 256u);  // 128 bytes, hex
      }
    }
  }
  ASSERT_EQ(joined.size(), 4u);
  EXPECT_EQ(joined[0]["tp"], "[0,1]");
  EXPECT_EQ(joined[2]["tp"], "[2,3]");
  EXPECT_EQ(joined[0]["dp"], "[0,2]");
  EXPECT_EQ(joined[3]["dp"], "[1,3]");
  // Every member of every group holds the same bytes; different groups hold different IDs.
  EXPECT_EQ(members, (std::map<std::string, int>{{"dp/0", 2}, {"dp/1", 2}, {"tp/0", 2}, {"tp/1", 2}, {"world", 4}}));
  std::set<std::string> distinct;
  for (const auto& [group, seen] : ids) {
    EXPECT_EQ(seen.size(), 1u) << group;
    distinct.insert(*seen.begin());
  }
  if (HaveNccl()) {
    EXPECT_EQ(distinct.size(), 5u);  // five real ncclGetUniqueId calls
  }
}

// ncclCommInitRankScalable's contract through the real coordinator: in a world of 1,000 ranks (TP 2) every
// group of more than 256 ranks starts from one ID per 256 ranks, each made by its root, and every member
// holds the same array in the same order. 1,000 simulated workers share one client (one connection), each
// with a member session of its own (as tp-worker) or with unary calls.
class RendezvousOverTest : public RendezvousTest, public ::testing::WithParamInterface<bool> {};

TEST_P(RendezvousOverTest, GroupsOfMoreThan256RanksShareOneIdArrayFromTheirRoots) {
  const bool on_sessions = GetParam();
  constexpr int kWorld = 1000, kTp = 2;
  ClientOptions options;
  options.address = coordinator_->address();
  options.credentials.token = testing::kTestToken;
  CoordinatorClient client(options);
  std::vector<std::map<GroupId, std::vector<std::string>>> held(kWorld);  // by rank
  std::vector<absl::Status> failures(kWorld);
  // Open until every worker is done: a session that closes ends the generation for the others.
  std::vector<std::unique_ptr<MemberSession>> sessions(kWorld);
  std::vector<std::thread> workers;
  for (int w = 0; w < kWorld; ++w) {
    workers.emplace_back([&, w] {
      JoinRequest request;
      request.job_id = "roots";
      request.worker_id = absl::StrCat("worker-", w);
      request.host = absl::StrCat("node-", w / 8);
      request.world_size = kWorld;
      request.tp_size = kTp;
      absl::StatusOr<Membership> m;
      if (on_sessions) {
        sessions[w] = std::make_unique<MemberSession>(&client, "", [](absl::Status) {});
        m = sessions[w]->Join(request, std::chrono::seconds(120));
      } else {
        m = client.Join(request, std::chrono::seconds(120));
      }
      if (!m.ok()) {
        failures[w] = m.status();
        return;
      }
      int made = 0;  // each ID names the rank that made it and its count there
      const UniqueIdSource source = [&made, rank = m->rank] {
        std::string id = absl::StrCat("made by rank ", rank, " #", made++);
        id.resize(kUniqueIdBytes, '.');
        return absl::StatusOr<std::string>(id);
      };
      const std::vector<GroupId> groups = {m->tp_group(), m->dp_group(), {GroupKind::kWorld, 0}};
      absl::StatusOr<std::map<GroupId, std::vector<std::string>>> ids =
          on_sessions ? ExchangeUniqueIds(*sessions[w], *m, groups, source, std::chrono::seconds(120))
                      : ExchangeUniqueIds(client, *m, groups, source, std::chrono::seconds(120));
      if (!ids.ok()) {
        failures[w] = ids.status();
        return;
      }
      held[m->rank] = *std::move(ids);
    });
  }
  for (std::thread& t : workers) t.join();
  for (int w = 0; w < kWorld; ++w) ASSERT_TRUE(failures[w].ok()) << "worker " << w << ": " << failures[w];

  const Mesh mesh = *Mesh::Create(kWorld, kTp);
  const GroupId world{GroupKind::kWorld, 0};
  EXPECT_EQ(mesh.UniqueIdRoots(world), 4);
  EXPECT_EQ(mesh.UniqueIdRoots({GroupKind::kDp, 0}), 2);  // 500 ranks
  for (int rank = 0; rank < kWorld; ++rank) {
    for (const GroupId& group : {mesh.tp_group_of(rank), mesh.dp_group_of(rank), world}) {
      const std::vector<std::string>& ids = held[rank].at(group);
      const std::vector<std::string>& first = held[mesh.Leader(group)].at(group);
      ASSERT_EQ(ids, first) << "rank " << rank << ", " << GroupName(group);  // byte-identical, same order
      ASSERT_EQ(static_cast<int>(ids.size()), mesh.UniqueIdRoots(group)) << GroupName(group);
      for (int root = 0; root < mesh.UniqueIdRoots(group); ++root) {
        EXPECT_TRUE(absl::StartsWith(ids[root], absl::StrCat("made by rank ", mesh.RootRank({group, root}), " #")))
            << GroupName(group) << " root " << root << ": " << ids[root].substr(0, 24);
      }
    }
  }
  std::vector<std::string> world_roots;
  for (const std::string& id : held[999].at(world)) world_roots.push_back(id.substr(0, id.find('#')));
  EXPECT_EQ(world_roots, std::vector<std::string>({"made by rank 0 ", "made by rank 250 ", "made by rank 500 ",
                                                   "made by rank 750 "}));
}

INSTANTIATE_TEST_SUITE_P(Calls, RendezvousOverTest, ::testing::Values(true, false),
                         [](const ::testing::TestParamInfo<bool>& info) {
                           return std::string(info.param ? "MemberSessions" : "UnaryCalls");
                         });

TEST_F(RendezvousTest, GlooAllReduceOverTheCoordinatorStore) {
  std::vector<std::unique_ptr<Subprocess>> probes;
  for (int i = 0; i < 4; ++i) probes.push_back(Probe("gloo", {"--world-size", "4", "--tp-size", "2", "--gloo"}));
  std::vector<std::string> outs = Finish(probes);
  for (const std::string& out : outs) {
    auto joined = Fields(out, "joined");
    auto reduced = Fields(out, "allreduce");
    EXPECT_EQ(reduced["world"], "10") << out;  // 1 + 2 + 3 + 4
    // TP group {0,1} sums 1+2, {2,3} sums 3+4.
    EXPECT_EQ(reduced["tp"], std::stoi(joined["rank"]) < 2 ? "3" : "7") << out;
  }
}

TEST_F(RendezvousTest, JoinDeadlineNamesTheMissingRanks) {
  std::vector<std::unique_ptr<Subprocess>> patient;
  patient.push_back(Probe("late", {"--world-size", "4", "--rank", "1", "--join-wait", "4s"}));
  patient.push_back(Probe("late", {"--world-size", "4", "--rank", "3", "--join-wait", "6s"}));
  auto stub = coordinator_->NewStub();
  for (int i = 0; i < 1000; ++i) {  // until both are parked in Join
    v1::GetJobRequest req;
    req.set_job_id("late");
    v1::GetJobResponse job;
    if (stub->GetJob(testing::Deadline().get(), req, &job).ok() && job.job().members_size() == 2) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  auto impatient = Probe("late", {"--world-size", "4", "--rank", "0", "--join-wait", "1s"});
  EXPECT_EQ(impatient->Wait(std::chrono::seconds(60)).value_or(-1), 1);
  EXPECT_EQ(impatient->Stdout(),
            "error DEADLINE_EXCEEDED: job late: Join timed out after 1s in generation 1: 3 of 4 workers joined; "
            "missing: rank 2\n");
  // A worker that gave up left the world: later deadlines name it too.
  EXPECT_EQ(patient[0]->Wait(std::chrono::seconds(60)).value_or(-1), 1);
  EXPECT_EQ(patient[0]->Stdout(),
            "error DEADLINE_EXCEEDED: job late: Join timed out after 4s in generation 1: 2 of 4 workers joined; "
            "missing: rank 0, rank 2\n");
  EXPECT_EQ(patient[1]->Wait(std::chrono::seconds(60)).value_or(-1), 1);
  EXPECT_EQ(patient[1]->Stdout(),
            "error DEADLINE_EXCEEDED: job late: Join timed out after 6s in generation 1: 1 of 4 workers joined; "
            "missing: rank 0, rank 1, rank 2\n");
}

}  // namespace
}  // namespace tpcoord
