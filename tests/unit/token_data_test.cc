#include "common/token_data.h"

#include <gtest/gtest.h>

#include <fstream>
#include <set>

namespace tpcoord {
namespace {

std::vector<uint16_t> Ramp(int n) {
  std::vector<uint16_t> tokens(n);
  for (int i = 0; i < n; ++i) tokens[i] = static_cast<uint16_t>(i);
  return tokens;
}

TEST(TokenDataTest, WindowsAreConsecutiveAndWrap) {
  TokenData data = *TokenData::FromTokens(Ramp(100), 4);  // train split [0, 90), eval [90, 100)
  EXPECT_EQ(data.TrainSequence(0), std::vector<int32_t>({0, 1, 2, 3, 4}));
  EXPECT_EQ(data.TrainSequence(1), std::vector<int32_t>({4, 5, 6, 7, 8}));
  // 22 windows start at 0, 4, ..., 84 (84 + 5 <= 90); then around again.
  EXPECT_EQ(data.TrainSequence(21), std::vector<int32_t>({84, 85, 86, 87, 88}));
  EXPECT_EQ(data.TrainSequence(22), data.TrainSequence(0));
  EXPECT_EQ(data.EvalSequence(0), std::vector<int32_t>({90, 91, 92, 93, 94}));
  EXPECT_EQ(data.EvalSequence(2), data.EvalSequence(0));
  EXPECT_EQ(data.EvalWindows(), 2);  // [90, 95) and [94, 99): 98 + 5 > 100 ends it
}

TEST(TokenDataTest, TextIsBytesAndBinIsLittleEndianUint16) {
  const std::string dir = testing::TempDir();
  std::string text(200, 'a');
  text[0] = '\xff';
  std::ofstream(dir + "/t.txt", std::ios::binary) << text;
  TokenData t = *TokenData::Load(dir + "/t.txt", 8);
  EXPECT_EQ(t.size(), 200u);
  EXPECT_EQ(t.TrainSequence(0)[0], 255);
  EXPECT_EQ(t.max_token(), 255);
  std::string bin;
  for (int i = 0; i < 200; ++i) {
    bin.push_back(static_cast<char>(i & 0xff));
    bin.push_back(static_cast<char>(1));  // token 256 + i
  }
  std::ofstream(dir + "/t.bin", std::ios::binary) << bin;
  TokenData b = *TokenData::Load(dir + "/t.bin", 8);
  EXPECT_EQ(b.size(), 200u);
  EXPECT_EQ(b.TrainSequence(0)[3], 259);
  std::ofstream(dir + "/odd.bin", std::ios::binary) << "abc";
  EXPECT_EQ(TokenData::Load(dir + "/odd.bin", 8).status().message(),
            dir + "/odd.bin has 3 bytes; a .bin file holds little-endian uint16 tokens");
  EXPECT_EQ(TokenData::Load(dir + "/missing.txt", 8).status().message(), "cannot read the training data " + dir +
                                                                            "/missing.txt");
  EXPECT_EQ(TokenData::FromTokens(Ramp(50), 8).status().message(),
            "the training data has 50 tokens; seq_len 8 needs at least 90 (a tenth is held out for evaluation)");
}

TEST(TokenDataTest, SequenceIndexPartitionsEachStepAcrossDataParallelRanks) {
  // micro 2, accumulation 2, D = 2: a step is 8 sequences; each (micro step, DP rank) gets 2 of them.
  std::set<int64_t> seen;
  for (int m = 0; m < 2; ++m) {
    for (int d = 0; d < 2; ++d) {
      for (int r = 0; r < 2; ++r) seen.insert(SequenceIndex(3, m, d, r, 2, 2, 2));
    }
  }
  EXPECT_EQ(seen, std::set<int64_t>({24, 25, 26, 27, 28, 29, 30, 31}));
  EXPECT_EQ(SequenceIndex(0, 1, 0, 0, 2, 2, 2), 4);
  // The same sequences with D = 1 and twice the accumulation: the same step consumes the same rows.
  std::set<int64_t> single;
  for (int m = 0; m < 4; ++m) {
    for (int r = 0; r < 2; ++r) single.insert(SequenceIndex(3, m, 0, r, 2, 4, 1));
  }
  EXPECT_EQ(single, seen);
}

TEST(TokenDataTest, EvalSlicesCoverEveryWindowOnceAtAnyDataParallelSize) {
  for (int64_t windows : {0, 1, 3, 7, 51, 102}) {
    for (int dp = 1; dp <= 8; ++dp) {
      std::vector<int> times(windows, 0);
      int64_t expected_begin = 0;
      for (int d = 0; d < dp; ++d) {
        const WindowRange slice = EvalSlice(windows, d, dp);
        EXPECT_EQ(slice.begin, expected_begin) << windows << " windows, rank " << d << " of " << dp;
        EXPECT_LE(slice.end - slice.begin, windows / dp + 1);
        EXPECT_GE(slice.end - slice.begin, windows / dp);
        for (int64_t w = slice.begin; w < slice.end; ++w) ++times[w];
        expected_begin = slice.end;
      }
      EXPECT_EQ(expected_begin, windows);
      for (int64_t w = 0; w < windows; ++w) EXPECT_EQ(times[w], 1) << "window " << w << " at DP " << dp;
    }
  }
}

}  // namespace
}  // namespace tpcoord
