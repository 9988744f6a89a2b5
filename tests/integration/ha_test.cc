// High availability end to end: several real lockstepd sharing one real PostgreSQL 15 store
// (one leads, the others stand by), nine real agents in three regions that know every
// lockstepd, and the real CLI pointed at all of them, on loopback (tests/integration/ha_cluster.h).
// Each test breaks something real (kill -9, SIGSTOP or SIGTERM of the leader, the database
// killed and restarted) or sends the same request twice around a failover, and checks what can
// be observed from outside:
//
//  - releases, waves, the audit log (CLI) and /healthz, /metrics and redirects (HTTP);
//  - the agents' `current` links and the hooks' event log (each hook of each host, counted);
//  - the store itself: a write audit (triggers the test adds) records, for every statement
//    that changed the store, which lockstepd start committed it and the lease epoch in force
//    then. Each epoch must have one writer and each writer one epoch: no lockstepd commits
//    after it lost the lease, and no standby commits at all;
//  - the processes' exit statuses and logs (75: lost the lease; "refused a task of leader
//    epoch N": an agent turned away a deposed leader).
//
// Random choices (the moments of kills and freezes) come from LOCKSTEP_HA_SEED (default: the
// time), printed at the start of each test, so that a run can be replayed. LOCKSTEP_HA_ROUNDS
// (default 1) repeats each kill, freeze and database-restart scenario that many times, each
// on a fresh cluster with new random moments.

#include <grpcpp/grpcpp.h>
#include <gtest/gtest.h>
#include <httplib.h>
#include <signal.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <fstream>
#include <functional>
#include <iostream>
#include <map>
#include <memory>
#include <random>
#include <set>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "common/sha256.h"
#include "proto/lockstep.grpc.pb.h"
#include "tests/integration/ha_cluster.h"
#include "tests/support/github_signature.h"
#include "tests/support/http_server.h"
#include "tests/support/postgres_server.h"
#include "tests/support/tarball.h"

namespace lockstep::testing {
namespace {

using nlohmann::json;
using Clock = std::chrono::steady_clock;
using std::chrono::milliseconds;
using std::chrono::seconds;

constexpr char kPipeline[] = "monolith";
constexpr int kLostLease = 75;  // lockstepd's exit status when another took the lease

// ------------------------------------------------------------------------------ environment

// One PostgreSQL server for the tests of this binary that do not break it, started at first use
// (the SQLite test needs none) and stopped after the last test; each cluster gets a fresh
// database on it.
class SharedPostgres final : public ::testing::Environment {
 public:
  PostgresServer* Get() {
    if (server_ == nullptr && why_.empty()) {
      auto started = PostgresServer::Start();
      if (started.ok()) {
        server_ = std::move(started).value();
      } else {
        why_ = started.status().ToString();
      }
    }
    return server_.get();
  }
  const std::string& why() const { return why_; }
  void TearDown() override { server_.reset(); }

