// The rollout engine against real processes: automatic rollback across regions, metric
// gates against a real Prometheus, convergence of a new host, and kill -9 of lockstepd.

#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <memory>
#include <random>
#include <thread>

#include "tests/integration/fleet.h"
#include "tests/support/prometheus.h"

namespace lockstep::testing {
namespace {

using nlohmann::json;
namespace fs = std::filesystem;

const std::vector<std::string> kRegions = {"us-east-1", "eu-west-1", "ap-southeast-2"};

std::string ThreeWaves(const std::string& extra = "") {
  return R"(pipeline: monolith
regions: [us-east-1, eu-west-1, ap-southeast-2]
waves:
  - name: canary
    select: {per_region: 1}
  - name: half
    select: {per_region: "50%"}
  - name: all
    select: {per_region: "100%"}
health:
  check_hook: true
timeouts: {hook: 10s, fetch: 10s, agent_lost: 5s}
rollback: {automatic: true, tolerate_failed_hosts: 0}
)" + extra;
}

// Three hosts per region: wave 1 takes host 1, wave 2 adds host 2, wave 3 adds host 3.
std::vector<std::string> HostNames() {
  std::vector<std::string> out;
  for (const auto& r : kRegions) {
    for (int i = 1; i <= 3; ++i) out.push_back(r + "-" + std::to_string(i));
  }
  return out;
}

std::string RegionOf(const std::string& host) { return host.substr(0, host.rfind('-')); }

class EngineFailuresTest : public ::testing::Test {
 protected:
  void StartFleet(const std::string& pipeline_yaml) {
    fleet_.WritePipeline("monolith.yaml", pipeline_yaml);
    fleet_.StartOrchestrator();
    for (const auto& h : HostNames()) fleet_.StartAgent(h, RegionOf(h));
    fleet_.WaitForAgents(HostNames().size());
  }

  CommandResult Release(const Artifact& a, const std::string& timeout = "120s") {
    return fleet_.Cli({"--output", "json", "release", "create", "--pipeline", "monolith",
                       "--version", a.version, "--artifact", a.url, "--sha256", a.sha256, "--wait",
                       "--timeout", timeout});
  }

  void ExpectEveryHostOn(const std::string& version) {
    for (const auto& h : HostNames()) EXPECT_EQ(fleet_.CurrentOf(h), version) << h;
  }

