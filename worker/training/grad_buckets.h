// Which gradients travel together in the data-parallel all-reduce: consecutive runs of them, in parameter
// order, each at most `cap` bytes (DeepSpeed's and PyTorch DDP's 25 MB), so that the reduce costs a few
// large calls instead of one per parameter, without a second copy of every gradient at once. A gradient
// larger than the cap travels alone.
//
// Pure: no LibTorch (the reduce itself is TrainStep's).
#ifndef TPCOORD_WORKER_TRAINING_GRAD_BUCKETS_H_
#define TPCOORD_WORKER_TRAINING_GRAD_BUCKETS_H_

#include <cstddef>
#include <cstdint>
#include <vector>

namespace tpcoord {

inline constexpr int64_t kGradBucketBytes = 25 * 1000 * 1000;

struct GradBucket {
  size_t first = 0;  // index of its first gradient
  size_t count = 0;  // how many consecutive gradients
  int64_t bytes = 0;
};

// Buckets covering gradients 0..bytes.size()-1 exactly once, in order. `cap` > 0.
std::vector<GradBucket> PlanGradBuckets(const std::vector<int64_t>& bytes, int64_t cap = kGradBucketBytes);

}  // namespace tpcoord

#endif  // TPCOORD_WORKER_TRAINING_GRAD_BUCKETS_H_
