// The named barriers of one job generation. For each name: how many rounds have completed, which is durable
// (a rank whose answer was lost to a coordinator restart retries its round and passes at once), and which
// ranks are in the current round, with their parked calls.
//
// Not thread-safe: a plain part of its Job, used under the job's lock.
#ifndef TPCOORD_COORDINATOR_JOB_BARRIER_SET_H_
#define TPCOORD_COORDINATOR_JOB_BARRIER_SET_H_

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "absl/status/status.h"

namespace tpcoord {

class BarrierSet {
 public:
  explicit BarrierSet(size_t max_names) : max_names_(max_names) {}

  // Rounds of `name` completed so far (0 for a barrier never completed).
  uint64_t completed(const std::string& name) const;
  // Completed rounds by name, for every barrier that completed at least once.
  std::map<std::string, uint64_t> Rounds() const;
  void RestoreRounds(const std::string& name, uint64_t completed) { barriers_[name].completed = completed; }

  // RESOURCE_EXHAUSTED when `name` would be one barrier too many.
  absl::Status CheckRoom(const std::string& name) const;

  // How many ranks are in the current round of `name`.
  int arrived(const std::string& name) const;
  // The parked call of `rank` in the current round of `name`, 0 if none.
  uint64_t CallOf(const std::string& name, int rank) const;
  // `rank` enters the current round of `name` (world of `world_size`) with parked call `call`, replacing the
  // call it had there; returns the call replaced, 0 if none.
  uint64_t Arrive(const std::string& name, int world_size, int rank, uint64_t call);
  // `rank`'s `call` left the current round before it completed.
  void Depart(const std::string& name, int rank, uint64_t call);
  // Completes the current round of `name`; returns the calls parked in it.
  std::vector<uint64_t> Complete(const std::string& name);

  // Names with ranks in their current round, and the ranks of `name` still missing from it.
  std::vector<std::string> Open() const;
  std::vector<int> Missing(const std::string& name, int world_size) const;

 private:
  struct Barrier {
    uint64_t completed = 0;
    std::vector<uint64_t> call_of_rank;  // the current round; sized on first arrival
    int arrived = 0;
  };
  const size_t max_names_;
  std::map<std::string, Barrier> barriers_;
};

}  // namespace tpcoord

#endif  // TPCOORD_COORDINATOR_JOB_BARRIER_SET_H_
