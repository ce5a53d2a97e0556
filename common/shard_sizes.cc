#include "common/shard_sizes.h"

#include <numeric>

#include "absl/status/status.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/deepspeed_error.h"

namespace tpcoord {
namespace {

// Layers that always take the grain split, whatever their size: MLPs (their width has nothing to do with
// heads) and the vocabulary projections.
bool IsExcludedFromHeadAlignment(absl::string_view name) {
  if (name == "lm_head" || name == "embed_out") return true;
  for (absl::string_view part : {"mlp", "gate_proj", "up_proj", "down_proj", "w1", "w2", "w3"}) {
    if (absl::StrContains(name, part)) return true;
  }
  return false;
}

// Near-even: the first n % t ranks get one more.
int64_t EvenShare(int64_t n, int t, int r) { return n / t + (r < n % t ? 1 : 0); }

}  // namespace

bool IsHeadAlignedSplit(int64_t n, absl::string_view layer_name, int num_kv_heads) {
  return num_kv_heads > 0 && n % num_kv_heads == 0 && !IsExcludedFromHeadAlignment(layer_name);
}

absl::StatusOr<std::vector<int64_t>> ShardSizes(int64_t n, int tp_size, absl::string_view layer_name, int num_kv_heads,
                                                int grain) {
  if (n < 0 || tp_size < 1 || num_kv_heads < 0 || grain < 1) {
    return absl::InvalidArgumentError(absl::StrCat(
        "ShardSizes for layer '", layer_name, "': need n >= 0, tp_size >= 1, num_kv_heads >= 0 and grain >= 1; got n=",
        n, ", tp_size=", tp_size, ", num_kv_heads=", num_kv_heads, ", grain=", grain));
  }
  std::vector<int64_t> sizes(tp_size);
  if (IsHeadAlignedSplit(n, layer_name, num_kv_heads)) {
    // Rule A: whole KV groups, each n / K elements wide.
    for (int r = 0; r < tp_size; ++r) sizes[r] = n / num_kv_heads * EvenShare(num_kv_heads, tp_size, r);
  } else if (n >= grain) {
    // Rule B: whole grains; the last rank also takes what is left over.
    for (int r = 0; r < tp_size; ++r) sizes[r] = EvenShare(n / grain, tp_size, r) * grain;
    sizes.back() += n % grain;
  } else {
    for (int r = 0; r < tp_size; ++r) sizes[r] = EvenShare(n, tp_size, r);
  }

  if (std::accumulate(sizes.begin(), sizes.end(), int64_t{0}) != n) {
    return DeepSpeedError(
        absl::StrCat("AutoTP shard sizes [", absl::StrJoin(sizes, ", "), "] for layer '", layer_name,
                     "' do not sum to the dimension size ", n, " with tp_size=", tp_size, ", tp_grain_size=", grain,
                     " and num_kv_heads=", num_kv_heads > 0 ? absl::StrCat(num_kv_heads) : std::string("None"), "."));
  }
  return sizes;
}

}  // namespace tpcoord
