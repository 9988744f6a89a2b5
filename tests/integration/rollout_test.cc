// End to end: the real lockstepd, real agents and a real artifact server on loopback.

#include <gtest/gtest.h>

#include <csignal>
#include <filesystem>

#include "tests/integration/fleet.h"

namespace lockstep::testing {
namespace {

using nlohmann::json;
namespace fs = std::filesystem;

const char* kPipeline = R"(pipeline: monolith
regions: [us-east-1, eu-west-1, ap-southeast-2]
waves:
  - name: canary
    select: {per_region: 1}
  - name: all
    select: {per_region: "100%"}
concurrency: {per_region: 10}
health:
  check_hook: true
timeouts: {hook: 10s, fetch: 10s, agent_lost: 10s}
rollback: {automatic: true, tolerate_failed_hosts: 0}
)";

const std::vector<std::pair<std::string, std::string>> kHosts = {
    {"use1-a", "us-east-1"}, {"use1-b", "us-east-1"},       {"euw1-a", "eu-west-1"},
    {"euw1-b", "eu-west-1"}, {"apse2-a", "ap-southeast-2"}, {"apse2-b", "ap-southeast-2"}};

class RolloutTest : public ::testing::Test {
 protected:
  void SetUp() override {
    fleet_.WritePipeline("monolith.yaml", kPipeline);
    fleet_.StartOrchestrator();
    for (const auto& [name, region] : kHosts) fleet_.StartAgent(name, region);
    fleet_.WaitForAgents(kHosts.size());
  }

  CommandResult Release(const Artifact& a) {
    return fleet_.Cli({"--output", "json", "release", "create", "--pipeline", "monolith",
                       "--version", a.version, "--artifact", a.url, "--sha256", a.sha256, "--wait",
                       "--timeout", "90s"});
  }

  void DeployEverywhere(const Artifact& a) {
    CommandResult r = Release(a);
    ASSERT_EQ(r.exit_code, 0) << r.err;
    for (const auto& [name, region] : kHosts) ASSERT_EQ(fleet_.CurrentOf(name), a.version);
  }

  Fleet fleet_;
};

TEST_F(RolloutTest, AReleaseReachesEveryRegionWaveByWave) {
  Artifact v1 = fleet_.ServeApp("v1.0.0");
  CommandResult r = Release(v1);
  ASSERT_EQ(r.exit_code, 0) << r.err;
  json release = json::parse(r.out);
  EXPECT_EQ(release["state"], "succeeded");
  ASSERT_EQ(release["waves"].size(), 2u);
  EXPECT_EQ(release["waves"][0]["state"], "done");
  EXPECT_EQ(release["waves"][1]["state"], "done");
  for (const auto& region : release["waves"][1]["regions"]) {
    EXPECT_EQ(region["done"], 2) << region.dump();
  }
  for (const auto& [name, region] : kHosts) {
    EXPECT_EQ(fleet_.CurrentOf(name), "v1.0.0") << name;
    EXPECT_TRUE(fs::exists(fleet_.AgentRoot(name) + "/releases/v1.0.0/VERSION")) << name;
  }
  // The CLI's status agrees with the disks.
  json status = fleet_.CliJson({"status", "monolith"});
  EXPECT_EQ(status[0]["desired_version"], "v1.0.0");
  for (const auto& region : status[0]["regions"]) {
    ASSERT_EQ(region["hosts"].size(), 2u);
    for (const auto& h : region["hosts"]) EXPECT_EQ(h["current_version"], "v1.0.0");
  }
}

TEST_F(RolloutTest, NoHostOfTheSecondWaveStartsBeforeTheFirstWaveFinished) {
  Artifact v1 = fleet_.ServeApp("v1");
  CommandResult r = Release(v1);
  ASSERT_EQ(r.exit_code, 0) << r.err;
  json release = json::parse(r.out);

  std::set<std::string> wave1, wave2;
  int64_t wave1_finished = 0, wave2_started = INT64_MAX;
  for (const auto& h : release["hosts"]) {
    if (h["wave"] == 0) {
      wave1.insert(h["agent"].get<std::string>());
      wave1_finished = std::max(wave1_finished, h["finished_at_ms"].get<int64_t>());
    } else {
      wave2.insert(h["agent"].get<std::string>());
      wave2_started = std::min(wave2_started, h["started_at_ms"].get<int64_t>());
    }
  }
  // One host per region in the canary, the rest after.
  EXPECT_EQ(wave1, (std::set<std::string>{"apse2-a", "euw1-a", "use1-a"}));
  EXPECT_EQ(wave2, (std::set<std::string>{"apse2-b", "euw1-b", "use1-b"}));
  EXPECT_LE(wave1_finished, wave2_started);

  // The hooks themselves tell the same story: every wave-1 health check ran before any
  // wave-2 host started the release.
  int64_t last_wave1_check = 0, first_wave2_start = INT64_MAX;
  for (const auto& e : fleet_.Events()) {
    if (e.hook == "check" && wave1.count(e.agent)) {
      last_wave1_check = std::max(last_wave1_check, e.ns);
    }
    if (e.hook == "start" && wave2.count(e.agent)) {
      first_wave2_start = std::min(first_wave2_start, e.ns);
    }
  }
  ASSERT_GT(last_wave1_check, 0);
  ASSERT_LT(first_wave2_start, INT64_MAX);
  EXPECT_LT(last_wave1_check, first_wave2_start);
}

TEST_F(RolloutTest, AWrongDigestFailsTheReleaseAndChangesNoCurrent) {
  Artifact v1 = fleet_.ServeApp("v1");
  DeployEverywhere(v1);
  Artifact v2 = fleet_.ServeApp("v2");
  v2.sha256 = std::string(64, '0');
  CommandResult r = Release(v2);
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("sha256 mismatch"), std::string::npos) << r.err;
  json release = json::parse(r.out);
  EXPECT_EQ(release["state"], "failed");
  for (const auto& [name, region] : kHosts) {
    EXPECT_EQ(fleet_.CurrentOf(name), "v1") << name;
    EXPECT_FALSE(fs::exists(fleet_.AgentRoot(name) + "/releases/v2")) << name;
  }
}

