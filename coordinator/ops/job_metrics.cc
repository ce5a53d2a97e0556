#include "coordinator/ops/job_metrics.h"

#include <array>
#include <map>
#include <string>

namespace tpcoord {
namespace {

constexpr std::array<JobPhase, 5> kPhases = {JobPhase::kIdle, JobPhase::kJoining, JobPhase::kRunning,
                                             JobPhase::kCompleted, JobPhase::kFailed};

prometheus::MetricFamily Gauge(std::string name, std::string help) {
  prometheus::MetricFamily family;
  family.name = std::move(name);
  family.help = std::move(help);
  family.type = prometheus::MetricType::Gauge;
  return family;
}

void Add(prometheus::MetricFamily& family, double value, std::vector<prometheus::ClientMetric::Label> labels = {}) {
  prometheus::ClientMetric metric;
  metric.label = std::move(labels);
  metric.gauge.value = value;
  family.metric.push_back(std::move(metric));
}

}  // namespace

std::vector<prometheus::MetricFamily> JobMetrics::Collect() const {
  prometheus::MetricFamily jobs = Gauge("tpcoord_jobs", "Jobs the coordinator holds, by the phase of their generation");
  prometheus::MetricFamily members = Gauge("tpcoord_members", "Members of every job's current generation");
  prometheus::MetricFamily parked =
      Gauge("tpcoord_parked_calls", "Calls waiting in the coordinator (Join, unique IDs, barriers, store waits)");
  prometheus::MetricFamily store_bytes = Gauge("tpcoord_store_bytes", "Bytes the key-value stores of all jobs hold");
  prometheus::MetricFamily store_limit = Gauge("tpcoord_store_bytes_limit", "--max-store-bytes");
  prometheus::MetricFamily generation =
      Gauge("tpcoord_job_generation", "The job's current generation (1 + its restarts)");
  prometheus::MetricFamily phase =
      Gauge("tpcoord_job_phase", "1 for the phase of the job's current generation, 0 for the others");
  prometheus::MetricFamily world = Gauge("tpcoord_job_world_size", "Workers in the job's current generation");
  prometheus::MetricFamily job_members = Gauge("tpcoord_job_members", "Members of the job's current generation");
  prometheus::MetricFamily healthy =
      Gauge("tpcoord_job_healthy_members", "Members heard from within the lease, or finished");
  prometheus::MetricFamily step = Gauge("tpcoord_job_step", "The latest optimizer step the job reported");
  prometheus::MetricFamily total = Gauge("tpcoord_job_total_steps", "The steps the job trains for (0: unknown)");
  prometheus::MetricFamily loss = Gauge("tpcoord_job_loss", "The training loss of the latest reported step");
  prometheus::MetricFamily eval = Gauge("tpcoord_job_eval_loss", "The latest eval loss the job reported");
  prometheus::MetricFamily tokens =
      Gauge("tpcoord_job_tokens_per_second", "Training throughput of the latest reported step");
  prometheus::MetricFamily step_seconds = Gauge("tpcoord_job_step_seconds", "Wall time of the latest reported step");

  std::map<JobPhase, int> by_phase;
  double all_members = 0, all_parked = 0;
  std::string after;
  while (true) {
    const std::vector<std::shared_ptr<Job>> page = registry_->Page(after, 1000, [](const Job&) { return true; });
    if (page.empty()) break;
    after = page.back()->id();
    for (const std::shared_ptr<Job>& job : page) {
      std::optional<JobView> view = job->View(false);
      if (!view) continue;
      ++by_phase[view->phase];
      all_members += view->member_count;
      all_parked += static_cast<double>(view->parked_calls);
      const prometheus::ClientMetric::Label label{"job_id", view->job_id};
      Add(generation, static_cast<double>(view->generation), {label});
      for (JobPhase p : kPhases) {
        Add(phase, p == view->phase ? 1 : 0, {label, {"phase", std::string(JobPhaseName(p))}});
      }
      Add(world, view->world_size, {label});
      Add(job_members, view->member_count, {label});
      Add(healthy, view->healthy_members, {label});
      if (view->progress) {
        const TrainingProgress& p = *view->progress;
        Add(step, static_cast<double>(p.step), {label});
        Add(total, static_cast<double>(p.total_steps), {label});
        Add(loss, p.loss, {label});
        Add(tokens, p.tokens_per_second, {label});
        Add(step_seconds, p.step_seconds, {label});
      }
      if (view->eval_loss) Add(eval, *view->eval_loss, {label});
    }
  }
  for (JobPhase p : kPhases) Add(jobs, by_phase[p], {{"phase", std::string(JobPhaseName(p))}});
  Add(members, all_members);
  Add(parked, all_parked);
  Add(store_bytes, static_cast<double>(quota_->used()));
  Add(store_limit, static_cast<double>(quota_->limit()));
  return {jobs,        members, parked, store_bytes, store_limit, generation, phase,  world,
          job_members, healthy, step,   total,       loss,        eval,       tokens, step_seconds};
}

}  // namespace tpcoord
