#include "agents/hooks/hook_runner.h"

#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <array>
#include <boost/asio/io_context.hpp>
#include <boost/process.hpp>
#include <boost/process/extend.hpp>
#include <cerrno>
#include <cstring>
#include <deque>
#include <exception>
#include <filesystem>
#include <system_error>

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

}  // namespace

StatusOr<HookResult> RunHook(const std::string& executable, const HookOptions& options) {
  std::error_code fs_ec;
  // The child changes directory before exec, so a relative path would be resolved against
  // the working directory instead of where the caller meant.
  const std::string exe = std::filesystem::absolute(executable, fs_ec).string();
  if (fs_ec) return InvalidArgument("bad hook path " + executable + ": " + fs_ec.message());
  LOCKSTEP_RETURN_IF_ERROR(CheckExecutable(exe));
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

    bp::environment env = boost::this_process::environment();
    // set(), not env[key]: Boost 1.74's environment::find (behind operator[]) compares
    // "KEY=" against every variable without checking its length, reading past the end of any
    // shorter one (a heap-buffer-overflow under AddressSanitizer). set() checks the length.
    for (const auto& [key, value] : options.env) env.set(key, value);

    std::error_code launch_ec;
    // One pipe for stdout and stderr keeps their lines in the order the hook wrote them.
    // The hook gets its own process group so that a timeout kills what it started too
    // (a `sleep` under a shell would otherwise outlive the shell and hold the pipe).
    // chdir(".") is a no-op, so an unset working directory keeps the agent's.
    const std::string dir = options.working_dir.empty() ? "." : options.working_dir;
    auto no_input = bp::std_in < bp::null;
    auto output = (bp::std_out & bp::std_err) > pipe;
    bp::child child(bp::exe = exe, bp::start_dir = dir, env, no_input, output,
                    bp::on_exit([&exited](int, const std::error_code&) { exited = true; }),
                    bp::extend::on_exec_setup([](auto&) { ::setpgid(0, 0); }), ioc, launch_ec);
    if (launch_ec) {
      return Internal("cannot start hook " + exe + ": " + launch_ec.message());
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

    // Runs handlers until `done` or `limit`, or until the io_context runs out of work (then
    // nothing further can change, and looping would spin).
    auto run_until = [&ioc](const std::function<bool()>& done,
                            std::chrono::steady_clock::time_point limit) {
      while (!done() && std::chrono::steady_clock::now() < limit) {
        if (ioc.run_one_until(limit) == 0 && ioc.stopped()) return;
      }
    };

    HookResult result;
    const auto deadline = std::chrono::steady_clock::now() + options.timeout;
    run_until([&] { return exited; }, deadline);
    if (!exited) {
      result.timed_out = true;
      ::kill(-pid, SIGKILL);
      std::error_code ec;
      child.terminate(ec);
    }
    run_until([&] { return exited && output_done; },
              std::chrono::steady_clock::now() + kDrainGrace);
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
