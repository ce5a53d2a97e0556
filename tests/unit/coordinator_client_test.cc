// The client library's public face: its headers name no gRPC, LibTorch or NCCL type (checked as this file
// compiles), and a tool that asks once hears at once that no coordinator serves.
#include "worker/client/coordinator_client.h"
#include "worker/client/member_session.h"

#if defined(GRPCPP_GRPCPP_H) || defined(GRPCPP_CHANNEL_H) || defined(GRPCPP_CLIENT_CONTEXT_H) || \
    defined(GRPCPP_SUPPORT_STATUS_H)
#error "the client's public headers must not include gRPC (keep it behind CoordinatorClient::Impl)"
#endif
#if defined(NCCL_H_) || defined(TORCH_API)
#error "the client's public headers must not include NCCL or LibTorch"
#endif

#include <chrono>

#include "absl/strings/match.h"
#include "gtest/gtest.h"

namespace tpcoord {
namespace {

TEST(CoordinatorClientTest, AToolAskingOnceHearsAtOnceThatNoCoordinatorServes) {
  ClientOptions options;
  options.address = "127.0.0.1:1";  // nothing listens on port 1
  options.call_timeout = std::chrono::seconds(30);
  options.retry_budget = Millis(0);
  options.wait_for_ready = false;
  CoordinatorClient client(options);
  // Refused, not timed out (that would be DEADLINE_EXCEEDED after the 30 s deadline).
  absl::StatusOr<v1::JobStatus> job = client.GetJob("j");
  EXPECT_EQ(job.status().code(), absl::StatusCode::kUnavailable) << job.status();
  absl::StatusOr<bool> serving = client.Serving();
  EXPECT_EQ(serving.status().code(), absl::StatusCode::kUnavailable) << serving.status();
}

TEST(CoordinatorClientTest, AWorkerWaitsForTheCoordinatorUntilItsBudgetIsSpent) {
  ClientOptions options;
  options.address = "127.0.0.1:1";
  options.call_timeout = Millis(200);
  options.retry_budget = Millis(600);
  CoordinatorClient client(options);
  absl::StatusOr<v1::JobStatus> job = client.GetJob("j");
  EXPECT_EQ(job.status().code(), absl::StatusCode::kDeadlineExceeded) << job.status();
  EXPECT_TRUE(absl::StrContains(job.status().message(), "no answer from the coordinator at 127.0.0.1:1 within"))
      << job.status();
}

}  // namespace
}  // namespace tpcoord
