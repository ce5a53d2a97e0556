// The coordinator's status page (GET / on --metrics-listen): one row per job with its phase, generation,
// members, training progress and loss curve, as plain HTML with an inline SVG per curve drawn here. No
// script and no fetch: the page reloads itself every few seconds, so it works in any browser, behind any
// proxy, and reads the same in a screenshot.
#ifndef TPCOORD_COORDINATOR_OPS_STATUS_PAGE_H_
#define TPCOORD_COORDINATOR_OPS_STATUS_PAGE_H_

#include <string>
#include <vector>

#include "absl/time/time.h"
#include "coordinator/job/job_view.h"
#include "coordinator/job/progress_history.h"

namespace tpcoord {

struct JobOnPage {
  JobView view;
  std::vector<CurvePoint> curve;
};

// The page for `jobs` (in the order given) out of `total_jobs`, as of `now`.
std::string RenderStatusPage(const std::vector<JobOnPage>& jobs, size_t total_jobs, absl::Time now);

// The curve as an <svg> whose <polyline class="loss"> has one point per finite loss of `curve`.
std::string LossCurveSvg(const std::vector<CurvePoint>& curve);

// `text` with &, <, >, " and ' escaped for HTML text and attribute values.
std::string HtmlEscape(const std::string& text);

}  // namespace tpcoord

#endif  // TPCOORD_COORDINATOR_OPS_STATUS_PAGE_H_
