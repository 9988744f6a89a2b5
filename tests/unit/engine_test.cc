// Rollout engine passes on a manual clock: no sleeps, no network. Agents are simulated by
// feeding the engine the hellos and task results real agents would send; the store is a
// real SQLite database.

#include "orchestrator/engine/engine.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <map>

#include "orchestrator/engine/history.h"
#include "tests/support/recording_observer.h"
#include "tests/unit/engine_fixture.h"

namespace lockstep {
namespace {

namespace v1 = lockstep::v1;
using std::chrono::milliseconds;
using std::chrono::seconds;
using testing::EngineFixture;
using testing::RecordingSink;

const std::vector<std::string> kRegions = {"us-east-1", "eu-west-1", "ap-southeast-2"};

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

class EngineTest : public EngineFixture {
 protected:
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

  int64_t Create(const std::string& version) {
    NewRelease nr{"monolith",           version, "http://127.0.0.1:1/" + version + ".tar.gz",
                  std::string(64, 'b'), "",      ""};
    auto r = engine_->CreateRelease(nr, "test");
    EXPECT_TRUE(r.ok()) << r.status().ToString();
    return r.ok() ? r->id : 0;
  }

  void Finish(const std::pair<std::string, v1::Task>& sent, bool ok = true,
              const std::string& error = "") {
    v1::TaskResult r;
    r.set_task_id(sent.second.task_id());
    r.set_ok(ok);
    r.set_error(error);
    if (!ok) r.set_failed_step("check");
    if (ok && sent.second.kind() != v1::Task::PREPARE) {
      r.set_current_version(sent.second.version());
    } else if (ok) {
      r.set_current_version(running_[sent.first]);  // a prepare leaves `current` alone
    }
    ASSERT_TRUE(engine_->TaskFinished(sent.first, r).ok());
    running_[sent.first] = r.current_version();
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

  // Takes the first wave's hosts through prepare and activate with success: its bake (and
  // gate checks) start in the last pass.
  void FinishFirstWave() {
    Pass();
    for (const auto& t : sink_.Take()) Finish(t);
    Pass();
    for (const auto& t : sink_.Take()) Finish(t);
    Pass();
  }

  // Runs release `id` to a final state, answering every task with success except the
  // activations of `failing`, which fail their check.
  void RunToFinal(int64_t id, const std::set<std::string>& failing = {}) {
    for (int i = 0; i < 30 && !release_state::IsFinal(Release(id).state); ++i) {
      Pass();
      for (const auto& t : sink_.Take()) {
        bool fail = failing.count(t.first) && t.second.kind() == v1::Task::ACTIVATE;
        Finish(t, !fail, fail ? "check failed" : "");
      }
    }
  }

  Pipeline pipeline_;
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

  Advance(seconds(29));
  Pass();
  EXPECT_EQ(Release(id).current_wave, 0);
  Advance(seconds(1));
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

  Advance(seconds(20));
  // A new process: a fresh engine over the same store, nothing carried in memory; the
  // agents reconnect to it.
  MakeEngine(ThreeWavePipeline(seconds(30)));
  for (const auto& region : kRegions) Connect(region + "-1", region, "v2");
  EXPECT_EQ(Pass(), bake_started + 30'000);  // 10 s left, not 30
  Advance(seconds(10));
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
  p.rollback.tolerate_failed_hosts = {false, 1};
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
  AdvanceTo(next - 1);
  Pass();
  EXPECT_EQ(Release(id).state, "rolling");
  AdvanceTo(next);
  Pass();
  auto r = Release(id);
  EXPECT_EQ(r.state, "failed");  // the first release: nothing to roll back to
  EXPECT_NE(r.reason.find("prepare timed out"), std::string::npos) << r.reason;
}

TEST_F(EngineTest, AnAgentLostWhileHoldingATaskFailsItsHostAfterAgentLost) {
  MakeEngine(ThreeWavePipeline());
  ConnectFleet(1);
  int64_t id = Create("v2");
  Pass();
  sink_.Take();
  Advance(seconds(1));
  ASSERT_TRUE(engine_->AgentDisconnected("eu-west-1-1").ok());
  sink_.connected.erase("eu-west-1-1");
  UnixMs lost_after = clock_.Now() + 30'000;
  Advance(seconds(29));
  Pass();
  EXPECT_EQ(Release(id).state, "rolling");
  AdvanceTo(lost_after);
  Pass();
  auto r = Release(id);
  EXPECT_EQ(r.state, "failed");
  EXPECT_NE(r.reason.find("eu-west-1-1: agent lost"), std::string::npos) << r.reason;
}

// Where lockstepd's transport watches liveness (keepalive pings), an agent whose stream is
// open is heard from, however long since its last message; a stream that broke counts as
// silent from the transport's bound before the break (or the last message, if later).
Pipeline SlowFetchPipeline() {
  Pipeline p = ThreeWavePipeline();
  p.timeouts.fetch = seconds(120);  // the prepare's own deadline stays out of the way
  return p;
}

TEST_F(EngineTest, WithTransportLivenessAConnectedAgentIsNotLostForBeingQuiet) {
  MakeEngine(SlowFetchPipeline());
  engine_->set_liveness_by_transport(true);
  ConnectFleet(1);
  int64_t id = Create("v2");
  Pass();
  ASSERT_EQ(sink_.Take().size(), 3u);
  clock_.Advance(seconds(31));  // past agent_lost (30 s) without a word from any agent
  Pass();
  auto r = Release(id);
  EXPECT_EQ(r.state, "rolling") << r.reason;
  for (const auto& [name, h] : Hosts(id)) EXPECT_NE(h.state, "failed") << name << ": " << h.detail;
}

TEST_F(EngineTest, WithTransportLivenessABrokenStreamIsSilentSinceTheTransportsBound) {
  MakeEngine(SlowFetchPipeline());
  engine_->set_liveness_by_transport(true);
  ConnectFleet(1);
  int64_t id = Create("v2");
  Pass();
  sink_.Take();
  const UnixMs sent = clock_.Now();
  clock_.Advance(seconds(25));  // not a word from any agent
  Pass();
  ASSERT_EQ(Release(id).state, "rolling");
  // The connection broke; the transport had vouched for the agent until 20 s before.
  ASSERT_TRUE(engine_->AgentDisconnected("eu-west-1-1", 20'000).ok());
  sink_.connected.erase("eu-west-1-1");
  const UnixMs lost_at = sent + 5'000 + 30'000;
  clock_.Advance(milliseconds(lost_at - 1 - clock_.Now()));
  Pass();
  EXPECT_EQ(Release(id).state, "rolling");
  clock_.Advance(milliseconds(1));
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

// The pass that ends a release asks for the next pass at once, so a queued release starts
// as soon as the one before it ended, however that was (here: it failed).
TEST_F(EngineTest, AReleaseThatEndsAsksForTheNextPassAtOnce) {
  MakeEngine(ThreeWavePipeline());
  ConnectFleet(1);
  int64_t a = Create("v2");
  Pass();
  auto prepares = sink_.Take();
  int64_t b = Create("v3");
  for (const auto& t : prepares) Finish(t);
  Pass();
  auto activates = sink_.Take();
  ASSERT_FALSE(activates.empty());
  for (const auto& t : activates) Finish(t, false, "deploy/check of v2 exited with status 1");
  const UnixMs next = Pass();
  ASSERT_EQ(Release(a).state, "failed");
  EXPECT_EQ(Release(b).state, "queued");
  EXPECT_GT(next, 0);
  EXPECT_LE(next, clock_.Now()) << "the queued release would wait for an unrelated wake-up";
  Pass();
  EXPECT_EQ(Release(b).state, "rolling");
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

TEST_F(EngineTest, AVersionNamesOneArtifactForever) {
  MakeEngine(ThreeWavePipeline());
  int64_t first = Create("v2");
  NewRelease other{"monolith", "v2", "http://127.0.0.1:1/other.tar.gz", std::string(64, 'c'), "",
                   "",         0};
  auto refused = engine_->CreateRelease(other, "test");
  EXPECT_EQ(refused.status().code(), StatusCode::kFailedPrecondition);
  EXPECT_NE(refused.status().message().find("release " + std::to_string(first)), std::string::npos)
      << refused.status().message();
  // The same build again (any case of its digest) is fine; a new version always is.
  NewRelease same{"monolith", "v2", "http://127.0.0.1:1/v2.tar.gz", std::string(64, 'B'), "",
                  "",         0};
  EXPECT_TRUE(engine_->CreateRelease(same, "test").ok());
  other.version = "v3";
  EXPECT_TRUE(engine_->CreateRelease(other, "test").ok());
}

// A request sent again (a retry across a failover, one push delivered to two lockstepd) gets
// the release the first made, and nothing more is created or audited.
TEST_F(EngineTest, ARequestIdMakesCreationIdempotent) {
  MakeEngine(ThreeWavePipeline());
  NewRelease req{"monolith", "v2", "http://127.0.0.1:1/v2.tar.gz", std::string(64, 'a'), "", ""};
  req.request_id = "cli-0123456789abcdef";
  auto first = engine_->CreateRelease(req, "test");
  ASSERT_TRUE(first.ok()) << first.status().ToString();
  auto again = engine_->CreateRelease(req, "test");
  ASSERT_TRUE(again.ok()) << again.status().ToString();
  EXPECT_EQ(again->id, first->id);
  auto all = store_->FindReleases(ReleaseQuery::Newest("monolith", 0));
  ASSERT_TRUE(all.ok());
  EXPECT_EQ(all->size(), 1u);
  auto audit = store_->Audit(100);
  ASSERT_TRUE(audit.ok());
  EXPECT_EQ(std::count_if(audit->begin(), audit->end(),
                          [](const AuditRecord& a) { return a.action == "release.create"; }),
            1);
  // The same id for another version is a mistake, said so; a new id is a new release.
  req.version = "v3";
  req.artifact_url = "http://127.0.0.1:1/v3.tar.gz";
  auto mismatch = engine_->CreateRelease(req, "test");
  EXPECT_EQ(mismatch.status().code(), StatusCode::kFailedPrecondition);
  EXPECT_NE(mismatch.status().message().find("release " + std::to_string(first->id)),
            std::string::npos)
      << mismatch.status().message();
  req.request_id = "cli-fedcba9876543210";
  EXPECT_TRUE(engine_->CreateRelease(req, "test").ok());
  // Ids are bounded and printable.
  req.request_id = std::string(129, 'x');
  EXPECT_EQ(engine_->CreateRelease(req, "test").status().code(), StatusCode::kInvalidArgument);
  req.request_id = "has space";
  EXPECT_EQ(engine_->CreateRelease(req, "test").status().code(), StatusCode::kInvalidArgument);
}

TEST_F(EngineTest, AResultForAnOldTaskChangesNothing) {
  MakeEngine(ThreeWavePipeline());
  ConnectFleet(1);
  int64_t id = Create("v2");
  Pass();
  auto sent = sink_.Take();
  std::erase_if(sent, [](const auto& t) { return t.first != "us-east-1-1"; });
  ASSERT_EQ(sent.size(), 1u);
  const std::string& real = sent[0].second.task_id();
  // Ids this engine never sent for the row: another attempt's, another store's (same
  // release number, other random part), another step's.
  for (const std::string& other :
       {real.substr(0, real.rfind('.') + 1) + "000000000000",
        Engine::NewTaskId(id, "us-east-1-1", "prepare", 1),
        Engine::NewTaskId(id, "us-east-1-1", "activate", 1), real + "x"}) {
    v1::TaskResult stale;
    stale.set_task_id(other);
    stale.set_ok(false);
    stale.set_error("from another task");
    ASSERT_TRUE(engine_->TaskFinished("us-east-1-1", stale).ok());
    Pass();
    EXPECT_EQ(Hosts(id)["us-east-1-1"].state, "preparing") << other;
  }
  Finish(sent[0]);
  Pass();
  EXPECT_EQ(Hosts(id)["us-east-1-1"].state, "prepared");
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
  EXPECT_TRUE(store_->FindReleases({})->empty());
}

TEST_F(EngineTest, AWaveOverARegionWithNoHostsDoesNotBlock) {
  MakeEngine(ThreeWavePipeline());
  Connect("us-east-1-1", "us-east-1");
  int64_t id = Create("v2");
  RunToQuiet();
  EXPECT_EQ(Release(id).state, "succeeded");
}

// ---------------------------------------------------------------- failure and rollback

class RollbackTest : public EngineTest {
 protected:
  // v1 everywhere, then v2 in flight.
  int64_t ShipV1ThenStartV2(Pipeline p) {
    MakeEngine(p);
    ConnectFleet();
    Create("v1");
    RunToQuiet();
    return Create("v2");
  }

  // Answers every task with success, except activations on `failing`.
  std::vector<std::pair<std::string, v1::Task>> Step(const std::string& failing = "") {
    Pass();
    auto tasks = sink_.Take();
    for (const auto& t : tasks) {
      bool fail = t.first == failing && t.second.kind() == v1::Task::ACTIVATE;
      Finish(t, !fail, fail ? "deploy/check of v2 exited with status 1" : "");
    }
    return tasks;
  }
};

TEST_F(RollbackTest, AFailedCheckInWaveTwoRollsBackEveryHostThatTookItAllAtOnce) {
  int64_t id = ShipV1ThenStartV2(ThreeWavePipeline());
  std::set<std::string> took;
  for (int i = 0; i < 20; ++i) {
    Pass();
    if (Release(id).state != "rolling") break;
    for (const auto& t : sink_.Take()) {
      if (t.second.kind() == v1::Task::ACTIVATE) took.insert(t.first);
      bool fail = t.first == "eu-west-1-2" && t.second.kind() == v1::Task::ACTIVATE;
      Finish(t, !fail, fail ? "deploy/check of v2 exited with status 1" : "");
    }
  }
  auto r = Release(id);
  EXPECT_EQ(r.state, "rolling_back");
  EXPECT_NE(r.reason.find("wave half"), std::string::npos) << r.reason;
  // Wave 1 (3 hosts) and wave 2 (3 more) took v2; wave 3 never did.
  EXPECT_EQ(took.size(), 6u);
  auto sent = sink_.Take();
  Pass();
  auto more = sink_.Take();
  sent.insert(sent.end(), more.begin(), more.end());
  std::set<std::string> reverted;
  for (const auto& [agent, task] : sent) {
    EXPECT_EQ(task.kind(), v1::Task::DEPLOY);
    EXPECT_EQ(task.version(), "v1");
    reverted.insert(agent);
  }
  EXPECT_EQ(reverted, took);  // every host that took it, in one pass: all regions at once
  for (const auto& t : sent) Finish(t);
  Pass();
  EXPECT_EQ(Release(id).state, "rolled_back");
  for (const auto& [name, h] : Hosts(id)) {
    EXPECT_NE(h.wave, 2) << name << " of wave 3 was touched";
    if (took.count(name)) {
      EXPECT_EQ(h.state, "reverted") << name;
    }
  }
}

TEST_F(RollbackTest, OnFailurePauseHoldsTheFleetForAHuman) {
  Pipeline p = ThreeWavePipeline();
  p.rollback.on_failure = RollbackPolicy::OnFailure::kPause;
  int64_t id = ShipV1ThenStartV2(p);
  Step();               // prepare canaries
  Step("us-east-1-1");  // activate; one fails
  Pass();
  EXPECT_EQ(Release(id).state, "halted");
  EXPECT_TRUE(sink_.Take().empty());  // nothing is rolled back by itself
  // The human aborts: what the release changed goes back.
  ASSERT_TRUE(engine_->Abort(id, "alice").ok());
  Pass();
  auto reverts = sink_.Take();
  EXPECT_EQ(reverts.size(), 3u);
  for (const auto& t : reverts) Finish(t);
  Pass();
  EXPECT_EQ(Release(id).state, "aborted");
}

TEST_F(RollbackTest, AbortRollsBackWhatTheReleaseChanged) {
  int64_t id = ShipV1ThenStartV2(ThreeWavePipeline());
  Step();
  Step();  // canaries now run v2
  ASSERT_TRUE(engine_->Abort(id, "bob").ok());
  Pass();
  EXPECT_EQ(Release(id).state, "aborting");
  auto reverts = sink_.Take();
  ASSERT_EQ(reverts.size(), 3u);
  for (const auto& t : reverts) Finish(t);
  Pass();
  EXPECT_EQ(Release(id).state, "aborted");
  // Aborting a finished release is refused and changes nothing.
  Status again = engine_->Abort(id, "bob");
  EXPECT_EQ(again.code(), StatusCode::kFailedPrecondition);
  EXPECT_EQ(Release(id).state, "aborted");
}

TEST_F(RollbackTest, ARevertThatFailsLeavesTheReleaseFailedNamingTheHost) {
  int64_t id = ShipV1ThenStartV2(ThreeWavePipeline());
  Step();
  Step("ap-southeast-2-1");
  Pass();
  auto reverts = sink_.Take();
  ASSERT_EQ(reverts.size(), 3u);
  for (const auto& t : reverts) Finish(t, t.first != "us-east-1-1", "disk full");
  Pass();
  auto r = Release(id);
  EXPECT_EQ(r.state, "failed");
  EXPECT_NE(r.reason.find("rollback incomplete on us-east-1-1"), std::string::npos) << r.reason;
}

TEST_F(RollbackTest, AHostLostWhileActivatingIsRevertedToo) {
  int64_t id = ShipV1ThenStartV2(ThreeWavePipeline());
  Step();  // canaries prepared
  Pass();  // activations sent
  auto activations = sink_.Take();
  ASSERT_EQ(activations.size(), 3u);
  // eu-west-1-1 goes silent mid-activation: its switch may or may not have landed.
  for (const auto& t : activations) {
    if (t.first != "eu-west-1-1") Finish(t);
  }
  sink_.connected.erase("eu-west-1-1");
  Advance(seconds(31));
  Pass();
  EXPECT_EQ(Release(id).state, "rolling_back");
  std::set<std::string> reverted;
  for (const auto& [agent, task] : sink_.Take()) {
    if (task.version() == "v1") reverted.insert(agent);
  }
  EXPECT_EQ(reverted, (std::set<std::string>{"us-east-1-1", "eu-west-1-1", "ap-southeast-2-1"}));
  // A host that only prepared never changed `current` and is left alone.
  for (const auto& [name, h] : Hosts(id)) {
    if (!reverted.count(name)) {
      EXPECT_FALSE(h.switch_sent) << name;
    }
  }
}

TEST_F(RollbackTest, HostsAFailedRevertLeftBehindConvergeAtOnce) {
  int64_t id = ShipV1ThenStartV2(ThreeWavePipeline());
  Step();
  Step("ap-southeast-2-1");
  Pass();
  auto reverts = sink_.Take();
  ASSERT_EQ(reverts.size(), 3u);
  for (const auto& t : reverts) Finish(t, t.first != "us-east-1-1", "disk full");
  running_["us-east-1-1"] = "v2";  // the revert failed: it still runs v2
  ASSERT_TRUE(engine_->AgentHeartbeat("us-east-1-1", "v2").ok());
  UnixMs next = Pass();
  EXPECT_EQ(Release(id).state, "failed");
  EXPECT_EQ(next, clock_.Now());  // asks for the next pass at once
  Pass();
  auto tasks = sink_.Take();
  ASSERT_EQ(tasks.size(), 1u);
  EXPECT_EQ(tasks[0].first, "us-east-1-1");
  EXPECT_EQ(tasks[0].second.version(), "v1");
}

TEST_F(EngineTest, AWaveMayTolerateMoreOrFewerFailuresThanThePipeline) {
  Pipeline p = ThreeWavePipeline();
  p.rollback.tolerate_failed_hosts = {false, 0};
  // Canaries: a third of the wave's 3 hosts may fail (one); the last wave 2 of its own.
  p.waves[0].tolerate_failed_hosts = FailureTolerance{true, 34};
  p.waves[2].tolerate_failed_hosts = FailureTolerance{false, 2};
  MakeEngine(p);
  ConnectFleet(4);
  int64_t id = Create("v1");
  std::set<std::string> failing = {"eu-west-1-1"};
  RunToFinal(id, failing);
  EXPECT_EQ(Release(id).state, "succeeded") << Release(id).reason;
  // The same failure in a wave that tolerates none (the pipeline's) fails it.
  p.waves[0].tolerate_failed_hosts.reset();
  MakeEngine(p);
  int64_t again = Create("v2");
  RunToFinal(again, failing);
  EXPECT_NE(Release(again).state, "succeeded");
  EXPECT_NE(Release(again).reason.find("wave canary: 1 host(s) failed"), std::string::npos)
      << Release(again).reason;
  EXPECT_NE(Release(again).reason.find("0 tolerated"), std::string::npos);
}

TEST_F(EngineTest, NoToleranceLetsAWavePassInWhichEveryHostFailed) {
  Pipeline p = ThreeWavePipeline();
  p.waves[0].tolerate_failed_hosts = FailureTolerance{false, 5};
  MakeEngine(p);
  ConnectFleet(1);
  int64_t id = Create("v1");
  RunToFinal(id, {"us-east-1-1", "eu-west-1-1", "ap-southeast-2-1"});
  EXPECT_EQ(Release(id).state, "failed");
  EXPECT_NE(Release(id).reason.find("wave canary: 3 host(s) failed"), std::string::npos)
      << Release(id).reason;
}

TEST_F(RollbackTest, AReleaseThatFailsBeforeAnyHostSwitchedEndsFailedNotRolledBack) {
  int64_t id = ShipV1ThenStartV2(ThreeWavePipeline());
  Pass();
  auto prepares = sink_.Take();
  ASSERT_EQ(prepares.size(), 3u);
  for (const auto& t : prepares) {
    Finish(t, t.first != "eu-west-1-1", "sha256 mismatch");
  }
  Pass();
  auto r = Release(id);
  EXPECT_EQ(r.state, "failed");
  EXPECT_NE(r.reason.find("no host had switched to it"), std::string::npos) << r.reason;
  EXPECT_TRUE(sink_.Take().empty());  // nothing to take back
}

TEST_F(RollbackTest, ARevertThatTimesOutLeavesItsHostRevertFailed) {
  int64_t id = ShipV1ThenStartV2(ThreeWavePipeline());
  Step();
  Step("ap-southeast-2-1");
  Pass();
  auto reverts = sink_.Take();
  ASSERT_EQ(reverts.size(), 3u);
  for (const auto& t : reverts) {
    if (t.first != "us-east-1-1") Finish(t);
  }
  // us-east-1-1 keeps beating but never answers its revert: its DEPLOY budget runs out.
  Advance(seconds(66));
  Pass();
  EXPECT_EQ(Hosts(id)["us-east-1-1"].state, "revert_failed");
  EXPECT_NE(Hosts(id)["us-east-1-1"].detail.find("revert timed out"), std::string::npos)
      << Hosts(id)["us-east-1-1"].detail;
  EXPECT_EQ(Release(id).state, "failed");
}

TEST_F(EngineTest, AgentLostCountsFromTheTaskSentWhenThatIsLater) {
  MakeEngine(ThreeWavePipeline());
  ConnectFleet(1);
  sink_.connected.erase("eu-west-1-1");  // silent from now, still within agent_lost
  Advance(seconds(25));
  int64_t id = Create("v1");
  Pass();  // its prepare is sent now
  EXPECT_EQ(Hosts(id)["eu-west-1-1"].state, "preparing");
  Advance(seconds(10));  // 35 s since it was last heard from, 10 s since the task
  Pass();
  EXPECT_EQ(Hosts(id)["eu-west-1-1"].state, "preparing");
  Advance(seconds(21));
  Pass();
  EXPECT_EQ(Hosts(id)["eu-west-1-1"].state, "failed");
}

TEST_F(EngineTest, AfterARestartEveryAgentGetsAgentLostToComeBack) {
  MakeEngine(ThreeWavePipeline(seconds(600)));
  ConnectFleet(1);
  int64_t id = Create("v1");
  FinishFirstWave();
  ASSERT_EQ(store_->Waves(id).value().at(0).state, "baking");
  sink_.connected.erase("eu-west-1-1");
  Advance(seconds(25));  // silent 25 s before lockstepd restarts
  MakeEngine(ThreeWavePipeline(seconds(600)));
  for (const auto& region : {"us-east-1", "ap-southeast-2"}) {
    Connect(std::string(region) + "-1", region, "v1");
  }
  Advance(seconds(10));  // 35 s since it was heard from, 10 s since the restart
  Pass();
  EXPECT_EQ(Hosts(id)["eu-west-1-1"].state, "done");
  EXPECT_EQ(Release(id).state, "rolling");
  Advance(seconds(21));
  Pass();
  EXPECT_EQ(Hosts(id)["eu-west-1-1"].state, "failed");
}

TEST_F(EngineTest, OfSeveralQueuedRollbacksTheNewestRuns) {
  MakeEngine(ThreeWavePipeline());
  ConnectFleet(1);
  for (const char* v : {"v1", "v2", "v3"}) {
    Create(v);
    RunToQuiet();
  }
  auto first = engine_->Rollback("monolith", "v1", "oncall");
  auto second = engine_->Rollback("monolith", "v2", "oncall");
  ASSERT_TRUE(first.ok() && second.ok());
  Pass();
  EXPECT_EQ(Release(first->id).state, "superseded");
  EXPECT_EQ(Release(second->id).state, "rolling");
  for (const auto& [agent, task] : sink_.Take()) EXPECT_EQ(task.version(), "v2") << agent;
}

TEST_F(EngineTest, AnAgentLostDuringAnOnCallRollbackFailsItsHost) {
  MakeEngine(ThreeWavePipeline());
  ConnectFleet(1);
  Create("v1");
  RunToQuiet();
  Create("v2");
  RunToQuiet();
  auto rb = engine_->Rollback("monolith", "", "oncall");
  ASSERT_TRUE(rb.ok());
  Pass();
  auto tasks = sink_.Take();
  ASSERT_EQ(tasks.size(), 3u);
  for (const auto& t : tasks) {
    if (t.first != "ap-southeast-2-1") Finish(t);
  }
  sink_.connected.erase("ap-southeast-2-1");  // silent from now on
  Advance(seconds(31));
  Pass();
  EXPECT_EQ(Hosts(rb->id)["ap-southeast-2-1"].state, "failed");
  EXPECT_EQ(Hosts(rb->id)["ap-southeast-2-1"].detail, "agent lost during rollback");
  EXPECT_EQ(Release(rb->id).state, "failed");
  EXPECT_NE(Release(rb->id).reason.find("rollback incomplete on ap-southeast-2-1"),
            std::string::npos);
}

TEST_F(RollbackTest, AFixForwardReleaseReplacesAHaltedOne) {
  Pipeline p = ThreeWavePipeline();
  p.rollback.on_failure = RollbackPolicy::OnFailure::kPause;
  int64_t id = ShipV1ThenStartV2(p);
  Step();
  Step("us-east-1-1");
  Pass();
  ASSERT_EQ(Release(id).state, "halted");
  int64_t fix = Create("v3");
  Pass();
  EXPECT_EQ(Release(fix).state, "rolling");
  EXPECT_EQ(Release(id).state, "failed");
  EXPECT_NE(Release(id).reason.find("replaced by release " + std::to_string(fix)),
            std::string::npos)
      << Release(id).reason;
}

TEST_F(EngineTest, AFailedConvergenceIsRetriedAfterTheDelayAsANewAttempt) {
  MakeEngine(ThreeWavePipeline());
  ConnectFleet(1);
  Create("v1");
  RunToQuiet();
  // Two hosts drift; one of them is disconnected and is left alone until it returns.
  ASSERT_TRUE(engine_->AgentHeartbeat("eu-west-1-1", "v0-by-hand").ok());
  ASSERT_TRUE(engine_->AgentHeartbeat("us-east-1-1", "v0-by-hand").ok());
  ASSERT_TRUE(engine_->AgentDisconnected("us-east-1-1").ok());
  sink_.connected.erase("us-east-1-1");
  Pass();
  auto first = sink_.Take();
  ASSERT_EQ(first.size(), 1u);
  EXPECT_EQ(first[0].first, "eu-west-1-1");
  int64_t desired = DesiredRelease(*store_, "monolith").value()->id;
  Finish(first[0], false, "deploy/start exited with status 1");
  Pass();
  EXPECT_TRUE(sink_.Take().empty());  // not at once
  Advance(seconds(29));
  Pass();
  EXPECT_TRUE(sink_.Take().empty());
  Advance(seconds(1));
  Pass();
  auto second = sink_.Take();
  ASSERT_EQ(second.size(), 1u);
  EXPECT_NE(second[0].second.task_id(), first[0].second.task_id());
  EXPECT_EQ(Hosts(desired)["eu-west-1-1"].attempt, 2);
  EXPECT_EQ(Hosts(desired)["eu-west-1-1"].step, "converge");
}

TEST_F(EngineTest, AResultRepeatedAfterItsHostFinishedChangesNothing) {
  MakeEngine(ThreeWavePipeline());
  ConnectFleet(1);
  int64_t id = Create("v1");
  Pass();
  for (const auto& t : sink_.Take()) Finish(t);
  Pass();
  auto activations = sink_.Take();
  ASSERT_EQ(activations.size(), 3u);
  for (const auto& t : activations) Finish(t);
  Pass();
  ASSERT_EQ(Hosts(id)["us-east-1-1"].state, "done");
  // The same task id again, now failing (a replayed or duplicated message): ignored.
  v1::TaskResult again;
  again.set_task_id(activations[0].second.task_id());
  again.set_ok(false);
  again.set_error("late and wrong");
  again.set_current_version("v1");
  ASSERT_TRUE(engine_->TaskFinished(activations[0].first, again).ok());
  Pass();
  EXPECT_EQ(Hosts(id)[activations[0].first].state, "done");
}

TEST_F(EngineTest, APausedOrFrozenPipelineConvergesNothing) {
  MakeEngine(ThreeWavePipeline());
  ConnectFleet(1);
  Create("v1");
  RunToQuiet();
  ASSERT_TRUE(engine_->Pause("monolith", "alice").ok());
  ASSERT_TRUE(engine_->AgentHeartbeat("eu-west-1-1", "v0-by-hand").ok());
  Connect("us-east-1-9", "us-east-1");  // a new host
  Pass();
  EXPECT_TRUE(sink_.Take().empty());
  ASSERT_TRUE(engine_->Resume("monolith", "alice").ok());
  ASSERT_TRUE(engine_->Freeze("monolith", "incident", "alice").ok());
  Pass();
  EXPECT_TRUE(sink_.Take().empty());
  ASSERT_TRUE(engine_->Unfreeze("monolith", "alice").ok());
  Pass();
  EXPECT_EQ(Agents(sink_.Take()), (std::set<std::string>{"eu-west-1-1", "us-east-1-9"}));
}

TEST_F(EngineTest, AHostBackEmptyAfterItWasDoneIsDeployedAgainBeforeTheReleaseSucceeds) {
  MakeEngine(ThreeWavePipeline(seconds(60)));
  ConnectFleet(1);
  int64_t id = Create("v2");
  FinishFirstWave();
  ASSERT_EQ(store_->Waves(id).value().at(0).state, "baking");
  // Killed during the bake and restarted with an empty root: it runs nothing.
  ASSERT_TRUE(engine_->AgentDisconnected("eu-west-1-1").ok());
  Connect("eu-west-1-1", "eu-west-1", "");
  Pass();
  auto tasks = sink_.Take();
  ASSERT_EQ(tasks.size(), 1u);
  EXPECT_EQ(tasks[0].first, "eu-west-1-1");
  EXPECT_EQ(tasks[0].second.kind(), v1::Task::DEPLOY);
  EXPECT_EQ(tasks[0].second.version(), "v2");
  EXPECT_EQ(Hosts(id)["eu-west-1-1"].state, "activating");
  EXPECT_EQ(store_->Waves(id).value().at(0).state, "deploying");  // the bake starts over
  // Nothing moves on while it is away from the release; then the bake runs in full.
  Advance(seconds(60));
  Pass();
  EXPECT_EQ(Release(id).current_wave, 0);
  Finish(tasks[0]);
  Pass();
  EXPECT_EQ(store_->Waves(id).value().at(0).state, "baking");
  RunToQuiet();
  Advance(seconds(60));
  RunToQuiet();
  Advance(seconds(60));
  RunToQuiet();
  Advance(seconds(60));
  RunToQuiet();
  EXPECT_EQ(Release(id).state, "succeeded");
}

TEST_F(EngineTest, AnOnCallRollbackWaitsForAHostStillSwitchingForThePreemptedRelease) {
  MakeEngine(ThreeWavePipeline());
  ConnectFleet(1);
  Create("v1");
  RunToQuiet();
  Create("v2");
  RunToQuiet();
  Create("v3");
  Pass();
  for (const auto& t : sink_.Take()) Finish(t);
  Pass();
  auto activations = sink_.Take();  // canaries switching to v3 (a slow deploy/stop)
  ASSERT_EQ(activations.size(), 3u);
  auto rb = engine_->Rollback("monolith", "v2", "oncall");
  ASSERT_TRUE(rb.ok());
  Pass();
  // Every canary still reports v2, but each may land on v3 when its task ends: each is sent
  // the rollback, which its agent runs after the activation.
  auto deploys = sink_.Take();
  EXPECT_EQ(Agents(deploys), Agents(activations));
  for (const auto& [agent, h] : Hosts(rb->id)) {
    if (Agents(activations).count(agent)) {
      EXPECT_EQ(h.state, "activating") << agent;
    }
  }
  Pass();
  EXPECT_EQ(Release(rb->id).state, "rolling");  // not "every host is on v2" yet
  for (const auto& t : activations) Finish(t);  // they land on v3 ...
  Pass();
  EXPECT_EQ(Release(rb->id).state, "rolling");
  for (const auto& t : deploys) Finish(t);  // ... then the rollback takes them to v2
  Pass();
  EXPECT_EQ(Release(rb->id).state, "succeeded");
  for (const auto& [agent, version] : running_) EXPECT_EQ(version, "v2") << agent;
}

TEST_F(EngineTest, ALostAgentDuringTheBakeFailsTheWave) {
  MakeEngine(ThreeWavePipeline(seconds(60)));
  ConnectFleet(1);
  int64_t id = Create("v2");
  FinishFirstWave();
  ASSERT_EQ(store_->Waves(id).value().at(0).state, "baking");
  sink_.connected.erase("eu-west-1-1");  // stops heartbeating (e.g. SIGSTOP)
  Advance(seconds(31));
  Pass();
  auto r = Release(id);
  EXPECT_NE(r.state, "rolling");
  EXPECT_NE(r.reason.find("eu-west-1-1: agent lost"), std::string::npos) << r.reason;
}

// ---------------------------------------------------------------- gates

class GateTest : public EngineTest {
 protected:
  Pipeline WithGate(int consecutive = 1, milliseconds bake = seconds(10)) {
    Pipeline p = ThreeWavePipeline(bake);
    MetricGateSpec g;
    g.name = "errors";
    g.prometheus = "http://prometheus.{region}:9090";
    g.query = "rate(errors{region=\"{region}\"}[1m])";
    g.max = 0.01;
    g.consecutive_failures = consecutive;
    g.interval = seconds(2);
    g.inconclusive_deadline = seconds(30);
    // One verdict from the switch on decides here; delay and passes have their own tests.
    g.delay = milliseconds(0);
    g.passes = 1;
    p.metric_gates = {g};
    return p;
  }

  // Answers pending gate checks with a verdict.
  void Answer(v1::GateVerdict::Verdict verdict, double value = 0) {
    auto checks = std::move(sink_.checks);
    sink_.checks.clear();
    for (const auto& [agent, check] : checks) {
      v1::GateVerdict v;
      v.set_check_id(check.check_id());
      v.set_gate(check.gate().name());
      v.set_verdict(verdict);
      v.set_value(value);
      v.set_detail("value " + std::to_string(value));
      ASSERT_TRUE(engine_->GateVerdictReceived(agent, v).ok());
    }
  }

  int64_t StartAndFinishFirstWave(const Pipeline& p) {
    MakeEngine(p);
    ConnectFleet(1);
    int64_t id = Create("v2");
    FinishFirstWave();  // the bake starts and the first checks go out
    return id;
  }
};

TEST_F(GateTest, ChecksGoToAnAgentOfEachRegionWithTheRegionSubstituted) {
  int64_t id = StartAndFinishFirstWave(WithGate());
  ASSERT_EQ(store_->Waves(id).value().at(0).state, "baking");
  ASSERT_EQ(sink_.checks.size(), 3u);
  for (const auto& [agent, check] : sink_.checks) {
    std::string region = agent.substr(0, agent.rfind('-'));
    EXPECT_EQ(check.gate().prometheus(), "http://prometheus." + region + ":9090");
    EXPECT_EQ(check.gate().query(), "rate(errors{region=\"" + region + "\"}[1m])");
    EXPECT_TRUE(check.gate().has_max());
    // Only evidence from after the whole wave switched may judge it.
    EXPECT_EQ(check.gate().evidence_since_ms(), store_->Waves(id).value().at(0).bake_started_at);
    EXPECT_GT(check.gate().evidence_since_ms(), 0);
  }
}

TEST_F(GateTest, OnlyTheAgentACheckWasSentToCanAnswerIt) {
  int64_t id = StartAndFinishFirstWave(WithGate());
  ASSERT_EQ(sink_.checks.size(), 3u);
  auto checks = std::move(sink_.checks);
  sink_.checks.clear();
  // Check ids are unguessable: 128 random bits, never a counter.
  std::set<std::string> ids;
  for (const auto& [agent, check] : checks) {
    EXPECT_EQ(check.check_id().size(), 33u) << check.check_id();
    ids.insert(check.check_id());
  }
  EXPECT_EQ(ids.size(), 3u);
  // An enrolled agent of another region answers the others' checks with a pass: dropped.
  for (const auto& [agent, check] : checks) {
    const std::string other = agent == checks[0].first ? checks[1].first : checks[0].first;
    v1::GateVerdict v;
    v.set_check_id(check.check_id());
    v.set_gate(check.gate().name());
    v.set_verdict(v1::GateVerdict::PASS);
    EXPECT_EQ(engine_->GateVerdictReceived(other, v).code(), StatusCode::kPermissionDenied);
  }
  // A made-up id changes nothing either.
  v1::GateVerdict forged;
  forged.set_check_id("g1");
  forged.set_verdict(v1::GateVerdict::PASS);
  EXPECT_TRUE(engine_->GateVerdictReceived(checks[0].first, forged).ok());
  EXPECT_EQ(engine_->gate_verdicts_dropped(), 4u);
  EXPECT_TRUE(store_->GateResults(id).value().empty());
  // The agents that were asked still can, and their verdicts count.
  for (const auto& [agent, check] : checks) {
    v1::GateVerdict v;
    v.set_check_id(check.check_id());
    v.set_gate(check.gate().name());
    v.set_verdict(v1::GateVerdict::FAIL);
    EXPECT_TRUE(engine_->GateVerdictReceived(agent, v).ok());
  }
  EXPECT_EQ(store_->GateResults(id).value().size(), 3u);
}

TEST_F(GateTest, PassingGatesLetTheWaveEndWhenTheBakeEnds) {
  int64_t id = StartAndFinishFirstWave(WithGate());
  Answer(v1::GateVerdict::PASS, 0.001);
  Advance(seconds(10));
  Pass();
  EXPECT_EQ(Release(id).current_wave, 1);
  EXPECT_EQ(store_->GateResults(id).value().size(), 3u);
}

TEST_F(GateTest, InconclusiveResultsAreNotPasses) {
  int64_t id = StartAndFinishFirstWave(WithGate());
  for (int i = 0; i < 14; ++i) {  // 28 s of "no data"
    Answer(v1::GateVerdict::INCONCLUSIVE);
    Advance(seconds(2));
    Pass();
  }
  // The bake (10 s) is long over, but without a passing verdict the wave does not end.
  EXPECT_EQ(Release(id).current_wave, 0);
  EXPECT_EQ(Release(id).state, "rolling");
  Answer(v1::GateVerdict::INCONCLUSIVE);
  Advance(seconds(2));
  Pass();
  auto r = Release(id);
  EXPECT_EQ(r.state, "failed");  // first release: nothing to roll back to
  EXPECT_NE(r.reason.find("gave no passing result"), std::string::npos) << r.reason;
}

TEST_F(GateTest, AGateFailsOnlyAfterTheConfiguredConsecutiveFailures) {
  int64_t id = StartAndFinishFirstWave(WithGate(/*consecutive=*/2, seconds(60)));
  Answer(v1::GateVerdict::FAIL, 0.5);
  Advance(seconds(2));
  Pass();
  EXPECT_EQ(Release(id).state, "rolling");
  Answer(v1::GateVerdict::PASS, 0.001);  // the streak is broken
  Advance(seconds(2));
  Pass();
  Answer(v1::GateVerdict::FAIL, 0.5);
  Advance(seconds(2));
  Pass();
  EXPECT_EQ(Release(id).state, "rolling");
  Answer(v1::GateVerdict::FAIL, 0.7);
  Advance(seconds(2));
  Pass();
  auto r = Release(id);
  EXPECT_NE(r.state, "rolling");
  EXPECT_NE(r.reason.find("metric gate errors failed"), std::string::npos) << r.reason;
}

// Answers pending checks as an agent would, with Prometheus's evaluation instant.
TEST_F(GateTest, ChecksStartOnlyAfterTheDelayAndTheWaveNeedsPassesInARow) {
  Pipeline p = WithGate(1, milliseconds(0));  // no bake: only the gate holds the wave
  p.metric_gates[0].delay = seconds(30);
  p.metric_gates[0].passes = 3;
  int64_t id = StartAndFinishFirstWave(p);
  const UnixMs switched = store_->Waves(id).value().at(0).bake_started_at;
  EXPECT_TRUE(sink_.checks.empty());  // nothing is asked before switch + delay
  Advance(seconds(29));
  Pass();
  EXPECT_TRUE(sink_.checks.empty());
  Advance(seconds(1));
  Pass();
  ASSERT_EQ(sink_.checks.size(), 3u);
  for (const auto& [agent, check] : sink_.checks) {
    EXPECT_EQ(check.gate().evidence_since_ms(), switched);
    EXPECT_EQ(check.gate().min_window_ms(), 2000);  // {window} at least the interval
  }
  // Two passes in a row, an inconclusive one, then three: only then the wave ends.
  for (auto verdict : {v1::GateVerdict::PASS, v1::GateVerdict::PASS, v1::GateVerdict::INCONCLUSIVE,
                       v1::GateVerdict::PASS, v1::GateVerdict::PASS}) {
    Answer(verdict, 0.001);
    Advance(seconds(2));
    Pass();
    EXPECT_EQ(Release(id).current_wave, 0);
  }
  Answer(v1::GateVerdict::PASS, 0.001);
  Pass();
  EXPECT_EQ(Release(id).current_wave, 1);
}

TEST_F(GateTest, ChecksAreSentOncePerIntervalNotOncePerPass) {
  int64_t id = StartAndFinishFirstWave(WithGate(1, seconds(60)));
  ASSERT_EQ(sink_.checks.size(), 3u);
  sink_.checks.clear();
  Pass();  // a pass for another reason (a result, a heartbeat) asks nothing new
  Advance(seconds(1));
  Pass();
  EXPECT_TRUE(sink_.checks.empty());
  Advance(seconds(1));  // the interval (2 s) is up
  Pass();
  EXPECT_EQ(sink_.checks.size(), 3u);
  EXPECT_EQ(Release(id).current_wave, 0);
}

TEST_F(GateTest, AStaleGoodSampleNeverPassesAWave) {
  Pipeline p = WithGate(1, milliseconds(0));
  p.metric_gates[0].delay = seconds(5);
  int64_t id = StartAndFinishFirstWave(p);
  const UnixMs switched = store_->Waves(id).value().at(0).bake_started_at;
  Advance(seconds(5));
  Pass();
  // Each agent answers PASS, but Prometheus evaluated the query before switch + delay
  // (a lagging rule, a clock behind): that judges the release before, and never counts.
  for (int round = 0; round < 20; ++round) {
    auto checks = std::move(sink_.checks);
    sink_.checks.clear();
    for (const auto& [agent, check] : checks) {
      v1::GateVerdict v;
      v.set_check_id(check.check_id());
      v.set_verdict(v1::GateVerdict::PASS);
      v.set_evaluated_at_ms(switched + 4'999);
      ASSERT_TRUE(engine_->GateVerdictReceived(agent, v).ok());
    }
    Advance(seconds(2));
    Pass();
    if (Release(id).state != "rolling") break;
    EXPECT_EQ(Release(id).current_wave, 0);
  }
  // Nothing but stale passes until the inconclusive deadline: the wave fails.
  EXPECT_EQ(Release(id).state, "failed");
  EXPECT_NE(Release(id).reason.find("gave no passing result"), std::string::npos)
      << Release(id).reason;
}

TEST_F(GateTest, PassesFromBeforeARestartLongerThanTheIntervalAreCheckedAgain) {
  Pipeline p = WithGate(1, milliseconds(0));
  p.metric_gates[0].passes = 2;
  int64_t id = StartAndFinishFirstWave(p);
  Answer(v1::GateVerdict::PASS, 0.001);  // one of two
  Advance(seconds(10));                  // lockstepd is down for 10 s (interval 2 s)
  MakeEngine(p);
  for (const auto& region : kRegions) Connect(region + "-1", region, "v2");
  Pass();
  Answer(v1::GateVerdict::PASS, 0.001);
  Advance(seconds(2));
  Pass();
  EXPECT_EQ(Release(id).current_wave, 0);  // the pass before the outage is not trusted
  Answer(v1::GateVerdict::PASS, 0.001);
  Pass();
  EXPECT_EQ(Release(id).current_wave, 1);
}

// ---------------------------------------------------------------- operators

TEST_F(EngineTest, AManualApprovalWaveWaitsForApprove) {
  Pipeline p = ThreeWavePipeline();
  p.waves[1].manual_approval = true;
  MakeEngine(p);
  ConnectFleet(1);
  int64_t id = Create("v2");
  // Approving before anything waits is a conflict and changes nothing.
  EXPECT_EQ(engine_->Approve(id, "carol").code(), StatusCode::kFailedPrecondition);
  RunToQuiet();
  auto waves = store_->Waves(id).value();
  ASSERT_EQ(waves[1].state, "awaiting_approval");
  EXPECT_EQ(Release(id).state, "rolling");
  ASSERT_TRUE(engine_->Approve(id, "carol").ok());
  RunToQuiet();
  EXPECT_EQ(Release(id).state, "succeeded");
  EXPECT_EQ(store_->Waves(id).value().at(1).approved_by, "carol");
}

TEST_F(EngineTest, AnApprovalNotGivenInTimeFailsTheWave) {
  Pipeline p = ThreeWavePipeline();
  p.waves[0].manual_approval = true;
  p.timeouts.approval = std::chrono::hours(1);
  MakeEngine(p);
  ConnectFleet(1);
  int64_t id = Create("v2");
  RunToQuiet();
  Advance(std::chrono::hours(1));
  Pass();
  EXPECT_NE(Release(id).reason.find("no approval within 1h"), std::string::npos);
}

TEST_F(EngineTest, PauseHoldsTheRolloutAndResumeContinuesIt) {
  MakeEngine(ThreeWavePipeline());
  ConnectFleet(1);
  int64_t id = Create("v2");
  Pass();
  auto prepares = sink_.Take();
  ASSERT_TRUE(engine_->Pause("monolith", "dave").ok());
  for (const auto& t : prepares) Finish(t);  // work already sent still reports
  Pass();
  EXPECT_TRUE(sink_.Take().empty());  // but nothing new starts
  EXPECT_EQ(Hosts(id)["us-east-1-1"].state, "prepared");
  ASSERT_TRUE(engine_->Resume("monolith", "dave").ok());
  RunToQuiet();
  EXPECT_EQ(Release(id).state, "succeeded");
}

TEST_F(EngineTest, AFrozenPipelineKeepsNewReleasesQueued) {
  MakeEngine(ThreeWavePipeline());
  ConnectFleet(1);
  ASSERT_TRUE(engine_->Freeze("monolith", "black friday", "erin").ok());
  int64_t id = Create("v2");
  Pass();
  EXPECT_EQ(Release(id).state, "queued");
  EXPECT_NE(Release(id).reason.find("black friday"), std::string::npos);
  ASSERT_TRUE(engine_->Unfreeze("monolith", "erin").ok());
  RunToQuiet();
  EXPECT_EQ(Release(id).state, "succeeded");
}

// ---------------------------------------------------------------- on-call rollback

TEST_F(EngineTest, AnOnCallRollbackPreemptsTheReleaseInFlightAndMovesEveryHost) {
  MakeEngine(ThreeWavePipeline());
  ConnectFleet(2);
  Create("v1");
  RunToQuiet();
  Create("v2");
  RunToQuiet();
  int64_t v3 = Create("v3");
  Pass();
  for (const auto& t : sink_.Take()) Finish(t);
  Pass();
  for (const auto& t : sink_.Take()) Finish(t);  // canaries on v3

  auto rb = engine_->Rollback("monolith", "", "oncall");
  ASSERT_TRUE(rb.ok()) << rb.status().ToString();
  EXPECT_EQ(rb->version, "v2");
  Pass();
  EXPECT_EQ(Release(v3).state, "aborted");
  auto tasks = sink_.Take();
  // The three canaries run v3 and are deployed v2; the other three report v2 already and
  // are only asked to confirm it (their agents run no hook if they still run v2 then).
  ASSERT_EQ(tasks.size(), 6u);
  int confirms = 0;
  for (const auto& [agent, task] : tasks) {
    EXPECT_EQ(task.kind(), v1::Task::DEPLOY);
    EXPECT_EQ(task.version(), "v2");
    EXPECT_EQ(task.skip_if_current(), running_[agent] == "v2") << agent;
    confirms += task.skip_if_current() ? 1 : 0;
  }
  EXPECT_EQ(confirms, 3);
  for (const auto& t : tasks) Finish(t);
  Pass();
  EXPECT_EQ(Release(rb->id).state, "succeeded");
}

TEST_F(EngineTest, RollbackToAVersionThatNeverSucceededIsRefused) {
  MakeEngine(ThreeWavePipeline());
  ConnectFleet(1);
  Create("v1");
  RunToQuiet();
  auto rb = engine_->Rollback("monolith", "v0", "oncall");
  EXPECT_EQ(rb.status().code(), StatusCode::kNotFound);
  EXPECT_EQ(rb.status().message(), "no succeeded release v0 of pipeline monolith");
  EXPECT_EQ(store_->FindReleases({})->size(), 1u);
}

TEST_F(EngineTest, RollingBackTwiceKeepsGoingBack) {
  MakeEngine(ThreeWavePipeline());
  ConnectFleet(1);
  for (const char* v : {"v1", "v2", "v3"}) {
    Create(v);
    RunToQuiet();
  }
  auto first = engine_->Rollback("monolith", "", "oncall");
  ASSERT_TRUE(first.ok());
  EXPECT_EQ(first->version, "v2");
  RunToQuiet();
  auto second = engine_->Rollback("monolith", "", "oncall");
  ASSERT_TRUE(second.ok());
  EXPECT_EQ(second->version, "v1");
}

// ---------------------------------------------------------------- convergence

TEST_F(EngineTest, ANewHostConvergesToThePipelinesCurrentRelease) {
  MakeEngine(ThreeWavePipeline());
  ConnectFleet(1);
  Create("v1");
  RunToQuiet();
  Connect("eu-west-1-9", "eu-west-1");
  Pass();
  auto tasks = sink_.Take();
  ASSERT_EQ(tasks.size(), 1u);
  EXPECT_EQ(tasks[0].first, "eu-west-1-9");
  EXPECT_EQ(tasks[0].second.kind(), v1::Task::DEPLOY);
  EXPECT_EQ(tasks[0].second.version(), "v1");
  Finish(tasks[0]);
  ASSERT_TRUE(engine_->AgentDisconnected("eu-west-1-9").ok());
  Connect("eu-west-1-9", "eu-west-1", "v1");  // reconnects running v1: nothing to do
  Pass();
  EXPECT_TRUE(sink_.Take().empty());
}

TEST_F(EngineTest, AHostFoundRunningAnotherVersionIsCorrectedAndAudited) {
  MakeEngine(ThreeWavePipeline());
  ConnectFleet(1);
  Create("v1");
  RunToQuiet();
  ASSERT_TRUE(engine_->AgentDisconnected("us-east-1-1").ok());
  Connect("us-east-1-1", "us-east-1", "hotfix-by-hand");
  Pass();
  auto tasks = sink_.Take();
  ASSERT_EQ(tasks.size(), 1u);
  EXPECT_EQ(tasks[0].second.version(), "v1");
  bool audited = false;
  auto audit = store_->Audit(20).value();
  for (const auto& a : audit) {
    audited |= a.action == "agent.converge" && a.detail.find("hotfix-by-hand") != std::string::npos;
  }
  EXPECT_TRUE(audited);
}

TEST_F(EngineTest, TheMixedVersionWindowOfAWaveIsRecorded) {
  MakeEngine(ThreeWavePipeline());
  ConnectFleet(1);
  int64_t id = Create("v2");
  Pass();
  for (const auto& t : sink_.Take()) Finish(t);
  Pass();
  auto activates = sink_.Take();
  UnixMs t0 = clock_.Now();
  for (size_t i = 0; i < activates.size(); ++i) {
    v1::TaskResult r;
    r.set_task_id(activates[i].second.task_id());
    r.set_ok(true);
    r.set_current_version("v2");
    r.set_switched_at_ms(t0 + 10 * static_cast<int64_t>(i));
    ASSERT_TRUE(engine_->TaskFinished(activates[i].first, r).ok());
  }
  Pass();  // results are written with the next pass
  auto w = store_->Waves(id).value().at(0);
  EXPECT_EQ(w.first_switch_at, t0);
  EXPECT_EQ(w.last_switch_at, t0 + 20);
}

TEST_F(EngineTest, AbortingAQueuedReleaseEndsItBeforeItStarts) {
  MakeEngine(ThreeWavePipeline());
  ConnectFleet(1);
  ASSERT_TRUE(engine_->Freeze("monolith", "hold", "erin").ok());
  int64_t id = Create("v2");
  Pass();
  ASSERT_TRUE(engine_->Abort(id, "erin").ok());
  Pass();
  EXPECT_EQ(Release(id).state, "aborted");
  EXPECT_TRUE(sink_.Take().empty());
}

TEST_F(EngineTest, AnOnCallRollbackHoldsThePipelineAndKeepsQueuedRollouts) {
  MakeEngine(ThreeWavePipeline());
  ConnectFleet(1);
  Create("v1");
  RunToQuiet();
  Create("v2");
  RunToQuiet();
  ASSERT_TRUE(engine_->Freeze("monolith", "incident", "oncall").ok());
  int64_t queued = Create("v3");
  Pass();
  auto rb = engine_->Rollback("monolith", "", "oncall");
  ASSERT_TRUE(rb.ok());
  ASSERT_TRUE(engine_->Unfreeze("monolith", "oncall").ok());
  RunToQuiet();
  EXPECT_EQ(Release(rb->id).state, "succeeded");
  Pass();  // the pass the end of the rollback asks for
  // Held: the queued rollout waits, and says why; the hold is audited.
  auto st = store_->GetPipelineState("monolith").value();
  EXPECT_TRUE(st.paused);
  EXPECT_EQ(st.paused_by, "on-call rollback " + std::to_string(rb->id));
  EXPECT_EQ(Release(queued).state, "queued");
  EXPECT_EQ(Release(queued).reason,
            "waiting: pipeline paused by on-call rollback " + std::to_string(rb->id));
  bool audited = false;
  for (const auto& a : store_->Audit(20).value()) {
    audited |= a.action == "pipeline.pause" && a.actor == "engine";
  }
  EXPECT_TRUE(audited);
  // Only `resume` lets it go.
  ASSERT_TRUE(engine_->Resume("monolith", "oncall").ok());
  RunToQuiet();
  EXPECT_EQ(Release(queued).state, "succeeded");
}

TEST_F(EngineTest, ReleasesWaitForTheDeployWindow) {
  Pipeline p = ThreeWavePipeline();
  p.window = DeployWindow{9 * 60, 17 * 60, {}};  // 09:00-17:00 UTC
  MakeEngine(p);
  ConnectFleet(1);
  clock_.Set(1'700'000'000'000);  // 2023-11-14 22:13:20 UTC: outside
  Create("v1");
  UnixMs next = Pass();
  int64_t id = store_->FindReleases(ReleaseQuery::Newest("monolith", 1)).value().at(0).id;
  EXPECT_EQ(Release(id).state, "queued");
  EXPECT_EQ(Release(id).reason, "waiting: outside the deploy window");
  EXPECT_GT(next, clock_.Now());  // it looks again by itself
  // 09:00 the next morning.
  AdvanceTo(1'700'000'000'000 + (10 * 3600 + 46 * 60 + 40) * 1000LL);
  RunToQuiet();
  EXPECT_EQ(Release(id).state, "succeeded");
}

TEST_F(EngineTest, AHostSwitchedByHandIsSeenFromItsHeartbeatAndCorrected) {
  MakeEngine(ThreeWavePipeline());
  ConnectFleet(1);
  Create("v1");
  RunToQuiet();
  ASSERT_TRUE(engine_->AgentHeartbeat("eu-west-1-1", "v0-by-hand").ok());
  Pass();
  auto tasks = sink_.Take();
  ASSERT_EQ(tasks.size(), 1u);
  EXPECT_EQ(tasks[0].first, "eu-west-1-1");
  EXPECT_EQ(tasks[0].second.version(), "v1");
}

TEST_F(EngineTest, HostsThatAreDownAreNotSelectedAndConvergeWhenTheyReturn) {
  MakeEngine(ThreeWavePipeline());
  ConnectFleet(2);
  ASSERT_TRUE(engine_->AgentDisconnected("us-east-1-2").ok());
  sink_.connected.erase("us-east-1-2");
  Advance(seconds(30));  // gone for agent_lost: no longer expected back soon
  int64_t id = Create("v1");
  RunToQuiet();
  EXPECT_EQ(Release(id).state, "succeeded");
  EXPECT_EQ(Hosts(id).count("us-east-1-2"), 0u);
  Connect("us-east-1-2", "us-east-1");
  Pass();
  auto tasks = sink_.Take();
  ASSERT_EQ(tasks.size(), 1u);
  EXPECT_EQ(tasks[0].second.kind(), v1::Task::DEPLOY);
}

TEST_F(EngineTest, AHostThatJustDisconnectedIsStillSelectedAndFailsIfItDoesNotReturn) {
  MakeEngine(ThreeWavePipeline());
  ConnectFleet(1);
  ASSERT_TRUE(engine_->AgentDisconnected("eu-west-1-1").ok());  // e.g. lockstepd restarted
  sink_.connected.erase("eu-west-1-1");
  int64_t id = Create("v1");
  Pass();
  EXPECT_EQ(Hosts(id).count("eu-west-1-1"), 1u);
  Advance(seconds(30));
  Pass();
  EXPECT_NE(Release(id).reason.find("eu-west-1-1: agent lost"), std::string::npos);
}

TEST_F(EngineTest, AnOnCallRollbackDoesNotWaitForHostsThatAreDown) {
  MakeEngine(ThreeWavePipeline());
  ConnectFleet(1);
  Create("v1");
  RunToQuiet();
  Create("v2");
  RunToQuiet();
  ASSERT_TRUE(engine_->AgentDisconnected("ap-southeast-2-1").ok());
  sink_.connected.erase("ap-southeast-2-1");
  Advance(seconds(30));
  auto rb = engine_->Rollback("monolith", "", "oncall");
  ASSERT_TRUE(rb.ok());
  RunToQuiet();
  auto r = Release(rb->id);
  EXPECT_EQ(r.state, "succeeded");
  EXPECT_EQ(r.reason,
            "1 host(s) offline; they converge to v1 when they return and the pipeline is resumed");
  Connect("ap-southeast-2-1", "ap-southeast-2", "v2");
  Pass();
  EXPECT_TRUE(sink_.Take().empty());  // held: nothing moves until a human resumes
  ASSERT_TRUE(engine_->Resume("monolith", "oncall").ok());
  Pass();
  auto tasks = sink_.Take();
  ASSERT_EQ(tasks.size(), 1u);
  EXPECT_EQ(tasks[0].second.version(), "v1");
}

TEST_F(EngineTest, APlainHeartbeatNeedsNoPassAndOneReportingDriftDoes) {
  MakeEngine(ThreeWavePipeline());
  ConnectFleet(1);
  auto same = engine_->AgentHeartbeat("us-east-1-1", "");
  ASSERT_TRUE(same.ok());
  EXPECT_FALSE(*same);
  auto drift = engine_->AgentHeartbeat("us-east-1-1", "v0-by-hand");
  ASSERT_TRUE(drift.ok());
  EXPECT_TRUE(*drift);
}

TEST_F(EngineTest, ResultsAreWrittenWithTheNextPassInOneTransaction) {
  MakeEngine(ThreeWavePipeline());
  ConnectFleet(1);
  int64_t id = Create("v2");
  Pass();
  for (const auto& t : sink_.Take()) Finish(t);
  // Applied in memory; the store still shows the tasks outstanding until the pass.
  for (const auto& [name, h] : Hosts(id)) EXPECT_EQ(h.state, "preparing") << name;
  Pass();
  for (const auto& [name, h] : Hosts(id)) EXPECT_EQ(h.state, "activating") << name;
}

TEST_F(EngineTest, ResultsLostInACrashBeforeTheirPassAreReportedAgainAfterTheRestart) {
  MakeEngine(ThreeWavePipeline());
  ConnectFleet(1);
  int64_t id = Create("v2");
  Pass();
  auto prepares = sink_.Take();
  ASSERT_EQ(prepares.size(), 3u);
  for (const auto& t : prepares) Finish(t);
  // The process dies before a pass wrote those results. The next one starts from the store,
  // and every agent reconnects to it.
  engine_ =
      std::make_unique<Engine>(std::vector<Pipeline>{pipeline_}, store_.get(), &clock_, &sink_);
  ASSERT_TRUE(engine_->MarkAllDisconnected().ok());
  for (const auto& region : kRegions) Connect(region + "-1", region, "");
  Pass();
  auto resent = sink_.Take();
  std::set<std::string> ids;
  for (const auto& [agent, task] : resent) ids.insert(task.task_id());
  for (const auto& t : prepares) EXPECT_TRUE(ids.count(t.second.task_id())) << t.second.task_id();
  // The agents answer from their journals; the release carries on.
  for (const auto& t : resent) Finish(t);
  RunToQuiet();
  EXPECT_EQ(Release(id).state, "succeeded");
}

// The real store, made to refuse writes on demand (a full disk, say).
class RefusingStore final : public ForwardingStore {
 public:
  explicit RefusingStore(Store* s) : ForwardingStore(s) {}
  bool refuse = false;
  Status Write(const WriteBatch& b) override {
    return refuse ? Unavailable("disk full") : ForwardingStore::Write(b);
  }

 private:
  Store* s_;
};

TEST_F(EngineTest, APassWhoseWriteFailsSendsNothingAndResultsAreAskedForAgain) {
  RefusingStore refusing(store_.get());
  Pipeline p = ThreeWavePipeline();
  pipeline_ = p;
  engine_ = std::make_unique<Engine>(std::vector<Pipeline>{p}, &refusing, &clock_, &sink_);
  ConnectFleet(1);
  int64_t id = Create("v2");
  Pass();
  auto prepares = sink_.Take();
  ASSERT_EQ(prepares.size(), 3u);
  for (const auto& t : prepares) Finish(t);
  refusing.refuse = true;
  auto failed = engine_->Reconcile();
  ASSERT_FALSE(failed.ok());
  EXPECT_NE(failed.status().message().find("disk full"), std::string::npos);
  EXPECT_TRUE(sink_.Take().empty());  // nothing sent that the store does not know about
  for (const auto& [name, h] : Hosts(id)) EXPECT_EQ(h.state, "preparing") << name;

  // The disk recovers: the store is read again, outstanding tasks are re-sent, and the
  // agents' answers (from their journals) carry the release on.
  refusing.refuse = false;
  Pass();
  auto resent = sink_.Take();
  ASSERT_EQ(resent.size(), 3u);
  for (const auto& [agent, task] : resent) EXPECT_EQ(task.kind(), v1::Task::PREPARE);
  for (const auto& t : resent) Finish(t);
  RunToQuiet();
  EXPECT_EQ(Release(id).state, "succeeded");
}

// A reload in flight: the release goes on with the waves it started with; the next one, and
// hellos from a region the reload added, use the new definition.
TEST_F(EngineTest, AReloadLeavesTheReleaseInFlightItsPipelineAndAddsARegionAtOnce) {
  Pipeline three = ThreeWavePipeline();
  three.regions = {"us-east-1", "eu-west-1"};
  MakeEngine(three);
  for (const std::string region : {"us-east-1", "eu-west-1"}) {
    for (int i = 1; i <= 4; ++i) Connect(region + "-" + std::to_string(i), region);
  }
  v1::AgentHello newcomer;
  newcomer.set_name("ap-southeast-2-1");
  newcomer.set_region("ap-southeast-2");
  ASSERT_FALSE(engine_->AgentConnected(newcomer).ok());  // no pipeline lists the region yet

  int64_t first = Create("v2");
  FinishFirstWave();
  ASSERT_EQ(Release(first).state, "rolling");
  ASSERT_LT(store_->Waves(first)->size(), 3u);  // in flight, the last wave not begun

  Pipeline one = ThreeWavePipeline();  // the same pipeline, one wave, a region more
  one.waves = {one.waves.back()};
  ASSERT_TRUE(engine_->ReplacePipelines({one}, "test").ok());
  EXPECT_EQ(engine_->FindPipeline("monolith")->waves.size(), 1u);
  auto audit = store_->Audit(1);
  ASSERT_EQ(audit->size(), 1u);
  EXPECT_EQ((*audit)[0].action, "pipelines.reload");
  EXPECT_NE((*audit)[0].detail.find("region ap-southeast-2 added"), std::string::npos)
      << (*audit)[0].detail;
  EXPECT_NE((*audit)[0].detail.find("release " + std::to_string(first) + " keeps"),
            std::string::npos)
      << (*audit)[0].detail;
  ASSERT_TRUE(engine_->AgentConnected(newcomer).ok());
  sink_.connected.insert(newcomer.name());

  RunToFinal(first);
  EXPECT_EQ(Release(first).state, "succeeded");
  EXPECT_EQ(store_->Waves(first)->size(), 3u);  // canary, half, all: as it started

  int64_t second = Create("v3");
  RunToFinal(second);
  EXPECT_EQ(Release(second).state, "succeeded");
  EXPECT_EQ(store_->Waves(second)->size(), 1u);  // the reloaded definition
  EXPECT_EQ(running_["ap-southeast-2-1"], "v3");
}

// After a restart a release has no pinned definition: if the wave it is in is gone from the
// edited file, it is rolled back with a reason that says so, instead of read out of bounds.
TEST_F(EngineTest, ARestartIntoAPipelineThatLostTheCurrentWaveRollsTheReleaseBack) {
  MakeEngine(ThreeWavePipeline());
  ConnectFleet();
  int64_t first = Create("v1");
  RunToFinal(first);
  ASSERT_EQ(Release(first).state, "succeeded");
  int64_t second = Create("v2");
  FinishFirstWave();
  FinishFirstWave();
  ASSERT_EQ(Release(second).state, "rolling");
  ASSERT_GE(Release(second).current_wave, 1);

  Pipeline one = ThreeWavePipeline();
  one.waves = {one.waves.front()};
  MakeEngine(one);  // a new process, the edited file
  ConnectFleet();
  for (int i = 0; i < 30 && !release_state::IsFinal(Release(second).state); ++i) {
    Pass();
    for (const auto& t : sink_.Take()) Finish(t);
  }
  EXPECT_EQ(Release(second).state, "rolled_back");
  EXPECT_NE(Release(second).reason.find("no longer has wave"), std::string::npos)
      << Release(second).reason;
}

// The real store, whose release queries fail from the `fail_from`-th call on (counted from 1).
class FailingReadsStore final : public ForwardingStore {
 public:
  explicit FailingReadsStore(Store* s) : ForwardingStore(s) {}
  int calls = 0;
  int fail_from = 0;  // 0: never
  StatusOr<std::vector<ReleaseRecord>> FindReleases(const ReleaseQuery& q) override {
    ++calls;
    if (fail_from > 0 && calls >= fail_from) return Internal("disk unreadable");
    return ForwardingStore::FindReleases(q);
  }
};

TEST_F(EngineTest, TasksForAReconnectedAgentAreResentAfterAStoreReadFailsOnce) {
  FailingReadsStore failing(store_.get());
  Pipeline p = ThreeWavePipeline();
  pipeline_ = p;
  engine_ = std::make_unique<Engine>(std::vector<Pipeline>{p}, &failing, &clock_, &sink_);
  ConnectFleet(1);
  Create("v2");
  Pass();
  auto prepares = sink_.Take();
  ASSERT_EQ(prepares.size(), 3u);
  // A pass that re-sends nothing makes this many release queries.
  const int before = failing.calls;
  Pass();
  ASSERT_TRUE(sink_.Take().empty());
  const int per_pass = failing.calls - before;

  // One agent reconnects: its outstanding prepare is re-sent by the next pass, after the pass
  // itself is written. Those re-send reads fail.
  const std::string agent = prepares[0].first;
  Connect(agent, agent.substr(0, agent.rfind('-')));
  failing.fail_from = failing.calls + per_pass + 1;
  Pass();
  EXPECT_TRUE(sink_.Take().empty());

  // The store reads again: the agent is not forgotten.
  failing.fail_from = 0;
  Pass();
  auto resent = sink_.Take();
  ASSERT_EQ(resent.size(), 1u);
  EXPECT_EQ(resent[0].first, agent);
  EXPECT_EQ(resent[0].second.task_id(), prepares[0].second.task_id());
}

// --- releases waiting for their artifact (made by the GitHub webhook) ---

using ::lockstep::testing::RecordingObserver;

class ArtifactWaitTest : public EngineTest {
 protected:
  static constexpr std::chrono::minutes kWait{10};

  void SetUp() override {
    EngineTest::SetUp();
    Pipeline p = ThreeWavePipeline();
    GithubTrigger trigger;
    trigger.repository = "acme/monolith";
    trigger.artifact = "http://127.0.0.1:1/{sha}.tar.gz";
    trigger.artifact_wait = kWait;
    p.github = trigger;
    MakeEngine(p);
    engine_->set_observer(&observer_);
    ConnectFleet(1);
  }

  // What the webhook creates for a push: a release without a sha256.
  int64_t CreateWaiting(const std::string& version) {
    NewRelease nr;
    nr.pipeline = "monolith";
    nr.version = version;
    nr.artifact_url = Url(version);
    nr.commit = version + "-commit";
    nr.author = "Ada";
    auto r = engine_->CreateReleaseAwaitingArtifact(nr, "webhook:github");
    EXPECT_TRUE(r.ok()) << r.status().ToString();
    return r.ok() ? r->id : 0;
  }
  static std::string Url(const std::string& version) {
    return "http://127.0.0.1:1/" + version + ".tar.gz";
  }

  // The audited actions on release `id`, oldest first.
  std::vector<std::string> ActionsOn(int64_t id) {
    std::vector<std::string> out;
    auto audit = store_->Audit(1000);
    EXPECT_TRUE(audit.ok());
    for (const auto& a : *audit) {
      if (a.target == "release/" + std::to_string(id)) out.insert(out.begin(), a.action);
    }
    return out;
  }

  RecordingObserver observer_;
};

TEST_F(ArtifactWaitTest, AReleaseWaitingForItsArtifactIsNeitherStartedNorFinalNorInFlight) {
  int64_t id = CreateWaiting("v2");
  ReleaseRecord r = Release(id);
  EXPECT_EQ(r.state, "waiting_for_artifact");
  EXPECT_EQ(r.sha256, "");
  EXPECT_EQ(r.reason, "waiting for its artifact " + Url("v2") +
                          " (at most 10m, trigger.github.artifact_wait)");
  EXPECT_FALSE(release_state::IsFinal(r.state));
  EXPECT_FALSE(release_state::IsInFlight(r.state));
  Pass();
  Pass();
  EXPECT_EQ(Release(id).state, "waiting_for_artifact");
  EXPECT_TRUE(sink_.Take().empty());
  // Reported once, by the first pass that saw it.
  EXPECT_EQ(observer_.Of(id), std::vector<std::string>{"waiting_for_artifact"});
  EXPECT_EQ(ActionsOn(id), std::vector<std::string>{"release.create"});
}

TEST_F(ArtifactWaitTest, ItsArtifactArrivingQueuesTheReleaseWithTheDigestAndItRuns) {
  int64_t id = CreateWaiting("v2");
  Pass();
  engine_->ArtifactChecked(id, std::string(64, 'E'), "");
  Pass();
  ReleaseRecord r = Release(id);
  EXPECT_EQ(r.state, "rolling");
  EXPECT_EQ(r.sha256, std::string(64, 'e'));  // stored lower case, like any sha256
  auto tasks = sink_.Take();
  ASSERT_FALSE(tasks.empty());
  for (const auto& t : tasks) EXPECT_EQ(t.second.sha256(), std::string(64, 'e'));
  for (const auto& t : tasks) Finish(t);
  RunToQuiet();
  EXPECT_EQ(Release(id).state, "succeeded");
  auto events = observer_.Of(id);
  ASSERT_GE(events.size(), 3u);
  EXPECT_EQ(events[0], "waiting_for_artifact");
  EXPECT_EQ(events[1], "queued");
  EXPECT_EQ(events[2], "release_started");
  auto actions = ActionsOn(id);
  ASSERT_GE(actions.size(), 3u);
  EXPECT_EQ(actions[1], "release.queued");
  EXPECT_EQ(actions[2], "release.start");
}

TEST_F(ArtifactWaitTest, AReleaseWaitingForItsArtifactHoldsNothingUpAndSupersedesNoQueuedOne) {
  ASSERT_TRUE(engine_->Freeze("monolith", "hold", "erin").ok());
  int64_t queued = Create("v2");
  int64_t waiting = CreateWaiting("v3");  // newer, but without its artifact yet
  Pass();
  EXPECT_EQ(Release(queued).state, "queued");
  EXPECT_EQ(Release(waiting).state, "waiting_for_artifact");
  ASSERT_TRUE(engine_->Unfreeze("monolith", "erin").ok());
  Pass();
  EXPECT_EQ(Release(queued).state, "rolling");
  EXPECT_EQ(Release(waiting).state, "waiting_for_artifact");
  RunToQuiet();
  EXPECT_EQ(Release(queued).state, "succeeded");
  EXPECT_EQ(Release(waiting).state, "waiting_for_artifact");

  engine_->ArtifactChecked(waiting, std::string(64, 'c'), "");
  RunToQuiet();
  EXPECT_EQ(Release(waiting).state, "succeeded");
  for (const auto& [name, version] : running_) EXPECT_EQ(version, "v3") << name;
}

TEST_F(ArtifactWaitTest, ANewerReleaseSupersedesOneWaitingForItsArtifact) {
  int64_t older = CreateWaiting("v2");
  Pass();
  int64_t newer = CreateWaiting("v3");
  Pass();
  EXPECT_EQ(Release(older).state, "superseded");
  EXPECT_EQ(Release(older).reason, "superseded by release " + std::to_string(newer));
  EXPECT_EQ(Release(newer).state, "waiting_for_artifact");
  EXPECT_EQ(observer_.Of(older), (std::vector<std::string>{"waiting_for_artifact", "superseded"}));
  EXPECT_EQ(ActionsOn(older), (std::vector<std::string>{"release.create", "release.superseded"}));

  // Its artifact turning up later changes nothing.
  engine_->ArtifactChecked(older, std::string(64, 'a'), "");
  Pass();
  EXPECT_EQ(Release(older).state, "superseded");
  EXPECT_TRUE(sink_.Take().empty());
}

TEST_F(ArtifactWaitTest, AbortingAReleaseWaitingForItsArtifactEndsIt) {
  int64_t id = CreateWaiting("v2");
  Pass();
  ASSERT_TRUE(engine_->Abort(id, "erin").ok());
  engine_->ArtifactChecked(id, std::string(64, 'a'), "");  // too late: the abort wins
  Pass();
  ReleaseRecord r = Release(id);
  EXPECT_EQ(r.state, "aborted");
  EXPECT_EQ(r.reason, "aborted by erin before its artifact arrived");
  EXPECT_TRUE(sink_.Take().empty());
  EXPECT_EQ(observer_.Of(id), (std::vector<std::string>{"waiting_for_artifact", "aborted"}));
  EXPECT_EQ(ActionsOn(id),
            (std::vector<std::string>{"release.create", "release.abort", "release.aborted"}));
}

TEST_F(ArtifactWaitTest, TheWaitRunningOutFailsTheRelease) {
  int64_t id = CreateWaiting("v2");
  const UnixMs deadline = Release(id).created_at + milliseconds(kWait).count();
  const UnixMs next = Pass();
  EXPECT_GT(next, 0);
  EXPECT_LE(next, deadline);  // a pass is asked for by the deadline at the latest
  AdvanceTo(deadline - 1);
  Pass();
  EXPECT_EQ(Release(id).state, "waiting_for_artifact");
  Advance(milliseconds(1));
  Pass();
  ReleaseRecord r = Release(id);
  EXPECT_EQ(r.state, "failed");
  EXPECT_EQ(r.reason,
            "artifact " + Url("v2") + " did not appear within 10m (trigger.github.artifact_wait)");
  EXPECT_EQ(observer_.Of(id), (std::vector<std::string>{"waiting_for_artifact", "failed"}));
  EXPECT_EQ(ActionsOn(id), (std::vector<std::string>{"release.create", "release.failed"}));
}

TEST_F(ArtifactWaitTest, AnUnusableArtifactFailsTheReleaseWithTheReason) {
  int64_t id = CreateWaiting("v2");
  engine_->ArtifactChecked(id, "", "artifact " + Url("v2") + " could not be fetched: HTTP 410");
  Pass();
  EXPECT_EQ(Release(id).state, "failed");
  EXPECT_EQ(Release(id).reason, "artifact " + Url("v2") + " could not be fetched: HTTP 410");
  EXPECT_TRUE(sink_.Take().empty());
}

TEST_F(ArtifactWaitTest, AnArtifactOfAVersionThatNamesAnotherOneFailsTheRelease) {
  int64_t first = Create("v2");  // sha256 bbbb...
  RunToQuiet();
  ASSERT_EQ(Release(first).state, "succeeded");
  int64_t id = CreateWaiting("v2");
  engine_->ArtifactChecked(id, std::string(64, 'c'), "");
  Pass();
  EXPECT_EQ(Release(id).state, "failed");
  EXPECT_NE(Release(id).reason.find("is release " + std::to_string(first) + " with sha256 " +
                                    std::string(64, 'b')),
            std::string::npos)
      << Release(id).reason;
}

TEST_F(ArtifactWaitTest, AWaitingReleaseDoesNotTakeItsVersionFromAReleaseMadeByHand) {
  int64_t waiting = CreateWaiting("v2");
  // It has no artifact yet, so it names none: a release of v2 by hand is not refused.
  int64_t by_hand = Create("v2");
  ASSERT_NE(by_hand, 0);
  Pass();
  EXPECT_EQ(Release(waiting).state, "superseded");
  EXPECT_EQ(Release(by_hand).state, "rolling");
}

}  // namespace
}  // namespace lockstep
