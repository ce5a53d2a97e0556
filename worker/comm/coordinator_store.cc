#include "worker/comm/coordinator_store.h"

#include <c10/util/Exception.h>

namespace tpcoord {
namespace {

std::string ToString(const std::vector<uint8_t>& bytes) { return std::string(bytes.begin(), bytes.end()); }
std::vector<uint8_t> ToBytes(const std::string& s) { return std::vector<uint8_t>(s.begin(), s.end()); }

template <typename T>
T OrThrow(absl::StatusOr<T> value) {
  TORCH_CHECK(value.ok(), "tpcoord store: ", value.status().ToString());
  return *std::move(value);
}

void OrThrow(const absl::Status& status) { TORCH_CHECK(status.ok(), "tpcoord store: ", status.ToString()); }

// c10d's kNoTimeout (0) means "wait as long as it takes"; the coordinator caps waits at one hour.
std::chrono::milliseconds Bounded(std::chrono::milliseconds timeout) {
  return timeout.count() == 0 ? std::chrono::hours(1) : timeout;
}

}  // namespace

CoordinatorStore::CoordinatorStore(CoordinatorClient* client, Membership member, std::chrono::milliseconds timeout)
    : c10d::Store(timeout), client_(client), member_(std::move(member)) {}

void CoordinatorStore::set(const std::string& key, const std::vector<uint8_t>& value) {
  OrThrow(client_->StoreSet(member_, key, ToString(value)));
}

std::vector<uint8_t> CoordinatorStore::compareSet(const std::string& key, const std::vector<uint8_t>& expected,
                                                  const std::vector<uint8_t>& desired) {
  return ToBytes(OrThrow(client_->StoreCompareSet(member_, key, ToString(expected), ToString(desired))));
}

std::vector<uint8_t> CoordinatorStore::get(const std::string& key) {
  return ToBytes(OrThrow(client_->StoreGet(member_, key, Bounded(timeout_))));
}

int64_t CoordinatorStore::add(const std::string& key, int64_t value) {
  return OrThrow(client_->StoreAdd(member_, key, value));
}

bool CoordinatorStore::deleteKey(const std::string& key) {
  return OrThrow(client_->StoreDelete(member_, key));
}

bool CoordinatorStore::check(const std::vector<std::string>& keys) {
  return OrThrow(client_->StoreCheck(member_, keys));
}

int64_t CoordinatorStore::getNumKeys() { return OrThrow(client_->StoreNumKeys(member_)); }

void CoordinatorStore::wait(const std::vector<std::string>& keys) { wait(keys, timeout_); }

void CoordinatorStore::wait(const std::vector<std::string>& keys, const std::chrono::milliseconds& timeout) {
  OrThrow(client_->StoreWait(member_, keys, Bounded(timeout)));
}

#if TORCH_VERSION_MAJOR > 2 || (TORCH_VERSION_MAJOR == 2 && TORCH_VERSION_MINOR >= 8)
c10::intrusive_ptr<c10d::Store> CoordinatorStore::clone() {
  return c10::make_intrusive<CoordinatorStore>(client_, member_, timeout_);
}
#endif

}  // namespace tpcoord
