// rendezvous_probe: a worker process for the rendezvous integration tests. It runs the real client
// library against a real coordinator and prints what happened, one line per event, for the test to read:
//
//   joined generation=G rank=R tp=[..] dp=[..]
//   id <group> <hex>                      (--ids: the unique ID of each of its groups)
//   allreduce world=<sum> tp=<sum>       (--gloo: Gloo all-reduce of rank+1 over the coordinator store)
//   aborted <message>                    (--park NAME: parked in barrier NAME/<rank> when the generation ended)
//   barrier NAME generation=G            (--barrier NAME)
//   error <status>                       (then exit 1)
//
// Steps run in that order: join, --ids, --gloo, --park (then --rejoin joins the next generation), --barrier,
// --leave.
#include <cstdlib>
#include <iostream>
#include <memory>

#include "absl/flags/flag.h"
#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/time/time.h"
#include "common/process_init.h"
#include "client/coordinator_client.h"
#include "client/member_session.h"
#include "worker/comm/coordinator_store.h"
#include "worker/comm/gloo_communicator.h"
#include "worker/comm/unique_id_exchange.h"

ABSL_FLAG(std::string, coordinator, "127.0.0.1:50051", "coordinator address");
ABSL_FLAG(std::string, job, "probe", "job id");
ABSL_FLAG(int, world_size, 1, "world size");
ABSL_FLAG(int, rank, -1, "requested rank (-1: let the coordinator assign)");
ABSL_FLAG(int, tp_size, 0, "tp size (0: the recorded one)");
ABSL_FLAG(std::string, host, "127.0.0.1", "host name to report");
ABSL_FLAG(absl::Duration, join_wait, absl::Seconds(60), "how long Join may wait");
ABSL_FLAG(bool, ids, false, "exchange unique ids for the TP, DP and world groups");
ABSL_FLAG(bool, gloo, false, "all-reduce over Gloo groups built through the coordinator store");
ABSL_FLAG(std::string, park, "", "park in this barrier until the generation ends");
ABSL_FLAG(bool, rejoin, false, "after --park is aborted, join the next generation");
ABSL_FLAG(std::string, barrier, "", "enter this barrier");
ABSL_FLAG(bool, leave, false, "leave with finished=true at the end");
ABSL_FLAG(bool, session, false,
          "as tp-worker does: join, exchange the unique ids (--ids), enter the barrier (--barrier) and leave "
          "(--leave) as calls on one member session");