TEST_F(RolloutTest, AHostileTarballIsRefusedAndNothingLandsOutsideTheRelease) {
  Artifact v1 = fleet_.ServeApp("v1");
  DeployEverywhere(v1);
  Artifact evil = fleet_.ServeEntries(
      "v2-evil", {{TarEntry::Type::kDir, "deploy", "", "", 0755, -1},
                  Script("deploy/start", "true"),
                  {TarEntry::Type::kFile, "../../escaped", "pwned", "", 0644, -1}});
  CommandResult r = Release(evil);
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("escapes the release directory"), std::string::npos) << r.err;
  for (const auto& [name, region] : kHosts) {
    EXPECT_EQ(fleet_.CurrentOf(name), "v1") << name;
    EXPECT_FALSE(fs::exists(fleet_.AgentRoot(name) + "/escaped")) << name;
    EXPECT_FALSE(fs::exists(fleet_.AgentRoot(name) + "/releases/escaped")) << name;
    EXPECT_FALSE(fs::exists(fleet_.AgentRoot(name) + "/releases/v2-evil")) << name;
  }
  EXPECT_FALSE(fs::exists(fleet_.dir() + "/agents/escaped"));
}

// An artifact nothing could run fails at prepare, naming what is wrong, and no host
// switches to it: before, a tree under app/ "succeeded" with nothing started or checked.
TEST_F(RolloutTest, AnArtifactWithoutARunnableDeployDirectoryFailsAtPrepare) {
  Artifact v1 = fleet_.ServeApp("v1");
  DeployEverywhere(v1);
  Artifact nested = fleet_.ServeEntries(
      "v2", {{TarEntry::Type::kDir, "app", "", "", 0755, -1},
             {TarEntry::Type::kDir, "app/deploy", "", "", 0755, -1},
             {TarEntry::Type::kFile, "app/deploy/start", "#!/bin/sh\nexit 0\n", "", 0755, -1}});
  CommandResult r = Release(nested);
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("found app/deploy/"), std::string::npos) << r.err;
  Artifact unexecutable = fleet_.ServeEntries(
      "v3", {{TarEntry::Type::kDir, "deploy", "", "", 0755, -1},
             {TarEntry::Type::kFile, "deploy/start", "#!/bin/sh\nexit 0\n", "", 0644, -1}});
  r = Release(unexecutable);
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("deploy/start is not executable"), std::string::npos) << r.err;
  for (const auto& [name, region] : kHosts) {
    EXPECT_EQ(fleet_.CurrentOf(name), "v1") << name;
    EXPECT_FALSE(fs::exists(fleet_.AgentRoot(name) + "/releases/v2")) << name;
    EXPECT_FALSE(fs::exists(fleet_.AgentRoot(name) + "/releases/v3")) << name;
  }
}

