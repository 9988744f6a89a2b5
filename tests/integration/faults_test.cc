// Fault injection against the real binaries on loopback. Each test is one promise of the
// product, proven by breaking something real and checking what users can observe: the
// store (through the CLI and the HTTP API), the agents' `current` links and release
// directories, the CLI's exit codes and messages, and HTTP status codes.
//
//  - lockstepd killed with SIGKILL at random moments of many rollouts, also while a release
//    rolls back and while a wave waits for its manual approval;
//  - an agent killed with SIGKILL while it fetches, unpacks, runs each hook, and switches;
//  - an agent frozen with SIGSTOP (a partition: its stream stays open, nothing comes back);
//  - an artifact server that is too slow, answers 500, truncates the body or serves other
//    bytes;
//  - a store whose disk refuses writes;
//  - an orchestrator that tries to make an agent run something that is not a hook of a
//    verified artifact.
//
// Random choices come from one seed, printed at the start of each test: set
// LOCKSTEP_FAULT_SEED to replay a run. LOCKSTEP_FAULT_ITERATIONS sets how many rollouts the
// lockstepd kill test goes through (default 8; scripts/faults.sh runs 50) and how many
// rounds of agent kills are made (one round per 8 iterations, at least one).

#include <grpcpp/grpcpp.h>
#include <gtest/gtest.h>
#include <httplib.h>
#include <signal.h>
#include <sqlite3.h>
#include <sys/resource.h>
#include <sys/stat.h>

#include <condition_variable>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <map>
#include <mutex>
#include <random>
#include <set>
#include <thread>

#include "common/sha256.h"
#include "proto/lockstep.grpc.pb.h"
#include "tests/integration/fleet.h"

namespace lockstep::testing {
namespace {

using nlohmann::json;
namespace fs = std::filesystem;
using std::chrono::milliseconds;
using std::chrono::seconds;
using Clock = std::chrono::steady_clock;

int EnvInt(const char* name, int fallback) {
  const char* v = std::getenv(name);
  if (v == nullptr || *v == '\0') return fallback;
  return std::atoi(v);
}

int Iterations() { return std::max(1, EnvInt("LOCKSTEP_FAULT_ITERATIONS", 8)); }

// The seed of this test's random choices, logged so that a failing run can be replayed.
uint32_t Seed() {
  uint32_t seed = static_cast<uint32_t>(EnvInt("LOCKSTEP_FAULT_SEED", 20261125));
  const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
  std::cerr << "[faults] " << (info ? info->name() : "") << ": LOCKSTEP_FAULT_SEED=" << seed
            << " LOCKSTEP_FAULT_ITERATIONS=" << Iterations() << "\n";
  ::testing::Test::RecordProperty("seed", std::to_string(seed));
  return seed;
}

int64_t ElapsedMs(Clock::time_point since) {
  return std::chrono::duration_cast<milliseconds>(Clock::now() - since).count();
}

std::string Slurp(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

// Every entry under `dir`, not following links: relative path -> contents ("<dir>" for a
// directory, "<link>" for anything else that is not a regular file).
std::map<std::string, std::string> TreeOf(const fs::path& dir) {
  std::map<std::string, std::string> out;
  std::error_code ec;
  for (fs::recursive_directory_iterator it(dir, ec), end; !ec && it != end; it.increment(ec)) {
    std::string rel = fs::relative(it->path(), dir).string();
    if (it->is_symlink()) {
      out[rel] = "<link>";
    } else if (it->is_directory()) {
      out[rel] = "<dir>";
    } else if (it->is_regular_file()) {
      out[rel] = Slurp(it->path());
    } else {
      out[rel] = "<other>";
    }
  }
  return out;
}

// What an unpacked release of these entries looks like on disk: the artifact's files and
// directories (directories a path implies included) plus the agent's completion marker.
std::map<std::string, std::string> ExpectedTree(const std::vector<TarEntry>& entries) {
  std::map<std::string, std::string> out;
  for (const auto& e : entries) {
    fs::path p(e.path);
    for (fs::path parent = p.parent_path(); !parent.empty(); parent = parent.parent_path()) {
      out[parent.string()] = "<dir>";
    }
    out[e.path] = e.type == TarEntry::Type::kDir ? "<dir>" : e.contents;
  }
  return out;
}

// ROOT/current names releases/<version> and that directory holds exactly the release's
// files with their contents, and its completion marker.
::testing::AssertionResult CurrentIsComplete(
    const std::string& root, const std::map<std::string, std::vector<TarEntry>>& releases) {
  std::error_code ec;
  fs::path target = fs::read_symlink(fs::path(root) / "current", ec);
  if (ec) return ::testing::AssertionFailure() << root << "/current is not a symlink";
  std::string version = target.filename().string();
  if (target.parent_path() != "releases") {
    return ::testing::AssertionFailure() << "current -> " << target << " is not under releases/";
  }
  auto it = releases.find(version);
  if (it == releases.end()) {
    return ::testing::AssertionFailure() << "current -> " << target << ": unknown release";
  }
  auto tree = TreeOf(fs::path(root) / "releases" / version);
  if (tree.erase(".lockstep-release") != 1) {
    return ::testing::AssertionFailure() << "current -> " << target << " has no completion marker";
  }
  auto want = ExpectedTree(it->second);
  if (tree != want) {
    std::string diff;
    for (const auto& [path, contents] : want) {
      auto got = tree.find(path);
      if (got == tree.end()) {
        diff += " missing " + path + ";";
      } else if (got->second != contents) {
        diff += " differs " + path + ";";
      }
    }
    for (const auto& [path, contents] : tree) {
      if (!want.count(path)) diff += " extra " + path + ";";
    }
    return ::testing::AssertionFailure()
           << "current -> " << target << " is not the release:" << diff;
  }
  return ::testing::AssertionSuccess() << version;
}

// A release directory is either absent or complete: half-written trees live only in tmp/.
::testing::AssertionResult AbsentOrComplete(const std::string& root, const std::string& version,
                                            const std::vector<TarEntry>& entries) {
  fs::path dir = fs::path(root) / "releases" / version;
  if (!fs::exists(dir)) return ::testing::AssertionSuccess();
  auto tree = TreeOf(dir);
  if (tree.erase(".lockstep-release") != 1) {
    return ::testing::AssertionFailure() << dir << " exists without its completion marker";
  }
  if (tree != ExpectedTree(entries)) {
    return ::testing::AssertionFailure() << dir << " exists but is not the whole release";
  }
  return ::testing::AssertionSuccess();
}

// An artifact server with faults, per artifact: serve normally, trickle the body (a chunk per
// interval), answer 500, cut the body short of its Content-Length, or serve other bytes of
// the same length. Counts requests and body bytes sent per artifact.
class ArtifactServer {
 public:
  enum class Fault { kNone, kTrickle, kStatus500, kTruncate, kOtherBytes };

  ArtifactServer() {
    server_.new_task_queue = [] { return new httplib::ThreadPool(16); };
    server_.Get(R"(/a/([^/]+)\.tar\.gz)",
                [this](const httplib::Request& req, httplib::Response& res) { Handle(req, res); });
    port_ = server_.bind_to_any_port("127.0.0.1");
    if (port_ <= 0) {
      ADD_FAILURE() << "artifact server cannot bind 127.0.0.1";
      return;
    }
    thread_ = std::thread([this] { server_.listen_after_bind(); });
    auto give_up = Clock::now() + seconds(5);
    while (!server_.is_running() && Clock::now() < give_up) {
      std::this_thread::sleep_for(milliseconds(1));
    }
  }
  ~ArtifactServer() {
    {
      std::lock_guard lock(mu_);
      stopping_ = true;
    }
    cv_.notify_all();
    server_.stop();
    if (thread_.joinable()) thread_.join();
  }

  Artifact Put(const std::string& version, const std::vector<TarEntry>& entries) {
    auto bytes = TarGzBytes(entries);
    EXPECT_TRUE(bytes.ok()) << bytes.status().ToString();
    std::lock_guard lock(mu_);
    Route& r = routes_[version];
    r.bytes = bytes.ok() ? *bytes : "";
    return Artifact{version,
                    "http://127.0.0.1:" + std::to_string(port_) + "/a/" + version + ".tar.gz",
                    Sha256Hex(r.bytes)};
  }

  void SetFault(const std::string& version, Fault fault, size_t chunk = 8192,
                milliseconds interval = milliseconds(50)) {
    {
      std::lock_guard lock(mu_);
      Route& r = routes_[version];
      r.fault = fault;
      r.chunk = chunk;
      r.interval = interval;
    }
    cv_.notify_all();
  }

  int Hits(const std::string& version) {
    std::lock_guard lock(mu_);
    return routes_[version].hits;
  }
  int64_t BytesSent(const std::string& version) {
    std::lock_guard lock(mu_);
    return routes_[version].sent;
  }

 private:
  struct Route {
    std::string bytes;
    Fault fault = Fault::kNone;
    size_t chunk = 8192;
    milliseconds interval{50};
    int hits = 0;
    int64_t sent = 0;
  };

  void Handle(const httplib::Request& req, httplib::Response& res) {
    const std::string version = req.matches[1];
    std::string bytes;
    Fault fault;
    {
      std::lock_guard lock(mu_);
      auto it = routes_.find(version);
      if (it == routes_.end()) {
        res.status = 404;
        return;
      }
      ++it->second.hits;
      bytes = it->second.bytes;
      fault = it->second.fault;
    }
    switch (fault) {
      case Fault::kStatus500:
        res.status = 500;
        res.set_content("internal error\n", "text/plain");
        return;
      case Fault::kOtherBytes:
        for (char& c : bytes) c = static_cast<char>(~c);
        break;
      default:
        break;
    }
    auto body = std::make_shared<std::string>(std::move(bytes));
    res.set_content_provider(
        body->size(), "application/octet-stream",
        [this, body, version, fault](size_t offset, size_t length, httplib::DataSink& sink) {
          size_t n = length;
          if (fault == Fault::kTruncate) {
            // Claims the whole length, sends half, hangs up.
            size_t half = body->size() / 2;
            if (offset < half) Send(version, sink, body->data() + offset, half - offset);
            return false;
          }
          {
            std::unique_lock lock(mu_);
            Route& r = routes_[version];
            if (r.fault == Fault::kTrickle) {
              if (cv_.wait_for(lock, r.interval, [&] { return stopping_; })) return false;
              // The fault may have been lifted while waiting: then the rest goes at once.
              if (r.fault == Fault::kTrickle) n = std::min(length, r.chunk);
            }
            if (stopping_) return false;
          }
          return Send(version, sink, body->data() + offset, n);
        });
  }

  bool Send(const std::string& version, httplib::DataSink& sink, const char* data, size_t n) {
    if (!sink.write(data, n)) return false;
    std::lock_guard lock(mu_);
    routes_[version].sent += static_cast<int64_t>(n);
    return true;
  }

  httplib::Server server_;
  std::thread thread_;
  int port_ = 0;
  std::mutex mu_;
  std::condition_variable cv_;
  bool stopping_ = false;                // guarded by mu_
  std::map<std::string, Route> routes_;  // guarded by mu_
};

// A hook prologue that parks the hook on one agent when the test arms it: if
// $FAULT_DIR/arm-<name> exists and this is $FAULT_AGENT, the hook consumes the arm file,
// writes its pid to $FAULT_DIR/in-<name> and becomes `sleep 30` (so the test can kill it by
// that pid). A re-run after a restart finds no arm file and carries on.
std::string ParkWhenArmed(const std::string& name) {
  return "if [ \"$LOCKSTEP_AGENT\" = \"$FAULT_AGENT\" ] && [ -e \"$FAULT_DIR/arm-" + name +
         "\" ]; then rm -f \"$FAULT_DIR/arm-" + name + "\"; echo $$ > \"$FAULT_DIR/in-" + name +
         ".tmp\"; mv \"$FAULT_DIR/in-" + name + ".tmp\" \"$FAULT_DIR/in-" + name +
         "\"; exec sleep 30; fi\n";
}

// Like ParkWhenArmed, but the hook only signals that it is about to exit (its last act), so
// that the test can kill the agent right at the switch that follows deploy/stop.
std::string SignalExitWhenArmed(const std::string& name) {
  return "if [ \"$LOCKSTEP_AGENT\" = \"$FAULT_AGENT\" ] && [ -e \"$FAULT_DIR/arm-" + name +
         "\" ]; then rm -f \"$FAULT_DIR/arm-" + name + "\"; : > \"$FAULT_DIR/in-" + name +
         "\"; exit 0; fi\n";
}

class FaultsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    fault_dir_ = fleet_.dir() + "/faults";
    fs::create_directories(fault_dir_);
    fleet_.agent_env["FAULT_DIR"] = fault_dir_;
  }

