#include "coordinator/ops/status_page.h"

#include <algorithm>
#include <cmath>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"

namespace tpcoord {
namespace {

// The curve's frame: a plot area inset by the margins, in SVG user units.
constexpr double kWidth = 320, kHeight = 96, kLeft = 44, kRight = 8, kTop = 8, kBottom = 18;

std::string Number(double value) {
  if (!std::isfinite(value)) return absl::StrCat(value);
  return absl::StrFormat("%.4g", value);
}

std::string Duration(double seconds) {
  if (seconds < 60) return absl::StrFormat("%.0fs", seconds);
  if (seconds < 3600)
    return absl::StrFormat("%dm%02ds", static_cast<int>(seconds) / 60, static_cast<int>(seconds) % 60);
  return absl::StrFormat("%dh%02dm", static_cast<int>(seconds) / 3600, static_cast<int>(seconds) / 60 % 60);
}

std::string ProgressCell(const JobView& view) {
  if (!view.progress) return "&ndash;";
  const TrainingProgress& p = *view.progress;
  std::string cell =
      p.total_steps > 0 ? absl::StrFormat("step %d / %d", p.step, p.total_steps) : absl::StrFormat("step %d", p.step);
  absl::StrAppend(&cell, "<br>loss ", Number(p.loss));
  if (view.eval_loss) absl::StrAppend(&cell, " &middot; eval ", Number(*view.eval_loss));
  absl::StrAppend(&cell, "<br>", absl::StrFormat("%.0f", p.tokens_per_second), " tokens/s &middot; ",
                  absl::StrFormat("%.1f", p.step_seconds * 1000), " ms/step");
  if (p.total_steps > p.step && view.phase == JobPhase::kRunning) {
    absl::StrAppend(&cell, "<br>ETA ", Duration(p.step_seconds * static_cast<double>(p.total_steps - p.step)));
  }
  return cell;
}

}  // namespace

std::string HtmlEscape(const std::string& text) {
  std::string out;
  out.reserve(text.size());
  for (char c : text) {
    switch (c) {
      case '&': out += "&amp;"; break;
      case '<': out += "&lt;"; break;
      case '>': out += "&gt;"; break;
      case '"': out += "&quot;"; break;
      case '\'': out += "&#39;"; break;
      default: out += c;
    }
  }
  return out;
}

std::string LossCurveSvg(const std::vector<CurvePoint>& curve) {
  std::vector<CurvePoint> points;
  for (const CurvePoint& p : curve) {
    if (std::isfinite(p.loss)) points.push_back(p);
  }
  std::string svg = absl::StrFormat(
      "<svg class=\"curve\" xmlns=\"http://www.w3.org/2000/svg\" width=\"%.0f\" height=\"%.0f\" viewBox=\"0 0 %.0f "
      "%.0f\">",
      kWidth, kHeight, kWidth, kHeight);
  absl::StrAppendFormat(&svg, "<rect x=\"%.0f\" y=\"%.0f\" width=\"%.0f\" height=\"%.0f\" class=\"frame\"/>", kLeft,
                        kTop, kWidth - kLeft - kRight, kHeight - kTop - kBottom);
  if (points.empty())
    return absl::StrCat(svg, "<text x=\"150\" y=\"50\" class=\"axis\">no steps reported</text></svg>");
  double low = points[0].loss, high = points[0].loss;
  for (const CurvePoint& p : points) {
    low = std::min(low, p.loss);
    high = std::max(high, p.loss);
  }
  if (high - low < 1e-12) high = low + 1;
  const double first = static_cast<double>(points.front().step), last = static_cast<double>(points.back().step);
  const double span = std::max(last - first, 1.0);
  std::string coordinates;
  for (const CurvePoint& p : points) {
    const double x = kLeft + (static_cast<double>(p.step) - first) / span * (kWidth - kLeft - kRight);
    const double y = kTop + (high - p.loss) / (high - low) * (kHeight - kTop - kBottom);
    absl::StrAppendFormat(&coordinates, "%s%.1f,%.1f", coordinates.empty() ? "" : " ", x, y);
  }
  absl::StrAppend(&svg, "<polyline class=\"loss\" points=\"", coordinates, "\"/>");
  absl::StrAppendFormat(&svg, "<text x=\"%.0f\" y=\"%.0f\" class=\"axis\" text-anchor=\"end\">%s</text>", kLeft - 4,
                        kTop + 8, Number(high));
  absl::StrAppendFormat(&svg, "<text x=\"%.0f\" y=\"%.0f\" class=\"axis\" text-anchor=\"end\">%s</text>", kLeft - 4,
                        kHeight - kBottom, Number(low));
  absl::StrAppendFormat(&svg, "<text x=\"%.0f\" y=\"%.0f\" class=\"axis\">step %d</text>", kLeft, kHeight - 4,
                        points.front().step);
  absl::StrAppendFormat(&svg, "<text x=\"%.0f\" y=\"%.0f\" class=\"axis\" text-anchor=\"end\">step %d</text>",
                        kWidth - kRight, kHeight - 4, points.back().step);
  return absl::StrCat(svg, "</svg>");
}

std::string RenderStatusPage(const std::vector<JobOnPage>& jobs, size_t total_jobs, absl::Time now) {
  std::string page = R"(<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><meta http-equiv="refresh" content="5">
<title>tpcoord status</title>
<style>
body{font:14px/1.4 system-ui,sans-serif;margin:24px;color:#1d2330;background:#f7f8fa}
h1{font-size:20px;margin:0 0 4px}.sub{color:#5b6475;margin:0 0 16px}
table{border-collapse:collapse;background:#fff;box-shadow:0 1px 3px rgba(0,0,0,.12)}
th,td{padding:8px 12px;border-bottom:1px solid #e4e7ec;text-align:left;vertical-align:top;white-space:nowrap}
th{background:#eef1f5;font-weight:600}.job{font-weight:600;font-family:ui-monospace,monospace}
.phase{display:inline-block;padding:1px 8px;border-radius:10px;color:#fff;font-size:12px}
.idle{background:#8a94a6}.joining{background:#c28a00}.running{background:#1f7ae0}
.completed{background:#1e9e5a}.failed{background:#d2372c}.reason{color:#a02a22;max-width:360px;font-size:12px;white-space:normal}
svg .frame{fill:#fbfcfd;stroke:#d5dae1}svg .loss{fill:none;stroke:#1f7ae0;stroke-width:1.5}
svg .axis{font-size:10px;fill:#5b6475}
</style></head><body>
<h1>tpcoord coordinator</h1>
)";
  absl::StrAppend(&page, "<p class=\"sub\">", total_jobs, " job(s)",
                  jobs.size() < total_jobs ? absl::StrCat(", the first ", jobs.size(), " shown") : "", " &middot; ",
                  absl::FormatTime("%Y-%m-%d %H:%M:%S UTC", now, absl::UTCTimeZone()),
                  " &middot; refreshes every 5 s &middot; <a href=\"/metrics\">/metrics</a></p>\n");
  page +=
      "<table><tr><th>job</th><th>phase</th><th>generation</th><th>members</th><th>training</th><th>loss</th></tr>\n";
  for (const JobOnPage& job : jobs) {
    const JobView& v = job.view;
    const std::string phase(JobPhaseName(v.phase));
    absl::StrAppend(&page, "<tr class=\"row\" id=\"job-", HtmlEscape(v.job_id), "\"><td class=\"job\">",
                    HtmlEscape(v.job_id), "</td><td><span class=\"phase ", phase, "\">", phase, "</span>");
    if (!v.end_reason.empty()) absl::StrAppend(&page, "<div class=\"reason\">", HtmlEscape(v.end_reason), "</div>");
    absl::StrAppend(&page, "</td><td>", v.generation == 0 ? "&ndash;" : absl::StrCat(v.generation), "</td><td>");
    if (v.phase == JobPhase::kRunning) {
      absl::StrAppend(&page, v.healthy_members, " / ", v.world_size, " healthy");
    } else {
      absl::StrAppend(&page, v.member_count, " / ", v.world_size);
    }
    absl::StrAppend(&page, "</td><td>", ProgressCell(v), "</td><td>", LossCurveSvg(job.curve), "</td></tr>\n");
  }
  page += "</table></body></html>\n";
  return page;
}

}  // namespace tpcoord
