#include "coordinator/job/metrics.h"

#include <chrono>

#include "absl/strings/str_cat.h"

namespace tpcoord {
namespace {

using prometheus::BuildCounter;
using prometheus::BuildGauge;
using prometheus::BuildHistogram;

// From a parked call's hour down to a cached read's tens of microseconds.
prometheus::Histogram::BucketBoundaries CallBuckets() {
  return {0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1,
          0.25,   0.5,     1,      2.5,   5,      10,    30,   60,    300,  3600};
}

// An fsync of SQLite takes a millisecond or so, an etcd round trip a few.
prometheus::Histogram::BucketBoundaries WriteBuckets() {
  return {0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5};
}

// The series `key` of `series`, added to its family by `add` the first time.
template <typename Metric, typename Add>
Metric* Find(std::unordered_map<std::string, Metric*>& series, const std::string& key, Add add) {
  auto it = series.find(key);
  if (it == series.end()) it = series.emplace(key, &add()).first;
  return it->second;
}

double UnixSecondsNow() {
  return std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count();
}

}  // namespace

Metrics::Metrics(bool count_calls)
    : count_calls_(count_calls),
      registry_(std::make_shared<prometheus::Registry>()),
      calls_(BuildCounter()
                 .Name("tpcoord_rpcs_total")
                 .Help("Calls answered, by method (Session:<step> for a call on a member session) and status code")
                 .Register(*registry_)),
      call_seconds_(BuildHistogram()
                        .Name("tpcoord_rpc_duration_seconds")
                        .Help("Time from a call's arrival to its answer (parked calls included), by method")
                        .Register(*registry_)),
      generations_started_(BuildCounter()
                               .Name("tpcoord_generations_started_total")
                               .Help("Generations (rendezvous) opened by a first Join")
                               .Register(*registry_)),
      generations_ended_(BuildCounter()
                             .Name("tpcoord_generations_ended_total")
                             .Help("Generations that ended: completed, or why they failed (lease_expired, "
                                   "worker_gone, worker_left, worker_rejoined, start_failed, job_closed)")
                             .Register(*registry_)),
      write_seconds_(BuildHistogram()
                         .Name("tpcoord_state_store_write_duration_seconds")
                         .Help("Time of one durable state-store transaction (SQLite or etcd)")
                         .Register(*registry_)),
      write_failures_(BuildCounter()
                          .Name("tpcoord_state_store_write_failures_total")
                          .Help("State-store transactions that failed (full disk, lost etcd quorum, fenced)")
                          .Register(*registry_)),
      leader_(BuildGauge()
                  .Name("tpcoord_leader")
                  .Help("1 while this coordinator serves (leads, with etcd), 0 while it is a standby")
                  .Register(*registry_)),
      restored_jobs_(BuildGauge()
                         .Name("tpcoord_restored_jobs")
                         .Help("Jobs this coordinator restored from the state store when it started")
                         .Register(*registry_)),
      start_time_(BuildGauge()
                      .Name("tpcoord_start_time_seconds")
                      .Help("When this coordinator process started (Unix time): a change is a restart")
                      .Register(*registry_)),
      started_(generations_started_.Add({})),
      writes_(write_seconds_.Add({}, WriteBuckets())),
      write_failed_(write_failures_.Add({})),
      leading_(leader_.Add({})),
      restored_(restored_jobs_.Add({})) {
  start_time_.Add({}).Set(UnixSecondsNow());
  // Every reason from the start, at 0, so that rate() and increase() see the first end of each.
  for (const char* reason :
       {"completed", "lease_expired", "worker_gone", "worker_left", "worker_rejoined", "start_failed", "job_closed"}) {
    ended_[reason] = &generations_ended_.Add({{"reason", reason}});
  }
}

void Metrics::CallFinished(absl::string_view method, absl::string_view code, double seconds) {
  if (!count_calls_) return;
  const std::string name(method);
  prometheus::Counter* counter;
  prometheus::Histogram* histogram;
  {
    MutexLock lock(&mu_);
    counter = Find(
        call_counters_, absl::StrCat(method, " ", code), [&]() -> auto& {
          return calls_.Add({{"method", name}, {"code", std::string(code)}});
        });
    histogram = Find(
        call_histograms_, name, [&]() -> auto& {
          return call_seconds_.Add({{"method", name}}, CallBuckets());
        });
  }
  counter->Increment();
  histogram->Observe(seconds);
}

void Metrics::GenerationStarted() { started_.Increment(); }

void Metrics::GenerationEnded(absl::string_view reason) {
  const std::string name(reason);
  MutexLock lock(&mu_);
  Find(
      ended_, name,
      [&]() -> auto& {
        return generations_ended_.Add({{"reason", name}});
      })
      ->Increment();
}

void Metrics::StateWritten(double seconds, const absl::Status& status) {
  writes_.Observe(seconds);
  if (!status.ok()) write_failed_.Increment();
}

void Metrics::SetLeading(bool leading) { leading_.Set(leading ? 1 : 0); }

void Metrics::SetRestoredJobs(size_t jobs) { restored_.Set(static_cast<double>(jobs)); }

}  // namespace tpcoord
