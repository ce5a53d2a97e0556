// StateStore on an embedded SQLite database: one table of (key, value) blobs.
//
// Durability: WAL journal with synchronous=FULL, so a Write is on disk when it returns. Exclusive locking
// mode keeps the WAL index in this process's memory instead of an mmap'd -shm file, so a state directory
// that fills up or loses a file while we serve makes calls fail with an error, never the process die with
// SIGBUS. Writes are few (StateCommitter groups concurrent ones into one transaction).
//
// Disk use follows the data held: the WAL is checkpointed and truncated once a write leaves it past 64 MiB
// (and never kept longer than that after a checkpoint, journal_size_limit), and the database gives its free
// pages back (auto_vacuum=INCREMENTAL) once a write that deleted something leaves more than a quarter of it,
// and at least 16 MiB, free. So after any write coordinator.db is at most 4/3 of the pages in use plus
// 16 MiB, and coordinator.db-wal at most 64 MiB plus the last write.
#include <sqlite3.h>

#include <algorithm>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "common/mutex.h"
#include "coordinator/store/state_store.h"

namespace tpcoord {
namespace {

// The smallest string greater than every string starting with `prefix`; "" when there is none.
std::string PrefixEnd(absl::string_view prefix) {
  std::string end(prefix);
  while (!end.empty()) {
    unsigned char& last = reinterpret_cast<unsigned char&>(end.back());
    if (last != 0xff) {
      ++last;
      return end;
    }
    end.pop_back();
  }
  return end;
}

class SqliteStateStore final : public StateStore {
 public:
  SqliteStateStore(sqlite3* db, std::string path) : db_(db), name_(absl::StrCat("state store ", path)) {}
  ~SqliteStateStore() override {
    for (sqlite3_stmt* stmt : {put_, delete_, delete_range_, scan_}) sqlite3_finalize(stmt);
    sqlite3_close(db_);
  }
  SqliteStateStore(const SqliteStateStore&) = delete;
  SqliteStateStore& operator=(const SqliteStateStore&) = delete;

  absl::Status Init() {
    // Exclusive locking must be chosen before WAL is first used, or SQLite creates the -shm file anyway.
    // auto_vacuum takes effect only in a database without tables yet (an older one is converted below).
    for (const char* pragma :
         {"PRAGMA locking_mode=EXCLUSIVE", "PRAGMA auto_vacuum=INCREMENTAL", "PRAGMA journal_mode=WAL",
          "PRAGMA synchronous=FULL", "PRAGMA journal_size_limit=67108864"}) {
      if (int rc = sqlite3_exec(db_, pragma, nullptr, nullptr, nullptr); rc != SQLITE_OK) return Error(rc, pragma);
    }
    sqlite3_wal_hook(db_, &SqliteStateStore::OnWalCommit, this);
    if (absl::Status s = CheckIntegrity(); !s.ok()) return s;
    if (TableExists("jobs")) {
      return absl::FailedPreconditionError(
          absl::StrCat(name_,
                       " holds state in the format of an earlier tpcoord (table \"jobs\"), which this version cannot "
                       "read; move the file away to start with an empty state"));
    }
    const char* schema = "CREATE TABLE IF NOT EXISTS state (key BLOB PRIMARY KEY, value BLOB NOT NULL) WITHOUT ROWID";
    if (int rc = sqlite3_exec(db_, schema, nullptr, nullptr, nullptr); rc != SQLITE_OK)
      return Error(rc, "create schema");
    for (auto [stmt, sql] : {std::pair{&put_, "INSERT OR REPLACE INTO state (key, value) VALUES (?, ?)"},
                             std::pair{&delete_, "DELETE FROM state WHERE key = ?"},
                             std::pair{&delete_range_, "DELETE FROM state WHERE key >= ? AND (? IS NULL OR key < ?)"},
                             std::pair{&scan_,
                                       "SELECT key, value FROM state WHERE key >= ? AND (? IS NULL OR key < ?) "
                                       "ORDER BY key"}}) {
      if (int rc = sqlite3_prepare_v2(db_, sql, -1, stmt, nullptr); rc != SQLITE_OK) return Error(rc, "prepare");
    }
    page_size_ = PragmaInt("page_size");
    // A database made before auto_vacuum was set is converted once; if that fails (a full disk) it is
    // served as it is, and its free pages are reused but not given back.
    if (PragmaInt("auto_vacuum") != 2) {
      sqlite3_exec(db_, "PRAGMA auto_vacuum=INCREMENTAL", nullptr, nullptr, nullptr);
      sqlite3_exec(db_, "VACUUM", nullptr, nullptr, nullptr);
    }
    return absl::OkStatus();
  }

