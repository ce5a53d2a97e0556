#include "tests/support/subprocess.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <thread>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_split.h"

extern char** environ;

namespace tpcoord::testing {
namespace {

std::string ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream text;
  text << in.rdbuf();
  return text.str();
}

std::string TempRoot() {
  const char* dir = std::getenv("TEST_TMPDIR");
  if (dir == nullptr) dir = std::getenv("TMPDIR");
  return dir ? dir : "/tmp";
}

}  // namespace

std::string MakeTempDir(absl::string_view name) {
  static std::atomic<int> counter{0};
  const std::string path = absl::StrCat(TempRoot(), "/tpcoord-test-", getpid(), "-", counter++, "-", name);
  std::filesystem::remove_all(path);
  std::filesystem::create_directories(path);
  return path;
}

std::string BinPath(absl::string_view relative) { return absl::StrCat(TPCOORD_BIN_DIR, "/", relative); }

absl::StatusOr<std::unique_ptr<Subprocess>> Subprocess::Start(const std::vector<std::string>& argv,
                                                              const std::map<std::string, std::string>& env) {
  const std::string dir = MakeTempDir("proc");
  const std::string out_path = dir + "/stdout";
  const std::string err_path = dir + "/stderr";
  std::vector<std::string> env_strings;
  for (char** e = environ; *e != nullptr; ++e) {
    const std::string entry = *e;
    const std::string key = entry.substr(0, entry.find('='));
    if (!env.count(key)) env_strings.push_back(entry);
  }
  for (const auto& [k, v] : env) env_strings.push_back(k + "=" + v);
  std::vector<char*> c_argv, c_env;
  for (const std::string& a : argv) c_argv.push_back(const_cast<char*>(a.c_str()));
  c_argv.push_back(nullptr);
  for (const std::string& e : env_strings) c_env.push_back(const_cast<char*>(e.c_str()));
  c_env.push_back(nullptr);

  const pid_t parent = getpid();
  const pid_t pid = fork();
  if (pid < 0) return absl::InternalError(absl::StrCat("fork: ", strerror(errno)));
  if (pid == 0) {
    setpgid(0, 0);
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (getppid() != parent) _exit(127);
    const int out = open(out_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    const int err = open(err_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    dup2(out, 1);
    dup2(err, 2);
    const int devnull = open("/dev/null", O_RDONLY);
    dup2(devnull, 0);
    execve(c_argv[0], c_argv.data(), c_env.data());
    dprintf(2, "execve %s: %s\n", c_argv[0], strerror(errno));
    _exit(127);
  }
  setpgid(pid, pid);
  return std::unique_ptr<Subprocess>(new Subprocess(pid, out_path, err_path));
}

Subprocess::~Subprocess() {
  if (!reaped_) {
    kill(-pid_, SIGKILL);
    kill(pid_, SIGKILL);
    waitpid(pid_, nullptr, 0);
  }
}

bool Subprocess::running() { return !Wait(std::chrono::milliseconds(0)).ok(); }

absl::StatusOr<int> Subprocess::Wait(std::chrono::milliseconds timeout) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  while (!reaped_) {
    int status = 0;
    const pid_t r = waitpid(pid_, &status, WNOHANG);
    if (r == pid_) {
      reaped_ = true;
      exit_code_ = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
      kill(-pid_, SIGKILL);  // anything the child left behind in its group
      break;
    }
    if (std::chrono::steady_clock::now() >= deadline) {
      return absl::DeadlineExceededError(absl::StrCat("pid ", pid_, " still running after ", timeout.count(), " ms"));
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  return exit_code_;
}

void Subprocess::Signal(int signal_number) {
  if (!reaped_) kill(pid_, signal_number);
}

void Subprocess::SignalGroup(int signal_number) {
  if (!reaped_) kill(-pid_, signal_number);
}

bool Subprocess::GroupStopped() const {
  for (const auto& entry : std::filesystem::directory_iterator("/proc")) {
    pid_t pid = 0;
    if (!absl::SimpleAtoi(entry.path().filename().string(), &pid)) continue;
    std::ifstream stat(entry.path() / "stat");
    std::string text((std::istreambuf_iterator<char>(stat)), std::istreambuf_iterator<char>());
    const size_t close = text.rfind(')');
    if (close == std::string::npos || close + 2 >= text.size()) continue;
    // After the command: state, ppid, pgrp.
    std::istringstream fields(text.substr(close + 2));
    char state = 0;
    pid_t ppid = 0, pgrp = 0;
    if (fields >> state >> ppid >> pgrp && pgrp == pid_ && state == 'T') return true;
  }
  return false;
}

std::string Subprocess::Stdout() const { return ReadFile(out_path_); }
std::string Subprocess::Stderr() const { return ReadFile(err_path_); }

absl::StatusOr<std::string> Subprocess::WaitForLine(absl::string_view prefix, std::chrono::milliseconds timeout,
                                                    bool on_stderr) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  while (true) {
    const bool alive = running();  // before reading, so that output written just before exiting is seen
    for (absl::string_view line : absl::StrSplit(on_stderr ? Stderr() : Stdout(), '\n')) {
      if (absl::StartsWith(line, prefix)) return std::string(line);
    }
    if (!alive) {
      return absl::FailedPreconditionError(absl::StrCat("process exited with ", exit_code_, " before printing \"",
                                                        prefix, "\"; stdout:\n", Stdout(), "stderr:\n", Stderr()));
    }
    if (std::chrono::steady_clock::now() >= deadline) {
      return absl::DeadlineExceededError(absl::StrCat("no line starting with \"", prefix, "\" after ",
                                                      timeout.count(), " ms; stdout:\n", Stdout(), "stderr:\n",
                                                      Stderr()));
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
}

absl::StatusOr<RunResult> Run(const std::vector<std::string>& argv, std::chrono::milliseconds timeout,
                              const std::map<std::string, std::string>& env) {
  absl::StatusOr<std::unique_ptr<Subprocess>> proc = Subprocess::Start(argv, env);
  if (!proc.ok()) return proc.status();
  absl::StatusOr<int> code = (*proc)->Wait(timeout);
  if (!code.ok()) return code.status();
  return RunResult{*code, (*proc)->Stdout(), (*proc)->Stderr()};
}

}  // namespace tpcoord::testing
