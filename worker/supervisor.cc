#include "worker/supervisor.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdlib>
#include <iostream>
#include <string>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "worker/exit_codes.h"

namespace tpcoord {
namespace {

constexpr char kReportFdVariable[] = "TPCOORD_SUPERVISED_REPORT_FD";
constexpr size_t kMaxReportBytes = 4096;

volatile sig_atomic_t trainer_pid = 0;
volatile sig_atomic_t stop_signal = 0;

void PassOn(int signal_number) {
  stop_signal = signal_number;
  if (trainer_pid > 0) kill(trainer_pid, signal_number);
}

int ReportFd() {
  int fd = -1;
  const char* value = std::getenv(kReportFdVariable);
  return value && absl::SimpleAtoi(value, &fd) ? fd : -1;
}

std::string ReadAll(int fd) {
  std::string text;
  char buffer[1024];
  while (true) {
    const ssize_t n = read(fd, buffer, sizeof(buffer));
    if (n > 0) {
      text.append(buffer, n);
      continue;
    }
    if (n < 0 && errno == EINTR) continue;
    return text;
  }
}

// The last line the trainer reported.
std::string LastLine(std::string text) {
  while (!text.empty() && text.back() == '\n') text.pop_back();
  const size_t newline = text.rfind('\n');
  return newline == std::string::npos ? text : text.substr(newline + 1);
}

}  // namespace

bool IsSupervisedTrainer() { return ReportFd() >= 0; }

int TrainerAttempt() {
  int attempt = 0;
  const char* value = std::getenv("TPCOORD_ATTEMPT");
  return value && absl::SimpleAtoi(value, &attempt) ? attempt : 0;
}

void ReportToSupervisor(const std::string& reason) {
  const int fd = ReportFd();
  if (fd < 0) return;
  std::string line = reason.substr(0, kMaxReportBytes);
  for (char& c : line) {
    if (c == '\n') c = ' ';
  }
  line += '\n';
  (void)!write(fd, line.data(), line.size());  // one short write to a pipe is atomic
}

int Supervise(char** argv, int max_restarts, const std::string& worker_id) {
  struct sigaction pass_on = {};
  pass_on.sa_handler = PassOn;
  sigemptyset(&pass_on.sa_mask);
  sigaction(SIGTERM, &pass_on, nullptr);
  sigaction(SIGINT, &pass_on, nullptr);
  const pid_t supervisor = getpid();
  std::vector<std::string> reasons;
  for (int attempt = 0;; ++attempt) {
    int report[2];
    if (pipe2(report, O_CLOEXEC) != 0) {
      std::cerr << "tp-worker: cannot create a pipe: " << strerror(errno) << std::endl;
      return kExitFailed;
    }
    const pid_t pid = fork();
    if (pid < 0) {
      std::cerr << "tp-worker: cannot start the trainer: " << strerror(errno) << std::endl;
      return kExitFailed;
    }
    if (pid == 0) {  // the trainer: dies with its supervisor
      prctl(PR_SET_PDEATHSIG, SIGKILL);
      if (getppid() != supervisor) _exit(kExitRetryable);
      const int fd = report[1];
      fcntl(fd, F_SETFD, 0);  // the write end survives exec
      setenv(kReportFdVariable, std::to_string(fd).c_str(), 1);
      setenv("TPCOORD_WORKER_ID", worker_id.c_str(), 1);
      setenv("TPCOORD_ATTEMPT", std::to_string(attempt).c_str(), 1);
      execv("/proc/self/exe", argv);
      _exit(127);
    }
    trainer_pid = pid;
    if (stop_signal) kill(pid, stop_signal);  // a signal that came between fork and here
    close(report[1]);
    int status = 0;
    while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {
    }
    trainer_pid = 0;
    std::string reason = LastLine(ReadAll(report[0]));
    close(report[0]);

    if (WIFEXITED(status) && WEXITSTATUS(status) != kExitRetryable) return WEXITSTATUS(status);
    if (stop_signal) return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
    if (WIFSIGNALED(status)) {
      reason = absl::StrCat("the trainer (pid ", pid, ") was killed by signal ", WTERMSIG(status), " (",
                            strsignal(WTERMSIG(status)), ")");
    } else if (reason.empty()) {
      reason = absl::StrCat("the trainer (pid ", pid, ") exited ", kExitRetryable);
    }
    reasons.push_back(reason);
    if (attempt >= max_restarts) {
      std::cerr << "tp-worker: giving up after " << reasons.size() << " failed generation"
                << (reasons.size() == 1 ? "" : "s") << " (--max-restarts " << max_restarts << "):" << std::endl;
      for (size_t i = 0; i < reasons.size(); ++i) std::cerr << "  " << i + 1 << ". " << reasons[i] << std::endl;
      return kExitRetryable;
    }
    std::cerr << "tp-worker: restarting the trainer (restart " << attempt + 1 << " of " << max_restarts
              << "): " << reason << std::endl;
  }
}

}  // namespace tpcoord
