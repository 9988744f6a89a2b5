// Starting the real Lockstep binaries from tests: each process is started by the test,
// tracked by its PID, and stopped by it (SIGTERM, then SIGKILL after a bound) when the
// Process object goes away. Output goes to a log file so a failing test can show it.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "common/status.h"

namespace lockstep::testing {

struct CommandResult;

class Process {
 public:
  // Starts argv[0] (a path) with argv, stdout and stderr appended to `log_path`, and the
  // test's environment plus `env`.
  static StatusOr<std::unique_ptr<Process>> Start(
      const std::vector<std::string>& argv, const std::string& log_path,
      const std::map<std::string, std::string>& env = {});
  ~Process();  // Stop()
  Process(const Process&) = delete;
  Process& operator=(const Process&) = delete;

  pid_t pid() const { return pid_; }
  const std::string& log_path() const { return log_path_; }
  void Signal(int sig);
  // How long Stop() waits by default. An AddressSanitizer build shuts down several times
  // slower (shadow memory, the leak check at exit), so a clean stop there gets longer.
#if defined(__SANITIZE_ADDRESS__)
  static constexpr std::chrono::milliseconds kStopGrace = std::chrono::seconds(20);
#else
  static constexpr std::chrono::milliseconds kStopGrace = std::chrono::seconds(5);
#endif
  // SIGTERM, wait up to `grace`, then SIGKILL. Returns the exit status (or 128+signal).
  int Stop(std::chrono::milliseconds grace = kStopGrace);
  // kill -9 and reap.
  void Kill();
  bool Running();
  // Waits up to `timeout` for exit; returns the status, or -1 if still running.
  int Wait(std::chrono::milliseconds timeout);

 private:
  friend CommandResult RunCommand(const std::vector<std::string>&, std::chrono::milliseconds,
                                  const std::map<std::string, std::string>&);
  Process(pid_t pid, std::string log_path) : pid_(pid), log_path_(std::move(log_path)) {}
  pid_t pid_;
  std::string log_path_;
  bool reaped_ = false;
  int status_ = -1;
};

struct CommandResult {
  int exit_code = -1;  // -1 if it did not finish in time (it is then killed)
  std::string out;
  std::string err;
};

// Runs a command to completion (bounded by `timeout`), capturing stdout and stderr.
CommandResult RunCommand(const std::vector<std::string>& argv,
                         std::chrono::milliseconds timeout = std::chrono::seconds(60),
                         const std::map<std::string, std::string>& env = {});

std::string ReadFile(const std::string& path);

}  // namespace lockstep::testing
