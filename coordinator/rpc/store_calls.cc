// The key-value store family of JobCalls (job_calls.h): the c10d store of a job's generation, as its members
// see it.
#include <string>
#include <utility>
#include <vector>

#include "coordinator/rpc/job_calls.h"

namespace tpcoord {

WaitingCall JobCalls::StoreSet(const Caller& caller, v1::StoreSetRequest& req, Millis, v1::StoreSetResponse*,
                               StatusDone done) const {
  absl::StatusOr<std::shared_ptr<Job>> job = Checked(req);
  if (!job.ok()) return done(job.status()), WaitingCall{};
  (*job)->StoreSet(caller, req.generation(), std::move(*req.mutable_key()), std::move(*req.mutable_value()),
                   std::move(done));
  return {};
}

WaitingCall JobCalls::StoreGet(const Caller& caller, v1::StoreGetRequest& req, Millis wait, v1::StoreGetResponse* out,
                               StatusDone done) const {
  absl::StatusOr<std::shared_ptr<Job>> job = Checked(req);
  if (!job.ok()) return done(job.status()), WaitingCall{};
  const uint64_t id =
      (*job)->StoreGet(caller, req.generation(), std::move(*req.mutable_key()), wait,
                       Filling<std::string>(std::move(done), [out](std::string v) { out->set_value(std::move(v)); }));
  return WaitingCall{*std::move(job), id};
}

WaitingCall JobCalls::StoreAdd(const Caller& caller, v1::StoreAddRequest& req, Millis, v1::StoreAddResponse* out,
                               StatusDone done) const {
  absl::StatusOr<std::shared_ptr<Job>> job = Checked(req);
  if (!job.ok()) return done(job.status()), WaitingCall{};
  (*job)->StoreAdd(caller, req.generation(), std::move(*req.mutable_key()), req.delta(),
                   Filling<int64_t>(std::move(done), [out](int64_t v) { out->set_value(v); }));
  return {};
}

WaitingCall JobCalls::StoreCompareSet(const Caller& caller, v1::StoreCompareSetRequest& req, Millis,
                                      v1::StoreCompareSetResponse* out, StatusDone done) const {
  absl::StatusOr<std::shared_ptr<Job>> job = Checked(req);
  if (!job.ok()) return done(job.status()), WaitingCall{};
  (*job)->StoreCompareSet(
      caller, req.generation(), std::move(*req.mutable_key()), std::move(*req.mutable_expected_value()),
      std::move(*req.mutable_desired_value()),
      Filling<std::string>(std::move(done), [out](std::string v) { out->set_value(std::move(v)); }));
  return {};
}

WaitingCall JobCalls::StoreCheck(const Caller& caller, v1::StoreCheckRequest& req, Millis, v1::StoreCheckResponse* out,
                                 StatusDone done) const {
  absl::StatusOr<std::shared_ptr<Job>> job = Checked(req);
  if (!job.ok()) return done(job.status()), WaitingCall{};
  const std::vector<std::string> keys(req.keys().begin(), req.keys().end());
  absl::StatusOr<bool> present = (*job)->StoreCheck(caller, req.generation(), keys);
  if (present.ok()) out->set_all_present(*present);
  done(present.status());
  return {};
}

WaitingCall JobCalls::StoreDelete(const Caller& caller, v1::StoreDeleteRequest& req, Millis,
                                  v1::StoreDeleteResponse* out, StatusDone done) const {
  absl::StatusOr<std::shared_ptr<Job>> job = Checked(req);
  if (!job.ok()) return done(job.status()), WaitingCall{};
  (*job)->StoreDelete(caller, req.generation(), std::move(*req.mutable_key()),
                      Filling<bool>(std::move(done), [out](bool deleted) { out->set_deleted(deleted); }));
  return {};
}

WaitingCall JobCalls::StoreNumKeys(const Caller& caller, v1::StoreNumKeysRequest& req, Millis,
                                   v1::StoreNumKeysResponse* out, StatusDone done) const {
  absl::StatusOr<std::shared_ptr<Job>> job = Checked(req);
  if (!job.ok()) return done(job.status()), WaitingCall{};
  absl::StatusOr<int64_t> n = (*job)->StoreNumKeys(caller, req.generation());
  if (n.ok()) out->set_num_keys(*n);
  done(n.status());
  return {};
}

WaitingCall JobCalls::StoreWait(const Caller& caller, v1::StoreWaitRequest& req, Millis wait, v1::StoreWaitResponse*,
                                StatusDone done) const {
  absl::StatusOr<std::shared_ptr<Job>> job = Checked(req);
  if (!job.ok()) return done(job.status()), WaitingCall{};
  const uint64_t id = (*job)->StoreWait(
      caller, req.generation(), std::vector<std::string>(req.keys().begin(), req.keys().end()), wait, std::move(done));
  return WaitingCall{*std::move(job), id};
}

}  // namespace tpcoord
