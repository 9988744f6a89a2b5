// On-call and operators through the real CLI: rollback mid-bake, --to, rollback while the
// pipeline is paused and frozen, approvals, roles, and agent enrollment.

#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <set>
#include <sstream>
#include <thread>

#include "common/sha256.h"
#include "tests/integration/fleet.h"

namespace lockstep::testing {
namespace {

using nlohmann::json;

const std::vector<std::string> kRegions = {"us-east-1", "eu-west-1", "ap-southeast-2"};

std::string Pipeline(const std::string& half_bake, const std::string& all_extra = "") {
  return R"(pipeline: monolith
regions: [us-east-1, eu-west-1, ap-southeast-2]
waves:
  - name: canary
    select: {per_region: 1}
  - name: half
    select: {per_region: "50%"}
    bake: )" +
         half_bake + R"(
  - name: all
    select: {per_region: "100%"}
)" + all_extra +
         R"(timeouts: {hook: 10s, fetch: 10s, agent_lost: 10s}
)";
}

std::vector<std::string> Hosts() {
  std::vector<std::string> out;
  for (const auto& r : kRegions) {
    for (int i = 1; i <= 2; ++i) out.push_back(r + "-" + std::to_string(i));
  }
  return out;
}

class OnCallTest : public ::testing::Test {
 protected:
  void Start(const std::string& yaml) {
    fleet_.WritePipeline("monolith.yaml", yaml);
    fleet_.StartOrchestrator();
    for (const auto& h : Hosts()) fleet_.StartAgent(h, h.substr(0, h.rfind('-')));
    fleet_.WaitForAgents(Hosts().size());
  }

  int64_t Create(const Artifact& a, bool wait) {
    std::vector<std::string> args = {"--output",   "json",     "release",   "create",
                                     "--pipeline", "monolith", "--version", a.version,
                                     "--artifact", a.url,      "--sha256",  a.sha256};
    if (wait) args.push_back("--wait");
    CommandResult r = fleet_.Cli(args);
    EXPECT_EQ(r.exit_code, 0) << r.err;
    return json::parse(r.out).value("id", int64_t{0});
  }

  bool EveryHostOn(const std::string& v) {
    for (const auto& h : Hosts()) {
      if (fleet_.CurrentOf(h) != v) return false;
    }
    return true;
  }

  Fleet fleet_;
};