TEST_F(RolloutTest, AFailingHealthCheckFailsTheReleaseBeforeTheNextWave) {
  Artifact v1 = fleet_.ServeApp("v1");
  DeployEverywhere(v1);
  AppBehaviour bad;
  bad.check_fail_on_agent = "euw1-a";  // a canary host
  Artifact v2 = fleet_.ServeApp("v2", bad);
  CommandResult r = Release(v2);
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("euw1-a"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("deploy/check of v2 exited with status 1"), std::string::npos) << r.err;
  // The second wave never received v2.
  for (const char* name : {"use1-b", "euw1-b", "apse2-b"}) {
    EXPECT_EQ(fleet_.CurrentOf(name), "v1") << name;
    EXPECT_FALSE(fs::exists(fleet_.AgentRoot(name) + "/releases/v2")) << name;
  }
}

TEST_F(RolloutTest, AnAgentRestartedFromDiskReportsWhatItRuns) {
  Artifact v1 = fleet_.ServeApp("v1");
  DeployEverywhere(v1);
  fleet_.KillAgent("apse2-b");  // kill -9
  fleet_.StartAgent("apse2-b", "ap-southeast-2");
  bool reported = Fleet::WaitFor(
      [&] {
        for (const auto& a : fleet_.CliJson({"agents"})) {
          if (a["name"] == "apse2-b" && a["connected"] == true && a["current_version"] == "v1") {
            return true;
          }
        }
        return false;
      },
      std::chrono::seconds(20));
  EXPECT_TRUE(reported);
}

TEST_F(RolloutTest, ReleasesAreListedNewestFirstAndShownWithTheirHosts) {
  DeployEverywhere(fleet_.ServeApp("v1"));
  DeployEverywhere(fleet_.ServeApp("v2"));
  json list = fleet_.CliJson({"release", "list", "--pipeline", "monolith"});
  ASSERT_EQ(list.size(), 2u);
  EXPECT_EQ(list[0]["version"], "v2");
  EXPECT_EQ(list[1]["version"], "v1");
  json shown = fleet_.CliJson({"release", "show", std::to_string(list[0]["id"].get<int>())});
  EXPECT_EQ(shown["previous_version"], "v1");
  EXPECT_EQ(shown["hosts"].size(), kHosts.size());
}

TEST_F(RolloutTest, BadRequestsAreRefusedWithAReasonAndCreateNothing) {
  Artifact v1 = fleet_.ServeApp("v1");
  CommandResult r = fleet_.Cli({"release", "create", "--pipeline", "nope", "--version", "v1",
                                "--artifact", v1.url, "--sha256", v1.sha256});
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.err.find("unknown pipeline \"nope\""), std::string::npos) << r.err;
  r = fleet_.Cli({"release", "create", "--pipeline", "monolith", "--version", "v1", "--artifact",
                  v1.url, "--sha256", "xyz"});
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.err.find("sha256"), std::string::npos) << r.err;
  r = fleet_.Cli({"release", "show", "12345"});
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.err.find("no release with id 12345"), std::string::npos) << r.err;
  EXPECT_TRUE(fleet_.CliJson({"release", "list"}).empty());
}

TEST(LockstepdStartup, RefusesABadPipelineFileNamingFileLineAndField) {
  Fleet fleet;
  fleet.WritePipeline("broken.yaml",
                      "pipeline: monolith\nregions: [us-east-1]\nwaves:\n"
                      "  - name: canary\n    select: {per_region: 1}\n"
                      "    bake: 5x\n");
  CommandResult r =
      RunCommand({BinPath("lockstepd"), "--pipelines", fleet.pipelines_dir(), "--data-dir",
                  fleet.dir() + "/data", "--grpc-listen", "127.0.0.1:0"},
                 std::chrono::seconds(20));
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.err.find("broken.yaml:6: waves[0].bake"), std::string::npos) << r.err;
}

