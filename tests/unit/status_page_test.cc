// The status page: one row per job, an SVG curve with one point per finite loss, and every text escaped.
#include "coordinator/ops/status_page.h"

#include <gtest/gtest.h>

#include <cmath>

#include "absl/strings/str_split.h"

namespace tpcoord {
namespace {

size_t PointsOf(const std::string& svg) {
  const size_t start = svg.find("points=\"");
  if (start == std::string::npos) return 0;
  const size_t end = svg.find('"', start + 8);
  return std::vector<std::string>(absl::StrSplit(svg.substr(start + 8, end - start - 8), ' ')).size();
}

TEST(StatusPageTest, TheCurveHasOnePointPerFiniteLoss) {
  std::vector<CurvePoint> curve;
  for (int step = 1; step <= 25; ++step) curve.push_back({step, 10.0 / step});
  EXPECT_EQ(PointsOf(LossCurveSvg(curve)), 25u);
  curve.push_back({26, std::nan("")});
  curve.push_back({27, INFINITY});
  EXPECT_EQ(PointsOf(LossCurveSvg(curve)), 25u);
  const std::string flat = LossCurveSvg({{1, 2.0}});  // one point, no range: still drawn
  EXPECT_EQ(PointsOf(flat), 1u);
  EXPECT_NE(LossCurveSvg({}).find("no steps reported"), std::string::npos);
}

TEST(StatusPageTest, ShowsEveryJobWithItsPhaseProgressAndEscapedReason) {
  JobOnPage running;
  running.view.job_id = "llama-run1";
  running.view.phase = JobPhase::kRunning;
  running.view.generation = 2;
  running.view.world_size = 4;
  running.view.healthy_members = 3;
  running.view.progress = TrainingProgress{40, 100, 2.5, 1234, 0.5, std::nullopt};
  running.curve = {{1, 5.0}, {40, 2.5}};
  JobOnPage failed;
  failed.view.job_id = "b";
  failed.view.phase = JobPhase::kFailed;
  failed.view.end_reason = "rank 1 (host <evil>) left: \"oom\" & more";
  const std::string page = RenderStatusPage({running, failed}, 7, absl::FromUnixSeconds(0));
  EXPECT_NE(page.find("<td class=\"job\">llama-run1</td>"), std::string::npos);
  EXPECT_NE(page.find("3 / 4 healthy"), std::string::npos);
  EXPECT_NE(page.find("step 40 / 100"), std::string::npos);
  EXPECT_NE(page.find("ETA 30s"), std::string::npos);
  EXPECT_NE(page.find("rank 1 (host &lt;evil&gt;) left: &quot;oom&quot; &amp; more"), std::string::npos);
  EXPECT_EQ(page.find("<evil>"), std::string::npos);
  EXPECT_NE(page.find("7 job(s), the first 2 shown"), std::string::npos);
  EXPECT_EQ(page.find("<script"), std::string::npos);
}

}  // namespace
}  // namespace tpcoord