  void StartFleet(const std::string& yaml, const std::vector<std::string>& hosts) {
    hosts_ = hosts;
    fleet_.WritePipeline("monolith.yaml", yaml);
    fleet_.StartOrchestrator();
    for (const auto& h : hosts_) fleet_.StartAgent(h, RegionOf(h));
    fleet_.WaitForAgents(hosts_.size());
  }

  static std::string RegionOf(const std::string& host) { return host.substr(0, host.rfind('-')); }

  int64_t Create(const Artifact& a) {
    CommandResult r =
        fleet_.Cli({"--output", "json", "release", "create", "--pipeline", "monolith", "--version",
                    a.version, "--artifact", a.url, "--sha256", a.sha256});
    EXPECT_EQ(r.exit_code, 0) << r.err;
    try {
      return json::parse(r.out).value("id", int64_t{0});
    } catch (const json::exception&) {
      ADD_FAILURE() << "no release in: " << r.out << r.err;
      return 0;
    }
  }

  // `lockstep release create --wait`: the JSON of the final release, and the CLI's result.
  json CreateAndWait(const Artifact& a, CommandResult* out = nullptr) {
    CommandResult r = fleet_.Cli({"--output", "json", "release", "create", "--pipeline", "monolith",
                                  "--version", a.version, "--artifact", a.url, "--sha256", a.sha256,
                                  "--wait", "--timeout", "120s"});
    if (out) *out = r;
    try {
      return json::parse(r.out);
    } catch (const json::exception&) {
      ADD_FAILURE() << "release create --wait printed no JSON: " << r.out << r.err;
      return json::object();
    }
  }

  json Show(int64_t id) {
    CommandResult r = fleet_.Cli({"--output", "json", "release", "show", std::to_string(id)});
    if (r.exit_code != 0) return json::object();
    try {
      return json::parse(r.out);
    } catch (const json::exception&) {
      return json::object();
    }
  }

  // Waits for a final state with `lockstep release watch`, which rides out restarts.
  json WaitFinal(int64_t id) {
    CommandResult r = fleet_.Cli(
        {"--output", "json", "release", "watch", std::to_string(id), "--timeout", "120s"},
        seconds(150));
    try {
      return json::parse(r.out);
    } catch (const json::exception&) {
      ADD_FAILURE() << "release watch " << id << " printed no JSON: " << r.out << r.err;
      return json::object();
    }
  }

