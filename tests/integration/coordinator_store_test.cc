// worker/comm/coordinator_store.h, the c10d::Store over the coordinator's key-value API, against a real
// coordinator: c10d semantics call by call, a get that waits for another client's set, and timeouts that
// name the missing keys.
#include <gtest/gtest.h>

#include <future>
#include <thread>

#include "absl/strings/match.h"
#include "tests/support/coordinator_test.h"
#include "worker/comm/coordinator_store.h"

namespace tpcoord {
namespace {

std::vector<uint8_t> Bytes(const std::string& s) { return std::vector<uint8_t>(s.begin(), s.end()); }

class CoordinatorStoreTest : public testing::CoordinatorTest {
 protected:
  void SetUp() override {
    testing::CoordinatorTest::SetUp();
    client_ = std::make_unique<CoordinatorClient>(Options());
    absl::StatusOr<Membership> m = client_->Join({"kv", "w0", "127.0.0.1", 1, std::nullopt, 0, ""}, std::chrono::seconds(10));
    ASSERT_TRUE(m.ok()) << m.status();
    member_ = *m;
    store_ = c10::make_intrusive<CoordinatorStore>(client_.get(), member_, std::chrono::seconds(5));
  }

  ClientOptions Options() const {
    ClientOptions options;
    options.address = coordinator_->address();
    options.credentials.token = testing::kTestToken;
    return options;
  }

  std::unique_ptr<CoordinatorClient> client_;
  Membership member_;
  c10::intrusive_ptr<CoordinatorStore> store_;
};

TEST_F(CoordinatorStoreTest, C10dSemantics) {
  store_->set("a", Bytes("1"));
  EXPECT_EQ(store_->get("a"), Bytes("1"));
  EXPECT_EQ(store_->add("n", 3), 3);
  EXPECT_EQ(store_->add("n", -1), 2);
  EXPECT_EQ(store_->get("n"), Bytes("2"));
  EXPECT_EQ(store_->compareSet("c", {}, Bytes("x")), Bytes("x"));
  EXPECT_EQ(store_->compareSet("c", Bytes("no"), Bytes("y")), Bytes("x"));
  EXPECT_EQ(store_->compareSet("c", Bytes("x"), Bytes("y")), Bytes("y"));
  EXPECT_TRUE(store_->check({"a", "n", "c"}));
  EXPECT_FALSE(store_->check({"a", "missing"}));
  EXPECT_EQ(store_->getNumKeys(), 3);
  EXPECT_TRUE(store_->deleteKey("a"));
  EXPECT_FALSE(store_->deleteKey("a"));
  EXPECT_EQ(store_->getNumKeys(), 2);
}

TEST_F(CoordinatorStoreTest, GetWaitsForAnotherClientsSet) {
  auto waiting = std::async(std::launch::async, [&] { return store_->get("late"); });
  std::this_thread::sleep_for(std::chrono::milliseconds(200));
  CoordinatorClient other(Options());  // the same member on a connection of its own
  ASSERT_TRUE(other.StoreSet(member_, "late", "here").ok());
  EXPECT_EQ(waiting.get(), Bytes("here"));
}

TEST_F(CoordinatorStoreTest, TimeoutsThrowNamingTheMissingKeys) {
  try {
    store_->wait({"never", "set"}, std::chrono::milliseconds(300));
    FAIL() << "wait returned";
  } catch (const c10::Error& e) {
    EXPECT_TRUE(absl::StrContains(e.what(), "store wait timed out after 300ms; keys never set: \"never\", \"set\""))
        << e.what();
  }
  store_->setTimeout(std::chrono::milliseconds(200));
  EXPECT_THROW(store_->get("absent"), c10::Error);
}

}  // namespace
}  // namespace tpcoord
