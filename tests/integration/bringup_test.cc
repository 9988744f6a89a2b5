// Bring-up regions end to end, with the real lockstepd, agents and CLI: a region added to a
// pipeline in bring-up takes every release in waves of its own, its failures put back only
// its own hosts and never hold the serving regions, a serving failure takes its hosts back
// too, and changing its stage promotes it into the waves. The first test follows
// docs/adding-a-region.md step by step.

#include <gtest/gtest.h>
#include <signal.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <string>
#include <utility>
#include <vector>

#include "tests/integration/fleet.h"

namespace lockstep::testing {
namespace {

using nlohmann::json;
namespace fs = std::filesystem;

constexpr std::chrono::seconds kLimit(60);
const std::string kNewRegion = "ap-southeast-2";
const std::string kBringUpEntry = "{name: ap-southeast-2, stage: bringup}";

const std::vector<std::pair<std::string, std::string>> kServingHosts = {{"use1-a", "us-east-1"},
                                                                        {"use1-b", "us-east-1"},
                                                                        {"euw1-a", "eu-west-1"},
                                                                        {"euw1-b", "eu-west-1"}};
// Hosts of the new region, taken by name: apse2-a is its canary.
const std::vector<std::string> kNewHosts = {"apse2-a", "apse2-b"};

// The pipeline, with `regions` the items of its `regions:` list and `hook` its hook timeout.
std::string Pipeline(const std::vector<std::string>& regions, const std::string& hook = "10s",
                     const std::string& extra = "") {
  std::string yaml = "pipeline: monolith\nregions:\n";
  for (const auto& r : regions) yaml += "  - " + r + "\n";
  yaml += R"(waves:
  - name: canary
    select: {per_region: 1}
  - name: all
    select: {per_region: "100%"}
concurrency: {per_region: 10}
health:
  check_hook: true
timeouts: {hook: )" +
          hook + R"(, fetch: 10s, agent_lost: 10s}
rollback: {automatic: true, tolerate_failed_hosts: 0}
)" + extra;
  return yaml;
}

// Shell run first in a hook: on `agent` only, it waits for $FAULT_DIR/go (at most about
// 25 s), so that a test decides when that host's hook goes on.
std::string ParkUntilGo(const std::string& agent) {
  return "if [ \"$LOCKSTEP_AGENT\" = \"" + agent +
         "\" ]; then i=0; while [ ! -e \"$FAULT_DIR/go\" ] && [ $i -lt 500 ]; do sleep 0.05; "
         "i=$((i+1)); done; fi\n";
}

// j[key] if j is an object holding that string, else "" (so that a missing view fails an
// expectation instead of throwing).
std::string Str(const json& j, const std::string& key) {
  if (!j.is_object() || !j.contains(key) || !j[key].is_string()) return "";
  return j[key].get<std::string>();
}

class BringUpTest : public ::testing::Test {
 protected:
  std::vector<std::string> ServingNames() const {
    std::vector<std::string> out;
    for (const auto& [name, region] : kServingHosts) out.push_back(name);
    for (const auto& name : extra_serving_) out.push_back(name);
    return out;
  }
  std::vector<std::string> AllNames() const {
    std::vector<std::string> out = ServingNames();
    out.insert(out.end(), kNewHosts.begin(), kNewHosts.end());
    return out;
  }

  bool AllOn(const std::vector<std::string>& hosts, const std::string& version) const {
    for (const auto& h : hosts) {
      if (fleet_.CurrentOf(h) != version) return false;
    }
    return true;
  }

  std::string Where(const std::vector<std::string>& hosts) const {
    std::string out;
    for (const auto& h : hosts) out += h + "=" + fleet_.CurrentOf(h) + " ";
    return out;
  }

