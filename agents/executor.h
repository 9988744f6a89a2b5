// Executor: runs the tasks the orchestrator sends, one at a time, on its own thread.
//
// PREPARE fetches the artifact, verifies its sha256 and unpacks it into releases/VERSION/;
// ACTIVATE runs the old release's deploy/stop, switches `current`, runs deploy/start, then
// deploy/check and the HTTP probes. DEPLOY (PREPARE then ACTIVATE: reverts, rollbacks,
// convergence) switches even when the left release's deploy/stop fails, reporting it as the
// result's warning: a broken release must not be able to keep a host on itself. Hooks are only ever
// executables inside the verified release directory: a task names a version, never a command. They
// run with the curated environment of hooks/hook_runner.h (PATH, LANG, LOCKSTEP_*, and the
// `hook_env` allow-list, nothing else of the agent's), as `hook_user` when set.
//
// Tasks are idempotent by id: a task id already finished is answered from the TaskJournal; a
// task id already queued or running is ignored.
//
// Time: the clock given at construction stamps switches and measures every wait of a task (hook
// timeouts, fetch retries, the pause between probe attempts); Stop ends a pause between probe
// attempts at once.
//
// Thread safety: Submit and Stop may be called from any thread. Callbacks run on the
// executor thread.
#pragma once

#include <condition_variable>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "agents/agent_state.h"
#include "agents/hooks/hook_runner.h"
#include "agents/releases/release_dir.h"
#include "common/clock.h"
#include "proto/lockstep.pb.h"

namespace lockstep::agent {

struct ExecutorOptions {
  std::string root;
  std::string name;
  std::string region;
  size_t keep_releases = 5;
  // --hook-env: names of the agent's variables passed to hooks (see CheckHookEnvAllowList).
  std::vector<std::string> hook_env = {};
  // --hook-user: the user hooks run as; empty runs them as the agent's user.
  std::string hook_user = {};
  // --hook-output none: hook output never leaves this host, whatever a task asks (it is
  // logged here only). A task's withhold_hook_output asks the same; the stricter wins.
  bool withhold_hook_output = false;
};

class Executor {
 public:
  using ProgressFn = std::function<void(const lockstep::v1::TaskProgress&)>;
  using ResultFn = std::function<void(const lockstep::v1::TaskResult&)>;
  using VerdictFn = std::function<void(const lockstep::v1::GateVerdict&)>;

  // `clock` must outlive the executor.
  Executor(ExecutorOptions options, ProgressFn on_progress, ResultFn on_result,
           VerdictFn on_verdict = nullptr, const Clock* clock = SystemClock::Get());
  ~Executor();  // Stop()

  // Checks the hook settings, resolves the hook user, prepares the root (cleans partial
  // downloads) and starts the worker thread. Fails, naming the flag, for a refused --hook-env
  // name or an unknown --hook-user; and for a root it cannot use (ReleaseDir::Init).
  Status Start();
  void Submit(const lockstep::v1::Task& task);
  // Metric gate checks run on their own thread so a slow Prometheus never delays a task.
  void SubmitGateCheck(const lockstep::v1::GateCheck& check);
  void Stop();

  // What runs now, read from disk. Safe from any thread.
  std::string CurrentVersion() const;
  std::vector<std::string> VersionsOnDisk() const;

 private:
  void Loop();
  void GateLoop();
  lockstep::v1::TaskResult Run(const lockstep::v1::Task& task);
  // Records in `result` where the artifact came from (fetched_from, fetched_bytes,
  // mirror_error).
  Status Prepare(const lockstep::v1::Task& task, lockstep::v1::TaskResult& result);
  Status Activate(const lockstep::v1::Task& task, std::string& failed_step,
                  std::vector<std::string>& tail, lockstep::v1::TaskResult& result);
  Status RunHookIfPresent(const std::string& version, const std::string& hook,
                          const lockstep::v1::Task& task, const std::string& previous,
                          std::vector<std::string>& tail);
  void Note(const std::string& task_id, const std::string& step, const std::string& text);
  // Executor thread: waits `d` of the clock's time, or less if Stop is called.
  void SleepFor(std::chrono::milliseconds d);

  const ExecutorOptions options_;
  const ProgressFn on_progress_;
  const ResultFn on_result_;
  const VerdictFn on_verdict_;
  const Clock* const clock_;
  // The executor thread's place to sleep in SleepFor; Stop wakes it.
  const std::unique_ptr<Alarm> sleep_alarm_;
  ReleaseDir releases_;  // executor thread only (reads from other threads are plain FS reads)
  TaskJournal journal_;  // executor thread only
  std::optional<HookUser> hook_user_;  // set by Start, before the worker exists; then read-only

  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<lockstep::v1::Task> queue_;            // guarded by mu_
  std::set<std::string> pending_ids_;               // guarded by mu_; queued or running
  bool stopping_ = false;                           // guarded by mu_
  std::deque<lockstep::v1::GateCheck> gate_queue_;  // guarded by mu_
  std::thread worker_;
  std::thread gate_worker_;
};

}  // namespace lockstep::agent
