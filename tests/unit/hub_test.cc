// The Hub's heartbeat policy: as agents connect, lockstepd spreads their heartbeats out so the
// total stays near HeartbeatPolicy::kPerSecond, never beyond the ceiling (a third of
// agent_lost), and every connected agent is told the interval in force. A real Hub on its
// engine thread, a real Engine and Authenticator over an in-memory SQLite store; the streams
// are stand-ins that record what the Hub delivers to them.

#include "orchestrator/server/hub.h"

#include <gtest/gtest.h>
#include <spdlog/spdlog.h>

#include <condition_variable>
#include <thread>

#include "orchestrator/auth/authenticator.h"
#include "orchestrator/store/store.h"

namespace lockstep {
namespace {

namespace v1 = lockstep::v1;
using std::chrono::seconds;

TEST(HeartbeatPolicyTest, SmallFleetsKeepTheBaseAndLargeOnesStopAtTheCeiling) {
  HeartbeatPolicy p{1000, 30'000};
  EXPECT_EQ(p.IntervalFor(0), 1000);
  EXPECT_EQ(p.IntervalFor(HeartbeatPolicy::kPerSecond), 1000);
  // Beyond base × kPerSecond agents, the interval grows with the fleet...
  EXPECT_EQ(p.IntervalFor(20 * HeartbeatPolicy::kPerSecond), 20'000);
  // ...and stops at the ceiling, so each agent keeps three chances within agent_lost.
  EXPECT_EQ(p.IntervalFor(1'000'000), 30'000);
  // A fixed interval (lockstepd started with one) never moves.
  HeartbeatPolicy fixed{5000, 5000};
  EXPECT_EQ(fixed.IntervalFor(1'000'000), 5000);
}

// Records the interval each Welcome or Settings message carried, in order.
class RecordingStream final : public StreamHandle {
 public:
  void Deliver(const v1::ServerMessage& msg) override {
    std::lock_guard lock(mu_);
    if (msg.has_welcome()) {
      welcomed_ = true;
      send_progress_ = msg.welcome().send_progress();
      latest_ms_ = msg.welcome().heartbeat_interval_ms();
    } else if (msg.has_settings()) {
      ++settings_;
      latest_ms_ = msg.settings().heartbeat_interval_ms();
    }
    cv_.notify_all();
  }
  void Close(const std::string& reason) override {
    std::lock_guard lock(mu_);
    closed_ = reason;
    cv_.notify_all();
  }
  bool WaitWelcomed() {
    std::unique_lock lock(mu_);
    return cv_.wait_for(lock, seconds(10), [&] { return welcomed_ || !closed_.empty(); }) &&
           welcomed_;
  }
  int64_t latest_ms() {
    std::lock_guard lock(mu_);
    return latest_ms_;
  }
  int settings() {
    std::lock_guard lock(mu_);
    return settings_;
  }
  bool send_progress() {
    std::lock_guard lock(mu_);
    return send_progress_;
  }
  std::string closed() {
    std::lock_guard lock(mu_);
    return closed_;
  }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  bool welcomed_ = false;
  bool send_progress_ = false;
  int64_t latest_ms_ = 0;
  int settings_ = 0;
  std::string closed_;
};

class HubHeartbeatTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto s = OpenSqliteStore(":memory:");
    ASSERT_TRUE(s.ok()) << s.status().ToString();
    store_ = std::move(*s);
    auth_ = std::make_unique<Authenticator>(store_.get(), SystemClock::Get());
    auto token = auth_->CreateToken("enroll", "agent", "us-east-1", "test");
    ASSERT_TRUE(token.ok()) << token.status().ToString();
    token_ = *token;
    Pipeline p;
    p.name = "monolith";
    p.file = "monolith.yaml";
    p.regions = {"us-east-1"};
    WaveSpec all;
    all.name = "all";
    all.regions = p.regions;
    all.hosts.kind = HostSelector::Kind::kPercent;
    all.hosts.value = 100;
    p.waves = {all};
    p.timeouts.agent_lost = seconds(90);
    // base 1 s, ceiling 30 s: the interval starts growing past 100 agents.
    hub_ = std::make_unique<Hub>(SystemClock::Get(), HeartbeatPolicy{1000, 30'000}, auth_.get());
    engine_ = std::make_unique<Engine>(std::vector<Pipeline>{p}, store_.get(), SystemClock::Get(),
                                       hub_.get());
    runner_ = std::thread([this] { hub_->Run(engine_.get()); });
  }
  void TearDown() override {
    hub_->Stop();
    if (runner_.joinable()) runner_.join();
  }

  std::shared_ptr<RecordingStream> Connect(int i) {
    auto stream = std::make_shared<RecordingStream>();
    v1::AgentMessage hello;
    hello.mutable_hello()->set_name("host-" + std::to_string(i));
    hello.mutable_hello()->set_region("us-east-1");
    hello.mutable_hello()->set_token(token_);
    hub_->OnMessage(stream, hello);
    return stream;
  }

  std::unique_ptr<Store> store_;
  std::unique_ptr<Authenticator> auth_;
  std::unique_ptr<Hub> hub_;
  std::unique_ptr<Engine> engine_;
  std::thread runner_;
  std::string token_;
};

TEST_F(HubHeartbeatTest, AGrowingFleetIsToldFewerHeartbeatsAndEveryAgentHearsTheSameInterval) {
  const HeartbeatPolicy policy{1000, 30'000};
  std::vector<std::shared_ptr<RecordingStream>> streams;
  for (int i = 0; i < 600; ++i) {
    streams.push_back(Connect(i));
    // One at a time, as a fleet comes up: each welcome is answered before the next hello.
    ASSERT_TRUE(streams.back()->WaitWelcomed()) << i << ": " << streams.back()->closed();
  }
  // Every agent runs on the interval in force, whether it heard it in its welcome or later.
  const int64_t in_force = streams.front()->latest_ms();
  for (size_t i = 0; i < streams.size(); ++i) {
    ASSERT_EQ(streams[i]->latest_ms(), in_force) << "agent " << i;
  }
  // It tracks the fleet: within the factor of 1.5 the Hub allows before telling everyone.
  const int64_t want = policy.IntervalFor(streams.size());
  EXPECT_GT(in_force, 1000);
  EXPECT_GE(3 * in_force, 2 * want);
  EXPECT_LE(2 * in_force, 3 * want);
  // And the fleet was told only a handful of times, not once per agent that joined.
  EXPECT_LE(streams.front()->settings(), 6);
  EXPECT_GE(streams.front()->settings(), 2);

  // When most of the fleet leaves, the rest are told to beat more often again.
  for (size_t i = 100; i < streams.size(); ++i) hub_->OnClosed(streams[i]);
  const auto deadline = std::chrono::steady_clock::now() + seconds(10);
  while (streams.front()->latest_ms() != 1000 && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  for (size_t i = 0; i < 100; ++i) EXPECT_EQ(streams[i]->latest_ms(), 1000) << "agent " << i;
}

// Progress lines cost lockstepd a wake-up each and it only logs them at debug level: agents
// are asked for them exactly when it does.
TEST_F(HubHeartbeatTest, AgentsAreAskedForProgressLinesOnlyWhenLockstepdLogsThem) {
  const auto level = spdlog::get_level();
  spdlog::set_level(spdlog::level::info);
  auto quiet = Connect(1);
  ASSERT_TRUE(quiet->WaitWelcomed()) << quiet->closed();
  spdlog::set_level(spdlog::level::debug);
  auto verbose = Connect(2);
  ASSERT_TRUE(verbose->WaitWelcomed()) << verbose->closed();
  spdlog::set_level(level);
  EXPECT_FALSE(quiet->send_progress());
  EXPECT_TRUE(verbose->send_progress());
}

}  // namespace
}  // namespace lockstep
