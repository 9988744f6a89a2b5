// Bring-up regions, regional artifact mirrors and hook output policies in engine passes on a
// manual clock: no sleeps, no network. Agents are simulated by feeding the engine the hellos
// and task results real agents would send; the store is a real SQLite database in memory.

#include <gtest/gtest.h>

#include <algorithm>
#include <functional>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "orchestrator/engine/engine.h"
#include "tests/unit/engine_fixture.h"

namespace lockstep {
namespace {

namespace v1 = lockstep::v1;
using std::chrono::milliseconds;
using std::chrono::seconds;
using testing::EngineFixture;
using testing::Sent;

constexpr char kBringup[] = "ap-southeast-2";

// Two serving regions (eu-west-1 keeps hook output on its hosts) and ap-southeast-2 in
// bring-up, with a mirror. Waves: one host per region baking 10 s, then every host, baking
// `last_bake` (none if empty).
std::string PipelineYaml(const std::string& last_bake = "") {
  return "pipeline: monolith\n"
         "regions:\n"
         "  - us-east-1\n"
         "  - {name: eu-west-1, hook_output: none}\n"
         "  - {name: ap-southeast-2, stage: bringup}\n"
         "waves:\n"
         "  - {name: canary, select: {per_region: 1}, bake: 10s}\n"
         "  - {name: all, select: {per_region: \"100%\"}" +
         (last_bake.empty() ? std::string() : ", bake: " + last_bake) +
         "}\n"
         "artifacts:\n"
         "  mirrors:\n"
         "    ap-southeast-2: \"http://127.0.0.1:18080/\"\n";
}

std::string ArtifactUrl(const std::string& version) {
  return "http://127.0.0.1:4000/artifacts/" + version + ".tar.gz";
}

std::set<std::string> AgentsOf(const std::vector<Sent>& tasks) {
  std::set<std::string> out;
  for (const auto& [agent, task] : tasks) out.insert(agent);
  return out;
}

bool InBringupRegion(const std::string& agent) { return agent.rfind(kBringup, 0) == 0; }

bool Contains(const std::vector<std::string>& list, const std::string& item) {
  return std::find(list.begin(), list.end(), item) != list.end();
}

class EngineBringupTest : public EngineFixture {
 protected:
  // Changes a result before it is reported (where the artifact came from, ...).
  using Customize =
      std::function<void(const std::string& agent, const v1::Task& task, v1::TaskResult* result)>;

  void MakeEngine(const std::string& yaml = PipelineYaml()) {
    auto p = ParsePipeline(yaml, "monolith.yaml");
    ASSERT_TRUE(p.ok()) << p.status().ToString();
    engine_ = std::make_unique<Engine>(std::vector<Pipeline>{*p}, store_.get(), &clock_, &sink_);
  }

  // Two hosts in each serving region, `bringup_hosts` in ap-southeast-2: <region>-1, ...
  void ConnectFleet(int bringup_hosts = 2) {
    for (const char* region : {"us-east-1", "eu-west-1"}) {
      for (int i = 1; i <= 2; ++i) Connect(std::string(region) + "-" + std::to_string(i), region);
    }
    for (int i = 1; i <= bringup_hosts; ++i) {
      Connect(std::string(kBringup) + "-" + std::to_string(i), kBringup);
    }
  }

  int64_t Create(const std::string& version) {
    NewRelease nr;
    nr.pipeline = "monolith";
    nr.version = version;
    nr.artifact_url = ArtifactUrl(version);
    nr.sha256 = std::string(64, 'b');
    auto r = engine_->CreateRelease(nr, "test");
    EXPECT_TRUE(r.ok()) << r.status().ToString();
    return r.ok() ? r->id : 0;
  }

  // What an agent answers: a switching task leaves the host on its version, a prepare (or a
  // failure) leaves it where it was.
  v1::TaskResult ResultFor(const Sent& sent, bool ok) {
    v1::TaskResult r;
    r.set_task_id(sent.second.task_id());
    r.set_ok(ok);
    if (ok && sent.second.kind() != v1::Task::PREPARE) {
      r.set_current_version(sent.second.version());
    } else {
      r.set_current_version(running_[sent.first]);
    }
    if (!ok) {
      r.set_error("deploy/start of " + sent.second.version() + " exited with status 1");
      r.set_failed_step("start");
    }
    return r;
  }

