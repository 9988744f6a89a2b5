// The Hub's heartbeat policy: as agents connect, lockstepd spreads their heartbeats out so the
// total stays near HeartbeatPolicy::kPerSecond, never beyond the ceiling (a third of
// agent_lost), and every connected agent is told the interval in force. A real Hub on its
// engine thread, a real Engine and Authenticator over an in-memory SQLite store; the streams
// are stand-ins that record what the Hub delivers to them. Time is a ManualClock: it moves only
// while the engine thread sleeps (ManualClock::AwaitSleepers), and the engine thread being
// asleep is also how a test knows that the hub dealt with everything handed to it.

#include "orchestrator/server/hub.h"

#include <gtest/gtest.h>
#include <spdlog/spdlog.h>

#include <condition_variable>
#include <functional>
#include <memory>
#include <thread>

#include "orchestrator/auth/authenticator.h"
#include "orchestrator/store/store.h"

namespace lockstep {
namespace {

namespace v1 = lockstep::v1;
using std::chrono::milliseconds;
using std::chrono::seconds;

// Upper bound, in real time, for every wait on the engine thread.
constexpr milliseconds kPatience{10'000};

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

class NullSink final : public TaskSink {
 public:
  bool Send(const std::string&, const v1::Task&) override { return false; }
  bool SendGateCheck(const std::string&, const v1::GateCheck&) override { return false; }
};

// Records the interval each Welcome or Settings message carried, in order.
class RecordingStream final : public StreamHandle {
 public:
  void Deliver(const v1::ServerMessage& msg) override {
    std::function<void()> on_welcome;
    {
      std::lock_guard lock(mu_);
      if (msg.has_welcome()) {
        welcomed_ = true;
        credential_ = msg.welcome().credential();
        send_progress_ = msg.welcome().send_progress();
        on_change_ = msg.welcome().heartbeat_on_change();
        latest_ms_ = msg.welcome().heartbeat_interval_ms();
        on_welcome = std::move(on_welcome_);
      } else if (msg.has_settings()) {
        ++settings_;
        latest_ms_ = msg.settings().heartbeat_interval_ms();
      }
      cv_.notify_all();
    }
    if (on_welcome) on_welcome();
  }
  // Called (on the engine thread, once) when the welcome is delivered: how a test acts while
  // the hub is in the middle of a pass.
  void OnWelcome(std::function<void()> f) {
    std::lock_guard lock(mu_);
    on_welcome_ = std::move(f);
  }
  void Close(const std::string& reason) override {
    std::lock_guard lock(mu_);
    closed_ = reason;
    cv_.notify_all();
  }
  void Accept() override {
    std::lock_guard lock(mu_);
    accepted_ = true;
  }
  // Waits until the hub welcomed or refused the stream.
  bool WaitAnswered() {
    std::unique_lock lock(mu_);
    return cv_.wait_for(lock, kPatience, [&] { return welcomed_ || !closed_.empty(); });
  }
  bool accepted() {
    std::lock_guard lock(mu_);
    return accepted_;
  }
  std::string credential() {
    std::lock_guard lock(mu_);
    return credential_;
  }
  bool WaitWelcomed() {
    std::unique_lock lock(mu_);
    return cv_.wait_for(lock, kPatience, [&] { return welcomed_ || !closed_.empty(); }) &&
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
  bool heartbeat_on_change() {
    std::lock_guard lock(mu_);
    return on_change_;
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
  bool on_change_ = false;
  int64_t latest_ms_ = 0;
  int settings_ = 0;
  std::string closed_;
  bool accepted_ = false;
  std::string credential_;
  std::function<void()> on_welcome_;
};

class HubHeartbeatTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto s = OpenSqliteStore(":memory:");
    ASSERT_TRUE(s.ok()) << s.status().ToString();
    store_ = std::move(*s);
    auth_ = std::make_unique<Authenticator>(store_.get(), &clock_);
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
    hub_ = std::make_unique<Hub>(&clock_, Policy(), auth_.get());
    engine_ = std::make_unique<Engine>(std::vector<Pipeline>{p}, store_.get(), &clock_, hub_.get());
    runner_ = std::thread([this] { hub_->Run(engine_.get()); });
  }
  // base 1 s, ceiling 30 s: the interval starts growing past 100 agents.
  virtual HeartbeatPolicy Policy() const { return HeartbeatPolicy{1000, 30'000}; }

  void TearDown() override {
    hub_->Stop();
    if (runner_.joinable()) runner_.join();
  }

  std::shared_ptr<RecordingStream> Connect(int i) {
    return Hello("host-" + std::to_string(i), "us-east-1", token_, "");
  }

  std::shared_ptr<RecordingStream> Hello(const std::string& name, const std::string& region,
                                         const std::string& token, const std::string& credential) {
    auto stream = std::make_shared<RecordingStream>();
    SendHello(stream, name, region, token, credential);
    return stream;
  }

  void SendHello(const std::shared_ptr<RecordingStream>& stream, const std::string& name,
                 const std::string& region, const std::string& token,
                 const std::string& credential) {
    v1::AgentMessage hello;
    hello.mutable_hello()->set_name(name);
    hello.mutable_hello()->set_region(region);
    hello.mutable_hello()->set_token(token);
    hello.mutable_hello()->set_credential(credential);
    hello.mutable_hello()->set_keeps_credential(true);
    hub_->OnMessage(stream, hello);
  }

  uint64_t Refused(const std::string& reason) {
    auto counts = hub_->RefusalCounts();
    return counts.count(reason) ? counts[reason] : 0;
  }

  // Waits until the engine thread sleeps: it has dealt with everything handed to the hub so
  // far (a pending wake-up, such as a stream's Close or a Kick, keeps it from counting).
  bool HubAsleep() { return clock_.AwaitSleepers(1, kPatience); }

  // The version the store records for `agent` as running ("" if none or no such agent).
  std::string StoredVersion(const std::string& agent) {
    auto agents = store_->Agents();
    EXPECT_TRUE(agents.ok()) << agents.status().ToString();
    if (!agents.ok()) return "";
    for (const auto& a : *agents) {
      if (a.name == agent) return a.current_version;
    }
    return "";
  }

  ManualClock clock_;  // outlives everything below
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
  ASSERT_TRUE(HubAsleep());  // every close taken, every agent told
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

// ---------------------------------------------------------------- a host is its own identity

TEST_F(HubHeartbeatTest, AHostThatEnrolledMustPresentItsOwnCredentialFromThenOn) {
  auto first = Connect(1);
  ASSERT_TRUE(first->WaitWelcomed()) << first->closed();
  const std::string credential = first->credential();
  ASSERT_FALSE(credential.empty()) << "the enrolling hello is issued a credential";
  EXPECT_TRUE(first->accepted());
  hub_->OnClosed(first);

  // The enrollment token alone can no longer claim the name: an impostor with it is refused.
  auto impostor = Hello("host-1", "us-east-1", token_, "");
  ASSERT_TRUE(impostor->WaitAnswered());
  EXPECT_NE(impostor->closed().find("already enrolled"), std::string::npos) << impostor->closed();
  EXPECT_FALSE(impostor->accepted());
  EXPECT_EQ(Refused("permission_denied"), 1u);

  // A wrong credential is refused too, with the same words as no credentials at all.
  auto forged = Hello("host-1", "us-east-1", "", "lsh_" + std::string(64, '0'));
  ASSERT_TRUE(forged->WaitAnswered());
  EXPECT_EQ(forged->closed(), "invalid enrollment token or host credential");

  // The host itself comes back with its credential, and is not issued another.
  auto back = Hello("host-1", "us-east-1", "", credential);
  ASSERT_TRUE(back->WaitWelcomed()) << back->closed();
  EXPECT_TRUE(back->credential().empty());
}

TEST_F(HubHeartbeatTest, ASecondConnectionForALiveHostIsRefusedNotSwappedIn) {
  auto first = Connect(1);
  ASSERT_TRUE(first->WaitWelcomed()) << first->closed();
  auto second = Hello("host-1", "us-east-1", "", first->credential());
  ASSERT_TRUE(second->WaitAnswered());
  EXPECT_NE(second->closed().find("already connected"), std::string::npos) << second->closed();
  EXPECT_TRUE(first->closed().empty()) << "the live stream was pushed off: " << first->closed();
  EXPECT_EQ(Refused("already_connected"), 1u);
}

// A stream silent for three heartbeat intervals is presumed dead (its peer may have vanished
// without a FIN): a new connection of its host replaces it instead of being refused.
TEST_F(HubHeartbeatTest, AStreamSilentForThreeHeartbeatIntervalsIsReplacedByANewConnection) {
  auto first = Connect(1);
  ASSERT_TRUE(first->WaitWelcomed()) << first->closed();
  ASSERT_EQ(first->latest_ms(), 1000);

  ASSERT_TRUE(HubAsleep());
  clock_.Advance(milliseconds(3 * 1000 - 1));
  auto early = Hello("host-1", "us-east-1", "", first->credential());
  ASSERT_TRUE(early->WaitAnswered());
  EXPECT_NE(early->closed().find("already connected"), std::string::npos) << early->closed();

  ASSERT_TRUE(HubAsleep());
  clock_.Advance(milliseconds(1));
  auto later = Hello("host-1", "us-east-1", "", first->credential());
  ASSERT_TRUE(later->WaitWelcomed()) << later->closed();
  EXPECT_NE(first->closed().find("presumed dead"), std::string::npos) << first->closed();
}

// Where the transport watches liveness (keepalive pings), agents are told to beat only when
// their version changes; an open stream is a live one, so a second connection of its host is
// refused however long the first was quiet; and a stream that broke counts as silent since
// the transport's bound before.
class HubTransportLivenessTest : public HubHeartbeatTest {
 protected:
  HeartbeatPolicy Policy() const override {
    HeartbeatPolicy p{1000, 30'000};
    p.transport_silence_ms = 20'000;
    return p;
  }
  int64_t StoredLastSeen(const std::string& agent) {
    auto agents = store_->Agents();
    EXPECT_TRUE(agents.ok()) << agents.status().ToString();
    for (const auto& a : agents.ok() ? *agents : std::vector<AgentRecord>{}) {
      if (a.name == agent) return a.last_seen;
    }
    return -1;
  }
};

TEST_F(HubTransportLivenessTest, AgentsAreToldToBeatOnlyOnAChange) {
  auto stream = Connect(1);
  ASSERT_TRUE(stream->WaitWelcomed()) << stream->closed();
  EXPECT_TRUE(stream->heartbeat_on_change());
}

TEST_F(HubHeartbeatTest, WithoutTransportLivenessAgentsBeatEveryInterval) {
  auto stream = Connect(1);
  ASSERT_TRUE(stream->WaitWelcomed()) << stream->closed();
  EXPECT_FALSE(stream->heartbeat_on_change());
}

TEST_F(HubTransportLivenessTest, AQuietOpenStreamIsNotReplacedByASecondConnection) {
  auto first = Connect(1);
  ASSERT_TRUE(first->WaitWelcomed()) << first->closed();
  ASSERT_TRUE(HubAsleep());
  clock_.Advance(milliseconds(3'600'000));  // an hour without a message
  auto second = Hello("host-1", "us-east-1", "", first->credential());
  ASSERT_TRUE(second->WaitAnswered());
  EXPECT_NE(second->closed().find("already connected"), std::string::npos) << second->closed();
  EXPECT_TRUE(first->closed().empty()) << "the live stream was pushed off: " << first->closed();
}

TEST_F(HubTransportLivenessTest, ABrokenStreamIsSilentSinceTheBoundAndACleanOneSinceItsEnd) {
  auto broken = Connect(1);
  auto ended = Connect(2);
  ASSERT_TRUE(broken->WaitWelcomed()) << broken->closed();
  ASSERT_TRUE(ended->WaitWelcomed()) << ended->closed();
  ASSERT_TRUE(HubAsleep());
  clock_.Advance(milliseconds(60'000));
  const UnixMs now = clock_.Now();
  hub_->OnClosed(broken, /*clean=*/false);
  hub_->OnClosed(ended, /*clean=*/true);
  ASSERT_TRUE(HubAsleep());
  EXPECT_EQ(StoredLastSeen("host-1"), now - 20'000);
  EXPECT_EQ(StoredLastSeen("host-2"), now);
}

// Heartbeats do not wake the engine thread. One that arrives while a pass runs is taken
// kLazyEventMs later, not sooner; one that arrives while the thread sleeps waits for the
// next event.
TEST_F(HubHeartbeatTest, AHeartbeatIsTakenAfterTheLazyDelayOrWithTheNextEvent) {
  auto heartbeat = [this](const std::shared_ptr<RecordingStream>& from,
                          const std::string& version) {
    v1::AgentMessage beat;
    beat.mutable_heartbeat()->set_current_version(version);
    hub_->OnMessage(from, beat);
  };
  auto stream = std::make_shared<RecordingStream>();
  // Sent from the welcome, on the engine thread: it arrives in the middle of the pass.
  std::weak_ptr<RecordingStream> weak = stream;
  stream->OnWelcome([&heartbeat, weak] { heartbeat(weak.lock(), "v1"); });
  SendHello(stream, "host-1", "us-east-1", token_, "");
  ASSERT_TRUE(stream->WaitWelcomed()) << stream->closed();

  ASSERT_TRUE(HubAsleep());
  EXPECT_EQ(StoredVersion("host-1"), "");
  clock_.Advance(milliseconds(Hub::kLazyEventMs - 1));
  ASSERT_TRUE(HubAsleep());
  EXPECT_EQ(StoredVersion("host-1"), "") << "taken before kLazyEventMs";
  clock_.Advance(milliseconds(1));
  ASSERT_TRUE(HubAsleep());
  EXPECT_EQ(StoredVersion("host-1"), "v1") << "not taken at kLazyEventMs";

  // The engine thread now sleeps with nothing to wait for: a heartbeat leaves it asleep...
  heartbeat(stream, "v2");
  ASSERT_TRUE(HubAsleep());
  EXPECT_EQ(StoredVersion("host-1"), "v1");
  // ...and is taken with the next event, whatever it is.
  hub_->Kick();
  ASSERT_TRUE(HubAsleep());
  EXPECT_EQ(StoredVersion("host-1"), "v2");
}

TEST_F(HubHeartbeatTest, ACredentialIsBoundToItsRegion) {
  auto first = Connect(1);
  ASSERT_TRUE(first->WaitWelcomed()) << first->closed();
  hub_->OnClosed(first);
  auto moved = Hello("host-1", "eu-west-1", "", first->credential());
  ASSERT_TRUE(moved->WaitAnswered());
  EXPECT_NE(moved->closed().find("enrolled in region us-east-1"), std::string::npos)
      << moved->closed();
}

TEST_F(HubHeartbeatTest, HelloFieldsOutsideTheirLimitsAreRefusedBeforeAuthentication) {
  for (const std::string& name :
       {std::string(254, 'a'), std::string("bad\nname"), std::string("-leading-dash"),
        std::string("a/b"), std::string()}) {
    auto s = Hello(name, "us-east-1", token_, "");
    ASSERT_TRUE(s->WaitAnswered());
    EXPECT_FALSE(s->accepted()) << name;
    EXPECT_FALSE(s->closed().empty()) << name;
    EXPECT_EQ(s->closed().find('\n'), std::string::npos) << "refusal echoes a raw newline";
  }
  EXPECT_EQ(Refused("malformed"), 5u);
  // Nothing was enrolled or recorded for any of them.
  auto agents = store_->Agents();
  ASSERT_TRUE(agents.ok());
  EXPECT_TRUE(agents->empty());
  // A name of exactly 253 characters is fine.
  auto longest = Hello(std::string(253, 'h'), "us-east-1", token_, "");
  EXPECT_TRUE(longest->WaitWelcomed()) << longest->closed();
}

TEST_F(HubHeartbeatTest, ARevokedEnrollmentTokenEnrollsNoOne) {
  ASSERT_TRUE(auth_->RevokeToken("enroll", "test").ok());
  auto s = Connect(7);
  ASSERT_TRUE(s->WaitAnswered());
  EXPECT_NE(s->closed().find("revoked"), std::string::npos) << s->closed();
  EXPECT_FALSE(s->accepted());
}

TEST_F(HubHeartbeatTest, ARemovedHostCanEnrollAgainAndItsOldCredentialIsDead) {
  auto first = Connect(1);
  ASSERT_TRUE(first->WaitWelcomed()) << first->closed();
  const std::string old_credential = first->credential();
  ASSERT_TRUE(hub_->RemoveAgent("host-1", "admin").ok());
  EXPECT_NE(first->closed().find("removed"), std::string::npos) << first->closed();
  hub_->OnClosed(first);
  auto stale = Hello("host-1", "us-east-1", "", old_credential);
  ASSERT_TRUE(stale->WaitAnswered());
  EXPECT_FALSE(stale->accepted());
  auto fresh = Connect(1);
  ASSERT_TRUE(fresh->WaitWelcomed()) << fresh->closed();
  EXPECT_NE(fresh->credential(), old_credential);
  EXPECT_EQ(hub_->RemoveAgent("no-such-host", "admin").code(), StatusCode::kNotFound);
}

// An agent from before host credentials (it does not say it keeps one) is admitted on its
// token and not enrolled, so that it is not locked out on its next connection; once it is
// upgraded it enrolls, and from then on its name is protected.
TEST_F(HubHeartbeatTest, AnAgentThatCannotKeepACredentialIsAdmittedWithoutEnrolling) {
  for (int connection = 0; connection < 2; ++connection) {
    auto legacy = std::make_shared<RecordingStream>();
    v1::AgentMessage hello;
    hello.mutable_hello()->set_name("host-1");
    hello.mutable_hello()->set_region("us-east-1");
    hello.mutable_hello()->set_token(token_);
    hub_->OnMessage(legacy, hello);
    ASSERT_TRUE(legacy->WaitWelcomed()) << legacy->closed();
    EXPECT_TRUE(legacy->credential().empty());
    hub_->OnClosed(legacy);
  }
  auto upgraded = Connect(1);
  ASSERT_TRUE(upgraded->WaitWelcomed()) << upgraded->closed();
  EXPECT_FALSE(upgraded->credential().empty());
}

// ---------------------------------------------------------------- token lifecycle

TEST(TokenLifecycleTest, ATokenStopsWorkingWhenItExpiresAndWhenItIsRevoked) {
  auto store = OpenSqliteStore(":memory:");
  ASSERT_TRUE(store.ok());
  ManualClock clock;
  Authenticator auth(store->get(), &clock);
  auto expiring = auth.CreateToken("ci", "deployer", "", "admin", /*expires_in_ms=*/60'000);
  ASSERT_TRUE(expiring.ok()) << expiring.status().ToString();
  EXPECT_TRUE(auth.Check("Bearer " + *expiring, Action::kCreateRelease).ok());
  clock.Advance(std::chrono::milliseconds(59'999));
  EXPECT_TRUE(auth.Check("Bearer " + *expiring, Action::kCreateRelease).ok());
  clock.Advance(std::chrono::milliseconds(1));
  auto expired = auth.Check("Bearer " + *expiring, Action::kCreateRelease);
  EXPECT_EQ(expired.status().code(), StatusCode::kUnauthenticated);
  EXPECT_NE(expired.status().message().find("expired"), std::string::npos);

  auto viewer = auth.CreateToken("alice", "viewer", "", "admin");
  ASSERT_TRUE(viewer.ok());
  std::vector<std::string> revoked_names;
  auth.OnRevoke([&](const std::string& name) { revoked_names.push_back(name); });
  ASSERT_TRUE(auth.RevokeToken("alice", "admin").ok());
  EXPECT_EQ(revoked_names, std::vector<std::string>{"alice"});
  EXPECT_EQ(auth.Check("Bearer " + *viewer, Action::kRead).status().code(),
            StatusCode::kUnauthenticated);
  EXPECT_EQ(auth.RevokeToken("alice", "admin").code(), StatusCode::kFailedPrecondition);
  EXPECT_EQ(auth.RevokeToken("nobody", "admin").code(), StatusCode::kNotFound);
  // The listing keeps both, with their lifecycle, and never a secret.
  auto tokens = (*store)->ListTokens();
  ASSERT_TRUE(tokens.ok());
  ASSERT_EQ(tokens->size(), 2u);
  EXPECT_GT((*tokens)[0].revoked_at, 0);  // alice
  EXPECT_GT((*tokens)[1].expires_at, 0);  // ci
  // Credentials and tokens are stored as hashes only.
  for (const auto& t : *tokens) {
    EXPECT_NE(t.hash, *viewer);
    EXPECT_NE(t.hash, *expiring);
  }
}

TEST(TokenLifecycleTest, AnArtifactUrlWithCredentialsIsRefused) {
  auto store = OpenSqliteStore(":memory:");
  ASSERT_TRUE(store.ok());
  Pipeline p;
  p.name = "monolith";
  p.regions = {"us-east-1"};
  WaveSpec all;
  all.name = "all";
  all.regions = p.regions;
  p.waves = {all};
  NullSink sink;
  Engine engine({p}, store->get(), SystemClock::Get(), &sink);
  NewRelease nr{
      "monolith", "v1", "https://user:pass@example.com/a.tar.gz", std::string(64, 'a'), "", "", 0};
  auto created = engine.CreateRelease(nr, "admin");
  EXPECT_EQ(created.status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(created.status().message().find("user:pass@"), std::string::npos)
      << "the refusal repeats the credentials: " << created.status().message();
  nr.artifact_url = "https://example.com/builds/a@b.tar.gz";  // an @ in the path is fine
  EXPECT_TRUE(engine.CreateRelease(nr, "admin").ok());
}

}  // namespace
}  // namespace lockstep
