// The data-parallel gradient buckets: every gradient in exactly one bucket, in parameter order, each bucket
// within the cap unless one gradient alone exceeds it.
#include "worker/training/grad_buckets.h"

#include <gtest/gtest.h>

#include <numeric>

namespace tpcoord {
namespace {

// Every gradient exactly once, in order, and no bucket over the cap unless it holds one gradient.
void ExpectCoversOnce(const std::vector<int64_t>& bytes, int64_t cap, const std::vector<GradBucket>& buckets) {
  size_t next = 0;
  for (const GradBucket& b : buckets) {
    EXPECT_EQ(b.first, next);
    EXPECT_GE(b.count, 1u);
    EXPECT_EQ(b.bytes, std::accumulate(bytes.begin() + b.first, bytes.begin() + b.first + b.count, int64_t{0}));
    EXPECT_TRUE(b.bytes <= cap || b.count == 1) << b.first << " holds " << b.bytes;
    next = b.first + b.count;
  }
  EXPECT_EQ(next, bytes.size());
}

TEST(GradBucketsTest, FillsBucketsInOrderUpToTheCap) {
  const std::vector<int64_t> bytes = {10, 10, 5, 20, 1, 30, 30};
  const std::vector<GradBucket> buckets = PlanGradBuckets(bytes, 30);
  ASSERT_EQ(buckets.size(), 4u);
  EXPECT_EQ(buckets[0].first, 0u);
  EXPECT_EQ(buckets[0].count, 3u);  // 10 + 10 + 5
  EXPECT_EQ(buckets[1].count, 2u);  // 20 + 1
  EXPECT_EQ(buckets[2].count, 1u);  // 30
  EXPECT_EQ(buckets[3].count, 1u);  // 30
  ExpectCoversOnce(bytes, 30, buckets);
}

TEST(GradBucketsTest, AGradientOverTheCapTravelsAlone) {
  const std::vector<int64_t> bytes = {4, 100, 4, 4};
  const std::vector<GradBucket> buckets = PlanGradBuckets(bytes, 10);
  ASSERT_EQ(buckets.size(), 3u);
  EXPECT_EQ(buckets[1].first, 1u);
  EXPECT_EQ(buckets[1].count, 1u);
  EXPECT_EQ(buckets[2].count, 2u);
  ExpectCoversOnce(bytes, 10, buckets);
}

TEST(GradBucketsTest, ALlamaOfThreeHundredMillionParametersTakesAboutFiftyBuckets) {
  // The 350m preset's fp32 gradients: embeddings, then 24 layers of 9 tensors, then the head.
  std::vector<int64_t> bytes = {32000 * 1024 * 4};
  for (int layer = 0; layer < 24; ++layer) {
    for (int64_t n :
         {1024 * 1024, 512 * 1024, 512 * 1024, 1024 * 1024, 2816 * 1024, 2816 * 1024, 1024 * 2816, 1024, 1024}) {
      bytes.push_back(n * 4);
    }
  }
  bytes.push_back(1024 * 4);
  bytes.push_back(32000 * 1024 * 4);
  const std::vector<GradBucket> buckets = PlanGradBuckets(bytes);
  ExpectCoversOnce(bytes, kGradBucketBytes, buckets);
  // Greedy: a bucket ends only where the next gradient would not fit, so no two neighbours could merge.
  for (size_t i = 0; i + 1 < buckets.size(); ++i) {
    EXPECT_GT(buckets[i].bytes + bytes[buckets[i + 1].first], kGradBucketBytes) << i;
  }
  EXPECT_EQ(buckets.size(), 50u);  // the two 131 MB embeddings alone, and 48 of the layers' 1.1 GB
  EXPECT_TRUE(PlanGradBuckets({}).empty());
}

}  // namespace
}  // namespace tpcoord