  // A pipeline with the new region in bring-up from the start, every host connected.
  void StartWithBringUp(const std::string& hook_timeout) {
    fault_dir_ = fleet_.dir() + "/faults";
    fs::create_directories(fault_dir_);
    fleet_.agent_env["FAULT_DIR"] = fault_dir_;
    // Bring-up events reach a receiver that asked for them by name.
    receiver_.OnPost("/notify", [](const std::string&) { return 200; });
    fleet_.WritePipeline(
        "monolith.yaml",
        Pipeline({"us-east-1", "eu-west-1", kBringUpEntry}, hook_timeout,
                 "notify:\n  - url: \"" + receiver_.Url("/notify") +
                     "\"\n    events: [bringup_failed, bringup_rolled_back, bringup_succeeded]\n"));
    fleet_.StartOrchestrator();
    for (const auto& [name, region] : kServingHosts) fleet_.StartAgent(name, region);
    for (const auto& name : kNewHosts) fleet_.StartAgent(name, kNewRegion);
    fleet_.WaitForAgents(kServingHosts.size() + kNewHosts.size());
  }

  void Go() { std::ofstream(fault_dir_ + "/go") << "go\n"; }

  // Whether a notification of `event` about `region` was received.
  bool Notified(const std::string& event, const std::string& region) const {
    for (const auto& p : receiver_.Posts("/notify")) {
      json body = json::parse(p.body, nullptr, false);
      if (!body.is_object()) continue;
      if (body.value("event", "") == event && body.dump().find(region) != std::string::npos) {
        return true;
      }
    }
    return false;
  }

  std::vector<std::string> CreateArgs(const Artifact& a) const {
    return {"--output",  "json",    "release",    "create", "--pipeline", "monolith",
            "--version", a.version, "--artifact", a.url,    "--sha256",   a.sha256};
  }

  // Creates a release and waits until it is final.
  CommandResult Release(const Artifact& a) {
    std::vector<std::string> args = CreateArgs(a);
    args.insert(args.end(), {"--wait", "--timeout", "90s"});
    return fleet_.Cli(args);
  }

  // Creates a release and returns its id at once.
  int64_t Queue(const Artifact& a) {
    CommandResult r = fleet_.Cli(CreateArgs(a));
    EXPECT_EQ(r.exit_code, 0) << r.err;
    return IdOf(r);
  }

  static int64_t IdOf(const CommandResult& r) {
    try {
      return json::parse(r.out).value("id", int64_t{0});
    } catch (const json::exception&) {
      ADD_FAILURE() << "no release in: " << r.out << r.err;
      return 0;
    }
  }

  json Show(int64_t id) { return fleet_.CliJson({"release", "show", std::to_string(id)}); }
  std::string ShowText(int64_t id) {
    return fleet_.Cli({"release", "show", std::to_string(id)}).out;
  }

  // The bring-up track of the new region in release JSON `r`; null if it has none.
  static json Track(const json& r) {
    if (!r.is_object() || !r.contains("bringup") || !r["bringup"].is_array()) return json();
    for (const auto& t : r["bringup"]) {
      if (Str(t, "region") == kNewRegion) return t;
    }
    return json();
  }

  // Waits until release `id`'s bring-up track is in `state`; returns the release.
  json WaitForTrack(int64_t id, const std::string& state) {
    json last;
    const bool reached = Fleet::WaitFor(
        [&] {
          last = Show(id);
          const json track = Track(last);
          return Str(track, "state") == state;
        },
        kLimit);
    EXPECT_TRUE(reached) << "the bring-up track of release " << id << " never became " << state
                         << ": " << last.dump();
    return last;
  }

  // The host rows of release JSON `r` in `region`.
  static std::vector<json> RowsIn(const json& r, const std::string& region) {
    std::vector<json> out;
    if (!r.contains("hosts")) return out;
    for (const auto& h : r["hosts"]) {
      if (Str(h, "region") == region) out.push_back(h);
    }
    return out;
  }

  // Audit entries with `action`, newest first.
  std::vector<json> Audited(const std::string& action) {
    std::vector<json> out;
    for (const auto& e : fleet_.CliJson({"audit", "--limit", "1000"})) {
      if (Str(e, "action") == action) out.push_back(e);
    }
    return out;
  }

  // Whether an audit entry with `action` has a detail containing `text`.
  bool AuditedWith(const std::string& action, const std::string& text) {
    for (const auto& e : Audited(action)) {
      if (Str(e, "detail").find(text) != std::string::npos) return true;
    }
    return false;
  }

