// lockstep-failover-bench: how long a failover takes, end to end, on real processes.
//
// One real PostgreSQL 15 (tests/support/postgres_server.h), three real lockstepd sharing it
// (one leads, two stand by) and --agents real lockstep-agent processes in three regions that
// know every lockstepd (tests/integration/ha_cluster.h), on loopback. Each round breaks the
// leader twice, once with kill -9 and once with SIGSTOP, and times, from the signal:
//
//   takeover      a standby's GET /healthz first says role "leader" at a higher lease epoch
//                 (every live lockstepd but the broken one polled every 10 ms);
//   first commit  the first row of the write audit (HaCluster::InstallWriteAudit) at the new
//                 epoch is visible (polled every 10 ms on one open connection). The audit
//                 stamps a row with the statement's clock time, not its commit's, so the
//                 moment is when the committed row is first seen: a commit is seen, not
//                 stamped (the statement time is printed per round, as a lower bound);
//   agents back   GET /api/v1/agents on the new leader lists every agent connected, each one
//                 seen since the signal (polled every 50 ms). The list comes from the store,
//                 which still says "connected" for the old leader's agents until the new one
//                 resets them; last_seen_ms after the signal tells the new connections apart.
//
// Pollers run on threads of their own (plain HTTP and libpq, never HaCluster, which one thread
// drives), so that a slow answer of one does not delay the others. With --mid-rollout each
// fault lands while a release is in flight (every deploy/start sleeps --start-sleep seconds;
// the fault comes after 1..N-1 hosts began theirs), and the release must still succeed.
//
// The cluster is reused across rounds, as a supervisor would keep it: after kill -9 the slot
// is started again; after SIGSTOP the old leader is resumed (it must exit 75, having lost the
// lease) and started again. The next fault comes only once that lockstepd stands by at the new
// epoch and every agent is connected. The leader therefore moves from slot to slot.
//
// HaCluster reports through GoogleTest (ASSERT_*/EXPECT_*/ADD_FAILURE, and its destructor asks
// ::testing::Test::HasFailure()), so the benchmark is one GoogleTest TEST with its own main():
// the figures go to stdout as a table, progress and failures to stderr. Every wait is bounded
// in time and in count; every process is stopped by its PID when the cluster is destroyed.
//
// Flags: --rounds N (10) --agents N (9) --lease-ttl D (3s, lockstepd's default)
//        --agent-lost D (the pipeline's default, 30s) --mid-rollout --start-sleep S (2)
//        --seed N (the time); GoogleTest's own --gtest_* flags are accepted too.

#include <gtest/gtest.h>
#include <httplib.h>
#include <libpq-fe.h>
#include <signal.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <functional>
#include <iostream>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "common/duration.h"
#include "tests/integration/ha_cluster.h"
#include "tests/support/postgres_server.h"