  void Report(const Sent& sent, const v1::TaskResult& r) {
    answered_.push_back(sent);
    Status st = engine_->TaskFinished(sent.first, r);
    ASSERT_TRUE(st.ok()) << st.ToString();
    running_[sent.first] = r.current_version();
  }

  void Answer(const Sent& sent, bool ok = true) { Report(sent, ResultFor(sent, ok)); }

  // Runs passes at the current time, answering every task with success, until a pass sends
  // nothing to answer. Tasks to `held` agents are not answered: they are returned.
  std::vector<Sent> Quiet(const std::set<std::string>& held = {}) {
    std::vector<Sent> kept;
    for (int i = 0; i < 50; ++i) {
      Pass();
      int answered = 0;
      for (const auto& t : sink_.Take()) {
        if (held.count(t.first)) {
          kept.push_back(t);
          continue;
        }
        Answer(t);
        ++answered;
      }
      if (answered == 0) return kept;
    }
    ADD_FAILURE() << "the engine never went quiet";
    return kept;
  }

  // Runs release `id` until it and its bring-up tracks are final: passes answer every task
  // (the activations of `failing` fail), and when a pass sends nothing the clock moves to
  // the wake-up it asked for.
  void Settle(int64_t id, const std::set<std::string>& failing = {},
              const Customize& customize = nullptr) {
    for (int i = 0; i < 200; ++i) {
      const UnixMs next = Pass();
      auto tasks = sink_.Take();
      for (const auto& t : tasks) {
        const bool fail = failing.count(t.first) > 0 && t.second.kind() == v1::Task::ACTIVATE;
        v1::TaskResult r = ResultFor(t, !fail);
        if (customize) customize(t.first, t.second, &r);
        Report(t, r);
      }
      if (!tasks.empty()) continue;
      if (release_state::IsFinal(Release(id).state) && TracksFinal(id)) return;
      if (next > clock_.Now()) AdvanceTo(next);
    }
    ADD_FAILURE() << "release " << id << " never settled: " << Release(id).state;
  }

  // A release just created: the serving canary hosts prepare and switch at once; the
  // bring-up canary's prepare is answered `late` after the serving canary's bake began (the
  // time returned), and this returns once that host switched and the track's bake began.
  UnixMs LateBringupCanary(milliseconds late) {
    const std::string canary = std::string(kBringup) + "-1";
    std::vector<Sent> held = Quiet({canary});
    const UnixMs serving_bake = clock_.Now();
    EXPECT_EQ(AgentsOf(held), (std::set<std::string>{canary}));
    Advance(late);
    for (const auto& t : held) Answer(t);
    Quiet();
    return serving_bake;
  }

  // The release's track of ap-southeast-2, as stored; state "(no track)" if there is none.
  BringupRecord Track(int64_t id) {
    BringupRecord missing;
    missing.state = "(no track)";
    auto stored = store_->BringupTracks(id);
    EXPECT_TRUE(stored.ok()) << stored.status().ToString();
    if (!stored.ok()) return missing;
    for (const auto& t : *stored) {
      if (t.region == kBringup) return t;
    }
    return missing;
  }

  bool TracksFinal(int64_t id) {
    auto stored = store_->BringupTracks(id);
    EXPECT_TRUE(stored.ok()) << stored.status().ToString();
    if (!stored.ok()) return false;
    return std::all_of(stored->begin(), stored->end(),
                       [](const BringupRecord& t) { return bringup_state::IsFinal(t.state); });
  }

  // The audit actions about release `id`, oldest first.
  std::vector<std::string> AuditActions(int64_t id) {
    std::vector<std::string> out;
    auto entries = store_->Audit(1000);
    EXPECT_TRUE(entries.ok()) << entries.status().ToString();
    if (!entries.ok()) return out;
    for (auto it = entries->rbegin(); it != entries->rend(); ++it) {
      if (it->target == "release/" + std::to_string(id)) out.push_back(it->action);
    }
    return out;
  }