  absl::Status Write(const StateWrites& writes, absl::string_view what) override {
    MutexLock lock(&mu_);
    if (int rc = sqlite3_exec(db_, "BEGIN IMMEDIATE", nullptr, nullptr, nullptr); rc != SQLITE_OK) {
      return Error(rc, what);
    }
    for (const StateWrite& w : writes) {
      int rc = SQLITE_OK;
      switch (w.kind) {
        case StateWrite::Kind::kPut: rc = Step(put_, {w.key, w.value}); break;
        case StateWrite::Kind::kDelete: rc = Step(delete_, {w.key}); break;
        case StateWrite::Kind::kDeletePrefix: rc = StepRange(delete_range_, w.key); break;
      }
      if (rc != SQLITE_DONE) return Rollback(rc, what);
    }
    if (int rc = sqlite3_exec(db_, "COMMIT", nullptr, nullptr, nullptr); rc != SQLITE_OK) return Rollback(rc, what);
    const bool deleted =
        std::any_of(writes.begin(), writes.end(), [](const StateWrite& w) { return w.kind != StateWrite::Kind::kPut; });
    Shrink(deleted);
    return absl::OkStatus();
  }

  // The size bounds at the top of this file; errors are left for the next write (the data is committed).
  void Shrink(bool deleted) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    if (deleted) {
      const int64_t free_pages = PragmaInt("freelist_count");
      if (free_pages * page_size_ >= kFreeSlackBytes && free_pages * 4 >= PragmaInt("page_count")) {
        sqlite3_exec(db_, "PRAGMA incremental_vacuum", nullptr, nullptr, nullptr);
      }
    }
    if (wal_pages_ * page_size_ > kWalLimitBytes) {
      sqlite3_wal_checkpoint_v2(db_, nullptr, SQLITE_CHECKPOINT_TRUNCATE, nullptr, nullptr);
      wal_pages_ = 0;
    }
  }

  // After every commit: what SQLite's own auto-checkpoint does (a passive checkpoint every 1000 pages), and
  // the WAL's size for Shrink.
  static int OnWalCommit(void* self, sqlite3* db, const char* name, int pages) {
    static_cast<SqliteStateStore*>(self)->wal_pages_ = pages;
    if (pages >= 1000) sqlite3_wal_checkpoint_v2(db, name, SQLITE_CHECKPOINT_PASSIVE, nullptr, nullptr);
    return SQLITE_OK;
  }

  int64_t PragmaInt(const char* name) {
    sqlite3_stmt* stmt = nullptr;
    int64_t value = 0;
    if (sqlite3_prepare_v2(db_, absl::StrCat("PRAGMA ", name).c_str(), -1, &stmt, nullptr) == SQLITE_OK &&
        sqlite3_step(stmt) == SQLITE_ROW) {
      value = sqlite3_column_int64(stmt, 0);
    }
    sqlite3_finalize(stmt);
    return value;
  }

  absl::StatusOr<std::vector<StateEntry>> Scan(absl::string_view prefix) override {
    MutexLock lock(&mu_);
    std::vector<StateEntry> entries;
    BindRange(scan_, prefix);
    int rc;
    while ((rc = sqlite3_step(scan_)) == SQLITE_ROW) entries.push_back({Blob(scan_, 0), Blob(scan_, 1)});
    sqlite3_reset(scan_);
    sqlite3_clear_bindings(scan_);
    if (rc != SQLITE_DONE) return Error(rc, absl::StrCat("read of ", prefix.empty() ? "everything" : prefix));
    return entries;
  }

  const std::string& name() const override { return name_; }

 private:
  absl::Status CheckIntegrity() {
    sqlite3_stmt* stmt = nullptr;
    int rc = sqlite3_prepare_v2(db_, "PRAGMA quick_check", -1, &stmt, nullptr);
    std::string first;
    if (rc == SQLITE_OK && (rc = sqlite3_step(stmt)) == SQLITE_ROW) first = Blob(stmt, 0);
    sqlite3_finalize(stmt);
    if (rc != SQLITE_ROW && rc != SQLITE_DONE) return Error(rc, "integrity check");
    if (first != "ok") {
      return absl::DataLossError(
          absl::StrCat(name_, " is corrupt: integrity check: ", first, "; restore it from a backup or move it away"));
    }
    return absl::OkStatus();
  }