 private:
  std::unique_ptr<PostgresServer> server_;
  std::string why_;
};

// Owned by GoogleTest once registered; registered before main() runs the tests.
SharedPostgres* const kPostgres = [] {
  auto* environment = new SharedPostgres;
  ::testing::AddGlobalTestEnvironment(environment);
  return environment;
}();

int EnvInt(const char* name, int fallback) {
  const char* v = std::getenv(name);
  if (v == nullptr || *v == '\0') return fallback;
  return std::atoi(v);
}

int Rounds() { return std::max(1, EnvInt("LOCKSTEP_HA_ROUNDS", 1)); }

uint32_t BaseSeed() {
  static const uint32_t seed = [] {
    const char* v = std::getenv("LOCKSTEP_HA_SEED");
    if (v != nullptr && *v != '\0') return static_cast<uint32_t>(std::strtoul(v, nullptr, 10));
    return static_cast<uint32_t>(std::time(nullptr));
  }();
  return seed;
}

// The current test's random generator: the seed mixed with the test's name, so that one seed
// replays every test of a run. Prints how to replay.
std::mt19937 TestRng() {
  const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
  const std::string name =
      info != nullptr ? std::string(info->test_suite_name()) + "." + info->name() : "";
  uint32_t mixed = BaseSeed();
  for (unsigned char c : name) mixed = (mixed ^ c) * 16777619u;
  std::cerr << "[ha] " << name << ": LOCKSTEP_HA_SEED=" << BaseSeed()
            << " LOCKSTEP_HA_ROUNDS=" << Rounds() << "\n";
  ::testing::Test::RecordProperty("seed", std::to_string(BaseSeed()));
  return std::mt19937(mixed);
}

int Uniform(std::mt19937& rng, int lo, int hi) {
  return std::uniform_int_distribution<int>(lo, hi)(rng);
}

// A random moment: a pause of up to `max_ms`.
void PauseUpTo(std::mt19937& rng, int max_ms) {
  std::this_thread::sleep_for(milliseconds(Uniform(rng, 0, max_ms)));
}

int64_t ElapsedMs(Clock::time_point since) {
  return std::chrono::duration_cast<milliseconds>(Clock::now() - since).count();
}

// ------------------------------------------------------------------------------ JSON fields

std::string Str(const json& j, const char* key) {
  return j.is_object() && j.contains(key) && j[key].is_string() ? j[key].get<std::string>() : "";
}

int64_t Int(const json& j, const char* key) {
  return j.is_object() && j.contains(key) && j[key].is_number_integer() ? j[key].get<int64_t>() : 0;
}

bool Bool(const json& j, const char* key) {
  return j.is_object() && j.contains(key) && j[key].is_boolean() && j[key].get<bool>();
}

json WaveOf(const json& release, size_t wave) {
  if (!release.is_object() || !release.contains("waves") || !release["waves"].is_array() ||
      wave >= release["waves"].size()) {
    return json::object();
  }
  return release["waves"][wave];
}

std::string WaveState(const json& release, size_t wave) {
  return Str(WaveOf(release, wave), "state");
}

// Where a release stands, for messages: "rolling: wave 2 baking".
std::string PhaseOf(const json& release) {
  std::string state = Str(release, "state");
  if (state != "rolling") return state.empty() ? "unknown" : state;
  const int64_t wave = Int(release, "current_wave");
  return "rolling: wave " + std::to_string(wave + 1) + " " +
         WaveState(release, static_cast<size_t>(std::max<int64_t>(wave, 0)));
}

// ------------------------------------------------------------------------------ the fleet

// Three hosts in each of three regions. Waves take the first N hosts of a region by name, so
// "-1" is the canary, "-2" joins in the second wave and "-3" in the last.
const std::vector<std::string>& Hosts() {
  static const std::vector<std::string> kHosts = [] {
    std::vector<std::string> out;
    for (const char* region : {"us-east-1", "eu-west-1", "ap-southeast-2"}) {
      for (int i = 1; i <= 3; ++i) out.push_back(std::string(region) + "-" + std::to_string(i));
    }
    return out;
  }();
  return kHosts;
}

struct PipelineSpec {
  std::string canary_extra;  // more keys of the canary wave ("    approval: manual\n")
  std::string second_extra;  // more keys of the second wave ("    bake: 3s\n")
  std::string trigger;       // a top-level "trigger:" line, or ""
};

// Three waves (a canary per region, then a second host per region, then the rest). agent_lost
// is long enough that a failover (a lease ttl, then a reconnect; a frozen leader is noticed by
// the agents within half of agent_lost) loses no agent, short enough to keep tests fast.
// "@DIR@" is replaced by the fleet's directory.
std::string PipelineYaml(const PipelineSpec& spec) {
  return std::string(
             "pipeline: monolith\n"
             "regions: [us-east-1, eu-west-1, ap-southeast-2]\n"
             "waves:\n"
             "  - name: canary\n"
             "    select: {per_region: 1}\n") +
         spec.canary_extra +
         "  - name: second\n"
         "    select: {per_region: 2}\n" +
         spec.second_extra +
         "  - name: rest\n"
         "    select: {per_region: \"100%\"}\n"
         "concurrency: {per_region: 10}\n"
         "health:\n"
         "  check_hook: true\n"
         "timeouts: {hook: 30s, fetch: 10s, agent_lost: 8s}\n"
         "rollback: {automatic: true, tolerate_failed_hosts: 0}\n" +
         spec.trigger;
}

// How often each host ran each hook: "start v2" -> 1.
using HookCounts = std::map<std::string, int>;

std::map<std::string, HookCounts> HooksByHost(const std::vector<Fleet::Event>& events) {
  std::map<std::string, HookCounts> out;
  for (const auto& e : events) ++out[e.agent][e.hook + " " + e.version];
  return out;
}

std::string Describe(const HookCounts& counts) {
  std::string out;
  for (const auto& [what, n] : counts) {
    if (n != 0) out += (out.empty() ? "" : ", ") + what + " x" + std::to_string(n);
  }
  return out.empty() ? "(none)" : out;
}

size_t CountEvents(const std::vector<Fleet::Event>& events, const std::string& hook,
                   const std::string& version) {
  size_t n = 0;
  for (const auto& e : events) n += e.hook == hook && e.version == version ? 1 : 0;
  return n;
}

size_t CountOccurrences(const std::string& text, const std::string& needle) {
  size_t n = 0;
  for (size_t at = text.find(needle); at != std::string::npos; at = text.find(needle, at + 1)) {
    ++n;
  }
  return n;
}

// The leader epochs of the welcomes an agent accepted, in order ("connected to ADDR (pipeline
// P, leader epoch N)").
std::vector<int64_t> WelcomeEpochs(const std::string& agent_log) {
  static constexpr char kMarker[] = "leader epoch ";
  std::vector<int64_t> out;
  std::istringstream in(agent_log);
  std::string line;
  while (std::getline(in, line)) {
    if (line.find("connected to ") == std::string::npos) continue;
    const size_t at = line.find(kMarker);
    if (at == std::string::npos) continue;
    out.push_back(std::strtoll(line.c_str() + at + std::strlen(kMarker), nullptr, 10));
  }
  return out;
}

// ------------------------------------------------------------------------------ the store

std::string DescribeWrites(const WriteAudit& writes) {
  std::string out = "write audit (lockstepd start: lease epoch x statements):";
  for (const auto& [app, epochs] : writes) {
    out += "\n  " + (app.empty() ? std::string("(no application_name)") : app) + ":";
    for (const auto& [epoch, n] : epochs) {
      out += " epoch " + std::to_string(epoch) + " x" + std::to_string(n);
    }
  }
  return out;
}

std::set<int64_t> EpochsOf(const WriteAudit& writes, const std::string& app) {
  std::set<int64_t> out;
  auto it = writes.find(app);
  if (it == writes.end()) return out;
  for (const auto& [epoch, n] : it->second) out.insert(epoch);
  return out;
}

// Every statement that changed the store was committed by a lockstepd of this test while the
// lease was at the one epoch it led; no epoch had two writers. (A process leads at most once:
// one that lost the lease exits.)
::testing::AssertionResult OneWriterPerEpoch(const WriteAudit& writes) {
  std::map<int64_t, std::set<std::string>> writers;
  std::string wrong;
  for (const auto& [app, epochs] : writes) {
    if (app.rfind("lockstepd-s", 0) != 0) {
      wrong += "\n  a connection that is no lockstepd of the test wrote: \"" + app + "\"";
    }
    if (epochs.size() != 1) {
      wrong += "\n  " + app + " committed under " + std::to_string(epochs.size()) +
               " lease epochs: it wrote after it lost the lease, or while standing by";
    }
    for (const auto& [epoch, n] : epochs) writers[epoch].insert(app);
  }
  for (const auto& [epoch, apps] : writers) {
    if (epoch <= 0) wrong += "\n  writes committed with no leader lease in the store";
    if (apps.size() != 1) {
      wrong += "\n  lease epoch " + std::to_string(epoch) + " has " + std::to_string(apps.size()) +
               " writers";
    }
  }
  if (writes.empty()) wrong += "\n  the write audit recorded nothing (is it installed?)";
  if (!wrong.empty()) {
    return ::testing::AssertionFailure()
           << "the store was written outside of one leader per epoch:" << wrong << "\n"
           << DescribeWrites(writes);
  }
  return ::testing::AssertionSuccess();
}

// ------------------------------------------------------------------------------ HTTP

struct HttpReply {
  int status = 0;  // 0: no answer
  json body;       // null unless the body is JSON
  std::string raw;
  std::string location;
};

HttpReply HttpCall(int port, const std::string& method, const std::string& path,
                   const httplib::Headers& headers, const std::string& body = "") {
  httplib::Client cli("127.0.0.1", port);
  cli.set_connection_timeout(seconds(5));
  cli.set_read_timeout(seconds(30));
  httplib::Result r = method == "GET" ? cli.Get(path.c_str(), headers)
                                      : cli.Post(path.c_str(), headers, body, "application/json");
  HttpReply out;
  if (!r) return out;
  out.status = r->status;
  out.raw = r->body;
  out.body = json::parse(r->body, nullptr, /*allow_exceptions=*/false);
  if (out.body.is_discarded()) out.body = json();
  out.location = r->get_header_value("Location");
  return out;
}

// GET of an absolute "http://127.0.0.1:PORT/path" URL (a Location header).
HttpReply HttpGetUrl(const std::string& url, const httplib::Headers& headers) {
  const std::string prefix = "http://127.0.0.1:";
  if (url.rfind(prefix, 0) != 0) return HttpReply();
  const size_t slash = url.find('/', prefix.size());
  const int port = std::atoi(url.substr(prefix.size(), slash - prefix.size()).c_str());
  return HttpCall(port, "GET", slash == std::string::npos ? "/" : url.substr(slash), headers);
}

// ------------------------------------------------------------------------------ GitHub

constexpr char kSecret[] = "ha-webhook-s3cret";
constexpr char kCommit[] = "89abcdef0123456789abcdef0123456789abcdef";

std::string PushBody(const std::string& commit) {
  return json{{"ref", "refs/heads/main"},
              {"after", commit},
              {"repository", {{"full_name", "acme/shop"}}},
              {"head_commit", {{"message", "fix the thing"}, {"author", {{"name", "Ada"}}}}},
              {"pusher", {{"name", "ada"}}}}
      .dump();
}

// ------------------------------------------------------------------------------ gRPC

// CreateRelease straight to one lockstepd, tried again while it answers UNAVAILABLE (a leader
// a moment after its election), at most 15 s.
grpc::Status CreateOver(const std::string& address, const std::string& token,
                        const v1::CreateReleaseRequest& req, v1::Release* out) {
  auto stub =
      v1::ControlService::NewStub(grpc::CreateChannel(address, grpc::InsecureChannelCredentials()));
  const auto give_up = Clock::now() + seconds(15);
  for (;;) {
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + seconds(10));
    ctx.AddMetadata("authorization", "Bearer " + token);
    grpc::Status st = stub->CreateRelease(&ctx, req, out);
    if (st.error_code() != grpc::StatusCode::UNAVAILABLE || Clock::now() > give_up) return st;
    std::this_thread::sleep_for(milliseconds(100));
  }
}

// ------------------------------------------------------------------------------ fixture

struct ClusterSetup {
  size_t lockstepd = 3;
  std::string lease_ttl = "1s";
  bool agents = true;                        // the nine Hosts(), connected
  PostgresServer* server = nullptr;          // null: the binary's shared server
  std::map<std::string, std::string> files;  // written under the fleet's directory first
};

class HaTest : public ::testing::Test {
 protected:
  // A fresh database, `setup.lockstepd` lockstepd on it with the pipeline `yaml` (slot 0
  // leads), the write audit installed, and the agents connected.
  void Start(const std::string& yaml, const ClusterSetup& setup) {
    cluster_.reset();
    PostgresServer* server = setup.server != nullptr ? setup.server : kPostgres->Get();
    ASSERT_NE(server, nullptr) << "no PostgreSQL server to share: " << kPostgres->why();
    auto db = server->CreateDatabase();
    ASSERT_TRUE(db.ok()) << db.status().ToString();
    HaOptions o;
    o.lockstepd = setup.lockstepd;
    o.conninfo = *db;
    o.lease_ttl = setup.lease_ttl;
    cluster_ = std::make_unique<HaCluster>(o);
    Fleet& fleet = cluster_->fleet();
    for (const auto& [path, contents] : setup.files) {
      std::ofstream(fleet.dir() + "/" + path) << contents;
    }
    std::string text = yaml;
    for (size_t at = text.find("@DIR@"); at != std::string::npos; at = text.find("@DIR@", at)) {
      text.replace(at, 5, fleet.dir());
    }
    fleet.WritePipeline("monolith.yaml", text);
    ASSERT_NO_FATAL_FAILURE(cluster_->StartAllLockstepd());
    ASSERT_NO_FATAL_FAILURE(cluster_->InstallWriteAudit());
    if (!setup.agents) return;
    for (const auto& h : Hosts()) ASSERT_NO_FATAL_FAILURE(cluster_->StartAgent(h, RegionOf(h)));
    ASSERT_NO_FATAL_FAILURE(cluster_->WaitForAgents(Hosts().size()));
  }

