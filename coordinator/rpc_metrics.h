// A gRPC server interceptor that counts every call the coordinator answers (tpcoord_rpcs_total) and times
// it (tpcoord_rpc_duration_seconds), by method and status code: the unary RPCs, the health service, and a
// member session as one call ("Session") with the status it ended with. Calls on a session are counted by
// the session itself, as "Session:<step>".
#ifndef TPCOORD_COORDINATOR_RPC_METRICS_H_
#define TPCOORD_COORDINATOR_RPC_METRICS_H_

#include <memory>

#include <grpcpp/support/server_interceptor.h>

#include "coordinator/metrics.h"

namespace tpcoord {

// `metrics` must outlive the server the factory is given to.
std::unique_ptr<grpc::experimental::ServerInterceptorFactoryInterface> MakeRpcMetricsInterceptor(Metrics* metrics);

}  // namespace tpcoord

#endif  // TPCOORD_COORDINATOR_RPC_METRICS_H_