TEST(LockstepdStartup, RefusesAPortInUse) {
  Fleet fleet;
  fleet.WritePipeline("monolith.yaml", kPipeline);
  fleet.StartOrchestrator();
  CommandResult r =
      RunCommand({BinPath("lockstepd"), "--pipelines", fleet.pipelines_dir(), "--data-dir",
                  fleet.dir() + "/data2", "--grpc-listen", fleet.server()},
                 std::chrono::seconds(20));
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.err.find("cannot listen on " + fleet.server()), std::string::npos) << r.err;
}

TEST(LockstepdStartup, RefusesAnUnknownFlag) {
  CommandResult r = RunCommand({BinPath("lockstepd"), "--frobnicate"}, std::chrono::seconds(20));
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.err.find("unknown flag --frobnicate"), std::string::npos) << r.err;
}

TEST(LockstepdStartup, StopsCleanlyOnSigterm) {
  Fleet fleet;
  fleet.WritePipeline("monolith.yaml", kPipeline);
  fleet.StartOrchestrator();
  fleet.StopOrchestrator();  // asserts exit status 0
}

// Adding a region is an edit and a SIGHUP, not a restart; an edit that does not load leaves
// the running pipelines in force, and both are audited.
TEST(ReloadTest, ARegionAddedBySighupConvergesAndABadEditKeepsWhatRuns) {
  Fleet fleet;
  const std::string one_region = R"(pipeline: monolith
regions: [us-east-1]
waves:
  - name: all
    select: {per_region: "100%"}
)";
  fleet.WritePipeline("monolith.yaml", one_region);
  fleet.StartOrchestrator();
  const pid_t lockstepd = fleet.orchestrator_pid();
  fleet.StartAgent("use1", "us-east-1");
  fleet.WaitForAgents(1);
  Artifact v1 = fleet.ServeApp("v1");
  CommandResult r = fleet.Cli({"release", "create", "--pipeline", "monolith", "--version", "v1",
                               "--artifact", v1.url, "--sha256", v1.sha256, "--wait"});
  ASSERT_EQ(r.exit_code, 0) << r.err;

  auto reloads = [&] {
    std::vector<nlohmann::json> out;
    for (const auto& e : fleet.CliJson({"audit", "--limit", "1000"})) {
      if (e.value("action", "") == "pipelines.reload") out.push_back(e);
    }
    return out;
  };

  fleet.WritePipeline("monolith.yaml", "pipeline: monolith\nregions: [us-east-1\n");
  ASSERT_EQ(::kill(lockstepd, SIGHUP), 0);
  ASSERT_TRUE(Fleet::WaitFor([&] { return reloads().size() == 1; }, std::chrono::seconds(30)));
  nlohmann::json refused = reloads()[0];
  EXPECT_EQ(refused.value("outcome", ""), "refused") << refused.dump();
  EXPECT_NE(refused.value("detail", "").find("monolith.yaml"), std::string::npos) << refused.dump();
  nlohmann::json status = fleet.CliJson({"status"});
  EXPECT_NE(status.dump().find("monolith"), std::string::npos) << status.dump();

  fleet.WritePipeline("monolith.yaml", R"(pipeline: monolith
regions: [us-east-1, eu-west-1]
waves:
  - name: all
    select: {per_region: "100%"}
)");
  ASSERT_EQ(::kill(lockstepd, SIGHUP), 0);
  ASSERT_TRUE(Fleet::WaitFor([&] { return reloads().size() == 2; }, std::chrono::seconds(30)));
  nlohmann::json applied = reloads()[0];  // newest first
  EXPECT_EQ(applied.value("outcome", ""), "ok") << applied.dump();
  EXPECT_NE(applied.value("detail", "").find("region eu-west-1 added"), std::string::npos)
      << applied.dump();

  // A host of the new region joins and is brought to what the fleet runs.
  fleet.StartAgent("euw1", "eu-west-1");
  EXPECT_TRUE(
      Fleet::WaitFor([&] { return fleet.CurrentOf("euw1") == "v1"; }, std::chrono::seconds(60)));
  EXPECT_EQ(fleet.orchestrator_pid(), lockstepd);  // the same process throughout
  fleet.StopOrchestrator();
}

}  // namespace
}  // namespace lockstep::testing
