#include "common/rank_assignment.h"

#include <deque>
#include <map>

namespace tpcoord {

std::vector<int> AssignRanks(const std::vector<RankRequest>& workers, int tp_size) {
  const int world = static_cast<int>(workers.size());
  const int blocks = world / tp_size;
  std::vector<int> rank_of(world, -1);
  std::vector<int> worker_at(world, -1);  // rank -> worker index

  // 1. Requested ranks.
  std::map<std::string, std::deque<int>> unplaced;  // host -> workers in the order given
  for (int i = 0; i < world; ++i) {
    if (workers[i].requested_rank.has_value()) {
      rank_of[i] = *workers[i].requested_rank;
      worker_at[rank_of[i]] = i;
    } else {
      unplaced[workers[i].host].push_back(i);
    }
  }
  auto place = [&](int worker, int rank) {
    rank_of[worker] = rank;
    worker_at[rank] = worker;
  };

  // 2. Complete partly requested blocks from their majority host (ties: the host name first in order).
  for (int b = 0; b < blocks; ++b) {
    std::map<std::string, int> hosts_in_block;
    for (int r = b * tp_size; r < (b + 1) * tp_size; ++r) {
      if (worker_at[r] >= 0) ++hosts_in_block[workers[worker_at[r]].host];
    }
    if (hosts_in_block.empty()) continue;
    auto majority = hosts_in_block.begin();
    for (auto it = hosts_in_block.begin(); it != hosts_in_block.end(); ++it) {
      if (it->second > majority->second) majority = it;
    }
    std::deque<int>& queue = unplaced[majority->first];
    for (int r = b * tp_size; r < (b + 1) * tp_size && !queue.empty(); ++r) {
      if (worker_at[r] < 0) {
        place(queue.front(), r);
        queue.pop_front();
      }
    }
  }

  // 3. Whole free blocks for hosts that can fill them.
  auto block_free = [&](int b) {
    for (int r = b * tp_size; r < (b + 1) * tp_size; ++r) {
      if (worker_at[r] >= 0) return false;
    }
    return true;
  };
  int next_block = 0;
  for (auto& [host, queue] : unplaced) {
    while (static_cast<int>(queue.size()) >= tp_size) {
      while (next_block < blocks && !block_free(next_block)) ++next_block;
      if (next_block == blocks) break;
      for (int r = next_block * tp_size; r < (next_block + 1) * tp_size; ++r) {
        place(queue.front(), r);
        queue.pop_front();
      }
    }
  }

  // 4. Everything else, in rank order.
  int r = 0;
  for (auto& [host, queue] : unplaced) {
    for (int worker : queue) {
      while (worker_at[r] >= 0) ++r;
      place(worker, r);
    }
  }
  return rank_of;
}

}  // namespace tpcoord