  // The pipeline's status, and one region of it (null if not listed).
  json StatusOf() {
    json all = fleet_.CliJson({"status", "monolith"});
    return all.is_array() && !all.empty() ? all[0] : json();
  }
  static json RegionOf(const json& status, const std::string& region) {
    if (!status.is_object() || !status.contains("regions")) return json();
    for (const auto& r : status["regions"]) {
      if (Str(r, "region") == region) return r;
    }
    return json();
  }

  // `lockstepd --check` of the fleet's pipeline files.
  CommandResult Check() {
    return RunCommand({BinPath("lockstepd"), "--pipelines", fleet_.pipelines_dir(), "--check"},
                      std::chrono::seconds(20));
  }

  // How many times the new region's hosts started `version`.
  size_t StartsOnNewHosts(const std::string& version) const {
    size_t n = 0;
    for (const auto& e : fleet_.Events()) {
      if (e.hook != "start" || e.version != version) continue;
      for (const auto& h : kNewHosts) n += e.agent == h;
    }
    return n;
  }

  TestHttpServer receiver_;  // notifications; outlives the fleet that sends them
  Fleet fleet_;
  std::string fault_dir_;
  std::vector<std::string> extra_serving_;  // serving hosts a test added
};

// docs/adding-a-region.md, from a fleet without the region to the region serving.
TEST_F(BringUpTest, TheRunbookFromEmptyToServing) {
  // Before: two serving regions on v1.
  fleet_.WritePipeline("monolith.yaml", Pipeline({"us-east-1", "eu-west-1"}));
  fleet_.StartOrchestrator();
  const pid_t lockstepd = fleet_.orchestrator_pid();
  for (const auto& [name, region] : kServingHosts) fleet_.StartAgent(name, region);
  fleet_.WaitForAgents(kServingHosts.size());
  CommandResult first = Release(fleet_.ServeApp("v1"));
  ASSERT_EQ(first.exit_code, 0) << first.err;
  ASSERT_TRUE(AllOn(ServingNames(), "v1")) << Where(ServingNames());

  // 1. The region's enrollment token.
  CommandResult token = fleet_.Cli({"tokens", "create", "--role", "agent", "--region", kNewRegion,
                                    "--name", "enroll-ap-southeast-2"});
  ASSERT_EQ(token.exit_code, 0) << token.err;
  std::string enroll = token.out;
  while (!enroll.empty() && (enroll.back() == '\n' || enroll.back() == '\r')) enroll.pop_back();
  ASSERT_EQ(enroll.rfind("lst_", 0), 0u) << token.out;

  // 2. The region in the pipeline file, in bring-up, checked before it is loaded.
  fleet_.WritePipeline("monolith.yaml", Pipeline({"us-east-1", "eu-west-1", kBringUpEntry}));
  CommandResult check = Check();
  ASSERT_EQ(check.exit_code, 0) << check.err;
  EXPECT_NE(check.out.find("ok: 1 pipeline(s) (monolith)"), std::string::npos) << check.out;

  // 3. Reload: audited, and the region is listed in bring-up before it has a host.
  ASSERT_EQ(::kill(lockstepd, SIGHUP), 0);
  ASSERT_TRUE(Fleet::WaitFor([&] { return !Audited("pipelines.reload").empty(); }, kLimit));
  json added = Audited("pipelines.reload")[0];
  EXPECT_EQ(Str(added, "outcome"), "ok") << added.dump();
  EXPECT_NE(Str(added, "detail").find("region ap-southeast-2 added"), std::string::npos)
      << added.dump();
  json listed = RegionOf(StatusOf(), kNewRegion);
  ASSERT_TRUE(listed.is_object()) << StatusOf().dump();
  EXPECT_EQ(Str(listed, "stage"), "bringup") << listed.dump();
  EXPECT_TRUE(listed["hosts"].empty()) << listed.dump();
  for (const char* serving : {"us-east-1", "eu-west-1"}) {
    EXPECT_EQ(Str(RegionOf(StatusOf(), serving), "stage"), "serving") << serving;
  }

  // 4. The region's agents, enrolling with the token.
  for (const auto& name : kNewHosts) fleet_.StartAgent(name, kNewRegion, enroll);
  fleet_.WaitForAgents(kServingHosts.size() + kNewHosts.size());
  // Each enrolled with the region's token and keeps a credential of its own.
  EXPECT_TRUE(Fleet::WaitFor(
      [&] {
        size_t enrolled = 0;
        for (const auto& e : Audited("agents.enroll")) {
          for (const auto& name : kNewHosts) {
            enrolled += Str(e, "target") == "agent/" + name &&
                        Str(e, "detail").find("enroll-ap-southeast-2") != std::string::npos;
          }
        }
        return enrolled == kNewHosts.size();
      },
      kLimit));
  for (const auto& name : kNewHosts) {
    EXPECT_TRUE(fs::exists(fleet_.AgentRoot(name) + "/host-credential")) << name;
  }

  // 5. The region converges to the current release.
  ASSERT_TRUE(Fleet::WaitFor([&] { return AllOn(kNewHosts, "v1"); }, kLimit)) << Where(kNewHosts);
  EXPECT_TRUE(Fleet::WaitFor(
      [&] {
        json region = RegionOf(StatusOf(), kNewRegion);
        if (!region.is_object() || region["hosts"].size() != kNewHosts.size()) return false;
        for (const auto& h : region["hosts"]) {
          if (Str(h, "current_version") != "v1") return false;
        }
        return true;
      },
      kLimit))
      << StatusOf().dump();

  // 6. The next release reaches it, in waves of its own.
  CommandResult second = Release(fleet_.ServeApp("v2"));
  ASSERT_EQ(second.exit_code, 0) << second.err;
  const int64_t v2 = IdOf(second);
  EXPECT_EQ(Str(json::parse(second.out), "state"), "succeeded");
  json released = WaitForTrack(v2, "succeeded");
  EXPECT_TRUE(AllOn(AllNames(), "v2")) << Where(AllNames());
  std::vector<json> rows = RowsIn(released, kNewRegion);
  EXPECT_EQ(rows.size(), kNewHosts.size()) << released.dump();
  for (const auto& h : rows) EXPECT_EQ(Str(h, "state"), "done") << h.dump();
  // The serving waves count the serving regions only.
  for (const auto& w : released["waves"]) {
    for (const auto& rp : w["regions"]) EXPECT_NE(Str(rp, "region"), kNewRegion) << w.dump();
  }

  // 7. A release that fails only in the new region: the serving regions take it, the new
  // region's hosts are put back, and the failure is reported.
  AppBehaviour bad;
  bad.check_fail_on_agent = "apse2-a";
  CommandResult third = Release(fleet_.ServeApp("v3", bad));
  EXPECT_EQ(third.exit_code, 0) << third.err;  // the serving regions' outcome
  const int64_t v3 = IdOf(third);
  json rolled_back = WaitForTrack(v3, "rolled_back");
  EXPECT_EQ(Str(rolled_back, "state"), "succeeded");
  EXPECT_TRUE(AllOn(ServingNames(), "v3")) << Where(ServingNames());
  EXPECT_TRUE(AllOn(kNewHosts, "v2")) << Where(kNewHosts);
  json track = Track(rolled_back);
  EXPECT_NE(Str(track, "reason").find("apse2-a"), std::string::npos) << track.dump();
  for (const auto& h : RowsIn(rolled_back, kNewRegion)) {
    if (Str(h, "agent") == "apse2-a") {
      EXPECT_EQ(Str(h, "state"), "reverted") << h.dump();
    }
  }
  EXPECT_TRUE(AuditedWith("release.bringup_failed", kNewRegion));
  EXPECT_TRUE(AuditedWith("release.bringup_rolled_back", kNewRegion));
  const std::string text = ShowText(v3);
  EXPECT_NE(text.find("bring-up " + kNewRegion), std::string::npos) << text;
  EXPECT_NE(text.find("rolled_back"), std::string::npos) << text;

  // The failed release is not converged onto the region afterwards: a host that joins a
  // serving region is converged to v3, and that pass leaves the new region on v2.
  const size_t v3_starts = StartsOnNewHosts("v3");
  fleet_.StartAgent("use1-c", "us-east-1");
  extra_serving_.push_back("use1-c");
  ASSERT_TRUE(Fleet::WaitFor([&] { return fleet_.CurrentOf("use1-c") == "v3"; }, kLimit));
  EXPECT_TRUE(AuditedWith("agent.converge", "expected v3"));
  for (const auto& e : Audited("agent.converge")) {
    for (const auto& name : kNewHosts) {
      EXPECT_FALSE(Str(e, "target") == "agent/" + name &&
                   Str(e, "detail").find("expected v3") != std::string::npos)
          << e.dump();
    }
  }
  EXPECT_TRUE(AllOn(kNewHosts, "v2")) << Where(kNewHosts);
  EXPECT_EQ(StartsOnNewHosts("v3"), v3_starts);

  // The release after it reaches every host again.
  CommandResult fourth = Release(fleet_.ServeApp("v4"));
  ASSERT_EQ(fourth.exit_code, 0) << fourth.err;
  WaitForTrack(IdOf(fourth), "succeeded");
  EXPECT_TRUE(AllOn(AllNames(), "v4")) << Where(AllNames());
  EXPECT_EQ(StartsOnNewHosts("v3"), v3_starts);

  // 8. Promotion: the bare name, checked, reloaded, audited, shown.
  fleet_.WritePipeline("monolith.yaml", Pipeline({"us-east-1", "eu-west-1", kNewRegion}));
  CommandResult recheck = Check();
  ASSERT_EQ(recheck.exit_code, 0) << recheck.err;
  const size_t reloads = Audited("pipelines.reload").size();
  ASSERT_EQ(::kill(lockstepd, SIGHUP), 0);
  ASSERT_TRUE(Fleet::WaitFor([&] { return Audited("pipelines.reload").size() > reloads; }, kLimit));
  json promoted = Audited("pipelines.reload")[0];
  EXPECT_EQ(Str(promoted, "outcome"), "ok") << promoted.dump();
  EXPECT_NE(Str(promoted, "detail").find("region ap-southeast-2 promoted to serving"),
            std::string::npos)
      << promoted.dump();
  EXPECT_EQ(Str(RegionOf(StatusOf(), kNewRegion), "stage"), "serving") << StatusOf().dump();

  // From the next release on, the region is in the waves: its failure fails the release and
  // puts every host back.
  AppBehaviour bad_again;
  bad_again.check_fail_on_agent = "apse2-a";
  CommandResult fifth = Release(fleet_.ServeApp("v5", bad_again));
  EXPECT_EQ(fifth.exit_code, 1) << fifth.err;
  EXPECT_NE(fifth.err.find("apse2-a"), std::string::npos) << fifth.err;
  json failed = json::parse(fifth.out);
  EXPECT_EQ(Str(failed, "state"), "rolled_back") << failed.dump();
  EXPECT_TRUE(Track(failed).is_null()) << failed.dump();
  bool in_canary = false;
  for (const auto& rp : failed["waves"][0]["regions"]) in_canary |= Str(rp, "region") == kNewRegion;
  EXPECT_TRUE(in_canary) << failed.dump();
  EXPECT_TRUE(AllOn(AllNames(), "v4")) << Where(AllNames());
  EXPECT_EQ(fleet_.orchestrator_pid(), lockstepd);  // the same process throughout
}

// The serving regions finish a release while the bring-up region's canary is still in its
// health check; the bring-up failure that follows is reported and puts back only its host.
TEST_F(BringUpTest, ABringUpFailureNeverHoldsTheServingRegions) {
  StartWithBringUp("60s");
  CommandResult first = Release(fleet_.ServeApp("v1"));
  ASSERT_EQ(first.exit_code, 0) << first.err;
  ASSERT_TRUE(Fleet::WaitFor([&] { return AllOn(AllNames(), "v1"); }, kLimit)) << Where(AllNames());

  AppBehaviour slow_then_bad;
  slow_then_bad.check_prologue = ParkUntilGo("apse2-a");
  slow_then_bad.check_fail_on_agent = "apse2-a";
  CommandResult second = Release(fleet_.ServeApp("v2", slow_then_bad));
  ASSERT_EQ(second.exit_code, 0) << second.err;
  const int64_t id = IdOf(second);

  // The release succeeded in the serving regions while the bring-up canary still checks.
  json during = Show(id);
  EXPECT_EQ(Str(during, "state"), "succeeded") << during.dump();
  EXPECT_EQ(Str(Track(during), "state"), "rolling") << during.dump();
  EXPECT_TRUE(AllOn(ServingNames(), "v2")) << Where(ServingNames());
  EXPECT_EQ(fleet_.CurrentOf("apse2-b"), "v1");  // its wave of the track has not come
  std::string text = ShowText(id);
  EXPECT_NE(text.find("bring-up " + kNewRegion), std::string::npos) << text;
  EXPECT_NE(text.find("rolling"), std::string::npos) << text;
  json status = StatusOf();
  EXPECT_EQ(Str(status, "desired_version"), "v2") << status.dump();
  EXPECT_EQ(Str(RegionOf(status, kNewRegion), "stage"), "bringup") << status.dump();

  // The canary's check fails: the track rolls back, the release stays succeeded.
  Go();
  json after = WaitForTrack(id, "rolled_back");
  EXPECT_EQ(Str(after, "state"), "succeeded") << after.dump();
  EXPECT_TRUE(AllOn(kNewHosts, "v1")) << Where(kNewHosts);
  EXPECT_TRUE(AllOn(ServingNames(), "v2")) << Where(ServingNames());
  json track = Track(after);
  EXPECT_NE(Str(track, "reason").find("apse2-a"), std::string::npos) << track.dump();
  EXPECT_GT(track.is_object() ? track.value("finished_at_ms", int64_t{0}) : 0, 0) << track.dump();
  EXPECT_TRUE(AuditedWith("release.bringup_failed", kNewRegion));
  EXPECT_TRUE(AuditedWith("release.bringup_rolled_back", kNewRegion));
  EXPECT_TRUE(Fleet::WaitFor([&] { return Notified("bringup_failed", kNewRegion); }, kLimit));
  EXPECT_TRUE(Fleet::WaitFor([&] { return Notified("bringup_rolled_back", kNewRegion); }, kLimit));
  EXPECT_TRUE(Notified("bringup_succeeded", kNewRegion));  // v1 reached it first
  text = ShowText(id);
  EXPECT_NE(text.find("bring-up " + kNewRegion), std::string::npos) << text;
  EXPECT_NE(text.find("rolled_back"), std::string::npos) << text;
  status = StatusOf();
  EXPECT_EQ(Str(status, "desired_version"), "v2") << status.dump();
}

// A release that fails in a serving region takes back every host that took it, the
// bring-up region's included, even once its track had finished.
TEST_F(BringUpTest, AServingFailureTakesTheBringUpHostsBackToo) {
  StartWithBringUp("60s");
  CommandResult first = Release(fleet_.ServeApp("v1"));
  ASSERT_EQ(first.exit_code, 0) << first.err;
  ASSERT_TRUE(Fleet::WaitFor([&] { return AllOn(AllNames(), "v1"); }, kLimit)) << Where(AllNames());

  // use1-b (the serving second wave) holds its check until the bring-up track is done, then
  // fails it.
  AppBehaviour bad;
  bad.check_prologue = ParkUntilGo("use1-b");
  bad.check_fail_on_agent = "use1-b";
  const int64_t id = Queue(fleet_.ServeApp("v2", bad));
  ASSERT_GT(id, 0);
  json mid = WaitForTrack(id, "succeeded");
  EXPECT_EQ(Str(mid, "state"), "rolling") << mid.dump();
  EXPECT_TRUE(AllOn(kNewHosts, "v2")) << Where(kNewHosts);

  Go();
  CommandResult watched =
      fleet_.Cli({"--output", "json", "release", "watch", std::to_string(id), "--timeout", "90s"});
  EXPECT_EQ(watched.exit_code, 1) << watched.err;
  EXPECT_NE(watched.err.find("use1-b"), std::string::npos) << watched.err;
  EXPECT_EQ(Str(json::parse(watched.out), "state"), "rolled_back") << watched.out;

  EXPECT_TRUE(Fleet::WaitFor([&] { return AllOn(AllNames(), "v1"); }, kLimit)) << Where(AllNames());
  json shown;
  EXPECT_TRUE(Fleet::WaitFor(
      [&] {
        shown = Show(id);
        std::vector<json> rows = RowsIn(shown, kNewRegion);
        if (rows.size() != kNewHosts.size()) return false;
        for (const auto& h : rows) {
          if (Str(h, "state") != "reverted") return false;
        }
        return true;
      },
      kLimit))
      << shown.dump();
  EXPECT_EQ(Str(shown, "state"), "rolled_back") << shown.dump();
  EXPECT_EQ(Str(StatusOf(), "desired_version"), "v1");
}

// What a pipeline file may not say about a bring-up region: `lockstepd --check` refuses it
// naming the field, as start-up and a reload would.
TEST(BringUpLoadTest, AWaveNamingABringUpRegionAndAnUnknownStageAreRefused) {
  Fleet fleet;
  const std::string head = "pipeline: monolith\nregions:\n  - us-east-1\n  - " + kBringUpEntry +
                           "\nwaves:\n  - name: canary\n    select: {per_region: 1}\n";
  auto check = [&] {
    return RunCommand({BinPath("lockstepd"), "--pipelines", fleet.pipelines_dir(), "--check"},
                      std::chrono::seconds(20));
  };

  // A serving region named explicitly next to a bring-up region is fine.
  fleet.WritePipeline("monolith.yaml", head + "  - name: us\n    select: {regions: [us-east-1]}\n");
  CommandResult good = check();
  EXPECT_EQ(good.exit_code, 0) << good.err;
  EXPECT_NE(good.out.find("ok: 1 pipeline(s) (monolith)"), std::string::npos) << good.out;

  // A wave naming the bring-up region: it has waves of its own.
  fleet.WritePipeline("monolith.yaml",
                      head + "  - name: apac\n    select: {regions: [ap-southeast-2]}\n");
  CommandResult named = check();
  EXPECT_EQ(named.exit_code, 2) << named.err;
  EXPECT_NE(named.err.find("monolith.yaml:"), std::string::npos) << named.err;
  EXPECT_NE(named.err.find("waves[1].select.regions"), std::string::npos) << named.err;
  EXPECT_NE(named.err.find("ap-southeast-2"), std::string::npos) << named.err;

  // A stage that is neither serving nor bringup.
  fleet.WritePipeline("monolith.yaml",
                      "pipeline: monolith\nregions:\n  - us-east-1\n"
                      "  - {name: ap-southeast-2, stage: bogus}\n"
                      "waves:\n  - name: all\n    select: {per_region: \"100%\"}\n");
  CommandResult bogus = check();
  EXPECT_EQ(bogus.exit_code, 2) << bogus.err;
  EXPECT_NE(bogus.err.find("regions[1].stage"), std::string::npos) << bogus.err;
  EXPECT_NE(bogus.err.find("bogus"), std::string::npos) << bogus.err;

  // A pipeline needs a serving region for a release to have an outcome.
  fleet.WritePipeline("monolith.yaml",
                      "pipeline: monolith\nregions:\n  - " + kBringUpEntry +
                          "\nwaves:\n  - name: all\n    select: {per_region: \"100%\"}\n");
  CommandResult none_serving = check();
  EXPECT_EQ(none_serving.exit_code, 2) << none_serving.err;
  EXPECT_NE(none_serving.err.find("regions"), std::string::npos) << none_serving.err;
  EXPECT_NE(none_serving.err.find("serving"), std::string::npos) << none_serving.err;
}

}  // namespace
}  // namespace lockstep::testing