  bool TableExists(const char* table) {
    sqlite3_stmt* stmt = nullptr;
    bool exists = false;
    if (sqlite3_prepare_v2(db_, "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?", -1, &stmt, nullptr) ==
        SQLITE_OK) {
      sqlite3_bind_text(stmt, 1, table, -1, SQLITE_STATIC);
      exists = sqlite3_step(stmt) == SQLITE_ROW;
    }
    sqlite3_finalize(stmt);
    return exists;
  }

  static std::string Blob(sqlite3_stmt* stmt, int column) {
    const void* data = sqlite3_column_blob(stmt, column);
    return data ? std::string(static_cast<const char*>(data), sqlite3_column_bytes(stmt, column)) : "";
  }

  static int Step(sqlite3_stmt* stmt, std::initializer_list<absl::string_view> values) {
    int i = 1;
    for (absl::string_view v : values) {
      sqlite3_bind_blob64(stmt, i++, v.empty() ? "" : v.data(), v.size(), SQLITE_STATIC);
    }
    const int rc = sqlite3_step(stmt);
    sqlite3_reset(stmt);
    sqlite3_clear_bindings(stmt);
    return rc;
  }

  // Binds [prefix, PrefixEnd(prefix)) to parameters 1-3 of a range statement (NULL: no upper bound).
  static void BindRange(sqlite3_stmt* stmt, absl::string_view prefix) {
    const std::string end = PrefixEnd(prefix);
    sqlite3_bind_blob64(stmt, 1, prefix.empty() ? "" : prefix.data(), prefix.size(), SQLITE_TRANSIENT);
    if (end.empty()) {
      sqlite3_bind_null(stmt, 2);
      sqlite3_bind_null(stmt, 3);
    } else {
      sqlite3_bind_blob64(stmt, 2, end.data(), end.size(), SQLITE_TRANSIENT);
      sqlite3_bind_blob64(stmt, 3, end.data(), end.size(), SQLITE_TRANSIENT);
    }
  }

  static int StepRange(sqlite3_stmt* stmt, absl::string_view prefix) {
    BindRange(stmt, prefix);
    const int rc = sqlite3_step(stmt);
    sqlite3_reset(stmt);
    sqlite3_clear_bindings(stmt);
    return rc;
  }

  absl::Status Rollback(int rc, absl::string_view what) {
    absl::Status status = Error(rc, what);
    sqlite3_exec(db_, "ROLLBACK", nullptr, nullptr, nullptr);
    return status;
  }

  absl::Status Error(int rc, absl::string_view what) const {
    const std::string detail =
        absl::StrCat(what, " failed: ", sqlite3_errmsg(db_), " (sqlite error ", sqlite3_extended_errcode(db_), ")");
    const std::string message = absl::StrCat(name_, ": ", detail);
    switch (rc & 0xff) {
      case SQLITE_FULL: return absl::ResourceExhaustedError(message);
      case SQLITE_CORRUPT:
      case SQLITE_NOTADB:
        return absl::DataLossError(
            absl::StrCat(name_, " is corrupt: ", detail, "; restore it from a backup or move it away"));
      case SQLITE_BUSY:
      case SQLITE_LOCKED: return absl::UnavailableError(message);
      default: return absl::InternalError(message);
    }
  }

  static constexpr int64_t kWalLimitBytes = int64_t{64} << 20;
  static constexpr int64_t kFreeSlackBytes = int64_t{16} << 20;

  Mutex mu_;
  sqlite3* const db_;
  int64_t page_size_ = 4096;
  int64_t wal_pages_ = 0;  // frames in the WAL after the last commit (OnWalCommit)
  const std::string name_;
  sqlite3_stmt* put_ = nullptr;
  sqlite3_stmt* delete_ = nullptr;
  sqlite3_stmt* delete_range_ = nullptr;
  sqlite3_stmt* scan_ = nullptr;
};

}  // namespace

absl::StatusOr<std::unique_ptr<StateStore>> OpenSqliteStateStore(const std::string& path) {
  sqlite3* db = nullptr;
  const int flags = SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX;
  if (int rc = sqlite3_open_v2(path.c_str(), &db, flags, nullptr); rc != SQLITE_OK) {
    std::string message = db ? sqlite3_errmsg(db) : "out of memory";
    sqlite3_close(db);
    return absl::InternalError(absl::StrCat("cannot open state store ", path, ": ", message));
  }
  sqlite3_extended_result_codes(db, 1);
  auto store = std::make_unique<SqliteStateStore>(db, path);
  if (absl::Status s = store->Init(); !s.ok()) return s;
  return std::unique_ptr<StateStore>(std::move(store));
}

}  // namespace tpcoord