TEST_F(OnCallTest, RollbackDuringTheSecondWavesBakePutsEveryRegionBack) {
  Start(Pipeline("10m"));
  // v1 needs no bake to land: it is shipped with the bake lifted, as a fresh fleet would be.
  fleet_.StopOrchestrator();
  fleet_.WritePipeline("monolith.yaml", Pipeline("0s"));
  fleet_.StartOrchestrator();
  fleet_.WaitForAgents(Hosts().size());
  Create(fleet_.ServeApp("v1"), true);
  ASSERT_TRUE(EveryHostOn("v1"));
  fleet_.StopOrchestrator();
  fleet_.WritePipeline("monolith.yaml", Pipeline("10m"));
  fleet_.StartOrchestrator();
  fleet_.WaitForAgents(Hosts().size());

  int64_t v2 = Create(fleet_.ServeApp("v2"), false);
  bool baking = Fleet::WaitFor(
      [&] {
        json r = fleet_.CliJson({"release", "show", std::to_string(v2)});
        return r["current_wave"] == 1 && r["waves"][1]["state"] == "baking";
      },
      std::chrono::seconds(60));
  ASSERT_TRUE(baking);
  // Paused, the release says so; hosts already on it are not "differing".
  ASSERT_EQ(fleet_.Cli({"pause", "monolith"}).exit_code, 0);
  CommandResult shown = fleet_.Cli({"release", "show", std::to_string(v2)});
  EXPECT_NE(shown.out.find("(paused by "), std::string::npos) << shown.out;
  EXPECT_EQ(fleet_.CliJson({"release", "show", std::to_string(v2)})["paused"], true);
  CommandResult status = fleet_.Cli({"status", "monolith"});
  EXPECT_EQ(status.out.find("(differs)"), std::string::npos) << status.out;
  EXPECT_NE(status.out.find("(paused by "), std::string::npos) << status.out;
  ASSERT_EQ(fleet_.Cli({"resume", "monolith"}).exit_code, 0);
  std::set<std::string> never_took;  // the last wave's hosts: still on v1
  for (const auto& h : Hosts()) {
    if (fleet_.CurrentOf(h) == "v1") never_took.insert(h);
  }
  ASSERT_FALSE(never_took.empty());
  const size_t events_before = fleet_.Events().size();

  CommandResult rb = fleet_.Cli({"rollback", "monolith"});
  EXPECT_EQ(rb.exit_code, 0) << rb.err;
  EXPECT_NE(rb.err.find("every host of monolith is on v1"), std::string::npos) << rb.err;
  EXPECT_TRUE(EveryHostOn("v1"));
  // Hosts already on v1 were asked to confirm it, and ran no hook: no restart for them.
  auto events = fleet_.Events();
  for (size_t i = events_before; i < events.size(); ++i) {
    EXPECT_FALSE(never_took.count(events[i].agent))
        << events[i].agent << " ran " << events[i].hook << " of " << events[i].version;
  }
  json aborted = fleet_.CliJson({"release", "show", std::to_string(v2)});
  EXPECT_EQ(aborted["state"], "aborted");
  EXPECT_EQ(aborted["waves"][0]["state"], "reverted");  // its hosts went back
  json audit = fleet_.CliJson({"audit", "--limit", "50"});
  bool audited = false;
  for (const auto& e : audit) audited |= e["action"] == "pipeline.rollback";
  EXPECT_TRUE(audited);
}

// Tokens pasted from a file or a clipboard often end in CR LF: the CLI takes them without.
TEST_F(OnCallTest, ATokenEndingInCrLfWorksFromTheFlagAndTheEnvironment) {
  Start(Pipeline("0s"));
  CommandResult flag = fleet_.Cli({"--token", fleet_.admin_token() + "\r\n", "status"});
  EXPECT_EQ(flag.exit_code, 0) << flag.err;
  CommandResult env =
      RunCommand({BinPath("lockstep"), "--server", fleet_.server(), "status"},
                 std::chrono::seconds(30), {{"LOCKSTEP_TOKEN", " " + fleet_.admin_token() + "\r"}});
  EXPECT_EQ(env.exit_code, 0) << env.err;
}

