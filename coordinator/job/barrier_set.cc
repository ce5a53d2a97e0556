#include "coordinator/job/barrier_set.h"

#include "absl/strings/str_cat.h"

namespace tpcoord {

uint64_t BarrierSet::completed(const std::string& name) const {
  auto it = barriers_.find(name);
  return it == barriers_.end() ? 0 : it->second.completed;
}

std::map<std::string, uint64_t> BarrierSet::Rounds() const {
  std::map<std::string, uint64_t> rounds;
  for (const auto& [name, b] : barriers_) {
    if (b.completed > 0) rounds.emplace(name, b.completed);
  }
  return rounds;
}

absl::Status BarrierSet::CheckRoom(const std::string& name) const {
  if (!barriers_.count(name) && barriers_.size() >= max_names_) {
    return absl::ResourceExhaustedError(
        absl::StrCat("the generation has ", barriers_.size(), " barriers already; the limit is ", max_names_));
  }
  return absl::OkStatus();
}

int BarrierSet::arrived(const std::string& name) const {
  auto it = barriers_.find(name);
  return it == barriers_.end() ? 0 : it->second.arrived;
}

uint64_t BarrierSet::CallOf(const std::string& name, int rank) const {
  auto it = barriers_.find(name);
  if (it == barriers_.end() || it->second.call_of_rank.empty()) return 0;
  return it->second.call_of_rank[rank];
}

uint64_t BarrierSet::Arrive(const std::string& name, int world_size, int rank, uint64_t call) {
  Barrier& b = barriers_[name];
  if (b.call_of_rank.empty()) b.call_of_rank.assign(world_size, 0);
  const uint64_t replaced = b.call_of_rank[rank];
  if (replaced == 0) ++b.arrived;
  b.call_of_rank[rank] = call;
  return replaced;
}

void BarrierSet::Depart(const std::string& name, int rank, uint64_t call) {
  auto it = barriers_.find(name);
  if (it == barriers_.end() || it->second.call_of_rank.empty() || it->second.call_of_rank[rank] != call) return;
  it->second.call_of_rank[rank] = 0;
  --it->second.arrived;
}

std::vector<uint64_t> BarrierSet::Complete(const std::string& name) {
  Barrier& b = barriers_[name];
  std::vector<uint64_t> calls;
  for (uint64_t call : b.call_of_rank) {
    if (call != 0) calls.push_back(call);
  }
  b.call_of_rank.clear();
  b.arrived = 0;
  ++b.completed;
  return calls;
}

std::vector<std::string> BarrierSet::Open() const {
  std::vector<std::string> names;
  for (const auto& [name, b] : barriers_) {
    if (b.arrived > 0) names.push_back(name);
  }
  return names;
}

std::vector<int> BarrierSet::Missing(const std::string& name, int world_size) const {
  std::vector<int> ranks;
  auto it = barriers_.find(name);
  for (int r = 0; r < world_size; ++r) {
    if (it == barriers_.end() || it->second.call_of_rank.empty() || it->second.call_of_rank[r] == 0) ranks.push_back(r);
  }
  return ranks;
}

}  // namespace tpcoord