namespace tpcoord {
namespace {

int Fail(const absl::Status& status) {
  std::cout << "error " << status << std::endl;
  return 1;
}

std::string Ranks(const Mesh& mesh, const GroupId& group) {
  return absl::StrCat("[", absl::StrJoin(mesh.Ranks(group), ","), "]");
}

absl::StatusOr<Membership> JoinAndPrint(CoordinatorClient& client, const JoinRequest& request) {
  absl::StatusOr<Membership> m = client.Join(request, absl::ToChronoMilliseconds(absl::GetFlag(FLAGS_join_wait)));
  if (m.ok()) {
    std::cout << "joined generation=" << m->generation << " rank=" << m->rank << " tp=" << Ranks(m->mesh, m->tp_group())
              << " dp=" << Ranks(m->mesh, m->dp_group()) << std::endl;
  }
  return m;
}

// --gloo: Gloo world and TP groups built through the coordinator's store, one all-reduce on each.
int GlooAllReduce(CoordinatorClient& client, const Membership& m) {
  auto store = c10::make_intrusive<CoordinatorStore>(&client, m, std::chrono::seconds(30));
  auto world = MakeGlooCommunicator(store, "world", m.rank, m.world_size(), "127.0.0.1", std::chrono::seconds(30));
  if (!world.ok()) return Fail(world.status());
  auto tp = MakeGlooCommunicator(store, GroupName(m.tp_group()), m.tp_rank(), m.mesh.tp_size(), "127.0.0.1",
                                 std::chrono::seconds(30));
  if (!tp.ok()) return Fail(tp.status());
  torch::Tensor x = torch::full({4}, static_cast<float>(m.rank + 1));
  (*world)->AllReduceSum(x);
  torch::Tensor y = torch::full({4}, static_cast<float>(m.rank + 1));
  (*tp)->AllReduceSum(y);
  std::cout << "allreduce world=" << x[0].item<float>() << " tp=" << y[0].item<float>() << std::endl;
  return 0;
}

// --session: the whole membership as calls on one member session, as tp-worker runs it.
int SessionMain(CoordinatorClient& client, const JoinRequest& request) {
  MemberSession session(&client, "", [](absl::Status) {});
  absl::StatusOr<Membership> m = session.Join(request, absl::ToChronoMilliseconds(absl::GetFlag(FLAGS_join_wait)));
  if (!m.ok()) return Fail(m.status());
  std::cout << "joined generation=" << m->generation << " rank=" << m->rank << " tp=" << Ranks(m->mesh, m->tp_group())
            << " dp=" << Ranks(m->mesh, m->dp_group()) << std::endl;
  if (absl::GetFlag(FLAGS_ids)) {
    const UniqueIdSource source = [] {
      return absl::StatusOr<std::string>(std::string(128, static_cast<char>(getpid() % 251)));
    };
    const std::vector<GroupId> groups = {m->tp_group(), m->dp_group(), {GroupKind::kWorld, 0}};
    absl::StatusOr<std::map<GroupId, std::vector<std::string>>> ids =
        ExchangeUniqueIds(session, *m, groups, source, std::chrono::seconds(30));
    if (!ids.ok()) return Fail(ids.status());
    for (const auto& [group, roots] : *ids) {
      std::cout << "id " << GroupName(group) << " " << absl::BytesToHexString(absl::StrJoin(roots, "")) << std::endl;
    }
  }
  if (absl::GetFlag(FLAGS_gloo)) {
    if (int failed = GlooAllReduce(client, *m); failed != 0) return failed;
  }
  if (const std::string name = absl::GetFlag(FLAGS_barrier); !name.empty()) {
    if (absl::Status s = session.Barrier(name, std::chrono::seconds(60)); !s.ok()) return Fail(s);
    std::cout << "barrier " << name << " generation=" << m->generation << std::endl;
  }
  if (absl::GetFlag(FLAGS_leave)) {
    if (absl::Status s = session.Leave(true, ""); !s.ok()) return Fail(s);
  }
  return 0;
}

int Main() {
  ClientOptions options;
  options.address = absl::GetFlag(FLAGS_coordinator);
  absl::StatusOr<ClientCredentials> credentials = LoadClientCredentials({});  // TPCOORD_TOKEN and friends
  if (!credentials.ok()) return Fail(credentials.status());
  options.credentials = *std::move(credentials);
  CoordinatorClient client(options);
  JoinRequest request;
  request.job_id = absl::GetFlag(FLAGS_job);
  request.host = absl::GetFlag(FLAGS_host);
  request.worker_id = MakeWorkerId(request.host);
  request.world_size = absl::GetFlag(FLAGS_world_size);
  request.tp_size = absl::GetFlag(FLAGS_tp_size);
  if (absl::GetFlag(FLAGS_rank) >= 0) request.requested_rank = absl::GetFlag(FLAGS_rank);

  if (absl::GetFlag(FLAGS_session)) return SessionMain(client, request);
  absl::StatusOr<Membership> m = JoinAndPrint(client, request);
  if (!m.ok()) return Fail(m.status());

  if (absl::GetFlag(FLAGS_ids)) {
    const UniqueIdSource source = HaveNccl() ? UniqueIdSource(NcclUniqueId) : [] {
      return absl::StatusOr<std::string>(std::string(128, static_cast<char>(getpid() % 251)));
    };
    const std::vector<GroupId> groups = {m->tp_group(), m->dp_group(), {GroupKind::kWorld, 0}};
    absl::StatusOr<std::map<GroupId, std::vector<std::string>>> ids =
        ExchangeUniqueIds(client, *m, groups, source, std::chrono::seconds(30));
    if (!ids.ok()) return Fail(ids.status());
    for (const auto& [group, roots] : *ids) {  // the hex of each root's ID, in root order, back to back
      std::cout << "id " << GroupName(group) << " " << absl::BytesToHexString(absl::StrJoin(roots, "")) << std::endl;
    }
  }

  if (absl::GetFlag(FLAGS_gloo)) {
    if (int failed = GlooAllReduce(client, *m); failed != 0) return failed;
  }

  if (const std::string park = absl::GetFlag(FLAGS_park); !park.empty()) {
    absl::Status lost;
    {
      MemberSession session(&client, *m, [](absl::Status) {});
      if (!session.WaitUntilOpen(std::chrono::seconds(30))) return Fail(absl::DeadlineExceededError("no session"));
      std::cout << "session open" << std::endl;  // a kill from here on is seen at once
      // A barrier of this rank's own, which the others never enter: it returns only when the generation ends.
      lost = client.Barrier(*m, absl::StrCat(park, "/", m->rank), std::chrono::minutes(5));
    }
    if (lost.ok()) {
      std::cout << "released " << park << std::endl;
    } else {
      std::cout << "aborted " << lost.message() << std::endl;
      if (!absl::GetFlag(FLAGS_rejoin)) return lost.code() == absl::StatusCode::kAborted ? 0 : 1;
      m = JoinAndPrint(client, request);
      if (!m.ok()) return Fail(m.status());
    }
  }

  // One session for the rest of the membership: it closes after the Leave, or with the process.
  MemberSession session(&client, *m, [](absl::Status) {});
  if (const std::string name = absl::GetFlag(FLAGS_barrier); !name.empty()) {
    if (absl::Status s = client.Barrier(*m, name, std::chrono::seconds(60)); !s.ok()) return Fail(s);
    std::cout << "barrier " << name << " generation=" << m->generation << std::endl;
  }

  if (absl::GetFlag(FLAGS_leave)) {
    if (absl::Status s = client.Leave(*m, true, ""); !s.ok()) return Fail(s);
  }
  return 0;
}

}  // namespace
}  // namespace tpcoord

int main(int argc, char** argv) {
  // Under tp-agent: its environment says where and what (the command line still wins).
  if (const char* v = std::getenv("TPCOORD_COORDINATOR")) absl::SetFlag(&FLAGS_coordinator, v);
  if (const char* v = std::getenv("TPCOORD_JOB")) absl::SetFlag(&FLAGS_job, v);
  if (const char* v = std::getenv("TPCOORD_HOST")) absl::SetFlag(&FLAGS_host, v);
  if (const char* v = std::getenv("TPCOORD_WORLD_SIZE")) absl::SetFlag(&FLAGS_world_size, std::atoi(v));
  tpcoord::InitProcess(argc, argv);
  return tpcoord::Main();
}
