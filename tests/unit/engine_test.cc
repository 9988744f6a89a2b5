// Rollout engine passes on a manual clock: no sleeps, no network. Agents are simulated by
// feeding the engine the hellos and task results real agents would send; the store is a
// real SQLite database.

#include "orchestrator/engine/engine.h"

#include <gtest/gtest.h>

#include <map>

namespace lockstep {
namespace {

namespace v1 = lockstep::v1;
using std::chrono::milliseconds;
using std::chrono::seconds;

const std::vector<std::string> kRegions = {"us-east-1", "eu-west-1", "ap-southeast-2"};

// Records every task the engine hands out, as an agent would receive it.
class RecordingSink final : public TaskSink {
 public:
  bool Send(const std::string& agent, const v1::Task& task) override {
    sent.emplace_back(agent, task);
    return connected.count(agent) > 0;
  }
  std::vector<std::pair<std::string, v1::Task>> Take() {
    auto out = std::move(sent);
    sent.clear();
    return out;
  }
  std::vector<std::pair<std::string, v1::Task>> sent;
  std::set<std::string> connected;
};

WaveSpec Wave(std::string name, HostSelector::Kind kind, int value, milliseconds bake = {}) {
  WaveSpec w;
  w.name = std::move(name);
  w.regions = kRegions;
  w.hosts.kind = kind;
  w.hosts.value = value;
  w.bake = bake;
  return w;
}

Pipeline ThreeWavePipeline(milliseconds bake = {}) {
  Pipeline p;
  p.name = "monolith";
  p.file = "monolith.yaml";
  p.regions = kRegions;
  p.waves = {Wave("canary", HostSelector::Kind::kCount, 1, bake),
             Wave("half", HostSelector::Kind::kPercent, 50, bake),
             Wave("all", HostSelector::Kind::kPercent, 100, bake)};
  p.check_hook = true;
  p.timeouts.fetch = seconds(10);
  p.timeouts.hook = seconds(5);
  p.timeouts.agent_lost = seconds(30);
  return p;
}

class EngineTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto s = OpenSqliteStore(":memory:");
    ASSERT_TRUE(s.ok());
    store_ = std::move(*s);
  }

  void MakeEngine(Pipeline p) {
    pipeline_ = p;
    engine_ = std::make_unique<Engine>(std::vector<Pipeline>{p}, store_.get(), &clock_, &sink_);
  }

  // Four hosts per region: a canary, then half (2), then all (4).
  void ConnectFleet(int per_region = 4) {
    for (const auto& region : kRegions) {
      for (int i = 1; i <= per_region; ++i) Connect(region + "-" + std::to_string(i), region);
    }
  }

  void Connect(const std::string& name, const std::string& region,
               const std::string& current = "") {
    v1::AgentHello hello;
    hello.set_name(name);
    hello.set_region(region);
    hello.set_current_version(current);
    auto pipeline = engine_->AgentConnected(hello);
    ASSERT_TRUE(pipeline.ok()) << pipeline.status().ToString();
    sink_.connected.insert(name);
  }

  int64_t Create(const std::string& version) {
    NewRelease nr{"monolith",           version, "http://127.0.0.1:1/" + version + ".tar.gz",
                  std::string(64, 'b'), "",      ""};
    auto r = engine_->CreateRelease(nr, "test");
    EXPECT_TRUE(r.ok()) << r.status().ToString();
    return r.ok() ? r->id : 0;
  }

  UnixMs Pass() {
    auto next = engine_->Reconcile();
    EXPECT_TRUE(next.ok()) << next.status().ToString();
    return next.ok() ? *next : -1;
  }

  void Finish(const std::pair<std::string, v1::Task>& sent, bool ok = true,
              const std::string& error = "") {
    v1::TaskResult r;
    r.set_task_id(sent.second.task_id());
    r.set_ok(ok);
    r.set_error(error);
    if (!ok) r.set_failed_step("check");
    if (ok && sent.second.kind() == v1::Task::ACTIVATE) {
      r.set_current_version(sent.second.version());
    }
    ASSERT_TRUE(engine_->TaskFinished(sent.first, r).ok());
  }

  // Answers every task handed out with success until nothing more is sent. Returns the
  // number of tasks answered.
  int RunToQuiet() {
    int answered = 0;
    for (int i = 0; i < 50; ++i) {
      Pass();
      auto tasks = sink_.Take();
      if (tasks.empty()) return answered;
      for (const auto& t : tasks) Finish(t);
      answered += static_cast<int>(tasks.size());
    }
    ADD_FAILURE() << "engine never went quiet";
    return answered;
  }

  ReleaseRecord Release(int64_t id) { return *store_->GetRelease(id); }

