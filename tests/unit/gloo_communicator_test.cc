#include "worker/comm/gloo_communicator.h"

#include <chrono>
#include <stdexcept>
#include <thread>

#include <torch/torch.h>
#include <torch/csrc/distributed/c10d/HashStore.hpp>

#include "absl/status/status.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/unit/gloo_ranks.h"

namespace tpcoord {
namespace {

using ::testing::HasSubstr;
using ::tpcoord::testing::RunOnGlooRanks;

class GlooCommunicatorTest : public ::testing::Test {
 protected:
  void SetUp() override { torch::set_num_threads(1); }
};

TEST_F(GlooCommunicatorTest, AllReduceSumsInPlaceOverTheGroup) {
  RunOnGlooRanks(3, [](Communicator& comm) {
    EXPECT_EQ(comm.size(), 3);
    EXPECT_EQ(comm.name(), "gloo test");
    torch::Tensor t = torch::full({2, 3}, static_cast<float>(comm.rank() + 1));
    const void* buffer = t.data_ptr();
    comm.AllReduceSum(t);
    EXPECT_EQ(t.data_ptr(), buffer);  // the caller's own buffer holds the result
    EXPECT_TRUE(torch::equal(t, torch::full({2, 3}, 6.0f)));
  });
}

// bf16 is summed in fp32 and rounded once: 1 + 3 * 2^-8 = 1.01171875 rounds (tie to even) to 1.015625 in
// bf16, whereas adding the 2^-8 terms one at a time in bf16 would leave 1.0.
TEST_F(GlooCommunicatorTest, HalfPrecisionIsSummedInFp32) {
  for (torch::ScalarType type : {torch::kBFloat16, torch::kHalf}) {
    RunOnGlooRanks(4, [type](Communicator& comm) {
      const float mine = comm.rank() == 0 ? 1.0f : 1.0f / 256;
      torch::Tensor t = torch::full({5}, mine).to(type);
      const void* buffer = t.data_ptr();
      comm.AllReduceSum(t);
      EXPECT_EQ(t.data_ptr(), buffer);
      EXPECT_EQ(t.scalar_type(), type);
      const torch::Tensor expected = torch::full({5}, 1.0f + 3.0f / 256).to(type);
      EXPECT_TRUE(torch::equal(t, expected)) << t;
    });
  }
}

TEST_F(GlooCommunicatorTest, AllGatherReturnsEveryRanksTensorInRankOrderBitExact) {
  for (torch::ScalarType type : {torch::kFloat, torch::kBFloat16, torch::kHalf}) {
    // Drawn once, before the ranks start: they are threads, and LibTorch's default generator is shared, so
    // seeding and drawing in each of them raced (ranks saw different tensors, a flaky failure).
    torch::manual_seed(0);
    const torch::Tensor all = torch::randn({3, 4, 5}).to(type);
    RunOnGlooRanks(3, [type, &all](Communicator& comm) {
      // A non-contiguous input is fine for a gather (it is copied).
      const torch::Tensor mine = all[comm.rank()].t();
      std::vector<torch::Tensor> gathered = comm.AllGather(mine);
      ASSERT_EQ(gathered.size(), 3u);
      for (int r = 0; r < 3; ++r) {
        EXPECT_EQ(gathered[r].scalar_type(), type);
        EXPECT_TRUE(torch::equal(gathered[r], all[r].t())) << "rank " << r;
      }
    });
  }
}

TEST_F(GlooCommunicatorTest, BroadcastCopiesTheRootsTensorEverywhere) {
  RunOnGlooRanks(3, [](Communicator& comm) {
    torch::Tensor t = torch::full({4}, static_cast<float>(comm.rank())).to(torch::kBFloat16);
    comm.Broadcast(t, /*root=*/1);
    EXPECT_TRUE(torch::equal(t, torch::full({4}, 1.0f).to(torch::kBFloat16)));
    comm.Barrier();
  });
}

TEST_F(GlooCommunicatorTest, SeveralGroupsShareOneStore) {
  auto store = c10::make_intrusive<c10d::HashStore>();
  std::vector<std::thread> threads;
  for (int rank = 0; rank < 2; ++rank) {
    threads.emplace_back([&store, rank] {
      auto a = MakeGlooCommunicator(store, "g0/tp/0", rank, 2, "127.0.0.1", std::chrono::seconds(20));
      auto b = MakeGlooCommunicator(store, "g0/dp/0", rank, 2, "127.0.0.1", std::chrono::seconds(20));
      ASSERT_TRUE(a.ok()) << a.status();
      ASSERT_TRUE(b.ok()) << b.status();
      torch::Tensor x = torch::ones({3});
      (*a)->AllReduceSum(x);
      (*b)->AllReduceSum(x);
      EXPECT_TRUE(torch::equal(x, torch::full({3}, 4.0f)));
      EXPECT_EQ((*b)->name(), "gloo g0/dp/0");
    });
  }
  for (std::thread& t : threads) t.join();
}

TEST_F(GlooCommunicatorTest, RejectsMisuseWithoutTouchingTheNetwork) {
  auto store = c10::make_intrusive<c10d::HashStore>();
  auto bad_rank = MakeGlooCommunicator(store, "tp/0", 2, 2, "127.0.0.1", std::chrono::seconds(1));
  EXPECT_EQ(bad_rank.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(bad_rank.status().message()), HasSubstr("gloo tp/0"));
  EXPECT_EQ(MakeGlooCommunicator(c10::intrusive_ptr<c10d::Store>(), "tp/0", 0, 1, "127.0.0.1", std::chrono::seconds(1))
                .status()
                .code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(MakeGlooCommunicator(store, "", 0, 1, "127.0.0.1", std::chrono::seconds(1)).status().code(),
            absl::StatusCode::kInvalidArgument);

  RunOnGlooRanks(1, [](Communicator& comm) {
    torch::Tensor strided = torch::ones({4, 4}).t();
    EXPECT_THROW(comm.AllReduceSum(strided), std::invalid_argument);
    torch::Tensor t = torch::ones({2});
    EXPECT_THROW(comm.Broadcast(t, 1), std::invalid_argument);
    comm.AllReduceSum(t);  // a group of one is its own sum
    EXPECT_TRUE(torch::equal(t, torch::ones({2})));
  });
}

TEST_F(GlooCommunicatorTest, MissingMemberFailsTheRendezvousAfterTheTimeout) {
  auto store = c10::make_intrusive<c10d::HashStore>();
  const auto start = std::chrono::steady_clock::now();
  auto alone = MakeGlooCommunicator(store, "tp/7", 0, 2, "127.0.0.1", std::chrono::milliseconds(500));
  const auto waited = std::chrono::steady_clock::now() - start;
  ASSERT_FALSE(alone.ok());
  EXPECT_EQ(alone.status().code(), absl::StatusCode::kDeadlineExceeded) << alone.status();
  EXPECT_THAT(std::string(alone.status().message()), HasSubstr("gloo tp/7"));
  EXPECT_LT(waited, std::chrono::seconds(20));
}

// One rank never joins the collective: the other's all-reduce fails after the timeout with an error
// naming the group, instead of hanging.
TEST_F(GlooCommunicatorTest, CollectiveWithAnAbsentPeerThrowsNamingTheGroup) {
  RunOnGlooRanks(
      2,
      [](Communicator& comm) {
        if (comm.rank() == 1) {
          std::this_thread::sleep_for(std::chrono::milliseconds(2500));
          return;
        }
        torch::Tensor t = torch::ones({8});
        try {
          comm.AllReduceSum(t);
          ADD_FAILURE() << "all_reduce without the peer succeeded";
        } catch (const std::runtime_error& e) {
          EXPECT_THAT(e.what(), HasSubstr("gloo test (rank 0 of 2): all_reduce failed"));
        }
      },
      std::chrono::milliseconds(1000));
}

// A peer that leaves (its communicator is destroyed) fails the survivors' collectives.
TEST_F(GlooCommunicatorTest, CollectiveAfterAPeerLeftThrows) {
  RunOnGlooRanks(
      2,
      [](Communicator& comm) {
        torch::Tensor t = torch::ones({8});
        comm.AllReduceSum(t);  // both alive
        if (comm.rank() == 1) return;
        std::this_thread::sleep_for(std::chrono::milliseconds(200));  // let rank 1 tear down
        EXPECT_THROW(comm.AllReduceSum(t), std::runtime_error);
      },
      std::chrono::milliseconds(3000));
}

}  // namespace
}  // namespace tpcoord
