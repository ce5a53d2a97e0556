// --state-store etcd://... parsing, and etcd's range end for a key prefix.
#include <gtest/gtest.h>

#include "absl/strings/match.h"
#include "coordinator/ha/etcd_connection.h"

namespace tpcoord {
namespace {

TEST(EtcdTargetTest, EndpointsAndPrefix) {
  absl::StatusOr<EtcdTarget> t = ParseEtcdTarget("etcd://10.0.0.1:2379,etcd-1.etcd:2379/jobs/prod/");
  ASSERT_TRUE(t.ok()) << t.status();
  EXPECT_EQ(t->endpoints, (std::vector<std::string>{"10.0.0.1:2379", "etcd-1.etcd:2379"}));
  EXPECT_EQ(t->prefix, "/jobs/prod");
  EXPECT_EQ(ParseEtcdTarget("etcd://127.0.0.1:2379")->prefix, "/tpcoord");
}

TEST(EtcdTargetTest, MalformedTargetsNameWhatIsWrong) {
  const std::pair<const char*, const char*> cases[] = {
      {"sqlite:///var/lib/tpcoord", "is not etcd://HOST:PORT"},
      {"etcd://10.0.0.1/tpcoord", "endpoint \"10.0.0.1\" is not HOST:PORT"},
      {"etcd://a:1,,b:2/x", "endpoint \"\" is not HOST:PORT"},
      {"etcd://a:1/", "give a key prefix"},
  };
  for (const auto& [url, message] : cases) {
    absl::StatusOr<EtcdTarget> t = ParseEtcdTarget(url);
    EXPECT_EQ(t.status().code(), absl::StatusCode::kInvalidArgument) << url;
    EXPECT_TRUE(absl::StrContains(t.status().message(), message)) << url << ": " << t.status();
  }
}

TEST(EtcdTargetTest, PrefixEndIsTheFirstKeyPastThePrefix) {
  EXPECT_EQ(PrefixEnd("/tpcoord/state/"), "/tpcoord/state0");
  EXPECT_EQ(PrefixEnd(std::string("a\xff", 2)), "b");
  EXPECT_EQ(PrefixEnd(std::string("\xff\xff", 2)), std::string(1, '\0'));
}

}  // namespace
}  // namespace tpcoord
