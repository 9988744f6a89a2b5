#include "agents/hooks/hook_runner.h"

#include <fcntl.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <pwd.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <optional>
#include <string>
#include <thread>
#include <vector>

namespace lockstep::agent {
namespace {

namespace fs = std::filesystem;
using std::chrono::milliseconds;
using ::testing::HasSubstr;
using ::testing::UnorderedElementsAre;

// Sets an environment variable of the test process (the agent, as far as RunHook can tell)
// for the lifetime of the object, restoring the previous value.
class ScopedEnv {
 public:
  ScopedEnv(const char* name, const char* value) : name_(name) {
    if (const char* old = ::getenv(name)) old_ = old;
    if (value != nullptr) {
      ::setenv(name, value, 1);
    } else {
      ::unsetenv(name);
    }
  }
  ~ScopedEnv() {
    if (old_) {
      ::setenv(name_.c_str(), old_->c_str(), 1);
    } else {
      ::unsetenv(name_.c_str());
    }
  }
  ScopedEnv(const ScopedEnv&) = delete;
  ScopedEnv& operator=(const ScopedEnv&) = delete;

 private:
  std::string name_;
  std::optional<std::string> old_;
};

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
  // A fixed PATH, not the agent's.
  EXPECT_EQ(result->tail[1], std::string("path=") + kHookPath);
}

TEST_F(HookRunnerTest, VariablesAreAddedBesideShorterOnesAndReplacePassedOnes) {
  // "Z=" is shorter than "LOCKSTEP_PREVIOUS_VERSION=": a lookup that compared the key past
  // the end of a shorter variable read outside it (AddressSanitizer build, Boost 1.74's
  // environment::find).
  ScopedEnv z("Z", "");
  ScopedEnv inherited("LOCKSTEP_TEST_INHERITED", "old");
  options_.pass_env = {"Z", "LOCKSTEP_TEST_INHERITED"};
  options_.env["LOCKSTEP_PREVIOUS_VERSION"] = "1.2.2";
  options_.env["LOCKSTEP_TEST_INHERITED"] = "new";

  auto result =
      RunHook(Script("start",
                     "echo \"p=$LOCKSTEP_PREVIOUS_VERSION z=$Z i=$LOCKSTEP_TEST_INHERITED\"\n"
                     "env | grep -c '^LOCKSTEP_TEST_INHERITED='"),
              options_);

  ASSERT_TRUE(result.ok()) << result.status().ToString();
  const std::vector<std::string> expected = {"p=1.2.2 z= i=new", "1"};  // once, replaced
  EXPECT_EQ(result->tail, expected);
}

TEST_F(HookRunnerTest, HooksSeeOnlyTheCuratedEnvironment) {
  ScopedEnv credentials("CREDENTIALS_DIRECTORY", "/run/credentials/lockstep-agent.service");
  ScopedEnv secret("SECRET_X", "hunter2");
  ScopedEnv home("HOME", "/root");
  ScopedEnv lang("LANG", "en_GB.UTF-8");
  ScopedEnv allowed("ALLOWED_X", "yes");
  ScopedEnv allowed_but_unset("ALLOWED_BUT_UNSET", nullptr);
  options_.pass_env = {"ALLOWED_X", "ALLOWED_BUT_UNSET"};
  options_.env["LOCKSTEP_VERSION"] = "1.2.3";
  // env(1) itself as the hook: a shell would add PWD of its own.
  const fs::path hook = dir_ / "start";
  fs::copy_file("/usr/bin/env", hook);

  auto result = RunHook(hook.string(), options_);

  ASSERT_TRUE(result.ok()) << result.status().ToString();
  EXPECT_THAT(result->tail,
              UnorderedElementsAre(std::string("PATH=") + kHookPath, "LANG=en_GB.UTF-8",
                                   "ALLOWED_X=yes", "LOCKSTEP_VERSION=1.2.3"));
}

TEST_F(HookRunnerTest, HooksGetCUtf8WhenTheAgentHasNoLang) {
  ScopedEnv lang("LANG", nullptr);

  auto result = RunHook(Script("start", "echo \"lang=$LANG\""), options_);

  ASSERT_TRUE(result.ok()) << result.status().ToString();
  EXPECT_EQ(result->tail, std::vector<std::string>{"lang=C.UTF-8"});
}

TEST_F(HookRunnerTest, CredentialsDirectoryCannotBeAllowListed) {
  ScopedEnv credentials("CREDENTIALS_DIRECTORY", "/run/credentials/lockstep-agent.service");
  const fs::path ran = dir_ / "ran";
  options_.pass_env = {"CREDENTIALS_DIRECTORY"};

  auto result = RunHook(Script("start", "touch " + ran.string()), options_);

  ASSERT_FALSE(result.ok());
  EXPECT_THAT(result.status().message(), HasSubstr("CREDENTIALS_DIRECTORY"));
  EXPECT_FALSE(fs::exists(ran));
  auto parsed = ParseHookEnvAllowList("EVENT_LOG,CREDENTIALS_DIRECTORY");
  ASSERT_FALSE(parsed.ok());
  EXPECT_THAT(parsed.status().message(), HasSubstr("--hook-env"));
  EXPECT_THAT(parsed.status().message(), HasSubstr("CREDENTIALS_DIRECTORY"));
}

TEST_F(HookRunnerTest, HookEnvFlagIsACommaSeparatedListOfNames) {
  auto parsed = ParseHookEnvAllowList(" EVENT_LOG, FAULT_DIR,,http_proxy ");
  ASSERT_TRUE(parsed.ok()) << parsed.status().ToString();
  EXPECT_EQ(*parsed, (std::vector<std::string>{"EVENT_LOG", "FAULT_DIR", "http_proxy"}));

  auto empty = ParseHookEnvAllowList("");
  ASSERT_TRUE(empty.ok()) << empty.status().ToString();
  EXPECT_TRUE(empty->empty());

  for (const char* bad : {"A=B", "1ST", "WITH SPACE", "DASH-ED"}) {
    auto refused = ParseHookEnvAllowList(bad);
    ASSERT_FALSE(refused.ok()) << bad;
    EXPECT_EQ(refused.status().code(), StatusCode::kInvalidArgument) << bad;
    EXPECT_THAT(refused.status().message(), HasSubstr(bad));
  }
}

TEST_F(HookRunnerTest, HooksRunAsTheHookUser) {
  if (::geteuid() != 0) GTEST_SKIP() << "switching users needs root";
  struct passwd* nobody = ::getpwnam("nobody");
  if (nobody == nullptr) GTEST_SKIP() << "no user nobody on this host";
  const uid_t nobody_uid = nobody->pw_uid;
  const gid_t nobody_gid = nobody->pw_gid;
  auto user = LookUpHookUser("nobody");
  ASSERT_TRUE(user.ok()) << user.status().ToString();
  EXPECT_EQ(user->uid, nobody_uid);
  options_.user = *user;
  fs::permissions(dir_, fs::perms(0755));  // mkdtemp made it 0700: nobody could not exec

  // id -G twice: for the hook's process, and as the group database has it for nobody, so
  // root's supplementary groups must be gone.
  auto result = RunHook(Script("start", "id -u\nid -g\nid -G\nid -G nobody"), options_);

  ASSERT_TRUE(result.ok()) << result.status().ToString();
  ASSERT_EQ(result->tail.size(), 4u) << ::testing::PrintToString(result->tail);
  EXPECT_EQ(result->tail[0], std::to_string(nobody_uid));
  EXPECT_EQ(result->tail[1], std::to_string(nobody_gid));
  EXPECT_EQ(result->tail[2], result->tail[3]);
  EXPECT_EQ(result->exit_code, 0);
}

TEST_F(HookRunnerTest, AHookWhoseUserCannotBeAssumedDoesNotRun) {
  // More supplementary groups than the kernel accepts (NGROUPS_MAX is 65536), so setgroups
  // fails even for root; without root it fails anyway.
  HookUser user;
  user.name = "overgrouped";
  user.uid = 65534;
  user.gid = 65534;
  user.groups.assign(65537, 65534);
  options_.user = user;
  const fs::path ran = dir_ / "ran";

  auto result = RunHook(Script("start", "touch " + ran.string()), options_);

  ASSERT_FALSE(result.ok());
  EXPECT_THAT(result.status().message(), HasSubstr("user overgrouped"));
  EXPECT_FALSE(fs::exists(ran)) << "the hook ran although its user could not be assumed";
}

TEST_F(HookRunnerTest, AnUnknownHookUserIsAnErrorNamingIt) {
  auto user = LookUpHookUser("lockstep-no-such-user");

  ASSERT_FALSE(user.ok());
  EXPECT_EQ(user.status().code(), StatusCode::kNotFound);
  EXPECT_THAT(user.status().message(), HasSubstr("lockstep-no-such-user"));
}

TEST_F(HookRunnerTest, HooksInheritNoDescriptorOfTheAgent) {
  // Opened without O_CLOEXEC, as a library might.
  const int fd = ::open((dir_ / "agent-secret").c_str(), O_WRONLY | O_CREAT, 0600);
  ASSERT_GE(fd, 3);

  auto result = RunHook(Script("start", "if [ -e /proc/self/fd/" + std::to_string(fd) +
                                            " ]; then echo open; else echo closed; fi"),
                        options_);
  ::close(fd);

  ASSERT_TRUE(result.ok()) << result.status().ToString();
  EXPECT_EQ(result->tail, std::vector<std::string>{"closed"});
}

// The agent blocks SIGTERM and SIGINT (it waits for them) and ignores SIGPIPE; a hook, and a
// service it starts, begin with no signal blocked or ignored, so that its deploy/stop (or
// systemd) can stop that service with a SIGTERM.
TEST_F(HookRunnerTest, HooksStartWithNoSignalBlockedOrIgnored) {
  sigset_t agent_mask, saved_mask;
  sigemptyset(&agent_mask);
  sigaddset(&agent_mask, SIGTERM);
  sigaddset(&agent_mask, SIGINT);
  ASSERT_EQ(pthread_sigmask(SIG_BLOCK, &agent_mask, &saved_mask), 0);
  struct sigaction ignore {
  }, saved_pipe{};
  ignore.sa_handler = SIG_IGN;
  ASSERT_EQ(::sigaction(SIGPIPE, &ignore, &saved_pipe), 0);

  auto result = RunHook(Script("start",
                               "while read -r key value; do\n"
                               "  case $key in SigBlk:|SigIgn:) echo \"$key $value\";; esac\n"
                               "done < /proc/$$/status"),
                        options_);
  ::sigaction(SIGPIPE, &saved_pipe, nullptr);
  pthread_sigmask(SIG_SETMASK, &saved_mask, nullptr);

  ASSERT_TRUE(result.ok()) << result.status().ToString();
  EXPECT_EQ(result->tail,
            (std::vector<std::string>{"SigBlk: 0000000000000000", "SigIgn: 0000000000000000"}));
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
