// Log lines: the text form people read (unchanged by --log-format), and one JSON object per line.
#include "common/log_line.h"

#include <gtest/gtest.h>

#include "nlohmann/json.hpp"

namespace tpcoord {
namespace {

const absl::Time kNoon = absl::FromUnixMillis(1796212800123);  // 2026-12-02T12:00:00.123Z

TEST(LogLineTest, TextReadsAsBefore) {
  LogLine line;
  line.message = "running: 4 workers = tp 2 x dp 2";
  line.job = "llama";
  line.generation = 2;
  EXPECT_EQ(FormatLogLine(LogFormat::kText, "tp-coordinator", line, kNoon),
            "2026-12-02T12:00:00.123Z tp-coordinator job llama generation 2: running: 4 workers = tp 2 x dp 2");
  EXPECT_EQ(FormatLogLine(LogFormat::kText, "tp-coordinator", LogLine{"stopped"}, kNoon),
            "2026-12-02T12:00:00.123Z tp-coordinator stopped");
}

TEST(LogLineTest, JsonHasTheFieldsALineHas) {
  LogLine line{"ended: rank 3 left", "info", "ended", "llama", 2, 3};
  nlohmann::json json = nlohmann::json::parse(FormatLogLine(LogFormat::kJson, "tp-coordinator", line, kNoon));
  EXPECT_EQ(json, nlohmann::json::parse(R"({"time": "2026-12-02T12:00:00.123Z", "level": "info",
      "program": "tp-coordinator", "job": "llama", "generation": 2, "rank": 3, "event": "ended",
      "message": "ended: rank 3 left"})"));
  json = nlohmann::json::parse(FormatLogLine(LogFormat::kJson, "tp-coordinator", LogLine{"stopped"}, kNoon));
  EXPECT_FALSE(json.contains("job"));
  EXPECT_FALSE(json.contains("generation"));
  EXPECT_FALSE(json.contains("rank"));
}

TEST(LogLineTest, BytesThatAreNotUtf8StillMakeOneValidLine) {
  const std::string text = FormatLogLine(LogFormat::kJson, "x", LogLine{"bad \xff\xfe bytes\nand a newline"}, kNoon);
  EXPECT_EQ(text.find('\n'), std::string::npos);
  EXPECT_TRUE(nlohmann::json::accept(text));
}

TEST(LogLineTest, FormatNames) {
  EXPECT_EQ(*ParseLogFormat("json"), LogFormat::kJson);
  EXPECT_EQ(ParseLogFormat("xml").status().message(), "log format \"xml\" is neither text nor json");
}

}  // namespace
}  // namespace tpcoord
