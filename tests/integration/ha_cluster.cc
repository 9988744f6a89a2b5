#include "tests/integration/ha_cluster.h"

#include <gtest/gtest.h>
#include <httplib.h>
#include <libpq-fe.h>
#include <signal.h>

#include <algorithm>
#include <filesystem>
#include <iostream>
#include <sstream>

namespace lockstep::testing {

namespace fs = std::filesystem;
using nlohmann::json;
using std::chrono::milliseconds;
using std::chrono::seconds;

namespace {

std::string TrimEnd(std::string s) {
  while (!s.empty() && (s.back() == '\n' || s.back() == '\r' || s.back() == ' ')) s.pop_back();
  return s;
}

std::string Joined(const std::vector<std::string>& words) {
  std::string out;
  for (const auto& w : words) out += (out.empty() ? "" : " ") + w;
  return out;
}

// The trigger function and a trigger on every table of the store but the lease (whose claims
// are not fenced, by design) and the schema version. Statement-level: one row per statement.
constexpr char kWriteAuditSql[] = R"sql(
CREATE TABLE IF NOT EXISTS ha_writes (
  id BIGSERIAL PRIMARY KEY,
  app TEXT NOT NULL,
  epoch BIGINT,
  tbl TEXT NOT NULL,
  op TEXT NOT NULL,
  at TIMESTAMPTZ NOT NULL DEFAULT clock_timestamp()
);
CREATE OR REPLACE FUNCTION ha_record_write() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  INSERT INTO ha_writes (app, epoch, tbl, op)
  VALUES (current_setting('application_name'),
          (SELECT epoch FROM leader_lease WHERE id = 1), TG_TABLE_NAME, TG_OP);
  RETURN NULL;
END
$$;
DO $$
DECLARE t text;
BEGIN
  FOR t IN SELECT table_name FROM information_schema.tables
           WHERE table_schema = 'public' AND table_type = 'BASE TABLE'
             AND table_name NOT IN ('leader_lease', 'schema_version', 'ha_writes')
  LOOP
    EXECUTE format('DROP TRIGGER IF EXISTS ha_record_write ON %I', t);
    EXECUTE format('CREATE TRIGGER ha_record_write AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE '
                   'ON %I FOR EACH STATEMENT EXECUTE FUNCTION ha_record_write()', t);
  END LOOP;
END
$$;
)sql";

}  // namespace

StatusOr<SqlRows> SqlQuery(const std::string& conninfo, const std::string& sql) {
  PGconn* conn = PQconnectdb((conninfo + " connect_timeout=5").c_str());
  if (conn == nullptr) return Unavailable("libpq: out of memory");
  if (PQstatus(conn) != CONNECTION_OK) {
    std::string msg = TrimEnd(PQerrorMessage(conn));
    PQfinish(conn);
    return Unavailable("cannot connect to PostgreSQL: " + msg);
  }
  PGresult* res = PQexec(conn, sql.c_str());
  const ExecStatusType st = PQresultStatus(res);
  if (st != PGRES_TUPLES_OK && st != PGRES_COMMAND_OK) {
    std::string msg = TrimEnd(res != nullptr ? PQresultErrorMessage(res) : PQerrorMessage(conn));
    PQclear(res);
    PQfinish(conn);
    return Internal("query failed: " + msg);
  }
  SqlRows rows;
  for (int i = 0; i < PQntuples(res); ++i) {
    std::vector<std::string> row;
    for (int j = 0; j < PQnfields(res); ++j) {
      row.push_back(PQgetisnull(res, i, j) ? std::string() : std::string(PQgetvalue(res, i, j)));
    }
    rows.push_back(std::move(row));
  }
  PQclear(res);
  PQfinish(conn);
  return rows;
}

std::string RegionOf(const std::string& host) { return host.substr(0, host.rfind('-')); }

HaCluster::HaCluster(HaOptions opts) : options_(std::move(opts)) {
  slots_.resize(options_.lockstepd);
}

