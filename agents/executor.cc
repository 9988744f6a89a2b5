#include "agents/executor.h"

#include <spdlog/spdlog.h>
#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>

#include "agents/artifact/fetch.h"
#include "agents/artifact/layout.h"
#include "agents/health/http_probe.h"
#include "agents/health/metric_gate.h"
#include "agents/hooks/hook_runner.h"
#include "common/clock.h"

namespace lockstep::agent {

namespace fs = std::filesystem;

Executor::Executor(ExecutorOptions options, ProgressFn on_progress, ResultFn on_result,
                   VerdictFn on_verdict, const Clock* clock)
    : options_(std::move(options)),
      on_progress_(std::move(on_progress)),
      on_result_(std::move(on_result)),
      on_verdict_(std::move(on_verdict)),
      clock_(clock),
      sleep_alarm_(clock->NewAlarm()),
      releases_(options_.root),
      journal_((fs::path(options_.root) / "agent-tasks.json").string()) {}

Executor::~Executor() { Stop(); }

Status Executor::Start() {
  if (Status st = CheckHookEnvAllowList(options_.hook_env); !st.ok()) {
    return st.WithContext("--hook-env");
  }
  if (!options_.hook_user.empty()) {
    StatusOr<HookUser> user = LookUpHookUser(options_.hook_user);
    if (!user.ok()) return user.status().WithContext("--hook-user");
    hook_user_ = std::move(*user);
  } else if (::geteuid() == 0) {
    spdlog::warn("hooks will run as root; --hook-user runs them as an unprivileged user");
  }
  LOCKSTEP_RETURN_IF_ERROR(releases_.Init());
  journal_.Load();
  worker_ = std::thread([this] { Loop(); });
  gate_worker_ = std::thread([this] { GateLoop(); });
  return Status::Ok();
}

void Executor::SubmitGateCheck(const v1::GateCheck& check) {
  {
    std::lock_guard lock(mu_);
    if (stopping_) return;
    // Checks are periodic: a backlog of stale ones is worth nothing.
    if (gate_queue_.size() >= 64) gate_queue_.pop_front();
    gate_queue_.push_back(check);
  }
  cv_.notify_all();
}

void Executor::GateLoop() {
  for (;;) {
    v1::GateCheck check;
    {
      std::unique_lock lock(mu_);
      cv_.wait(lock, [&] { return stopping_ || !gate_queue_.empty(); });
      if (stopping_) return;
      check = std::move(gate_queue_.front());
      gate_queue_.pop_front();
    }
    v1::GateVerdict verdict = EvaluateMetricGate(check.gate());
    verdict.set_check_id(check.check_id());
    if (on_verdict_) on_verdict_(verdict);
  }
}

void Executor::Stop() {
  {
    std::lock_guard lock(mu_);
    stopping_ = true;
  }
  cv_.notify_all();
  sleep_alarm_->Wake();
  if (worker_.joinable()) worker_.join();
  if (gate_worker_.joinable()) gate_worker_.join();
}

void Executor::Submit(const v1::Task& task) {
  {
    std::lock_guard lock(mu_);
    if (stopping_ || pending_ids_.count(task.task_id())) return;
    pending_ids_.insert(task.task_id());
    queue_.push_back(task);
  }
  cv_.notify_all();
}

std::string Executor::CurrentVersion() const {
  return ReleaseDir(options_.root).Current().value_or("");
}

std::vector<std::string> Executor::VersionsOnDisk() const {
  return ReleaseDir(options_.root).Versions();
}

void Executor::Loop() {
  for (;;) {
    v1::Task task;
    {
      std::unique_lock lock(mu_);
      cv_.wait(lock, [&] { return stopping_ || !queue_.empty(); });
      if (stopping_) return;
      task = std::move(queue_.front());
      queue_.pop_front();
    }
    v1::TaskResult result;
    if (auto done = journal_.Find(task.task_id())) {
      result = *done;  // already ran: answer, do not run twice
    } else {
      result = Run(task);
      if (Status st = journal_.Record(result); !st.ok()) {
        spdlog::warn("task {}: {}", task.task_id(), st.message());
      }
    }
    result.set_current_version(CurrentVersion());
    result.clear_versions_on_disk();
    for (const auto& v : VersionsOnDisk()) result.add_versions_on_disk(v);
    {
      std::lock_guard lock(mu_);
      pending_ids_.erase(task.task_id());
    }
    on_result_(result);
  }
}

void Executor::Note(const std::string& task_id, const std::string& step, const std::string& text) {
  v1::TaskProgress p;
  p.set_task_id(task_id);
  p.set_step(step);
  p.set_output(text);
  on_progress_(p);
}

void Executor::SleepFor(std::chrono::milliseconds d) {
  {
    std::lock_guard lock(mu_);
    if (stopping_) return;
  }
  sleep_alarm_->WaitFor(d);  // a Stop after the check above still ends it: Wakes are kept
}

v1::TaskResult Executor::Run(const v1::Task& task) {
  v1::TaskResult result;
  result.set_task_id(task.task_id());
  result.set_task_sent_at_us(task.sent_at_us());
  if (!ReleaseDir::IsValidVersion(task.version())) {
    result.set_ok(false);
    result.set_failed_step("validate");
    result.set_error("invalid version name \"" + task.version() + "\"");
    return result;
  }
  spdlog::info("task {}: {} {}", task.task_id(), v1::Task::Kind_Name(task.kind()), task.version());
  Status st;
  std::string failed_step;
  std::vector<std::string> tail;
  switch (task.kind()) {
    case v1::Task::PREPARE:
      st = Prepare(task, result);
      failed_step = "prepare";
      break;
    case v1::Task::ACTIVATE:
      st = Activate(task, failed_step, tail, result);
      break;
    case v1::Task::DEPLOY:
      if (task.skip_if_current() && CurrentVersion() == task.version() &&
          releases_.HasRelease(task.version(), task.sha256())) {
        Note(task.task_id(), "deploy", "already running " + task.version());
        break;
      }
      failed_step = "prepare";
      st = Prepare(task, result);
      if (st.ok()) st = Activate(task, failed_step, tail, result);
      break;
    default:
      st = InvalidArgument("unknown task kind " + std::to_string(task.kind()));
      failed_step = "validate";
  }
  result.set_ok(st.ok());
  if (!st.ok()) {
    result.set_error(st.message());
    result.set_failed_step(failed_step);
    spdlog::warn("task {} failed at {}: {}", task.task_id(), failed_step, st.message());
  }
  std::string joined;
  for (const auto& line : tail) joined += line + "\n";
  result.set_output_tail(joined);
  return result;
}

Status Executor::Prepare(const v1::Task& task, v1::TaskResult& result) {
  if (releases_.HasRelease(task.version(), task.sha256())) {
    Note(task.task_id(), "fetch", "release already on disk");
    return Status::Ok();
  }
  std::string archive = releases_.TmpPath("download-" + task.version() + ".tar.gz");
  FetchOptions fo;
  fo.clock = clock_;
  if (task.fetch_timeout_ms() > 0) fo.timeout = std::chrono::milliseconds(task.fetch_timeout_ms());
  auto note = [&](const std::string& text) { Note(task.task_id(), "fetch", text); };
  Status st = Unavailable("not fetched");
  if (!task.mirror_url().empty()) {
    // The region's mirror first. It need not be trusted: the digest is verified as for the
    // origin, and anything wrong (down, an HTTP error, other bytes) falls back to the origin
    // at once, with no retries spent on the mirror.
    FetchOptions mirror = fo;
    mirror.attempts = 1;
    Note(task.task_id(), "fetch", task.mirror_url() + " (region mirror)");
    st = FetchArtifact(task.mirror_url(), task.sha256(), archive, mirror, note);
    if (st.ok()) {
      result.set_fetched_from("mirror");
    } else {
      result.set_mirror_error(st.message().substr(0, 500));
      spdlog::warn("task {}: mirror {} failed ({}); fetching from the origin", task.task_id(),
                   task.mirror_url(), result.mirror_error());
    }
  }
  if (result.fetched_from().empty()) {
    Note(task.task_id(), "fetch", task.artifact_url());
    st = FetchArtifact(task.artifact_url(), task.sha256(), archive, fo, note);
    if (!st.ok()) return st;
    result.set_fetched_from("origin");
  }
  std::error_code size_ec;
  const auto bytes = fs::file_size(archive, size_ec);
  result.set_fetched_bytes(size_ec ? 0 : static_cast<int64_t>(bytes));
  Note(task.task_id(), "unpack", "sha256 verified; unpacking");
  st = releases_.Install(task.version(), task.sha256(), archive);
  std::error_code ec;
  fs::remove(archive, ec);
  if (!st.ok()) return st;
  // A release nothing could run is refused now, while `current` is untouched, rather than
  // "succeeding" with nothing started or checked.
  Status layout = CheckArtifactLayout(releases_.ReleasePath(task.version()), task.version());
  if (!layout.ok() && releases_.Current().value_or("") != task.version()) {
    fs::remove_all(releases_.ReleasePath(task.version()), ec);
  }
  return layout;
}

Status Executor::RunHookIfPresent(const std::string& version, const std::string& hook,
                                  const v1::Task& task, const std::string& previous,
                                  std::vector<std::string>& tail) {
  fs::path path = fs::path(releases_.ReleasePath(version)) / "deploy" / hook;
  struct stat sb {};
  if (::lstat(path.c_str(), &sb) != 0) return Status::Ok();  // hooks are optional
  if (!S_ISREG(sb.st_mode)) {
    return InvalidArgument("deploy/" + hook + " of " + version + " is not a regular file");
  }
  HookOptions ho;
  ho.clock = clock_;
  ho.working_dir = releases_.ReleasePath(version);
  ho.timeout =
      std::chrono::milliseconds(task.hook_timeout_ms() > 0 ? task.hook_timeout_ms() : 60000);
  ho.env = {{"LOCKSTEP_VERSION", version},
            {"LOCKSTEP_PREVIOUS_VERSION", previous},
            {"LOCKSTEP_REGION", options_.region},
            {"LOCKSTEP_AGENT", options_.name},
            {"LOCKSTEP_ROOT", options_.root}};
  ho.pass_env = options_.hook_env;
  ho.user = hook_user_;
  const bool withhold = options_.withhold_hook_output || task.withhold_hook_output();
  ho.on_line = [&](const std::string& line) {
    if (!withhold) {
      Note(task.task_id(), hook, line);
      return;
    }
    // The region keeps hook output: this host's own log is the only place it goes.
    spdlog::info("task {} {}: {}", task.task_id(), hook, line);
  };
  LOCKSTEP_ASSIGN_OR_RETURN(auto result, RunHook(path.string(), ho));
  if (!withhold) tail.insert(tail.end(), result.tail.begin(), result.tail.end());
  if (result.timed_out) {
    return DeadlineExceeded("deploy/" + hook + " of " + version + " timed out after " +
                            std::to_string(ho.timeout.count()) + "ms");
  }
  if (result.exit_code != 0) {
    return Unavailable("deploy/" + hook + " of " + version + " exited with status " +
                       std::to_string(result.exit_code));
  }
  return Status::Ok();
}

Status Executor::Activate(const v1::Task& task, std::string& failed_step,
                          std::vector<std::string>& tail, v1::TaskResult& result) {
  const std::string& version = task.version();
  failed_step = "switch";
  if (!releases_.HasRelease(version, task.sha256())) {
    return FailedPrecondition("release " + version + " is not prepared on this host");
  }
  std::string previous = releases_.Current().value_or("");
  if (previous != version) {
    if (!previous.empty() && releases_.HasRelease(previous)) {
      failed_step = "stop";
      Status stopped = RunHookIfPresent(previous, "stop", task, previous, tail);
      if (!stopped.ok() && task.kind() == v1::Task::DEPLOY) {
        // A DEPLOY takes the host back (a revert, a rollback) or to where it belongs (a
        // convergence): the release being left failing to stop must not keep it there.
        result.set_warning(stopped.message() + "; switched anyway");
        Note(task.task_id(), "stop", result.warning());
        spdlog::warn("task {}: {}", task.task_id(), result.warning());
      } else {
        LOCKSTEP_RETURN_IF_ERROR(stopped);
      }
    }
    failed_step = "switch";
    LOCKSTEP_RETURN_IF_ERROR(releases_.SwitchCurrent(version));
    result.set_switched_at_ms(clock_->Now());
    Note(task.task_id(), "switch", "current -> releases/" + version);
  }
  failed_step = "start";
  LOCKSTEP_RETURN_IF_ERROR(RunHookIfPresent(version, "start", task, previous, tail));
  if (task.run_check_hook()) {
    failed_step = "check";
    LOCKSTEP_RETURN_IF_ERROR(RunHookIfPresent(version, "check", task, previous, tail));
  }
  failed_step = "probe";
  for (const auto& probe : task.probes()) {
    LOCKSTEP_RETURN_IF_ERROR(RunHttpProbe(
        probe, [this](std::chrono::milliseconds d) { SleepFor(d); }, clock_));
  }
  failed_step = "";
  std::vector<std::string> protect = {version};
  if (!previous.empty()) protect.push_back(previous);
  if (Status st = releases_.Prune(options_.keep_releases, protect); !st.ok()) {
    spdlog::warn("pruning old releases: {}", st.message());
  }
  return Status::Ok();
}

}  // namespace lockstep::agent
