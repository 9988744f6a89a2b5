// Fleet: a whole Lockstep installation on loopback for integration tests. It starts the real
// lockstepd and lockstep-agent binaries as processes (ephemeral ports, a temporary
// directory), serves artifacts from a real HTTP server, and runs the real CLI. Every process
// it starts is stopped by PID when the Fleet is destroyed; logs are printed if the test
// failed.
#pragma once

#include <chrono>
#include <functional>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "tests/support/http_server.h"
#include "tests/support/process.h"
#include "tests/support/tarball.h"

namespace lockstep::testing {

struct Artifact {
  std::string version;
  std::string url;
  std::string sha256;
};

// What the sample app's hooks do. Every hook appends "<hook> <agent> <version> <ns>" to the
// file named by $EVENT_LOG, which the fleet sets for all its agents.
struct AppBehaviour {
  int check_exit = 0;               // deploy/check's exit status
  std::string check_fail_on_agent;  // if set, only this agent's check fails
  std::string start_sleep = "0";    // seconds deploy/start sleeps (for slow rollouts)
  std::string stop_sleep = "0";     // seconds deploy/stop sleeps (e.g. to stretch a revert)
  // Shell run first in each hook (after it logs its event), e.g. to park a hook so that a test
  // can land a fault in it.
  std::string stop_prologue, start_prologue, check_prologue;
  // More files shipped in the artifact (e.g. bulk, to make unpacking take time).
  std::vector<TarEntry> extra_entries;
};

class Fleet {
 public:
  Fleet();
  ~Fleet();

  const std::string& dir() const { return dir_; }
  std::string pipelines_dir() const { return dir_ + "/pipelines"; }
  std::string event_log() const { return dir_ + "/events.log"; }
  // The server ServeApp and ServeEntries publish artifacts on (the origin): its port, and how
  // many requests each artifact path received (Hits).
  TestHttpServer& artifact_server() { return *http_; }

  void WritePipeline(const std::string& file, const std::string& yaml);
  // Builds the sample app at `version` and serves it; returns its URL and digest.
  Artifact ServeApp(const std::string& version, const AppBehaviour& behaviour = {});
  // The sample app's tar entries at `version` (what ServeApp serves).
  static std::vector<TarEntry> AppEntries(const std::string& version,
                                          const AppBehaviour& behaviour = {});
  // Serves arbitrary tar entries (e.g. a hostile archive) as `version`.
  Artifact ServeEntries(const std::string& version, const std::vector<TarEntry>& entries);

  // Starts lockstepd and waits until it listens. `extra` flags are appended.
  void StartOrchestrator(const std::vector<std::string>& extra = {});
  void StopOrchestrator();
  void KillOrchestrator();
  int grpc_port() const { return grpc_port_; }
  int http_port() const { return http_port_; }
  std::string http_url(const std::string& path = "") const {
    return "http://127.0.0.1:" + std::to_string(http_port_) + path;
  }
  // The admin token lockstepd wrote on first start.
  const std::string& admin_token() const { return admin_token_; }
  // Creates an API token with `role` through the CLI and returns it.
  std::string CreateToken(const std::string& role, const std::string& name);
  std::string server() const { return "127.0.0.1:" + std::to_string(grpc_port_); }

  // Starts an agent with its region's enrollment token (created on first use), or with
  // `token` if given.
  void StartAgent(const std::string& name, const std::string& region,
                  const std::string& token = "");
  void KillAgent(const std::string& name);
  // Sends `sig` to the agent's process (e.g. SIGSTOP to partition it). Every process of the
  // fleet gets SIGCONT before it is stopped, so a test cannot leave one frozen.
  void SignalAgent(const std::string& name, int sig);
  pid_t orchestrator_pid() const { return orchestrator_ ? orchestrator_->pid() : -1; }
  std::string AgentRoot(const std::string& name) const { return dir_ + "/agents/" + name; }
  // The version ROOT/current points at, "" if none.
  std::string CurrentOf(const std::string& agent) const;

  // Runs the CLI as the admin, unless `args` carries its own --token.
  CommandResult Cli(std::vector<std::string> args,
                    std::chrono::milliseconds timeout = std::chrono::seconds(120));
  // Runs the CLI with --output json and parses stdout; fails the test on a non-zero exit.
  nlohmann::json CliJson(std::vector<std::string> args);

  // Polls `pred` every 50 ms until true or `timeout`; returns the last value.
  static bool WaitFor(const std::function<bool()>& pred, std::chrono::milliseconds timeout);
  // Waits until `n` agents are connected according to `lockstep agents`.
  void WaitForAgents(size_t n);

  // Every event line from the hooks, parsed: {hook, agent, version, ns}.
  struct Event {
    std::string hook, agent, version;
    int64_t ns = 0;
  };
  std::vector<Event> Events() const;

  void DumpLogs() const;

 private:
  std::string dir_;
  std::unique_ptr<TestHttpServer> http_;
  std::unique_ptr<Process> orchestrator_;
  std::map<std::string, std::unique_ptr<Process>> agents_;
  int grpc_port_ = 0;

 public:
  // Extra flags for every agent and CLI started from now on (e.g. TLS files).
  std::vector<std::string> agent_flags;
  std::vector<std::string> cli_flags;
  // Extra environment for every agent started from now on (and so for its hooks).
  std::map<std::string, std::string> agent_env;

 private:
  int http_port_ = 0;
  std::string admin_token_;
  std::map<std::string, std::string> enrollment_tokens_;  // by region
};

std::string BinPath(const std::string& name);

}  // namespace lockstep::testing
