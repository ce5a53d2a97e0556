#include "coordinator/job/commit_queue.h"

#include <exception>

#include "absl/strings/str_cat.h"

namespace tpcoord {

void CommitQueue::Push(Decide decide, AnswerError answer_error) {
  queue_.push_back({std::move(decide), std::move(answer_error)});
}

void CommitQueue::PushFront(Decide decide, AnswerError answer_error) {
  queue_.push_front({std::move(decide), std::move(answer_error)});
}

void CommitQueue::Drain(Completions& done, const Submit& submit) {
  bool blocked = false;  // the first queued change waits for a batch on its way to disk
  while (!queue_.empty() && !blocked) {
    Batch batch(held_);
    std::vector<Decided> decided;
    while (!queue_.empty() && !batch.closed()) {
      Change& change = queue_.front();
      Decision d;
      try {
        d = change.decide(batch);
      } catch (const std::exception& e) {  // a bug, not the caller's fault: answer it, keep serving
        d = Decision::Reject(context_(absl::InternalError(absl::StrCat("internal error: ", e.what()))));
      }
      if (d.kind == Decision::Kind::kWait) {  // first of the next batch
        blocked = batch.empty();
        break;
      }
      if (d.kind == Decision::Kind::kReject) {
        change.answer_error(d.rejection, done);
      } else {
        decided.push_back({std::move(d.apply), std::move(change.answer_error)});
      }
      queue_.pop_front();
      batch.Accepted();
    }
    if (batch.writes.empty()) {  // nothing to wait for: applied in order, now
      for (Decided& d : decided) d.apply(done);
      continue;
    }
    // The batch holds what it claimed until it is applied; the next batch may go to disk meanwhile.
    held_.items.insert(batch.items().begin(), batch.items().end());
    held_.whole_jobs += batch.whole_job() ? 1 : 0;
    in_flight_.push_back(
        {std::vector<std::string>(batch.items().begin(), batch.items().end()), batch.whole_job(), std::move(decided)});
    submit(std::move(batch.writes));
  }
}

void CommitQueue::Written(const absl::Status& status, Completions& done) {
  InFlight written = std::move(in_flight_.front());
  in_flight_.pop_front();
  for (const std::string& item : written.items) held_.items.erase(held_.items.find(item));
  held_.whole_jobs -= written.whole_job ? 1 : 0;
  for (Decided& d : written.changes) {
    if (status.ok())
      d.apply(done);
    else
      d.answer_error(context_(status), done);
  }
}

}  // namespace tpcoord