  json Audit() { return fleet_.CliJson({"audit", "--limit", "100000"}); }

  std::string Desired() {
    json s = fleet_.CliJson({"status", "monolith"});
    return s.is_array() && !s.empty() ? s[0].value("desired_version", "") : "";
  }

  bool EveryHostOn(const std::string& version) {
    for (const auto& h : hosts_) {
      if (fleet_.CurrentOf(h) != version) return false;
    }
    return true;
  }

  // Every host's `current` is `version` (within `timeout`), and lockstepd agrees, with every
  // agent connected (a host that was partitioned is back, not only left where it was).
  void ExpectFleetOn(const std::string& version, const std::string& context,
                     milliseconds timeout = seconds(45)) {
    bool on = Fleet::WaitFor(
        [&] {
          if (!EveryHostOn(version)) return false;
          json agents = fleet_.CliJson({"agents"});
          for (const auto& a : agents) {
            if (a.value("current_version", "") != version || !a.value("connected", false)) {
              return false;
            }
          }
          return true;
        },
        timeout);
    std::string seen;
    for (const auto& h : hosts_) seen += " " + h + "=" + fleet_.CurrentOf(h);
    EXPECT_TRUE(on) << context << ": not every host runs " << version << ":" << seen;
  }

  void Arm(const std::string& name) { std::ofstream(fault_dir_ + "/arm-" + name) << "1\n"; }
  // Waits for a hook's marker $FAULT_DIR/in-<name>, checking every `spin_us` microseconds.
  bool WaitMarker(const std::string& name, milliseconds timeout, int spin_us = 1000) {
    auto deadline = Clock::now() + timeout;
    std::string path = fault_dir_ + "/in-" + name;
    struct stat sb {};
    while (::stat(path.c_str(), &sb) != 0) {
      if (Clock::now() > deadline) return false;
      std::this_thread::sleep_for(std::chrono::microseconds(spin_us));
    }
    return true;
  }
  void KillParkedHook(const std::string& name) {
    std::string pid_text = Slurp(fault_dir_ + "/in-" + name);
    int pid = std::atoi(pid_text.c_str());
    if (pid > 1) ::kill(pid, SIGKILL);
    fs::remove(fault_dir_ + "/in-" + name);
  }

  Fleet fleet_;
  std::string fault_dir_;
  std::vector<std::string> hosts_;
};

// --------------------------------------------------------------------------------------------
// Promise: kill -9 of lockstepd at any moment, then a restart, loses no release, no approval
// and no audit entry, and every rollout ends in a final state with every host on one version.

std::string KillPipeline() {
  return R"(pipeline: monolith
regions: [us-east-1, eu-west-1]
waves:
  - name: canary
    select: {per_region: 1}
    approval: manual
  - name: all
    select: {per_region: "100%"}
health:
  check_hook: true
timeouts: {hook: 10s, fetch: 10s, agent_lost: 10s}
rollback: {automatic: true, tolerate_failed_hosts: 0}
)";
}

class LockstepdKillTest : public FaultsTest {
 protected:
  // Where the release stands, as a label for the tally of kills.
  std::string PhaseOf(int64_t id) {
    json r = Show(id);
    std::string state = r.value("state", "unknown");
    if (state != "rolling") return state;
    int wave = r.value("current_wave", -1);
    if (wave < 0 || !r.contains("waves") || wave >= static_cast<int>(r["waves"].size())) {
      return "rolling";
    }
    return "rolling: wave " + std::to_string(wave + 1) + " " +
           r["waves"][static_cast<size_t>(wave)].value("state", "");
  }

  // kill -9 and restart lockstepd; every audit entry read before the kill is there after it.
  // The phase is what `release show` says just before the kill.
  void KillAndRestart(int64_t id, const std::string& label = "") {
    json before = Audit();
    const std::string phase = label + PhaseOf(id);
    fleet_.KillOrchestrator();
    fleet_.StartOrchestrator();
    ++kills_[phase];
    json after = Audit();
    std::set<std::string> kept;
    for (const auto& e : after) kept.insert(e.dump());
    size_t lost = 0;
    for (const auto& e : before) {
      if (!kept.count(e.dump())) {
        ++lost;
        ADD_FAILURE() << "audit entry lost across a kill during " << phase << ": " << e.dump();
      }
    }
    EXPECT_EQ(lost, 0u);
    audit_checked_ += before.size();
  }

  bool WaitApprovalWait(int64_t id) {
    return Fleet::WaitFor(
        [&] {
          json r = Show(id);
          return r.value("state", "") == "rolling" && r.contains("waves") && !r["waves"].empty() &&
                 r["waves"][0].value("state", "") == "awaiting_approval";
        },
        seconds(60));
  }

  int Approvals(int64_t id) {
    int n = 0;
    for (const auto& e : Audit()) {
      n += e.value("action", "") == "release.approve" &&
           e.value("target", "") == "release/" + std::to_string(id);
    }
    return n;
  }

  std::map<std::string, int> kills_;
  size_t audit_checked_ = 0;
};

TEST_F(LockstepdKillTest, KillingLockstepdAtRandomMomentsLosesNoReleaseApprovalOrAuditEntry) {
  const uint32_t seed = Seed();
  const int iterations = Iterations();
  std::mt19937 rng(seed);
  auto pause = [&](int max_ms) {
    std::this_thread::sleep_for(milliseconds(std::uniform_int_distribution<int>(0, max_ms)(rng)));
  };
  auto started = Clock::now();
  StartFleet(KillPipeline(), {"us-east-1-1", "us-east-1-2", "eu-west-1-1", "eu-west-1-2"});

  int64_t first = Create(fleet_.ServeApp("v0"));
  ASSERT_TRUE(WaitApprovalWait(first));
  ASSERT_EQ(fleet_.Cli({"approve", std::to_string(first)}).exit_code, 0);
  ASSERT_EQ(WaitFinal(first).value("state", ""), "succeeded");
  std::string last_good = "v0";
  std::map<int64_t, std::string> expected_end = {{first, "succeeded"}};

  for (int i = 1; i <= iterations && !HasFatalFailure(); ++i) {
    SCOPED_TRACE("iteration " + std::to_string(i) + " of seed " + std::to_string(seed));
    // Every third release fails its canary's check and is rolled back; its deploy/stop
    // sleeps a second, so the revert (which runs it) lasts long enough to be killed in.
    const bool bad = i % 3 == 0;
    AppBehaviour behaviour;
    // Activations take a moment, so random kills also land while waves deploy.
    behaviour.start_sleep = "0.2";
    if (bad) {
      behaviour.check_fail_on_agent = "us-east-1-1";
      behaviour.stop_sleep = "1";
    }
    const std::string version = "v" + std::to_string(i);
    int64_t id = Create(fleet_.ServeApp(version, behaviour));
    ASSERT_GT(id, 0);
    expected_end[id] = bad ? "rolled_back" : "succeeded";

    // A kill at a random moment of the rollout.
    pause(800);
    KillAndRestart(id);

    if (bad) {
      bool reverting = Fleet::WaitFor(
          [&] {
            std::string s = Show(id).value("state", "");
            return s == "rolling_back" || s == "rolled_back" || s == "failed";
          },
          seconds(60));
      ASSERT_TRUE(reverting) << "release " << id << " never failed its canary";
      if (Show(id).value("state", "") == "rolling_back") {
        pause(700);
        KillAndRestart(id);
      }
    } else {
      // A kill while the canary wave waits for its approval: the wait survives, nothing
      // approves it behind the operator's back.
      ASSERT_TRUE(WaitApprovalWait(id)) << "release " << id << ": " << Show(id).dump(2);
      pause(500);
      KillAndRestart(id);
      json waiting = Show(id);
      ASSERT_EQ(waiting["waves"][0].value("state", ""), "awaiting_approval") << waiting.dump(2);
      EXPECT_EQ(Approvals(id), 0);

      // A kill right after the approval was acknowledged, while the next wave deploys: the
      // approval is not lost (the release goes on without asking again).
      CommandResult approved = fleet_.Cli({"approve", std::to_string(id)});
      ASSERT_EQ(approved.exit_code, 0) << approved.err;
      pause(400);
      KillAndRestart(id, "just approved: ");
      EXPECT_EQ(Approvals(id), 1) << "release " << id;
    }

    json final = WaitFinal(id);
    ASSERT_EQ(final.value("state", ""), expected_end[id])
        << "release " << id << ": " << final.dump(2);
    if (!bad) last_good = version;
    EXPECT_EQ(Desired(), last_good);
    ExpectFleetOn(last_good, "iteration " + std::to_string(i));
  }

  // Nothing was lost: every release is listed, each in the final state it had to reach.
  json list = fleet_.CliJson({"release", "list", "--limit", "1000"});
  EXPECT_EQ(list.size(), expected_end.size());
  for (const auto& r : list) {
    int64_t id = r.value("id", int64_t{0});
    EXPECT_EQ(r.value("state", ""), expected_end[id]) << "release " << id;
  }
  int kills = 0;
  std::string tally;
  for (const auto& [phase, n] : kills_) {
    kills += n;
    tally += "\n  " + std::to_string(n) + " x " + phase;
  }
  std::cerr << "[faults] " << iterations << " rollouts, " << kills << " kill -9 of lockstepd in "
            << ElapsedMs(started) / 1000 << "s; " << audit_checked_
            << " audit entries checked across kills; kills by phase:" << tally << "\n";
}