  size_t Leader() {
    const int leader = cluster_->known_leader();
    EXPECT_GE(leader, 0) << "no leader known";
    return static_cast<size_t>(std::max(leader, 0));
  }

  int64_t Create(const Artifact& a) {
    CommandResult r =
        cluster_->Cli({"--output", "json", "release", "create", "--pipeline", kPipeline,
                       "--version", a.version, "--artifact", a.url, "--sha256", a.sha256});
    EXPECT_EQ(r.exit_code, 0) << r.err;
    return Int(json::parse(r.out, nullptr, /*allow_exceptions=*/false), "id");
  }

  // `release show ID`, or an empty object if no lockstepd answered.
  json Show(int64_t id) {
    auto r = cluster_->TryCliJson({"release", "show", std::to_string(id)}, seconds(15));
    return r && r->is_object() ? *r : json::object();
  }

  // Polls `release show` (through whichever lockstepd leads) until `done`; the last answer.
  json WaitRelease(int64_t id, const std::function<bool(const json&)>& done, milliseconds timeout) {
    json last = json::object();
    Fleet::WaitFor(
        [&] {
          json now = Show(id);
          if (now.empty()) return false;
          last = now;
          return done(now);
        },
        timeout);
    return last;
  }

  json WaitFinal(int64_t id, milliseconds timeout = seconds(120)) {
    json r = WaitRelease(
        id, [](const json& j) { return Bool(j, "final"); }, timeout);
    EXPECT_TRUE(Bool(r, "final")) << "release " << id << " did not end: " << r.dump(2);
    return r;
  }

  bool WaitEvents(size_t n, const std::string& hook, const std::string& version,
                  milliseconds timeout) {
    return Fleet::WaitFor(
        [&] { return CountEvents(cluster_->fleet().Events(), hook, version) >= n; }, timeout);
  }

  json Audit() { return cluster_->CliJson({"audit", "--limit", "100000"}); }

  static int AuditCount(const json& audit, const std::string& action,
                        const std::string& target = "") {
    int n = 0;
    if (!audit.is_array()) return -1;
    for (const auto& e : audit) {
      n += Str(e, "action") == action && (target.empty() || Str(e, "target") == target) ? 1 : 0;
    }
    return n;
  }

  json Releases() { return cluster_->CliJson({"release", "list", "--limit", "1000"}); }

  // Every host's `current` names `version`, and lockstepd agrees.
  void ExpectFleetOn(const std::string& version) {
    std::string seen;
    bool on = Fleet::WaitFor(
        [&] {
          seen.clear();
          bool all = true;
          for (const auto& h : Hosts()) {
            const std::string current = cluster_->fleet().CurrentOf(h);
            seen += " " + h + "=" + current;
            all = all && current == version;
          }
          if (!all) return false;
          auto agents = cluster_->TryCliJson({"agents"}, seconds(10));
          if (!agents || !agents->is_array() || agents->size() != Hosts().size()) return false;
          for (const auto& a : *agents) {
            if (Str(a, "current_version") != version) {
              seen +=
                  " (lockstepd says " + Str(a, "name") + " runs " + Str(a, "current_version") + ")";
              return false;
            }
          }
          return true;
        },
        seconds(20));
    EXPECT_TRUE(on) << "not every host runs " << version << ":" << seen;
  }

  // A fresh fleet took `version`: each host ran its deploy/start and deploy/check exactly once
  // (the agent runs a task id at most once, and a new leader re-sends the same task ids), and
  // nothing else ran.
  void ExpectEachHostActivatedOnce(const std::string& version) {
    auto by_host = HooksByHost(cluster_->fleet().Events());
    const HookCounts want = {{"start " + version, 1}, {"check " + version, 1}};
    for (const auto& host : Hosts()) {
      EXPECT_EQ(Describe(by_host[host]), Describe(want)) << host << ": the hooks it ran";
      by_host.erase(host);
    }
    for (const auto& [agent, counts] : by_host) {
      ADD_FAILURE() << "hooks ran on an unknown agent " << agent << ": " << Describe(counts);
    }
  }

  // Exactly one release, `id`, of `version`, and one release.create audited for it.
  void ExpectOnlyRelease(int64_t id, const std::string& version) {
    json list = Releases();
    ASSERT_TRUE(list.is_array());
    EXPECT_EQ(list.size(), 1u) << "releases: " << list.dump(2);
    for (const auto& r : list) {
      EXPECT_EQ(Int(r, "id"), id) << r.dump(2);
      EXPECT_EQ(Str(r, "version"), version) << r.dump(2);
    }
    EXPECT_EQ(AuditCount(Audit(), "release.create", "release/" + std::to_string(id)), 1);
  }

  void ExpectOneWriterPerEpoch() { EXPECT_TRUE(OneWriterPerEpoch(cluster_->Writes())); }

  // No agent accepted a welcome from a leader older than one it had already seen.
  void ExpectAgentsFollowedEpochsForward() {
    for (const auto& host : Hosts()) {
      int64_t newest = 0;
      for (int64_t epoch : WelcomeEpochs(cluster_->AgentLog(host))) {
        EXPECT_GE(epoch, newest) << host << " accepted a welcome of leader epoch " << epoch
                                 << " after one of epoch " << newest;
        newest = std::max(newest, epoch);
      }
    }
  }

  // How many agents have been welcomed by a leader of `epoch` or later.
  size_t AgentsOnEpoch(int64_t epoch) {
    size_t n = 0;
    for (const auto& host : Hosts()) {
      auto epochs = WelcomeEpochs(cluster_->AgentLog(host));
      n += std::any_of(epochs.begin(), epochs.end(), [&](int64_t e) { return e >= epoch; }) ? 1 : 0;
    }
    return n;
  }

