// The directory that holds a coordinator's state (--state-dir): the SQLite database coordinator.db, a LOCK
// file that admits one coordinator per directory (a second would serve the same jobs from a diverging copy),
// and an IDENTITY file naming the database that belongs here. The identity is also stored inside the
// database, so a database that went missing, was emptied or truncated, or was swapped for another one is
// refused loudly at start instead of being served as if no job had ever existed.
#ifndef TPCOORD_COORDINATOR_STORE_STATE_DIR_H_
#define TPCOORD_COORDINATOR_STORE_STATE_DIR_H_

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "coordinator/store/state_store.h"

namespace tpcoord {

class StateDir {
 public:
  // Creates `dir` if needed, takes its lock and opens its database. FAILED_PRECONDITION naming the
  // directory when another coordinator holds it or when the database does not match IDENTITY (with what to
  // do about it); DATA_LOSS when the database is corrupt.
  static absl::StatusOr<std::unique_ptr<StateDir>> Open(const std::string& dir);
  ~StateDir();  // releases the lock
  StateDir(const StateDir&) = delete;
  StateDir& operator=(const StateDir&) = delete;

  StateStore* store() const { return store_.get(); }
  const std::string& database_path() const { return database_path_; }

 private:
  StateDir(int lock_fd, std::string database_path, std::unique_ptr<StateStore> store)
      : lock_fd_(lock_fd), database_path_(std::move(database_path)), store_(std::move(store)) {}

  const int lock_fd_;
  const std::string database_path_;
  std::unique_ptr<StateStore> store_;
};

}  // namespace tpcoord

#endif  // TPCOORD_COORDINATOR_STORE_STATE_DIR_H_
