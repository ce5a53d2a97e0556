// The coordinator's HTTP port for operators (--metrics-listen): GET /metrics is the Prometheus text
// exposition of the coordinator's metrics (metrics.h, job_metrics.h), GET / the status page
// (status_page.h). Served by civetweb, the HTTP server prometheus-cpp's own exposer uses, on two threads.
//
// Who may read it: everyone who can connect, unless the coordinator has an admin token; then every request
// must carry it, as "Authorization: Bearer <token>" (Prometheus' bearer_token_file) or as the password of
// HTTP basic authentication (a browser asks for it). Anything else is 401, and a method other than GET or
// HEAD 405. The port is plaintext HTTP.
//
// Thread-safety: every method may be called from any thread.
#ifndef TPCOORD_COORDINATOR_OPS_OPS_ENDPOINT_H_
#define TPCOORD_COORDINATOR_OPS_OPS_ENDPOINT_H_

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "common/mutex.h"
#include "coordinator/job/job_registry.h"
#include "coordinator/job/key_value_store.h"
#include "coordinator/job/metrics.h"

struct mg_context;
struct mg_connection;

namespace tpcoord {

class OpsEndpoint {
 public:
  // Listens on `listen` (HOST:PORT; port 0 picks one). `metrics` must outlive the endpoint.
  // `admin_token_sha256`: empty for an open endpoint.
  static absl::StatusOr<std::unique_ptr<OpsEndpoint>> Start(const std::string& listen, Metrics* metrics,
                                                            std::string admin_token_sha256);
  ~OpsEndpoint();  // stops serving; no handler runs once it returns
  OpsEndpoint(const OpsEndpoint&) = delete;
  OpsEndpoint& operator=(const OpsEndpoint&) = delete;

  // "HOST:PORT" it listens on.
  const std::string& address() const { return address_; }

  // From now on /metrics and / show these jobs (before: none; a standby has none). Both must outlive the
  // endpoint, or Serve(nullptr, nullptr) must be called before they go.
  void Serve(const JobRegistry* registry, const StoreQuota* quota) ABSL_LOCKS_EXCLUDED(mu_);

 private:
  OpsEndpoint(Metrics* metrics, std::string admin_token_sha256)
      : metrics_(metrics), admin_token_sha256_(std::move(admin_token_sha256)) {}
  static int Handle(mg_connection* connection, void* self);
  int HandleRequest(mg_connection* connection) ABSL_LOCKS_EXCLUDED(mu_);
  bool Authorized(mg_connection* connection) const;
  std::string MetricsText() ABSL_LOCKS_EXCLUDED(mu_);
  std::string StatusPage() ABSL_LOCKS_EXCLUDED(mu_);

  Metrics* const metrics_;
  const std::string admin_token_sha256_;
  std::string address_;
  mg_context* server_ = nullptr;
  Mutex mu_;  // held while a request reads the jobs, so that Serve(nullptr, ...) waits for it
  const JobRegistry* registry_ ABSL_GUARDED_BY(mu_) = nullptr;
  const StoreQuota* quota_ ABSL_GUARDED_BY(mu_) = nullptr;
};

}  // namespace tpcoord

#endif  // TPCOORD_COORDINATOR_OPS_OPS_ENDPOINT_H_
