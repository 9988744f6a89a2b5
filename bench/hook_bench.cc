// lockstep-hook-bench: what the agent's hook runner costs per hook, against a bare
// posix_spawn of the same script.
//
// Both run the same shell script, which prints --lines lines, with its output read through a
// pipe until the end and its exit status collected. The runner adds what a deploy needs: a
// curated environment, its own process group (a timeout kills what the hook started), every
// inherited descriptor closed, a deadline, and the output split into lines with a bounded
// tail. The two are interleaved run by run, so a machine that gets busier slows both.
//
//   lockstep-hook-bench [--runs N] [--lines L]
//
// Prints, for each: wall time per hook (p50, p99) and CPU per hook (this process plus its
// children, from getrusage), and the runner's overhead against the bare spawn.

#include <fcntl.h>
#include <spawn.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "agents/hooks/hook_runner.h"
#include "common/flags.h"

extern char** environ;

namespace {

using Clock = std::chrono::steady_clock;

[[noreturn]] void Die(const std::string& why) {
  std::fprintf(stderr, "lockstep-hook-bench: %s\n", why.c_str());
  std::exit(1);
}

int64_t CpuMicros() {
  int64_t total = 0;
  for (int who : {RUSAGE_SELF, RUSAGE_CHILDREN}) {
    struct rusage u {};
    if (::getrusage(who, &u) != 0) Die("getrusage failed");
    total += int64_t{u.ru_utime.tv_sec} * 1'000'000 + u.ru_utime.tv_usec +
             int64_t{u.ru_stime.tv_sec} * 1'000'000 + u.ru_stime.tv_usec;
  }
  return total;
}

// posix_spawn with stdout and stderr on one pipe, read to the end, then waitpid.
void BareSpawn(const std::string& script) {
  int fds[2];
  if (::pipe2(fds, O_CLOEXEC) != 0) Die("pipe2 failed");
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_adddup2(&actions, fds[1], STDOUT_FILENO);
  posix_spawn_file_actions_adddup2(&actions, fds[1], STDERR_FILENO);
  char* argv[] = {const_cast<char*>(script.c_str()), nullptr};
  pid_t pid = 0;
  const int rc = ::posix_spawn(&pid, script.c_str(), &actions, nullptr, argv, environ);
  posix_spawn_file_actions_destroy(&actions);
  ::close(fds[1]);
  if (rc != 0) Die(std::string("posix_spawn: ") + std::strerror(rc));
  char buf[8192];
  while (::read(fds[0], buf, sizeof buf) > 0) {
  }
  ::close(fds[0]);
  int status = 0;
  ::waitpid(pid, &status, 0);
  if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) Die("the script failed");
}

void Runner(const std::string& script) {
  lockstep::agent::HookOptions options;
  auto result = lockstep::agent::RunHook(script, options);
  if (!result.ok()) Die(result.status().ToString());
  if (result->exit_code != 0 || result->timed_out) Die("the hook failed");
}

struct Figures {
  std::vector<double> wall_us;
  int64_t cpu_us = 0;

  double Percentile(double p) {
    std::sort(wall_us.begin(), wall_us.end());
    const size_t i = std::min(wall_us.size() - 1, static_cast<size_t>(p * wall_us.size()));
    return wall_us[i];
  }
};

template <typename F>
void Measure(Figures& f, const F& run) {
  const int64_t cpu_before = CpuMicros();
  const auto start = Clock::now();
  run();
  f.wall_us.push_back(std::chrono::duration<double, std::micro>(Clock::now() - start).count());
  f.cpu_us += CpuMicros() - cpu_before;
}

}  // namespace

int main(int argc, char** argv) {
  lockstep::Flags flags;
  flags.Value("runs", "300", "hooks run by each of the two");
  flags.Value("lines", "20", "lines each hook prints");
  flags.Bool("help", "show this help");
  if (auto st = flags.Parse(argc, argv); !st.ok()) Die(st.message() + "\n" + flags.Usage());
  if (flags.GetBool("help")) {
    std::printf("usage: lockstep-hook-bench [flags]\n%s", flags.Usage().c_str());
    return 0;
  }
  const int runs = std::atoi(flags.Get("runs").c_str());
  const int lines = std::atoi(flags.Get("lines").c_str());
  if (runs < 1 || runs > 100000) Die("--runs must be in 1..100000");
  if (lines < 0 || lines > 100000) Die("--lines must be in 0..100000");

  const std::string dir =
      (std::filesystem::temp_directory_path() / ("lockstep-hook-bench-" + std::to_string(getpid())))
          .string();
  std::filesystem::create_directories(dir);
  const std::string script = dir + "/hook";
  {
    std::ofstream out(script);
    out << "#!/bin/sh\ni=0\nwhile [ $i -lt " << lines
        << " ]; do echo \"line $i of the hook's output\"; i=$((i+1)); done\n";
  }
  ::chmod(script.c_str(), 0755);

  Figures runner, bare;
  for (int i = 0; i < 5; ++i) {  // warm the page cache and the shell
    Runner(script);
    BareSpawn(script);
  }
  for (int i = 0; i < runs; ++i) {
    Measure(runner, [&] { Runner(script); });
    Measure(bare, [&] { BareSpawn(script); });
  }
  std::filesystem::remove_all(dir);

  auto report = [&](const char* name, Figures& f) {
    std::printf("%-12s wall p50 %7.0f us  p99 %7.0f us   cpu %7.0f us/hook\n", name,
                f.Percentile(0.50), f.Percentile(0.99), static_cast<double>(f.cpu_us) / runs);
  };
  std::printf("%d hooks each, %d lines of output per hook\n", runs, lines);
  report("hook runner", runner);
  report("posix_spawn", bare);
  std::printf("runner over bare: wall p50 %+.0f%%, cpu %+.0f%%\n",
              100.0 * (runner.Percentile(0.50) / bare.Percentile(0.50) - 1),
              100.0 * (static_cast<double>(runner.cpu_us) / static_cast<double>(bare.cpu_us) - 1));
  return 0;
}
