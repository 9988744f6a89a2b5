// What engine tests on a manual clock share: a sink that records every task the engine
// hands out, and a fixture holding an engine over a real SQLite store in memory, with
// simulated agents that say hello, heartbeat as time passes, and report what they run.
#pragma once

#include <gtest/gtest.h>

#include <algorithm>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "common/clock.h"
#include "orchestrator/engine/engine.h"
#include "orchestrator/store/store.h"

namespace lockstep::testing {

using Sent = std::pair<std::string, lockstep::v1::Task>;

// Records every task the engine hands out, as an agent would receive it.
class RecordingSink final : public TaskSink {
 public:
  bool Send(const std::string& agent, const lockstep::v1::Task& task) override {
    sent.emplace_back(agent, task);
    return connected.count(agent) > 0;
  }
  bool SendGateCheck(const std::string& agent, const lockstep::v1::GateCheck& check) override {
    checks.emplace_back(agent, check);
    return connected.count(agent) > 0;
  }
  std::vector<Sent> Take() {
    auto out = std::move(sent);
    sent.clear();
    return out;
  }
  std::vector<Sent> sent;
  std::vector<std::pair<std::string, lockstep::v1::GateCheck>> checks;
  std::set<std::string> connected;
};

class EngineFixture : public ::testing::Test {
 protected:
  void SetUp() override {
    auto s = OpenSqliteStore(":memory:");
    ASSERT_TRUE(s.ok()) << s.status().ToString();
    store_ = std::move(*s);
  }

  void Connect(const std::string& name, const std::string& region,
               const std::string& current = "") {
    lockstep::v1::AgentHello hello;
    hello.set_name(name);
    hello.set_region(region);
    hello.set_current_version(current);
    auto pipeline = engine_->AgentConnected(hello);
    ASSERT_TRUE(pipeline.ok()) << pipeline.status().ToString();
    sink_.connected.insert(name);
    running_[name] = current;
  }

  UnixMs Pass() {
    auto next = engine_->Reconcile();
    EXPECT_TRUE(next.ok()) << next.status().ToString();
    return next.ok() ? *next : -1;
  }

  // Moves time forward the way it passes for live agents: each connected agent heartbeats
  // every second. Use clock_ directly to let agents fall silent.
  void Advance(std::chrono::milliseconds d) {
    while (d.count() > 0) {
      std::chrono::milliseconds step = std::min(d, std::chrono::milliseconds(1000));
      clock_.Advance(step);
      d -= step;
      for (const auto& name : sink_.connected) {
        ASSERT_TRUE(engine_->AgentHeartbeat(name, running_[name]).ok());
      }
    }
  }
  void AdvanceTo(UnixMs t) { Advance(std::chrono::milliseconds(t - clock_.Now())); }

  ReleaseRecord Release(int64_t id) {
    auto r = store_->GetRelease(id);
    EXPECT_TRUE(r.ok()) << r.status().ToString();
    return r.ok() ? *r : ReleaseRecord();
  }

  std::map<std::string, HostRecord> Hosts(int64_t id) {
    std::map<std::string, HostRecord> out;
    auto stored = store_->Hosts(id);
    EXPECT_TRUE(stored.ok()) << stored.status().ToString();
    if (!stored.ok()) return out;
    for (const auto& h : *stored) out[h.agent] = h;
    return out;
  }

  ManualClock clock_;
  RecordingSink sink_;
  std::unique_ptr<Store> store_;
  std::unique_ptr<Engine> engine_;
  // What each simulated agent reports running in its heartbeats: its last result's version.
  std::map<std::string, std::string> running_;
};

}  // namespace lockstep::testing
