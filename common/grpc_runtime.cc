#include "common/grpc_runtime.h"

#include <absl/synchronization/mutex.h>

namespace lockstep {

void TuneGrpcRuntime() {
  absl::SetMutexDeadlockDetectionMode(absl::OnDeadlockCycle::kIgnore);
  absl::EnableMutexInvariantDebugging(false);
}

}  // namespace lockstep