  // Declared before the cluster: a database a test breaks outlives the lockstepd using it.
  std::unique_ptr<PostgresServer> own_server_;
  std::unique_ptr<HaCluster> cluster_;
};

// ==============================================================================================
// 1. kill -9 of the leader at a random moment of a rollout, one phase per instance: the release
//    ends as it would have, every host on one version, every hook once per host, one release,
//    every operator action audited once.

enum class Phase { kDeploying, kBaking, kAwaitingApproval, kRollingBack };

std::string PhaseName(Phase phase) {
  switch (phase) {
    case Phase::kDeploying:
      return "Deploying";
    case Phase::kBaking:
      return "Baking";
    case Phase::kAwaitingApproval:
      return "AwaitingApproval";
    case Phase::kRollingBack:
      return "RollingBack";
  }
  return "Unknown";
}

class LeaderKillTest : public HaTest, public ::testing::WithParamInterface<Phase> {
 protected:
  void Round(std::mt19937& rng, int round);
};

void LeaderKillTest::Round(std::mt19937& rng, int round) {
  const Phase phase = GetParam();
  PipelineSpec spec;
  if (phase == Phase::kBaking) spec.second_extra = "    bake: 3s\n";
  if (phase == Phase::kAwaitingApproval) spec.canary_extra = "    approval: manual\n";
  ASSERT_NO_FATAL_FAILURE(Start(PipelineYaml(spec), ClusterSetup()));
  Fleet& fleet = cluster_->fleet();

  int64_t baseline = 0;
  if (phase == Phase::kRollingBack) {
    // A release to go back to, deployed without a fault.
    baseline = Create(fleet.ServeApp("v1"));
    ASSERT_GT(baseline, 0);
    json done = WaitFinal(baseline);
    ASSERT_EQ(Str(done, "state"), "succeeded") << done.dump(2);
  }

  // Half a second in each deploy/start: a wave takes a while, so kills land inside hooks.
  AppBehaviour slow;
  slow.start_sleep = "0.5";
  slow.stop_sleep = "0.3";
  const int64_t id = Create(fleet.ServeApp("v2", slow));
  ASSERT_GT(id, 0);
  const size_t leader = Leader();
  const int64_t epoch = cluster_->HealthOf(leader).epoch;
  ASSERT_GT(epoch, 0);

  int64_t rollback_id = 0;
  switch (phase) {
    case Phase::kDeploying: {
      // 0: while the release starts and its canaries prepare; N: right after the N-th host
      // began its deploy/start of v2.
      const int starts = Uniform(rng, 0, 8);
      ASSERT_TRUE(WaitEvents(static_cast<size_t>(starts), "start", "v2", seconds(60)))
          << starts << " hosts never started v2";
      PauseUpTo(rng, 300);
      break;
    }
    case Phase::kBaking: {
      json r = WaitRelease(
          id, [](const json& j) { return WaveState(j, 1) == "baking"; }, seconds(60));
      ASSERT_EQ(WaveState(r, 1), "baking") << r.dump(2);
      PauseUpTo(rng, 2500);
      break;
    }
    case Phase::kAwaitingApproval: {
      json r = WaitRelease(
          id, [](const json& j) { return WaveState(j, 0) == "awaiting_approval"; }, seconds(60));
      ASSERT_EQ(WaveState(r, 0), "awaiting_approval") << r.dump(2);
      PauseUpTo(rng, 500);
      break;
    }
    case Phase::kRollingBack: {
      ASSERT_TRUE(WaitEvents(static_cast<size_t>(Uniform(rng, 2, 6)), "start", "v2", seconds(60)));
      // Steps back: a host stopping v2 or starting v1 again. Counted before the rollback, so
      // that none is missed; at least two hosts took v2, so at least four steps will come.
      auto steps = [&] {
        const auto events = fleet.Events();
        return CountEvents(events, "stop", "v2") + CountEvents(events, "start", "v1");
      };
      const size_t before = steps();
      json rb = cluster_->CliJson({"rollback", kPipeline, "--no-wait"});
      rollback_id = Int(rb, "id");
      ASSERT_GT(rollback_id, 0) << rb.dump(2);
      const size_t more = static_cast<size_t>(Uniform(rng, 0, 4));
      Fleet::WaitFor([&] { return steps() >= before + more; }, seconds(20));
      break;
    }
  }
  const std::string moment = PhaseOf(Show(rollback_id > 0 ? rollback_id : id));
  cluster_->Kill(leader);
  const auto killed = Clock::now();
  const int successor = cluster_->WaitForLeader(epoch, seconds(20));
  ASSERT_GE(successor, 0) << "no standby took over within 20 s of kill -9 of the leader";
  std::cerr << "[ha] " << PhaseName(phase) << " round " << round << ": kill -9 of lockstepd "
            << leader << " (epoch " << epoch << ") during \"" << moment << "\"; lockstepd "
            << successor << " led at epoch "
            << cluster_->HealthOf(static_cast<size_t>(successor)).epoch << " " << ElapsedMs(killed)
            << " ms later\n";

  const std::string target = "release/" + std::to_string(id);
  if (phase == Phase::kAwaitingApproval) {
    // The wait survived, and nothing approved it behind the operator's back.
    json waiting = Show(id);
    ASSERT_EQ(WaveState(waiting, 0), "awaiting_approval") << waiting.dump(2);
    EXPECT_EQ(AuditCount(Audit(), "release.approve", target), 0);
    CommandResult approved = cluster_->Cli({"approve", std::to_string(id)});
    ASSERT_EQ(approved.exit_code, 0) << approved.err;
  }

  if (phase == Phase::kRollingBack) {
    json back = WaitFinal(rollback_id);
    EXPECT_EQ(Str(back, "state"), "succeeded") << back.dump(2);
    EXPECT_EQ(Str(back, "kind"), "rollback");
    EXPECT_EQ(Str(back, "version"), "v1");
    json preempted = WaitFinal(id);
    EXPECT_EQ(Str(preempted, "state"), "aborted") << preempted.dump(2);
    ExpectFleetOn("v1");
    // A host that took v2 stopped it once and started and checked v1 once more; a host that
    // never took v2 ran nothing after the baseline (it was asked to confirm v1).
    auto by_host = HooksByHost(fleet.Events());
    for (const auto& host : Hosts()) {
      const HookCounts& got = by_host[host];
      const int took = got.count("start v2") ? got.at("start v2") : 0;
      EXPECT_LE(took, 1) << host;
      HookCounts want = {{"start v1", 1 + took}, {"check v1", 1 + took}};
      if (took > 0) {
        want["stop v1"] = took;
        want["start v2"] = took;
        want["check v2"] = took;
        want["stop v2"] = took;
      }
      EXPECT_EQ(Describe(got), Describe(want)) << host << ": the hooks it ran";
    }
    json list = Releases();
    ASSERT_TRUE(list.is_array());
    EXPECT_EQ(list.size(), 3u) << list.dump(2);
    std::map<int64_t, std::string> seen;
    for (const auto& r : list) {
      seen[Int(r, "id")] = Str(r, "kind") + " " + Str(r, "version") + " " + Str(r, "state");
    }
    EXPECT_EQ(seen[baseline], "rollout v1 succeeded");
    EXPECT_EQ(seen[id], "rollout v2 aborted");
    EXPECT_EQ(seen[rollback_id], "rollback v1 succeeded");
    json audit = Audit();
    EXPECT_EQ(AuditCount(audit, "release.create", "release/" + std::to_string(baseline)), 1);
    EXPECT_EQ(AuditCount(audit, "release.create", target), 1);
    EXPECT_EQ(AuditCount(audit, "pipeline.rollback"), 1);
    EXPECT_EQ(AuditCount(audit, "pipeline.rollback", "release/" + std::to_string(rollback_id)), 1);
  } else {
    json done = WaitFinal(id);
    ASSERT_EQ(Str(done, "state"), "succeeded") << done.dump(2);
    ExpectFleetOn("v2");
    ExpectEachHostActivatedOnce("v2");
    ExpectOnlyRelease(id, "v2");
    if (phase == Phase::kAwaitingApproval) {
      EXPECT_EQ(AuditCount(Audit(), "release.approve", target), 1);
      EXPECT_NE(Str(WaveOf(done, 0), "approved_by"), "") << done.dump(2);
    }
    if (phase == Phase::kBaking) {
      // The bake was neither cut short nor skipped by the new leader.
      const json wave = WaveOf(done, 1);
      EXPECT_GT(Int(wave, "bake_started_at_ms"), 0) << wave.dump(2);
      EXPECT_GE(Int(wave, "finished_at_ms") - Int(wave, "bake_started_at_ms"), Int(wave, "bake_ms"))
          << wave.dump(2);
      EXPECT_EQ(Int(wave, "bake_ms"), 3000) << wave.dump(2);
    }
  }
  ExpectOneWriterPerEpoch();
  ExpectAgentsFollowedEpochsForward();
}

TEST_P(LeaderKillTest, KillingTheLeaderMidRolloutFinishesTheRelease) {
  std::mt19937 rng = TestRng();
  const int rounds = Rounds();
  for (int round = 1; round <= rounds && !HasFailure(); ++round) {
    SCOPED_TRACE("round " + std::to_string(round) +
                 " of LOCKSTEP_HA_SEED=" + std::to_string(BaseSeed()));
    Round(rng, round);
    if (HasFatalFailure()) return;
    if (!HasFailure()) cluster_.reset();
  }
}

INSTANTIATE_TEST_SUITE_P(Phases, LeaderKillTest,
                         ::testing::Values(Phase::kDeploying, Phase::kBaking,
                                           Phase::kAwaitingApproval, Phase::kRollingBack),
                         [](const ::testing::TestParamInfo<Phase>& param_info) {
                           return PhaseName(param_info.param);
                         });

// ==============================================================================================

class HaFailoverTest : public HaTest {
 protected:
  void FrozenLeaderRound(std::mt19937& rng, int round);
  void PostgresRestartRound(std::mt19937& rng, int round);
};

// 2. A leader frozen (SIGSTOP) mid-rollout loses its lease to a standby. Resumed, it must
//    neither commit (the write audit: none of its statements committed under another epoch
//    than its own) nor send (no agent that had seen the new leader was sent a task or gate
//    check of the old epoch), and must exit with 75; the release finishes as if nothing
//    happened.
void HaFailoverTest::FrozenLeaderRound(std::mt19937& rng, int round) {
  ASSERT_NO_FATAL_FAILURE(Start(PipelineYaml(PipelineSpec()), ClusterSetup()));
  Fleet& fleet = cluster_->fleet();
  AppBehaviour slow;
  slow.start_sleep = "0.5";
  const int64_t id = Create(fleet.ServeApp("v2", slow));
  ASSERT_GT(id, 0);
  const size_t old = Leader();
  const int64_t epoch = cluster_->HealthOf(old).epoch;
  ASSERT_GT(epoch, 0);
  const std::string old_app = cluster_->AppName(old);

  ASSERT_TRUE(WaitEvents(static_cast<size_t>(Uniform(rng, 1, 7)), "start", "v2", seconds(60)));
  cluster_->Freeze(old);
  const auto frozen_at = Clock::now();
  const int successor = cluster_->WaitForLeader(epoch, seconds(20));
  if (successor < 0) {
    ADD_FAILURE() << "no standby took over within 20 s of freezing the leader (lease ttl "
                  << cluster_->options().lease_ttl
                  << "). A leader frozen inside a write transaction holds the lease row FOR "
                     "SHARE, which blocks every claim until it resumes; pg_stat_activity:\n"
                  << cluster_->Activity();
    cluster_->Thaw(old);
    return;
  }
  const size_t fresh = static_cast<size_t>(successor);
  const int64_t new_epoch = cluster_->HealthOf(fresh).epoch;
  const int64_t takeover_ms = ElapsedMs(frozen_at);

  // Resume it with none, some or all of its agents already gone to the new leader (they
  // notice a silent lockstepd within half of agent_lost): with some still connected to it,
  // anything it sent would reach them.
  const size_t wanted = static_cast<size_t>(Uniform(rng, 0, static_cast<int>(Hosts().size())));
  Fleet::WaitFor([&] { return AgentsOnEpoch(new_epoch) >= wanted; }, seconds(20));
  const size_t moved = AgentsOnEpoch(new_epoch);
  cluster_->Thaw(old);
  const auto thawed = Clock::now();
  const int code = cluster_->WaitExit(old, seconds(15));
  const int64_t exit_ms = ElapsedMs(thawed);
  std::cerr << "[ha] frozen leader round " << round << ": lockstepd " << old << " (epoch " << epoch
            << ") frozen; lockstepd " << fresh << " led at epoch " << new_epoch << " after "
            << takeover_ms << " ms; thawed with " << moved << " of " << Hosts().size()
            << " agents moved; it exited " << code << " after " << exit_ms << " ms\n";
  if (code == -1) {
    Health h = cluster_->HealthOf(old);
    ADD_FAILURE() << "the deposed leader still runs 15 s after it was resumed; /healthz: role="
                  << h.role << " epoch=" << h.epoch;
  }
  EXPECT_EQ(code, kLostLease);

  const std::string log = cluster_->LockstepdLog(old);
  EXPECT_TRUE(log.find("the leader lease passed to") != std::string::npos ||
              log.find("could not be renewed within its ttl") != std::string::npos ||
              log.find("lost the leader lease") != std::string::npos)
      << "the deposed leader never said it lost the lease:\n"
      << log;
  EXPECT_NE(log.find("lockstepd stopped (it lost the leader lease)"), std::string::npos) << log;
  EXPECT_EQ(CountOccurrences(log, "leading at epoch "), 1u) << log;
  EXPECT_NE(log.find("leading at epoch " + std::to_string(epoch) + " "), std::string::npos) << log;

  json done = WaitFinal(id);
  ASSERT_EQ(Str(done, "state"), "succeeded") << done.dump(2);
  ExpectFleetOn("v2");
  ExpectEachHostActivatedOnce("v2");
  ExpectOnlyRelease(id, "v2");

  // No commit after the lease was lost: everything the old leader's connection committed was
  // committed under its own epoch (the takeover waits for a write holding the lease row), and
  // the new leader wrote under its own.
  const WriteAudit writes = cluster_->Writes();
  EXPECT_TRUE(OneWriterPerEpoch(writes));
  EXPECT_EQ(EpochsOf(writes, old_app), std::set<int64_t>{epoch}) << DescribeWrites(writes);
  EXPECT_EQ(EpochsOf(writes, cluster_->AppName(fresh)), std::set<int64_t>{new_epoch})
      << DescribeWrites(writes);

  // Nothing sent after the lease was lost: an agent that had seen the new epoch refuses, and
  // logs, anything older; a task or gate check of the old epoch can only reach it if the old
  // leader sent it after the agent had left it (a welcome, from a new stream the old leader
  // accepted in the moment before it noticed, is harmless and refused as well).
  const std::string of_old_epoch = "of leader epoch " + std::to_string(epoch) + " from ";
  size_t refused_welcomes = 0;
  for (const auto& host : Hosts()) {
    const std::string agent_log = cluster_->AgentLog(host);
    EXPECT_EQ(CountOccurrences(agent_log, "refused a task " + of_old_epoch), 0u)
        << host << " was sent a task by the deposed leader after it had seen the new one";
    EXPECT_EQ(CountOccurrences(agent_log, "refused a gate check " + of_old_epoch), 0u)
        << host << " was sent a gate check by the deposed leader after it had seen the new one";
    refused_welcomes += CountOccurrences(agent_log, "refused a welcome " + of_old_epoch);
  }
  std::cerr << "[ha] frozen leader round " << round << ": " << refused_welcomes
            << " welcome(s) of the old epoch refused by agents; the old leader held back "
            << CountOccurrences(log, "not sending to ") << " message(s)\n";
  ExpectAgentsFollowedEpochsForward();
}

TEST_F(HaFailoverTest, AFrozenLeaderNeitherCommitsNorSendsAfterLosingTheLease) {
  std::mt19937 rng = TestRng();
  const int rounds = Rounds();
  for (int round = 1; round <= rounds && !HasFailure(); ++round) {
    SCOPED_TRACE("round " + std::to_string(round) +
                 " of LOCKSTEP_HA_SEED=" + std::to_string(BaseSeed()));
    FrozenLeaderRound(rng, round);
    if (HasFatalFailure()) return;
    if (!HasFailure()) cluster_.reset();
  }
}

// 3. PostgreSQL dies mid-rollout and comes back. The leader, unable to renew, stops (75) once
//    its ttl is over; a supervisor (the test) restarts every lockstepd that exited, once the
//    database is back. Either at once (often within the lease ttl) or only after the leader
//    gave up, at random. The release still succeeds, one version everywhere, each hook once.
void HaFailoverTest::PostgresRestartRound(std::mt19937& rng, int round) {
  ClusterSetup setup;
  setup.server = own_server_.get();
  setup.lease_ttl = "2s";
  ASSERT_NO_FATAL_FAILURE(Start(PipelineYaml(PipelineSpec()), setup));
  Fleet& fleet = cluster_->fleet();
  AppBehaviour slow;
  slow.start_sleep = "0.5";
  const int64_t id = Create(fleet.ServeApp("v2", slow));
  ASSERT_GT(id, 0);
  const size_t leader = Leader();

  ASSERT_TRUE(WaitEvents(static_cast<size_t>(Uniform(rng, 1, 7)), "start", "v2", seconds(60)));
  const bool at_once = Uniform(rng, 0, 1) == 1;
  own_server_->Kill();
  const auto killed = Clock::now();
  if (!at_once) {
    const int gave_up = cluster_->WaitExit(leader, seconds(20));
    EXPECT_EQ(gave_up, kLostLease)
        << "a leader that cannot renew its lease must stop once its ttl is over";
  }
  const int64_t down_ms = ElapsedMs(killed);
  Status restarted = own_server_->Restart();
  ASSERT_TRUE(restarted.ok()) << restarted.ToString() << "\n" << own_server_->LogTail();

  // The supervisor: every lockstepd that exited is started again (a bounded number of times).
  std::string exits;
  int restarts = 0;
  json last = json::object();
  bool finished = Fleet::WaitFor(
      [&] {
        for (size_t i = 0; i < cluster_->size(); ++i) {
          if (cluster_->Running(i)) continue;
          const int status = cluster_->WaitExit(i, milliseconds(0));
          exits += " lockstepd " + std::to_string(i) + " exited " + std::to_string(status) + ";";
          EXPECT_EQ(status, kLostLease) << "lockstepd " << i << " exited otherwise than by losing "
                                        << "the lease:\n"
                                        << cluster_->LockstepdLog(i);
          if (restarts < 12) {
            cluster_->StartLockstepd(i);
            ++restarts;
          }
        }
        json now = Show(id);
        if (!now.empty()) last = now;
        return Bool(now, "final");
      },
      seconds(120));
  std::cerr << "[ha] postgres restart round " << round << ": database down " << down_ms << " ms ("
            << (at_once ? "restarted at once" : "restarted after the leader gave up") << ");"
            << (exits.empty() ? " no lockstepd exited" : exits) << "\n";
  ASSERT_TRUE(finished) << "release " << id
                        << " did not end within 120 s of the restart: " << last.dump(2);
  ASSERT_EQ(Str(last, "state"), "succeeded") << last.dump(2);
  ASSERT_GE(cluster_->WaitForLeader(0, seconds(10)), 0);
  ExpectFleetOn("v2");
  ExpectEachHostActivatedOnce("v2");
  ExpectOnlyRelease(id, "v2");
  ExpectOneWriterPerEpoch();
  ExpectAgentsFollowedEpochsForward();
}

TEST_F(HaFailoverTest, PostgresRestartMidRolloutStillFinishes) {
  std::mt19937 rng = TestRng();
  // A server of its own: this test kills it.
  auto started = PostgresServer::Start();
  ASSERT_TRUE(started.ok()) << started.status().ToString();
  own_server_ = std::move(started).value();
  const int rounds = Rounds();
  for (int round = 1; round <= rounds && !HasFailure(); ++round) {
    SCOPED_TRACE("round " + std::to_string(round) +
                 " of LOCKSTEP_HA_SEED=" + std::to_string(BaseSeed()));
    PostgresRestartRound(rng, round);
    if (HasFatalFailure()) return;
    if (!HasFailure()) cluster_.reset();
  }
}

// 4. GitHub delivers the same signed push to a standby (307 to the leader), to the leader
//    (202), to the leader again (200, duplicate), and, after the leader died while the
//    release waited for its artifact, to the new leader (200, the same duplicate). One
//    release; the new leader took over the wait for the artifact and the release goes out.
TEST_F(HaFailoverTest, TheSameWebhookDeliveredToTwoLockstepdMakesOneRelease) {
  TestHttpServer ci;  // where CI publishes artifacts; nothing yet
  ClusterSetup setup;
  setup.files["github-secret"] = std::string(kSecret) + "\n";
  PipelineSpec spec;
  spec.trigger = "trigger: {github: {repository: acme/shop, branch: main, artifact: \"" +
                 ci.Url("/a/{sha}.tar.gz") + "\", secret_file: \"@DIR@/github-secret\"}}\n";
  ASSERT_NO_FATAL_FAILURE(Start(PipelineYaml(spec), setup));
  const size_t leader = Leader();
  const int64_t epoch = cluster_->HealthOf(leader).epoch;
  const size_t standby = (leader + 1) % cluster_->size();

  const std::string body = PushBody(kCommit);
  const std::string signature = GithubSignature(kSecret, body);
  auto deliver = [&](size_t slot) {
    httplib::Headers h = {{"X-GitHub-Event", "push"},
                          {"X-GitHub-Delivery", "ha-delivery-1"},
                          {"X-Hub-Signature-256", signature}};
    return HttpCall(cluster_->http_port(slot), "POST", "/hooks/github", h, body);
  };

  HttpReply to_standby = deliver(standby);
  EXPECT_EQ(to_standby.status, 307) << to_standby.raw;
  EXPECT_EQ(to_standby.location, cluster_->http_url(leader) + "/hooks/github");
  HttpReply first = deliver(leader);
  ASSERT_EQ(first.status, 202) << first.raw;
  const json release =
      first.body.is_object() ? first.body.value("release", json::object()) : json::object();
  const int64_t id = Int(release, "id");
  ASSERT_GT(id, 0) << first.raw;
  EXPECT_EQ(Str(release, "state"), "waiting_for_artifact");
  HttpReply again = deliver(leader);
  EXPECT_EQ(again.status, 200) << again.raw;
  EXPECT_EQ(Int(again.body, "duplicate"), id) << again.raw;

  // The leader dies while the release waits for its artifact; the delivery is retried on the
  // new leader.
  cluster_->Kill(leader);
  const int successor = cluster_->WaitForLeader(epoch, seconds(20));
  ASSERT_GE(successor, 0) << "no standby took over";
  const size_t fresh = static_cast<size_t>(successor);
  HttpReply redelivered = deliver(fresh);
  EXPECT_EQ(redelivered.status, 200) << redelivered.raw;
  EXPECT_EQ(Int(redelivered.body, "duplicate"), id) << redelivered.raw;
  // A standby left points at the new leader (once its next claim told it who leads).
  for (size_t i = 0; i < cluster_->size(); ++i) {
    if (i == fresh || i == leader) continue;
    HttpReply r;
    bool points = Fleet::WaitFor(
        [&] {
          r = deliver(i);
          return r.status == 307 && r.location == cluster_->http_url(fresh) + "/hooks/github";
        },
        seconds(10));
    EXPECT_TRUE(points) << "lockstepd " << i << " answered " << r.status << " to " << r.location
                        << ": " << r.raw;
  }

  // CI publishes the artifact; the new leader fetches it and the release goes out.
  const std::string version = std::string(kCommit).substr(0, 12);
  auto bytes = TarGzBytes(Fleet::AppEntries(version));
  ASSERT_TRUE(bytes.ok()) << bytes.status().ToString();
  ci.Serve("/a/" + std::string(kCommit) + ".tar.gz", *bytes);
  json done = WaitFinal(id);
  EXPECT_EQ(Str(done, "state"), "succeeded") << done.dump(2);
  EXPECT_EQ(Str(done, "commit"), kCommit);
  EXPECT_EQ(Str(done, "sha256"), Sha256Hex(*bytes));
  ExpectFleetOn(version);
  ExpectEachHostActivatedOnce(version);
  ExpectOnlyRelease(id, version);
  ExpectOneWriterPerEpoch();
  cluster_.reset();  // before the artifact server goes
}

// 5. `lockstep --server A,B,C release create` started right after kill -9 of the leader, while
//    no lockstepd leads: it tries again until the new leader answers, and one release exists.
//    Underneath, the request id: the same request sent to a leader and, after a failover, to
//    its successor (a retry whose first answer was lost) is one release.
TEST_F(HaFailoverTest, ReleaseCreateRetriedAcrossAFailoverMakesOneRelease) {
  ClusterSetup setup;
  setup.agents = false;
  // Long enough that the CLI, started right after the kill, surely meets no leader at first
  // (a killed leader's lease has at least 2/3 of its ttl left).
  setup.lease_ttl = "3s";
  ASSERT_NO_FATAL_FAILURE(Start(PipelineYaml(PipelineSpec()), setup));
  Fleet& fleet = cluster_->fleet();
  const Artifact v7 = fleet.ServeApp("v7");
  const size_t leader = Leader();
  const int64_t epoch = cluster_->HealthOf(leader).epoch;
  const std::string servers = cluster_->ServerList();  // the leader first, as a client has it

  cluster_->Kill(leader);
  const auto killed = Clock::now();
  CommandResult r =
      RunCommand({BinPath("lockstep"), "--server", servers, "--token", cluster_->admin_token(),
                  "--output", "json", "release", "create", "--pipeline", kPipeline, "--version",
                  v7.version, "--artifact", v7.url, "--sha256", v7.sha256},
                 seconds(60));
  std::cerr << "[ha] release create answered " << r.exit_code << " " << ElapsedMs(killed)
            << " ms after kill -9 of the leader\n";
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.err.find("trying again"), std::string::npos)
      << "the CLI found a leader at once: the failover was not exercised\n"
      << r.err;
  const int64_t id = Int(json::parse(r.out, nullptr, /*allow_exceptions=*/false), "id");
  ASSERT_GT(id, 0) << r.out;
  const int successor = cluster_->WaitForLeader(epoch, seconds(20));
  ASSERT_GE(successor, 0);
  ExpectOnlyRelease(id, "v7");

