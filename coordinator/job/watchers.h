// Which parked calls wait for which keys (store keys, communicator groups) to appear. A call that waits for
// several keys is listed under each of them until it is taken out or unwatched.
//
// Not thread-safe: used under the owning job's lock.
#ifndef TPCOORD_COORDINATOR_JOB_WATCHERS_H_
#define TPCOORD_COORDINATOR_JOB_WATCHERS_H_

#include <algorithm>
#include <cstdint>
#include <map>
#include <vector>

namespace tpcoord {

template <typename Key>
class Watchers {
 public:
  void Watch(uint64_t call, const Key& key) { calls_[key].push_back(call); }

  void Unwatch(uint64_t call, const Key& key) {
    auto it = calls_.find(key);
    if (it == calls_.end()) return;
    it->second.erase(std::remove(it->second.begin(), it->second.end(), call), it->second.end());
    if (it->second.empty()) calls_.erase(it);
  }

  // The calls that waited for `key`, which are no longer listed under it.
  std::vector<uint64_t> Take(const Key& key) {
    auto it = calls_.find(key);
    if (it == calls_.end()) return {};
    std::vector<uint64_t> calls = std::move(it->second);
    calls_.erase(it);
    return calls;
  }

  // The keys some call waits for, in order.
  std::vector<Key> Keys() const {
    std::vector<Key> keys;
    for (const auto& [key, calls] : calls_) keys.push_back(key);
    return keys;
  }

 private:
  std::map<Key, std::vector<uint64_t>> calls_;
};

}  // namespace tpcoord

#endif  // TPCOORD_COORDINATOR_JOB_WATCHERS_H_
