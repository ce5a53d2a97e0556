// The generation's c10d key-value store: writes through the commit path, reads of what is durable, waits.
#include "coordinator/job/job.h"

#include <algorithm>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "coordinator/job/job_internal.h"

namespace tpcoord {

using job_internal::StoreItem;

void Job::WakeKey(const std::string& key, Completions& done) {
  Generation& g = *gen_;
  for (uint64_t call : g.kv.watchers().Take(key)) {
    const Parked* parked = parked_.Find(call);
    if (!parked) continue;
    if (const auto* wait = std::get_if<StoreWaitCall>(&parked->call); wait && !g.kv.ContainsAll(wait->keys)) {
      continue;  // still watched under the keys it lacks
    }
    std::optional<Parked> taken = parked_.Take(call);
    if (auto* get = std::get_if<StoreGetCall>(&taken->call)) {
      done.Answer<std::string>(std::move(get->done), *g.kv.Find(key));
    } else {
      done.Answer(std::move(std::get<StoreWaitCall>(taken->call).done), absl::OkStatus());
    }
  }
}

void Job::StoreSet(const Caller& caller, uint64_t generation, std::string key, std::string value, StatusDone on_done) {
  Mutate(on_done,
         [this, caller, generation, key = std::move(key), value = std::move(value), on_done](Batch& batch) -> Decision {
           mu_.AssertHeld();
           if (!batch.Claim(StoreItem(key))) return Decision::Wait();
           if (absl::Status s = CheckServing(); !s.ok()) return Rejected(s);
           if (absl::Status s = CheckAnyMember(caller, generation); !s.ok()) return Rejected(s);
           return DecideStorePut(batch, key, value, [on_done](Completions& c) { c.Answer(on_done, absl::OkStatus()); });
         });
}

void Job::StoreAdd(const Caller& caller, uint64_t generation, std::string key, int64_t delta, Done<int64_t> on_done) {
  Mutate(on_done, [this, caller, generation, key = std::move(key), delta, on_done](Batch& batch) -> Decision {
    mu_.AssertHeld();
    if (!batch.Claim(StoreItem(key))) return Decision::Wait();
    if (absl::Status s = CheckServing(); !s.ok()) return Rejected(s);
    if (absl::Status s = CheckAnyMember(caller, generation); !s.ok()) return Rejected(s);
    absl::StatusOr<int64_t> sum = gen_->kv.Sum(key, delta);
    if (!sum.ok()) return Rejected(sum.status());
    return DecideStorePut(batch, key, std::to_string(*sum),
                          [on_done, sum = *sum](Completions& c) { c.Answer<int64_t>(on_done, sum); });
  });
}

void Job::StoreCompareSet(const Caller& caller, uint64_t generation, std::string key, std::string expected,
                          std::string desired, Done<std::string> on_done) {
  Mutate(on_done,
         [this, caller, generation, key = std::move(key), expected = std::move(expected), desired = std::move(desired),
          on_done](Batch& batch) -> Decision {
           mu_.AssertHeld();
           if (!batch.Claim(StoreItem(key))) return Decision::Wait();
           if (absl::Status s = CheckServing(); !s.ok()) return Rejected(s);
           if (absl::Status s = CheckAnyMember(caller, generation); !s.ok()) return Rejected(s);
           // c10d compareSet: a missing key is set only when `expected` is empty, a present one only when it holds
           // `expected`; the answer is the value afterwards (`expected` for a key that stays missing).
           const std::string* current = gen_->kv.Find(key);
           const bool swap = current ? *current == expected : expected.empty();
           if (!swap) {
             return Decision::Apply([on_done, value = current ? *current : expected](Completions& c) {
               c.Answer<std::string>(on_done, value);
             });
           }
           return DecideStorePut(batch, key, desired,
                                 [on_done, desired](Completions& c) { c.Answer<std::string>(on_done, desired); });
         });
}

Job::Decision Job::DecideStorePut(Batch& batch, const std::string& key, std::string value,
                                  std::function<void(Completions&)> answer) {
  const int64_t delta = gen_->kv.PutDelta(key, value.size());
  if (absl::Status s = context_->store_quota->CheckFits(batch.store_bytes + delta); !s.ok()) return Rejected(s);
  batch.store_bytes += delta;
  batch.writes.push_back(job_storage::PutStoreValue(id_, key, value));
  return Decision::Apply([this, key, value = std::move(value), answer = std::move(answer)](Completions& c) {
    mu_.AssertHeld();
    gen_->kv.Put(key, value);
    WakeKey(key, c);
    answer(c);
  });
}

void Job::StoreDelete(const Caller& caller, uint64_t generation, std::string key, Done<bool> on_done) {
  Mutate(on_done, [this, caller, generation, key = std::move(key), on_done](Batch& batch) -> Decision {
    mu_.AssertHeld();
    if (!batch.Claim(StoreItem(key))) return Decision::Wait();
    if (absl::Status s = CheckServing(); !s.ok()) return Rejected(s);
    if (absl::Status s = CheckAnyMember(caller, generation); !s.ok()) return Rejected(s);
    if (!gen_->kv.Contains(key)) {
      return Decision::Apply([on_done](Completions& c) { c.Answer<bool>(on_done, false); });
    }
    batch.writes.push_back(job_storage::DeleteStoreValue(id_, key));
    return Decision::Apply([this, key, on_done](Completions& c) {
      mu_.AssertHeld();
      gen_->kv.Erase(key);
      c.Answer<bool>(on_done, true);
    });
  });
}

absl::StatusOr<bool> Job::StoreCheck(const Caller& caller, uint64_t generation, const std::vector<std::string>& keys) {
  MutexLock lock(&mu_);
  absl::Status status = CheckServing();
  if (status.ok()) status = CheckAnyMember(caller, generation);
  if (!status.ok()) return WithContext(status);
  return gen_->kv.ContainsAll(keys);
}

absl::StatusOr<int64_t> Job::StoreNumKeys(const Caller& caller, uint64_t generation) {
  MutexLock lock(&mu_);
  absl::Status status = CheckServing();
  if (status.ok()) status = CheckAnyMember(caller, generation);
  if (!status.ok()) return WithContext(status);
  return static_cast<int64_t>(gen_->kv.size());
}

uint64_t Job::StoreGet(const Caller& caller, uint64_t generation, std::string key, Millis wait,
                       Done<std::string> on_done) {
  const uint64_t call = next_call_.fetch_add(1);
  Completions done;
  MutexLock lock(&mu_);
  absl::Status status = CheckServing();
  if (status.ok()) status = CheckAnyMember(caller, generation);
  if (status.ok()) {
    if (const std::string* value = gen_->kv.Find(key)) {
      done.Answer<std::string>(on_done, *value);
      return call;
    }
    status = CheckPark();
  }
  if (!status.ok()) {
    done.Answer<std::string>(on_done, WithContext(status));
    return call;
  }
  gen_->kv.watchers().Watch(call, key);
  Park(call, StoreGetCall{std::move(key), std::move(on_done)}, wait, done);
  return call;
}

uint64_t Job::StoreWait(const Caller& caller, uint64_t generation, std::vector<std::string> keys, Millis wait,
                        StatusDone on_done) {
  const uint64_t call = next_call_.fetch_add(1);
  Completions done;
  MutexLock lock(&mu_);
  absl::Status status = CheckServing();
  if (status.ok()) status = CheckAnyMember(caller, generation);
  if (status.ok()) {
    if (gen_->kv.ContainsAll(keys)) {
      done.Answer(on_done, absl::OkStatus());
      return call;
    }
    status = CheckPark();
  }
  if (!status.ok()) {
    done.Answer(on_done, WithContext(status));
    return call;
  }
  for (const std::string& key : keys) {
    if (!gen_->kv.Contains(key)) gen_->kv.watchers().Watch(call, key);
  }
  Park(call, StoreWaitCall{std::move(keys), std::move(on_done)}, wait, done);
  return call;
}

}  // namespace tpcoord