  const Artifact v8 = fleet.ServeApp("v8");
  v1::CreateReleaseRequest req;
  req.set_pipeline(kPipeline);
  req.set_version(v8.version);
  req.set_artifact_url(v8.url);
  req.set_sha256(v8.sha256);
  req.set_request_id("ha-test-" + std::to_string(BaseSeed()));
  const size_t fresh = static_cast<size_t>(successor);
  v1::Release made;
  grpc::Status st = CreateOver(cluster_->grpc_address(fresh), cluster_->admin_token(), req, &made);
  ASSERT_TRUE(st.ok()) << st.error_message();
  const int64_t fresh_epoch = cluster_->HealthOf(fresh).epoch;
  cluster_->Kill(fresh);
  const int third = cluster_->WaitForLeader(fresh_epoch, seconds(20));
  ASSERT_GE(third, 0);
  v1::Release again;
  st = CreateOver(cluster_->grpc_address(static_cast<size_t>(third)), cluster_->admin_token(), req,
                  &again);
  ASSERT_TRUE(st.ok()) << st.error_message();
  EXPECT_EQ(again.id(), made.id()) << "the retry made a second release";
  // Another release under the same id is refused, not taken for the first.
  req.set_version("v9");
  v1::Release refused;
  st = CreateOver(cluster_->grpc_address(static_cast<size_t>(third)), cluster_->admin_token(), req,
                  &refused);
  EXPECT_EQ(st.error_code(), grpc::StatusCode::FAILED_PRECONDITION) << st.error_message();

