#include "common/safetensors_header.h"

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace tpcoord {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::StartsWith;

constexpr char kFile[] = "m.safetensors";

// The 8-byte little-endian length n.
std::string Length(uint64_t n) {
  std::string bytes;
  for (int i = 0; i < 8; ++i) bytes.push_back(static_cast<char>((n >> (8 * i)) & 0xff));
  return bytes;
}

// A whole file: the length of `header`, `header`, then `data_bytes` zero bytes of data.
std::string File(const std::string& header, uint64_t data_bytes = 0) {
  return Length(header.size()) + header + std::string(data_bytes, '\0');
}

absl::StatusOr<SafetensorsHeader> Parse(const std::string& file) {
  return ParseSafetensorsHeader(file, file.size(), kFile);
}

// The status of parsing `header` followed by `data_bytes` bytes of data.
absl::Status Status(const std::string& header, uint64_t data_bytes = 0) {
  return Parse(File(header, data_bytes)).status();
}

// One header entry.
std::string Entry(const std::string& name, const std::string& dtype, const std::string& shape, uint64_t begin,
                  uint64_t end) {
  return "\"" + name + "\":{\"dtype\":\"" + dtype + "\",\"shape\":" + shape + ",\"data_offsets\":[" +
         std::to_string(begin) + "," + std::to_string(end) + "]}";
}

void ExpectError(const absl::Status& status, absl::StatusCode code, const std::string& message) {
  EXPECT_EQ(status.code(), code) << status;
  EXPECT_EQ(status.message(), message);
}

void ExpectDataLoss(const absl::Status& status, const std::string& message) {
  ExpectError(status, absl::StatusCode::kDataLoss, message);
}

// --- dtypes -------------------------------------------------------------------------------------------

TEST(SafetensorsDtypeTest, NamesAndSizes) {
  EXPECT_EQ(SafetensorsDtypeName(SafetensorsDtype::kF32), "F32");
  EXPECT_EQ(SafetensorsDtypeName(SafetensorsDtype::kF16), "F16");
  EXPECT_EQ(SafetensorsDtypeName(SafetensorsDtype::kBF16), "BF16");
  EXPECT_EQ(SafetensorsDtypeSize(SafetensorsDtype::kF32), 4u);
  EXPECT_EQ(SafetensorsDtypeSize(SafetensorsDtype::kF16), 2u);
  EXPECT_EQ(SafetensorsDtypeSize(SafetensorsDtype::kBF16), 2u);
  for (SafetensorsDtype d : {SafetensorsDtype::kF32, SafetensorsDtype::kF16, SafetensorsDtype::kBF16}) {
    EXPECT_EQ(SafetensorsDtypeFromName(SafetensorsDtypeName(d)), d);
  }
  EXPECT_EQ(SafetensorsDtypeFromName("f32"), std::nullopt);
  EXPECT_EQ(SafetensorsDtypeFromName("I64"), std::nullopt);
  EXPECT_EQ(SafetensorsDtypeFromName(""), std::nullopt);
}

// --- valid headers ------------------------------------------------------------------------------------

TEST(SafetensorsHeaderTest, ParsesTwoTensorsGivenOutOfOffsetOrder) {
  // "b" sorts first by name but its data comes second; trailing spaces pad the header as writers do.
  const std::string header =
      "{" + Entry("b", "F32", "[2,3]", 4, 28) + "," + Entry("a", "BF16", "[2]", 0, 4) + "}   ";
  const std::string file = File(header, 28);
  absl::StatusOr<SafetensorsHeader> parsed = Parse(file);
  ASSERT_TRUE(parsed.ok()) << parsed.status();
  EXPECT_EQ(parsed->data_offset, 8 + header.size());
  EXPECT_TRUE(parsed->metadata.empty());
  ASSERT_EQ(parsed->tensors.size(), 2u);
  const SafetensorsEntry& a = parsed->tensors[0];
  EXPECT_EQ(a.name, "a");
  EXPECT_EQ(a.dtype, SafetensorsDtype::kBF16);
  EXPECT_THAT(a.shape, ElementsAre(2));
  EXPECT_EQ(a.begin, 0u);
  EXPECT_EQ(a.end, 4u);
  const SafetensorsEntry& b = parsed->tensors[1];
  EXPECT_EQ(b.name, "b");
  EXPECT_EQ(b.dtype, SafetensorsDtype::kF32);
  EXPECT_THAT(b.shape, ElementsAre(2, 3));
  EXPECT_EQ(b.begin, 4u);
  EXPECT_EQ(b.end, 28u);
}

TEST(SafetensorsHeaderTest, ParsesMetadata) {
  absl::StatusOr<SafetensorsHeader> parsed = Parse(
      File("{\"__metadata__\":{\"format\":\"pt\",\"note\":\"\"}," + Entry("w", "F16", "[3]", 0, 6) + "}", 6));
  ASSERT_TRUE(parsed.ok()) << parsed.status();
  EXPECT_EQ(parsed->metadata, (std::map<std::string, std::string>{{"format", "pt"}, {"note", ""}}));
  ASSERT_EQ(parsed->tensors.size(), 1u);
  EXPECT_EQ(parsed->tensors[0].name, "w");
}

TEST(SafetensorsHeaderTest, ParsesAnEmptyHeaderScalarsAndEmptyTensors) {
  absl::StatusOr<SafetensorsHeader> empty = Parse(File("{}"));
  ASSERT_TRUE(empty.ok()) << empty.status();
  EXPECT_TRUE(empty->tensors.empty());
  EXPECT_EQ(empty->data_offset, 10u);

  // Empty tensors may share an offset; they keep name order. A scalar has shape [] and one element.
  absl::StatusOr<SafetensorsHeader> parsed = Parse(File("{" + Entry("z", "F32", "[0,4]", 0, 0) + "," +
                                                        Entry("y", "F16", "[3,0]", 0, 0) + "," +
                                                        Entry("s", "F32", "[]", 0, 4) + "}",
                                                        4));
  ASSERT_TRUE(parsed.ok()) << parsed.status();
  ASSERT_EQ(parsed->tensors.size(), 3u);
  EXPECT_EQ(parsed->tensors[0].name, "y");
  EXPECT_EQ(parsed->tensors[1].name, "z");
  EXPECT_EQ(parsed->tensors[2].name, "s");
  EXPECT_TRUE(parsed->tensors[2].shape.empty());

  // A zero dimension makes any other size legal, up to INT64_MAX.
  EXPECT_TRUE(Parse(File("{" + Entry("h", "F32", "[0,9223372036854775807,9223372036854775807]", 0, 0) + "}")).ok());
}

TEST(SafetensorsHeaderTest, LooksOnlyAtTheHeaderOfALongerPrefix) {
  // The prefix may be the whole file; the data bytes are not looked at.
  const std::string header = "{" + Entry("w", "F32", "[1]", 0, 4) + "}";
  const std::string file = Length(header.size()) + header + "\xff\xff\xff\xff";
  EXPECT_TRUE(ParseSafetensorsHeader(file, file.size(), kFile).ok());
  // ...or just the length and the header.
  EXPECT_TRUE(ParseSafetensorsHeader(file.substr(0, 8 + header.size()), file.size(), kFile).ok());
}

// --- the length ---------------------------------------------------------------------------------------

TEST(SafetensorsHeaderTest, RejectsFilesShorterThanTheLength) {
  for (const std::string& file : {std::string(), std::string("abc"), std::string(7, '\0')}) {
    ExpectDataLoss(Parse(file).status(), "m.safetensors: shorter than the 8-byte header length");
    ExpectDataLoss(ParseSafetensorsHeaderLength(file, file.size(), kFile).status(),
                   "m.safetensors: shorter than the 8-byte header length");
  }
  // A prefix shorter than 8 bytes of a file that is long enough (a short read).
  ExpectDataLoss(ParseSafetensorsHeader("abc", 100, kFile).status(),
                 "m.safetensors: shorter than the 8-byte header length");
}

TEST(SafetensorsHeaderTest, RejectsALengthBeyondTheFileOrTheCap) {
  ExpectDataLoss(Parse(Length(100) + "{}").status(), "m.safetensors: header length 100 does not fit a file of 10 bytes");
  ExpectDataLoss(Parse(Length(UINT64_MAX) + "{}").status(),
                 "m.safetensors: header length 18446744073709551615 does not fit a file of 10 bytes");
  ExpectDataLoss(Parse(Length(1)).status(), "m.safetensors: header length 1 does not fit a file of 8 bytes");
  // 100 MB is the most a header may be, however large the file.
  absl::StatusOr<uint64_t> at_cap = ParseSafetensorsHeaderLength(Length(100'000'000), 1'000'000'000, kFile);
  ASSERT_TRUE(at_cap.ok()) << at_cap.status();
  EXPECT_EQ(*at_cap, kMaxSafetensorsHeaderBytes);
  ExpectDataLoss(ParseSafetensorsHeaderLength(Length(100'000'001), 1'000'000'000, kFile).status(),
                 "m.safetensors: header length 100000001 does not fit a file of 1000000000 bytes");
  ExpectDataLoss(ParseSafetensorsHeader(Length(100'000'001), 1'000'000'000, kFile).status(),
                 "m.safetensors: header length 100000001 does not fit a file of 1000000000 bytes");
}

TEST(SafetensorsHeaderTest, RejectsAPrefixThatStopsInsideTheHeader) {
  const std::string file = File("{" + Entry("w", "F32", "[1]", 0, 4) + "}", 4);
  ExpectDataLoss(ParseSafetensorsHeader(file.substr(0, 8), file.size(), kFile).status(),
                 "m.safetensors: truncated header");
  ExpectDataLoss(ParseSafetensorsHeader(file.substr(0, 20), file.size(), kFile).status(),
                 "m.safetensors: truncated header");
}

TEST(SafetensorsHeaderTest, RejectsAPrefixLongerThanTheFile) {
  const std::string file = File("{}");
  ExpectError(ParseSafetensorsHeader(file, 9, kFile).status(), absl::StatusCode::kInvalidArgument,
              "m.safetensors: 10 bytes given as the start of a file of only 9");
}

// --- the JSON -----------------------------------------------------------------------------------------

TEST(SafetensorsHeaderTest, RejectsHeadersThatAreNotJsonObjects) {
  for (const std::string header : {"[]", "[1,2]", "\"text\"", "null", "7", "  true  "}) {
    ExpectDataLoss(Status(header), "m.safetensors: header is not a JSON object");
  }
  ExpectDataLoss(Status("not json"),
                 "m.safetensors: header is not valid JSON: [json.exception.parse_error.101] parse error at line 1, "
                 "column 2: syntax error while parsing value - invalid literal; last read: 'no'");
  ExpectDataLoss(Status(""),
                 "m.safetensors: header is not valid JSON: [json.exception.parse_error.101] parse error at line 1, "
                 "column 1: syntax error while parsing value - unexpected end of input; expected '[', '{', or a "
                 "literal");
  ExpectDataLoss(Status("{} {}"),
                 "m.safetensors: header is not valid JSON: [json.exception.parse_error.101] parse error at line 1, "
                 "column 4: syntax error while parsing value - unexpected '{'; expected end of input");
  // A NUL byte, which nlohmann's lexer would take for the end of the input, is an error wherever it is:
  // the reference implementation refuses it too (the header may be padded with spaces only).
  ExpectDataLoss(Status(std::string("{}\0\0\0\0\0\0", 8)),
                 "m.safetensors: header is not valid JSON: a NUL byte at offset 2");
  ExpectDataLoss(Status(std::string("{}\0junk", 7)), "m.safetensors: header is not valid JSON: a NUL byte at offset 2");
  ExpectDataLoss(Status(std::string("{\"a\0\":1}", 8)),
                 "m.safetensors: header is not valid JSON: a NUL byte at offset 3");
}

TEST(SafetensorsHeaderTest, RejectsAHeaderNested10000LevelsDeep) {
  const std::string deep = std::string(10000, '[') + std::string(10000, ']');
  ExpectDataLoss(Status(deep), "m.safetensors: header nests deeper than 64 levels");
  ExpectDataLoss(Status("{\"w\":{\"dtype\":\"F32\",\"shape\":" + deep + ",\"data_offsets\":[0,4]}}", 4),
                 "m.safetensors: header nests deeper than 64 levels");
  // Unclosed, and in objects.
  ExpectDataLoss(Status(std::string(10000, '[')), "m.safetensors: header nests deeper than 64 levels");
  std::string objects;
  for (int i = 0; i < 10000; ++i) objects += "{\"a\":";
  ExpectDataLoss(Status(objects), "m.safetensors: header nests deeper than 64 levels");
  // 64 levels are allowed (here: the header, an entry, its shape and 61 more arrays inside the shape).
  EXPECT_EQ(Status("{\"w\":{\"dtype\":\"F32\",\"shape\":" + std::string(62, '[') + std::string(62, ']') +
                   ",\"data_offsets\":[0,4]}}",
                   4)
                .message(),
            "m.safetensors: tensor 'w': shape " + std::string(62, '[') + std::string(62, ']') +
                " is not a list of sizes");
  EXPECT_EQ(Status("{\"w\":{\"dtype\":\"F32\",\"shape\":" + std::string(63, '[') + std::string(63, ']') +
                   ",\"data_offsets\":[0,4]}}",
                   4)
                .message(),
            "m.safetensors: header nests deeper than 64 levels");
}

TEST(SafetensorsHeaderTest, RejectsDuplicateKeys) {
  ExpectDataLoss(Status("{" + Entry("w", "F32", "[1]", 0, 4) + "," + Entry("w", "F32", "[1]", 4, 8) + "}", 8),
                 "m.safetensors: header has the key \"w\" twice in one object");
  ExpectDataLoss(Status("{\"__metadata__\":{\"format\":\"pt\",\"format\":\"np\"}}"),
                 "m.safetensors: header has the key \"format\" twice in one object");
}

TEST(SafetensorsHeaderTest, RejectsANumberOutOfRange) {
  ExpectDataLoss(Status("{\"w\":{\"dtype\":\"F32\",\"shape\":[1e400],\"data_offsets\":[0,4]}}", 4),
                 "m.safetensors: header is not valid JSON: [json.exception.out_of_range.406] number overflow "
                 "parsing '1e400'");
}

TEST(SafetensorsHeaderTest, RejectsInvalidUtf8) {
  const absl::Status status = Status("{\"w\xff\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}}", 4);
  ExpectDataLoss(status,
                 "m.safetensors: header is not valid JSON: [json.exception.parse_error.101] parse error at line 1, "
                 "column 4: syntax error while parsing object key - invalid string: ill-formed UTF-8 byte; last "
                 "read: '\"w\\xff'; expected string literal");
  // An overlong encoding of '/' and a lone surrogate escape are refused the same way.
  EXPECT_THAT(std::string(Status("{\"__metadata__\":{\"k\":\"\xc0\xaf\"}}").message()),
              StartsWith("m.safetensors: header is not valid JSON: [json.exception.parse_error.101]"));
  EXPECT_THAT(std::string(Status("{\"__metadata__\":{\"k\":\"\\ud800\"}}").message()),
              StartsWith("m.safetensors: header is not valid JSON: [json.exception.parse_error.101]"));
}

// --- entries ------------------------------------------------------------------------------------------

TEST(SafetensorsHeaderTest, RejectsEntriesWithoutTheirFields) {
  const std::string needs = "m.safetensors: tensor 'w': header entry needs dtype, shape and data_offsets";
  ExpectDataLoss(Status("{\"w\":5}"), needs);
  ExpectDataLoss(Status("{\"w\":[\"F32\",[1],[0,4]]}", 4), needs);
  ExpectDataLoss(Status("{\"w\":{\"shape\":[1],\"data_offsets\":[0,4]}}", 4), needs);
  ExpectDataLoss(Status("{\"w\":{\"dtype\":\"F32\",\"data_offsets\":[0,4]}}", 4), needs);
  ExpectDataLoss(Status("{\"w\":{\"dtype\":\"F32\",\"shape\":[1]}}", 4), needs);
}

TEST(SafetensorsHeaderTest, RejectsDtypesThatAreNotSupportedStrings) {
  ExpectDataLoss(Status("{\"w\":{\"dtype\":4,\"shape\":[1],\"data_offsets\":[0,4]}}", 4),
                 "m.safetensors: tensor 'w': dtype is not a string");
  ExpectError(Status("{\"model.ids\":{\"dtype\":\"I64\",\"shape\":[1],\"data_offsets\":[0,8]}}", 8),
              absl::StatusCode::kInvalidArgument,
              "m.safetensors: tensor 'model.ids' has dtype I64; only F32, F16 and BF16 are supported");
  ExpectError(Status("{" + Entry("w", "f32", "[1]", 0, 4) + "}", 4), absl::StatusCode::kInvalidArgument,
              "m.safetensors: tensor 'w' has dtype f32; only F32, F16 and BF16 are supported");
  // The dtype is checked before the shape.
  ExpectError(Status("{\"w\":{\"dtype\":\"U8\",\"shape\":7,\"data_offsets\":[0,4]}}", 4),
              absl::StatusCode::kInvalidArgument,
              "m.safetensors: tensor 'w' has dtype U8; only F32, F16 and BF16 are supported");
}

TEST(SafetensorsHeaderTest, RejectsShapesThatAreNotListsOfSizes) {
  ExpectDataLoss(Status("{" + Entry("w", "F32", "{}", 0, 4) + "}", 4),
                 "m.safetensors: tensor 'w': shape is not an array");
  ExpectDataLoss(Status("{" + Entry("w", "F32", "4", 0, 4) + "}", 4),
                 "m.safetensors: tensor 'w': shape is not an array");
  ExpectDataLoss(Status("{" + Entry("w", "F32", "[2,-1]", 0, 4) + "}", 4),
                 "m.safetensors: tensor 'w': shape [2,-1] is not a list of sizes");
  ExpectDataLoss(Status("{" + Entry("w", "F32", "[1.0]", 0, 4) + "}", 4),
                 "m.safetensors: tensor 'w': shape [1.0] is not a list of sizes");
  ExpectDataLoss(Status("{" + Entry("w", "F32", "[-0]", 0, 4) + "}", 4),
                 "m.safetensors: tensor 'w': shape [0] is not a list of sizes");
  ExpectDataLoss(Status("{" + Entry("w", "F32", "[\"1\",null,[1],{\"a\":true}]", 0, 4) + "}", 4),
                 "m.safetensors: tensor 'w': shape [\"1\",null,[1],{\"a\":true}] is not a list of sizes");
}

TEST(SafetensorsHeaderTest, RejectsOverflowingShapes) {
  // A size above INT64_MAX.
  ExpectDataLoss(Status("{" + Entry("w", "F32", "[9223372036854775808]", 0, 4) + "}", 4),
                 "m.safetensors: tensor 'w': shape [9223372036854775808] overflows");
  // 2^32 x 2^32 elements do not fit 64 bits.
  ExpectDataLoss(Status("{" + Entry("w", "F32", "[4294967296,4294967296]", 0, 4) + "}", 4),
                 "m.safetensors: tensor 'w': shape [4294967296,4294967296] overflows");
  // The element count fits, its bytes do not: the message prints the wrapped product, as before.
  ExpectDataLoss(Status("{" + Entry("w", "F32", "[4611686018427387904]", 0, 4) + "}", 4),
                 "m.safetensors: tensor 'w': data_offsets [0, 4) hold 4 bytes, but F32 [4611686018427387904] "
                 "needs 0");
  // A size above uint64 is refused by the JSON parser, naming where it is, rather than rounded to a float.
  ExpectDataLoss(Status("{" + Entry("w", "F32", "[18446744073709551616]", 0, 4) + "}", 4),
                 "m.safetensors: header has the integer 18446744073709551616 at /w/shape/0, which does not fit in 64 "
                 "bits; tpcoord keeps numbers exactly or not at all (write it as a string if it must be this large)");
}

TEST(SafetensorsHeaderTest, RejectsDataOffsetsThatAreNotAPair) {
  for (const std::string offsets : {"[0]", "[0,4,8]", "[]", "[0,-4]", "[0,4.0]", "\"0-4\"", "{\"0\":4}", "null"}) {
    ExpectDataLoss(Status("{\"w\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":" + offsets + "}}", 4),
                   "m.safetensors: tensor 'w': data_offsets " + offsets + " is not [begin, end]");
  }
}

TEST(SafetensorsHeaderTest, RejectsOffsetsThatDisagreeWithDtypeAndShape) {
  ExpectDataLoss(Status("{" + Entry("w", "F32", "[2,3]", 0, 20) + "}", 20),
                 "m.safetensors: tensor 'w': data_offsets [0, 20) hold 20 bytes, but F32 [2, 3] needs 24");
  ExpectDataLoss(Status("{" + Entry("w", "BF16", "[2,3]", 0, 24) + "}", 24),
                 "m.safetensors: tensor 'w': data_offsets [0, 24) hold 24 bytes, but BF16 [2, 3] needs 12");
  ExpectDataLoss(Status("{" + Entry("w", "F16", "[]", 0, 0) + "}"),
                 "m.safetensors: tensor 'w': data_offsets [0, 0) hold 0 bytes, but F16 [] needs 2");
  // end before begin: the difference is printed as unsigned arithmetic gives it, as before.
  ExpectDataLoss(Status("{" + Entry("w", "F32", "[1]", 8, 4) + "}", 8),
                 "m.safetensors: tensor 'w': data_offsets [8, 4) hold 18446744073709551612 bytes, but F32 [1] "
                 "needs 4");
}

TEST(SafetensorsHeaderTest, ChecksEntriesInNameOrder) {
  // Both entries are bad; "a" is reported, wherever it is in the text.
  ExpectDataLoss(Status("{\"b\":{},\"a\":{\"dtype\":1,\"shape\":[],\"data_offsets\":[0,4]}}"),
                 "m.safetensors: tensor 'a': dtype is not a string");
  // "B" sorts before "__metadata__", so its error comes first.
  ExpectDataLoss(Status("{\"__metadata__\":7,\"B\":{}}"),
                 "m.safetensors: tensor 'B': header entry needs dtype, shape and data_offsets");
}

// --- tiling the data section --------------------------------------------------------------------------

TEST(SafetensorsHeaderTest, RejectsGaps) {
  ExpectDataLoss(Status("{" + Entry("a", "F32", "[1]", 0, 4) + "," + Entry("b", "F32", "[1]", 8, 12) + "}", 12),
                 "m.safetensors: tensor 'b' starts at byte 8 of the data section, expected 4 (tensors must not "
                 "overlap or leave gaps)");
  ExpectDataLoss(Status("{" + Entry("a", "F32", "[1]", 4, 8) + "}", 8),
                 "m.safetensors: tensor 'a' starts at byte 4 of the data section, expected 0 (tensors must not "
                 "overlap or leave gaps)");
}

TEST(SafetensorsHeaderTest, RejectsOverlaps) {
  ExpectDataLoss(Status("{" + Entry("a", "F32", "[2]", 0, 8) + "," + Entry("b", "F32", "[1]", 4, 8) + "}", 8),
                 "m.safetensors: tensor 'b' starts at byte 4 of the data section, expected 8 (tensors must not "
                 "overlap or leave gaps)");
  // Two tensors on the same bytes: the one later in name order is named.
  ExpectDataLoss(Status("{" + Entry("y", "F32", "[1]", 0, 4) + "," + Entry("x", "F32", "[1]", 0, 4) + "}", 4),
                 "m.safetensors: tensor 'y' starts at byte 0 of the data section, expected 4 (tensors must not "
                 "overlap or leave gaps)");
}

TEST(SafetensorsHeaderTest, AcceptsOffsetsInAnyKeyOrder) {
  absl::StatusOr<SafetensorsHeader> parsed =
      Parse(File("{" + Entry("a", "F32", "[1]", 8, 12) + "," + Entry("b", "F32", "[1]", 4, 8) + "," +
                 Entry("c", "F32", "[1]", 0, 4) + "}",
                 12));
  ASSERT_TRUE(parsed.ok()) << parsed.status();
  ASSERT_EQ(parsed->tensors.size(), 3u);
  EXPECT_EQ(parsed->tensors[0].name, "c");
  EXPECT_EQ(parsed->tensors[1].name, "b");
  EXPECT_EQ(parsed->tensors[2].name, "a");
}

TEST(SafetensorsHeaderTest, RejectsTruncatedAndTrailingData) {
  ExpectDataLoss(Status("{" + Entry("a", "F32", "[4]", 0, 16) + "}", 12),
                 "m.safetensors: the tensors cover 16 bytes but the data section has 12 (truncated or trailing "
                 "data)");
  ExpectDataLoss(Status("{" + Entry("a", "F32", "[1]", 0, 4) + "}", 8),
                 "m.safetensors: the tensors cover 4 bytes but the data section has 8 (truncated or trailing data)");
  ExpectDataLoss(Status("{}", 1),
                 "m.safetensors: the tensors cover 0 bytes but the data section has 1 (truncated or trailing data)");
}

// --- metadata -----------------------------------------------------------------------------------------

TEST(SafetensorsHeaderTest, RejectsMetadataThatIsNotStrings) {
  ExpectDataLoss(Status("{\"__metadata__\":[\"format\",\"pt\"]}"), "m.safetensors: __metadata__ is not an object");
  ExpectDataLoss(Status("{\"__metadata__\":\"pt\"}"), "m.safetensors: __metadata__ is not an object");
  ExpectDataLoss(Status("{\"__metadata__\":{\"format\":\"pt\",\"n\":3}}"),
                 "m.safetensors: __metadata__ value 'n' is not a string");
  ExpectDataLoss(Status("{\"__metadata__\":{\"nested\":{\"a\":\"b\"}}}"),
                 "m.safetensors: __metadata__ value 'nested' is not a string");
  ExpectDataLoss(Status("{\"__metadata__\":{\"none\":null}}"),
                 "m.safetensors: __metadata__ value 'none' is not a string");
}

}  // namespace
}  // namespace tpcoord
