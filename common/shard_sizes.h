// How AutoTP splits one dimension of N elements over the T ranks of a tensor-parallel group (spec §4.2).
// This one function decides every split: column weights (dim 0), row weights (dim 1), column biases and
// sub-parameters, and the local head counts derived from them.
//
// Rule A, head-aligned: when the KV-head count K is known, N % K == 0, and the layer is not an MLP or
// vocabulary layer (its name contains none of "mlp", gate_proj, up_proj, down_proj, w1, w2, w3, and is not
// exactly lm_head or embed_out), the N elements are split on KV-group boundaries: rank r holds
// s_r = K/T + (r < K%T) groups, i.e. N*s_r/K elements. Ranks past K hold nothing when T > K.
//   K=3, T=2: N=12 -> [8, 4];   K=6, T=4: 6 heads -> 2/2/1/1 heads.
// Rule B, grain split (every other case), with grain G (tensor_parallel.tp.tp_grain_size, default 1):
//   N >= G: q = N/G grains are dealt out near-evenly (the first q%T ranks get one more), and the last rank
//           also takes the N%G leftover elements;
//   N <  G: a plain near-even split of N.
//   G=1: 129 over 2 -> [65, 64]; over 4 -> [33, 32, 32, 32].
//
// The same (N, T, name, K, G) always gives the same sizes, on every rank; a column layer and the row layer
// that consumes its output agree as long as their names fall under the same rule (q/k/v/o: A; gate/up/down:
// B), which autotp.h checks when it shards a model.
#ifndef TPCOORD_COMMON_SHARD_SIZES_H_
#define TPCOORD_COMMON_SHARD_SIZES_H_

#include <cstdint>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace tpcoord {

// True when Rule A (head-aligned) applies to a dimension of `n` elements of `layer_name` with
// `num_kv_heads` KV heads (0 = unknown).
bool IsHeadAlignedSplit(int64_t n, absl::string_view layer_name, int num_kv_heads);

// The per-rank sizes of a dimension of `n` elements split over `tp_size` ranks: element r is rank r's
// share; the sizes sum to n. `num_kv_heads` 0 means unknown (Rule B always applies).
//
// INVALID_ARGUMENT if n < 0, tp_size < 1, num_kv_heads < 0 or grain < 1. Should the sizes ever fail to sum
// to n, FAILED_PRECONDITION with DeepSpeed's text: "AutoTP shard sizes [65, 64] for layer 'x' do not sum
// to the dimension size 129 with tp_size=2, tp_grain_size=1 and num_kv_heads=None."
absl::StatusOr<std::vector<int64_t>> ShardSizes(int64_t n, int tp_size, absl::string_view layer_name,
                                                int num_kv_heads = 0, int grain = 1);

}  // namespace tpcoord

#endif  // TPCOORD_COMMON_SHARD_SIZES_H_