  Fleet fleet_;
};

TEST_F(EngineFailuresTest, AFailedCheckInWaveTwoRollsEveryRegionBackAndWaveThreeNeverSeesIt) {
  StartFleet(ThreeWaves());
  ASSERT_EQ(Release(fleet_.ServeApp("v1")).exit_code, 0);
  ExpectEveryHostOn("v1");

  AppBehaviour bad;
  bad.check_fail_on_agent = "eu-west-1-2";  // a host of wave 2
  CommandResult r = Release(fleet_.ServeApp("v2", bad));
  EXPECT_EQ(r.exit_code, 1);
  json release = json::parse(r.out);
  EXPECT_EQ(release["state"], "rolled_back") << release.dump(2);
  EXPECT_NE(release["reason"].get<std::string>().find("eu-west-1-2"), std::string::npos);
  ExpectEveryHostOn("v1");
  for (const auto& region : kRegions) {
    std::string third = region + "-3";
    EXPECT_FALSE(fs::exists(fleet_.AgentRoot(third) + "/releases/v2")) << third;
    for (const auto& e : fleet_.Events()) {
      EXPECT_FALSE(e.agent == third && e.version == "v2") << third << " ran a v2 hook";
    }
  }
  // Every host that took v2 ran v1's start hook again after it.
  for (const auto& region : kRegions) {
    for (const char* n : {"-1", "-2"}) {
      std::string host = region + n;
      int64_t v2_start = 0, v1_restart = 0;
      for (const auto& e : fleet_.Events()) {
        if (e.agent != host || e.hook != "start") continue;
        if (e.version == "v2") v2_start = e.ns;
        if (e.version == "v1" && v2_start > 0) v1_restart = e.ns;
      }
      EXPECT_GT(v2_start, 0) << host;
      EXPECT_GT(v1_restart, v2_start) << host;
    }
  }
}

TEST_F(EngineFailuresTest, ANewHostInARegionConvergesToTheCurrentRelease) {
  StartFleet(ThreeWaves());
  ASSERT_EQ(Release(fleet_.ServeApp("v1")).exit_code, 0);
  fleet_.StartAgent("eu-west-1-9", "eu-west-1");
  bool converged = Fleet::WaitFor([&] { return fleet_.CurrentOf("eu-west-1-9") == "v1"; },
                                  std::chrono::seconds(30));
  EXPECT_TRUE(converged);
  // lockstepd records what the new host runs, too.
  EXPECT_TRUE(Fleet::WaitFor(
      [&] {
        for (const auto& a : fleet_.CliJson({"agents"})) {
          if (a["name"] == "eu-west-1-9" && a["current_version"] == "v1") return true;
        }
        return false;
      },
      std::chrono::seconds(10)));
}

// A release whose own deploy/stop is broken cannot keep the fleet on itself: the revert runs
// it, reports its failure on the host, and switches back all the same.
TEST_F(EngineFailuresTest, ABrokenStopHookOfTheFailedReleaseDoesNotStopTheRevert) {
  StartFleet(ThreeWaves());
  ASSERT_EQ(Release(fleet_.ServeApp("v1")).exit_code, 0);
  ExpectEveryHostOn("v1");

  AppBehaviour bad;
  bad.check_fail_on_agent = "eu-west-1-1";  // the canary wave fails...
  bad.stop_prologue = "exit 3\n";           // ...and v2 cannot even stop
  CommandResult r = Release(fleet_.ServeApp("v2", bad));
  EXPECT_EQ(r.exit_code, 1);
  json release = json::parse(r.out);
  EXPECT_EQ(release["state"], "rolled_back") << release.dump(2);
  ExpectEveryHostOn("v1");
  bool reported = false;
  for (const auto& h : release["hosts"]) {
    const std::string detail = h.value("detail", "");
    reported =
        reported || detail.find("deploy/stop of v2 exited with status 3") != std::string::npos;
  }
  EXPECT_TRUE(reported) << release.dump(2);
  // v2's stop hook ran (and failed) on the canaries before they went back.
  int v2_stops = 0;
  for (const auto& e : fleet_.Events()) v2_stops += e.hook == "stop" && e.version == "v2";
  EXPECT_EQ(v2_stops, 3);
}

// A tiny exporter the real Prometheus scrapes: one gauge per region, read from a file at
// each scrape, so that a release's own hook can change it.
class GateFleetTest : public EngineFailuresTest {
 protected:
  static std::string Exposition(double v) {
    std::string body = "# TYPE demo_error_rate gauge\n";
    for (const auto& r : kRegions) {
      body += "demo_error_rate{region=\"" + r + "\"} " + std::to_string(v) + "\n";
    }
    return body;
  }
  std::string metrics_file() const { return fleet_.dir() + "/exporter-metrics.txt"; }
  // A real Prometheus scraping the exporter, with a first sample in.
  void StartPrometheus() {
    SetErrorRate(0.001);
    prometheus_ = std::make_unique<TestPrometheus>("127.0.0.1:" + std::to_string(exporter_.port()));
    ASSERT_TRUE(prometheus_->WaitReady(std::chrono::seconds(30))) << prometheus_->Explain();
    ASSERT_TRUE(prometheus_->WaitForSample("demo_error_rate", std::chrono::seconds(30)))
        << prometheus_->Explain();
  }
  // The error-rate gate against it: two passing evaluations, 2 s after the switch.
  std::string GateYaml() const {
    return R"(gates:
  - metric:
      name: error-rate
      prometheus: ")" +
           prometheus_->url() + R"("
      query: 'max(demo_error_rate{region="{region}"})'
      max: 0.01
      interval: 1s
      delay: 2s
      passes: 2
      inconclusive_deadline: 20s
)";
  }
  void SetErrorRate(double v) {
    std::ofstream(metrics_file()) << Exposition(v);
    exporter_.ServeFile("/metrics", metrics_file());
  }

