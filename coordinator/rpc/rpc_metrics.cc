#include "coordinator/rpc/rpc_metrics.h"

#include <chrono>
#include <string>

#include "absl/container/flat_hash_set.h"
#include "absl/status/status.h"
#include "tpcoord/v1/coordinator.pb.h"

namespace tpcoord {
namespace {

class RpcMetricsInterceptor : public grpc::experimental::Interceptor {
 public:
  RpcMetricsInterceptor(Metrics* metrics, const char* method) : metrics_(metrics), method_(ShortName(method)) {}

  void Intercept(grpc::experimental::InterceptorBatchMethods* methods) override {
    using grpc::experimental::InterceptionHookPoints;
    if (methods->QueryInterceptionHookPoint(InterceptionHookPoints::PRE_SEND_STATUS)) {
      const grpc::Status status = methods->GetSendStatus();
      metrics_->CallFinished(method_, absl::StatusCodeToString(static_cast<absl::StatusCode>(status.error_code())),
                             std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count());
    }
    methods->Proceed();
  }

 private:
  // "/tpcoord.v1.Coordinator/Join" -> "Join", "/grpc.health.v1.Health/Check" -> "grpc.health.v1.Health/Check";
  // any other name (reflection, or one that nothing serves) is "other": a client must not be able to add
  // series by inventing method names.
  static std::string ShortName(const char* method) {
    static const auto* const known = [] {
      auto* names =
          new absl::flat_hash_set<std::string>{"/grpc.health.v1.Health/Check", "/grpc.health.v1.Health/Watch"};
      const google::protobuf::ServiceDescriptor* service =
          v1::SessionRequest::descriptor()->file()->FindServiceByName("Coordinator");
      for (int i = 0; service && i < service->method_count(); ++i) {
        names->insert("/" + service->full_name() + "/" + service->method(i)->name());
      }
      return names;
    }();
    const std::string name = method ? method : "";
    if (!known->contains(name)) return "other";
    if (name.rfind("/tpcoord.v1.Coordinator/", 0) == 0) return name.substr(name.rfind('/') + 1);
    return name.substr(1);
  }

  Metrics* const metrics_;
  const std::string method_;
  const std::chrono::steady_clock::time_point start_ = std::chrono::steady_clock::now();
};

class RpcMetricsFactory : public grpc::experimental::ServerInterceptorFactoryInterface {
 public:
  explicit RpcMetricsFactory(Metrics* metrics) : metrics_(metrics) {}
  grpc::experimental::Interceptor* CreateServerInterceptor(grpc::experimental::ServerRpcInfo* info) override {
    // A stream with an interceptor runs every message through gRPC's interception path, which cost a
    // session rendezvous 25% more time at 10,000 workers (bench/rendezvous_bench); sessions count
    // themselves (session_reactor.cc).
    if (info->type() == grpc::experimental::ServerRpcInfo::Type::BIDI_STREAMING) return nullptr;
    return new RpcMetricsInterceptor(metrics_, info->method());
  }

 private:
  Metrics* const metrics_;
};

}  // namespace

std::unique_ptr<grpc::experimental::ServerInterceptorFactoryInterface> MakeRpcMetricsInterceptor(Metrics* metrics) {
  return std::make_unique<RpcMetricsFactory>(metrics);
}

}  // namespace tpcoord
