// What tp-worker's exit status says, so that whatever restarts workers (tp-worker's own supervisor,
// docker compose, a Kubernetes podFailurePolicy) restarts the failures that a restart can cure, and only
// those.
#ifndef TPCOORD_WORKER_TRAINING_EXIT_CODES_H_
#define TPCOORD_WORKER_TRAINING_EXIT_CODES_H_

#include "absl/status/status.h"
#include "common/deepspeed_error.h"

namespace tpcoord {

enum ExitCode : int {
  kExitDone = 0,         // the job completed
  kExitFailed = 1,       // an unexpected failure (corrupt data, a bug): a person should look first
  kExitUsage = 2,        // the command line is wrong
  kExitFatalConfig = 3,  // the configuration can never work (DeepSpeed conflict, missing file): do not restart
  kExitRetryable = 75,   // the generation failed (a peer died or hung, the coordinator was lost): restart
};

// Which of them a failure is. A DeepSpeed configuration error is fatal whatever its code; the codes a
// lost peer or coordinator produce are retryable; the rest name something wrong in what was given.
inline ExitCode ExitCodeFor(const absl::Status& status) {
  if (status.ok()) return kExitDone;
  if (IsDeepSpeedError(status)) return kExitFatalConfig;
  switch (status.code()) {
    case absl::StatusCode::kAborted:
    case absl::StatusCode::kUnavailable:
    case absl::StatusCode::kDeadlineExceeded:
    case absl::StatusCode::kCancelled:
      return kExitRetryable;
    case absl::StatusCode::kInternal:
    case absl::StatusCode::kUnknown:
    case absl::StatusCode::kDataLoss:
    case absl::StatusCode::kResourceExhausted:
      return kExitFailed;
    default:
      return kExitFatalConfig;
  }
}

}  // namespace tpcoord

#endif  // TPCOORD_WORKER_TRAINING_EXIT_CODES_H_
