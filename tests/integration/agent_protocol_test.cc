// The agent's side of the stream contract, against a stand-in AgentService: a real
// lockstep-agent process over real gRPC on loopback.

#include <grpcpp/grpcpp.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <condition_variable>
#include <filesystem>
#include <fstream>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "proto/lockstep.grpc.pb.h"
#include "tests/integration/fleet.h"

namespace lockstep::testing {
namespace {

namespace fs = std::filesystem;
namespace v1 = lockstep::v1;
using std::chrono::seconds;

// Welcomes the agent as `welcome` says, sends `then` (settings, a task) right after, and
// counts what comes back.
class StandInOrchestrator final : public v1::AgentService::Service {
 public:
  StandInOrchestrator(v1::Welcome welcome, std::vector<v1::ServerMessage> then)
      : welcome_(std::move(welcome)), then_(std::move(then)) {}

  grpc::Status Connect(
      grpc::ServerContext* /*ctx*/,
      grpc::ServerReaderWriter<v1::ServerMessage, v1::AgentMessage>* stream) override {
    v1::AgentMessage in;
    if (!stream->Read(&in) || !in.has_hello()) return grpc::Status::OK;
    v1::ServerMessage welcome;
    *welcome.mutable_welcome() = welcome_;
    stream->Write(welcome);
    {
      std::lock_guard lock(mu_);
      welcomed_ = true;
      cv_.notify_all();
    }
    for (const auto& msg : then_) stream->Write(msg);
    while (stream->Read(&in)) {
      std::lock_guard lock(mu_);
      if (in.has_heartbeat()) {
        ++heartbeats_;
        beat_versions_.push_back(in.heartbeat().current_version());
      }
      if (in.has_progress()) ++progress_;
      if (in.has_result()) {
        result_ = in.result();
        result_ids_.push_back(in.result().task_id());
      }
      cv_.notify_all();
    }
    return grpc::Status::OK;
  }

  bool WaitHeartbeats(int n) {
    std::unique_lock lock(mu_);
    return cv_.wait_for(lock, seconds(20), [&] { return heartbeats_ >= n; });
  }
  bool WaitResult() {
    std::unique_lock lock(mu_);
    return cv_.wait_for(lock, seconds(30), [&] { return result_.has_value(); });
  }
  int progress() {
    std::lock_guard lock(mu_);
    return progress_;
  }
  bool WaitWelcomed() {
    std::unique_lock lock(mu_);
    return cv_.wait_for(lock, seconds(20), [&] { return welcomed_; });
  }
  // Waits for a heartbeat that reports `version` as running.
  bool WaitBeatWith(const std::string& version) {
    std::unique_lock lock(mu_);
    return cv_.wait_for(lock, seconds(20), [&] {
      return std::find(beat_versions_.begin(), beat_versions_.end(), version) !=
             beat_versions_.end();
    });
  }
  std::vector<std::string> beat_versions() {
    std::lock_guard lock(mu_);
    return beat_versions_;
  }
  std::vector<std::string> result_ids() {
    std::lock_guard lock(mu_);
    return result_ids_;
  }

