// Choosing global ranks for the workers of a complete world.
//
// A rank a worker asked for (RANK, JOB_COMPLETION_INDEX) is kept. The others are placed so that TP groups,
// which are blocks of T contiguous ranks (spec §3.3) and carry the most traffic, stay inside one host
// whenever the host sizes allow it: every host with n workers fills floor(n / T) whole blocks of its own,
// and only the remainders share blocks.
#ifndef TPCOORD_COMMON_RANK_ASSIGNMENT_H_
#define TPCOORD_COMMON_RANK_ASSIGNMENT_H_

#include <optional>
#include <string>
#include <vector>

namespace tpcoord {

struct RankRequest {
  std::string host;
  std::optional<int> requested_rank;
};

// Returns one rank per worker, in the order given, forming a permutation of 0..W-1 (W = workers.size()).
// Preconditions (the caller validated them): tp_size divides W; requested ranks are distinct and in
// [0, W). Deterministic: workers without a requested rank are taken in the order given within each host,
// hosts in name order.
//
// The passes, in order:
//   1. requested ranks are placed;
//   2. a block that already holds requested ranks is completed with workers from the host that holds most
//      of them;
//   3. each host, in name order, takes whole free blocks (lowest first) while it has T workers left;
//   4. the remaining workers fill the remaining slots in rank order.
std::vector<int> AssignRanks(const std::vector<RankRequest>& workers, int tp_size);

}  // namespace tpcoord

#endif  // TPCOORD_COMMON_RANK_ASSIGNMENT_H_
