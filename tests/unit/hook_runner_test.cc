#include "agents/hooks/hook_runner.h"

#include <gtest/gtest.h>
#include <stdlib.h>
#include <sys/stat.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <string>
#include <thread>
#include <vector>

namespace lockstep::agent {
namespace {

namespace fs = std::filesystem;
using std::chrono::milliseconds;

class HookRunnerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/lockstep-hook-XXXXXX";
    ASSERT_NE(mkdtemp(tmpl), nullptr);
    dir_ = tmpl;
    options_.timeout = milliseconds(10000);
  }

  void TearDown() override { fs::remove_all(dir_); }

  // Writes an executable /bin/sh script and returns its path.
  std::string Script(const std::string& name, const std::string& body) {
    const fs::path path = dir_ / name;
    std::ofstream(path) << "#!/bin/sh\n" << body << "\n";
    ::chmod(path.c_str(), 0755);
    return path.string();
  }

  fs::path dir_;
  HookOptions options_;
};

TEST_F(HookRunnerTest, ExitCodeIsReported) {
  auto result = RunHook(Script("start", "exit 3"), options_);

  ASSERT_TRUE(result.ok()) << result.status().ToString();
  EXPECT_EQ(result->exit_code, 3);
  EXPECT_FALSE(result->timed_out);
}

TEST_F(HookRunnerTest, StdoutAndStderrLinesAreCapturedInOrder) {
  std::vector<std::string> streamed;
  options_.on_line = [&streamed](const std::string& line) { streamed.push_back(line); };

  auto result =
      RunHook(Script("start", "echo one\necho two >&2\necho three\nprintf four"), options_);

  ASSERT_TRUE(result.ok()) << result.status().ToString();
  const std::vector<std::string> expected = {"one", "two", "three", "four"};
  EXPECT_EQ(result->tail, expected);
  EXPECT_EQ(streamed, expected);
}

TEST_F(HookRunnerTest, EnvironmentReachesTheScript) {
  options_.env["LOCKSTEP_VERSION"] = "1.2.3";

  auto result =
      RunHook(Script("start", "echo \"v=$LOCKSTEP_VERSION\"\necho \"path=$PATH\""), options_);

  ASSERT_TRUE(result.ok()) << result.status().ToString();
  ASSERT_EQ(result->tail.size(), 2u);
  EXPECT_EQ(result->tail[0], "v=1.2.3");
  // The agent's own environment is inherited, not replaced.
  EXPECT_EQ(result->tail[1], std::string("path=") + (getenv("PATH") ? getenv("PATH") : ""));
}

TEST_F(HookRunnerTest, VariablesAreAddedBesideShorterOnesAndReplaceInheritedOnes) {
  // "Z=" is shorter than "LOCKSTEP_PREVIOUS_VERSION=": a lookup that compared the key past
  // the end of a shorter variable read outside it (AddressSanitizer build, Boost 1.74's
  // environment::find).
  ASSERT_EQ(::setenv("Z", "", 1), 0);
  ASSERT_EQ(::setenv("LOCKSTEP_TEST_INHERITED", "old", 1), 0);
  options_.env["LOCKSTEP_PREVIOUS_VERSION"] = "1.2.2";
  options_.env["LOCKSTEP_TEST_INHERITED"] = "new";

  auto result =
      RunHook(Script("start",
                     "echo \"p=$LOCKSTEP_PREVIOUS_VERSION z=$Z i=$LOCKSTEP_TEST_INHERITED\"\n"
                     "env | grep -c '^LOCKSTEP_TEST_INHERITED='"),
              options_);
  ::unsetenv("Z");
  ::unsetenv("LOCKSTEP_TEST_INHERITED");

  ASSERT_TRUE(result.ok()) << result.status().ToString();
  const std::vector<std::string> expected = {"p=1.2.2 z= i=new", "1"};  // once, replaced
  EXPECT_EQ(result->tail, expected);
}