  json list = Releases();
  int v8s = 0;
  for (const auto& rel : list) v8s += Str(rel, "version") == "v8" ? 1 : 0;
  EXPECT_EQ(v8s, 1) << list.dump(2);
  EXPECT_EQ(list.size(), 2u) << list.dump(2);
  EXPECT_EQ(AuditCount(Audit(), "release.create", "release/" + std::to_string(made.id())), 1);
  ExpectOneWriterPerEpoch();
}

// 7. A standby says so on /healthz and /metrics, answers every other HTTP request with a 307 to
//    the same path at the leader, refuses gRPC calls naming the leader, and the CLI given only
//    the standby follows it to the leader.
// A standby reloaded with SIGHUP (systemctl reload on every machine) keeps the new pipelines
// and puts them in force when it starts to lead, instead of waiting for an engine it does not
// run.
TEST_F(HaFailoverTest, AStandbyReloadedBySighupLeadsWithTheNewPipelines) {
  ClusterSetup setup;
  setup.agents = false;
  ASSERT_NO_FATAL_FAILURE(Start(PipelineYaml(PipelineSpec()), setup));
  const size_t leader = Leader();
  const int64_t epoch = cluster_->HealthOf(leader).epoch;
  const size_t reloaded = (leader + 1) % cluster_->size();
  const size_t other = (leader + 2) % cluster_->size();
  cluster_->fleet().WritePipeline("second.yaml", R"(pipeline: second
regions: [us-east-1]
waves:
  - name: all
    select: {per_region: "100%"}
)");
  const auto sent = Clock::now();
  ASSERT_EQ(::kill(cluster_->pid(reloaded), SIGHUP), 0);
  ASSERT_TRUE(Fleet::WaitFor(
      [&] {
        return cluster_->LockstepdLog(reloaded).find("put in force when this lockstepd leads") !=
               std::string::npos;
      },
      seconds(10)))
      << cluster_->LockstepdLog(reloaded);
  EXPECT_LT(Clock::now() - sent, seconds(5)) << "the reload waited for an engine";
  // Only the reloaded standby is left to lead.
  EXPECT_EQ(cluster_->Stop(other), 0);
  EXPECT_EQ(cluster_->Stop(leader), 0);
  const int successor = cluster_->WaitForLeader(epoch, seconds(20));
  ASSERT_EQ(successor, static_cast<int>(reloaded));
  bool listed = Fleet::WaitFor(
      [&] {
        CommandResult r = cluster_->Cli({"status", "second"});
        return r.exit_code == 0;
      },
      seconds(10));
  EXPECT_TRUE(listed) << cluster_->Cli({"status"}).out << cluster_->LockstepdLog(reloaded);
}