// --------------------------------------------------------------------------------------------
// Promise: kill -9 of an agent never leaves `current` naming a half-written release, and the
// restarted agent converges to the release the fleet should run.

std::string AgentKillPipeline() {
  return R"(pipeline: monolith
regions: [us-east-1]
waves:
  - name: all
    select: {per_region: "100%"}
health:
  check_hook: true
timeouts: {hook: 40s, fetch: 30s, agent_lost: 15s}
rollback: {automatic: true, tolerate_failed_hosts: 0}
)";
}

TEST_F(FaultsTest, AnAgentKilledInEveryPhaseKeepsCurrentCompleteAndConverges) {
  const uint32_t seed = Seed();
  std::mt19937 rng(seed);
  const int rounds = std::max(1, Iterations() / 8);
  const std::string victim = "us-east-1-1";
  fleet_.agent_env["FAULT_AGENT"] = victim;
  ArtifactServer artifacts;
  auto started = Clock::now();
  StartFleet(AgentKillPipeline(), {"us-east-1-1", "us-east-1-2"});

  std::map<std::string, std::vector<TarEntry>> releases;
  auto app = [&](const std::string& version, std::vector<TarEntry> extra = {}) {
    AppBehaviour b;
    b.stop_prologue = SignalExitWhenArmed("switch") + ParkWhenArmed("stop");
    b.start_prologue = ParkWhenArmed("start");
    b.check_prologue = ParkWhenArmed("check");
    b.extra_entries = std::move(extra);
    releases[version] = Fleet::AppEntries(version, b);
    return artifacts.Put(version, releases[version]);
  };
  ASSERT_EQ(CreateAndWait(app("v0")).value("state", ""), "succeeded");
  std::string root = fleet_.AgentRoot(victim);

  std::map<std::string, int> kills;
  std::map<std::string, int> switch_outcome;  // which side of the switch the kill landed on
  int n = 0;
  // The switch is a rename: kills around it are repeated to land on both sides of it.
  const std::vector<std::string> phases = {"fetch",  "unpack", "stop",  "switch",
                                           "switch", "switch", "start", "check"};
  for (int round = 0; round < rounds; ++round) {
    for (const auto& phase : phases) {
      SCOPED_TRACE("phase " + phase + ", round " + std::to_string(round + 1));
      const std::string before = fleet_.CurrentOf(victim);
      const std::string version = "v" + std::to_string(++n);
      std::vector<TarEntry> extra;
      std::mt19937 bulk_rng(seed + static_cast<uint32_t>(n));
      if (phase == "fetch") {
        // Incompressible bulk, served a chunk at a time: the download takes seconds.
        std::string blob(256 * 1024, '\0');
        for (char& c : blob) c = static_cast<char>(bulk_rng());
        extra.push_back({TarEntry::Type::kFile, "bulk.bin", blob, "", 0644, -1});
      }
      if (phase == "unpack") {
        // Thousands of files: unpacking them takes long enough to be caught at it.
        extra.push_back({TarEntry::Type::kDir, "bulk", "", "", 0755, -1});
        for (int f = 0; f < 4000; ++f) {
          extra.push_back({TarEntry::Type::kFile, "bulk/f" + std::to_string(f),
                           std::to_string(bulk_rng()), "", 0644, -1});
        }
      }
      Artifact a = app(version, extra);
      if (phase == "fetch") artifacts.SetFault(version, ArtifactServer::Fault::kTrickle, 4096);
      if (phase == "stop" || phase == "start" || phase == "check" || phase == "switch") Arm(phase);
      int64_t id = Create(a);
      ASSERT_GT(id, 0);

      bool landed = false;
      if (phase == "fetch") {
        landed = Fleet::WaitFor(
            [&] {
              return artifacts.BytesSent(version) > 0 &&
                     fs::exists(root + "/tmp/download-" + version + ".tar.gz.part");
            },
            seconds(30));
        fleet_.KillAgent(victim);
        EXPECT_FALSE(fs::exists(root + "/releases/" + version)) << "killed during the download";
        artifacts.SetFault(version, ArtifactServer::Fault::kNone);
      } else if (phase == "unpack") {
        auto deadline = Clock::now() + seconds(30);
        while (!landed && Clock::now() < deadline && !fs::exists(root + "/releases/" + version)) {
          std::error_code ec;
          for (fs::directory_iterator it(root + "/tmp", ec), end; !ec && it != end;
               it.increment(ec)) {
            if (it->path().filename().string().rfind("unpack-" + version, 0) == 0) landed = true;
          }
          if (!landed) std::this_thread::sleep_for(std::chrono::microseconds(200));
        }
        fleet_.KillAgent(victim);
      } else if (phase == "switch") {
        // deploy/stop's last act marks the file; the switch is what the agent does next.
        landed = WaitMarker(phase, seconds(30), 100);
        std::this_thread::sleep_for(
            std::chrono::microseconds(std::uniform_int_distribution<int>(0, 2000)(rng)));
        fleet_.KillAgent(victim);
        fs::remove(fault_dir_ + "/in-switch");
        std::string now = fleet_.CurrentOf(victim);
        ++switch_outcome[now == before ? "before the switch" : "after the switch"];
      } else {
        landed = WaitMarker(phase, seconds(30));
        fleet_.KillAgent(victim);
        KillParkedHook(phase);
      }
      ASSERT_TRUE(landed) << "the kill did not land in " << phase;
      ++kills[phase];

      // Right after the kill: `current` names a complete release, on the expected side.
      EXPECT_TRUE(CurrentIsComplete(root, releases));
      EXPECT_TRUE(AbsentOrComplete(root, version, releases[version]));
      std::string after_kill = fleet_.CurrentOf(victim);
      if (phase == "fetch" || phase == "unpack" || phase == "stop") {
        EXPECT_EQ(after_kill, before) << "current moved before the switch";
      } else if (phase == "start" || phase == "check") {
        EXPECT_EQ(after_kill, version) << "current is not the release whose hook ran";
      } else {
        EXPECT_TRUE(after_kill == before || after_kill == version) << after_kill;
      }

      // The restarted agent finishes the job; the fleet ends on the release it should run.
      fleet_.StartAgent(victim, "us-east-1");
      json final = WaitFinal(id);
      EXPECT_EQ(final.value("state", ""), "succeeded") << final.dump(2);
      std::string desired = Desired();
      EXPECT_EQ(desired, version);
      ExpectFleetOn(desired, "after a kill in " + phase);
      EXPECT_TRUE(CurrentIsComplete(root, releases));
      EXPECT_TRUE(fs::is_empty(root + "/tmp") ||
                  !fs::exists(root + "/tmp/download-" + version + ".tar.gz.part"));
    }
  }
  std::string tally;
  for (const auto& [phase, count] : kills) tally += " " + phase + "=" + std::to_string(count);
  std::string sides;
  for (const auto& [side, count] : switch_outcome) {
    sides += " " + std::to_string(count) + " " + side + ";";
  }
  std::cerr << "[faults] agent kills by phase:" << tally << "; at the switch:" << sides << " in "
            << ElapsedMs(started) / 1000 << "s\n";
}