// What an operator filters by: state and kind of releases, the latest one, a region's hosts.
TEST_F(OnCallTest, ReleaseListFiltersByStateAndKindAndShowLatestAndAgentsByRegion) {
  Start(Pipeline("0s"));
  for (const char* v : {"v1", "v2"}) Create(fleet_.ServeApp(v), true);
  CommandResult rb = fleet_.Cli({"rollback", "monolith"});
  ASSERT_EQ(rb.exit_code, 0) << rb.err;

  json rollbacks = fleet_.CliJson({"release", "list", "--kind", "rollback"});
  ASSERT_EQ(rollbacks.size(), 1u);
  EXPECT_EQ(rollbacks[0]["kind"], "rollback");
  json succeeded = fleet_.CliJson({"release", "list", "--state", "succeeded", "--kind", "rollout"});
  EXPECT_EQ(succeeded.size(), 2u);
  for (const auto& r : succeeded) EXPECT_EQ(r["kind"], "rollout");
  EXPECT_TRUE(fleet_.CliJson({"release", "list", "--state", "rolling"}).empty());
  CommandResult text = fleet_.Cli({"release", "list"});
  EXPECT_NE(text.out.find("KIND"), std::string::npos) << text.out;
  EXPECT_NE(text.out.find("rollback"), std::string::npos) << text.out;
  CommandResult bad = fleet_.Cli({"release", "list", "--state", "done"});
  EXPECT_NE(bad.exit_code, 0);
  EXPECT_NE(bad.err.find("unknown state \"done\""), std::string::npos) << bad.err;
  CommandResult bad_kind = fleet_.Cli({"release", "list", "--kind", "hotfix"});
  EXPECT_NE(bad_kind.err.find("rollout or rollback"), std::string::npos) << bad_kind.err;

  json latest = fleet_.CliJson({"release", "show", "latest"});
  EXPECT_EQ(latest["id"], rollbacks[0]["id"]);
  json latest_of = fleet_.CliJson({"release", "show", "latest", "--pipeline", "monolith"});
  EXPECT_EQ(latest_of["id"], rollbacks[0]["id"]);

  json eu = fleet_.CliJson({"agents", "--region", "eu-west-1"});
  ASSERT_EQ(eu.size(), 2u);
  for (const auto& a : eu) {
    EXPECT_EQ(a["region"], "eu-west-1");
    // Each host's agent build, from its hello.
    EXPECT_EQ(a["agent_version"].get<std::string>().rfind("0.", 0), 0u) << a.dump();
  }
  CommandResult agents_text = fleet_.Cli({"agents"});
  EXPECT_NE(agents_text.out.find("AGENT"), std::string::npos) << agents_text.out;
  EXPECT_NE(agents_text.out.find(eu[0]["agent_version"].get<std::string>()), std::string::npos)
      << agents_text.out;
  CommandResult nowhere = fleet_.Cli({"agents", "--region", "mars-1"});
  EXPECT_NE(nowhere.exit_code, 0);
  EXPECT_NE(nowhere.err.find("no pipeline lists region \"mars-1\""), std::string::npos)
      << nowhere.err;
}

// status --watch prints again whenever something changes, and rides out a lockstepd restart.
TEST_F(OnCallTest, StatusWatchFollowsChangesAndRidesOutARestart) {
  Start(Pipeline("0s"));
  const std::string log = fleet_.dir() + "/logs/status-watch.log";
  auto watch = Process::Start({BinPath("lockstep"), "--server", fleet_.server(), "--token",
                               fleet_.admin_token(), "status", "monolith", "--watch"},
                              log);
  ASSERT_TRUE(watch.ok()) << watch.status().ToString();
  auto seen = [&](const std::string& text) {
    return Fleet::WaitFor(
        [&] {
          std::ifstream in(log);
          std::stringstream buf;
          buf << in.rdbuf();
          return buf.str().find(text) != std::string::npos;
        },
        std::chrono::seconds(60));
  };
  EXPECT_TRUE(seen("desired (none yet)"));
  Create(fleet_.ServeApp("v1"), true);
  EXPECT_TRUE(seen("desired v1"));
  ASSERT_EQ(fleet_.Cli({"pause", "monolith"}).exit_code, 0);
  EXPECT_TRUE(seen("PAUSED by "));
  fleet_.StopOrchestrator();
  EXPECT_TRUE(seen("lost contact with lockstepd"));
  fleet_.StartOrchestrator();
  ASSERT_EQ(fleet_.Cli({"resume", "monolith"}).exit_code, 0);
  // A change after the restart is printed: the watch carried on.
  EXPECT_TRUE(Fleet::WaitFor(
      [&] {
        std::ifstream in(log);
        std::stringstream buf;
        buf << in.rdbuf();
        const std::string text = buf.str();
        const size_t lost = text.find("lost contact with lockstepd");
        return lost != std::string::npos && text.find("desired v1\n", lost) != std::string::npos;
      },
      std::chrono::seconds(60)));
  EXPECT_TRUE((*watch)->Running());
}