HaCluster::~HaCluster() {
  const bool failed = ::testing::Test::HasFailure();
  if (failed) {
    std::cerr << "==== ha cluster at the end of the failed test ====\n";
    for (size_t i = 0; i < slots_.size(); ++i) {
      Health h = HealthOf(i, milliseconds(500));
      std::cerr << "lockstepd " << i << " (generation " << slots_[i].generation << ", pid "
                << pid(i) << (slots_[i].frozen ? ", frozen" : "") << "): /healthz " << h.status
                << " role=" << h.role << " epoch=" << h.epoch << " leader=" << h.leader << "\n";
    }
    if (!options_.conninfo.empty()) {
      auto writes = SqlQuery(options_.conninfo,
                             "SELECT app, COALESCE(epoch, -1), count(*), min(at), max(at) "
                             "FROM ha_writes GROUP BY 1, 2 ORDER BY 4");
      if (writes.ok()) {
        std::cerr << "write audit (application, lease epoch, statements, first, last):\n";
        for (const auto& row : *writes) std::cerr << "  " << Joined(row) << "\n";
      }
      std::cerr << "pg_stat_activity:\n" << Activity();
    }
  }
  // Nothing may stay frozen, and everything stops at once rather than one grace at a time.
  for (auto& [name, agent] : agents_) {
    agent->Signal(SIGCONT);
    agent->Signal(SIGTERM);
  }
  for (auto& s : slots_) {
    if (!s.process) continue;
    s.process->Signal(SIGCONT);
    s.process->Signal(SIGTERM);
  }
  agents_.clear();  // each: SIGTERM again, then SIGKILL after the grace period
  for (auto& s : slots_) s.process.reset();
}

std::string HaCluster::PortFile(size_t slot) const {
  return fleet_.dir() + "/ports-" + std::to_string(slot) + ".json";
}

std::string HaCluster::AgentLogPath(const std::string& name) const {
  return fleet_.dir() + "/logs/agent-" + name + ".log";
}

std::string HaCluster::AppName(size_t slot) const {
  return "lockstepd-s" + std::to_string(slot) + "-g" + std::to_string(slots_.at(slot).generation);
}

void HaCluster::StartAllLockstepd() {
  for (size_t i = 0; i < slots_.size(); ++i) {
    ASSERT_NO_FATAL_FAILURE(StartLockstepd(i));
  }
  const std::string token_file = fleet_.dir() + "/admin-token";
  bool written =
      Fleet::WaitFor([&] { return !TrimEnd(ReadFile(token_file)).empty(); }, seconds(10));
  ASSERT_TRUE(written) << "no lockstepd wrote the admin token to " << token_file;
  admin_token_ = TrimEnd(ReadFile(token_file));
  ASSERT_GE(WaitForLeader(0, seconds(10)), 0) << "no lockstepd leads";
}

void HaCluster::StartLockstepd(size_t slot) {
  Slot& s = slots_.at(slot);
  ASSERT_TRUE(s.process == nullptr || !s.process->Running())
      << "lockstepd " << slot << " is still running";
  ++s.generation;
  s.frozen = false;
  const std::string port_file = PortFile(slot);
  std::error_code ec;
  fs::remove(port_file, ec);
  std::vector<std::string> argv = {BinPath("lockstepd"),
                                   "--store",
                                   options_.conninfo + " application_name=" + AppName(slot),
                                   "--lease-ttl",
                                   options_.lease_ttl,
                                   "--data-dir",
                                   fleet_.dir() + "/data-" + std::to_string(slot),
                                   "--pipelines",
                                   fleet_.pipelines_dir(),
                                   "--grpc-listen",
                                   "127.0.0.1:" + std::to_string(s.grpc_port),
                                   "--http-listen",
                                   "127.0.0.1:" + std::to_string(s.http_port),
                                   "--port-file",
                                   port_file,
                                   "--bootstrap-token-file",
                                   fleet_.dir() + "/admin-token",
                                   "--log-level",
                                   options_.log_level};
  s.log_path = fleet_.dir() + "/logs/lockstepd-" + std::to_string(slot) + "." +
               std::to_string(s.generation) + ".log";
  auto p = Process::Start(argv, s.log_path);
  ASSERT_TRUE(p.ok()) << p.status().ToString();
  s.process = std::move(*p);
  bool up =
      Fleet::WaitFor([&] { return fs::exists(port_file) || !s.process->Running(); }, seconds(30));
  ASSERT_TRUE(up && fs::exists(port_file)) << "lockstepd " << slot << " did not start:\n"
                                           << ReadFile(s.log_path);
  json ports = json::parse(ReadFile(port_file), nullptr, /*allow_exceptions=*/false);
  ASSERT_TRUE(ports.is_object()) << "unreadable port file " << port_file;
  s.grpc_port = ports.value("grpc", 0);
  s.http_port = ports.value("http", 0);
  ASSERT_GT(s.grpc_port, 0);
  ASSERT_GT(s.http_port, 0);
}

bool HaCluster::Running(size_t slot) {
  Slot& s = slots_.at(slot);
  return s.process != nullptr && s.process->Running();
}

