// A GoogleTest fixture for integration tests: a fresh tp-coordinator process per test, and a stub on a
// channel of its own. The process is killed when the test ends, whatever happened.
#ifndef TPCOORD_TESTS_SUPPORT_COORDINATOR_TEST_H_
#define TPCOORD_TESTS_SUPPORT_COORDINATOR_TEST_H_

#include <gtest/gtest.h>

#include <memory>

#include "tests/support/coordinator_process.h"

namespace tpcoord::testing {

class CoordinatorTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto coordinator =
        CoordinatorProcess::Start(MakeTempDir(::testing::UnitTest::GetInstance()->current_test_info()->name()));
    ASSERT_TRUE(coordinator.ok()) << coordinator.status();
    coordinator_ = *std::move(coordinator);
    stub_ = coordinator_->NewStub();
  }

  std::unique_ptr<CoordinatorProcess> coordinator_;
  std::unique_ptr<v1::Coordinator::Stub> stub_;
};

}  // namespace tpcoord::testing

#endif  // TPCOORD_TESTS_SUPPORT_COORDINATOR_TEST_H_