TEST_F(OnCallTest, RollbackToAnOlderVersionAndWhilePausedAndFrozen) {
  Start(Pipeline("0s"));
  for (const char* v : {"v1", "v2", "v3"}) Create(fleet_.ServeApp(v), true);
  ASSERT_TRUE(EveryHostOn("v3"));
  ASSERT_EQ(fleet_.Cli({"pause", "monolith"}).exit_code, 0);
  ASSERT_EQ(fleet_.Cli({"freeze", "monolith", "--reason", "incident 42"}).exit_code, 0);

  CommandResult rb = fleet_.Cli({"rollback", "monolith", "--to", "v1"});
  EXPECT_EQ(rb.exit_code, 0) << rb.err;
  EXPECT_TRUE(EveryHostOn("v1"));
  // The rolled-back-to version is what every host should run from now on.
  json status = fleet_.CliJson({"status", "monolith"});
  EXPECT_EQ(status[0]["desired_version"], "v1");
  EXPECT_EQ(status[0]["paused"], true);
  EXPECT_EQ(status[0]["frozen"], true);

  // A new release waits while frozen.
  int64_t v4 = Create(fleet_.ServeApp("v4"), false);
  std::this_thread::sleep_for(std::chrono::milliseconds(500));
  json r = fleet_.CliJson({"release", "show", std::to_string(v4)});
  EXPECT_EQ(r["state"], "queued");
  EXPECT_NE(r["reason"].get<std::string>().find("incident 42"), std::string::npos);

  CommandResult missing = fleet_.Cli({"rollback", "monolith", "--to", "v9"});
  EXPECT_NE(missing.exit_code, 0);
  EXPECT_NE(missing.err.find("no succeeded release v9"), std::string::npos) << missing.err;
}

// A flag the command does not take is refused before anything is sent: on-call typing
// `--version` instead of `--to` must not roll the fleet back to the default target.
TEST_F(OnCallTest, AFlagOfAnotherCommandIsRefusedAndNothingHappens) {
  Start(Pipeline("0s"));
  for (const char* v : {"v1", "v2", "v3"}) Create(fleet_.ServeApp(v), true);
  ASSERT_TRUE(EveryHostOn("v3"));
  const size_t releases = fleet_.CliJson({"release", "list"}).size();

  CommandResult rb = fleet_.Cli({"rollback", "monolith", "--version", "v1"});
  EXPECT_EQ(rb.exit_code, 2);
  EXPECT_NE(rb.err.find("does not take --version"), std::string::npos) << rb.err;
  EXPECT_NE(rb.err.find("did you mean --to?"), std::string::npos) << rb.err;
  CommandResult pause = fleet_.Cli({"pause", "monolith", "--reason", "lunch"});
  EXPECT_EQ(pause.exit_code, 2) << pause.err;
  CommandResult list = fleet_.Cli({"release", "list", "--to", "v1"});
  EXPECT_EQ(list.exit_code, 2) << list.err;

  EXPECT_EQ(fleet_.CliJson({"release", "list"}).size(), releases);
  EXPECT_EQ(fleet_.CliJson({"status", "monolith"})[0]["paused"], false);
  EXPECT_TRUE(EveryHostOn("v3"));
}

