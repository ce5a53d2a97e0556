// What the coordinator holds now, read from its jobs when Prometheus scrapes: jobs by phase, members,
// parked calls, key-value store bytes, and per job its generation, members and the training progress its
// members report (SessionRequest.progress). Per-job series carry the label job_id="<id>" (not "job", which
// Prometheus sets to the scrape job); a job's series go with the job.
#ifndef TPCOORD_COORDINATOR_OPS_JOB_METRICS_H_
#define TPCOORD_COORDINATOR_OPS_JOB_METRICS_H_

#include <vector>

#include "coordinator/job/job_registry.h"
#include "coordinator/job/key_value_store.h"
#include "prometheus/collectable.h"
#include "prometheus/metric_family.h"

namespace tpcoord {

class JobMetrics : public prometheus::Collectable {
 public:
  // Both must outlive this.
  JobMetrics(const JobRegistry* registry, const StoreQuota* quota) : registry_(registry), quota_(quota) {}
  std::vector<prometheus::MetricFamily> Collect() const override;

 private:
  const JobRegistry* const registry_;
  const StoreQuota* const quota_;
};

}  // namespace tpcoord

#endif  // TPCOORD_COORDINATOR_OPS_JOB_METRICS_H_