int HaCluster::WaitExit(size_t slot, milliseconds timeout) {
  Slot& s = slots_.at(slot);
  if (!s.process) return -1;
  return s.process->Wait(timeout);
}

void HaCluster::Kill(size_t slot) {
  Slot& s = slots_.at(slot);
  if (s.process) s.process->Kill();
  s.frozen = false;
}

void HaCluster::Freeze(size_t slot) {
  Slot& s = slots_.at(slot);
  if (!s.process) return;
  s.process->Signal(SIGSTOP);
  s.frozen = true;
}

void HaCluster::Thaw(size_t slot) {
  Slot& s = slots_.at(slot);
  if (!s.process) return;
  s.process->Signal(SIGCONT);
  s.frozen = false;
}

int HaCluster::Stop(size_t slot) {
  Slot& s = slots_.at(slot);
  if (!s.process) return -1;
  s.process->Signal(SIGCONT);
  s.frozen = false;
  return s.process->Stop();
}

pid_t HaCluster::pid(size_t slot) const {
  const Slot& s = slots_.at(slot);
  return s.process ? s.process->pid() : -1;
}

std::string HaCluster::grpc_address(size_t slot) const {
  return "127.0.0.1:" + std::to_string(slots_.at(slot).grpc_port);
}

std::string HaCluster::http_url(size_t slot) const {
  return "http://127.0.0.1:" + std::to_string(slots_.at(slot).http_port);
}

std::string HaCluster::LockstepdLog(size_t slot) const {
  return ReadFile(slots_.at(slot).log_path);
}

Health HaCluster::HealthOf(size_t slot, milliseconds timeout) {
  Health h;
  const Slot& s = slots_.at(slot);
  if (s.http_port == 0 || s.frozen) return h;
  httplib::Client cli("127.0.0.1", s.http_port);
  cli.set_connection_timeout(timeout);
  cli.set_read_timeout(timeout);
  cli.set_write_timeout(timeout);
  httplib::Result r = cli.Get("/healthz");
  if (!r) return h;
  h.status = r->status;
  json body = json::parse(r->body, nullptr, /*allow_exceptions=*/false);
  if (body.is_object()) {
    h.role = body.value("role", "");
    h.epoch = body.value("epoch", int64_t{0});
    h.leader = body.value("leader", "");
  }
  return h;
}

int HaCluster::WaitForLeader(int64_t above, milliseconds timeout) {
  int found = -1;
  Fleet::WaitFor(
      [&] {
        for (size_t i = 0; i < slots_.size(); ++i) {
          if (slots_[i].frozen || !Running(i)) continue;
          Health h = HealthOf(i, milliseconds(1000));
          if (h.status == 200 && h.role == "leader" && h.epoch > above) {
            found = static_cast<int>(i);
            return true;
          }
        }
        return false;
      },
      timeout);
  if (found >= 0) leader_ = found;
  return found;
}

std::string HaCluster::ServerList() const {
  std::vector<std::string> list;
  if (leader_ >= 0 && !slots_[static_cast<size_t>(leader_)].frozen) {
    list.push_back(grpc_address(static_cast<size_t>(leader_)));
  }
  for (size_t i = 0; i < slots_.size(); ++i) {
    if (static_cast<int>(i) == leader_ || slots_[i].frozen || slots_[i].grpc_port == 0) continue;
    list.push_back(grpc_address(i));
  }
  std::string out;
  for (const auto& a : list) out += (out.empty() ? "" : ",") + a;
  return out;
}

std::string HaCluster::AllServers() const {
  std::string out;
  for (size_t i = 0; i < slots_.size(); ++i) out += (i == 0 ? "" : ",") + grpc_address(i);
  return out;
}

void HaCluster::StartAgent(const std::string& name, const std::string& region) {
  fs::create_directories(fleet_.AgentRoot(name));
  std::string& token = enrollment_tokens_[region];
  if (token.empty()) {
    CommandResult r = Cli({"--output", "json", "tokens", "create", "--role", "agent", "--region",
                           region, "--name", "enroll-" + region});
    ASSERT_EQ(r.exit_code, 0) << r.err;
    json created = json::parse(r.out, nullptr, /*allow_exceptions=*/false);
    ASSERT_TRUE(created.is_object() && created.contains("token")) << r.out;
    token = created["token"].get<std::string>();
  }
  std::vector<std::string> argv = {
      BinPath("lockstep-agent"), "--server", AllServers(), "--region", region, "--name", name,
      "--root", fleet_.AgentRoot(name), "--token", token,
      // Hooks see a curated environment; the test hooks' own
      // variables are allow-listed.
      "--hook-env", "EVENT_LOG,FAULT_DIR,FAULT_AGENT", "--log-level", "info"};
  std::map<std::string, std::string> env = fleet_.agent_env;
  env["EVENT_LOG"] = fleet_.event_log();
  auto p = Process::Start(argv, AgentLogPath(name), env);
  ASSERT_TRUE(p.ok()) << p.status().ToString();
  agents_[name] = std::move(*p);
}

