#include "worker/training/grad_buckets.h"

namespace tpcoord {

std::vector<GradBucket> PlanGradBuckets(const std::vector<int64_t>& bytes, int64_t cap) {
  std::vector<GradBucket> buckets;
  for (size_t i = 0; i < bytes.size(); ++i) {
    if (buckets.empty() || buckets.back().bytes + bytes[i] > cap) buckets.push_back({i, 0, 0});
    ++buckets.back().count;
    buckets.back().bytes += bytes[i];
  }
  return buckets;
}

}  // namespace tpcoord
