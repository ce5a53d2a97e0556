#include "coordinator/ops/ops_endpoint.h"

#include <civetweb.h>

#include <cstring>
#include <sstream>
#include <vector>

#include "absl/strings/escaping.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"
#include "absl/time/clock.h"
#include "common/secrets.h"
#include "coordinator/ops/job_metrics.h"
#include "coordinator/ops/status_page.h"
#include "prometheus/text_serializer.h"

namespace tpcoord {
namespace {

// Jobs the status page shows, in job id order; /metrics has them all.
constexpr size_t kJobsOnPage = 100;

void Respond(mg_connection* connection, int status, const char* reason, const std::string& content_type,
             const std::string& body, const std::string& extra_headers = "") {
  const mg_request_info* request = mg_get_request_info(connection);
  const bool head = request && std::strcmp(request->request_method, "HEAD") == 0;
  mg_printf(connection,
            "HTTP/1.1 %d %s\r\nContent-Type: %s\r\nContent-Length: %zu\r\nCache-Control: no-store\r\n"
            "X-Content-Type-Options: nosniff\r\n%sConnection: close\r\n\r\n",
            status, reason, content_type.c_str(), body.size(), extra_headers.c_str());
  if (!head) mg_write(connection, body.data(), body.size());
}

}  // namespace

absl::StatusOr<std::unique_ptr<OpsEndpoint>> OpsEndpoint::Start(const std::string& listen, Metrics* metrics,
                                                                std::string admin_token_sha256) {
  const size_t colon = listen.rfind(':');
  if (colon == std::string::npos || colon + 1 == listen.size()) {
    return absl::InvalidArgumentError(absl::StrCat("--metrics-listen \"", listen, "\" is not HOST:PORT"));
  }
  static const unsigned initialized = mg_init_library(0);
  (void)initialized;
  std::unique_ptr<OpsEndpoint> endpoint(new OpsEndpoint(metrics, std::move(admin_token_sha256)));
  std::string host = listen.substr(0, colon);
  if (host.size() > 2 && host.front() == '[') host = host.substr(1, host.size() - 2);  // [::1]:9464
  // civetweb reads "listening_ports" as [IP:]PORT; "+" would mean both families, which nobody asked for.
  const std::string ports =
      absl::StrCat(host.find(':') != std::string::npos ? "[" + host + "]" : host, ":", listen.substr(colon + 1));
  const char* options[] = {"listening_ports", ports.c_str(),       "num_threads", "2",    "request_timeout_ms",
                           "10000",           "enable_keep_alive", "no",          nullptr};
  mg_callbacks callbacks;
  std::memset(&callbacks, 0, sizeof(callbacks));
  callbacks.log_message = [](const mg_connection*, const char*) { return 1; };  // errors are answered, not printed
  endpoint->server_ = mg_start(&callbacks, nullptr, options);
  if (endpoint->server_ == nullptr) {
    return absl::UnavailableError(absl::StrCat("--metrics-listen ", listen, ": cannot listen there (in use?)"));
  }
  mg_server_port port;
  std::memset(&port, 0, sizeof(port));
  if (mg_get_server_ports(endpoint->server_, 1, &port) < 1) {
    return absl::InternalError(absl::StrCat("--metrics-listen ", listen, ": no port"));
  }
  endpoint->address_ = absl::StrCat(listen.substr(0, colon), ":", port.port);
  mg_set_request_handler(endpoint->server_, "/", &OpsEndpoint::Handle, endpoint.get());
  return endpoint;
}

OpsEndpoint::~OpsEndpoint() {
  if (server_) mg_stop(server_);
}

void OpsEndpoint::Serve(const JobRegistry* registry, const StoreQuota* quota) {
  MutexLock lock(&mu_);
  registry_ = registry;
  quota_ = quota;
}

int OpsEndpoint::Handle(mg_connection* connection, void* self) {
  return static_cast<OpsEndpoint*>(self)->HandleRequest(connection);
}

bool OpsEndpoint::Authorized(mg_connection* connection) const {
  if (admin_token_sha256_.empty()) return true;
  const char* header = mg_get_header(connection, "Authorization");
  if (header == nullptr) return false;
  absl::string_view value = header;
  std::string token;
  if (absl::ConsumePrefix(&value, "Bearer ")) {
    token = std::string(value);
  } else if (absl::ConsumePrefix(&value, "Basic ")) {
    std::string decoded;
    if (!absl::Base64Unescape(value, &decoded)) return false;
    const size_t colon = decoded.find(':');
    if (colon == std::string::npos) return false;
    token = decoded.substr(colon + 1);  // any user name; the password is the token
  } else {
    return false;
  }
  return ConstantTimeEquals(Sha256(token), admin_token_sha256_);
}

int OpsEndpoint::HandleRequest(mg_connection* connection) {
  const mg_request_info* request = mg_get_request_info(connection);
  const std::string method = request->request_method ? request->request_method : "";
  const std::string path = request->local_uri ? request->local_uri : "";
  if (method != "GET" && method != "HEAD") {
    Respond(connection, 405, "Method Not Allowed", "text/plain; charset=utf-8",
            absl::StrCat(method, " ", path, ": only GET and HEAD are served here\n"), "Allow: GET, HEAD\r\n");
    return 405;
  }
  if (path != "/" && path != "/metrics") {
    Respond(connection, 404, "Not Found", "text/plain; charset=utf-8",
            absl::StrCat(path, ": not found; this port serves /metrics and the status page at /\n"));
    return 404;
  }
  if (!Authorized(connection)) {
    Respond(connection, 401, "Unauthorized", "text/plain; charset=utf-8",
            absl::StrCat(path,
                         " needs the coordinator's admin token: send \"Authorization: Bearer <token>\", or "
                         "the token as the password of basic authentication\n"),
            "WWW-Authenticate: Basic realm=\"tpcoord\", charset=\"UTF-8\"\r\n");
    return 401;
  }
  if (path == "/metrics") {
    Respond(connection, 200, "OK", "text/plain; version=0.0.4; charset=utf-8", MetricsText());
  } else {
    Respond(connection, 200, "OK", "text/html; charset=utf-8", StatusPage());
  }
  return 200;
}

std::string OpsEndpoint::MetricsText() {
  std::vector<prometheus::MetricFamily> families = metrics_->registry()->Collect();
  {
    MutexLock lock(&mu_);
    if (registry_) {
      std::vector<prometheus::MetricFamily> jobs = JobMetrics(registry_, quota_).Collect();
      families.insert(families.end(), std::make_move_iterator(jobs.begin()), std::make_move_iterator(jobs.end()));
    }
  }
  std::ostringstream text;
  prometheus::TextSerializer().Serialize(text, families);
  return text.str();
}

std::string OpsEndpoint::StatusPage() {
  std::vector<JobOnPage> jobs;
  size_t total = 0;
  {
    MutexLock lock(&mu_);
    if (registry_) {
      total = registry_->size();
      for (const std::shared_ptr<Job>& job : registry_->Page("", kJobsOnPage, [](const Job&) { return true; })) {
        std::optional<JobView> view = job->View(false);
        if (view) jobs.push_back({*std::move(view), job->Curve()});
      }
    }
  }
  return RenderStatusPage(jobs, std::max(total, jobs.size()), absl::Now());
}

}  // namespace tpcoord
