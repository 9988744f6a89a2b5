#include "agents/hooks/hook_runner.h"

// Boost.Process decides whether it can vfork from feature macros that glibc's default
// (_POSIX_C_SOURCE >= 200809L, where POSIX dropped vfork) turns off, although glibc has it.
#ifndef BOOST_POSIX_HAS_VFORK
#define BOOST_POSIX_HAS_VFORK 1
#endif

#include <fcntl.h>
#include <grp.h>
#include <pwd.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <boost/asio/io_context.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/process.hpp>
#include <boost/process/extend.hpp>
#include <boost/process/posix.hpp>
#include <cerrno>
#include <cstring>
#include <deque>
#include <exception>
#include <filesystem>
#include <memory>
#include <string_view>
#include <system_error>
#include <thread>

namespace lockstep::agent {
namespace {

namespace bp = boost::process;

constexpr size_t kMaxLineBytes = 4096;
// After the hook exits, output still in the pipe is read for at most this long. The bound
// matters when the hook started a daemon that inherited the pipe: its writes would
// otherwise keep the hook "running" forever.
constexpr std::chrono::milliseconds kDrainGrace{2000};

// Splits the byte stream into lines, cutting long ones, and keeps the last few.
class LineCollector {
 public:
  explicit LineCollector(const HookOptions& options) : options_(options) {}

  void Feed(const char* data, size_t n) {
    for (size_t i = 0; i < n; ++i) {
      const char ch = data[i];
      if (ch == '\n') {
        Emit();
      } else if (partial_.size() < kMaxLineBytes) {
        partial_.push_back(ch);
      }
    }
  }

  // At end of output: a last line without a newline still counts.
  void Finish() {
    if (!partial_.empty()) Emit();
  }

  std::vector<std::string> TakeTail() { return {tail_.begin(), tail_.end()}; }

 private:
  void Emit() {
    if (!partial_.empty() && partial_.back() == '\r') partial_.pop_back();
    if (options_.on_line) options_.on_line(partial_);
    if (options_.tail_lines > 0) {
      if (tail_.size() == options_.tail_lines) tail_.pop_front();
      tail_.push_back(std::move(partial_));
    }
    partial_.clear();
  }

  const HookOptions& options_;
  std::string partial_;
  std::deque<std::string> tail_;
};

Status CheckExecutable(const std::string& path) {
  std::error_code ec;
  const auto st = std::filesystem::status(path, ec);
  if (ec || !std::filesystem::exists(st)) return NotFound("hook " + path + " does not exist");
  if (!std::filesystem::is_regular_file(st)) {
    return FailedPrecondition("hook " + path + " is not a regular file");
  }
  if (::access(path.c_str(), X_OK) != 0) {
    return Status(StatusCode::kPermissionDenied,
                  "hook " + path + " is not executable: " + std::strerror(errno));
  }
  return Status::Ok();
}

constexpr char kDefaultLang[] = "C.UTF-8";
// Hand systemd's credentials (and whatever else lives there) to the agent alone.
constexpr std::string_view kNeverPassed[] = {"CREDENTIALS_DIRECTORY"};
// Where the descriptor loop stops if close_range() is missing (kernels before 5.11).
constexpr rlim_t kMaxDescriptorSweep = 65536;
// Exit status of a child that could not become the hook user; RunHook reports the failure
// through the report pipe, so this is only what a stray waitpid would see.
constexpr int kCannotSwitchUserExit = 126;

bool IsEnvName(std::string_view name) {
  if (name.empty() || (name.front() >= '0' && name.front() <= '9')) return false;
  return std::all_of(name.begin(), name.end(), [](char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_';
  });
}

// The whole environment of a hook, as documented in the header.
std::map<std::string, std::string> HookEnvironment(const HookOptions& options) {
  std::map<std::string, std::string> vars;
  vars["PATH"] = kHookPath;
  const char* lang = ::getenv("LANG");
  vars["LANG"] = lang != nullptr && *lang != '\0' ? lang : kDefaultLang;
  for (const std::string& name : options.pass_env) {
    if (const char* value = ::getenv(name.c_str())) vars[name] = value;
  }
  for (const auto& [name, value] : options.env) vars[name] = value;
  return vars;
}

// What the child does between fork and exec. Everything it needs is computed by the parent:
// after fork only async-signal-safe calls are allowed (the agent has other threads, and one
// of them may hold the allocator's lock).
struct ChildSetup {
  const HookUser* user = nullptr;
  rlim_t descriptor_sweep = 0;
  int report_fd = -1;  // write end of the report pipe (close-on-exec)

