// The c10d key-value store of one job generation (what ProcessGroupGloo rendezvouses through): its
// entries, the bytes they count against the coordinator-wide StoreQuota, and which parked calls wait for
// which keys to appear.
//
// Not thread-safe: a plain part of its Job, used under the job's lock (StoreQuota is thread-safe).
#ifndef TPCOORD_COORDINATOR_JOB_KEY_VALUE_STORE_H_
#define TPCOORD_COORDINATOR_JOB_KEY_VALUE_STORE_H_

#include <atomic>
#include <cstdint>
#include <map>
#include <string>
#include <unordered_map>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "coordinator/job/watchers.h"

namespace tpcoord {

// The bytes every job's store holds together, against one limit (--max-store-bytes). Jobs check it before
// they write and charge it once the write is durable, so concurrent writers in different jobs can overshoot
// it by at most what they write at once.
class StoreQuota {
 public:
  explicit StoreQuota(int64_t limit) : limit_(limit) {}
  int64_t limit() const { return limit_; }
  int64_t used() const { return used_.load(std::memory_order_relaxed); }
  // RESOURCE_EXHAUSTED naming the limit unless `more` bytes still fit.
  absl::Status CheckFits(int64_t more) const;
  // `bytes` more (or, negative, fewer) are held. Once 64 MiB have been given back since it last did, hands
  // the heap's free memory back to the system (malloc_trim): a store that filled and emptied must not leave
  // the process at its high-water mark. That is rare, and costs milliseconds.
  void Charge(int64_t bytes);

 private:
  static constexpr int64_t kTrimEvery = int64_t{64} << 20;
  const int64_t limit_;
  std::atomic<int64_t> used_{0};
  std::atomic<int64_t> released_{0};  // since the last trim
};

class KeyValueStore {
 public:
  // Charges every change of bytes() to `quota`, which must outlive the store.
  explicit KeyValueStore(StoreQuota* quota) : quota_(quota) {}
  ~KeyValueStore() {
    entries_ = {};  // freed before the quota hears of it, so that its trim finds the memory free
    quota_->Charge(-static_cast<int64_t>(bytes_));
  }
  KeyValueStore(const KeyValueStore&) = delete;
  KeyValueStore& operator=(const KeyValueStore&) = delete;

  // What an entry costs: its key, its value and a fixed overhead for the map entry.
  static size_t Cost(absl::string_view key, size_t value_size) { return key.size() + value_size + 64; }

  const std::string* Find(absl::string_view key) const;
  bool Contains(absl::string_view key) const { return Find(key) != nullptr; }
  bool ContainsAll(const std::vector<std::string>& keys) const;
  size_t size() const { return entries_.size(); }
  size_t bytes() const { return bytes_; }
  const std::unordered_map<std::string, std::string>& entries() const { return entries_; }

  // How bytes() would change if `key` were set to a value of `value_size` bytes.
  int64_t PutDelta(absl::string_view key, size_t value_size) const;
  void Put(const std::string& key, std::string value);
  void Erase(const std::string& key);

  // c10d add: the key's value read as a decimal integer (a missing key is 0) plus `delta`.
  // FAILED_PRECONDITION if the key holds something else, OUT_OF_RANGE if the sum leaves int64.
  absl::StatusOr<int64_t> Sum(absl::string_view key, int64_t delta) const;

  // Parked calls waiting for keys to be set. A call is watched under each of its keys that is missing.
  Watchers<std::string>& watchers() { return watchers_; }
  const Watchers<std::string>& watchers() const { return watchers_; }

 private:
  StoreQuota* const quota_;
  std::unordered_map<std::string, std::string> entries_;
  size_t bytes_ = 0;
  Watchers<std::string> watchers_;
};

}  // namespace tpcoord

#endif  // TPCOORD_COORDINATOR_JOB_KEY_VALUE_STORE_H_
