// tp-worker as its own supervisor, like torchrun's agent: the process a user (or compose, or Kubernetes)
// starts forks the trainer and forks it again after a retryable failure, so that a worker whose generation
// ended rejoins the next one within moments, as the same worker.
//
// Why a child process: Gloo in LibTorch 1.13 cannot abort a collective in flight, so a trainer whose peer
// died or hung may be blocked for the collective's whole timeout. The trainer learns of the generation's
// end on its member session's thread and exits there at once; the supervisor, which holds no connection,
// no state and no thread, only starts the next one. Forking (no exec) keeps a restart cheap: the libraries
// are loaded once, by the supervisor (a cold start of this binary loads LibTorch's for about a second).
// The supervisor therefore must never start a thread, touch CUDA or run a parallel region before it forks.
//
// The trainer dies with the supervisor (PR_SET_PDEATHSIG): kill -9 of the supervisor is the worker's death.
// SIGTERM and SIGINT are passed on to the trainer and end the supervision.
#ifndef TPCOORD_WORKER_TRAINING_SUPERVISOR_H_
#define TPCOORD_WORKER_TRAINING_SUPERVISOR_H_

#include <functional>
#include <optional>
#include <string>

namespace tpcoord {

// Forks the trainer until it succeeds, fails for good, or has failed retryably max_restarts + 1 times.
// Returns, in the supervisor, the exit status for the process; in each trainer, nullopt (go on and train).
// Every restart, and a final failure with every reason, goes to `log` (an event name and the message). The
// worker id is TPCOORD_WORKER_ID, or "host:pid:nonce" of `host` ("" means this machine's name) and the
// supervisor.
using SupervisorLog = std::function<void(const std::string& event, const std::string& message)>;
std::optional<int> Supervise(int max_restarts, const std::string& host, const SupervisorLog& log);

// In a trainer: which start it is (0, then 1, 2, ...), and the worker id that every start shares.
int TrainerAttempt();
const std::string& SupervisedWorkerId();
// Tells the supervisor why this trainer fails (only the last report counts).
void ReportToSupervisor(const std::string& reason);

}  // namespace tpcoord

#endif  // TPCOORD_WORKER_TRAINING_SUPERVISOR_H_
