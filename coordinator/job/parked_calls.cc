#include "coordinator/job/parked_calls.h"

#include <utility>

#include "absl/strings/str_cat.h"

namespace tpcoord {

void FailParkedCall(ParkedCall& call, absl::Status status, Completions& done) {
  std::visit(
      [&](auto& c) {
        using T = std::decay_t<decltype(c)>;
        if constexpr (std::is_same_v<T, JoinCall>) {
          done.Answer<Assignment>(std::move(c.done), std::move(status));
        } else if constexpr (std::is_same_v<T, UniqueIdsCall>) {
          done.Answer<SharedUniqueIds>(std::move(c.done), std::move(status));
        } else if constexpr (std::is_same_v<T, StoreGetCall>) {
          done.Answer<std::string>(std::move(c.done), std::move(status));
        } else {
          done.Answer(std::move(c.done), std::move(status));
        }
      },
      call);
}

ParkedCalls::~ParkedCalls() {
  for (auto& [id, parked] : calls_) timers_->Cancel(parked.deadline);
}

absl::Status ParkedCalls::CheckRoom() const {
  if (calls_.size() >= limit_) {
    return absl::ResourceExhaustedError(
        absl::StrCat(calls_.size(), " calls are parked in this job already; the limit is ", limit_));
  }
  return absl::OkStatus();
}

void ParkedCalls::Park(uint64_t id, ParkedCall call, Millis wait, std::function<void()> on_deadline) {
  const TimerQueue::Id deadline = timers_->Schedule(TimerQueue::Clock::now() + wait, std::move(on_deadline));
  calls_.insert_or_assign(id, Parked{std::move(call), wait, deadline});
}

const Parked* ParkedCalls::Find(uint64_t id) const {
  auto it = calls_.find(id);
  return it == calls_.end() ? nullptr : &it->second;
}

std::optional<Parked> ParkedCalls::Take(uint64_t id) {
  auto it = calls_.find(id);
  if (it == calls_.end()) return std::nullopt;
  Parked parked = std::move(it->second);
  calls_.erase(it);
  timers_->Cancel(parked.deadline);
  return parked;
}

std::vector<Parked> ParkedCalls::TakeAll() {
  std::vector<Parked> all;
  all.reserve(calls_.size());
  for (auto& [id, parked] : calls_) {
    timers_->Cancel(parked.deadline);
    all.push_back(std::move(parked));
  }
  calls_.clear();
  return all;
}

}  // namespace tpcoord