// --------------------------------------------------------------------------------------------
// Promise: a partitioned agent (SIGSTOP: its stream stays open, nothing comes back) fails its
// wave by the agent_lost deadline and the release is rolled back; when it returns it
// converges to the fleet's release.

std::string PartitionPipeline() {
  return R"(pipeline: monolith
regions: [us-east-1]
waves:
  - name: canary
    select: {per_region: 1}
  - name: all
    select: {per_region: "100%"}
health:
  check_hook: true
timeouts: {hook: 10s, fetch: 10s, agent_lost: 4s}
rollback: {automatic: true, tolerate_failed_hosts: 0}
)";
}

TEST_F(FaultsTest, APartitionedAgentFailsTheWaveByItsDeadlineAndConvergesWhenItReturns) {
  Seed();
  constexpr int64_t kAgentLostMs = 4000;
  const std::string lost = "us-east-1-2";  // a host of the second wave
  fleet_.agent_env["FAULT_AGENT"] = lost;
  StartFleet(PartitionPipeline(), {"us-east-1-1", lost});
  AppBehaviour parked;
  parked.start_prologue = ParkWhenArmed("start");
  ASSERT_EQ(CreateAndWait(fleet_.ServeApp("v1", parked)).value("state", ""), "succeeded");

  // Frozen before its wave: selected while still up, then lost during prepare. Only the
  // canary had switched, so the rollback completes.
  fleet_.SignalAgent(lost, SIGSTOP);
  auto frozen_at = Clock::now();
  json v2 = CreateAndWait(fleet_.ServeApp("v2", parked));
  int64_t took_ms = ElapsedMs(frozen_at);
  EXPECT_EQ(v2.value("state", ""), "rolled_back") << v2.dump(2);
  EXPECT_NE(v2.value("reason", "").find(lost), std::string::npos) << v2.dump(2);
  bool named = false;
  for (const auto& h : v2.value("hosts", json::array())) {
    if (h.value("agent", "") == lost) {
      named = h.value("detail", "").find("agent lost") != std::string::npos;
      EXPECT_TRUE(named) << h.dump();
    }
  }
  EXPECT_TRUE(named) << v2.dump(2);
  EXPECT_LT(took_ms, kAgentLostMs + 8000) << "the wave did not fail by its deadline";
  EXPECT_EQ(fleet_.CurrentOf("us-east-1-1"), "v1");

  std::cerr << "[faults] partitioned during prepare: release rolled_back " << took_ms
            << "ms after SIGSTOP (agent_lost " << kAgentLostMs << "ms)\n";

  fleet_.SignalAgent(lost, SIGCONT);
  ExpectFleetOn("v1", "after the partition during prepare");
  EXPECT_EQ(Desired(), "v1");

  // Frozen in the middle of its activation, after the switch: it took the release, so the
  // rollback has to wait for it until agent_lost runs out again, then gives up on it.
  Arm("start");
  Artifact v3 = fleet_.ServeApp("v3", parked);
  int64_t id = Create(v3);
  ASSERT_TRUE(WaitMarker("start", seconds(60)));
  fleet_.SignalAgent(lost, SIGSTOP);
  frozen_at = Clock::now();
  KillParkedHook("start");  // the hook exits non-zero; the frozen agent cannot see it yet
  json final = WaitFinal(id);
  took_ms = ElapsedMs(frozen_at);
  EXPECT_EQ(final.value("state", ""), "failed") << final.dump(2);
  EXPECT_NE(final.value("reason", "").find("rollback incomplete on " + lost), std::string::npos)
      << final.dump(2);
  EXPECT_LT(took_ms, 2 * kAgentLostMs + 10000) << "the release did not end by its deadlines";
  EXPECT_EQ(fleet_.CurrentOf("us-east-1-1"), "v1") << "the canary was not rolled back";
  EXPECT_EQ(fleet_.CurrentOf(lost), "v3") << "the frozen host should still be switched";

  std::cerr << "[faults] partitioned during activation: release failed " << took_ms
            << "ms after SIGSTOP\n";

  auto resumed_at = Clock::now();
  fleet_.SignalAgent(lost, SIGCONT);
  ExpectFleetOn("v1", "after the partition during activation", seconds(60));
  EXPECT_EQ(Desired(), "v1");
  std::cerr << "[faults] the returning host converged to v1 " << ElapsedMs(resumed_at)
            << "ms after SIGCONT\n";
}

// Promise: an agent that stops (systemctl stop or restart: SIGTERM) ends its stream cleanly and
// counts as silent from its stop, so a restart gets all of agent_lost; one whose connection
// breaks (killed, or its host gone) counts as silent from the keepalive bound before, as a
// frozen one would be (9/10 of agent_lost: lockstepd's transport vouched for it until then).

TEST_F(FaultsTest, AStoppedAgentIsSilentFromItsStopAndABrokenOneFromTheKeepaliveBound) {
  Seed();
  StartFleet(R"(pipeline: monolith
regions: [us-east-1]
waves:
  - name: all
    select: {per_region: "100%"}
timeouts: {agent_lost: 60s}
)",
             {"us-east-1-1", "us-east-1-2"});
  const int64_t signalled_at = std::chrono::duration_cast<std::chrono::milliseconds>(
                                   std::chrono::system_clock::now().time_since_epoch())
                                   .count();
  fleet_.SignalAgent("us-east-1-1", SIGTERM);
  fleet_.SignalAgent("us-east-1-2", SIGKILL);
  std::map<std::string, int64_t> last_seen;
  ASSERT_TRUE(Fleet::WaitFor(
      [&] {
        last_seen.clear();
        for (const auto& a : fleet_.CliJson({"agents"})) {
          if (a.value("connected", true)) return false;
          last_seen[a.value("name", "")] = a.value("last_seen_ms", int64_t{0});
        }
        return last_seen.size() == 2;
      },
      seconds(30)))
      << "both agents should be seen disconnected";
  // Stopped: from its stop, after the signal. Broken: from 54 s (9/10 of agent_lost) before it
  // was noticed, or from its last message if later (here its hello, just before the signal).
  EXPECT_GE(last_seen["us-east-1-1"], signalled_at);
  EXPECT_LT(last_seen["us-east-1-2"], signalled_at);
  std::cerr << "[faults] stopped agent last seen " << last_seen["us-east-1-1"] - signalled_at
            << " ms from the signal, killed agent " << last_seen["us-east-1-2"] - signalled_at
            << " ms\n";
}

