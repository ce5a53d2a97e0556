// Views: Shortlist, and Job's phase timings, who is missing, and what an operator sees of a job.
#include "coordinator/job/job_view.h"

#include "coordinator/job/job.h"

#include <algorithm>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/identifiers.h"
#include "coordinator/job/job_internal.h"

namespace tpcoord {

std::string Shortlist::ToString() const {
  std::string text = absl::StrJoin(shown_, ", ");
  if (total_ > shown_.size()) absl::StrAppend(&text, " and ", total_ - shown_.size(), " more");
  return text;
}

using job_internal::UnixMillisNow;

void Job::BeginPhase(const std::string& phase) {
  gen_->timings.push_back({phase, UnixMillisNow(), Clock::now(), std::nullopt});
}

void Job::EndPhase(const std::string& phase) {
  for (auto it = gen_->timings.rbegin(); it != gen_->timings.rend(); ++it) {
    if (it->phase == phase && !it->end) {
      it->end = Clock::now();
      return;
    }
  }
}

std::string Job::DescribeRank(int rank) const {
  if (rank < 0 || rank >= static_cast<int>(gen_->members.size())) return absl::StrCat("rank ", rank);
  return absl::StrCat("rank ", rank, " (host ", gen_->members[rank].host, ")");
}

Shortlist Job::MissingForJoin() const {
  const Generation& g = *gen_;
  std::vector<bool> requested(header_.world_size, false);
  int unrequested = 0;
  for (const Member& m : g.members) {
    if (m.requested_rank)
      requested[*m.requested_rank] = true;
    else
      ++unrequested;
  }
  Shortlist missing;
  if (unrequested == 0) {  // every worker asked for its rank: the free ranks are exactly who is missing
    for (int r = 0; r < header_.world_size; ++r) {
      if (!requested[r]) missing.Add([r] { return absl::StrCat("rank ", r); });
    }
    return missing;
  }
  for (const PreviousMember& p : previous_members_) {
    if (!g.by_worker.count(p.worker_id)) {
      missing.Add([&] {
        mu_.AssertHeld();
        return absl::StrCat("rank ", p.rank, " of generation ", header_.generation - 1, " (host ", p.host, ")");
      });
    }
  }
  if (missing.empty()) {
    missing.Add([&] {
      mu_.AssertHeld();
      return absl::StrCat(header_.world_size - static_cast<int>(g.members.size()), " worker(s)");
    });
  }
  return missing;
}

std::vector<CurvePoint> Job::Curve() const {
  MutexLock lock(&mu_);
  return progress_.curve();
}

std::optional<JobView> Job::View(bool with_details) const {
  MutexLock lock(&mu_);
  if (!born_ || gone()) return std::nullopt;
  const Generation& g = *gen_;
  JobView view;
  view.job_id = id_;
  view.tp_init = header_.tp_init;
  view.merged_config = merged_config_;
  view.generation = header_.generation;
  view.phase = header_.phase;
  view.world_size = header_.world_size;
  view.end_reason = header_.end_reason;
  view.closed = header_.closed;
  view.closed_reason = header_.closed_reason;
  view.member_count = static_cast<int>(g.members.size());
  view.parked_calls = parked_.size();
  view.progress = progress_.latest();
  view.eval_loss = progress_.eval_loss();
  for (const auto& t : g.timings) {
    view.timings.push_back(
        {t.phase, t.start_unix_ms, t.end ? std::chrono::duration_cast<Millis>(*t.end - t.start).count() : -1});
  }
  // What the job waits for, per awaited event rather than per parked call: ten thousand calls parked in one
  // barrier are one line, and the view costs O(world size), not O(world size squared).
  if (header_.phase == JobPhase::kJoining) view.missing.push_back("join: " + MissingForJoin().ToString());
  for (const std::string& name : g.barriers.Open()) {
    Shortlist ranks;
    for (int r : g.barriers.Missing(name, header_.world_size)) {
      ranks.Add([&] {
        mu_.AssertHeld();
        return DescribeRank(r);
      });
    }
    view.missing.push_back(absl::StrCat("barrier \"", name, "\": ", ranks.ToString()));
  }
  for (const GroupId& group : g.ids.watchers().Keys()) {
    view.missing.push_back(
        absl::StrCat("the unique id of ", GroupName(group), " from its leader ", DescribeRank(g.mesh.Leader(group))));
  }
  Shortlist keys;
  for (const std::string& key : g.kv.watchers().Keys()) keys.Add([&] { return QuoteForError(key); });
  if (!keys.empty()) view.missing.push_back("store keys " + keys.ToString());
  const Clock::time_point now = Clock::now();
  const bool live = g.leases.started() && header_.phase == JobPhase::kRunning;
  if (live) {
    for (int rank = 0; rank < header_.world_size; ++rank) {
      if (g.leases.finished(rank) || g.leases.AgeMs(rank, now) <= options_.lease.count()) ++view.healthy_members;
    }
  }
  if (!with_details) return view;
  view.history.assign(history_.begin(), history_.end());
  for (size_t i = 0; i < g.members.size() && view.members.size() < static_cast<size_t>(kMaxMembersInView); ++i) {
    const Member& m = g.members[i];
    const bool finished = m.rank >= 0 && g.leases.started() && g.leases.finished(m.rank);
    view.members.push_back(
        {m.rank, m.host, m.worker_id, finished, live && m.rank >= 0 ? g.leases.AgeMs(m.rank, now) : -1});
  }
  std::sort(view.members.begin(), view.members.end(), [](const MemberView& a, const MemberView& b) {
    return a.rank != b.rank ? a.rank < b.rank : a.worker_id < b.worker_id;
  });
  return view;
}

}  // namespace tpcoord
