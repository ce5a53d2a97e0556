#include "coordinator/ha/etcd_state_store.h"

#include <map>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"

namespace tpcoord {
namespace {

namespace pb = etcdserverpb;

// etcd's defaults, less room for the fence and the request's framing.
constexpr int kMaxOpsPerTxn = 127;
constexpr size_t kMaxBytesPerTxn = 1400 * 1024;

// One etcd operation: a put of key = value, or a delete of [key, end).
struct Op {
  bool put = false;
  std::string key;
  std::string end_or_value;
};

// The etcd operations with the effect of `writes` applied in order, under `root`. etcd refuses a Txn that
// puts a key twice or puts a key that one of its deletes covers ("duplicate key given in txn request"),
// while a batch here often clears a generation's prefix and then puts what replaces it. So later writes
// win, and every deleted range is cut around the keys put after it: deletes and puts never overlap, and
// their order within the Txn no longer matters.
std::vector<Op> Normalize(const StateWrites& writes, const std::string& root) {
  std::map<std::string, std::string> puts;
  std::vector<std::pair<std::string, std::string>> deletes;  // [begin, end)
  for (const StateWrite& w : writes) {
    const std::string key = root + w.key;
    switch (w.kind) {
      case StateWrite::Kind::kPut: puts[key] = w.value; break;
      case StateWrite::Kind::kDelete:
        puts.erase(key);
        deletes.emplace_back(key, key + std::string(1, '\0'));
        break;
      case StateWrite::Kind::kDeletePrefix: {
        const std::string end = PrefixEnd(key);
        puts.erase(puts.lower_bound(key), puts.lower_bound(end));
        deletes.emplace_back(key, end);
        break;
      }
    }
  }
  std::vector<Op> ops;
  for (const auto& [begin, end] : deletes) {
    std::string from = begin;
    for (auto it = puts.lower_bound(begin); it != puts.end() && it->first < end; ++it) {
      if (from < it->first) ops.push_back({false, from, it->first});
      from = it->first + std::string(1, '\0');
    }
    if (from < end) ops.push_back({false, from, end});
  }
  for (auto& [key, value] : puts) ops.push_back({true, key, std::move(value)});
  return ops;
}

class EtcdStateStore : public StateStore {
 public:
  EtcdStateStore(EtcdConnection* etcd, Fence fence, std::function<void(const std::string&)> on_fenced)
      : etcd_(etcd),
        fence_(std::move(fence)),
        on_fenced_(std::move(on_fenced)),
        root_(etcd->target().prefix + "/state/"),
        name_(absl::StrCat("state store ", etcd->name(), etcd->target().prefix)) {}

  absl::Status Write(const StateWrites& writes, absl::string_view what) override {
    pb::TxnRequest txn;
    size_t bytes = 0;
    for (const Op& op : Normalize(writes, root_)) {
      const size_t size = op.key.size() + op.end_or_value.size() + 16;
      if (txn.success_size() > 0 && (txn.success_size() >= kMaxOpsPerTxn || bytes + size > kMaxBytesPerTxn)) {
        if (absl::Status s = Commit(txn, what); !s.ok()) return s;
        txn.clear_success();
        bytes = 0;
      }
      if (op.put) {
        pb::PutRequest* put = txn.add_success()->mutable_request_put();
        put->set_key(op.key);
        put->set_value(op.end_or_value);
      } else {
        pb::DeleteRangeRequest* del = txn.add_success()->mutable_request_delete_range();
        del->set_key(op.key);
        del->set_range_end(op.end_or_value);
      }
      bytes += size;
    }
    if (txn.success_size() == 0) return absl::OkStatus();
    return Commit(txn, what);
  }

  absl::StatusOr<std::vector<StateEntry>> Scan(absl::string_view prefix) override {
    std::vector<StateEntry> out;
    const std::string begin = root_ + std::string(prefix);
    pb::RangeRequest req;
    req.set_key(begin);
    req.set_range_end(PrefixEnd(begin));
    req.set_limit(1000);
    while (true) {
      pb::RangeResponse resp;
      if (absl::Status s = etcd_->Range(req, &resp); !s.ok()) {
        return absl::Status(s.code(), absl::StrCat(name_, ": cannot read ", prefix, ": ", s.message()));
      }
      for (pb::KeyValue& kv : *resp.mutable_kvs()) {
        out.push_back({kv.key().substr(root_.size()), std::move(*kv.mutable_value())});
      }
      if (!resp.more() || resp.kvs_size() == 0) return out;
      // The next page, from the same snapshot.
      req.set_key(root_ + out.back().key + std::string(1, '\0'));
      req.set_revision(resp.header().revision());
    }
  }

  const std::string& name() const override { return name_; }

 private:
  absl::Status Commit(pb::TxnRequest& txn, absl::string_view what) {
    txn.clear_compare();
    pb::Compare* fence = txn.add_compare();
    fence->set_key(fence_.key);
    fence->set_target(pb::Compare::CREATE);
    fence->set_result(pb::Compare::EQUAL);
    fence->set_create_revision(fence_.create_revision);
    pb::TxnResponse resp;
    if (absl::Status s = etcd_->Txn(txn, &resp); !s.ok()) {
      // Unreachable or without quorum: UNAVAILABLE, and clients retry. Anything else etcd refused is ours.
      const bool unavailable =
          s.code() == absl::StatusCode::kUnavailable || s.code() == absl::StatusCode::kDeadlineExceeded;
      if (unavailable) {
        // The outcome is unknown: etcd may still apply a proposal whose answer timed out (it did, in the
        // quorum-loss test). This coordinator's memory would then lag etcd; only a fresh load is right.
        on_fenced_(absl::StrCat("the outcome of the ", what, " is unknown (", s.message(),
                                "); the state is to be read again from etcd"));
      }
      return absl::Status(unavailable ? absl::StatusCode::kUnavailable : absl::StatusCode::kInternal,
                          absl::StrCat(name_, ": ", what, " failed: ", s.message()));
    }
    if (!resp.succeeded()) {
      const std::string why = absl::StrCat("the ", what, " was refused: the leader key ", fence_.key,
                                           " is no longer the one this coordinator created (revision ",
                                           fence_.create_revision, "); another coordinator leads");
      on_fenced_(why);
      return absl::UnavailableError(absl::StrCat(name_, ": ", why));
    }
    return absl::OkStatus();
  }

  EtcdConnection* const etcd_;
  const Fence fence_;
  const std::function<void(const std::string&)> on_fenced_;
  const std::string root_;
  const std::string name_;
};

}  // namespace

std::unique_ptr<StateStore> MakeEtcdStateStore(EtcdConnection* etcd, Fence fence,
                                               std::function<void(const std::string&)> on_fenced) {
  return std::make_unique<EtcdStateStore>(etcd, std::move(fence), std::move(on_fenced));
}

}  // namespace tpcoord
