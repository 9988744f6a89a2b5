#include "common/grpc_runtime.h"

#include <absl/synchronization/mutex.h>
#include <grpc/support/log.h>
#include <spdlog/spdlog.h>

#include <cstring>

#include "common/untrusted.h"

namespace lockstep {
namespace {

// gRPC's own log lines, in the process's log format and through its level. Their text may
// quote what a peer sent (a failed handshake), so it is escaped and bounded like any
// untrusted input. gRPC's "error" is about a connection or a peer, rarely about this
// process, so it is logged as a warning.
void LogThroughSpdlog(gpr_log_func_args* args) {
  const char* file = args->file != nullptr ? args->file : "?";
  if (const char* slash = std::strrchr(file, '/')) file = slash + 1;
  const std::string line = "grpc: " + LogSafe(args->message != nullptr ? args->message : "", 512) +
                           " (" + file + ":" + std::to_string(args->line) + ")";
  switch (args->severity) {
    case GPR_LOG_SEVERITY_DEBUG:
      spdlog::debug("{}", line);
      break;
    case GPR_LOG_SEVERITY_INFO:
      spdlog::info("{}", line);
      break;
    case GPR_LOG_SEVERITY_ERROR:
      spdlog::warn("{}", line);
      break;
  }
}

}  // namespace

void TuneGrpcRuntime() {
  absl::SetMutexDeadlockDetectionMode(absl::OnDeadlockCycle::kIgnore);
  absl::EnableMutexInvariantDebugging(false);
  gpr_set_log_function(&LogThroughSpdlog);
}

}  // namespace lockstep
