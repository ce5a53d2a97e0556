// A worker killed mid-job: its member session breaks, so every other worker's parked call returns ABORTED
// naming its rank and host at once (not after the lease), and the survivors plus a restarted worker
// complete generation 2.
#include <signal.h>

#include <gtest/gtest.h>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "tests/support/coordinator_process.h"

namespace tpcoord {
namespace {

using testing::CoordinatorProcess;
using testing::Subprocess;

TEST(WorkerDeathTest, SurvivorsAreToldAndRejoinWithAReplacement) {
  auto coordinator = *CoordinatorProcess::Start(testing::MakeTempDir("death"), {"--lease", "1s"});
  auto probe = [&](int rank, std::vector<std::string> extra) {
    std::vector<std::string> argv = {testing::BinPath("tests/integration/rendezvous_probe"), "--coordinator",
                                     coordinator->address(), "--job", "death", "--world-size", "4", "--tp-size", "2",
                                     "--rank", std::to_string(rank), "--host", absl::StrCat("host-", rank)};
    argv.insert(argv.end(), extra.begin(), extra.end());
    return *Subprocess::Start(argv, testing::TokenEnv());
  };
  std::vector<std::unique_ptr<Subprocess>> workers;
  for (int rank = 0; rank < 4; ++rank) {
    workers.push_back(probe(rank, {"--park", "hold", "--rejoin", "--barrier", "after-rejoin", "--leave"}));
  }
  for (auto& w : workers) ASSERT_TRUE(w->WaitForLine("session open", std::chrono::seconds(60)).ok()) << w->Stderr();

  workers[2]->Signal(SIGKILL);
  ASSERT_EQ(*workers[2]->Wait(std::chrono::seconds(10)), 128 + SIGKILL);
  for (int rank : {0, 1, 3}) {
    absl::StatusOr<std::string> aborted = workers[rank]->WaitForLine("aborted", std::chrono::seconds(30));
    ASSERT_TRUE(aborted.ok()) << aborted.status();
    EXPECT_TRUE(absl::StrContains(
        *aborted, "job death: generation 1 ended: rank 2 (host host-2, worker host-2:"))
        << *aborted;
    EXPECT_TRUE(absl::StrContains(*aborted, ") is gone: its session closed before it finished")) << *aborted;
  }

  // A replacement for rank 2; everyone completes generation 2.
  workers[2] = probe(2, {"--barrier", "after-rejoin", "--leave"});
  for (auto& w : workers) {
    EXPECT_EQ(w->Wait(std::chrono::seconds(60)).value_or(-1), 0) << w->Stdout() << w->Stderr();
    EXPECT_TRUE(absl::StrContains(w->Stdout(), "barrier after-rejoin generation=2")) << w->Stdout();
  }
}

}  // namespace
}  // namespace tpcoord