  void InChild() const {
    // Its own process group, so that a timeout kills what the hook started too.
    ::setpgid(0, 0);
    // The signal state of a fresh process, not the agent's: exec keeps the blocked mask and
    // every ignored signal, and the agent blocks SIGTERM and SIGINT (it waits for them) and
    // ignores SIGPIPE. A service a hook starts would otherwise never see a SIGTERM (not from
    // its own deploy/stop, not from systemd), and a pipe in a hook would not stop its writer.
    for (int sig = 1; sig < NSIG; ++sig) {
      if (sig == SIGKILL || sig == SIGSTOP) continue;
      struct sigaction dfl {};
      dfl.sa_handler = SIG_DFL;
      ::sigaction(sig, &dfl, nullptr);  // fails harmlessly for the C library's own signals
    }
    sigset_t none;
    sigemptyset(&none);
    ::sigprocmask(SIG_SETMASK, &none, nullptr);
    // Descriptors the agent opened without O_CLOEXEC (or that another thread is about to mark)
    // must not reach a hook, which may run as a less trusted user.
    if (::close_range(3, ~0U, CLOSE_RANGE_CLOEXEC) != 0) {
      for (rlim_t fd = 3; fd < descriptor_sweep; ++fd) {
        ::fcntl(static_cast<int>(fd), F_SETFD, FD_CLOEXEC);
      }
    }
    if (user == nullptr) return;
    // Groups first: once the uid is dropped, the groups can no longer be changed.
    if (::setgroups(user->groups.size(), user->groups.data()) != 0 || ::setgid(user->gid) != 0 ||
        ::setuid(user->uid) != 0) {
      Fail(errno);
    }
    if (::getuid() != user->uid || ::geteuid() != user->uid || ::getgid() != user->gid ||
        ::getegid() != user->gid) {
      Fail(EPERM);
    }
  }

  // Never returns: a hook that cannot run as its user does not run at all.
  [[noreturn]] void Fail(int err) const {
    if (::write(report_fd, &err, sizeof err) < 0) {
      // Nothing more to do: the parent sees the child exit without exec and reports that.
    }
    ::_exit(kCannotSwitchUserExit);
  }
};

// A close-on-exec pipe through which the child reports an errno if it cannot become the hook
// user. The parent reads after the launch: end of file means the child reached exec.
class ReportPipe {
 public:
  ReportPipe() {
    if (::pipe2(fds_.data(), O_CLOEXEC) != 0) fds_ = {-1, -1};
  }
  ~ReportPipe() {
    for (int fd : fds_) {
      if (fd >= 0) ::close(fd);
    }
  }
  ReportPipe(const ReportPipe&) = delete;
  ReportPipe& operator=(const ReportPipe&) = delete;

  bool ok() const { return fds_[0] >= 0; }
  int write_end() const { return fds_[1]; }

  // The child's errno, or 0 if it reached exec (or exited before the report: then the
  // launch itself failed and Boost says why).
  int ReadReport() {
    ::close(fds_[1]);
    fds_[1] = -1;
    int err = 0;
    ssize_t n;
    do {
      n = ::read(fds_[0], &err, sizeof err);
    } while (n < 0 && errno == EINTR);
    return n == static_cast<ssize_t>(sizeof err) ? err : 0;
  }

 private:
  std::array<int, 2> fds_{-1, -1};
};

rlim_t DescriptorSweep() {
  struct rlimit limit {};
  if (::getrlimit(RLIMIT_NOFILE, &limit) != 0 || limit.rlim_cur == RLIM_INFINITY) {
    return kMaxDescriptorSweep;
  }
  return std::min(limit.rlim_cur, kMaxDescriptorSweep);
}

// Watches a deadline of a Clock for an io_context, which waits on descriptors and knows nothing
// of the clock: a thread sleeps on an Alarm until the deadline and then posts an empty handler,
// which makes the io_context's run_one return. With a ManualClock the deadline comes only when
// the test advances time. Destruction ends the watch (and joins the thread) either way.
class DeadlineWatch {
 public:
  DeadlineWatch(const Clock& clock, boost::asio::io_context& ioc, MonoTime deadline)
      : alarm_(clock.NewAlarm()), thread_([this, &ioc, deadline] {
          if (alarm_->WaitUntil(deadline)) return;  // woken: the watch ended first
          reached_ = true;
          boost::asio::post(ioc, [] {});
        }) {}
  ~DeadlineWatch() {
    alarm_->Wake();
    thread_.join();
  }
  DeadlineWatch(const DeadlineWatch&) = delete;
  DeadlineWatch& operator=(const DeadlineWatch&) = delete;

  bool reached() const { return reached_; }