namespace lockstep::testing {
namespace {

using nlohmann::json;
using Clock = std::chrono::steady_clock;
using std::chrono::milliseconds;
using std::chrono::seconds;

constexpr char kPipeline[] = "monolith";
constexpr int kLostLease = 75;  // lockstepd's exit status when another took the lease
constexpr milliseconds kHealthEvery(10);
constexpr milliseconds kAuditEvery(10);
constexpr milliseconds kAgentsEvery(50);
constexpr milliseconds kWaitEvery(50);  // the bench's own waits between faults

const std::vector<std::string> kRegions = {"us-east-1", "eu-west-1", "ap-southeast-2"};

// ------------------------------------------------------------------------------ options

struct BenchOptions {
  int rounds = 10;
  int agents = 9;
  std::string lease_ttl = "3s";  // lockstepd's --lease-ttl default
  int64_t lease_ttl_ms = 3000;
  std::string agent_lost;  // empty: the pipeline's default
  int64_t agent_lost_ms = 30000;
  bool mid_rollout = false;
  std::string start_sleep = "2";  // seconds every deploy/start sleeps with --mid-rollout
  uint32_t seed = 0;
};

BenchOptions& Options() {
  static BenchOptions options;
  return options;
}

// ------------------------------------------------------------------------------ results

enum class Fault { kKill, kStop };

const char* FaultName(Fault fault) {
  return fault == Fault::kKill ? "kill -9 of the leader" : "SIGSTOP of the leader";
}

struct Series {
  std::vector<double> takeover_ms;
  std::vector<double> first_commit_ms;
  std::vector<double> agents_back_ms;
};

struct Results {
  Series kill;
  Series stop;
  std::vector<int> thawed_exits;  // the exit status of each leader resumed after SIGSTOP
  int rounds_done = 0;
};

Results& BenchResults() {
  static Results results;
  return results;
}

struct Percentiles {
  double p50 = 0;
  double p99 = 0;
  double max = 0;
  size_t n = 0;
};

// Nearest rank: the smallest value with at least q of the samples at or below it.
Percentiles Summarise(std::vector<double> v) {
  Percentiles p;
  p.n = v.size();
  if (v.empty()) return p;
  std::sort(v.begin(), v.end());
  auto at = [&v](double q) {
    size_t rank = static_cast<size_t>(std::ceil(q * static_cast<double>(v.size())));
    rank = std::max<size_t>(rank, 1);
    return v[std::min(rank, v.size()) - 1];
  };
  p.p50 = at(0.50);
  p.p99 = at(0.99);
  p.max = v.back();
  return p;
}

// ------------------------------------------------------------------------------ helpers

double MsSince(Clock::time_point since) {
  return std::chrono::duration<double, std::milli>(Clock::now() - since).count();
}

int64_t WallMs() {
  return std::chrono::duration_cast<milliseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

// Calls `poll` every `every` (a poll that overran its slot is followed by the next at once,
// then the pace resumes; missed slots are not made up) until it returns true; false once
// `timeout` has passed, after at most 2 * timeout / every + 2 calls, or as soon as `abandon`
// (if any) is set.
bool PollEvery(milliseconds every, milliseconds timeout, const std::function<bool()>& poll,
               const std::atomic<bool>* abandon = nullptr) {
  const auto start = Clock::now();
  const auto deadline = start + timeout;
  const int64_t max_polls = 2 * (timeout.count() / every.count()) + 2;
  auto next = start;
  for (int64_t n = 0; n < max_polls; ++n) {
    if (abandon != nullptr && abandon->load()) return false;
    if (poll()) return true;
    next += every;
    const auto now = Clock::now();
    if (next < now) next = now;
    if (next > deadline) return false;
    std::this_thread::sleep_until(next);
  }
  return false;
}

// A field of a JSON object, or the fallback if it is missing or of another type (the pollers
// run on threads of their own, where nlohmann's type_error would end the process).
int64_t JsonInt(const json& j, const char* key) {
  return j.is_object() && j.contains(key) && j[key].is_number_integer() ? j[key].get<int64_t>() : 0;
}

std::string JsonStr(const json& j, const char* key) {
  return j.is_object() && j.contains(key) && j[key].is_string() ? j[key].get<std::string>() : "";
}

bool JsonBool(const json& j, const char* key) {
  return j.is_object() && j.contains(key) && j[key].is_boolean() && j[key].get<bool>();
}

struct HttpGot {
  int status = 0;  // 0: no answer
  json body;       // discarded unless the body is JSON
};

HttpGot HttpGet(int port, const std::string& path, const std::string& token, milliseconds timeout) {
  httplib::Client cli("127.0.0.1", port);
  cli.set_connection_timeout(timeout);
  cli.set_read_timeout(timeout);
  cli.set_write_timeout(timeout);
  httplib::Headers headers;
  if (!token.empty()) headers.emplace("Authorization", "Bearer " + token);
  httplib::Result r = cli.Get(path.c_str(), headers);
  HttpGot got;
  if (!r) return got;
  got.status = r->status;
  got.body = json::parse(r->body, nullptr, /*allow_exceptions=*/false);
  return got;
}

// How many agents GET /api/v1/agents lists as connected with last_seen_ms after `since_ms`
// (0: any); nullopt if the lockstepd did not answer with a list.
std::optional<size_t> ConnectedAgents(int port, const std::string& token, int64_t since_ms) {
  HttpGot got = HttpGet(port, "/api/v1/agents", token, seconds(2));
  if (got.status != 200 || !got.body.is_array()) return std::nullopt;
  size_t n = 0;
  for (const auto& a : got.body) {
    if (JsonBool(a, "connected") && JsonInt(a, "last_seen_ms") > since_ms) ++n;
  }
  return n;
}

// The earliest write-audit row at a lease epoch above a given one, read on one connection of
// its own kept open between polls (one thread at a time).
struct AuditRow {
  int64_t epoch = 0;
  std::string app;
  int64_t statement_wall_ms = 0;  // the row's `at`: the statement's clock time, before commit
};

class AuditReader {
 public:
  explicit AuditReader(const std::string& conninfo)
      : conninfo_(conninfo + " connect_timeout=5 application_name=lockstep-failover-bench") {}
  ~AuditReader() {
    if (conn_ != nullptr) PQfinish(conn_);
  }
  AuditReader(const AuditReader&) = delete;
  AuditReader& operator=(const AuditReader&) = delete;

  // Opens the connection now, so that the first poll does not pay for it.
  bool Connect(std::string* error) {
    if (conn_ != nullptr && PQstatus(conn_) == CONNECTION_OK) return true;
    if (conn_ != nullptr) PQfinish(conn_);
    conn_ = PQconnectdb(conninfo_.c_str());
    if (conn_ != nullptr && PQstatus(conn_) == CONNECTION_OK) return true;
    *error = conn_ == nullptr ? "libpq: out of memory" : TrimmedError(PQerrorMessage(conn_));
    return false;
  }

  std::optional<AuditRow> FirstAbove(int64_t epoch, std::string* error) {
    if (!Connect(error)) return std::nullopt;
    const std::string sql =
        "SELECT epoch, app, (extract(epoch FROM at) * 1000)::bigint FROM ha_writes "
        "WHERE epoch > " +
        std::to_string(epoch) + " ORDER BY at, id LIMIT 1";
    PGresult* res = PQexec(conn_, sql.c_str());
    if (PQresultStatus(res) != PGRES_TUPLES_OK) {
      *error = TrimmedError(res != nullptr ? PQresultErrorMessage(res) : PQerrorMessage(conn_));
      PQclear(res);
      return std::nullopt;
    }
    std::optional<AuditRow> row;
    if (PQntuples(res) > 0) {
      AuditRow r;
      r.epoch = std::strtoll(PQgetvalue(res, 0, 0), nullptr, 10);
      r.app = PQgetvalue(res, 0, 1);
      r.statement_wall_ms = std::strtoll(PQgetvalue(res, 0, 2), nullptr, 10);
      row = r;
    }
    PQclear(res);
    return row;
  }

 private:
  static std::string TrimmedError(const char* text) {
    std::string s = text != nullptr ? text : "";
    while (!s.empty() && (s.back() == '\n' || s.back() == ' ')) s.pop_back();
    return s;
  }

  std::string conninfo_;
  PGconn* conn_ = nullptr;
};

// ------------------------------------------------------------------------------ the fleet

// --agents hosts, dealt to the three regions in turn: us-east-1-1, eu-west-1-1, ...
std::vector<std::string> HostNames(int agents) {
  std::vector<std::string> out;
  for (int i = 0; i < agents; ++i) {
    out.push_back(kRegions[static_cast<size_t>(i) % kRegions.size()] + "-" +
                  std::to_string(i / static_cast<int>(kRegions.size()) + 1));
  }
  return out;
}

// Three waves, as in tests/integration/ha_test.cc, with agent_lost left to the pipeline's
// default unless --agent-lost names one.
std::string PipelineYaml(const BenchOptions& o) {
  std::string timeouts = "hook: 30s, fetch: 10s";
  if (!o.agent_lost.empty()) timeouts += ", agent_lost: " + o.agent_lost;
  return std::string("pipeline: ") + kPipeline +
         "\n"
         "regions: [us-east-1, eu-west-1, ap-southeast-2]\n"
         "waves:\n"
         "  - name: canary\n"
         "    select: {per_region: 1}\n"
         "  - name: second\n"
         "    select: {per_region: 2}\n"
         "  - name: rest\n"
         "    select: {per_region: \"100%\"}\n"
         "concurrency: {per_region: 10}\n"
         "health:\n"
         "  check_hook: true\n"
         "timeouts: {" +
         timeouts +
         "}\n"
         "rollback: {automatic: true, tolerate_failed_hosts: 0}\n";
}

// ------------------------------------------------------------------------------ the bench

// What the pollers saw after one fault; times in ms from the signal, negative if not seen.
struct Observed {
  double takeover_ms = -1;
  int new_leader = -1;
  int64_t new_epoch = 0;
  double first_commit_ms = -1;
  AuditRow first_write;
  std::string audit_error;
  double agents_back_ms = -1;
  size_t agents_seen = 0;
};

class FailoverBench {
 public:
  FailoverBench(HaCluster& cluster, const BenchOptions& options)
      : cluster_(cluster),
        options_(options),
        hosts_(HostNames(options.agents)),
        rng_(options.seed) {}

  // Cluster up: every lockstepd, the write audit, every agent connected, the standbys
  // agreeing on the leader.
  void SetUp() {
    cluster_.fleet().WritePipeline(std::string(kPipeline) + ".yaml", PipelineYaml(options_));
    ASSERT_NO_FATAL_FAILURE(cluster_.StartAllLockstepd());
    ASSERT_NO_FATAL_FAILURE(cluster_.InstallWriteAudit());
    for (const auto& h : hosts_) ASSERT_NO_FATAL_FAILURE(cluster_.StartAgent(h, RegionOf(h)));
    ASSERT_NO_FATAL_FAILURE(cluster_.WaitForAgents(hosts_.size()));
    const int leader = cluster_.known_leader();
    ASSERT_GE(leader, 0);
    const int64_t epoch = cluster_.HealthOf(static_cast<size_t>(leader)).epoch;
    for (size_t i = 0; i < cluster_.size(); ++i) {
      if (static_cast<int>(i) != leader) {
        ASSERT_TRUE(WaitStandby(i, epoch));
      }
    }
  }

  // One fault of each kind; false if the round could not be completed.
  bool Round(int round) {
    for (Fault fault : {Fault::kKill, Fault::kStop}) {
      if (!OneFault(round, fault)) return false;
    }
    return true;
  }

 private:
  bool OneFault(int round, Fault fault) {
    const auto round_started = Clock::now();
    const int leader = cluster_.known_leader();
    if (leader < 0) {
      ADD_FAILURE() << "no leader known before the fault";
      return false;
    }
    const size_t old = static_cast<size_t>(leader);
    const int64_t old_epoch = cluster_.HealthOf(old).epoch;
    if (old_epoch <= 0) {
      ADD_FAILURE() << "lockstepd " << old << " does not say which epoch it leads at";
      return false;
    }

    int64_t release = 0;
    std::string moment = "idle";
    if (options_.mid_rollout) {
      release = StartSlowRelease();
      if (release <= 0) return false;
      const int starts = std::uniform_int_distribution<int>(1, options_.agents - 1)(rng_);
      if (!WaitStarts(static_cast<size_t>(starts))) return false;
      moment = "release " + std::to_string(release) + ", " + std::to_string(starts) + " of " +
               std::to_string(options_.agents) + " hosts started";
    }
    // A random phase of the leader's renewal period (a third of the ttl).
    const int pause_ms = std::uniform_int_distribution<int>(
        0, static_cast<int>(std::max<int64_t>(1, options_.lease_ttl_ms / 3)))(rng_);
    std::this_thread::sleep_for(milliseconds(pause_ms));

    Observed seen;
    if (!Measure(fault, old, old_epoch, &seen)) return false;
    Series& series = fault == Fault::kKill ? BenchResults().kill : BenchResults().stop;
    series.takeover_ms.push_back(seen.takeover_ms);
    series.first_commit_ms.push_back(seen.first_commit_ms);
    series.agents_back_ms.push_back(seen.agents_back_ms);

    // Let the cluster's own notion of the leader follow (the CLI asks it first).
    const int found = cluster_.WaitForLeader(old_epoch, seconds(5));
    EXPECT_EQ(found, seen.new_leader) << "the leader /healthz named changed under the bench";
    if (found < 0) return false;

    const auto recovery = Clock::now();
    int exit_status = -2;  // not resumed: killed
    if (!Recover(fault, old, seen.new_epoch, &exit_status)) return false;
    const double recovery_ms = MsSince(recovery);
    if (release > 0 && !WaitReleaseSucceeded(release)) return false;

    std::cerr << "[failover-bench] round " << round << "/" << options_.rounds << ", "
              << (fault == Fault::kKill ? "kill -9" : "SIGSTOP") << " (" << moment << ", after a "
              << pause_ms << " ms pause): lockstepd " << old << " (epoch " << old_epoch
              << ") -> lockstepd " << seen.new_leader << " (epoch " << seen.new_epoch
              << "): takeover " << Fixed(seen.takeover_ms) << " ms, first commit "
              << Fixed(seen.first_commit_ms) << " ms (" << seen.first_write.app
              << ", its statement at " << (seen.first_write.statement_wall_ms - signal_wall_ms_)
              << " ms), agents back " << Fixed(seen.agents_back_ms) << " ms";
    if (fault == Fault::kStop) std::cerr << "; resumed, it exited " << exit_status;
    std::cerr << "; lockstepd " << old << " restarted and standing by after " << Fixed(recovery_ms)
              << " ms; " << Fixed(MsSince(round_started)) << " ms in all\n";
    return true;
  }

  static std::string Fixed(double v) {
    char buf[32];
    std::snprintf(buf, sizeof(buf), "%.0f", v);
    return buf;
  }

  // Sends the fault to lockstepd `old` and polls the three moments; false (with the reason as
  // a failure) unless all three were seen in time.
  bool Measure(Fault fault, size_t old, int64_t old_epoch, Observed* seen) {
    // Everything the pollers need, copied before the signal: they never touch the cluster.
    std::vector<int> standby_ports;
    std::vector<int> standby_slots;
    for (size_t i = 0; i < cluster_.size(); ++i) {
      if (i == old || cluster_.frozen(i) || !cluster_.Running(i)) continue;
      standby_ports.push_back(cluster_.http_port(i));
      standby_slots.push_back(static_cast<int>(i));
    }
    const std::string token = cluster_.admin_token();
    const size_t want_agents = hosts_.size();
    AuditReader audit(cluster_.options().conninfo);
    std::string connect_error;
    if (!audit.Connect(&connect_error)) {
      ADD_FAILURE() << "cannot read the write audit: " << connect_error;
      return false;
    }
    const milliseconds takeover_timeout(std::max<int64_t>(20000, 5 * options_.lease_ttl_ms));
    const milliseconds commit_timeout = takeover_timeout + seconds(30);
    const milliseconds agents_timeout =
        takeover_timeout + milliseconds(options_.agent_lost_ms) + seconds(60);

    std::atomic<bool> no_leader{false};  // the takeover poller gave up: so do the others
    std::atomic<int> leader_port{0};

    signal_wall_ms_ = WallMs();
    const auto signalled = Clock::now();
    if (fault == Fault::kKill) {
      cluster_.Kill(old);
    } else {
      cluster_.Freeze(old);
    }

    std::thread takeover([&] {
      const bool found = PollEvery(kHealthEvery, takeover_timeout, [&] {
        for (size_t k = 0; k < standby_ports.size(); ++k) {
          HttpGot h = HttpGet(standby_ports[k], "/healthz", "", seconds(1));
          if (h.status != 200) continue;
          const int64_t epoch = JsonInt(h.body, "epoch");
          if (JsonStr(h.body, "role") == "leader" && epoch > old_epoch) {
            seen->takeover_ms = MsSince(signalled);
            seen->new_leader = standby_slots[k];
            seen->new_epoch = epoch;
            leader_port.store(standby_ports[k]);
            return true;
          }
        }
        return false;
      });
      if (!found) no_leader.store(true);
    });
    std::thread commit([&] {
      PollEvery(
          kAuditEvery, commit_timeout,
          [&] {
            std::string error;
            std::optional<AuditRow> row = audit.FirstAbove(old_epoch, &error);
            if (!error.empty()) seen->audit_error = error;
            if (!row) return false;
            seen->first_commit_ms = MsSince(signalled);
            seen->first_write = *row;
            return true;
          },
          &no_leader);
    });
    std::thread agents([&] {
      PollEvery(
          kAgentsEvery, agents_timeout,
          [&] {
            const int port = leader_port.load();
            if (port == 0) return false;
            std::optional<size_t> n = ConnectedAgents(port, token, signal_wall_ms_);
            if (!n) return false;
            seen->agents_seen = *n;
            if (*n < want_agents) return false;
            seen->agents_back_ms = MsSince(signalled);
            return true;
          },
          &no_leader);
    });
    takeover.join();
    commit.join();
    agents.join();

    std::string missing;
    if (seen->takeover_ms < 0) {
      missing += "\n  no standby said it leads at an epoch above " + std::to_string(old_epoch) +
                 " within " + std::to_string(takeover_timeout.count()) + " ms";
    }
    if (seen->takeover_ms >= 0 && seen->first_commit_ms < 0) {
      missing += "\n  no write at an epoch above " + std::to_string(old_epoch) + " within " +
                 std::to_string(commit_timeout.count()) + " ms" +
                 (seen->audit_error.empty() ? "" : " (last error: " + seen->audit_error + ")");
    }
    if (seen->takeover_ms >= 0 && seen->agents_back_ms < 0) {
      missing += "\n  only " + std::to_string(seen->agents_seen) + " of " +
                 std::to_string(want_agents) + " agents connected to the new leader within " +
                 std::to_string(agents_timeout.count()) + " ms";
    }
    if (!missing.empty()) {
      ADD_FAILURE() << FaultName(fault) << " (lockstepd " << old << ", epoch " << old_epoch
                    << "):" << missing << "\npg_stat_activity:\n"
                    << cluster_.Activity();
      if (fault == Fault::kStop) cluster_.Thaw(old);  // nothing is left frozen
      return false;
    }
    return true;
  }

  // Brings lockstepd `old` back as a supervisor would, and waits until it stands by at
  // `epoch` and every agent is connected to the leader.
  bool Recover(Fault fault, size_t old, int64_t epoch, int* exit_status) {
    if (fault == Fault::kStop) {
      cluster_.Thaw(old);
      const int code = cluster_.WaitExit(old, seconds(15) + milliseconds(options_.lease_ttl_ms));
      *exit_status = code;
      BenchResults().thawed_exits.push_back(code);
      EXPECT_EQ(code, kLostLease) << "the leader resumed after SIGSTOP must exit " << kLostLease
                                  << " (it lost the lease); log:\n"
                                  << cluster_.LockstepdLog(old);
      if (code == -1) cluster_.Stop(old);
    }
    cluster_.StartLockstepd(old);
    if (::testing::Test::HasFatalFailure()) return false;
    if (!WaitStandby(old, epoch)) return false;
    const int leader = cluster_.known_leader();
    const int port = cluster_.http_port(static_cast<size_t>(leader));
    const std::string token = cluster_.admin_token();
    size_t connected = 0;
    const bool all = PollEvery(kWaitEvery, milliseconds(options_.agent_lost_ms) + seconds(60), [&] {
      std::optional<size_t> n = ConnectedAgents(port, token, 0);
      connected = n.value_or(0);
      return connected >= hosts_.size();
    });
    EXPECT_TRUE(all) << "only " << connected << " of " << hosts_.size()
                     << " agents connected to lockstepd " << leader << " after the recovery";
    return all;
  }

  // Waits until lockstepd `slot` answers /healthz as a standby at `epoch`.
  bool WaitStandby(size_t slot, int64_t epoch) {
    Health h;
    const bool standing_by =
        PollEvery(kWaitEvery, seconds(10) + milliseconds(2 * options_.lease_ttl_ms), [&] {
          h = cluster_.HealthOf(slot, seconds(1));
          return h.status == 200 && h.role == "standby" && h.epoch == epoch;
        });
    EXPECT_TRUE(standing_by) << "lockstepd " << slot << " does not stand by at epoch " << epoch
                             << ": /healthz " << h.status << " role=" << h.role
                             << " epoch=" << h.epoch;
    return standing_by;
  }

  // --mid-rollout: a release of a new version whose every deploy/start sleeps; its id.
  int64_t StartSlowRelease() {
    AppBehaviour slow;
    slow.start_sleep = options_.start_sleep;
    version_ = "v" + std::to_string(++releases_);
    const Artifact a = cluster_.fleet().ServeApp(version_, slow);
    CommandResult r =
        cluster_.Cli({"--output", "json", "release", "create", "--pipeline", kPipeline, "--version",
                      a.version, "--artifact", a.url, "--sha256", a.sha256});
    EXPECT_EQ(r.exit_code, 0) << "release create: " << r.err;
    const int64_t id = JsonInt(json::parse(r.out, nullptr, /*allow_exceptions=*/false), "id");
    EXPECT_GT(id, 0) << "release create printed no id: " << r.out << r.err;
    return id;
  }

  // Waits until `n` hosts began their deploy/start of the current release's version.
  bool WaitStarts(size_t n) {
    size_t started = 0;
    const bool reached = PollEvery(kWaitEvery, seconds(60), [&] {
      started = 0;
      for (const auto& e : cluster_.fleet().Events()) {
        started += e.hook == "start" && e.version == version_ ? 1 : 0;
      }
      return started >= n;
    });
    EXPECT_TRUE(reached) << "only " << started << " of " << n << " hosts started " << version_;
    return reached;
  }

  bool WaitReleaseSucceeded(int64_t id) {
    json last = json::object();
    PollEvery(milliseconds(200), seconds(180) + milliseconds(options_.agent_lost_ms), [&] {
      auto shown = cluster_.TryCliJson({"release", "show", std::to_string(id)}, seconds(15));
      if (!shown || !shown->is_object()) return false;
      last = *shown;
      return JsonBool(last, "final");
    });
    const std::string state = JsonStr(last, "state");
    EXPECT_EQ(state, "succeeded") << "release " << id << " across the failover: " << last.dump(2);
    return state == "succeeded";
  }

  HaCluster& cluster_;
  const BenchOptions& options_;
  const std::vector<std::string> hosts_;
  std::mt19937 rng_;
  int64_t signal_wall_ms_ = 0;  // the wall clock at the last fault, in ms
  int releases_ = 0;
  std::string version_;
};

TEST(Failover, LeaderKilledAndFrozen) {
  const BenchOptions& o = Options();
  std::cerr << "[failover-bench] seed " << o.seed << ", " << o.rounds << " rounds, " << o.agents
            << " agents, lease ttl " << o.lease_ttl << ", agent_lost "
            << (o.agent_lost.empty() ? "30s (the pipeline's default)" : o.agent_lost) << ", "
            << (o.mid_rollout ? "mid-rollout" : "idle") << "\n";
  // Declared before the cluster: the lockstepd are stopped before their database.
  auto started = PostgresServer::Start();
  ASSERT_TRUE(started.ok()) << started.status().ToString();
  std::unique_ptr<PostgresServer> postgres = std::move(started).value();
  auto db = postgres->CreateDatabase();
  ASSERT_TRUE(db.ok()) << db.status().ToString();
  HaOptions ha;
  ha.lockstepd = 3;
  ha.conninfo = *db;
  ha.lease_ttl = o.lease_ttl;
  HaCluster cluster(ha);

  FailoverBench bench(cluster, o);
  const auto setup = Clock::now();
  ASSERT_NO_FATAL_FAILURE(bench.SetUp());
  std::cerr << "[failover-bench] cluster up in " << static_cast<int64_t>(MsSince(setup)) << " ms\n";
  for (int round = 1; round <= o.rounds && !::testing::Test::HasFailure(); ++round) {
    if (!bench.Round(round)) break;
    BenchResults().rounds_done = round;
  }
}

// ------------------------------------------------------------------------------ output

std::string Figure(const char* what, const std::vector<double>& ms) {
  const Percentiles p = Summarise(ms);
  char buf[160];
  if (p.n == 0) {
    std::snprintf(buf, sizeof(buf), "%s n/a", what);
  } else {
    std::snprintf(buf, sizeof(buf), "%s p50 %.0f ms p99 %.0f ms max %.0f ms", what, p.p50, p.p99,
                  p.max);
  }
  return buf;
}

void PrintTable() {
  const BenchOptions& o = Options();
  const Results& r = BenchResults();
  std::printf("\nfailover (3 lockstepd, %d agents, lease ttl %lld ms, agent_lost %s), %d rounds",
              o.agents, static_cast<long long>(o.lease_ttl_ms),
              o.agent_lost.empty() ? "30s" : o.agent_lost.c_str(), r.rounds_done);
  if (r.rounds_done < o.rounds) std::printf(" of %d", o.rounds);
  std::printf(", %s\n", o.mid_rollout
                            ? ("mid-rollout (deploy/start sleeps " + o.start_sleep + " s)").c_str()
                            : "idle (no release in flight)");
  for (Fault fault : {Fault::kKill, Fault::kStop}) {
    const Series& s = fault == Fault::kKill ? r.kill : r.stop;
    std::printf("%-24s%s; %s; %s", FaultName(fault), Figure("takeover", s.takeover_ms).c_str(),
                Figure("first commit", s.first_commit_ms).c_str(),
                Figure("agents back", s.agents_back_ms).c_str());
    // A round cut short by a failure may have measured its kill -9 but not its SIGSTOP.
    if (s.takeover_ms.size() != static_cast<size_t>(r.rounds_done)) {
      std::printf(" (%zu samples)", s.takeover_ms.size());
    }
    std::printf("\n");
  }
  std::string exits;
  for (int code : r.thawed_exits) exits += (exits.empty() ? "" : " ") + std::to_string(code);
  std::printf(
      "\nall times from the signal to the leader (nearest-rank percentiles; with fewer than 100 "
      "rounds, p99 is the max).\n"
      "takeover: a standby's /healthz says role leader at a higher epoch (polled every %lld "
      "ms).\n"
      "first commit: the first write-audit row of the new epoch is visible (polled every %lld "
      "ms; the audit stamps statements, not commits).\n"
      "agents back: GET /api/v1/agents on the new leader lists all %d connected since the "
      "signal (polled every %lld ms).\n"
      "one cluster for all rounds: the killed or resumed lockstepd is restarted and stands by, "
      "and every agent is connected, before the next fault.\n"
      "leaders resumed after SIGSTOP exited with: %s (75: lost the lease). seed %u.\n",
      static_cast<long long>(kHealthEvery.count()), static_cast<long long>(kAuditEvery.count()),
      o.agents, static_cast<long long>(kAgentsEvery.count()), exits.empty() ? "-" : exits.c_str(),
      o.seed);
  std::fflush(stdout);
}

// Failures to stderr (GoogleTest's own printer, on stdout, is removed: stdout is the table).
class FailuresToStderr final : public ::testing::EmptyTestEventListener {
 public:
  void OnTestPartResult(const ::testing::TestPartResult& result) override {
    if (!result.failed()) return;
    std::cerr << (result.file_name() != nullptr ? result.file_name() : "?") << ":"
              << result.line_number() << ": failure\n"
              << result.message() << "\n";
  }
};

void Usage(std::FILE* to) {
  std::fprintf(to,
               "usage: lockstep-failover-bench [--rounds N=10] [--agents N=9] [--lease-ttl D=3s] "
               "[--agent-lost D=30s] [--mid-rollout] [--start-sleep S=2] [--seed N] "
               "[--gtest_...]\n");
}

// Parses the benchmark's flags (GoogleTest has removed its own); false on a bad one.
bool ParseFlags(int argc, char** argv, BenchOptions* o) {
  bool seeded = false;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    auto value = [&](std::string* out) {
      if (i + 1 >= argc) {
        std::fprintf(stderr, "lockstep-failover-bench: %s needs a value\n", a.c_str());
        return false;
      }
      *out = argv[++i];
      return true;
    };
    std::string v;
    if (a == "--mid-rollout") {
      o->mid_rollout = true;
    } else if (a == "--rounds" || a == "--agents" || a == "--seed") {
      if (!value(&v)) return false;
      char* end = nullptr;
      const long long n = std::strtoll(v.c_str(), &end, 10);
      if (end == v.c_str() || *end != '\0' || n < 0) {
        std::fprintf(stderr, "lockstep-failover-bench: %s wants a whole number, not \"%s\"\n",
                     a.c_str(), v.c_str());
        return false;
      }
      if (a == "--rounds") o->rounds = static_cast<int>(std::min<long long>(n, 100000));
      if (a == "--agents") o->agents = static_cast<int>(std::min<long long>(n, 100000));
      if (a == "--seed") {
        o->seed = static_cast<uint32_t>(n);
        seeded = true;
      }
    } else if (a == "--lease-ttl" || a == "--agent-lost") {
      if (!value(&v)) return false;
      auto d = ParseDuration(v);
      if (!d.ok() || d->count() <= 0) {
        std::fprintf(stderr, "lockstep-failover-bench: %s: %s\n", a.c_str(),
                     d.ok() ? "must be positive" : d.status().ToString().c_str());
        return false;
      }
      if (a == "--lease-ttl") {
        o->lease_ttl = v;
        o->lease_ttl_ms = d->count();
      } else {
        o->agent_lost = v;
        o->agent_lost_ms = d->count();
      }
    } else if (a == "--start-sleep") {
      if (!value(&v)) return false;
      char* end = nullptr;
      const double s = std::strtod(v.c_str(), &end);
      if (end == v.c_str() || *end != '\0' || !(s >= 0) || s > 3600) {
        std::fprintf(stderr, "lockstep-failover-bench: --start-sleep wants seconds, not \"%s\"\n",
                     v.c_str());
        return false;
      }
      o->start_sleep = v;
    } else {
      std::fprintf(stderr, "lockstep-failover-bench: unknown flag %s\n", a.c_str());
      Usage(stderr);
      return false;
    }
  }
  if (o->rounds < 1) {
    std::fprintf(stderr, "lockstep-failover-bench: --rounds must be at least 1\n");
    return false;
  }
  if (o->agents < 3 || o->agents > 300) {
    std::fprintf(stderr,
                 "lockstep-failover-bench: --agents must be 3..300 (one per region at least)\n");
    return false;
  }
  if (!seeded) o->seed = static_cast<uint32_t>(std::time(nullptr));
  return true;
}

void IgnoreSigpipe() {
  // A handler rather than SIG_IGN: a caught signal is reset to its default in the children
  // this process starts, an ignored one would stay ignored in them. A write to a closed
  // socket then fails with EPIPE instead of ending the benchmark.
  struct sigaction sa;
  std::memset(&sa, 0, sizeof(sa));
  sa.sa_handler = [](int) {};
  sigemptyset(&sa.sa_mask);
  sigaction(SIGPIPE, &sa, nullptr);
}

}  // namespace
}  // namespace lockstep::testing

int main(int argc, char** argv) {
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "--help" || a == "-h") {
      lockstep::testing::Usage(stdout);
      return 0;
    }
  }
  ::testing::InitGoogleTest(&argc, argv);
  if (!lockstep::testing::ParseFlags(argc, argv, &lockstep::testing::Options())) return 2;
  lockstep::testing::IgnoreSigpipe();
  ::testing::TestEventListeners& listeners = ::testing::UnitTest::GetInstance()->listeners();
  delete listeners.Release(listeners.default_result_printer());
  listeners.Append(new lockstep::testing::FailuresToStderr);
  const int failed = RUN_ALL_TESTS();
  lockstep::testing::PrintTable();
  return failed;
}
