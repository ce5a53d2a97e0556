#include "common/identifiers.h"

#include <gtest/gtest.h>

namespace tpcoord {
namespace {

TEST(IdentifiersTest, JobIds) {
  EXPECT_TRUE(ValidateJobId("llama-7b_run.3").ok());
  EXPECT_TRUE(ValidateJobId(std::string(128, 'a')).ok());
  EXPECT_EQ(ValidateJobId("").message(), "job_id is empty; it must be 1-128 characters from [A-Za-z0-9._-]");
  EXPECT_EQ(ValidateJobId(std::string(129, 'a')).message().substr(0, 10), "job_id \"aa");
  EXPECT_NE(ValidateJobId(std::string(129, 'a')).message().find("129 characters long; the limit is 128"),
            absl::string_view::npos);
  EXPECT_EQ(ValidateJobId("a/b").message(), "job_id \"a/b\" contains \"/\"; allowed characters are [A-Za-z0-9._-]");
  EXPECT_EQ(ValidateJobId(std::string("a\0b", 3)).message(),
            "job_id \"a\\000b\" contains \"\\000\"; allowed characters are [A-Za-z0-9._-]");
  EXPECT_EQ(ValidateJobId("a b").code(), absl::StatusCode::kInvalidArgument);
}

TEST(IdentifiersTest, WorkersHostsBarriersAndKeys) {
  EXPECT_TRUE(ValidateWorkerId("node-1:4242:9f3a").ok());
  EXPECT_FALSE(ValidateWorkerId("has space").ok());
  EXPECT_TRUE(ValidateHost("10.0.0.7").ok());
  EXPECT_TRUE(ValidateHost("fe80::1").ok());
  EXPECT_FALSE(ValidateHost("a/b").ok());
  EXPECT_TRUE(ValidateBarrierName("init/comm:tp").ok());
  EXPECT_FALSE(ValidateBarrierName("").ok());
  EXPECT_TRUE(ValidateStoreKey("/default_pg/0//cpu//0").ok());
  EXPECT_EQ(ValidateStoreKey("").message(), "key is empty");
  EXPECT_FALSE(ValidateStoreKey(std::string(1025, 'k')).ok());
  EXPECT_FALSE(ValidateStoreKey(std::string("a\0", 2)).ok());
}

TEST(IdentifiersTest, PrintableText) {
  EXPECT_TRUE(ValidatePrintableText("reason", "", 1024).ok());
  EXPECT_TRUE(ValidatePrintableText("reason", "torchrun on host h finished: 100% \xe2\x9c\x93 \xf0\x9f\x9a\x80", 1024).ok());
  EXPECT_EQ(ValidatePrintableText("reason", "abcd", 3).message(), "reason \"abcd\" is 4 bytes long; the limit is 3");
  EXPECT_EQ(ValidatePrintableText("reason", "a\tb", 16).message(),
            "reason \"a\\tb\" contains the control character \"\\t\" at byte 1; give printable UTF-8 text");
  EXPECT_EQ(ValidatePrintableText("reason", "a\x7f", 16).message(),
            "reason \"a\\177\" contains the control character \"\\177\" at byte 1; give printable UTF-8 text");
  EXPECT_EQ(ValidatePrintableText("reason", "a\xc2\x85", 16).message(),  // U+0085, a C1 control
            "reason \"a\\302\\205\" contains the control character \"\\302\\205\" at byte 1; give printable UTF-8 text");
  for (const char* bad : {"\xc0\xaf", "\xe0\x80\xaf", "\xed\xa0\x80", "\xf4\x90\x80\x80", "\xe2\x9c", "\x80"}) {
    const absl::Status s = ValidatePrintableText("reason", bad, 16);
    EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << bad;
    EXPECT_NE(s.message().find("is not valid UTF-8 at byte 0"), absl::string_view::npos) << s;
  }
}

TEST(IdentifiersTest, QuoteForErrorEscapesAndCuts) {
  EXPECT_EQ(QuoteForError("ab\n"), "\"ab\\n\"");
  EXPECT_EQ(QuoteForError(std::string(200, 'x')), "\"" + std::string(160, 'x') + "...\"");
}

}  // namespace
}  // namespace tpcoord
