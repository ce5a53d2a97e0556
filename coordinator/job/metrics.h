// The coordinator's own counters and histograms, in one prometheus-cpp registry: what it did since it
// started (RPCs, generations, state-store writes). What it holds now (jobs, members, parked calls, each
// job's training) is read from the jobs at scrape time (job_metrics.h). Served on --metrics-listen
// (http_endpoint.h); the names are listed in the README ("Observability").
//
// Thread-safety: every method may be called from any thread.
#ifndef TPCOORD_COORDINATOR_JOB_METRICS_H_
#define TPCOORD_COORDINATOR_JOB_METRICS_H_

#include <memory>
#include <string>
#include <unordered_map>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/strings/string_view.h"
#include "common/mutex.h"
#include "prometheus/counter.h"
#include "prometheus/family.h"
#include "prometheus/gauge.h"
#include "prometheus/histogram.h"
#include "prometheus/registry.h"

namespace tpcoord {

class Metrics {
 public:
  // `count_calls`: CallFinished counts (else it does nothing: a coordinator that serves no metrics port
  // pays nothing per call).
  explicit Metrics(bool count_calls = true);
  Metrics(const Metrics&) = delete;
  Metrics& operator=(const Metrics&) = delete;

  const std::shared_ptr<prometheus::Registry>& registry() const { return registry_; }

  // A call finished: `method` is the RPC's name ("Join") or, for a call on a member session, "Session:"
  // and its first step ("Session:join"); `code` the grpc::StatusCode's name ("OK", "ABORTED").
  void CallFinished(absl::string_view method, absl::string_view code, double seconds);
  void GenerationStarted();
  // `reason`: "completed", or the EndCauseName of a failed generation.
  void GenerationEnded(absl::string_view reason);
  void StateWritten(double seconds, const absl::Status& status);
  // HA: whether this coordinator leads (a coordinator on SQLite always does).
  void SetLeading(bool leading);
  void SetRestoredJobs(size_t jobs);

 private:
  struct CallSeries {
    prometheus::Counter* calls;
    prometheus::Histogram* seconds;
  };

  const bool count_calls_;
  std::shared_ptr<prometheus::Registry> registry_;
  prometheus::Family<prometheus::Counter>& calls_;
  prometheus::Family<prometheus::Histogram>& call_seconds_;
  prometheus::Family<prometheus::Counter>& generations_started_;
  prometheus::Family<prometheus::Counter>& generations_ended_;
  prometheus::Family<prometheus::Histogram>& write_seconds_;
  prometheus::Family<prometheus::Counter>& write_failures_;
  prometheus::Family<prometheus::Gauge>& leader_;
  prometheus::Family<prometheus::Gauge>& restored_jobs_;
  prometheus::Family<prometheus::Gauge>& start_time_;
  prometheus::Counter& started_;
  prometheus::Histogram& writes_;
  prometheus::Counter& write_failed_;
  prometheus::Gauge& leading_;
  prometheus::Gauge& restored_;

  // Series by "method code", by method and by reason, so that a call costs one lookup here instead of the
  // family's label-map hashing.
  Mutex mu_;
  std::unordered_map<std::string, prometheus::Counter*> call_counters_ ABSL_GUARDED_BY(mu_);
  std::unordered_map<std::string, prometheus::Histogram*> call_histograms_ ABSL_GUARDED_BY(mu_);
  std::unordered_map<std::string, prometheus::Counter*> ended_ ABSL_GUARDED_BY(mu_);
};

}  // namespace tpcoord

#endif  // TPCOORD_COORDINATOR_JOB_METRICS_H_