// --------------------------------------------------------------------------------------------
// Promise: a broken artifact server costs a bounded number of attempts, fails the release
// with a reason that names the fault, and switches nothing.

std::string FetchPipeline() {
  return R"(pipeline: monolith
regions: [us-east-1, eu-west-1]
waves:
  - name: all
    select: {per_region: "100%"}
timeouts: {hook: 10s, fetch: 2s, agent_lost: 10s}
rollback: {automatic: true, tolerate_failed_hosts: 0}
)";
}

TEST_F(FaultsTest, ABrokenArtifactServerFailsTheReleaseWithItsReasonAndSwitchesNothing) {
  Seed();
  ArtifactServer artifacts;
  StartFleet(FetchPipeline(), {"us-east-1-1", "eu-west-1-1"});
  ASSERT_EQ(CreateAndWait(artifacts.Put("v1", Fleet::AppEntries("v1"))).value("state", ""),
            "succeeded");

  struct Case {
    std::string name;
    ArtifactServer::Fault fault;
    std::vector<std::string> reason;  // all of these appear in the host's detail
    int attempts;                     // per host
  };
  const std::vector<Case> cases = {
      {"slow", ArtifactServer::Fault::kTrickle, {"timed out", "(3 attempts)"}, 3},
      {"500", ArtifactServer::Fault::kStatus500, {"returned HTTP 500", "(3 attempts)"}, 3},
      {"truncated", ArtifactServer::Fault::kTruncate, {"body truncated after", "(3 attempts)"}, 3},
      {"other-bytes",
       ArtifactServer::Fault::kOtherBytes,
       {"sha256 mismatch", "expected", "(2 attempts)"},
       2},
  };
  for (const auto& c : cases) {
    SCOPED_TRACE("artifact server fault: " + c.name);
    const std::string version = "v-" + c.name;
    Artifact a = artifacts.Put(version, Fleet::AppEntries(version));
    // Slow: 64 bytes every 500 ms, far slower than the 2 s fetch timeout allows.
    artifacts.SetFault(version, c.fault, 64, milliseconds(500));
    auto started = Clock::now();
    CommandResult cli;
    json r = CreateAndWait(a, &cli);
    EXPECT_EQ(cli.exit_code, 1) << cli.err;
    EXPECT_EQ(r.value("state", ""), "failed") << r.dump(2);
    EXPECT_NE(r.value("reason", "").find("no host had switched"), std::string::npos) << r.dump(2);
    // The CLI's one-line reason names the failure too.
    const std::string failed_line =
        "lockstep: release " + std::to_string(r.value("id", 0)) + " failed: ";
    size_t at = cli.err.find(failed_line);
    ASSERT_NE(at, std::string::npos) << cli.err;
    const std::string cli_reason = cli.err.substr(at, cli.err.find('\n', at) - at);
    for (const auto& want : c.reason) {
      EXPECT_NE(cli_reason.find(want), std::string::npos) << cli_reason;
    }
    size_t named = 0;
    std::string example;
    for (const auto& h : r.value("hosts", json::array())) {
      std::string detail = h.value("detail", "");
      if (h.value("state", "") != "failed") continue;
      example = detail;
      bool all = true;
      for (const auto& want : c.reason) all = all && detail.find(want) != std::string::npos;
      EXPECT_TRUE(all) << "host " << h.value("agent", "") << " detail: " << detail;
      EXPECT_NE(detail.find(a.url), std::string::npos) << detail;
      named += all;
    }
    EXPECT_GE(named, 1u) << r.dump(2);
    // Bounded: each host gives up after its attempts (give a slow last attempt time to end).
    std::this_thread::sleep_for(
        milliseconds(c.fault == ArtifactServer::Fault::kTrickle ? 2500 : 300));
    EXPECT_GE(artifacts.Hits(version), c.attempts);
    EXPECT_LE(artifacts.Hits(version), c.attempts * static_cast<int>(hosts_.size()));
    // Nothing switched, nothing half-installed, nothing left behind.
    for (const auto& h : hosts_) {
      EXPECT_EQ(fleet_.CurrentOf(h), "v1") << h;
      EXPECT_FALSE(fs::exists(fleet_.AgentRoot(h) + "/releases/" + version)) << h;
      EXPECT_FALSE(fs::exists(fleet_.AgentRoot(h) + "/tmp/download-" + version + ".tar.gz.part"))
          << h;
    }
    std::cerr << "[faults] artifact server " << c.name << ": failed in " << ElapsedMs(started)
              << "ms after " << artifacts.Hits(version) << " requests\n  " << cli_reason
              << "\n  host detail: " << example << "\n";
  }
  EXPECT_EQ(Desired(), "v1");
}

// --------------------------------------------------------------------------------------------
// Promise: when the store's disk refuses writes, lockstepd refuses new work with a clear
// error (CLI exit status 3 and message, HTTP 503, /healthz 503) and does not corrupt the
// store: after the fault is removed and lockstepd restarts, the store passes
// PRAGMA integrity_check and every earlier release is intact.
//
// How the disk is made to refuse: RLIMIT_FSIZE, set on the running lockstepd with
// prlimit(2), at the current size of the store's write-ahead log. Every write past that
// offset then fails with EFBIG, which SQLite reports as an I/O error, exactly where a full
// disk (ENOSPC) would fail: appending the next commit to the WAL. It is the one fault of this
// kind an unprivileged user can inject into one process on any Linux: a small tmpfs or a
// full loop device needs root (or user namespaces, often disabled), chmod does not affect a
// file SQLite already holds open, and an LD_PRELOAD shim would test the shim. The limit is
// lifted again with prlimit(2) to remove the fault. (lockstepd ignores SIGXFSZ so that the
// limit produces failed writes instead of killing it.) The same limit also stops lockstepd's
// log file from growing while it is in force, so the log has a gap there.

int64_t SqliteCount(const std::string& db_path, const std::string& sql, std::string* error) {
  sqlite3* db = nullptr;
  int64_t out = -1;
  if (sqlite3_open_v2(db_path.c_str(), &db, SQLITE_OPEN_READWRITE, nullptr) == SQLITE_OK) {
    sqlite3_stmt* st = nullptr;
    if (sqlite3_prepare_v2(db, sql.c_str(), -1, &st, nullptr) == SQLITE_OK &&
        sqlite3_step(st) == SQLITE_ROW) {
      out = sqlite3_column_int64(st, 0);
    }
    sqlite3_finalize(st);
  }
  if (error) *error = db ? sqlite3_errmsg(db) : "cannot open";
  sqlite3_close(db);
  return out;
}

std::string IntegrityCheck(const std::string& db_path) {
  sqlite3* db = nullptr;
  std::string out;
  if (sqlite3_open_v2(db_path.c_str(), &db, SQLITE_OPEN_READWRITE, nullptr) == SQLITE_OK) {
    sqlite3_stmt* st = nullptr;
    if (sqlite3_prepare_v2(db, "PRAGMA integrity_check", -1, &st, nullptr) == SQLITE_OK) {
      while (sqlite3_step(st) == SQLITE_ROW) {
        out += reinterpret_cast<const char*>(sqlite3_column_text(st, 0));
      }
    }
    sqlite3_finalize(st);
  }
  if (out.empty()) out = std::string("cannot check: ") + (db ? sqlite3_errmsg(db) : "no db");
  sqlite3_close(db);
  return out;
}

