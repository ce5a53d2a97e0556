#include "coordinator/job/key_value_store.h"

#include <malloc.h>

#include <algorithm>
#include <charconv>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "common/identifiers.h"

namespace tpcoord {

void StoreQuota::Charge(int64_t bytes) {
  used_.fetch_add(bytes, std::memory_order_relaxed);
  if (bytes >= 0) return;
  const int64_t released = released_.fetch_add(-bytes, std::memory_order_relaxed) - bytes;
  if (released >= kTrimEvery && released_.exchange(0, std::memory_order_relaxed) >= kTrimEvery) malloc_trim(0);
}

absl::Status StoreQuota::CheckFits(int64_t more) const {
  const int64_t after = used() + more;
  if (more > 0 && after > limit_) {
    return absl::ResourceExhaustedError(absl::StrCat("the key-value stores of all jobs would hold ", after,
                                                     " bytes; the limit is ", limit_, " (--max-store-bytes)"));
  }
  return absl::OkStatus();
}

const std::string* KeyValueStore::Find(absl::string_view key) const {
  auto it = entries_.find(std::string(key));
  return it == entries_.end() ? nullptr : &it->second;
}

bool KeyValueStore::ContainsAll(const std::vector<std::string>& keys) const {
  return std::all_of(keys.begin(), keys.end(), [&](const std::string& k) { return entries_.count(k) > 0; });
}

int64_t KeyValueStore::PutDelta(absl::string_view key, size_t value_size) const {
  const std::string* old = Find(key);
  return static_cast<int64_t>(Cost(key, value_size)) - (old ? static_cast<int64_t>(Cost(key, old->size())) : 0);
}

void KeyValueStore::Put(const std::string& key, std::string value) {
  const int64_t delta = PutDelta(key, value.size());
  entries_[key] = std::move(value);
  bytes_ = static_cast<size_t>(static_cast<int64_t>(bytes_) + delta);
  quota_->Charge(delta);
}

void KeyValueStore::Erase(const std::string& key) {
  auto it = entries_.find(key);
  if (it == entries_.end()) return;
  const size_t cost = Cost(key, it->second.size());
  entries_.erase(it);
  bytes_ -= cost;
  quota_->Charge(-static_cast<int64_t>(cost));
}

absl::StatusOr<int64_t> KeyValueStore::Sum(absl::string_view key, int64_t delta) const {
  int64_t value = 0;
  if (const std::string* text = Find(key)) {
    auto [end, ec] = std::from_chars(text->data(), text->data() + text->size(), value);
    if (ec != std::errc() || end != text->data() + text->size()) {
      return absl::FailedPreconditionError(
          absl::StrCat("key ", QuoteForError(key), " holds ", QuoteForError(*text), ", not an integer to add to"));
    }
  }
  int64_t sum;
  if (__builtin_add_overflow(value, delta, &sum)) {
    return absl::OutOfRangeError(absl::StrCat("adding ", delta, " to key ", QuoteForError(key), " (", value,
                                              ") leaves the range of a 64-bit integer; the key is unchanged"));
  }
  return sum;
}

}  // namespace tpcoord