  TestHttpServer exporter_;
  std::unique_ptr<TestPrometheus> prometheus_;
};

// The error rate turns bad only when v3's own deploy/start runs, after the switch: what the
// gate must catch is the new release, from samples scraped after it went out. A good
// release before it passes on the same gate.
TEST_F(GateFleetTest, AMetricGateAgainstARealPrometheusPassesAGoodReleaseAndRollsBackABadOne) {
  ASSERT_NO_FATAL_FAILURE(StartPrometheus());
  StartFleet(ThreeWaves(GateYaml()));

  CommandResult good = Release(fleet_.ServeApp("v1"));
  ASSERT_EQ(good.exit_code, 0) << good.err;
  ExpectEveryHostOn("v1");
  CommandResult good2 = Release(fleet_.ServeApp("v2"));
  ASSERT_EQ(good2.exit_code, 0) << good2.err;
  ExpectEveryHostOn("v2");

  // v3 makes errors climb as soon as it starts.
  AppBehaviour climbs;
  climbs.start_prologue = "printf '%s' '" + Exposition(0.2) + "' > '" + metrics_file() + "'\n";
  CommandResult bad = Release(fleet_.ServeApp("v3", climbs));
  EXPECT_EQ(bad.exit_code, 1);
  json release = json::parse(bad.out);
  EXPECT_EQ(release["state"], "rolled_back");
  std::string reason = release["reason"];
  EXPECT_NE(reason.find("metric gate error-rate failed"), std::string::npos) << reason;
  EXPECT_NE(reason.find("> max 0.01"), std::string::npos) << reason;
  ExpectEveryHostOn("v2");
  // The evidence is in the text a person reads, not only in JSON.
  CommandResult shown =
      fleet_.Cli({"release", "show", std::to_string(release["id"].get<int64_t>())});
  EXPECT_NE(shown.out.find("gate error-rate in "), std::string::npos) << shown.out;
  EXPECT_NE(shown.out.find(": fail  "), std::string::npos) << shown.out;
}

// A bring-up region's metric gates judge that region only: its error rate climbing rolls its
// own hosts back, and the serving regions' release still succeeds.
TEST_F(GateFleetTest, ABringUpRegionsGateRollsBackOnlyThatRegion) {
  ASSERT_NO_FATAL_FAILURE(StartPrometheus());
  std::string yaml = ThreeWaves(GateYaml());
  const std::string serving = "regions: [us-east-1, eu-west-1, ap-southeast-2]";
  yaml.replace(yaml.find(serving), serving.size(),
               "regions: [us-east-1, eu-west-1, {name: ap-southeast-2, stage: bringup}]");
  StartFleet(yaml);
  auto track_state = [&](int64_t id) {
    json r = fleet_.CliJson({"release", "show", std::to_string(id)});
    return r["bringup"].size() == 1 ? r["bringup"][0]["state"].get<std::string>() : "";
  };

  CommandResult good = Release(fleet_.ServeApp("v1"));
  ASSERT_EQ(good.exit_code, 0) << good.err;
  const int64_t v1 = json::parse(good.out)["id"];
  ASSERT_TRUE(
      Fleet::WaitFor([&] { return track_state(v1) == "succeeded"; }, std::chrono::seconds(90)))
      << track_state(v1);
  ExpectEveryHostOn("v1");

  // v2's start makes the error rate climb in ap-southeast-2 only.
  std::string climbed = "# TYPE demo_error_rate gauge\n";
  for (const auto& r : kRegions) {
    climbed +=
        "demo_error_rate{region=\"" + r + "\"} " + (r == "ap-southeast-2" ? "0.2" : "0.001") + "\n";
  }
  AppBehaviour climbs;
  climbs.start_prologue = "if [ \"$LOCKSTEP_REGION\" = ap-southeast-2 ]; then printf '%s' '" +
                          climbed + "' > '" + metrics_file() + "'; fi\n";
  CommandResult bad = Release(fleet_.ServeApp("v2", climbs));
  ASSERT_EQ(bad.exit_code, 0) << bad.err << bad.out;
  json release = json::parse(bad.out);
  EXPECT_EQ(release["state"], "succeeded");
  const int64_t v2 = release["id"];
  ASSERT_TRUE(
      Fleet::WaitFor([&] { return track_state(v2) == "rolled_back"; }, std::chrono::seconds(90)))
      << track_state(v2);
  json shown = fleet_.CliJson({"release", "show", std::to_string(v2)});
  const std::string reason = shown["bringup"][0]["reason"];
  EXPECT_NE(reason.find("metric gate error-rate failed in ap-southeast-2"), std::string::npos)
      << reason;
  for (const auto& h : HostNames()) {
    EXPECT_EQ(fleet_.CurrentOf(h), RegionOf(h) == "ap-southeast-2" ? "v1" : "v2") << h;
  }
  // The serving regions' gates never saw the bring-up region's numbers.
  for (const auto& g : shown["gates"]) {
    if (g["verdict"] == "fail") {
      EXPECT_EQ(g["region"], "ap-southeast-2") << g.dump();
    }
  }
}