  // Every task answered, in order.
  std::vector<Sent> answered_;
};

// ---------------------------------------------------------------------------- tracks

TEST_F(EngineBringupTest, AReleaseGivesTheBringupRegionATrackWhoseCanaryPreparesInTheFirstPass) {
  MakeEngine();
  ConnectFleet();
  const int64_t id = Create("v1");
  Pass();
  const auto tasks = sink_.Take();
  EXPECT_EQ(AgentsOf(tasks),
            (std::set<std::string>{"us-east-1-1", "eu-west-1-1", "ap-southeast-2-1"}));
  for (const auto& [agent, task] : tasks) {
    EXPECT_EQ(task.kind(), v1::Task::PREPARE) << agent;
    EXPECT_EQ(task.version(), "v1") << agent;
  }

  auto tracks = store_->BringupTracks(id);
  ASSERT_TRUE(tracks.ok()) << tracks.status().ToString();
  ASSERT_EQ(tracks->size(), 1u);
  const BringupRecord& t = tracks->front();
  EXPECT_EQ(t.release_id, id);
  EXPECT_EQ(t.region, kBringup);
  EXPECT_EQ(t.state, bringup_state::kRolling);
  EXPECT_EQ(t.wave, 0);
  EXPECT_EQ(t.started_at, clock_.Now());
  EXPECT_EQ(t.wave_started_at, clock_.Now());
  EXPECT_EQ(t.bake_started_at, 0);
  EXPECT_EQ(t.finished_at, 0);
  auto hosts = Hosts(id);
  EXPECT_EQ(hosts.size(), 3u);
  EXPECT_EQ(hosts["ap-southeast-2-1"].region, kBringup);
  EXPECT_EQ(hosts["ap-southeast-2-1"].wave, 0);
  EXPECT_EQ(hosts["ap-southeast-2-1"].state, host_state::kPreparing);
}

TEST_F(EngineBringupTest, TheTrackBakesFromWhenItsOwnCanaryIsDoneAndMovesOnByItself) {
  MakeEngine();
  ConnectFleet();
  const int64_t id = Create("v1");
  // The serving canary prepares and switches at once; the bring-up canary is slower.
  std::vector<Sent> held = Quiet({"ap-southeast-2-1"});
  ASSERT_EQ(held.size(), 1u);
  EXPECT_EQ(held[0].second.kind(), v1::Task::PREPARE);
  const UnixMs serving_bake = clock_.Now();
  auto waves = store_->Waves(id);
  ASSERT_TRUE(waves.ok()) << waves.status().ToString();
  ASSERT_FALSE(waves->empty());
  EXPECT_EQ((*waves)[0].state, wave_state::kBaking);
  EXPECT_EQ((*waves)[0].bake_started_at, serving_bake);
  BringupRecord t = Track(id);
  EXPECT_EQ(t.state, bringup_state::kRolling);
  EXPECT_EQ(t.wave, 0);
  EXPECT_EQ(t.bake_started_at, 0) << "the track's canary has not switched yet";

  Advance(seconds(4));
  Answer(held[0]);
  Quiet();
  t = Track(id);
  EXPECT_EQ(t.wave, 0);
  EXPECT_EQ(t.bake_started_at, serving_bake + 4'000);

  // The serving canary's bake ends first: only the serving regions take the next wave.
  AdvanceTo(serving_bake + 10'000);
  Pass();
  auto tasks = sink_.Take();
  EXPECT_EQ(AgentsOf(tasks), (std::set<std::string>{"us-east-1-2", "eu-west-1-2"}));
  for (const auto& [agent, task] : tasks) EXPECT_EQ(task.kind(), v1::Task::PREPARE) << agent;
  EXPECT_EQ(Release(id).current_wave, 1);
  EXPECT_EQ(Track(id).wave, 0);

  // The track's own bake ends 4 s later: then its region takes the next wave.
  AdvanceTo(serving_bake + 14'000);
  Pass();
  tasks = sink_.Take();
  ASSERT_EQ(tasks.size(), 1u);
  EXPECT_EQ(tasks[0].first, "ap-southeast-2-2");
  EXPECT_EQ(tasks[0].second.kind(), v1::Task::PREPARE);
  EXPECT_EQ(tasks[0].second.version(), "v1");
  t = Track(id);
  EXPECT_EQ(t.state, bringup_state::kRolling);
  EXPECT_EQ(t.wave, 1);
  EXPECT_EQ(t.wave_started_at, serving_bake + 14'000);
  EXPECT_EQ(t.bake_started_at, 0);
}

TEST_F(EngineBringupTest, AFailedBringupHostSendsOnlyItsRegionBackAndTheReleaseGoesOn) {
  MakeEngine();
  ConnectFleet();
  Settle(Create("v1"));
  const int64_t id = Create("v2");
  Pass();
  auto prepares = sink_.Take();
  ASSERT_EQ(prepares.size(), 3u);
  for (const auto& t : prepares) Answer(t);
  Pass();
  auto activates = sink_.Take();
  ASSERT_EQ(AgentsOf(activates),
            (std::set<std::string>{"us-east-1-1", "eu-west-1-1", "ap-southeast-2-1"}));
  for (const auto& t : activates) Answer(t, t.first != "ap-southeast-2-1");

  Pass();
  auto reverts = sink_.Take();
  ASSERT_EQ(reverts.size(), 1u) << "only the bring-up host that switched goes back";
  EXPECT_EQ(reverts[0].first, "ap-southeast-2-1");
  EXPECT_EQ(reverts[0].second.kind(), v1::Task::DEPLOY);
  EXPECT_EQ(reverts[0].second.version(), "v1");
  EXPECT_EQ(reverts[0].second.mirror_url(), "http://127.0.0.1:18080/artifacts/v1.tar.gz");
  BringupRecord t = Track(id);
  EXPECT_EQ(t.state, bringup_state::kRollingBack);
  EXPECT_NE(t.reason.find("wave canary"), std::string::npos) << t.reason;
  EXPECT_EQ(Release(id).state, release_state::kRolling);

  Answer(reverts[0]);
  Pass();
  t = Track(id);
  EXPECT_EQ(t.state, bringup_state::kRolledBack);
  EXPECT_EQ(t.finished_at, clock_.Now());
  EXPECT_EQ(Hosts(id)["ap-southeast-2-1"].state, host_state::kReverted);

  answered_.clear();
  Settle(id);
  EXPECT_EQ(Release(id).state, release_state::kSucceeded);
  EXPECT_EQ(Track(id).state, bringup_state::kRolledBack);
  EXPECT_EQ(AgentsOf(answered_), (std::set<std::string>{"us-east-1-2", "eu-west-1-2"}));
  for (const auto& [agent, task] : answered_) {
    EXPECT_FALSE(InBringupRegion(agent)) << agent << " is in the region that went back";
    EXPECT_NE(task.kind(), v1::Task::DEPLOY) << agent << " was sent back";
    EXPECT_EQ(task.version(), "v2") << agent;
  }
  for (const auto& [name, h] : Hosts(id)) {
    if (!InBringupRegion(name)) {
      EXPECT_EQ(h.state, host_state::kDone) << name;
    }
  }
  const auto actions = AuditActions(id);
  EXPECT_TRUE(Contains(actions, "release.bringup_failed"));
  EXPECT_TRUE(Contains(actions, "release.bringup_rolled_back"));
  EXPECT_TRUE(Contains(actions, "release.succeeded"));
  EXPECT_FALSE(Contains(actions, "release.rolling_back"));
}

TEST_F(EngineBringupTest, AServingFailureSendsTheBringupHostsBackToo) {
  MakeEngine();
  ConnectFleet();
  Settle(Create("v1"));
  const int64_t id = Create("v2");
  Pass();
  for (const auto& t : sink_.Take()) Answer(t);
  Pass();
  auto activates = sink_.Take();
  ASSERT_EQ(activates.size(), 3u);
  for (const auto& t : activates) Answer(t, t.first != "us-east-1-1");

  Pass();
  auto reverts = sink_.Take();
  EXPECT_EQ(AgentsOf(reverts),
            (std::set<std::string>{"us-east-1-1", "eu-west-1-1", "ap-southeast-2-1"}));
  for (const auto& [agent, task] : reverts) {
    EXPECT_EQ(task.kind(), v1::Task::DEPLOY) << agent;
    EXPECT_EQ(task.version(), "v1") << agent;
  }
  EXPECT_EQ(Release(id).state, release_state::kRollingBack);
  EXPECT_EQ(Track(id).state, bringup_state::kRollingBack);

  for (const auto& t : reverts) Answer(t);
  Pass();
  EXPECT_EQ(Release(id).state, release_state::kRolledBack);
  const BringupRecord t = Track(id);
  EXPECT_EQ(t.state, bringup_state::kRolledBack);
  EXPECT_EQ(t.finished_at, clock_.Now());
  auto hosts = Hosts(id);
  EXPECT_EQ(hosts["ap-southeast-2-1"].state, host_state::kReverted);
  EXPECT_EQ(hosts.count("ap-southeast-2-2"), 0u);
}

TEST_F(EngineBringupTest, ATrackStillBakingWhenTheServingRegionsSucceedFinishesOnItsOwn) {
  MakeEngine();
  ConnectFleet();
  const int64_t id = Create("v1");
  const UnixMs serving_bake = LateBringupCanary(seconds(4));
  AdvanceTo(serving_bake + 10'000);
  answered_.clear();
  Quiet();
  EXPECT_EQ(Release(id).state, release_state::kSucceeded);
  for (const auto& [agent, task] : answered_) EXPECT_FALSE(InBringupRegion(agent)) << agent;
  BringupRecord t = Track(id);
  EXPECT_EQ(t.state, bringup_state::kRolling);
  EXPECT_EQ(t.wave, 0);
  EXPECT_EQ(t.bake_started_at, serving_bake + 4'000);

  AdvanceTo(serving_bake + 14'000);
  Pass();
  auto tasks = sink_.Take();
  ASSERT_EQ(tasks.size(), 1u);
  EXPECT_EQ(tasks[0].first, "ap-southeast-2-2");
  EXPECT_EQ(tasks[0].second.kind(), v1::Task::PREPARE);
  EXPECT_EQ(tasks[0].second.version(), "v1");
  EXPECT_EQ(Track(id).wave, 1);

  Answer(tasks[0]);
  Quiet();
  t = Track(id);
  EXPECT_EQ(t.state, bringup_state::kSucceeded);
  EXPECT_EQ(t.finished_at, serving_bake + 14'000);
  EXPECT_EQ(Release(id).state, release_state::kSucceeded);
  EXPECT_EQ(Hosts(id)["ap-southeast-2-2"].state, host_state::kDone);
  EXPECT_TRUE(Contains(AuditActions(id), "release.bringup_succeeded"));
}

TEST_F(EngineBringupTest, ANewReleaseSupersedesATrailingTrackAndGetsOneOfItsOwn) {
  MakeEngine();
  ConnectFleet();
  const int64_t first = Create("v1");
  const UnixMs serving_bake = LateBringupCanary(seconds(4));
  AdvanceTo(serving_bake + 10'000);
  Quiet();
  ASSERT_EQ(Release(first).state, release_state::kSucceeded);
  ASSERT_EQ(Track(first).state, bringup_state::kRolling);

  const int64_t second = Create("v2");
  answered_.clear();
  Pass();
  auto tasks = sink_.Take();
  EXPECT_EQ(AgentsOf(tasks),
            (std::set<std::string>{"us-east-1-1", "eu-west-1-1", "ap-southeast-2-1"}));
  const BringupRecord old = Track(first);
  EXPECT_EQ(old.state, bringup_state::kSuperseded);
  EXPECT_NE(old.reason.find("release " + std::to_string(second)), std::string::npos) << old.reason;
  EXPECT_EQ(old.finished_at, clock_.Now());
  const BringupRecord fresh = Track(second);
  EXPECT_EQ(fresh.state, bringup_state::kRolling);
  EXPECT_EQ(fresh.wave, 0);
  EXPECT_EQ(fresh.started_at, clock_.Now());

  // Past the end of the old track's bake: the region takes only the new release.
  for (const auto& t : tasks) Answer(t);
  Quiet();
  AdvanceTo(serving_bake + 20'000);
  Quiet();
  EXPECT_EQ(AgentsOf(answered_).count("ap-southeast-2-2"), 1u);
  for (const auto& [agent, task] : answered_) EXPECT_EQ(task.version(), "v2") << agent;
  EXPECT_EQ(Track(first).state, bringup_state::kSuperseded);
}

TEST_F(EngineBringupTest, ARegionWhoseTrackWentBackIsNotConvergedButANewServingHostIs) {
  MakeEngine();
  ConnectFleet();
  Settle(Create("v1"));
  const int64_t id = Create("v2");
  Settle(id, {"ap-southeast-2-1"});
  ASSERT_EQ(Release(id).state, release_state::kSucceeded);
  ASSERT_EQ(Track(id).state, bringup_state::kRolledBack);

  for (int i = 0; i < 3; ++i) {
    Advance(seconds(31));
    Pass();
    EXPECT_TRUE(sink_.Take().empty()) << "pass " << i;
  }
  Connect("us-east-1-3", "us-east-1");
  Connect("ap-southeast-2-3", kBringup);
  Pass();
  auto tasks = sink_.Take();
  ASSERT_EQ(tasks.size(), 1u);
  EXPECT_EQ(tasks[0].first, "us-east-1-3");
  EXPECT_EQ(tasks[0].second.kind(), v1::Task::DEPLOY);
  EXPECT_EQ(tasks[0].second.version(), "v2");
  Answer(tasks[0]);
  Pass();
  EXPECT_TRUE(sink_.Take().empty());
  auto hosts = Hosts(id);
  EXPECT_EQ(hosts["us-east-1-3"].state, host_state::kDone);
  EXPECT_EQ(hosts.count("ap-southeast-2-3"), 0u);
  EXPECT_EQ(hosts["ap-southeast-2-1"].state, host_state::kReverted);
}

TEST_F(EngineBringupTest, ATrackStepInAPassThatChangesNothingElseIsStored) {
  // The region has one host, so the track's last wave adds none: stepping into it changes the
  // track only.
  MakeEngine(PipelineYaml("10s"));
  ConnectFleet(/*bringup_hosts=*/1);
  const int64_t id = Create("v1");
  const UnixMs serving_bake = LateBringupCanary(seconds(5));
  AdvanceTo(serving_bake + 10'000);
  Quiet();  // the serving regions' last wave switches and bakes until +20 s
  ASSERT_EQ(Release(id).state, release_state::kRolling);

  AdvanceTo(serving_bake + 15'000);
  Pass();
  BringupRecord t = Track(id);
  EXPECT_EQ(t.wave, 1);
  EXPECT_EQ(t.bake_started_at, serving_bake + 15'000);

  AdvanceTo(serving_bake + 20'000);
  Quiet();
  EXPECT_EQ(Release(id).state, release_state::kSucceeded);
  AdvanceTo(serving_bake + 25'000);
  Pass();
  t = Track(id);
  EXPECT_EQ(t.state, bringup_state::kSucceeded);
  EXPECT_EQ(t.finished_at, serving_bake + 25'000);
}

// ------------------------------------------------------------- mirrors and hook output

TEST_F(EngineBringupTest, TasksCarryTheRegionsMirrorAndWhetherItKeepsHookOutput) {
  MakeEngine();
  ConnectFleet();
  Create("v1");
  Pass();
  std::map<std::string, v1::Task> by_agent;
  for (const auto& [agent, task] : sink_.Take()) by_agent[agent] = task;
  ASSERT_EQ(by_agent.size(), 3u);

  const v1::Task& ap = by_agent["ap-southeast-2-1"];
  EXPECT_EQ(ap.artifact_url(), ArtifactUrl("v1"));
  EXPECT_EQ(ap.mirror_url(), "http://127.0.0.1:18080/artifacts/v1.tar.gz");
  EXPECT_FALSE(ap.withhold_hook_output());
  const v1::Task& us = by_agent["us-east-1-1"];
  EXPECT_EQ(us.artifact_url(), ArtifactUrl("v1"));
  EXPECT_EQ(us.mirror_url(), "");
  EXPECT_FALSE(us.withhold_hook_output());
  const v1::Task& eu = by_agent["eu-west-1-1"];
  EXPECT_EQ(eu.mirror_url(), "");
  EXPECT_TRUE(eu.withhold_hook_output());
}

TEST_F(EngineBringupTest, AFailedHooksOutputIsKeptInATailRegionDroppedInANoneRegionAndCleared) {
  MakeEngine();
  ConnectFleet();
  const int64_t id = Create("v1");
  Settle(id);
  Connect("us-east-1-3", "us-east-1");
  Connect("eu-west-1-3", "eu-west-1");
  Pass();
  auto tasks = sink_.Take();
  ASSERT_EQ(AgentsOf(tasks), (std::set<std::string>{"us-east-1-3", "eu-west-1-3"}));
  for (const auto& t : tasks) {
    EXPECT_EQ(t.second.kind(), v1::Task::DEPLOY) << t.first;
    EXPECT_EQ(t.second.withhold_hook_output(), t.first == "eu-west-1-3") << t.first;
    // The agent sends its output even where it should not: lockstepd must not keep it.
    v1::TaskResult r = ResultFor(t, false);
    r.set_output_tail("MARKER-" + t.first + "\nstarting: port 8080 in use\n");
    Report(t, r);
  }
  Pass();
  auto hosts = Hosts(id);
  EXPECT_EQ(hosts["us-east-1-3"].state, host_state::kFailed);
  EXPECT_EQ(hosts["us-east-1-3"].output_tail, "MARKER-us-east-1-3\nstarting: port 8080 in use\n");
  EXPECT_EQ(hosts["eu-west-1-3"].state, host_state::kFailed);
  EXPECT_EQ(hosts["eu-west-1-3"].output_tail, "");

  // Tried again later, the hosts run the release: the old failure no longer explains them.
  Advance(seconds(31));
  Pass();
  tasks = sink_.Take();
  ASSERT_EQ(AgentsOf(tasks), (std::set<std::string>{"us-east-1-3", "eu-west-1-3"}));
  for (const auto& t : tasks) Answer(t);
  Pass();
  hosts = Hosts(id);
  EXPECT_EQ(hosts["us-east-1-3"].state, host_state::kDone);
  EXPECT_EQ(hosts["us-east-1-3"].output_tail, "");
  EXPECT_EQ(hosts["eu-west-1-3"].state, host_state::kDone);
  EXPECT_EQ(hosts["eu-west-1-3"].output_tail, "");
}

TEST_F(EngineBringupTest, ArtifactFetchesAreCountedPerRegionAndSource) {
  MakeEngine();
  ConnectFleet();
  const int64_t id = Create("v1");
  Settle(id, {}, [](const std::string& agent, const v1::Task& task, v1::TaskResult* r) {
    if (task.kind() != v1::Task::PREPARE) return;
    if (agent.rfind("us-east-1-", 0) == 0) {
      r->set_fetched_from("origin");
      r->set_fetched_bytes(1000);
    } else if (agent == "ap-southeast-2-1") {
      r->set_fetched_from("origin");
      r->set_fetched_bytes(2048);
      r->set_mirror_error("sha256 mismatch: the mirror served other bytes");
    } else if (agent == "ap-southeast-2-2") {
      r->set_fetched_from("mirror");
      r->set_fetched_bytes(2048);
    }
    // eu-west-1's hosts had it on disk already: fetched_from stays empty.
  });
  ASSERT_EQ(Release(id).state, release_state::kSucceeded);

  const auto counts = engine_->ArtifactFetchCounts();
  EXPECT_EQ(counts.count("eu-west-1"), 0u);
  ASSERT_EQ(counts.count("us-east-1"), 1u);
  const Engine::FetchCounts& us = counts.at("us-east-1");
  EXPECT_EQ(us.origin_fetches, 2u);
  EXPECT_EQ(us.origin_bytes, 2000u);
  EXPECT_EQ(us.mirror_fetches, 0u);
  EXPECT_EQ(us.mirror_bytes, 0u);
  EXPECT_EQ(us.mirror_failures, 0u);
  ASSERT_EQ(counts.count(kBringup), 1u);
  const Engine::FetchCounts& ap = counts.at(kBringup);
  EXPECT_EQ(ap.origin_fetches, 1u);
  EXPECT_EQ(ap.origin_bytes, 2048u);
  EXPECT_EQ(ap.mirror_fetches, 1u);
  EXPECT_EQ(ap.mirror_bytes, 2048u);
  EXPECT_EQ(ap.mirror_failures, 1u);
}

}  // namespace
}  // namespace lockstep
