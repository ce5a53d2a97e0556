// Durable coordinator state: an ordered map from byte-string keys to byte-string values, changed only in
// atomic batches. Everything a coordinator killed with SIGKILL must still know when it restarts goes
// through this interface (coordinator/job_storage.h says what is kept under which key); embedded SQLite by
// default, and the same keyspace maps onto etcd.
//
// Thread-safety: implementations are safe to call from any thread.
#ifndef TPCOORD_COORDINATOR_STORE_STATE_STORE_H_
#define TPCOORD_COORDINATOR_STORE_STATE_STORE_H_

#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace tpcoord {

struct StateWrite {
  enum class Kind { kPut, kDelete, kDeletePrefix };
  Kind kind = Kind::kPut;
  std::string key;    // for kDeletePrefix: every key starting with it
  std::string value;  // kPut only

  static StateWrite Put(std::string key, std::string value) { return {Kind::kPut, std::move(key), std::move(value)}; }
  static StateWrite Delete(std::string key) { return {Kind::kDelete, std::move(key), {}}; }
  static StateWrite DeletePrefix(std::string prefix) { return {Kind::kDeletePrefix, std::move(prefix), {}}; }
};
using StateWrites = std::vector<StateWrite>;

struct StateEntry {
  std::string key;
  std::string value;
};

class StateStore {
 public:
  virtual ~StateStore() = default;

  // Applies `writes` in order, atomically and durably: when it returns OK every write is on disk; on error
  // none took effect. `what` names the change for error messages ("save of job llama-run1"). Errors name the
  // store and `what`: RESOURCE_EXHAUSTED for a full disk, INTERNAL for an I/O error, DATA_LOSS for a store
  // found corrupt.
  virtual absl::Status Write(const StateWrites& writes, absl::string_view what) = 0;

  // Every entry whose key starts with `prefix`, in key order.
  virtual absl::StatusOr<std::vector<StateEntry>> Scan(absl::string_view prefix) = 0;

  // "state store /var/lib/tpcoord/coordinator.db", for messages.
  virtual const std::string& name() const = 0;
};

// An SQLite database at `path`, created if missing (":memory:" for tests). The caller must make sure no
// other process opens the same file (tp-coordinator locks its state directory): the database is opened in
// exclusive locking mode, so the WAL index lives in this process's heap and no -shm file is ever mapped.
absl::StatusOr<std::unique_ptr<StateStore>> OpenSqliteStateStore(const std::string& path);

}  // namespace tpcoord

#endif  // TPCOORD_COORDINATOR_STORE_STATE_STORE_H_
