#include "tests/support/process.h"

#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstring>
#include <fstream>
#include <sstream>
#include <thread>

extern char** environ;

namespace lockstep::testing {

namespace {

std::vector<std::string> BuildEnv(const std::map<std::string, std::string>& extra) {
  std::map<std::string, std::string> merged;
  for (char** e = environ; *e; ++e) {
    std::string kv = *e;
    auto eq = kv.find('=');
    if (eq != std::string::npos) merged[kv.substr(0, eq)] = kv.substr(eq + 1);
  }
  for (const auto& [k, v] : extra) merged[k] = v;
  std::vector<std::string> out;
  for (const auto& [k, v] : merged) out.push_back(k + "=" + v);
  return out;
}

StatusOr<pid_t> Spawn(const std::vector<std::string>& argv, const std::string& out_path,
                      const std::string& err_path, const std::map<std::string, std::string>& env) {
  posix_spawn_file_actions_t fa;
  posix_spawn_file_actions_init(&fa);
  posix_spawn_file_actions_addopen(&fa, STDIN_FILENO, "/dev/null", O_RDONLY, 0);
  posix_spawn_file_actions_addopen(&fa, STDOUT_FILENO, out_path.c_str(),
                                   O_WRONLY | O_CREAT | O_APPEND, 0644);
  posix_spawn_file_actions_addopen(&fa, STDERR_FILENO, err_path.c_str(),
                                   O_WRONLY | O_CREAT | O_APPEND, 0644);
  std::vector<char*> args;
  for (const auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
  args.push_back(nullptr);
  auto env_strings = BuildEnv(env);
  std::vector<char*> envp;
  for (auto& e : env_strings) envp.push_back(e.data());
  envp.push_back(nullptr);
  pid_t pid = 0;
  int rc = posix_spawn(&pid, argv[0].c_str(), &fa, nullptr, args.data(), envp.data());
  posix_spawn_file_actions_destroy(&fa);
  if (rc != 0) return Internal("cannot start " + argv[0] + ": " + std::strerror(rc));
  return pid;
}

int DecodeStatus(int status) {
  if (WIFEXITED(status)) return WEXITSTATUS(status);
  if (WIFSIGNALED(status)) return 128 + WTERMSIG(status);
  return -1;
}

}  // namespace

std::string ReadFile(const std::string& path) {
  std::ifstream in(path);
  std::stringstream buf;
  buf << in.rdbuf();
  return buf.str();
}

StatusOr<std::unique_ptr<Process>> Process::Start(const std::vector<std::string>& argv,
                                                  const std::string& log_path,
                                                  const std::map<std::string, std::string>& env) {
  auto pid = Spawn(argv, log_path, log_path, env);
  if (!pid.ok()) return pid.status();
  return std::unique_ptr<Process>(new Process(*pid, log_path));
}

Process::~Process() { Stop(); }

void Process::Signal(int sig) {
  if (!reaped_) ::kill(pid_, sig);
}

bool Process::Running() { return Wait(std::chrono::milliseconds(0)) == -1; }

int Process::Wait(std::chrono::milliseconds timeout) {
  if (reaped_) return status_;
  auto deadline = std::chrono::steady_clock::now() + timeout;
  for (;;) {
    int status = 0;
    pid_t r = ::waitpid(pid_, &status, WNOHANG);
    if (r == pid_) {
      reaped_ = true;
      status_ = DecodeStatus(status);
      return status_;
    }
    if (r < 0) {
      reaped_ = true;
      return status_;
    }
    if (std::chrono::steady_clock::now() >= deadline) return -1;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
}

int Process::Stop(std::chrono::milliseconds grace) {
  if (reaped_) return status_;
  ::kill(pid_, SIGTERM);
  if (Wait(grace) != -1) return status_;
  Kill();
  return status_;
}

void Process::Kill() {
  if (reaped_) return;
  ::kill(pid_, SIGKILL);
  Wait(std::chrono::seconds(10));
}

CommandResult RunCommand(const std::vector<std::string>& argv, std::chrono::milliseconds timeout,
                         const std::map<std::string, std::string>& env) {
  CommandResult result;
  char out_tmpl[] = "/tmp/lockstep-cmd-out-XXXXXX";
  char err_tmpl[] = "/tmp/lockstep-cmd-err-XXXXXX";
  int out_fd = mkstemp(out_tmpl);
  int err_fd = mkstemp(err_tmpl);
  ::close(out_fd);
  ::close(err_fd);
  auto pid = Spawn(argv, out_tmpl, err_tmpl, env);
  if (pid.ok()) {
    Process p(*pid, out_tmpl);
    result.exit_code = p.Wait(timeout);
    if (result.exit_code == -1) p.Kill();
  } else {
    result.err = pid.status().message();
  }
  result.out = ReadFile(out_tmpl);
  result.err += ReadFile(err_tmpl);
  ::unlink(out_tmpl);
  ::unlink(err_tmpl);
  return result;
}

}  // namespace lockstep::testing