// The rollback's exit status tells the truth about hosts that were offline: exit 0 only
// when every registered host is on the target, or with --accept-offline, and either way the
// hosts that are not are named.
TEST_F(OnCallTest, ARollbackNamesOfflineHostsAndSucceedsOnlyWhenEveryHostIsOnTheTarget) {
  std::string yaml = Pipeline("0s");
  yaml.replace(yaml.find("agent_lost: 10s"), 15, "agent_lost: 3s");
  Start(yaml);
  for (const char* v : {"v1", "v2"}) Create(fleet_.ServeApp(v), true);
  ASSERT_TRUE(EveryHostOn("v2"));
  fleet_.KillAgent("eu-west-1-2");
  // Offline for longer than agent_lost, by lockstepd's own record: it takes no part in the
  // rollback (a host that vanished seconds ago would still be waited for).
  ASSERT_TRUE(Fleet::WaitFor(
      [&] {
        json agents = fleet_.CliJson({"agents"});
        const int64_t now = std::chrono::duration_cast<std::chrono::milliseconds>(
                                std::chrono::system_clock::now().time_since_epoch())
                                .count();
        for (const auto& a : agents) {
          if (a["name"] != "eu-west-1-2") continue;
          return !a["connected"].get<bool>() && now - a["last_seen_ms"].get<int64_t>() > 4000;
        }
        return false;
      },
      std::chrono::seconds(30)));

  CommandResult rb = fleet_.Cli({"rollback", "monolith", "--to", "v1"});
  EXPECT_EQ(rb.exit_code, 1) << rb.err;
  EXPECT_NE(rb.err.find("5 of 6 hosts of monolith are on v1"), std::string::npos) << rb.err;
  EXPECT_NE(rb.err.find("eu-west-1-2 (offline, on v2)"), std::string::npos) << rb.err;
  EXPECT_EQ(rb.err.find("every host of monolith is on v1"), std::string::npos) << rb.err;

  CommandResult accepted = fleet_.Cli({"rollback", "monolith", "--to", "v1", "--accept-offline"});
  EXPECT_EQ(accepted.exit_code, 0) << accepted.err;
  EXPECT_NE(accepted.err.find("eu-west-1-2 (offline, on v2)"), std::string::npos) << accepted.err;

  // The pipeline is held after the rollback, and the CLI says so.
  EXPECT_NE(accepted.err.find("monolith is held (paused by on-call rollback"), std::string::npos)
      << accepted.err;
  EXPECT_EQ(fleet_.CliJson({"status", "monolith"})[0]["paused"], true);
  // When it returns and on-call resumes, it converges, and the fleet is whole again.
  fleet_.StartAgent("eu-west-1-2", "eu-west-1");
  EXPECT_EQ(fleet_.Cli({"resume", "monolith"}).exit_code, 0);
  EXPECT_TRUE(Fleet::WaitFor([&] { return EveryHostOn("v1"); }, std::chrono::seconds(60)));
}

// What systemctl stop or an upgrade does to lockstepd (SIGTERM, then a new start) must not
// make a waiting `release create --wait` give up: it says it lost contact and keeps
// waiting, and exits with the release's outcome.
TEST_F(OnCallTest, AWaitingCliRidesOutALockstepdRestart) {
  Start(Pipeline("2s"));
  Artifact v1 = fleet_.ServeApp("v1");
  auto cli = Process::Start(
      {BinPath("lockstep"), "--server", fleet_.server(), "--token", fleet_.admin_token(), "release",
       "create", "--pipeline", "monolith", "--version", "v1", "--artifact", v1.url, "--sha256",
       v1.sha256, "--wait", "--timeout", "120s"},
      fleet_.dir() + "/logs/cli-wait.log");
  ASSERT_TRUE(cli.ok()) << cli.status().ToString();
  // The release is in flight and the CLI is waiting on it.
  ASSERT_TRUE(Fleet::WaitFor(
      [&] {
        json list = fleet_.CliJson({"release", "list"});
        return !list.empty() && list[0]["state"] == "rolling";
      },
      std::chrono::seconds(30)));
  fleet_.StopOrchestrator();  // SIGTERM, exit 0
  fleet_.StartOrchestrator();
  EXPECT_EQ((*cli)->Wait(std::chrono::seconds(120)), 0) << ReadFile((*cli)->log_path());
  EXPECT_NE(ReadFile((*cli)->log_path()).find("lost contact with lockstepd"), std::string::npos)
      << ReadFile((*cli)->log_path());
  EXPECT_TRUE(EveryHostOn("v1"));
}

TEST_F(OnCallTest, AManualApprovalIsGivenFromTheCli) {
  Start(Pipeline("0s", "    approval: manual\n"));
  int64_t id = Create(fleet_.ServeApp("v1"), false);
  bool waiting = Fleet::WaitFor(
      [&] {
        return fleet_.CliJson({"release", "show", std::to_string(id)})["waves"][2]["state"] ==
               "awaiting_approval";
      },
      std::chrono::seconds(60));
  ASSERT_TRUE(waiting);
  CommandResult ok = fleet_.Cli({"approve", std::to_string(id)});
  EXPECT_EQ(ok.exit_code, 0) << ok.err;
  CommandResult watched = fleet_.Cli({"release", "watch", std::to_string(id)});
  EXPECT_EQ(watched.exit_code, 0) << watched.err;
  EXPECT_TRUE(EveryHostOn("v1"));
}