 private:
  const std::unique_ptr<Alarm> alarm_;
  std::atomic<bool> reached_{false};
  std::thread thread_;  // last: it uses the members above
};

// Runs handlers until `done`, until `clock` reaches `deadline`, or until the io_context runs
// out of work (then nothing further can change, and looping would spin).
void RunUntil(boost::asio::io_context& ioc, const Clock& clock, MonoTime deadline,
              const std::function<bool()>& done) {
  if (done() || clock.Monotonic() >= deadline) return;
  if (&clock == SystemClock::Get()) {
    // Real time: the io_context's own timer, rather than a thread per wait.
    boost::asio::steady_timer timer(ioc, deadline);
    // Shared with the handler, which may run after this returns (cancelled, in a later
    // run_one of the same io_context).
    auto reached = std::make_shared<bool>(false);
    timer.async_wait([reached](const boost::system::error_code& ec) {
      if (!ec) *reached = true;
    });
    while (!done() && !*reached) {
      if (ioc.run_one() == 0) break;
    }
    return;
  }
  DeadlineWatch watch(clock, ioc, deadline);
  while (!done() && !watch.reached()) {
    if (ioc.run_one() == 0) return;
  }
}

std::string Describe(const HookUser& user) {
  return "user " + user.name + " (uid " + std::to_string(user.uid) + ", gid " +
         std::to_string(user.gid) + ")";
}

}  // namespace

Status CheckHookEnvAllowList(const std::vector<std::string>& names) {
  for (const std::string& name : names) {
    if (!IsEnvName(name)) {
      return InvalidArgument("\"" + name + "\" is not an environment variable name");
    }
    for (std::string_view never : kNeverPassed) {
      if (name == never) return InvalidArgument(name + " is never passed to hooks");
    }
  }
  return Status::Ok();
}

StatusOr<std::vector<std::string>> ParseHookEnvAllowList(const std::string& csv) {
  std::vector<std::string> names;
  size_t start = 0;
  while (start <= csv.size()) {
    size_t end = csv.find(',', start);
    if (end == std::string::npos) end = csv.size();
    std::string name = csv.substr(start, end - start);
    name.erase(0, name.find_first_not_of(' '));
    name.erase(name.find_last_not_of(' ') + 1);
    if (!name.empty()) names.push_back(std::move(name));
    start = end + 1;
  }
  if (Status st = CheckHookEnvAllowList(names); !st.ok()) return st.WithContext("--hook-env");
  return names;
}

StatusOr<HookUser> LookUpHookUser(const std::string& name) {
  long size_hint = ::sysconf(_SC_GETPW_R_SIZE_MAX);
  std::vector<char> buf(size_hint > 0 ? static_cast<size_t>(size_hint) : 4096);
  struct passwd pw {};
  struct passwd* found = nullptr;
  int err;
  while ((err = ::getpwnam_r(name.c_str(), &pw, buf.data(), buf.size(), &found)) == ERANGE &&
         buf.size() < (size_t{1} << 20)) {
    buf.resize(buf.size() * 2);
  }
  if (err != 0) {
    return Internal("looking up hook user " + name + ": " + std::strerror(err));
  }
  if (found == nullptr) return NotFound("hook user \"" + name + "\" does not exist");

  HookUser user;
  user.name = name;
  user.uid = pw.pw_uid;
  user.gid = pw.pw_gid;
  int count = 32;
  for (;;) {
    user.groups.resize(static_cast<size_t>(count));
    const int capacity = count;
    if (::getgrouplist(pw.pw_name, pw.pw_gid, user.groups.data(), &count) >= 0) {
      user.groups.resize(static_cast<size_t>(count));
      break;
    }
    // getgrouplist sets `count` to the number needed; guard against an implementation that
    // does not grow it.
    if (count <= capacity) count = capacity * 2;
    if (count > (1 << 17)) return Internal("hook user " + name + " is in too many groups");
  }
  return user;
}

StatusOr<HookResult> RunHook(const std::string& executable, const HookOptions& options) {
  std::error_code fs_ec;
  // The child changes directory before exec, so a relative path would be resolved against
  // the working directory instead of where the caller meant.
  const std::string exe = std::filesystem::absolute(executable, fs_ec).string();
  if (fs_ec) return InvalidArgument("bad hook path " + executable + ": " + fs_ec.message());
  LOCKSTEP_RETURN_IF_ERROR(CheckExecutable(exe));
  if (Status st = CheckHookEnvAllowList(options.pass_env); !st.ok()) {
    return st.WithContext("environment of hook " + exe);
  }
  for (const auto& [name, value] : options.env) {
    if (Status st = CheckHookEnvAllowList({name}); !st.ok()) {
      return st.WithContext("environment of hook " + exe);
    }
  }
  if (!options.working_dir.empty() && !std::filesystem::is_directory(options.working_dir, fs_ec)) {
    return NotFound("working directory " + options.working_dir + " of hook " + exe +
                    " does not exist");
  }

  try {
    boost::asio::io_context ioc;
    bp::async_pipe pipe(ioc);
    LineCollector lines(options);
    std::array<char, 8192> buf;
    bool output_done = false;
    bool exited = false;

    // Built from nothing: passing a bp::environment replaces the agent's, it does not add to
    // it. set(), not env[key]: Boost 1.74's environment::find (behind operator[]) compares
    // "KEY=" against every variable without checking its length, reading past the end of any
    // shorter one (a heap-buffer-overflow under AddressSanitizer). set() checks the length.
    bp::environment env;
    for (const auto& [key, value] : HookEnvironment(options)) env.set(key, value);

    ReportPipe report;
    if (!report.ok()) {
      return Internal("cannot start hook " + exe + ": pipe: " + std::strerror(errno));
    }
    const ChildSetup setup{options.user ? &*options.user : nullptr, DescriptorSweep(),
                           report.write_end()};

    std::error_code launch_ec;
    // One pipe for stdout and stderr keeps their lines in the order the hook wrote them.
    // The hook gets its own process group so that a timeout kills what it started too
    // (a `sleep` under a shell would otherwise outlive the shell and hold the pipe).
    // chdir(".") is a no-op, so an unset working directory keeps the agent's. The setup runs
    // last, after the redirections and the chdir, so the user switch is the final step.
    const std::string dir = options.working_dir.empty() ? "." : options.working_dir;
    auto no_input = bp::std_in < bp::null;
    auto output = (bp::std_out & bp::std_err) > pipe;
    auto launch = [&](auto&&... how) {
      return bp::child(bp::exe = exe, bp::start_dir = dir, env, no_input, output,
                       bp::on_exit([&exited](int, const std::error_code&) { exited = true; }),
                       bp::extend::on_exec_setup([&setup](auto&) { setup.InChild(); }),
                       // Boost abandons a child whose launch failed after fork (at exec,
                       // usually already exiting): stop and reap it here so no zombie is left.
                       bp::extend::on_error([](auto& exec, const std::error_code&) {
                         if (exec.pid > 0) {
                           ::kill(exec.pid, SIGKILL);
                           ::waitpid(exec.pid, nullptr, 0);
                         }
                       }),
                       ioc, launch_ec, how...);
    };
    // Without a user switch the child only sets its process group, marks descriptors
    // close-on-exec and execs: vfork, which does not copy the agent's page tables, makes that
    // several hundred microseconds cheaper per hook. A user switch needs a real fork: glibc's
    // setuid acts on every thread of the process, and a vfork child shares the agent's.
    bp::child child = options.user ? launch() : launch(bp::posix::use_vfork);
    const int switch_err = report.ReadReport();
    if (launch_ec) {
      return Internal("cannot start hook " + exe + ": " + launch_ec.message());
    }
    if (switch_err != 0) {
      std::error_code ec;
      child.wait(ec);
      return PermissionDenied("cannot run hook " + exe + " as " + Describe(*options.user) + ": " +
                              std::strerror(switch_err));
    }
    const pid_t pid = child.id();

    std::function<void()> read_more = [&] {
      pipe.async_read_some(boost::asio::buffer(buf),
                           [&](const boost::system::error_code& ec, size_t n) {
                             lines.Feed(buf.data(), n);
                             if (ec) {
                               lines.Finish();
                               output_done = true;
                               return;
                             }
                             read_more();
                           });
    };
    read_more();

    const Clock& clock = *options.clock;
    HookResult result;
    RunUntil(ioc, clock, clock.Monotonic() + options.timeout, [&] { return exited; });
    if (!exited) {
      result.timed_out = true;
      ::kill(-pid, SIGKILL);
      std::error_code ec;
      child.terminate(ec);
    }
    RunUntil(ioc, clock, clock.Monotonic() + kDrainGrace, [&] { return exited && output_done; });
    if (!exited) {
      // SIGKILL was sent; reap it so no zombie is left behind. child::wait only blocks in
      // waitpid, it does not install a signal handler.
      std::error_code ec;
      child.wait(ec);
    }
    boost::system::error_code close_ec;
    pipe.close(close_ec);
    if (!output_done) lines.Finish();

    const int status = child.native_exit_code();
    if (!result.timed_out && WIFEXITED(status)) result.exit_code = WEXITSTATUS(status);
    result.tail = lines.TakeTail();
    return result;
  } catch (const std::exception& e) {
    return Internal("running hook " + exe + ": " + e.what());
  }
}

}  // namespace lockstep::agent
