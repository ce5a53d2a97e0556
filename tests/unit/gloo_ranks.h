// Test support: runs the ranks of a real Gloo group as threads of the test process.
//
// Each thread joins a c10d::ProcessGroupGloo (through MakeGlooCommunicator) over one shared c10d::HashStore
// on 127.0.0.1, so every collective really goes through Gloo's TCP transport; only the store is
// in-process. Gloo's timeout bounds every rendezvous and collective, so a rank that fails cannot hang the
// others forever: they fail too, after `timeout`, and the test reports every rank's failure.
#ifndef TPCOORD_TESTS_UNIT_GLOO_RANKS_H_
#define TPCOORD_TESTS_UNIT_GLOO_RANKS_H_

#include <chrono>
#include <exception>
#include <functional>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include <torch/csrc/distributed/c10d/HashStore.hpp>

#include "absl/status/statusor.h"
#include "gtest/gtest.h"
#include "worker/comm/communicator.h"
#include "worker/comm/gloo_communicator.h"

namespace tpcoord {
namespace testing {

// Runs body(comm) on `size` threads, thread r holding rank r of a fresh Gloo group. Returns when every
// thread has finished. An exception escaping `body` becomes a test failure naming the rank.
inline void RunOnGlooRanks(int size, const std::function<void(Communicator& comm)>& body,
                           std::chrono::milliseconds timeout = std::chrono::seconds(30)) {
  auto store = c10::make_intrusive<c10d::HashStore>();
  std::vector<std::thread> threads;
  for (int rank = 0; rank < size; ++rank) {
    threads.emplace_back([&, rank] {
      absl::StatusOr<std::unique_ptr<Communicator>> comm =
          MakeGlooCommunicator(store, "test", rank, size, "127.0.0.1", timeout);
      if (!comm.ok()) {
        ADD_FAILURE() << "rank " << rank << ": " << comm.status();
        return;
      }
      try {
        body(**comm);
      } catch (const std::exception& e) {
        ADD_FAILURE() << "rank " << rank << " threw: " << e.what();
      }
    });
  }
  for (std::thread& t : threads) t.join();
}

}  // namespace testing
}  // namespace tpcoord

#endif  // TPCOORD_TESTS_UNIT_GLOO_RANKS_H_