TEST_F(HaFailoverTest, StandbyRedirects) {
  ClusterSetup setup;
  setup.agents = false;
  ASSERT_NO_FATAL_FAILURE(Start(PipelineYaml(PipelineSpec()), setup));
  const size_t leader = Leader();
  const int64_t epoch = cluster_->HealthOf(leader).epoch;
  const std::string leader_url = cluster_->http_url(leader);
  for (size_t i = 0; i < cluster_->size(); ++i) {
    // A standby learns who leads on its next claim (every third of the ttl).
    Health h;
    bool agreed = Fleet::WaitFor(
        [&] {
          h = cluster_->HealthOf(i);
          return h.status == 200 && h.epoch == epoch && h.leader == leader_url;
        },
        seconds(5));
    EXPECT_TRUE(agreed) << "lockstepd " << i << ": /healthz " << h.status << " epoch " << h.epoch
                        << " leader " << h.leader;
    EXPECT_EQ(h.role, i == leader ? "leader" : "standby") << "lockstepd " << i;
    HttpReply metrics = HttpCall(cluster_->http_port(i), "GET", "/metrics", {});
    EXPECT_EQ(metrics.status, 200) << metrics.raw;
    EXPECT_NE(
        metrics.raw.find(std::string("\nlockstep_leader ") + (i == leader ? "1" : "0") + "\n"),
        std::string::npos)
        << "lockstepd " << i << ":\n"
        << metrics.raw;
    EXPECT_NE(metrics.raw.find("\nlockstep_lease_epoch " + std::to_string(epoch) + "\n"),
              std::string::npos)
        << "lockstepd " << i << ":\n"
        << metrics.raw;
  }

  const size_t standby = (leader + 1) % cluster_->size();
  const httplib::Headers auth = {{"Authorization", "Bearer " + cluster_->admin_token()}};
  const std::string path = "/api/v1/releases?limit=5";
  HttpReply redirected = HttpCall(cluster_->http_port(standby), "GET", path, auth);
  EXPECT_EQ(redirected.status, 307) << redirected.raw;
  EXPECT_EQ(redirected.location, leader_url + path);
  HttpReply followed = HttpGetUrl(redirected.location, auth);
  EXPECT_EQ(followed.status, 200) << followed.raw;
  EXPECT_TRUE(followed.body.is_array()) << followed.raw;
  // A write is pointed at the leader too, and the standby does nothing of it.
  HttpReply pause_reply = HttpCall(cluster_->http_port(standby), "POST",
                                   "/api/v1/pipelines/monolith/pause", auth, "{}");
  EXPECT_EQ(pause_reply.status, 307) << pause_reply.raw;
  EXPECT_EQ(pause_reply.location, leader_url + "/api/v1/pipelines/monolith/pause");
  json status = cluster_->CliJson({"status", kPipeline});
  ASSERT_TRUE(status.is_array() && !status.empty()) << status.dump(2);
  EXPECT_FALSE(Bool(status[0], "paused")) << status.dump(2);
  EXPECT_EQ(AuditCount(Audit(), "pipeline.pause"), 0);

  // The CLI given only the standby follows it to the leader.
  CommandResult text = RunCommand({BinPath("lockstep"), "--server", cluster_->grpc_address(standby),
                                   "--token", cluster_->admin_token(), "status", kPipeline},
                                  seconds(30));
  EXPECT_EQ(text.exit_code, 0) << text.err;
  EXPECT_NE(text.out.find(kPipeline), std::string::npos) << text.out;
  CommandResult listed =
      RunCommand({BinPath("lockstep"), "--server", cluster_->grpc_address(standby), "--token",
                  cluster_->admin_token(), "--output", "json", "release", "list"},
                 seconds(30));
  EXPECT_EQ(listed.exit_code, 0) << listed.err;
  EXPECT_TRUE(json::parse(listed.out, nullptr, /*allow_exceptions=*/false).is_array())
      << listed.out;

  // gRPC: the refusal names the leader in the words agents and the CLI look for.
  auto stub = v1::ControlService::NewStub(
      grpc::CreateChannel(cluster_->grpc_address(standby), grpc::InsecureChannelCredentials()));
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + seconds(10));
  ctx.AddMetadata("authorization", "Bearer " + cluster_->admin_token());
  v1::StatusRequest req;
  v1::StatusResponse resp;
  grpc::Status st = stub->GetStatus(&ctx, req, &resp);
  EXPECT_EQ(st.error_code(), grpc::StatusCode::UNAVAILABLE) << st.error_message();
  EXPECT_EQ(st.error_message(),
            "this lockstepd is a standby; the leader is at " + cluster_->grpc_address(leader));

  // Without a token a standby gives away where the leader is, nothing more: the redirect (the
  // leader then refuses the call), and the same refusal over gRPC.
  HttpReply anonymous = HttpCall(cluster_->http_port(standby), "GET", path, {});
  EXPECT_EQ(anonymous.status, 307) << anonymous.raw;
  EXPECT_EQ(anonymous.location, leader_url + path);
  EXPECT_EQ(HttpGetUrl(anonymous.location, {}).status, 401);
  grpc::ClientContext no_token;
  no_token.set_deadline(std::chrono::system_clock::now() + seconds(10));
  grpc::Status refused = stub->GetStatus(&no_token, req, &resp);
  EXPECT_EQ(refused.error_code(), grpc::StatusCode::UNAVAILABLE) << refused.error_message();
  EXPECT_EQ(refused.error_message(),
            "this lockstepd is a standby; the leader is at " + cluster_->grpc_address(leader));
  EXPECT_EQ(resp.pipelines_size(), 0);
}

