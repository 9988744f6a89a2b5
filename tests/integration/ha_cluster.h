// HaCluster: several lockstepd sharing one PostgreSQL store (one leads, the others stand by),
// real agents that know every lockstepd, and the real CLI pointed at all of them, on loopback.
//
// It builds on Fleet (tests/integration/fleet.h) for what does not depend on how many
// lockstepd there are: the temporary directory, the pipelines directory, the sample app served
// over real HTTP, the hooks' event log, the agents' roots and `current` links, and the log dump
// of a failed test (every log is written under fleet().dir()/logs). The lockstepd processes,
// the agents and the CLI are its own: Fleet's are bound to a single lockstepd.
//
// Each lockstepd has a slot (0, 1, ...). A slot keeps its gRPC and HTTP ports across restarts,
// so the agents' --server list and the CLI's stay valid when a "supervisor" (the test) starts
// a lockstepd again. Every start of a slot is a new generation, with its own log file and its
// own PostgreSQL application_name ("lockstepd-s<slot>-g<generation>"), which the write audit
// (InstallWriteAudit) records for every statement that changes the store.
//
// Every process is started by the test and stopped by its PID when the cluster is destroyed:
// each gets SIGCONT first (a test may have frozen it), then SIGTERM, then SIGKILL after
// Process::kStopGrace. Not thread-safe: one test thread drives it.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "common/status.h"
#include "tests/integration/fleet.h"
#include "tests/support/process.h"

namespace lockstep::testing {

struct HaOptions {
  size_t lockstepd = 3;
  // libpq conninfo of the shared database (PostgresServer::CreateDatabase). Required.
  std::string conninfo;
  std::string lease_ttl = "1s";
  std::string log_level = "info";
};

// What GET /healthz answered.
struct Health {
  int status = 0;  // the HTTP status; 0 if nothing answered
  std::string role;
  int64_t epoch = 0;
  std::string leader;  // the leader's HTTP URL, as this lockstepd knows it
};

// The write audit: for every lockstepd start (its application_name), the leader-lease epoch in
// force when each of its statements that changed the store committed -> how many statements.
using WriteAudit = std::map<std::string, std::map<int64_t, int64_t>>;

// Rows of a query, every value as text ("" for NULL).
using SqlRows = std::vector<std::vector<std::string>>;
// Runs `sql` (one or several statements) on its own libpq connection.
StatusOr<SqlRows> SqlQuery(const std::string& conninfo, const std::string& sql);

// "us-east-1-2" -> "us-east-1".
std::string RegionOf(const std::string& host);

class HaCluster {
 public:
  explicit HaCluster(HaOptions opts);
  ~HaCluster();
  HaCluster(const HaCluster&) = delete;
  HaCluster& operator=(const HaCluster&) = delete;

  Fleet& fleet() { return fleet_; }
  const HaOptions& options() const { return options_; }
  size_t size() const { return slots_.size(); }

  // ---- lockstepd

  // Starts slot 0 and waits until it listens (it leads: it claimed the lease first), then the
  // others; then reads the admin token the leader wrote to the shared --bootstrap-token-file.
  void StartAllLockstepd();
  // (Re)starts one slot, a new generation, on the slot's ports; waits for its port file.
  void StartLockstepd(size_t slot);
  bool Running(size_t slot);
  // Waits up to `timeout` for the slot's process to exit: its status, or -1 if still running.
  int WaitExit(size_t slot, std::chrono::milliseconds timeout);
  void Kill(size_t slot);    // kill -9 and reap
  void Freeze(size_t slot);  // SIGSTOP; a frozen slot is left out of ServerList and health checks
  void Thaw(size_t slot);    // SIGCONT
  int Stop(size_t slot);     // SIGTERM (SIGCONT first); the exit status
  pid_t pid(size_t slot) const;
  bool frozen(size_t slot) const { return slots_.at(slot).frozen; }
  std::string grpc_address(size_t slot) const;
  std::string http_url(size_t slot) const;
  int http_port(size_t slot) const { return slots_.at(slot).http_port; }
  // The current generation's application_name and log.
  std::string AppName(size_t slot) const;
  std::string LockstepdLog(size_t slot) const;

  // GET /healthz of a slot (nothing is asked of a frozen one).
  Health HealthOf(size_t slot, std::chrono::milliseconds timeout = std::chrono::seconds(2));
  // Waits until a running, unfrozen lockstepd says it leads at an epoch above `above`; its slot
  // (which the CLI then asks first), or -1 after `timeout`.
  int WaitForLeader(int64_t above, std::chrono::milliseconds timeout = std::chrono::seconds(20));
  // The last leader WaitForLeader found, -1 if none yet.
  int known_leader() const { return leader_; }

  // "A,B,C": every unfrozen slot's gRPC address, the known leader first.
  std::string ServerList() const;
  // Every slot's gRPC address in slot order (what agents are given).
  std::string AllServers() const;

  // ---- agents

  // Starts an agent with --server AllServers() and its region's enrollment token (made with
  // the CLI on first use). Its hooks log to fleet().event_log().
  void StartAgent(const std::string& name, const std::string& region);
  // Waits (30 s) until `lockstep agents` lists `n` connected agents.
  void WaitForAgents(size_t n);
  std::vector<std::string> agent_names() const;
  std::string AgentLog(const std::string& name) const;

  // ---- CLI

  const std::string& admin_token() const { return admin_token_; }
  // `lockstep --server ServerList() --token ADMIN args...`; a later --server or --token in
  // `args` wins.
  CommandResult Cli(std::vector<std::string> args,
                    std::chrono::milliseconds timeout = std::chrono::seconds(60));
  // With --output json; fails the test on a non-zero exit or output that is not JSON.
  nlohmann::json CliJson(std::vector<std::string> args);
  // The same without failing the test (for polling across a failover).
  std::optional<nlohmann::json> TryCliJson(
      std::vector<std::string> args, std::chrono::milliseconds timeout = std::chrono::seconds(30));

  // ---- the store

  // Adds, to every table of the store but the lease and the schema version, a statement-level
  // trigger that records, inside the writing transaction, the writer's application_name and
  // the lease epoch in force. A fenced writer holds the lease row FOR SHARE until it commits,
  // so the epoch recorded is the epoch at commit. Call once the lockstepd have migrated.
  void InstallWriteAudit();
  WriteAudit Writes();
  // pg_stat_activity of the database (who is connected, in what state, waiting on what).
  std::string Activity();

 private:
  struct Slot {
    std::unique_ptr<Process> process;
    int grpc_port = 0;
    int http_port = 0;
    int generation = 0;
    bool frozen = false;
    std::string log_path;
  };

  std::string PortFile(size_t slot) const;
  std::string AgentLogPath(const std::string& name) const;

  Fleet fleet_;  // first: destroyed last (it dumps the logs of a failed test)
  const HaOptions options_;
  std::vector<Slot> slots_;
  std::map<std::string, std::unique_ptr<Process>> agents_;
  std::map<std::string, std::string> enrollment_tokens_;  // by region
  std::string admin_token_;
  int leader_ = -1;
};

}  // namespace lockstep::testing
