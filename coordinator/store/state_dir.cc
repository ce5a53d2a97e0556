#include "coordinator/store/state_dir.h"

#include <fcntl.h>
#include <sys/file.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <random>
#include <sstream>

#include "absl/status/status.h"
#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"

namespace tpcoord {
namespace {

namespace fs = std::filesystem;

// Where the database keeps its own identity, outside every job's keys.
constexpr char kIdentityKey[] = "m/identity";

std::string NewIdentity() {
  std::random_device random;
  std::string id;
  for (int i = 0; i < 4; ++i) absl::StrAppend(&id, absl::Hex(random(), absl::kZeroPad8));
  return id;
}

absl::StatusOr<std::string> ReadIdentityFile(const fs::path& path) {
  std::ifstream in(path);
  if (!in) return std::string();
  std::stringstream text;
  text << in.rdbuf();
  return std::string(absl::StripAsciiWhitespace(text.str()));
}

// Writes `path` so that it is either absent or complete, also across a crash.
absl::Status WriteFileDurably(const fs::path& path, const std::string& contents) {
  const std::string tmp = path.string() + ".tmp";
  const int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) return absl::InternalError(absl::StrCat("cannot create ", tmp, ": ", std::strerror(errno)));
  const bool ok =
      ::write(fd, contents.data(), contents.size()) == static_cast<ssize_t>(contents.size()) && ::fsync(fd) == 0;
  const int error = errno;
  ::close(fd);
  if (!ok || ::rename(tmp.c_str(), path.c_str()) != 0) {
    return absl::InternalError(absl::StrCat("cannot write ", path.string(), ": ", std::strerror(ok ? errno : error)));
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<std::unique_ptr<StateDir>> StateDir::Open(const std::string& dir_name) {
  const fs::path dir(dir_name);
  std::error_code ec;
  fs::create_directories(dir, ec);
  if (ec) return absl::InternalError(absl::StrCat("cannot create --state-dir ", dir_name, ": ", ec.message()));

  const std::string lock_path = (dir / "LOCK").string();
  const int lock_fd = ::open(lock_path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
  if (lock_fd < 0) return absl::InternalError(absl::StrCat("cannot open ", lock_path, ": ", std::strerror(errno)));
  if (::flock(lock_fd, LOCK_EX | LOCK_NB) != 0) {
    ::close(lock_fd);
    return absl::FailedPreconditionError(
        absl::StrCat("another tp-coordinator holds ", lock_path, "; one coordinator per --state-dir"));
  }
  auto fail = [lock_fd](absl::Status status) {
    ::close(lock_fd);
    return status;
  };

  const fs::path database = dir / "coordinator.db";
  const fs::path identity_file = dir / "IDENTITY";
  const bool database_existed = fs::exists(database, ec);
  const uintmax_t database_bytes = database_existed ? fs::file_size(database, ec) : 0;
  absl::StatusOr<std::string> expected = ReadIdentityFile(identity_file);
  if (!expected.ok()) return fail(expected.status());
  const std::string remedy = absl::StrCat(
      "; restore that database from a backup, or, to start over with no jobs at all, delete ", identity_file.string());
  if (!expected->empty() && !database_existed) {  // refused before SQLite creates an empty file
    return fail(absl::FailedPreconditionError(absl::StrCat(
        "refusing to start with an empty state: ", identity_file.string(), " says this directory holds database ",
        *expected, ", but ", database.string(), " is missing", remedy)));
  }
  absl::StatusOr<std::unique_ptr<StateStore>> store = OpenSqliteStateStore(database.string());
  if (!store.ok()) return fail(store.status());
  absl::StatusOr<std::vector<StateEntry>> stored = (*store)->Scan(kIdentityKey);
  if (!stored.ok()) return fail(stored.status());
  const std::string actual = stored->empty() ? "" : stored->front().value;

  if (!expected->empty() && actual.empty()) {
    return fail(absl::FailedPreconditionError(absl::StrCat(
        "refusing to start with an empty state: ", identity_file.string(), " says this directory holds database ",
        *expected, ", but ", database.string(), " (", database_bytes, " bytes) holds no state", remedy)));
  }
  if (!expected->empty() && actual != *expected) {
    return fail(absl::FailedPreconditionError(absl::StrCat("refusing to start: ", database.string(), " is database ",
                                                           actual, ", but ", identity_file.string(),
                                                           " says this directory holds database ", *expected, remedy)));
  }
  if (actual.empty()) {  // a new state directory
    const std::string identity = NewIdentity();
    if (absl::Status s = (*store)->Write({StateWrite::Put(kIdentityKey, identity)}, "write of the database identity");
        !s.ok()) {
      return fail(s);
    }
    if (absl::Status s = WriteFileDurably(identity_file, identity + "\n"); !s.ok()) return fail(s);
  } else if (expected->empty()) {  // a database whose directory lost its IDENTITY (or predates it)
    if (absl::Status s = WriteFileDurably(identity_file, actual + "\n"); !s.ok()) return fail(s);
  }
  return std::unique_ptr<StateDir>(new StateDir(lock_fd, database.string(), *std::move(store)));
}

StateDir::~StateDir() {
  store_.reset();
  ::close(lock_fd_);
}

}  // namespace tpcoord
