#include "worker/training/supervisor.h"

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

#include "absl/strings/str_cat.h"
#include "common/host_name.h"
#include "client/coordinator_client.h"
#include "worker/training/exit_codes.h"

namespace tpcoord {
namespace {

constexpr size_t kMaxReportBytes = 4096;

// The supervisor's: the running trainer, and the signal that ends the supervision.
volatile sig_atomic_t trainer_pid = 0;
volatile sig_atomic_t stop_signal = 0;
// A trainer's: its start, its worker id, and the write end of the pipe to its supervisor.
int attempt_number = 0;
std::string* worker_id = nullptr;
int report_fd = -1;

void PassOn(int signal_number) {
  stop_signal = signal_number;
  if (trainer_pid > 0) kill(trainer_pid, signal_number);
}

// Everything the trainer wrote, once it has exited; its last line.
std::string LastReport(int fd) {
  std::string text;
  char buffer[1024];
  ssize_t n;
  while ((n = read(fd, buffer, sizeof(buffer))) != 0) {
    if (n > 0) text.append(buffer, n);
    if (n < 0 && errno != EINTR) break;
  }
  while (!text.empty() && text.back() == '\n') text.pop_back();
  const size_t newline = text.rfind('\n');
  return newline == std::string::npos ? text : text.substr(newline + 1);
}

}  // namespace

int TrainerAttempt() { return attempt_number; }

const std::string& SupervisedWorkerId() {
  static const std::string none;
  return worker_id ? *worker_id : none;
}

void ReportToSupervisor(const std::string& reason) {
  if (report_fd < 0) return;
  std::string line = reason.substr(0, kMaxReportBytes);
  for (char& c : line) {
    if (c == '\n') c = ' ';
  }
  line += '\n';
  (void)!write(report_fd, line.data(), line.size());  // one short write to a pipe is atomic
}

std::optional<int> Supervise(int max_restarts, const std::string& host, const SupervisorLog& log) {
  const char* id = std::getenv("TPCOORD_WORKER_ID");
  worker_id = new std::string(id && *id ? id : MakeWorkerId(host.empty() ? LocalHostName() : host));
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
      log("supervisor_failed", absl::StrCat("cannot create a pipe: ", strerror(errno)));
      return kExitFailed;
    }
    const pid_t pid = fork();
    if (pid < 0) {
      log("supervisor_failed", absl::StrCat("cannot start the trainer: ", strerror(errno)));
      return kExitFailed;
    }
    if (pid == 0) {  // the trainer: dies with its supervisor, and goes on from here
      prctl(PR_SET_PDEATHSIG, SIGKILL);
      if (getppid() != supervisor) _exit(kExitRetryable);
      signal(SIGTERM, SIG_DFL);
      signal(SIGINT, SIG_DFL);
      close(report[0]);
      report_fd = report[1];
      attempt_number = attempt;
      return std::nullopt;
    }
    trainer_pid = pid;
    if (stop_signal) kill(pid, stop_signal);  // a signal that came before trainer_pid was set
    close(report[1]);
    int status = 0;
    while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {
    }
    trainer_pid = 0;
    std::string reason = LastReport(report[0]);
    close(report[0]);

    if (stop_signal || (WIFEXITED(status) && WEXITSTATUS(status) != kExitRetryable)) {
      return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
    }
    if (WIFSIGNALED(status)) {
      reason = absl::StrCat("the trainer (pid ", pid, ") was killed by signal ", WTERMSIG(status), " (",
                            strsignal(WTERMSIG(status)), ")");
    } else if (reason.empty()) {
      reason = absl::StrCat("the trainer (pid ", pid, ") exited ", kExitRetryable);
    }
    reasons.push_back(reason);
    if (attempt >= max_restarts) {
      std::string why = absl::StrCat("giving up after ", reasons.size(), " failed generation",
                                     reasons.size() == 1 ? "" : "s", " (--max-restarts ", max_restarts, "):");
      for (size_t i = 0; i < reasons.size(); ++i) absl::StrAppend(&why, "\n  ", i + 1, ". ", reasons[i]);
      log("gave_up", why);
      return kExitRetryable;
    }
    log("restarting", absl::StrCat("restarting the trainer (restart ", attempt + 1, " of ", max_restarts, "): ", reason));
  }
}

}  // namespace tpcoord