void HaCluster::WaitForAgents(size_t n) {
  size_t connected = 0;
  bool ok = Fleet::WaitFor(
      [&] {
        auto agents = TryCliJson({"agents"}, seconds(10));
        if (!agents || !agents->is_array()) return false;
        connected = 0;
        for (const auto& a : *agents) connected += a.value("connected", false) ? 1 : 0;
        return connected >= n;
      },
      seconds(30));
  ASSERT_TRUE(ok) << "only " << connected << " of " << n << " agents connected";
}

std::vector<std::string> HaCluster::agent_names() const {
  std::vector<std::string> out;
  for (const auto& [name, p] : agents_) out.push_back(name);
  return out;
}

std::string HaCluster::AgentLog(const std::string& name) const {
  return ReadFile(AgentLogPath(name));
}

CommandResult HaCluster::Cli(std::vector<std::string> args, milliseconds timeout) {
  std::vector<std::string> argv = {BinPath("lockstep"), "--server", ServerList()};
  if (!admin_token_.empty()) {
    argv.push_back("--token");
    argv.push_back(admin_token_);
  }
  argv.insert(argv.end(), args.begin(), args.end());
  return RunCommand(argv, timeout);
}

json HaCluster::CliJson(std::vector<std::string> args) {
  args.insert(args.begin(), {"--output", "json"});
  CommandResult r = Cli(args);
  EXPECT_EQ(r.exit_code, 0) << "lockstep " << Joined(args) << ": " << r.err;
  json out = json::parse(r.out, nullptr, /*allow_exceptions=*/false);
  if (out.is_discarded()) {
    ADD_FAILURE() << "lockstep " << Joined(args) << " printed no JSON:\n" << r.out << r.err;
    return json();
  }
  return out;
}

std::optional<json> HaCluster::TryCliJson(std::vector<std::string> args, milliseconds timeout) {
  args.insert(args.begin(), {"--output", "json"});
  CommandResult r = Cli(args, timeout);
  if (r.exit_code != 0) return std::nullopt;
  json out = json::parse(r.out, nullptr, /*allow_exceptions=*/false);
  if (out.is_discarded()) return std::nullopt;
  return out;
}

void HaCluster::InstallWriteAudit() {
  auto installed = SqlQuery(options_.conninfo, kWriteAuditSql);
  ASSERT_TRUE(installed.ok()) << installed.status().ToString();
  auto tables = SqlQuery(options_.conninfo,
                         "SELECT c.relname FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid "
                         "WHERE t.tgname = 'ha_record_write' ORDER BY 1");
  ASSERT_TRUE(tables.ok()) << tables.status().ToString();
  std::vector<std::string> names;
  for (const auto& row : *tables) names.push_back(row.at(0));
  for (const char* must : {"releases", "release_hosts", "release_waves", "agents", "audit"}) {
    ASSERT_NE(std::find(names.begin(), names.end(), must), names.end())
        << "no write audit on table " << must << " (audited: " << Joined(names) << ")";
  }
}

WriteAudit HaCluster::Writes() {
  WriteAudit out;
  auto rows = SqlQuery(options_.conninfo,
                       "SELECT app, COALESCE(epoch, -1), count(*) FROM ha_writes GROUP BY 1, 2");
  EXPECT_TRUE(rows.ok()) << rows.status().ToString();
  if (!rows.ok()) return out;
  for (const auto& row : *rows) {
    out[row.at(0)][std::stoll(row.at(1))] = std::stoll(row.at(2));
  }
  return out;
}

std::string HaCluster::Activity() {
  auto rows = SqlQuery(options_.conninfo,
                       "SELECT pid, application_name, state, "
                       "COALESCE(wait_event_type, '') || ':' || COALESCE(wait_event, ''), "
                       "COALESCE(now() - xact_start, interval '0'), left(query, 160) "
                       "FROM pg_stat_activity WHERE datname = current_database() ORDER BY 2");
  if (!rows.ok()) return "  (" + rows.status().ToString() + ")\n";
  std::string out;
  for (const auto& row : *rows) out += "  " + Joined(row) + "\n";
  return out;
}

}  // namespace lockstep::testing