TEST_F(EngineFailuresTest, KillingLockstepdAtRandomMomentsAlwaysEndsInAFinalStateOnOneVersion) {
  StartFleet(ThreeWaves());
  ASSERT_EQ(Release(fleet_.ServeApp("v0")).exit_code, 0);
  std::mt19937 rng(20261125);
  std::uniform_int_distribution<int> delay_ms(0, 1500);
  constexpr int kIterations = 20;
  std::string last_good = "v0";
  for (int i = 1; i <= kIterations; ++i) {
    // Every third release fails its canary check, so kills also land during rollbacks.
    AppBehaviour behaviour;
    if (i % 3 == 0) behaviour.check_fail_on_agent = "us-east-1-1";
    std::string version = "v" + std::to_string(i);
    Artifact a = fleet_.ServeApp(version, behaviour);
    CommandResult created =
        fleet_.Cli({"--output", "json", "release", "create", "--pipeline", "monolith", "--version",
                    version, "--artifact", a.url, "--sha256", a.sha256});
    ASSERT_EQ(created.exit_code, 0) << created.err;
    int64_t id = json::parse(created.out)["id"];

    std::this_thread::sleep_for(std::chrono::milliseconds(delay_ms(rng)));
    fleet_.KillOrchestrator();  // kill -9, at whatever point the rollout is
    fleet_.StartOrchestrator();

    CommandResult waited = fleet_.Cli(
        {"--output", "json", "release", "watch", std::to_string(id), "--timeout", "90s"});
    json r = json::parse(waited.out.empty() ? "{}" : waited.out);
    std::string state = r.value("state", "");
    ASSERT_TRUE(state == "succeeded" || state == "rolled_back")
        << "iteration " << i << ": release " << id << " ended " << state << "\n"
        << waited.err << r.dump(2);
    if (state == "succeeded") last_good = version;
    EXPECT_EQ(state == "rolled_back", i % 3 == 0) << "iteration " << i;
    // At rest, every host runs the same release.
    bool one_version = Fleet::WaitFor(
        [&] {
          for (const auto& h : HostNames()) {
            if (fleet_.CurrentOf(h) != last_good) return false;
          }
          return true;
        },
        std::chrono::seconds(30));
    ASSERT_TRUE(one_version) << "iteration " << i << ": not every host runs " << last_good;
  }
  // Nothing was lost: every release is in the list, each in a final state.
  json list = fleet_.CliJson({"release", "list", "--limit", "100"});
  EXPECT_EQ(list.size(), static_cast<size_t>(kIterations + 1));
}

}  // namespace
}  // namespace lockstep::testing