TEST_F(OnCallTest, RolesAreEnforcedAndRefusalsChangeNothing) {
  Start(Pipeline("0s"));
  Create(fleet_.ServeApp("v1"), true);
  Create(fleet_.ServeApp("v2"), true);
  std::string viewer = fleet_.CreateToken("viewer", "vera");
  std::string deployer = fleet_.CreateToken("deployer", "dan");
  size_t releases = fleet_.CliJson({"release", "list"}).size();

  CommandResult r = fleet_.Cli({"--token", viewer, "rollback", "monolith"});
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.err.find("role viewer"), std::string::npos) << r.err;
  r = fleet_.Cli({"--token", deployer, "pause", "monolith"});
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.err.find("may not pipeline.pause"), std::string::npos) << r.err;
  r = fleet_.Cli({"--token", "lst_not-a-real-token", "status"});
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.err.find("invalid token"), std::string::npos) << r.err;
  r = fleet_.Cli({"--token", "", "status"});
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.err.find("missing bearer token"), std::string::npos) << r.err;

  EXPECT_EQ(fleet_.CliJson({"release", "list"}).size(), releases);
  EXPECT_EQ(fleet_.CliJson({"status"})[0]["paused"], false);
  EXPECT_TRUE(EveryHostOn("v2"));
  // A viewer can read.
  EXPECT_EQ(fleet_.Cli({"--token", viewer, "status"}).exit_code, 0);
}

TEST_F(OnCallTest, AnAgentWithAWrongEnrollmentTokenOrRegionIsRefused) {
  Start(Pipeline("0s"));
  fleet_.StartAgent("intruder-1", "eu-west-1", "lst_wrong");
  // A valid token, but for another region.
  json tokens = json::parse(fleet_
                                .Cli({"--output", "json", "tokens", "create", "--role", "agent",
                                      "--region", "us-east-1", "--name", "us-only"})
                                .out);
  fleet_.StartAgent("intruder-2", "eu-west-1", tokens["token"]);
  std::this_thread::sleep_for(std::chrono::seconds(2));
  for (const auto& a : fleet_.CliJson({"agents"})) {
    EXPECT_NE(a["name"], "intruder-1");
    EXPECT_NE(a["name"], "intruder-2");
  }
  std::string log1 = ReadFile(fleet_.dir() + "/logs/agent-intruder-1.log");
  std::string log2 = ReadFile(fleet_.dir() + "/logs/agent-intruder-2.log");
  EXPECT_NE(log1.find("invalid enrollment token"), std::string::npos) << log1;
  EXPECT_NE(log2.find("is for region us-east-1, not eu-west-1"), std::string::npos) << log2;
}

TEST_F(OnCallTest, TokensAreStoredOnlyAsTheirHashes) {
  Start(Pipeline("0s"));
  json created = json::parse(
      fleet_.Cli({"--output", "json", "tokens", "create", "--role", "on-call", "--name", "pager"})
          .out);
  const std::string token = created["token"];
  ASSERT_FALSE(token.empty());
  // Every byte lockstepd keeps: the store and its write-ahead log.
  std::string bytes;
  for (const char* f : {"/data/lockstep.db", "/data/lockstep.db-wal"}) {
    bytes += ReadFile(fleet_.dir() + f);
  }
  ASSERT_FALSE(bytes.empty());
  for (const std::string& t : {token, fleet_.admin_token()}) {
    EXPECT_EQ(bytes.find(t), std::string::npos) << "a token is stored in the clear";
    EXPECT_NE(bytes.find(Sha256Hex(t)), std::string::npos) << "its hash is not stored";
  }
}

}  // namespace
}  // namespace lockstep::testing
