// The client library's public face: its headers name no gRPC, LibTorch or NCCL type (checked as this file
// compiles), and a tool that asks once hears at once that no coordinator serves.
#include "client/coordinator_client.h"
#include "client/member_session.h"

#if defined(GRPCPP_GRPCPP_H) || defined(GRPCPP_CHANNEL_H) || defined(GRPCPP_CLIENT_CONTEXT_H) || \
    defined(GRPCPP_SUPPORT_STATUS_H)
#error "the client's public headers must not include gRPC (keep it behind CoordinatorClient::Impl)"
#endif
#if defined(NCCL_H_) || defined(TORCH_API)
#error "the client's public headers must not include NCCL or LibTorch"
#endif

#include <chrono>
#include <string>
#include <vector>

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

// It says why while it waits (the first line 5 s in), and gives up with the same reason.
TEST(CoordinatorClientTest, AWorkerWaitsForTheCoordinatorUntilItsBudgetIsSpentSayingWhy) {
  ClientOptions options;
  options.address = "127.0.0.1:1";
  options.call_timeout = Millis(200);
  options.retry_budget = Millis(6500);
  std::vector<std::string> lines;
  options.log_waiting = [&lines](const std::string& line) { lines.push_back(line); };
  CoordinatorClient client(options);
  absl::StatusOr<v1::JobStatus> job = client.GetJob("j");
  EXPECT_EQ(job.status().code(), absl::StatusCode::kUnavailable) << job.status();
  EXPECT_TRUE(absl::StartsWith(job.status().message(), "cannot reach the coordinator at 127.0.0.1:1: nothing listens "
                                                       "there (connection refused) ["))
      << job.status();
  ASSERT_EQ(lines.size(), 1u);
  EXPECT_TRUE(absl::StartsWith(lines[0], "still waiting for the coordinator at 127.0.0.1:1 after 5 s: nothing listens "
                                         "there (connection refused) ["))
      << lines[0];
}

TEST(CoordinatorClientTest, TransportErrorsAreSaidInWords) {
  EXPECT_EQ(DescribeTransportError("h:1", "failed to connect to all addresses; last error: UNAVAILABLE: "
                                          "ipv4:127.0.0.1:9: Failed parsing HTTP/2", false),
            "an HTTP/1 server answers there, not a tpcoord coordinator (a metrics or status port?) [failed to connect "
            "to all addresses; last error: UNAVAILABLE: ipv4:127.0.0.1:9: Failed parsing HTTP/2]");
  EXPECT_TRUE(absl::StartsWith(DescribeTransportError("h:1", "Socket closed", false),
                               "the server there closes the connection: a TLS coordinator"));
  EXPECT_TRUE(absl::StartsWith(DescribeTransportError("h:1", "Ssl handshake failed: WRONG_VERSION_NUMBER", true),
                               "the TLS handshake failed"));
  EXPECT_EQ(DescribeTransportError("h:1", "something new", false), "something new");
}

}  // namespace
}  // namespace tpcoord
