// What an operator sees of a job (tpctl job, GetJob, ListJobs): a copy taken under the job's lock, so it
// can be rendered without holding it. Lists that may be as long as the world (members, missing ranks) are
// cut short: a view of a 100,000-worker job stays small and costs O(world), never O(world^2).
#ifndef TPCOORD_COORDINATOR_JOB_JOB_VIEW_H_
#define TPCOORD_COORDINATOR_JOB_JOB_VIEW_H_

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "common/tp_init_args.h"
#include "coordinator/job/progress_history.h"
#include "coordinator/store/job_storage.h"

namespace tpcoord {

struct MemberView {
  int rank = -1;
  std::string host;
  std::string worker_id;
  bool finished = false;
  int64_t heartbeat_age_ms = -1;
};

struct PhaseTimingView {
  std::string phase;
  int64_t start_unix_ms = 0;
  int64_t duration_ms = -1;  // -1: in progress
};

struct JobView {
  std::string job_id;
  std::optional<TpInitRecord> tp_init;
  std::string merged_config;
  uint64_t generation = 0;
  JobPhase phase = JobPhase::kIdle;
  int world_size = 0;
  int member_count = 0;
  std::vector<MemberView> members;  // by rank, at most kMaxMembersInView
  std::vector<std::string> missing;
  std::vector<PhaseTimingView> timings;
  std::string end_reason;
  bool closed = false;  // CloseJob: no new generation starts
  std::string closed_reason;
  int healthy_members = 0;  // finished, or heard from within the lease
  size_t parked_calls = 0;
  std::optional<TrainingProgress> progress;  // the latest report
  std::optional<double> eval_loss;           // the latest eval loss reported
  std::vector<GenerationRecord> history;     // with details: oldest first
};

// The first few items of a list that may be long, and how many there were: what messages and views show
// of who is missing, without building ten thousand strings for a world of ten thousand.
class Shortlist {
 public:
  static constexpr size_t kShown = 16;

  template <typename MakeItem>
  void Add(MakeItem make_item) {
    if (shown_.size() < kShown) shown_.push_back(make_item());
    ++total_;
  }
  bool empty() const { return total_ == 0; }
  // "a, b, c", or "a, b, ... and 9984 more".
  std::string ToString() const;

 private:
  std::vector<std::string> shown_;
  size_t total_ = 0;
};

}  // namespace tpcoord

#endif  // TPCOORD_COORDINATOR_JOB_JOB_VIEW_H_
