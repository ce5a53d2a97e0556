// StateStore on an embedded SQLite database. One row per job; the TP init record is stored as JSON text.
// WAL journal with synchronous=FULL: every SaveJob is durable before it returns, and writes are rare (a
// record, the first merge of a generation, a generation changing phase), never per heartbeat or per Join.
#include <sqlite3.h>

#include <mutex>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "coordinator/state_store.h"
#include "nlohmann/json.hpp"

namespace tpcoord {

namespace {

using nlohmann::json;

std::string RecordToJson(const std::optional<TpInitRecord>& record) {
  if (!record) return "";
  json j = {{"tp_size", record->tp_size},
            {"dtype", static_cast<int>(record->dtype)},
            {"has_tp_group", record->has_tp_group},
            {"tp_groups", record->tp_groups}};
  return j.dump();
}

absl::StatusOr<std::optional<TpInitRecord>> RecordFromJson(const std::string& text) {
  if (text.empty()) return std::optional<TpInitRecord>();
  try {
    json j = json::parse(text);
    TpInitRecord record;
    record.tp_size = j.at("tp_size").get<int>();
    record.dtype = static_cast<Dtype>(j.at("dtype").get<int>());
    record.has_tp_group = j.at("has_tp_group").get<bool>();
    record.tp_groups = j.at("tp_groups").get<std::vector<RankList>>();
    return std::optional<TpInitRecord>(record);
  } catch (const json::exception& e) {
    return absl::DataLossError(absl::StrCat("stored tp_init record is corrupt: ", e.what()));
  }
}

class SqliteStateStore : public StateStore {
 public:
  explicit SqliteStateStore(sqlite3* db) : db_(db) {}
  ~SqliteStateStore() override { sqlite3_close(db_); }

  absl::Status Init() {
    const char* schema =
        "PRAGMA journal_mode=WAL;"
        "PRAGMA synchronous=FULL;"
        "CREATE TABLE IF NOT EXISTS jobs ("
        "  job_id TEXT PRIMARY KEY,"
        "  tp_init TEXT NOT NULL,"
        "  merged_config TEXT NOT NULL,"
        "  generation INTEGER NOT NULL,"
        "  phase INTEGER NOT NULL,"
        "  world_size INTEGER NOT NULL,"
        "  end_reason TEXT NOT NULL);";
    return Exec(schema);
  }

  absl::Status SaveJob(const PersistedJob& job) override {
    std::lock_guard<std::mutex> lock(mu_);
    sqlite3_stmt* stmt = nullptr;
    const char* sql =
        "INSERT OR REPLACE INTO jobs (job_id, tp_init, merged_config, generation, phase, world_size, end_reason)"
        " VALUES (?, ?, ?, ?, ?, ?, ?)";
    if (sqlite3_prepare_v2(db_, sql, -1, &stmt, nullptr) != SQLITE_OK) return Error("prepare save");
    const std::string record = RecordToJson(job.tp_init);
    sqlite3_bind_text(stmt, 1, job.job_id.data(), static_cast<int>(job.job_id.size()), SQLITE_TRANSIENT);
    sqlite3_bind_text(stmt, 2, record.data(), static_cast<int>(record.size()), SQLITE_TRANSIENT);
    sqlite3_bind_text(stmt, 3, job.merged_config.data(), static_cast<int>(job.merged_config.size()),
                      SQLITE_TRANSIENT);
    sqlite3_bind_int64(stmt, 4, static_cast<sqlite3_int64>(job.generation));
    sqlite3_bind_int(stmt, 5, static_cast<int>(job.phase));
    sqlite3_bind_int(stmt, 6, job.world_size);
    sqlite3_bind_text(stmt, 7, job.end_reason.data(), static_cast<int>(job.end_reason.size()), SQLITE_TRANSIENT);
    const int rc = sqlite3_step(stmt);
    sqlite3_finalize(stmt);
    if (rc != SQLITE_DONE) return Error(absl::StrCat("save job ", job.job_id));
    return absl::OkStatus();
  }

  absl::StatusOr<std::vector<PersistedJob>> LoadJobs() override {
    std::lock_guard<std::mutex> lock(mu_);
    sqlite3_stmt* stmt = nullptr;
    const char* sql =
        "SELECT job_id, tp_init, merged_config, generation, phase, world_size, end_reason FROM jobs "
        "ORDER BY job_id";
    if (sqlite3_prepare_v2(db_, sql, -1, &stmt, nullptr) != SQLITE_OK) return Error("prepare load");
    std::vector<PersistedJob> jobs;
    int rc;
    while ((rc = sqlite3_step(stmt)) == SQLITE_ROW) {
      PersistedJob job;
      job.job_id = Text(stmt, 0);
      absl::StatusOr<std::optional<TpInitRecord>> record = RecordFromJson(Text(stmt, 1));
      if (!record.ok()) {
        sqlite3_finalize(stmt);
        return absl::DataLossError(absl::StrCat("job ", job.job_id, ": ", record.status().message()));
      }
      job.tp_init = *record;
      job.merged_config = Text(stmt, 2);
      job.generation = static_cast<uint64_t>(sqlite3_column_int64(stmt, 3));
      job.phase = static_cast<JobPhase>(sqlite3_column_int(stmt, 4));
      job.world_size = sqlite3_column_int(stmt, 5);
      job.end_reason = Text(stmt, 6);
      jobs.push_back(std::move(job));
    }
    sqlite3_finalize(stmt);
    if (rc != SQLITE_DONE) return Error("load jobs");
    return jobs;
  }

 private:
  static std::string Text(sqlite3_stmt* stmt, int column) {
    const unsigned char* text = sqlite3_column_text(stmt, column);
    return text ? std::string(reinterpret_cast<const char*>(text), sqlite3_column_bytes(stmt, column)) : "";
  }

  absl::Status Exec(const char* sql) {
    char* message = nullptr;
    if (sqlite3_exec(db_, sql, nullptr, nullptr, &message) != SQLITE_OK) {
      absl::Status status = absl::InternalError(absl::StrCat("sqlite: ", message ? message : "error"));
      sqlite3_free(message);
      return status;
    }
    return absl::OkStatus();
  }

  absl::Status Error(absl::string_view what) {
    return absl::UnavailableError(absl::StrCat("state store: ", what, ": ", sqlite3_errmsg(db_)));
  }

  std::mutex mu_;
  sqlite3* db_;
};

}  // namespace

absl::StatusOr<std::unique_ptr<StateStore>> OpenSqliteStateStore(const std::string& path) {
  sqlite3* db = nullptr;
  const int flags = SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_FULLMUTEX;
  if (sqlite3_open_v2(path.c_str(), &db, flags, nullptr) != SQLITE_OK) {
    std::string message = db ? sqlite3_errmsg(db) : "out of memory";
    sqlite3_close(db);
    return absl::UnavailableError(absl::StrCat("cannot open state database ", path, ": ", message));
  }
  sqlite3_busy_timeout(db, 5000);
  auto store = std::make_unique<SqliteStateStore>(db);
  if (absl::Status s = store->Init(); !s.ok()) return s;
  return std::unique_ptr<StateStore>(std::move(store));
}

}  // namespace tpcoord
