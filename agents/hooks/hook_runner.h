// Running an artifact's hook (deploy/stop, deploy/start, deploy/check) as a child process
// through Boost.Process: argv only (no shell), a working directory, an environment, a timeout
// after which the process is killed, and stdout+stderr captured line by line.
//
// Each line is handed to `on_line` as it arrives (so it can be streamed to the orchestrator);
// the last `tail_lines` lines are kept in the result. Lines longer than 4 KiB are cut.
//
// Thread safety: RunHook may be called from several threads at once. It does not install a
// SIGCHLD handler (it avoids boost::process::child::wait_for) and is safe next to gRPC threads.
#pragma once

#include <chrono>
#include <functional>
#include <map>
#include <string>
#include <vector>

#include "common/status.h"

namespace lockstep::agent {

struct HookResult {
  int exit_code = -1;             // -1 when killed or not started
  bool timed_out = false;         // killed after the timeout
  std::vector<std::string> tail;  // last lines of output
};

struct HookOptions {
  std::string working_dir;
  std::map<std::string, std::string> env;  // added to (and overriding) the agent's environment
  std::chrono::milliseconds timeout{60000};
  size_t tail_lines = 40;
  std::function<void(const std::string&)> on_line;
};

// Returns an error Status only if the process could not be started at all; a non-zero exit
// or a timeout is reported in HookResult.
StatusOr<HookResult> RunHook(const std::string& executable, const HookOptions& options);

}  // namespace lockstep::agent
