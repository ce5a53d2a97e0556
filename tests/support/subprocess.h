// Child processes for integration tests: started with their output captured to files, bounded by
// timeouts, and always cleaned up — killed with their whole process group when the Subprocess object goes
// away, and by the kernel if the test process itself dies (PR_SET_PDEATHSIG).
#ifndef TPCOORD_TESTS_SUPPORT_SUBPROCESS_H_
#define TPCOORD_TESTS_SUPPORT_SUBPROCESS_H_

#include <sys/types.h>

#include <chrono>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace tpcoord::testing {

class Subprocess {
 public:
  // Starts argv[0] (a path) with argv[1..]; `env` is added to the test's environment.
  static absl::StatusOr<std::unique_ptr<Subprocess>> Start(const std::vector<std::string>& argv,
                                                           const std::map<std::string, std::string>& env = {});
  ~Subprocess();  // SIGKILL to the process group if still running
  Subprocess(const Subprocess&) = delete;
  Subprocess& operator=(const Subprocess&) = delete;

  pid_t pid() const { return pid_; }
  bool running();

  // The exit code, or 128 + signal for a process killed by a signal. DEADLINE_EXCEEDED if it is still
  // running after `timeout` (it is left running).
  absl::StatusOr<int> Wait(std::chrono::milliseconds timeout);
  void Signal(int signal_number);
  // To the whole process group: the process and every child it started (tp-worker's trainer).
  void SignalGroup(int signal_number);
  // Whether a process of its group is stopped (SIGSTOP; tp-worker's trainer stops itself at
  // TPCOORD_TEST_STOP_AT).
  bool GroupStopped() const;

  std::string Stdout() const;
  std::string Stderr() const;
  // Waits until stdout (or stderr) holds a line starting with `prefix`; returns that line.
  absl::StatusOr<std::string> WaitForLine(absl::string_view prefix, std::chrono::milliseconds timeout,
                                          bool on_stderr = false);

 private:
  Subprocess(pid_t pid, std::string out_path, std::string err_path)
      : pid_(pid), out_path_(std::move(out_path)), err_path_(std::move(err_path)) {}

  pid_t pid_;
  std::string out_path_;
  std::string err_path_;
  bool reaped_ = false;
  int exit_code_ = -1;
};

// Runs a command to completion (bounded by `timeout`, killed after it).
struct RunResult {
  int exit_code = -1;
  std::string out;
  std::string err;
};
absl::StatusOr<RunResult> Run(const std::vector<std::string>& argv, std::chrono::milliseconds timeout,
                              const std::map<std::string, std::string>& env = {});

// A fresh empty directory under the test's temporary directory.
std::string MakeTempDir(absl::string_view name);

// Path of a project binary in the build tree, e.g. BinPath("coordinator/tpctl").
std::string BinPath(absl::string_view relative);

}  // namespace tpcoord::testing

#endif  // TPCOORD_TESTS_SUPPORT_SUBPROCESS_H_
