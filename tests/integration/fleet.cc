#include "tests/integration/fleet.h"

#include <gtest/gtest.h>
#include <signal.h>
#include <stdlib.h>
#include <unistd.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <sstream>
#include <thread>

#include "common/sha256.h"

namespace lockstep::testing {

namespace fs = std::filesystem;

std::string BinPath(const std::string& name) { return std::string(LOCKSTEP_BIN_DIR) + "/" + name; }

Fleet::Fleet() {
  char tmpl[] = "/tmp/lockstep-fleet-XXXXXX";
  dir_ = mkdtemp(tmpl);
  fs::create_directories(pipelines_dir());
  fs::create_directories(dir_ + "/agents");
  fs::create_directories(dir_ + "/logs");
  http_ = std::make_unique<TestHttpServer>();
}

Fleet::~Fleet() {
  bool failed = ::testing::Test::HasFailure();
  // A process a test froze (SIGSTOP) must not outlive it, nor hold up its stop.
  for (auto& [name, agent] : agents_) agent->Signal(SIGCONT);
  if (orchestrator_) orchestrator_->Signal(SIGCONT);
  agents_.clear();  // SIGTERM each, SIGKILL after the grace period
  orchestrator_.reset();
  if (failed) {
    DumpLogs();
    std::cerr << "fleet directory kept for inspection: " << dir_ << "\n";
  } else {
    std::error_code ec;
    fs::remove_all(dir_, ec);
  }
}

void Fleet::WritePipeline(const std::string& file, const std::string& yaml) {
  std::ofstream(pipelines_dir() + "/" + file) << yaml;
}

Artifact Fleet::ServeEntries(const std::string& version, const std::vector<TarEntry>& entries) {
  auto bytes = TarGzBytes(entries);
  EXPECT_TRUE(bytes.ok()) << bytes.status().ToString();
  std::string path = "/artifacts/app-" + version + ".tar.gz";
  Artifact a{version, http_->Url(path), Sha256Hex(*bytes)};
  http_->Serve(path, std::move(*bytes));
  return a;
}

Artifact Fleet::ServeApp(const std::string& version, const AppBehaviour& b) {
  return ServeEntries(version, AppEntries(version, b));
}

std::vector<TarEntry> Fleet::AppEntries(const std::string& version, const AppBehaviour& b) {
  auto log = [](const char* hook) {
    return std::string("echo \"") + hook +
           " $LOCKSTEP_AGENT $LOCKSTEP_VERSION $(date +%s%N)\" >> \"$EVENT_LOG\"\n";
  };
  std::string check = log("check");
  if (!b.check_fail_on_agent.empty()) {
    check += "if [ \"$LOCKSTEP_AGENT\" = \"" + b.check_fail_on_agent +
             "\" ]; then echo 'health check failed' >&2; exit 1; fi\nexit 0\n";
  } else {
    check += "exit " + std::to_string(b.check_exit) + "\n";
  }
  std::vector<TarEntry> entries = {
      {TarEntry::Type::kDir, "deploy", "", "", 0755, -1},
      Script("deploy/start", log("start") + b.start_prologue + "sleep " + b.start_sleep + "\n"),
      Script("deploy/stop", log("stop") + b.stop_prologue + "sleep " + b.stop_sleep + "\n"),
      Script("deploy/check", log("check") + b.check_prologue + check.substr(log("check").size())),
      {TarEntry::Type::kFile, "VERSION", version + "\n", "", 0644, -1},
  };
  entries.insert(entries.end(), b.extra_entries.begin(), b.extra_entries.end());
  return entries;
}

void Fleet::StartOrchestrator(const std::vector<std::string>& extra) {
  std::string port_file = dir_ + "/ports.json";
  fs::remove(port_file);
  std::vector<std::string> argv = {
      BinPath("lockstepd"),
      "--data-dir",
      dir_ + "/data",
      "--pipelines",
      pipelines_dir(),
      "--grpc-listen",
      grpc_port_ ? "127.0.0.1:" + std::to_string(grpc_port_) : "127.0.0.1:0",
      "--http-listen",
      "127.0.0.1:0",
      "--port-file",
      port_file};
  argv.insert(argv.end(), extra.begin(), extra.end());
  auto p = Process::Start(argv, dir_ + "/logs/lockstepd.log");
  ASSERT_TRUE(p.ok()) << p.status().ToString();
  orchestrator_ = std::move(*p);
  bool up = WaitFor([&] { return fs::exists(port_file) || !orchestrator_->Running(); },
                    std::chrono::seconds(20));
  ASSERT_TRUE(up && fs::exists(port_file)) << "lockstepd did not start:\n"
                                           << ReadFile(orchestrator_->log_path());
  auto ports = nlohmann::json::parse(ReadFile(port_file));
  grpc_port_ = ports.at("grpc").get<int>();
  http_port_ = ports.at("http").get<int>();
  if (admin_token_.empty()) {
    admin_token_ = ReadFile(dir_ + "/data/admin-token");
    while (!admin_token_.empty() && admin_token_.back() == '\n') admin_token_.pop_back();
    ASSERT_FALSE(admin_token_.empty()) << "no admin token written on first start";
  }
}

std::string Fleet::CreateToken(const std::string& role, const std::string& name) {
  std::vector<std::string> args = {"--output", "json", "tokens", "create",
                                   "--role",   role,   "--name", name};
  CommandResult r = Cli(args);
  EXPECT_EQ(r.exit_code, 0) << r.err;
  try {
    return nlohmann::json::parse(r.out).at("token").get<std::string>();
  } catch (const nlohmann::json::exception& e) {
    ADD_FAILURE() << "no token in: " << r.out;
    return "";
  }
}

void Fleet::StopOrchestrator() {
  if (orchestrator_) {
    EXPECT_EQ(orchestrator_->Stop(), 0) << "lockstepd exit status on SIGTERM";
  }
}

void Fleet::KillOrchestrator() {
  if (orchestrator_) orchestrator_->Kill();
}

void Fleet::StartAgent(const std::string& name, const std::string& region,
                       const std::string& token) {
  ASSERT_NE(grpc_port_, 0) << "start the orchestrator first";
  fs::create_directories(AgentRoot(name));
  std::string enroll = token;
  if (enroll.empty()) {
    auto& cached = enrollment_tokens_[region];
    if (cached.empty()) {
      CommandResult r = Cli({"--output", "json", "tokens", "create", "--role", "agent", "--region",
                             region, "--name", "enroll-" + region});
      ASSERT_EQ(r.exit_code, 0) << r.err;
      cached = nlohmann::json::parse(r.out).at("token").get<std::string>();
    }
    enroll = cached;
  }
  std::vector<std::string> argv = {
      BinPath("lockstep-agent"), "--server", server(), "--region", region, "--name", name, "--root",
      AgentRoot(name), "--token", enroll,
      // Hooks see a curated environment; the test hooks' own variables are allow-listed.
      "--hook-env", "EVENT_LOG,FAULT_DIR,FAULT_AGENT"};
  argv.insert(argv.end(), agent_flags.begin(), agent_flags.end());
  std::map<std::string, std::string> env = agent_env;
  env["EVENT_LOG"] = event_log();
  auto p = Process::Start(argv, dir_ + "/logs/agent-" + name + ".log", env);
  ASSERT_TRUE(p.ok()) << p.status().ToString();
  agents_[name] = std::move(*p);
}

void Fleet::KillAgent(const std::string& name) {
  auto it = agents_.find(name);
  if (it != agents_.end()) it->second->Kill();
}

void Fleet::SignalAgent(const std::string& name, int sig) {
  auto it = agents_.find(name);
  if (it != agents_.end()) it->second->Signal(sig);
}

std::string Fleet::CurrentOf(const std::string& agent) const {
  std::error_code ec;
  fs::path target = fs::read_symlink(AgentRoot(agent) + "/current", ec);
  if (ec) return "";
  return target.filename().string();
}

CommandResult Fleet::Cli(std::vector<std::string> args, std::chrono::milliseconds timeout) {
  std::vector<std::string> argv = {BinPath("lockstep"), "--server", server()};
  argv.insert(argv.end(), cli_flags.begin(), cli_flags.end());
  bool has_token = std::find(args.begin(), args.end(), "--token") != args.end();
  if (!has_token && !admin_token_.empty()) {
    argv.push_back("--token");
    argv.push_back(admin_token_);
  }
  argv.insert(argv.end(), args.begin(), args.end());
  return RunCommand(argv, timeout);
}

nlohmann::json Fleet::CliJson(std::vector<std::string> args) {
  args.insert(args.begin(), {"--output", "json"});
  CommandResult r = Cli(args);
  EXPECT_EQ(r.exit_code, 0) << "lockstep failed: " << r.err;
  try {
    return nlohmann::json::parse(r.out);
  } catch (const nlohmann::json::exception& e) {
    ADD_FAILURE() << "lockstep printed no JSON: " << e.what() << "\n" << r.out << r.err;
    return nlohmann::json();
  }
}

bool Fleet::WaitFor(const std::function<bool()>& pred, std::chrono::milliseconds timeout) {
  auto deadline = std::chrono::steady_clock::now() + timeout;
  for (;;) {
    if (pred()) return true;
    if (std::chrono::steady_clock::now() >= deadline) return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
}

void Fleet::WaitForAgents(size_t n) {
  size_t connected = 0;
  bool ok = WaitFor(
      [&] {
        auto r = Cli({"--output", "json", "agents"});
        if (r.exit_code != 0) return false;
        connected = 0;
        for (const auto& a : nlohmann::json::parse(r.out)) connected += a["connected"].get<bool>();
        return connected >= n;
      },
      std::chrono::seconds(30));
  ASSERT_TRUE(ok) << "only " << connected << " of " << n << " agents connected";
}

std::vector<Fleet::Event> Fleet::Events() const {
  std::vector<Event> out;
  std::istringstream in(ReadFile(event_log()));
  std::string line;
  while (std::getline(in, line)) {
    std::istringstream fields(line);
    Event e;
    fields >> e.hook >> e.agent >> e.version >> e.ns;
    if (!e.hook.empty()) out.push_back(e);
  }
  return out;
}

void Fleet::DumpLogs() const {
  for (const auto& entry : fs::directory_iterator(dir_ + "/logs")) {
    std::cerr << "==== " << entry.path().filename().string() << " ====\n"
              << ReadFile(entry.path().string());
  }
}

}  // namespace lockstep::testing