TEST_F(HookRunnerTest, WorkingDirectoryIsSet) {
  const fs::path work = dir_ / "release";
  fs::create_directory(work);
  options_.working_dir = work.string();

  auto result = RunHook(Script("start", "pwd"), options_);

  ASSERT_TRUE(result.ok()) << result.status().ToString();
  ASSERT_EQ(result->tail.size(), 1u);
  EXPECT_EQ(fs::canonical(result->tail[0]), fs::canonical(work));
}

TEST_F(HookRunnerTest, TimeoutKillsTheHook) {
  options_.timeout = milliseconds(300);

  const auto start = std::chrono::steady_clock::now();
  auto result = RunHook(Script("start", "echo started\nsleep 30\necho finished"), options_);
  const auto elapsed = std::chrono::steady_clock::now() - start;

  ASSERT_TRUE(result.ok()) << result.status().ToString();
  EXPECT_TRUE(result->timed_out);
  EXPECT_EQ(result->exit_code, -1);
  EXPECT_EQ(result->tail, std::vector<std::string>{"started"});
  // A correctness bound (the hook did not run to completion), not a performance target.
  EXPECT_LT(elapsed, std::chrono::seconds(10));
}

TEST_F(HookRunnerTest, ConcurrentHooksEachGetTheirOwnExitCode) {
  constexpr int kHooks = 4;
  std::vector<std::string> scripts;
  for (int i = 0; i < kHooks; ++i) {
    scripts.push_back(
        Script("hook" + std::to_string(i),
               "sleep 0.1\necho hook" + std::to_string(i) + "\nexit " + std::to_string(10 + i)));
  }
  std::vector<StatusOr<HookResult>> results(kHooks, Status(StatusCode::kInternal, "not run"));

  std::vector<std::thread> threads;
  for (int i = 0; i < kHooks; ++i) {
    threads.emplace_back([&, i] { results[i] = RunHook(scripts[i], options_); });
  }
  for (auto& t : threads) t.join();

  for (int i = 0; i < kHooks; ++i) {
    ASSERT_TRUE(results[i].ok()) << results[i].status().ToString();
    EXPECT_EQ(results[i]->exit_code, 10 + i);
    EXPECT_EQ(results[i]->tail, std::vector<std::string>{"hook" + std::to_string(i)});
  }
}

TEST_F(HookRunnerTest, MissingExecutableIsAnError) {
  const std::string path = (dir_ / "no-such-hook").string();

  auto result = RunHook(path, options_);

  ASSERT_FALSE(result.ok());
  EXPECT_NE(result.status().message().find(path), std::string::npos) << result.status().ToString();
}

TEST_F(HookRunnerTest, NonExecutableFileIsAnError) {
  const std::string path = Script("start", "exit 0");
  ::chmod(path.c_str(), 0644);

  auto result = RunHook(path, options_);

  ASSERT_FALSE(result.ok());
  EXPECT_NE(result.status().message().find(path), std::string::npos) << result.status().ToString();
}

TEST_F(HookRunnerTest, TailKeepsOnlyTheLastLines) {
  options_.tail_lines = 3;
  int streamed = 0;
  options_.on_line = [&streamed](const std::string&) { ++streamed; };

  auto result = RunHook(
      Script("start", "i=1\nwhile [ $i -le 100 ]; do echo line$i; i=$((i+1)); done"), options_);

  ASSERT_TRUE(result.ok()) << result.status().ToString();
  EXPECT_EQ(result->tail, (std::vector<std::string>{"line98", "line99", "line100"}));
  EXPECT_EQ(streamed, 100);
}

TEST_F(HookRunnerTest, LongLineIsCut) {
  auto result =
      RunHook(Script("start", "head -c 10000 /dev/zero | tr '\\0' x\necho\necho after"), options_);

  ASSERT_TRUE(result.ok()) << result.status().ToString();
  ASSERT_EQ(result->tail.size(), 2u);
  EXPECT_EQ(result->tail[0], std::string(4096, 'x'));
  EXPECT_EQ(result->tail[1], "after");
}

}  // namespace
}  // namespace lockstep::agent