  std::map<std::string, HostRecord> Hosts(int64_t id) {
    std::map<std::string, HostRecord> out;
    auto hosts = store_->Hosts(id);
    for (auto& h : *hosts) out[h.agent] = h;
    return out;
  }

  ManualClock clock_;
  RecordingSink sink_;
  std::unique_ptr<Store> store_;
  Pipeline pipeline_;
  std::unique_ptr<Engine> engine_;
};

std::set<std::string> Agents(const std::vector<std::pair<std::string, v1::Task>>& tasks) {
  std::set<std::string> out;
  for (const auto& [agent, task] : tasks) out.insert(agent);
  return out;
}

TEST_F(EngineTest, FirstWaveTakesOneHostInEveryRegionAndOnlyPreparesThem) {
  MakeEngine(ThreeWavePipeline());
  ConnectFleet();
  Create("v2");
  Pass();
  auto tasks = sink_.Take();
  EXPECT_EQ(Agents(tasks),
            (std::set<std::string>{"us-east-1-1", "eu-west-1-1", "ap-southeast-2-1"}));
  for (const auto& [agent, task] : tasks) EXPECT_EQ(task.kind(), v1::Task::PREPARE);
}

TEST_F(EngineTest, NoHostActivatesUntilEveryHostOfTheWaveIsPrepared) {
  MakeEngine(ThreeWavePipeline());
  ConnectFleet();
  Create("v2");
  Pass();
  auto prepares = sink_.Take();
  ASSERT_EQ(prepares.size(), 3u);
  Finish(prepares[0]);
  Finish(prepares[1]);
  Pass();
  EXPECT_TRUE(sink_.Take().empty());
  Finish(prepares[2]);
  Pass();
  auto activates = sink_.Take();
  ASSERT_EQ(activates.size(), 3u);
  for (const auto& [agent, task] : activates) EXPECT_EQ(task.kind(), v1::Task::ACTIVATE);
}

TEST_F(EngineTest, WavesRunInOrderAndTheReleaseSucceedsWhenTheLastWaveIsDone) {
  MakeEngine(ThreeWavePipeline());
  ConnectFleet();
  int64_t id = Create("v2");

  // Drive wave by wave, checking that each wave's hosts only get tasks after the previous
  // wave completed.
  std::vector<std::set<std::string>> activated_per_wave;
  for (int i = 0; i < 20 && !release_state::IsFinal(Release(id).state); ++i) {
    Pass();
    auto tasks = sink_.Take();
    std::set<std::string> activated;
    for (const auto& t : tasks) {
      if (t.second.kind() == v1::Task::ACTIVATE) activated.insert(t.first);
      Finish(t);
    }
    if (!activated.empty()) activated_per_wave.push_back(activated);
    Pass();
  }
  EXPECT_EQ(Release(id).state, "succeeded");
  ASSERT_EQ(activated_per_wave.size(), 3u);
  EXPECT_EQ(activated_per_wave[0].size(), 3u);  // one per region
  EXPECT_EQ(activated_per_wave[1].size(), 3u);  // the second of four in each region
  EXPECT_EQ(activated_per_wave[2].size(), 6u);  // the remaining two in each region
  for (const auto& [name, h] : Hosts(id)) EXPECT_EQ(h.state, "done") << name;
}