 private:
  const v1::Welcome welcome_;
  const std::vector<v1::ServerMessage> then_;
  std::mutex mu_;
  std::condition_variable cv_;
  int heartbeats_ = 0;                      // guarded by mu_
  bool welcomed_ = false;                   // guarded by mu_
  std::vector<std::string> beat_versions_;  // guarded by mu_; each heartbeat's version
  int progress_ = 0;                        // guarded by mu_
  std::optional<v1::TaskResult> result_;    // guarded by mu_
  std::vector<std::string> result_ids_;     // guarded by mu_; every result, in order
};

// Serves `stand_in` on a loopback port and runs a real agent against it until `done`
// returns; the agent's log is returned.
std::string RunAgentAgainst(StandInOrchestrator& stand_in, const std::function<bool()>& done,
                            bool* finished, std::string* agent_root = nullptr) {
  char tmpl[] = "/tmp/lockstep-agent-protocol-XXXXXX";
  const std::string dir = mkdtemp(tmpl);
  fs::create_directories(dir + "/agent");
  if (agent_root) *agent_root = dir + "/agent";
  grpc::ServerBuilder builder;
  int port = 0;
  builder.AddListeningPort("127.0.0.1:0", grpc::InsecureServerCredentials(), &port);
  builder.RegisterService(&stand_in);
  std::unique_ptr<grpc::Server> server = builder.BuildAndStart();
  EXPECT_TRUE(server && port > 0);
  auto agent = Process::Start(
      {BinPath("lockstep-agent"), "--server", "127.0.0.1:" + std::to_string(port), "--region",
       "us-east-1", "--name", "us-east-1-1", "--root", dir + "/agent", "--token", "lst_any"},
      dir + "/agent.log");
  EXPECT_TRUE(agent.ok()) << agent.status().ToString();
  *finished = agent.ok() && done();
  if (agent.ok()) (*agent)->Stop();
  server->Shutdown(std::chrono::system_clock::now() + seconds(2));
  std::string log = ReadFile(dir + "/agent.log");
  std::error_code ec;
  fs::remove_all(dir, ec);
  return log;
}

TEST(AgentProtocolTest, AnAgentBeatsAtTheIntervalLockstepdLastToldIt) {
  // Welcomed with ten minutes, then at once told 200 ms (as lockstepd does when the fleet
  // shrinks).
  v1::Welcome welcome;
  welcome.set_pipeline("monolith");
  welcome.set_heartbeat_interval_ms(600'000);
  v1::ServerMessage settings;
  settings.mutable_settings()->set_heartbeat_interval_ms(200);
  StandInOrchestrator stand_in(welcome, {settings});
  bool beat = false;
  // At the welcome's ten minutes, five heartbeats would take most of an hour.
  std::string log = RunAgentAgainst(
      stand_in, [&] { return stand_in.WaitHeartbeats(5); }, &beat);
  EXPECT_TRUE(beat) << log;
}

// Where lockstepd watches liveness with keepalive pings (Welcome.heartbeat_on_change), an
// agent checks its version every interval but beats only when it differs from what lockstepd
// last heard (its hello said: nothing runs): only when the host is switched by hand (drift).
TEST(AgentProtocolTest, AnAgentToldToBeatOnChangeBeatsOnlyWhenItsVersionChanges) {
  v1::Welcome welcome;
  welcome.set_pipeline("monolith");
  welcome.set_heartbeat_interval_ms(100);  // the shortest an agent takes
  welcome.set_heartbeat_on_change(true);
  StandInOrchestrator stand_in(welcome, {});
  std::string root;
  bool drift_reported = false;
  std::string log = RunAgentAgainst(
      stand_in,
      [&] {
        if (!stand_in.WaitWelcomed()) return false;
        // Ten intervals with nothing new to say: an agent beating every interval would send
        // ten heartbeats here. (A window to observe an absence, not a wait for readiness.)
        std::this_thread::sleep_for(std::chrono::milliseconds(1000));
        // A complete release as the agent installs one (its marker), switched to by hand.
        fs::create_directories(root + "/releases/v9");
        std::ofstream(root + "/releases/v9/.lockstep-release")
            << "sha256=" << std::string(64, 'a') << "\ninstalled_at_ms=1\n";
        fs::create_directory_symlink("releases/v9", root + "/current");
        return stand_in.WaitBeatWith("v9");
      },
      &drift_reported, &root);
  ASSERT_TRUE(drift_reported) << log;
  EXPECT_EQ(stand_in.beat_versions(), (std::vector<std::string>{"v9"})) << log;
}

// A prepare whose fetch fails (nothing listens on port 1): the agent notes the fetch and its
// retries as progress lines before it answers.
v1::ServerMessage FailingPrepare() {
  v1::ServerMessage msg;
  v1::Task* t = msg.mutable_task();
  t->set_task_id("prepare-1");
  t->set_kind(v1::Task::PREPARE);
  t->set_pipeline("monolith");
  t->set_version("v1");
  t->set_artifact_url("http://127.0.0.1:1/app-v1.tar.gz");
  t->set_sha256(std::string(64, 'a'));
  t->set_fetch_timeout_ms(1000);
  return msg;
}

TEST(AgentProtocolTest, AnAgentSendsProgressLinesOnlyWhenTheWelcomeAsksAndLogsThemAlways) {
  for (bool asked : {false, true}) {
    SCOPED_TRACE(asked ? "welcome asks for progress" : "welcome does not ask");
    v1::Welcome welcome;
    welcome.set_pipeline("monolith");
    welcome.set_heartbeat_interval_ms(600'000);
    welcome.set_send_progress(asked);
    StandInOrchestrator stand_in(welcome, {FailingPrepare()});
    bool answered = false;
    std::string log = RunAgentAgainst(
        stand_in, [&] { return stand_in.WaitResult(); }, &answered);
    ASSERT_TRUE(answered) << log;
    if (asked) {
      EXPECT_GT(stand_in.progress(), 0) << log;
    } else {
      EXPECT_EQ(stand_in.progress(), 0) << log;
    }
    // The agent's own log has the lines either way.
    EXPECT_NE(log.find("task prepare-1 fetch: http://127.0.0.1:1/app-v1.tar.gz"), std::string::npos)
        << log;
  }
}

// A task from a lockstepd that lost the lease (an older epoch than the agent has seen) is
// refused, not run; one of the current epoch is run.
TEST(AgentProtocolTest, AnAgentRefusesATaskOfAnOlderLeaderEpoch) {
  v1::Welcome welcome;
  welcome.set_pipeline("monolith");
  welcome.set_heartbeat_interval_ms(600'000);
  welcome.set_epoch(5);
  v1::ServerMessage stale = FailingPrepare();
  stale.mutable_task()->set_task_id("stale-1");
  stale.mutable_task()->set_epoch(4);
  v1::ServerMessage current = FailingPrepare();
  current.mutable_task()->set_epoch(5);
  StandInOrchestrator stand_in(welcome, {stale, current});
  bool answered = false;
  std::string log = RunAgentAgainst(
      stand_in, [&] { return stand_in.WaitResult(); }, &answered);
  ASSERT_TRUE(answered) << log;
  EXPECT_EQ(stand_in.result_ids(), std::vector<std::string>{"prepare-1"}) << log;
  EXPECT_NE(log.find("refused a task of leader epoch 4"), std::string::npos) << log;
  EXPECT_EQ(log.find("task stale-1"), std::string::npos) << log;
}

// Every binary says which build it is, and agents tell lockstepd theirs.
TEST(AgentProtocolTest, EveryBinaryReportsItsVersionAndCommit) {
  for (const std::string name : {"lockstepd", "lockstep-agent", "lockstep"}) {
    CommandResult r = RunCommand({BinPath(name), "--version"});
    EXPECT_EQ(r.exit_code, 0) << name << ": " << r.err;
    EXPECT_EQ(r.out.rfind(name + " 0.", 0), 0u) << r.out;
    EXPECT_NE(r.out.find("(commit "), std::string::npos) << r.out;
  }
  // In the CLI, --version after a command is still a release's version.
  CommandResult usage = RunCommand({BinPath("lockstep"), "rollback", "p", "--version", "v1"});
  EXPECT_EQ(usage.exit_code, 2) << usage.err;
}

// A level no logger knows is a usage error, not a silent "info".
TEST(AgentProtocolTest, AnUnknownLogLevelIsAUsageError) {
  CommandResult d = RunCommand({BinPath("lockstepd"), "--log-level", "loud"});
  EXPECT_EQ(d.exit_code, 2) << d.err;
  EXPECT_NE(d.err.find("--log-level must be debug, info, warn or error, not \"loud\""),
            std::string::npos)
      << d.err;
  CommandResult a =
      RunCommand({BinPath("lockstep-agent"), "--log-level", "Info", "--region", "us-east-1",
                  "--name", "h1", "--root", "/nonexistent", "--server", "127.0.0.1:1"});
  EXPECT_EQ(a.exit_code, 2) << a.err;
  EXPECT_NE(a.err.find("--log-level must be"), std::string::npos) << a.err;
}

// The high-availability flags: a lease ttl out of range, or a store spec naming no file, is a
// usage error that names the flag, and nothing is started or written.
TEST(AgentProtocolTest, BadLeaseTtlOrStoreIsAUsageError) {
  char tmpl[] = "/tmp/lockstep-flags-XXXXXX";
  const std::string dir = mkdtemp(tmpl);
  fs::create_directories(dir + "/pipelines");
  std::ofstream(dir + "/pipelines/monolith.yaml") << "pipeline: monolith\n"
                                                     "regions: [us-east-1]\n"
                                                     "waves:\n"
                                                     "  - name: all\n"
                                                     "    select: {per_region: \"100%\"}\n";
  const std::vector<std::string> base = {BinPath("lockstepd"), "--pipelines",   dir + "/pipelines",
                                         "--data-dir",         dir + "/data",   "--grpc-listen",
                                         "127.0.0.1:0",        "--http-listen", "127.0.0.1:0"};
  for (const char* ttl : {"5ms", "1h", "soon"}) {
    std::vector<std::string> argv = base;
    argv.insert(argv.end(), {"--lease-ttl", ttl});
    CommandResult r = RunCommand(argv, seconds(20));
    EXPECT_EQ(r.exit_code, 2) << ttl << ": " << r.err;
    EXPECT_NE(r.err.find("--lease-ttl"), std::string::npos) << r.err;
  }
  std::vector<std::string> argv = base;
  argv.insert(argv.end(), {"--store", "sqlite:"});
  CommandResult r = RunCommand(argv, seconds(20));
  EXPECT_EQ(r.exit_code, 2) << r.err;
  EXPECT_NE(r.err.find("--store sqlite:PATH: PATH is empty"), std::string::npos) << r.err;
  std::error_code ec;
  EXPECT_FALSE(fs::exists(dir + "/data/lockstep.db")) << "a refused start wrote a store";
  fs::remove_all(dir, ec);
}

// A token with a control character in it is refused before anything is sent (gRPC would
// abort on it); one that only ends in CR/LF is taken without them.
TEST(AgentProtocolTest, ATokenWithAControlCharacterIsAUsageErrorNotACrash) {
  CommandResult r = RunCommand({BinPath("lockstep"), "--server", "127.0.0.1:1", "--token",
                                "ab\x01"
                                "cd",
                                "status"});
  EXPECT_EQ(r.exit_code, 2) << r.err;
  EXPECT_NE(r.err.find("cannot be in a token"), std::string::npos) << r.err;
}

// lockstepd --check finds what start-up would refuse, without starting: for ExecStartPre= and
// CI, so a bad file never crash-loops a service.
TEST(AgentProtocolTest, LockstepdCheckValidatesWithoutStartingAndNamesFileAndLine) {
  const std::string dir = ::testing::TempDir() + "/lockstepd-check";
  std::filesystem::remove_all(dir);
  std::filesystem::create_directories(dir + "/good");
  std::filesystem::create_directories(dir + "/bad");
  std::filesystem::create_directories(dir + "/secret");
  const std::string pipeline =
      "pipeline: monolith\nregions: [us-east-1]\nwaves:\n"
      "  - name: all\n    select: {per_region: \"100%\"}\n";
  std::ofstream(dir + "/good/monolith.yaml") << pipeline;
  std::ofstream(dir + "/bad/monolith.yaml") << pipeline << "    bake: 5 minutes\n";
  std::ofstream(dir + "/secret/monolith.yaml")
      << pipeline << "trigger:\n  github:\n    repository: org/app\n"
      << "    artifact: https://ci.example/{sha}.tar.gz\n    secret_file: " << dir
      << "/nonexistent-secret\n";
  CommandResult good = RunCommand(
      {BinPath("lockstepd"), "--pipelines", dir + "/good", "--data-dir", dir + "/data", "--check"});
  EXPECT_EQ(good.exit_code, 0) << good.err;
  EXPECT_NE(good.out.find("ok: 1 pipeline(s) (monolith)"), std::string::npos) << good.out;
  EXPECT_FALSE(std::filesystem::exists(dir + "/data"));  // nothing started, nothing written
  CommandResult bad = RunCommand({BinPath("lockstepd"), "--pipelines", dir + "/bad", "--check"});
  EXPECT_EQ(bad.exit_code, 2);
  EXPECT_NE(bad.err.find("monolith.yaml:6"), std::string::npos) << bad.err;
  CommandResult secret =
      RunCommand({BinPath("lockstepd"), "--pipelines", dir + "/secret", "--check"});
  EXPECT_EQ(secret.exit_code, 2);
  EXPECT_NE(secret.err.find("nonexistent-secret"), std::string::npos) << secret.err;
}

// Each command explains itself, with its own flags and examples.
TEST(AgentProtocolTest, EveryCommandHasItsOwnHelpWithExamples) {
  for (const std::vector<std::string>& command :
       std::vector<std::vector<std::string>>{{"release", "create"},
                                             {"release", "list"},
                                             {"release", "show"},
                                             {"release", "watch"},
                                             {"status"},
                                             {"agents"},
                                             {"approve"},
                                             {"abort"},
                                             {"pause"},
                                             {"resume"},
                                             {"freeze"},
                                             {"unfreeze"},
                                             {"rollback"},
                                             {"audit"},
                                             {"tokens"},
                                             {"completion"}}) {
    std::vector<std::string> argv = {BinPath("lockstep")};
    argv.insert(argv.end(), command.begin(), command.end());
    argv.push_back("--help");
    CommandResult r = RunCommand(argv);
    const std::string name = command.size() > 1 ? command[0] + " " + command[1] : command[0];
    EXPECT_EQ(r.exit_code, 0) << name << ": " << r.err;
    EXPECT_EQ(r.out.rfind("usage: lockstep " + name, 0), 0u) << r.out;
    EXPECT_NE(r.out.find("examples:\n  "), std::string::npos) << r.out;
  }
  CommandResult rollback = RunCommand({BinPath("lockstep"), "rollback", "--help"});
  EXPECT_NE(rollback.out.find("--accept-offline"), std::string::npos) << rollback.out;
  EXPECT_EQ(rollback.out.find("--version"), std::string::npos) << rollback.out;
  CommandResult unknown = RunCommand({BinPath("lockstep"), "deploy", "--help"});
  EXPECT_EQ(unknown.exit_code, 2) << unknown.out;
  EXPECT_NE(unknown.err.find("unknown command \"deploy\""), std::string::npos) << unknown.err;
}

// Bash completion offers the commands, release's subcommands, and each command's own flags.
TEST(AgentProtocolTest, BashCompletionOffersEachCommandItsOwnFlags) {
  const std::string script = ::testing::TempDir() + "/lockstep-completion.bash";
  CommandResult gen =
      RunCommand({"/bin/sh", "-c", BinPath("lockstep") + " completion bash > " + script});
  ASSERT_EQ(gen.exit_code, 0) << gen.err;
  auto complete = [&](const std::string& words, int cword) {
    CommandResult r = RunCommand({"/bin/bash", "-c",
                                  "source " + script + "; COMP_WORDS=(" + words +
                                      "); COMP_CWORD=" + std::to_string(cword) +
                                      "; _lockstep; echo \"${COMPREPLY[*]}\""});
    EXPECT_EQ(r.exit_code, 0) << r.err;
    return r.out;
  };
  EXPECT_EQ(complete("lockstep ro", 1), "rollback\n");
  EXPECT_EQ(complete("lockstep release li", 2), "list\n");
  EXPECT_EQ(complete("lockstep --server 10.0.0.5:7400 release li", 4), "list\n");
  std::string rollback = complete("lockstep rollback monolith --", 3);
  EXPECT_NE(rollback.find("--to"), std::string::npos) << rollback;
  EXPECT_NE(rollback.find("--accept-offline"), std::string::npos) << rollback;
  EXPECT_EQ(rollback.find("--version"), std::string::npos) << rollback;
  std::string list = complete("lockstep release list --st", 3);
  EXPECT_EQ(list, "--state\n");
}

}  // namespace
}  // namespace lockstep::testing
