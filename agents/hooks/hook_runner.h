// Running an artifact's hook (deploy/stop, deploy/start, deploy/check) as a child process
// through Boost.Process: argv only (no shell), a working directory, a curated environment, an
// optional user to run as, a timeout after which the process is killed, and stdout+stderr
// captured line by line.
//
// Each line is handed to `on_line` as it arrives (so it can be streamed to the orchestrator);
// the last `tail_lines` lines are kept in the result. Lines longer than 4 KiB are cut.
//
// The hook's environment is built from nothing; the agent's own environment is never
// inherited (it may hold secrets: CREDENTIALS_DIRECTORY, tokens, cloud keys). A hook sees,
// later entries replacing earlier ones:
//   PATH  /usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin (kHookPath)
//   LANG  the agent's LANG if set, else C.UTF-8
//   each name in `pass_env` (the agent's --hook-env) that is set in the agent's environment,
//     with the agent's value
//   `env`, the variables the agent sets for the hook (LOCKSTEP_VERSION,
//     LOCKSTEP_PREVIOUS_VERSION, LOCKSTEP_REGION, LOCKSTEP_AGENT, LOCKSTEP_ROOT)
// and nothing else: CREDENTIALS_DIRECTORY is refused in `pass_env` and `env` alike. HOME is
// not set: the agent's HOME belongs to the agent's user (root's, usually), and the release
// directory must not collect a tool's dotfiles; a hook that needs one sets it, or the operator
// passes it with --hook-env HOME. USER, LOGNAME and SHELL are not set either.
//
// With `user`, the hook runs as that user: in the child, before exec, the supplementary groups
// are replaced by the user's (setgroups), then the primary group (setgid), then the user
// (setuid). If any step fails the child exits without running the hook and RunHook returns an
// error naming the user; a hook never runs with the agent's privileges by accident. Switching
// needs root (or CAP_SETUID and CAP_SETGID). Without `user` the hook runs as the agent.
//
// Descriptors: the hook gets /dev/null as stdin and the output pipe as stdout and stderr;
// every other descriptor of the agent is closed at exec.
//
// Time: the timeout, and the grace for reading what is left in the pipe after the hook exited,
// are measured on `clock`; under a ManualClock a hook is killed only once the test advanced
// time past its deadline. While RunHook waits, one extra thread sleeps on an Alarm of the clock
// for the deadline.
//
// Thread safety: RunHook may be called from several threads at once. It does not install a
// SIGCHLD handler (it avoids boost::process::child::wait_for) and is safe next to gRPC threads.
// It reads the agent's environment (getenv), so nothing may setenv() concurrently.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <functional>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "common/clock.h"
#include "common/status.h"

namespace lockstep::agent {

// The PATH every hook gets; the agent's own PATH is not passed unless listed in --hook-env.
inline constexpr char kHookPath[] = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

// A user hooks run as, resolved once (at agent start) so that the child, which may only make
// async-signal-safe calls between fork and exec, needs no lookup.
struct HookUser {
  std::string name;
  uid_t uid = 0;
  gid_t gid = 0;
  std::vector<gid_t> groups;  // supplementary groups, the primary one included
};

// Looks `name` up in the user database (getpwnam_r, getgrouplist). kNotFound, naming the user,
// if there is no such user; kInternal if the database cannot be read.
StatusOr<HookUser> LookUpHookUser(const std::string& name);

// Splits the --hook-env value ("NAME[,NAME...]", spaces around names ignored, empty allowed)
// and checks each name with CheckHookEnvAllowList.
StatusOr<std::vector<std::string>> ParseHookEnvAllowList(const std::string& csv);

// kInvalidArgument, naming the variable, for a name that is not [A-Za-z_][A-Za-z0-9_]* or is
// one a hook must never see (CREDENTIALS_DIRECTORY).
Status CheckHookEnvAllowList(const std::vector<std::string>& names);

struct HookResult {
  int exit_code = -1;             // -1 when killed or not started
  bool timed_out = false;         // killed after the timeout
  std::vector<std::string> tail;  // last lines of output
};

struct HookOptions {
  std::string working_dir;
  // Set for the hook on top of the curated base (see above); replaces a base variable of the
  // same name.
  std::map<std::string, std::string> env = {};
  // Names copied from the agent's environment when set there (the --hook-env allow-list).
  std::vector<std::string> pass_env = {};
  // Run as this user instead of the agent's (--hook-user).
  std::optional<HookUser> user = {};
  std::chrono::milliseconds timeout{60000};  // then the hook's process group is killed
  size_t tail_lines = 40;
  std::function<void(const std::string&)> on_line;
  // Measures the timeout; must outlive the call.
  const Clock* clock = SystemClock::Get();
};

// Returns an error Status if the process could not be started at all: a missing or
// non-executable hook, a refused variable name, or a user that could not be assumed. A
// non-zero exit or a timeout is reported in HookResult.
StatusOr<HookResult> RunHook(const std::string& executable, const HookOptions& options);

}  // namespace lockstep::agent
