// The host's workers, as tp-agent starts and watches them: K processes of one command, each with its
// LOCAL_RANK, restarted with the same LOCAL_RANK when it fails, up to --max-restarts times each.
//
// - A worker that exits 0 is done. One that fails (a nonzero status, or a signal) is started again, unless its
//   restarts are spent or its status says no restart can cure it (tp-worker's 2, usage, and 3, a fatal
//   configuration error: exit_codes.h); then the others get SIGTERM and the agent ends with that status.
// - SIGTERM or SIGINT to the agent: every worker gets SIGTERM (SIGKILL after --stop-grace), none is
//   restarted, and the agent ends with the first nonzero status among them (0 if they all finished).
// - Each worker dies with the agent (PR_SET_PDEATHSIG): kill -9 of the agent is its host's death.
//
// A status is reported as a shell does: the exit code, or 128 + the signal.
#ifndef TPCOORD_AGENT_LOCAL_WORKERS_H_
#define TPCOORD_AGENT_LOCAL_WORKERS_H_

#include <sys/types.h>

#include <chrono>
#include <functional>
#include <string>
#include <vector>

namespace tpcoord {

struct LocalWorkersOptions {
  std::vector<std::string> command;   // the program and its arguments
  std::vector<std::string> env;       // KEY=VALUE each worker gets besides its own LOCAL_RANK and worker id
  std::string worker_id_prefix;       // TPCOORD_WORKER_ID is this and the LOCAL_RANK: the same across restarts
  int nproc = 1;
  int max_restarts = 0;
  std::chrono::milliseconds stop_grace{30000};
  std::function<void(const std::string&)> log;
};

// Blocks SIGCHLD, SIGTERM and SIGINT in the calling thread: call it first thing in main, before any thread is
// started, so that every thread inherits the mask and Supervise alone takes them.
void BlockSupervisorSignals();

// Starts the workers and watches them until they have all ended; returns the agent's exit status.
int SuperviseLocalWorkers(const LocalWorkersOptions& options);

}  // namespace tpcoord

#endif  // TPCOORD_AGENT_LOCAL_WORKERS_H_