bool SetFileSizeLimit(pid_t pid, rlim_t limit) {
  struct rlimit rl {};
  if (::prlimit(pid, RLIMIT_FSIZE, nullptr, &rl) != 0) return false;
  rl.rlim_cur = limit;
  return ::prlimit(pid, RLIMIT_FSIZE, &rl, nullptr) == 0;
}

TEST_F(FaultsTest, AStoreThatCannotWriteRefusesNewWorkClearlyAndStaysIntact) {
  Seed();
  StartFleet(FetchPipeline(), {"us-east-1-1", "eu-west-1-1"});
  for (const char* v : {"v1", "v2"}) {
    ASSERT_EQ(CreateAndWait(fleet_.ServeApp(v)).value("state", ""), "succeeded");
  }
  const std::string db = fleet_.dir() + "/data/lockstep.db";
  std::error_code ec;
  auto wal = fs::file_size(db + "-wal", ec);
  ASSERT_FALSE(ec) << "no write-ahead log next to " << db;
  const pid_t pid = fleet_.orchestrator_pid();
  ASSERT_TRUE(SetFileSizeLimit(pid, static_cast<rlim_t>(wal))) << std::strerror(errno);

  // The CLI: exit status 3 and a reason naming the store.
  Artifact v3 = fleet_.ServeApp("v3");
  CommandResult refused = fleet_.Cli({"release", "create", "--pipeline", "monolith", "--version",
                                      "v3", "--artifact", v3.url, "--sha256", v3.sha256});
  EXPECT_EQ(refused.exit_code, 3) << refused.out << refused.err;
  EXPECT_NE(refused.err.find("cannot write its store"), std::string::npos) << refused.err;
  EXPECT_NE(refused.err.find("I/O error"), std::string::npos) << refused.err;

  // The HTTP API: 503 with the same reason, and /healthz says why it is unhealthy.
  httplib::Client http("127.0.0.1", fleet_.http_port());
  http.set_connection_timeout(5);
  http.set_read_timeout(15);
  json body = {
      {"pipeline", "monolith"}, {"version", "v3"}, {"artifact", v3.url}, {"sha256", v3.sha256}};
  auto post = http.Post("/api/v1/releases",
                        httplib::Headers{{"Authorization", "Bearer " + fleet_.admin_token()}},
                        body.dump(), "application/json");
  ASSERT_TRUE(post) << "POST /api/v1/releases: no answer";
  EXPECT_EQ(post->status, 503) << post->body;
  EXPECT_NE(post->body.find("cannot write its store"), std::string::npos) << post->body;
  auto health = http.Get("/healthz");
  ASSERT_TRUE(health);
  EXPECT_EQ(health->status, 503) << health->body;
  EXPECT_EQ(json::parse(health->body, nullptr, false).value("status", ""), "unhealthy")
      << health->body;
  EXPECT_NE(health->body.find("store"), std::string::npos) << health->body;

  std::cerr << "[faults] store refusing writes: CLI exit " << refused.exit_code << ": "
            << refused.err << "[faults] POST /api/v1/releases " << post->status << " " << post->body
            << "[faults] GET /healthz " << health->status << " " << health->body;

  // Reads still work, and nothing was half-created.
  json list = fleet_.CliJson({"release", "list"});
  EXPECT_EQ(list.size(), 2u) << list.dump(2);

  // The disk recovers, but a commit whose outcome was unknown keeps the store refusing
  // writes until lockstepd restarts.
  ASSERT_TRUE(SetFileSizeLimit(pid, RLIM_INFINITY));
  refused = fleet_.Cli({"release", "create", "--pipeline", "monolith", "--version", "v3",
                        "--artifact", v3.url, "--sha256", v3.sha256});
  EXPECT_EQ(refused.exit_code, 3) << refused.err;
  EXPECT_NE(refused.err.find("refusing writes until restart"), std::string::npos) << refused.err;
  health = http.Get("/healthz");
  ASSERT_TRUE(health);
  EXPECT_EQ(health->status, 503) << health->body;

  // The worst way down, then the store is checked as it lies on disk.
  fleet_.KillOrchestrator();
  EXPECT_EQ(IntegrityCheck(db), "ok");
  std::string err;
  EXPECT_EQ(SqliteCount(db, "SELECT count(*) FROM releases", &err), 2) << err;
  EXPECT_EQ(SqliteCount(db,
                        "SELECT count(*) FROM releases WHERE state='succeeded' AND version IN "
                        "('v1','v2')",
                        &err),
            2)
      << err;

  // Restarted, it is healthy and works; earlier releases are intact.
  fleet_.StartOrchestrator();
  httplib::Client http2("127.0.0.1", fleet_.http_port());
  auto healthy = http2.Get("/healthz");
  ASSERT_TRUE(healthy);
  EXPECT_EQ(healthy->status, 200) << healthy->body;
  fleet_.WaitForAgents(hosts_.size());
  list = fleet_.CliJson({"release", "list"});
  ASSERT_EQ(list.size(), 2u);
  for (const auto& r : list) EXPECT_EQ(r.value("state", ""), "succeeded") << r.dump();
  EXPECT_EQ(CreateAndWait(v3).value("state", ""), "succeeded");
  ExpectFleetOn("v3", "after the store recovered");
}

// --------------------------------------------------------------------------------------------
// Promise (security): the orchestrator cannot make an agent run a command of its choosing;
// an agent runs only deploy/stop, deploy/start and deploy/check, and only from a release it
// fetched, verified against the task's sha256 and unpacked itself.
//
// The wire contract has no field that names a hook or a command (proto/lockstep.proto: a
// task carries a kind, a version, an artifact URL and its digest, timeouts, a check flag and
// HTTP probes). So the proof is a hostile orchestrator: a stand-in AgentService that sends a
// real agent every task that could smuggle a path in, and the check that nothing outside a
// verified artifact's three hooks ever ran.

class RogueOrchestrator final : public lockstep::v1::AgentService::Service {
 public:
  explicit RogueOrchestrator(std::vector<lockstep::v1::Task> tasks) : tasks_(std::move(tasks)) {}

  grpc::Status Connect(grpc::ServerContext* /*ctx*/,
                       grpc::ServerReaderWriter<lockstep::v1::ServerMessage,
                                                lockstep::v1::AgentMessage>* stream) override {
    lockstep::v1::AgentMessage in;
    if (!stream->Read(&in) || !in.has_hello()) return grpc::Status::OK;
    lockstep::v1::ServerMessage welcome;
    welcome.mutable_welcome()->set_pipeline("monolith");
    welcome.mutable_welcome()->set_heartbeat_interval_ms(1000);
    welcome.mutable_welcome()->set_send_progress(true);  // the steps the agent ran
    stream->Write(welcome);
    for (const auto& task : tasks_) {
      {
        std::lock_guard lock(mu_);
        if (results_.count(task.task_id())) continue;  // answered on an earlier stream
      }
      lockstep::v1::ServerMessage msg;
      *msg.mutable_task() = task;
      if (!stream->Write(msg)) return grpc::Status::OK;
      for (;;) {
        if (!stream->Read(&in)) return grpc::Status::OK;
        if (in.has_progress()) {
          std::lock_guard lock(mu_);
          steps_[task.task_id()].push_back(in.progress().step());
        }
        if (in.has_result() && in.result().task_id() == task.task_id()) break;
      }
      {
        std::lock_guard lock(mu_);
        results_[task.task_id()] = in.result();
      }
      cv_.notify_all();
    }
    while (stream->Read(&in)) {
    }
    return grpc::Status::OK;
  }

