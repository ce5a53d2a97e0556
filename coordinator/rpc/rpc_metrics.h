// A gRPC server interceptor that counts every call the coordinator answers (tpcoord_rpcs_total) and times
// it (tpcoord_rpc_duration_seconds), by method and status code: the unary RPCs and the health service. A
// member session counts itself: as one call ("Session") with the status it ended with, and each call on it
// as "Session:<step>" (session_reactor.cc).
#ifndef TPCOORD_COORDINATOR_RPC_RPC_METRICS_H_
#define TPCOORD_COORDINATOR_RPC_RPC_METRICS_H_

#include <memory>

#include <grpcpp/support/server_interceptor.h>

#include "coordinator/job/metrics.h"

namespace tpcoord {

// `metrics` must outlive the server the factory is given to.
std::unique_ptr<grpc::experimental::ServerInterceptorFactoryInterface> MakeRpcMetricsInterceptor(Metrics* metrics);

}  // namespace tpcoord

#endif  // TPCOORD_COORDINATOR_RPC_RPC_METRICS_H_
