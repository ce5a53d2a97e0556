#include "common/ds_config.h"

#include <gtest/gtest.h>

#include "absl/strings/str_cat.h"
#include "common/python_json.h"

namespace tpcoord {
namespace {

using nlohmann::json;

TEST(ParseDsConfigTest, AcceptsAnObject) {
  absl::StatusOr<json> config = ParseDsConfig(R"({"train_batch_size": 8, "bf16": {"enabled": true}})");
  ASSERT_TRUE(config.ok()) << config.status();
  EXPECT_EQ((*config)["train_batch_size"], 8);
}

TEST(ParseDsConfigTest, RejectsMalformedJsonNamingTheField) {
  absl::StatusOr<json> config = ParseDsConfig(R"({"train_batch_size": })");
  ASSERT_FALSE(config.ok());
  EXPECT_EQ(config.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(config.status().message().substr(0, 31), "config_json is not valid JSON: ");
}

TEST(ParseDsConfigTest, RejectsNonObjects) {
  for (const char* text : {"[]", "3", "\"x\"", "null"}) {
    absl::StatusOr<json> config = ParseDsConfig(text);
    ASSERT_FALSE(config.ok()) << text;
    EXPECT_NE(config.status().message().find("config_json must be a JSON object"), absl::string_view::npos);
  }
}

TEST(ParseDsConfigTest, RejectsDuplicateKeysAtAnyDepth) {
  EXPECT_EQ(ParseDsConfig(R"({"a": 1, "a": 2})").status().message(),
            "config_json has the key \"a\" twice in one object");
  EXPECT_EQ(ParseDsConfig(R"({"x": [{"b": 1, "b": 1}]})").status().message(),
            "config_json has the key \"b\" twice in one object");
  // The same key in different objects is fine.
  EXPECT_TRUE(ParseDsConfig(R"({"a": {"b": 1}, "c": {"b": 2}})").ok());
}

// Python's json keeps integers of any size exactly; nlohmann's would round one beyond 64 bits to a double.
// Refused, naming where, rather than changed without a word.
TEST(ParseDsConfigTest, RejectsIntegersBeyondSixtyFourBitsNamingThePath) {
  EXPECT_EQ(ParseDsConfig(R"({"train_batch_size": 123456789012345678901234567890})").status().message(),
            "config_json has the integer 123456789012345678901234567890 at /train_batch_size, which does not fit in "
            "64 bits; tpcoord keeps numbers exactly or not at all (write it as a string if it must be this large)");
  EXPECT_EQ(ParseDsConfig(R"({"a": [1, {"b/c": [0, -99999999999999999999]}]})").status().message(),
            "config_json has the integer -99999999999999999999 at /a/1/b~1c/1, which does not fit in 64 bits; tpcoord "
            "keeps numbers exactly or not at all (write it as a string if it must be this large)");
  EXPECT_EQ(ParseDsConfig("18446744073709551616").status().code(), absl::StatusCode::kInvalidArgument);
}

// What does fit comes back exactly as Python's json.dumps writes it.
TEST(ParseDsConfigTest, KeepsEveryNumberThatFitsExactly) {
  absl::StatusOr<json> config = ParseDsConfig(
      R"({"u": 18446744073709551615, "i": -9223372036854775808, "f": 0.1, "e": 1e-07, "g": 1e+22, "h": 2.5})");
  ASSERT_TRUE(config.ok()) << config.status();
  EXPECT_EQ(config->dump(),
            R"({"e":1e-07,"f":0.1,"g":1e+22,"h":2.5,"i":-9223372036854775808,"u":18446744073709551615})");
}

TEST(ParseDsConfigTest, RejectsConfigsOverOneMebibyte) {
  std::string big = "{\"pad\": \"" + std::string(kMaxConfigBytes, 'x') + "\"}";
  absl::StatusOr<json> config = ParseDsConfig(big);
  ASSERT_FALSE(config.ok());
  EXPECT_EQ(config.status().message(),
            absl::StrCat("config_json is ", big.size(), " bytes; the limit is 1048576 bytes (1 MiB)"));
}

TEST(FirstDifferenceTest, FindsTheFirstDifferingPath) {
  const json a = {{"train_batch_size", 8}, {"tensor_parallel", {{"autotp_size", 2}}}, {"z", 1}};
  const json b = {{"train_batch_size", 8}, {"tensor_parallel", {{"autotp_size", 4}}}, {"z", 2}};
  std::optional<JsonDifference> diff = FirstDifference(a, b);
  ASSERT_TRUE(diff.has_value());
  EXPECT_EQ(diff->path, "/tensor_parallel/autotp_size");
  EXPECT_EQ(diff->left, "2");
  EXPECT_EQ(diff->right, "4");
}

TEST(FirstDifferenceTest, ReportsMissingKeysAndArrayItems) {
  std::optional<JsonDifference> missing = FirstDifference({{"a", 1}}, {{"a", 1}, {"b", {1, 2}}});
  ASSERT_TRUE(missing.has_value());
  EXPECT_EQ(missing->path, "/b");
  EXPECT_EQ(missing->left, "<absent>");
  EXPECT_EQ(missing->right, "[1,2]");
  std::optional<JsonDifference> item = FirstDifference({{"a", {1, 2}}}, {{"a", {1, 3}}});
  ASSERT_TRUE(item.has_value());
  EXPECT_EQ(item->path, "/a/1");
}

TEST(FirstDifferenceTest, EqualAfterNormalisation) {
  EXPECT_FALSE(FirstDifference(*ParseDsConfig(R"({"b": 2.0, "a": [1]})"), *ParseDsConfig(R"({"a":[1],"b":2})")));
}

TEST(PythonJsonTest, TruthinessAndIntEqualityAsInPython) {
  for (const json& falsy : {json(nullptr), json(false), json(0), json(0.0), json(""), json::array(), json::object()}) {
    EXPECT_FALSE(PyTruthy(falsy)) << falsy;
  }
  for (const json& truthy : {json(true), json(2), json(-1), json(0.5), json("auto"), json("false"), json({1})}) {
    EXPECT_TRUE(PyTruthy(truthy)) << truthy;
  }
  EXPECT_TRUE(PyEqualsInt(json(2), 2));
  EXPECT_TRUE(PyEqualsInt(json(2.0), 2));
  EXPECT_TRUE(PyEqualsInt(json(true), 1));
  EXPECT_FALSE(PyEqualsInt(json("2"), 2));
  EXPECT_FALSE(PyEqualsInt(json(nullptr), 0));
  EXPECT_EQ(PyStr(json("auto")), "auto");
  EXPECT_EQ(PyStr(json(2)), "2");
  EXPECT_EQ(PyStr(json(true)), "true");
}

}  // namespace
}  // namespace tpcoord