  bool WaitAll(milliseconds timeout) {
    std::unique_lock lock(mu_);
    return cv_.wait_for(lock, timeout, [&] { return results_.size() == tasks_.size(); });
  }
  lockstep::v1::TaskResult Result(const std::string& id) {
    std::lock_guard lock(mu_);
    return results_[id];
  }
  std::vector<std::string> Steps(const std::string& id) {
    std::lock_guard lock(mu_);
    return steps_[id];
  }

 private:
  const std::vector<lockstep::v1::Task> tasks_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::map<std::string, lockstep::v1::TaskResult> results_;  // guarded by mu_
  std::map<std::string, std::vector<std::string>> steps_;    // guarded by mu_
};

TEST(AgentSecurityTest, AnOrchestratorCannotMakeAnAgentRunAnythingButAVerifiedArtifactsHooks) {
  char tmpl[] = "/tmp/lockstep-rogue-XXXXXX";
  const std::string dir = mkdtemp(tmpl);
  const std::string root = dir + "/agent";
  const std::string pwned = dir + "/pwned";
  fs::create_directories(root + "/releases");
  // Something to run that a hostile task might point at: outside the root, and planted
  // inside releases/ as if it were a release (no completion marker: the agent did not
  // install it).
  auto plant = [&](const fs::path& where) {
    fs::create_directories(where / "deploy");
    for (const char* hook : {"stop", "start", "check"}) {
      std::ofstream(where / "deploy" / hook)
          << "#!/bin/sh\necho " << where.string() << " >> " << pwned << "\n";
      fs::permissions(where / "deploy" / hook, fs::perms::owner_all);
    }
  };
  plant(dir + "/evil");
  plant(root + "/releases/planted");

  ArtifactServer artifacts;
  const std::string ran = dir + "/ran";
  // A genuine artifact whose hooks record that they ran, with one more executable beside
  // them that nothing may run.
  std::vector<TarEntry> genuine = {
      {TarEntry::Type::kDir, "deploy", "", "", 0755, -1},
      Script("deploy/start", "echo start >> " + ran + "\n"),
      Script("deploy/check", "echo check >> " + ran + "\n"),
      Script("deploy/shell", "echo shell >> " + pwned + "\n"),
  };
  Artifact good = artifacts.Put("v1", genuine);
  // The same version name with other bytes behind the digest the task claims.
  std::vector<TarEntry> tampered = {
      {TarEntry::Type::kDir, "deploy", "", "", 0755, -1},
      Script("deploy/start", "echo tampered >> " + pwned + "\n"),
  };
  Artifact evil = artifacts.Put("v2", tampered);
  Artifact bare = artifacts.Put("v3", {{TarEntry::Type::kFile, "VERSION", "v3\n", "", 0644, -1}});

  using lockstep::v1::Task;
  auto task = [](const std::string& id, Task::Kind kind, const std::string& version,
                 const Artifact& a) {
    Task t;
    t.set_task_id(id);
    t.set_kind(kind);
    t.set_pipeline("monolith");
    t.set_version(version);
    t.set_artifact_url(a.url);
    t.set_sha256(a.sha256);
    t.set_fetch_timeout_ms(5000);
    t.set_hook_timeout_ms(5000);
    t.set_run_check_hook(true);
    return t;
  };
  std::vector<Task> tasks = {
      // A version that is a path out of releases/.
      task("escape", Task::ACTIVATE, "../../evil", good),
      task("escape-deploy", Task::DEPLOY, "../evil", good),
      task("absolute", Task::ACTIVATE, dir + "/evil", good),
      // A directory under releases/ that the agent did not install.
      task("planted", Task::ACTIVATE, "planted", good),
      // An artifact whose bytes do not match the digest the task claims.
      task("tampered", Task::DEPLOY, "v2", Artifact{"v2", evil.url, good.sha256}),
      // A genuine artifact: only its start and check hooks run, never deploy/shell.
      task("genuine", Task::DEPLOY, "v1", good),
      // An artifact without hooks: nothing runs at all.
      task("bare", Task::DEPLOY, "v3", bare),
  };
  // Fields this agent does not know (as a newer orchestrator might send) carry no command.
  tasks[5].GetReflection()->MutableUnknownFields(&tasks[5])->AddLengthDelimited(
      99, "/bin/sh -c 'echo unknown-field >> " + pwned + "'");

  RogueOrchestrator rogue(tasks);
  grpc::ServerBuilder builder;
  int port = 0;
  builder.AddListeningPort("127.0.0.1:0", grpc::InsecureServerCredentials(), &port);
  builder.RegisterService(&rogue);
  std::unique_ptr<grpc::Server> server = builder.BuildAndStart();
  ASSERT_TRUE(server && port > 0);

  auto agent = Process::Start(
      {BinPath("lockstep-agent"), "--server", "127.0.0.1:" + std::to_string(port), "--region",
       "us-east-1", "--name", "us-east-1-1", "--root", root, "--token", "lst_any"},
      dir + "/agent.log");
  ASSERT_TRUE(agent.ok()) << agent.status().ToString();
  bool answered = rogue.WaitAll(seconds(60));
  (*agent)->Stop();
  server->Shutdown(std::chrono::system_clock::now() + seconds(2));
  ASSERT_TRUE(answered) << ReadFile(dir + "/agent.log");

  for (const char* id : {"escape", "escape-deploy", "absolute"}) {
    auto r = rogue.Result(id);
    EXPECT_FALSE(r.ok()) << id;
    EXPECT_EQ(r.failed_step(), "validate") << id;
    EXPECT_NE(r.error().find("invalid version name"), std::string::npos) << r.error();
  }
  auto planted = rogue.Result("planted");
  EXPECT_FALSE(planted.ok());
  EXPECT_NE(planted.error().find("not prepared on this host"), std::string::npos)
      << planted.error();
  auto tampered_result = rogue.Result("tampered");
  EXPECT_FALSE(tampered_result.ok());
  EXPECT_NE(tampered_result.error().find("sha256 mismatch"), std::string::npos)
      << tampered_result.error();
  EXPECT_FALSE(fs::exists(root + "/releases/v2"));

  auto genuine_result = rogue.Result("genuine");
  EXPECT_TRUE(genuine_result.ok()) << genuine_result.error();
  EXPECT_EQ(ReadFile(ran), "start\ncheck\n");
  // An artifact without hooks is refused before anything could switch to it, and no hook
  // step runs for it.
  auto bare_result = rogue.Result("bare");
  EXPECT_FALSE(bare_result.ok());
  EXPECT_EQ(bare_result.failed_step(), "prepare");
  EXPECT_NE(bare_result.error().find("no deploy/ directory"), std::string::npos)
      << bare_result.error();
  EXPECT_NE(bare_result.current_version(), "v3");
  for (const auto& step : rogue.Steps("bare")) {
    EXPECT_TRUE(step != "stop" && step != "start" && step != "check")
        << "a hook step ran for an artifact without hooks: " << step;
  }
  // Only v1's start and check ever ran: v1 has no deploy/stop, so replacing it ran nothing.
  EXPECT_EQ(ReadFile(ran), "start\ncheck\n");
  EXPECT_FALSE(fs::exists(pwned)) << "something outside a verified artifact's hooks ran:\n"
                                  << ReadFile(pwned);
  if (!::testing::Test::HasFailure()) {
    std::error_code ec;
    fs::remove_all(dir, ec);
  } else {
    std::cerr << ReadFile(dir + "/agent.log") << "\nkept " << dir << "\n";
  }
}

}  // namespace
}  // namespace lockstep::testing
