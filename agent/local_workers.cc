#include "agent/local_workers.h"

#include <signal.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <optional>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"

namespace tpcoord {
namespace {

using Clock = std::chrono::steady_clock;

sigset_t SupervisorSignals() {
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGCHLD);
  sigaddset(&set, SIGTERM);
  sigaddset(&set, SIGINT);
  return set;
}

// The program to exec: `name` itself when it names a path, else the first executable of that name on PATH.
std::string Resolve(const std::string& name) {
  if (name.find('/') != std::string::npos) return name;
  const char* path = std::getenv("PATH");
  for (absl::string_view dir : absl::StrSplit(path ? path : "/usr/local/bin:/usr/bin:/bin", ':')) {
    std::string candidate = absl::StrCat(dir.empty() ? "." : dir, "/", name);
    if (access(candidate.c_str(), X_OK) == 0) return candidate;
  }
  return name;
}

int ShellStatus(int wstatus) { return WIFSIGNALED(wstatus) ? 128 + WTERMSIG(wstatus) : WEXITSTATUS(wstatus); }

std::string Describe(int wstatus) {
  if (WIFSIGNALED(wstatus)) {
    return absl::StrCat("was killed by signal ", WTERMSIG(wstatus), " (", strsignal(WTERMSIG(wstatus)), ")");
  }
  return absl::StrCat("exited with status ", WEXITSTATUS(wstatus));
}

struct Worker {
  int local_rank = 0;
  pid_t pid = 0;  // 0: not running
  int restarts = 0;
};

class Supervisor {
 public:
  explicit Supervisor(const LocalWorkersOptions& options) : o_(options), program_(Resolve(options.command[0])) {
    workers_.resize(o_.nproc);
    for (int i = 0; i < o_.nproc; ++i) workers_[i].local_rank = i;
  }

  int Run() {
    for (Worker& w : workers_) Spawn(w);
    const sigset_t signals = SupervisorSignals();
    while (Running() > 0) {
      timespec wait{0, 200 * 1000 * 1000};
      siginfo_t info;
      const int sig = sigtimedwait(&signals, &info, &wait);
      if ((sig == SIGTERM || sig == SIGINT) && !stop_at_) {
        o_.log(absl::StrCat("got ", strsignal(sig), ": passing SIGTERM to the workers; none is restarted"));
        Stop();
      }
      Reap();
      if (stop_at_ && Clock::now() > *stop_at_) {
        for (Worker& w : workers_) {
          if (w.pid > 0 && kill(w.pid, SIGKILL) == 0) {
            o_.log(absl::StrCat("worker ", w.local_rank, " (pid ", w.pid, ") still runs after the grace; SIGKILL"));
          }
        }
        stop_at_ = Clock::now() + std::chrono::hours(24);
      }
    }
    return status_;
  }

 private:
  int Running() const {
    int n = 0;
    for (const Worker& w : workers_) n += w.pid > 0 ? 1 : 0;
    return n;
  }

  void Spawn(Worker& w) {
    std::vector<std::string> env = o_.env;
    env.push_back(absl::StrCat("LOCAL_RANK=", w.local_rank));
    env.push_back(absl::StrCat("TPCOORD_WORKER_ID=", o_.worker_id_prefix, w.local_rank));
    std::vector<char*> envp;
    for (std::string& e : env) envp.push_back(e.data());
    envp.push_back(nullptr);
    std::vector<std::string> args = o_.command;
    std::vector<char*> argv;
    for (std::string& a : args) argv.push_back(a.data());
    argv.push_back(nullptr);
    const pid_t parent = getpid();
    const pid_t pid = fork();
    if (pid == 0) {  // only async-signal-safe calls until exec
      prctl(PR_SET_PDEATHSIG, SIGKILL);
      if (getppid() != parent) _exit(127);
      sigset_t none;
      sigemptyset(&none);
      sigprocmask(SIG_SETMASK, &none, nullptr);
      execve(program_.c_str(), argv.data(), envp.data());
      const char prefix[] = "tp-agent: cannot run the worker's command: ";
      const char* why = strerror(errno);
      if (write(2, prefix, sizeof(prefix) - 1) < 0 || write(2, why, strlen(why)) < 0 || write(2, "\n", 1) < 0) {
      }
      _exit(127);
    }
    if (pid < 0) {
      o_.log(absl::StrCat("cannot start worker ", w.local_rank, ": fork: ", std::strerror(errno)));
      if (status_ == 0) status_ = 1;
      Stop();
      return;
    }
    w.pid = pid;
    o_.log(absl::StrCat("started worker ", w.local_rank, " (pid ", pid, ")"));
  }

  void Reap() {
    int wstatus = 0;
    pid_t pid;
    while ((pid = waitpid(-1, &wstatus, WNOHANG)) > 0) {
      Worker* w = nullptr;
      for (Worker& each : workers_) {
        if (each.pid == pid) w = &each;
      }
      if (w == nullptr) continue;
      w->pid = 0;
      const std::string who = absl::StrCat("worker ", w->local_rank, " (pid ", pid, ") ");
      if (WIFEXITED(wstatus) && WEXITSTATUS(wstatus) == 0) {
        o_.log(absl::StrCat(who, "finished"));
        continue;
      }
      const bool cureless = WIFEXITED(wstatus) && (WEXITSTATUS(wstatus) == 2 || WEXITSTATUS(wstatus) == 3);
      if (!stop_at_ && !cureless && w->restarts < o_.max_restarts) {
        ++w->restarts;
        o_.log(absl::StrCat(who, Describe(wstatus), "; restarting it with LOCAL_RANK ", w->local_rank, " (restart ",
                            w->restarts, " of ", o_.max_restarts, ")"));
        Spawn(*w);
        continue;
      }
      if (status_ == 0) status_ = ShellStatus(wstatus);
      if (stop_at_) {
        o_.log(absl::StrCat(who, Describe(wstatus)));
        continue;
      }
      o_.log(absl::StrCat(who, Describe(wstatus), "; ",
                          cureless ? "a restart cannot cure that status"
                                   : absl::StrCat("its restarts are spent (--max-restarts ", o_.max_restarts, ")"),
                          ": stopping the other workers"));
      Stop();
    }
  }

  void Stop() {
    if (stop_at_) return;
    stop_at_ = Clock::now() + o_.stop_grace;
    for (const Worker& w : workers_) {
      if (w.pid > 0) kill(w.pid, SIGTERM);
    }
  }

  const LocalWorkersOptions& o_;
  const std::string program_;
  std::vector<Worker> workers_;
  std::optional<Clock::time_point> stop_at_;  // set once stopping: SIGKILL for those still running then
  int status_ = 0;
};

}  // namespace

void BlockSupervisorSignals() {
  const sigset_t set = SupervisorSignals();
  pthread_sigmask(SIG_BLOCK, &set, nullptr);
}

int SuperviseLocalWorkers(const LocalWorkersOptions& options) { return Supervisor(options).Run(); }

}  // namespace tpcoord
