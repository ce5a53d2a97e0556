// Every RPC's request check: what it accepts, and the INVALID_ARGUMENT (naming job, field and value) for
// what it does not.
#include "coordinator/rpc/request_checks.h"

#include <gtest/gtest.h>

#include "absl/strings/str_cat.h"

namespace tpcoord {
namespace {

void ExpectInvalid(const absl::Status& status, const std::string& message) {
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument) << status;
  EXPECT_EQ(status.message(), message);
}

TEST(RequestChecksTest, JobIdsAreCheckedFirst) {
  v1::HeartbeatRequest req;
  req.set_job_id("a b");
  ExpectInvalid(CheckRequest(req), "job_id \"a b\" contains \" \"; allowed characters are [A-Za-z0-9._-]");
}

TEST(RequestChecksTest, CallsWithinAGenerationNeedOneAndARank) {
  v1::HeartbeatRequest req;
  req.set_job_id("j");
  ExpectInvalid(CheckRequest(req), "job j: generation 0 is not a generation; give the one Join answered");
  req.set_generation(1);
  req.set_rank(-1);
  ExpectInvalid(CheckRequest(req), "job j: rank -1 is out of range; ranks are in [0, 1000000)");
  req.set_rank(3);
  EXPECT_TRUE(CheckRequest(req).ok());
}

TEST(RequestChecksTest, Join) {
  v1::JoinRequest req;
  req.set_job_id("j");
  req.set_worker_id("w 1");
  ExpectInvalid(CheckRequest(req).status(),
                "job j: worker_id \"w 1\" contains \" \"; allowed characters are printable ASCII without spaces");
  req.set_worker_id("w1");
  req.set_host("h");
  req.set_world_size(0);
  ExpectInvalid(CheckRequest(req).status(), "job j: world_size 0 is out of range; it must be between 1 and 1000000");
  req.set_world_size(4);
  req.set_tp_size(-2);
  ExpectInvalid(CheckRequest(req).status(),
                "job j: tp_size -2 is out of range; give 0 (the recorded tp_size) to 65536");
  req.set_tp_size(2);
  req.set_requested_rank(3);
  absl::StatusOr<JoinArgs> args = CheckRequest(req);
  ASSERT_TRUE(args.ok());
  EXPECT_EQ(args->requested_rank, 3);
  EXPECT_EQ(args->min_world_size, 4);  // 0: world_size
  req.set_min_world_size(5);
  ExpectInvalid(CheckRequest(req).status(),
                "job j: min_world_size 5 is out of range; it must be between 1 and world_size 4 (0: world_size)");
  req.set_min_world_size(2);
  req.set_rejoin_timeout_ms(3600001);
  ExpectInvalid(CheckRequest(req).status(), "job j: rejoin_timeout_ms 3600001 is out of range; at most 3600000");
  req.set_rejoin_timeout_ms(2000);
  args = CheckRequest(req);
  ASSERT_TRUE(args.ok());
  EXPECT_EQ(args->min_world_size, 2);
  EXPECT_EQ(args->rejoin_timeout, std::chrono::milliseconds(2000));
}

TEST(RequestChecksTest, UniqueIds) {
  v1::PublishUniqueIdRequest pub;
  pub.set_job_id("j");
  pub.set_generation(1);
  ExpectInvalid(CheckRequest(pub).status(), "job j: ids has 0 entries; give 1 to 16");
  v1::UniqueId* id = pub.add_ids();
  id->mutable_group()->set_kind(v1::GROUP_KIND_TP);
  id->set_id(std::string(127, 'x'));
  ExpectInvalid(CheckRequest(pub).status(),
                "job j: ids[0].id for tp/0 is 127 bytes; a NCCL unique id is exactly 128 bytes");
  id->mutable_group()->set_kind(static_cast<v1::GroupKind>(9));
  ExpectInvalid(CheckRequest(pub).status(),
                "job j: ids[0].group.kind 9 is not a group kind; use GROUP_KIND_TP, GROUP_KIND_DP or GROUP_KIND_WORLD");
  v1::GetUniqueIdRequest get;
  get.set_job_id("j");
  get.set_generation(1);
  for (int i = 0; i < 17; ++i) get.add_groups()->set_kind(v1::GROUP_KIND_WORLD);
  ExpectInvalid(CheckRequest(get).status(), "job j: groups has 17 entries; give 1 to 16");
}

TEST(RequestChecksTest, StoreKeysAndValues) {
  v1::StoreSetRequest set;
  set.set_job_id("j");
  set.set_generation(1);
  set.set_key(std::string("a\0b", 3));
  ExpectInvalid(CheckRequest(set), "job j: key \"a\\000b\" contains a NUL byte");
  set.set_key("k");
  set.set_value(std::string(kMaxStoreValueBytes + 1, 'v'));
  ExpectInvalid(CheckRequest(set), "job j: value for key \"k\" is 1048577 bytes; the limit is 1048576");
  v1::StoreCompareSetRequest cas;
  cas.set_job_id("j");
  cas.set_generation(1);
  cas.set_key("k");
  cas.set_desired_value(std::string(kMaxStoreValueBytes + 1, 'v'));
  ExpectInvalid(CheckRequest(cas), "job j: desired_value for key \"k\" is 1048577 bytes; the limit is 1048576");
  v1::StoreWaitRequest wait;
  wait.set_job_id("j");
  wait.set_generation(1);
  ExpectInvalid(CheckRequest(wait), "job j: keys has 0 entries; give 1 to 1024");
}

TEST(RequestChecksTest, MergeLeaveAndPaging) {
  v1::MergeConfigRequest merge;
  merge.set_job_id("j");
  merge.set_config_json(std::string(kMaxConfigBytes + 1, ' '));
  ExpectInvalid(CheckRequest(merge), "job j: config_json is 1048577 bytes; the limit is 1048576 bytes (1 MiB)");
  v1::LeaveRequest leave;
  leave.set_job_id("j");
  leave.set_generation(1);
  leave.set_reason(std::string(kMaxReasonBytes + 1, 'r'));
  ExpectInvalid(CheckRequest(leave), "job j: reason is 1025 bytes; the limit is 1024");
  v1::ListJobsRequest list;
  EXPECT_EQ(*CheckRequest(list), kDefaultListPageSize);
  list.set_page_size(1001);
  ExpectInvalid(CheckRequest(list).status(), "page_size 1001 is out of range; give 0 (100) to 1000");
  list.set_page_size(5);
  list.set_page_token("../x");
  ExpectInvalid(CheckRequest(list).status(), "page_token \"../x\" is not a next_page_token ListJobs gave");
}

TEST(RequestChecksTest, CloseJobReason) {
  v1::CloseJobRequest close;
  close.set_job_id("j");
  EXPECT_TRUE(CheckRequest(close).ok());  // a reason is optional
  close.set_reason("torchrun on host h finished \xc3\xa9");
  EXPECT_TRUE(CheckRequest(close).ok());
  close.set_reason(std::string(kMaxReasonBytes + 1, 'r'));
  ExpectInvalid(CheckRequest(close),
                absl::StrCat("job j: reason \"", std::string(160, 'r'), "...\" is 1025 bytes long; the limit is 1024"));
  close.set_reason("done\n");
  ExpectInvalid(CheckRequest(close),
                "job j: reason \"done\\n\" contains the control character \"\\n\" at byte 4; give printable UTF-8 text");
  close.set_reason("bad \xff");
  ExpectInvalid(CheckRequest(close), "job j: reason \"bad \\377\" is not valid UTF-8 at byte 4; give printable UTF-8 text");
  close.set_job_id("a/b");
  EXPECT_EQ(CheckRequest(close).code(), absl::StatusCode::kInvalidArgument);
}

TEST(RequestChecksTest, RecordKeepsDeepSpeedsSizeMismatchText) {
  v1::RecordTpInitArgsRequest req;
  req.set_job_id("j");
  req.set_tp_size(2);
  req.set_dtype(v1::DTYPE_BF16);
  req.mutable_tp_group()->add_ranks(0);
  absl::StatusOr<TpInitArgs> args = CheckRequest(req);
  EXPECT_EQ(args.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(args.status().message(), "tp_model_init tp_size (2) does not match tp_group size (1).");
}

}  // namespace
}  // namespace tpcoord
