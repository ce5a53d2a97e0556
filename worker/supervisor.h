// tp-worker as its own supervisor, like torchrun's agent: the process a user (or compose, or Kubernetes)
// starts runs the trainer — this same binary — as a child, and starts it again after a retryable failure,
// so that a worker whose generation ended rejoins the next one within about a second, as the same worker.
//
// Why a child process: Gloo in LibTorch 1.13 cannot abort a collective in flight, so a trainer whose peer
// died or hung may be blocked for the collective's whole timeout. The trainer learns of the generation's
// end on its member session's thread and exits there at once; the supervisor, which holds no connection
// and no state, only restarts it.
//
// Contract between the two (environment of the child):
//   TPCOORD_SUPERVISED_REPORT_FD  a pipe: the trainer writes why it fails (one line) before it exits
//   TPCOORD_WORKER_ID             the worker id, the same for every attempt
//   TPCOORD_ATTEMPT               0 for the first start, then 1, 2, ...
// The trainer dies with the supervisor (PR_SET_PDEATHSIG): kill -9 of the supervisor is the worker's death.
// SIGTERM and SIGINT are passed on to the trainer and end the supervision.
#ifndef TPCOORD_WORKER_SUPERVISOR_H_
#define TPCOORD_WORKER_SUPERVISOR_H_

#include <string>

namespace tpcoord {

// Whether this process is a supervised trainer (it was started by Supervise).
bool IsSupervisedTrainer();
// The trainer's attempt number (0 unless supervised).
int TrainerAttempt();
// Tells the supervisor why this trainer fails (only the last report counts). No-op unless supervised.
void ReportToSupervisor(const std::string& reason);

// Runs argv (this binary, argv[0] ignored) as the trainer until it succeeds, fails for good, or has
// failed retryably max_restarts + 1 times; returns the exit status for this process. `worker_id` is
// passed to every attempt. Every restart, and a final failure with every reason, is printed to stderr.
int Supervise(char** argv, int max_restarts, const std::string& worker_id);

}  // namespace tpcoord

#endif  // TPCOORD_WORKER_SUPERVISOR_H_