TEST_F(EngineTest, BakeStartsWhenTheWaveIsDoneAndReportsWhenItEnds) {
  MakeEngine(ThreeWavePipeline(seconds(30)));
  ConnectFleet(1);
  int64_t id = Create("v2");
  Pass();
  for (const auto& t : sink_.Take()) Finish(t);
  Pass();
  for (const auto& t : sink_.Take()) Finish(t);
  UnixMs bake_started = clock_.Now();
  UnixMs next = Pass();
  EXPECT_EQ(next, bake_started + 30'000);
  auto waves = store_->Waves(id).value();
  EXPECT_EQ(waves[0].state, "baking");
  EXPECT_EQ(waves[0].bake_started_at, bake_started);

  clock_.Advance(seconds(29));
  Pass();
  EXPECT_EQ(Release(id).current_wave, 0);
  clock_.Advance(seconds(1));
  Pass();
  EXPECT_EQ(Release(id).current_wave, 1);
}

TEST_F(EngineTest, ARestartedEngineFinishesTheRemainingBakeNotANewOne) {
  MakeEngine(ThreeWavePipeline(seconds(30)));
  ConnectFleet(1);
  int64_t id = Create("v2");
  Pass();
  for (const auto& t : sink_.Take()) Finish(t);
  Pass();
  for (const auto& t : sink_.Take()) Finish(t);
  UnixMs bake_started = clock_.Now();
  Pass();

  clock_.Advance(seconds(20));
  // A new process: a fresh engine over the same store, nothing carried in memory.
  MakeEngine(ThreeWavePipeline(seconds(30)));
  EXPECT_EQ(Pass(), bake_started + 30'000);  // 10 s left, not 30
  clock_.Advance(seconds(10));
  Pass();
  EXPECT_EQ(Release(id).current_wave, 1);
}

TEST_F(EngineTest, AFailedHostFailsTheReleaseAndLaterWavesNeverStart) {
  MakeEngine(ThreeWavePipeline());
  ConnectFleet();
  int64_t id = Create("v2");
  Pass();
  auto prepares = sink_.Take();
  for (const auto& t : prepares) Finish(t);
  Pass();
  auto activates = sink_.Take();
  Finish(activates[0], false, "deploy/check of v2 exited with status 1");
  Finish(activates[1]);
  Finish(activates[2]);
  Pass();
  auto r = Release(id);
  EXPECT_EQ(r.state, "failed");
  EXPECT_NE(r.reason.find("deploy/check of v2 exited with status 1"), std::string::npos)
      << r.reason;
  EXPECT_NE(r.reason.find("wave canary"), std::string::npos) << r.reason;
  // Nothing more is sent, and no host outside the canary wave was ever touched.
  EXPECT_TRUE(sink_.Take().empty());
  for (const auto& [name, h] : Hosts(id)) EXPECT_EQ(h.wave, 0) << name;
}

TEST_F(EngineTest, FailuresWithinTheToleranceDoNotFailTheRelease) {
  Pipeline p = ThreeWavePipeline();
  p.rollback.tolerate_failed_hosts = 1;
  MakeEngine(p);
  ConnectFleet(1);
  int64_t id = Create("v2");
  Pass();
  auto prepares = sink_.Take();
  Finish(prepares[0], false, "fetch failed");
  Finish(prepares[1]);
  Finish(prepares[2]);
  RunToQuiet();
  EXPECT_EQ(Release(id).state, "succeeded");
}

TEST_F(EngineTest, AHostThatNeverAnswersFailsByItsDeadline) {
  MakeEngine(ThreeWavePipeline());
  ConnectFleet(1);
  int64_t id = Create("v2");
  UnixMs sent_at = clock_.Now();
  UnixMs next = Pass();
  sink_.Take();
  // The pass says when the deadline falls, so the loop wakes for it without polling.
  EXPECT_EQ(next, sent_at + 3 * 10'000 + 10'000);
  clock_.Set(next - 1);
  Pass();
  EXPECT_EQ(Release(id).state, "rolling");
  clock_.Set(next);
  Pass();
  auto r = Release(id);
  EXPECT_EQ(r.state, "failed");
  EXPECT_NE(r.reason.find("prepare timed out"), std::string::npos) << r.reason;
}

TEST_F(EngineTest, AnAgentLostWhileHoldingATaskFailsItsHostAfterAgentLost) {
  MakeEngine(ThreeWavePipeline());
  ConnectFleet(1);
  int64_t id = Create("v2");
  Pass();
  sink_.Take();
  clock_.Advance(seconds(1));
  ASSERT_TRUE(engine_->AgentDisconnected("eu-west-1-1").ok());
  UnixMs lost_after = clock_.Now() + 30'000;
  clock_.Advance(seconds(29));
  Pass();
  EXPECT_EQ(Release(id).state, "rolling");
  clock_.Set(lost_after);
  Pass();
  auto r = Release(id);
  EXPECT_EQ(r.state, "failed");
  EXPECT_NE(r.reason.find("eu-west-1-1: agent lost"), std::string::npos) << r.reason;
}

TEST_F(EngineTest, AReconnectingAgentIsSentItsOutstandingTaskAgain) {
  MakeEngine(ThreeWavePipeline());
  ConnectFleet(1);
  Create("v2");
  Pass();
  auto first = sink_.Take();
  ASSERT_EQ(first.size(), 3u);
  ASSERT_TRUE(engine_->AgentDisconnected("us-east-1-1").ok());
  Connect("us-east-1-1", "us-east-1");
  Pass();
  auto resent = sink_.Take();
  ASSERT_EQ(resent.size(), 1u);
  EXPECT_EQ(resent[0].first, "us-east-1-1");
  std::string original;
  for (const auto& t : first) {
    if (t.first == "us-east-1-1") original = t.second.task_id();
  }
  EXPECT_EQ(resent[0].second.task_id(), original);  // same id: the agent runs it once
}

TEST_F(EngineTest, ANewerQueuedReleaseSupersedesOlderQueuedOnes) {
  MakeEngine(ThreeWavePipeline());
  ConnectFleet(1);
  int64_t a = Create("v2");
  int64_t b = Create("v3");
  int64_t c = Create("v4");
  Pass();
  EXPECT_EQ(Release(a).state, "superseded");
  EXPECT_EQ(Release(b).state, "superseded");
  EXPECT_EQ(Release(a).reason, "superseded by release " + std::to_string(c));
  EXPECT_EQ(Release(c).state, "rolling");
}

TEST_F(EngineTest, OneReleaseInFlightPerPipeline) {
  MakeEngine(ThreeWavePipeline());
  ConnectFleet(1);
  int64_t a = Create("v2");
  Pass();
  auto prepares = sink_.Take();
  int64_t b = Create("v3");
  Pass();
  EXPECT_EQ(Release(a).state, "rolling");
  EXPECT_EQ(Release(b).state, "queued");
  EXPECT_TRUE(sink_.Take().empty());
  for (const auto& t : prepares) Finish(t);
  RunToQuiet();
  EXPECT_EQ(Release(a).state, "succeeded");
  RunToQuiet();
  EXPECT_EQ(Release(b).state, "succeeded");
  EXPECT_EQ(Release(b).previous_version, "v2");
}

TEST_F(EngineTest, ConcurrencyLimitsHostsWorkingAtOnceInARegion) {
  Pipeline p = ThreeWavePipeline();
  p.waves = {Wave("all", HostSelector::Kind::kPercent, 100)};
  p.concurrency_per_region = 2;
  MakeEngine(p);
  ConnectFleet(5);
  Create("v2");
  Pass();
  auto tasks = sink_.Take();
  std::map<std::string, int> per_region;
  for (const auto& t : tasks) ++per_region[t.first.substr(0, t.first.rfind('-'))];
  for (const auto& region : kRegions) EXPECT_EQ(per_region[region], 2) << region;
  // As hosts finish, others take their place.
  Finish(tasks[0]);
  Pass();
  EXPECT_EQ(sink_.Take().size(), 1u);
}

TEST_F(EngineTest, AResultForAnOldTaskChangesNothing) {
  MakeEngine(ThreeWavePipeline());
  ConnectFleet(1);
  int64_t id = Create("v2");
  Pass();
  sink_.Take();
  v1::TaskResult stale;
  stale.set_task_id(Engine::TaskId(id, "us-east-1-1", "activate"));  // never sent
  stale.set_ok(true);
  ASSERT_TRUE(engine_->TaskFinished("us-east-1-1", stale).ok());
  EXPECT_EQ(Hosts(id)["us-east-1-1"].state, "preparing");
}

TEST_F(EngineTest, AgentsOfUndeclaredRegionsAreRefused) {
  MakeEngine(ThreeWavePipeline());
  v1::AgentHello hello;
  hello.set_name("x");
  hello.set_region("eu-central-1");
  auto st = engine_->AgentConnected(hello);
  ASSERT_FALSE(st.ok());
  EXPECT_EQ(st.status().message(), "no pipeline lists region \"eu-central-1\"");
}

TEST_F(EngineTest, ReleaseRequestsAreValidatedFieldByField) {
  MakeEngine(ThreeWavePipeline());
  NewRelease good{"monolith", "v2", "http://127.0.0.1/v2.tar.gz", std::string(64, 'a'), "", ""};
  EXPECT_TRUE(engine_->ValidateRelease(good).ok());
  NewRelease r = good;
  r.pipeline = "nope";
  EXPECT_EQ(engine_->ValidateRelease(r).message(), "pipeline: unknown pipeline \"nope\"");
  r = good;
  r.sha256 = "abc";
  EXPECT_EQ(engine_->ValidateRelease(r).message(), "sha256: \"abc\" is not 64 hex digits");
  r = good;
  r.version = "../etc";
  EXPECT_NE(engine_->ValidateRelease(r).message().find("version:"), std::string::npos);
  r = good;
  r.artifact_url = "file:///etc/passwd";
  EXPECT_NE(engine_->ValidateRelease(r).message().find("artifact:"), std::string::npos);
  // Nothing was stored by validation failures.
  EXPECT_TRUE(store_->ListReleases("", 10)->empty());
}

TEST_F(EngineTest, AWaveOverARegionWithNoHostsDoesNotBlock) {
  MakeEngine(ThreeWavePipeline());
  Connect("us-east-1-1", "us-east-1");
  int64_t id = Create("v2");
  RunToQuiet();
  EXPECT_EQ(Release(id).state, "succeeded");
}

}  // namespace
}  // namespace lockstep