// 7b. SIGTERM of the leader gives the lease up: a standby leads within its claim period, long
//     before the lease would have expired (ttl 9 s: a kill -9 leaves at least 6 s of it).
TEST_F(HaFailoverTest, ACleanStopHandsTheLeaseOverWithoutWaitingForItsTtl) {
  ClusterSetup setup;
  setup.agents = false;
  setup.lockstepd = 2;
  setup.lease_ttl = "9s";
  ASSERT_NO_FATAL_FAILURE(Start(PipelineYaml(PipelineSpec()), setup));
  const size_t leader = Leader();
  const int64_t epoch = cluster_->HealthOf(leader).epoch;
  const int code = cluster_->Stop(leader);
  const auto stopped = Clock::now();
  EXPECT_EQ(code, 0) << cluster_->LockstepdLog(leader);
  EXPECT_NE(cluster_->LockstepdLog(leader).find("gave up the leader lease (epoch " +
                                                std::to_string(epoch) + ")"),
            std::string::npos)
      << cluster_->LockstepdLog(leader);
  const int successor = cluster_->WaitForLeader(epoch, seconds(20));
  const int64_t took = ElapsedMs(stopped);
  ASSERT_GE(successor, 0) << "no standby took over";
  std::cerr << "[ha] a standby led " << took << " ms after the leader's clean stop\n";
  EXPECT_LT(took, 5000) << "the standby waited for the lease to expire";
  EXPECT_EQ(cluster_->Cli({"status"}).exit_code, 0);
  ExpectOneWriterPerEpoch();
}

// 8. A leader frozen long enough to lose its lease, whose successor then stopped cleanly (the
//    lease given up, nobody holding it), is resumed. It must not take the lease back: its store
//    stays fenced to its old epoch, so as "leader" it could never write again and would keep
//    every standby from leading. It exits 75, and the restarted processes lead and write.
TEST_F(HaFailoverTest, AResumedLeaderWhoseSuccessorLeftDoesNotLeadAgain) {
  ClusterSetup setup;
  setup.agents = false;
  setup.lockstepd = 2;
  ASSERT_NO_FATAL_FAILURE(Start(PipelineYaml(PipelineSpec()), setup));
  const size_t first = Leader();
  const size_t second = 1 - first;
  const int64_t epoch = cluster_->HealthOf(first).epoch;
  cluster_->Freeze(first);
  ASSERT_EQ(cluster_->WaitForLeader(epoch, seconds(20)), static_cast<int>(second));
  const int64_t second_epoch = cluster_->HealthOf(second).epoch;
  EXPECT_EQ(cluster_->Stop(second), 0) << cluster_->LockstepdLog(second);
  cluster_->Thaw(first);
  const int code = cluster_->WaitExit(first, seconds(10));
  if (code == -1) {
    Health h = cluster_->HealthOf(first);
    ADD_FAILURE() << "the resumed leader (epoch " << epoch << ") still runs 10 s later; /healthz: "
                  << "role=" << h.role << " epoch=" << h.epoch
                  << (h.role == "leader" && h.epoch > second_epoch
                          ? ": it took the lease back at a new epoch while its store stays fenced "
                            "to its old one, a leader that can never write"
                          : "");
  }
  EXPECT_EQ(code, kLostLease) << cluster_->LockstepdLog(first);

  // A supervisor starts both again: one leads, at a higher epoch, and writes.
  if (cluster_->Running(first)) cluster_->Kill(first);
  ASSERT_NO_FATAL_FAILURE(cluster_->StartLockstepd(first));
  ASSERT_NO_FATAL_FAILURE(cluster_->StartLockstepd(second));
  ASSERT_GE(cluster_->WaitForLeader(second_epoch, seconds(20)), 0);
  CommandResult made = cluster_->Cli({"tokens", "create", "--role", "viewer", "--name", "after"});
  EXPECT_EQ(made.exit_code, 0) << made.err;
  ExpectOneWriterPerEpoch();
}

// ==============================================================================================
// 6. One SQLite store has one owner: a second lockstepd on the same data directory refuses to
//    start at once, naming the first's pid; the lock goes with the process, however it ends.

TEST(HaSqliteTest, ASecondLockstepdOnTheSameSqliteDataDirRefusesToStart) {
  Fleet fleet;
  fleet.WritePipeline("monolith.yaml", PipelineYaml(PipelineSpec()));
  ASSERT_NO_FATAL_FAILURE(fleet.StartOrchestrator());
  const pid_t first = fleet.orchestrator_pid();
  const std::string port_file = fleet.dir() + "/second-ports.json";
  auto second =
      Process::Start({BinPath("lockstepd"), "--data-dir", fleet.dir() + "/data", "--pipelines",
                      fleet.pipelines_dir(), "--grpc-listen", "127.0.0.1:0", "--http-listen",
                      "127.0.0.1:0", "--port-file", port_file},
                     fleet.dir() + "/logs/lockstepd-second.log");
  ASSERT_TRUE(second.ok()) << second.status().ToString();
  const auto started = Clock::now();
  const int code = (*second)->Wait(seconds(10));
  const int64_t took = ElapsedMs(started);
  const std::string log = ReadFile((*second)->log_path());
  EXPECT_NE(code, -1) << "the second lockstepd still runs:\n" << log;
  EXPECT_EQ(code, 2) << log;
  EXPECT_LT(took, 5000) << "not at once";
  EXPECT_NE(log.find("in use by another lockstepd (pid " + std::to_string(first) + ","),
            std::string::npos)
      << log;
  EXPECT_FALSE(std::filesystem::exists(port_file));

  // The first is unharmed and leads.
  EXPECT_EQ(fleet.Cli({"status"}).exit_code, 0);
  HttpReply health = HttpCall(fleet.http_port(), "GET", "/healthz", {});
  EXPECT_EQ(health.status, 200) << health.raw;
  EXPECT_EQ(Str(health.body, "role"), "leader") << health.raw;

  // kill -9 frees the directory: the next lockstepd starts on it at once.
  fleet.KillOrchestrator();
  ASSERT_NO_FATAL_FAILURE(fleet.StartOrchestrator());
  EXPECT_EQ(fleet.Cli({"status"}).exit_code, 0);
}

}  // namespace
}  // namespace lockstep::testing
