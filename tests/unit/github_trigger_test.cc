// The GitHub push trigger end to end, without HTTP in front of it: deliveries go straight to
// GithubPushTrigger::Handle, releases land in a real Engine over an in-memory SQLite store,
// and artifacts are downloaded from real HTTP servers on 127.0.0.1. What is asserted is what
// an attacker or an operator would see: the reply, and the releases in the store.

#include "orchestrator/webhook/github_trigger.h"

#include <gtest/gtest.h>
#include <httplib.h>
#include <stdlib.h>

#include <chrono>
#include <condition_variable>
#include <filesystem>
#include <fstream>
#include <map>
#include <mutex>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "common/sha256.h"
#include "orchestrator/engine/history.h"
#include "tests/support/http_server.h"
#include "tests/support/recording_observer.h"

namespace lockstep {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;
using std::chrono::milliseconds;
using std::chrono::seconds;
using testing::TestHttpServer;

constexpr char kCommitA[] = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
constexpr char kCommitB[] = "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb";
constexpr char kCommitC[] = "cccccccccccccccccccccccccccccccccccccccc";
// 2026-12-05T10:00:00Z and an hour later, as GitHub writes them and as unix ms.
constexpr char kTen[] = "2026-12-05T12:00:00+02:00";
constexpr char kEleven[] = "2026-12-05T11:00:00Z";
constexpr UnixMs kTenMs = 1796464800000;
constexpr UnixMs kElevenMs = 1796468400000;

class NoAgents final : public TaskSink {
 public:
  bool Send(const std::string&, const lockstep::v1::Task&) override { return false; }
  bool SendGateCheck(const std::string&, const lockstep::v1::GateCheck&) override { return false; }
};

// A push of `commit` to `branch` of `repository`; `timestamp` empty: no head commit time.
std::string PushBody(const std::string& repository, const std::string& branch,
                     const std::string& commit, const std::string& timestamp) {
  json head = {{"message", "fix the thing"}, {"author", {{"name", "Ada"}}}};
  if (!timestamp.empty()) head["timestamp"] = timestamp;
  return json{{"ref", "refs/heads/" + branch},
              {"after", commit},
              {"repository", {{"full_name", repository}}},
              {"head_commit", head},
              {"pusher", {{"name", "ada"}}}}
      .dump();
}

// An HTTP server on 127.0.0.1 that answers GETs with redirects (or bytes) set per path.
class RedirectServer {
 public:
  RedirectServer() {
    server_.Get(R"(/.*)", [this](const httplib::Request& req, httplib::Response& res) {
      std::lock_guard lock(mu_);
      ++hits_[req.path];
      if (auto it = redirects_.find(req.path); it != redirects_.end()) {
        res.status = 302;
        res.set_header("Location", it->second);
        res.set_content("moved\n", "text/plain");
      } else if (auto body = bodies_.find(req.path); body != bodies_.end()) {
        res.set_content(body->second, "application/octet-stream");
      } else {
        res.status = 404;
      }
    });
    port_ = server_.bind_to_any_port("127.0.0.1");
    EXPECT_GT(port_, 0);
    thread_ = std::thread([this] { server_.listen_after_bind(); });
    for (int i = 0; i < 5000 && !server_.is_running(); ++i) {
      std::this_thread::sleep_for(milliseconds(1));
    }
    EXPECT_TRUE(server_.is_running());
  }
  ~RedirectServer() {
    server_.stop();
    thread_.join();
  }

  std::string Url(const std::string& path) const {
    return "http://127.0.0.1:" + std::to_string(port_) + path;
  }
  int port() const { return port_; }
  void Redirect(const std::string& path, const std::string& location) {
    std::lock_guard lock(mu_);
    redirects_[path] = location;
  }
  void Serve(const std::string& path, const std::string& body) {
    std::lock_guard lock(mu_);
    bodies_[path] = body;
  }
  int Hits(const std::string& path) {
    std::lock_guard lock(mu_);
    return hits_[path];
  }

 private:
  httplib::Server server_;
  std::thread thread_;
  int port_ = 0;
  std::mutex mu_;
  std::map<std::string, std::string> redirects_;  // guarded by mu_
  std::map<std::string, std::string> bodies_;     // guarded by mu_
  std::map<std::string, int> hits_;               // guarded by mu_
};

using ::lockstep::testing::RecordingObserver;

// The trigger and the engine share a ManualClock: the trigger's retry delays and deadlines
// pass only when a test advances it, and ManualClock::AwaitSleepers tells the test when the
// waiting threads are asleep. Engine passes run on the test thread, when the test says.
class GithubTriggerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string tmpl = (fs::temp_directory_path() / "github-trigger-XXXXXX").string();
    ASSERT_NE(mkdtemp(tmpl.data()), nullptr);
    dir_ = tmpl;
    WriteSecret("shop-secret", "s3cret-shop\n");
    WriteSecret("billing-secret", "s3cret-billing");
    auto store = OpenSqliteStore(":memory:");
    ASSERT_TRUE(store.ok()) << store.status().ToString();
    store_ = std::move(*store);
  }
  void TearDown() override {
    trigger_.reset();
    std::error_code ec;
    fs::remove_all(dir_, ec);
  }

  void WriteSecret(const std::string& name, const std::string& text) {
    std::ofstream(dir_ / name, std::ios::binary | std::ios::trunc) << text;
  }
  std::string SecretPath(const std::string& name) const { return (dir_ / name).string(); }

  Pipeline MakePipeline(const std::string& name, const std::string& repository,
                        const std::string& artifact, const std::string& secret_file) {
    Pipeline p;
    p.name = name;
    p.file = name + ".yaml";
    p.regions = {"us-east-1"};
    WaveSpec all;
    all.name = "all";
    all.regions = p.regions;
    p.waves = {all};
    GithubTrigger trigger;
    trigger.repository = repository;
    trigger.branch = "main";
    trigger.artifact = artifact;
    trigger.secret_file = SecretPath(secret_file);
    p.github = trigger;
    return p;
  }
  Pipeline Shop() {
    return MakePipeline("shop", "acme/shop", artifacts_.Url("/shop/{sha}.tgz"), "shop-secret");
  }
  Pipeline Billing() {
    return MakePipeline("billing", "acme/billing", artifacts_.Url("/billing/{sha}.tgz"),
                        "billing-secret");
  }
  static std::string ShopArtifact(const std::string& commit) { return "/shop/" + commit + ".tgz"; }

  // Retries 1 s apart, then 2 s, then 4 s at most.
  static GithubPushTriggerOptions TestOptions() {
    GithubPushTriggerOptions o;
    o.artifact_retry_delay = seconds(1);
    o.artifact_max_retry_delay = seconds(4);
    o.connect_timeout = milliseconds(2000);
    o.transfer_timeout = milliseconds(20000);
    return o;
  }

  void Start(std::vector<Pipeline> pipelines) {
    pipelines_ = pipelines;
    engine_ = std::make_unique<Engine>(pipelines, store_.get(), &clock_, &sink_);
    engine_->set_observer(&observer_);
    StartTrigger();
  }
  // A trigger over the same engine and store, as a restarted lockstepd makes one.
  void StartTrigger() {
    trigger_ = std::make_unique<GithubPushTrigger>(
        engine_.get(), store_.get(), &clock_, [this] { Kicked(); }, TestOptions());
  }

  WebhookReply Deliver(const std::string& body, const std::string& signature,
                       const std::string& event = "push") {
    return trigger_->Handle(event, signature, "delivery-1", body);
  }
  WebhookReply DeliverSigned(const std::string& body, const std::string& secret = "s3cret-shop") {
    return Deliver(body, GithubSignature(secret, body));
  }
  // The release an accepted delivery names, 0 if none.
  static int64_t IdOf(const WebhookReply& r) {
    if (!r.body.contains("release")) return 0;
    return r.body["release"]["id"].get<int64_t>();
  }

  void Kicked() {
    std::lock_guard lock(kick_mu_);
    ++kicks_;
    kick_cv_.notify_all();
  }
  int kicks() {
    std::lock_guard lock(kick_mu_);
    return kicks_;
  }
  // Waits (at most 10 s of real time) until the trigger has asked for `n` passes in all: one
  // per release created, one per artifact found (or found unusable), one per wait given up.
  bool AwaitKicks(int n) {
    std::unique_lock lock(kick_mu_);
    return kick_cv_.wait_for(lock, seconds(10), [&] { return kicks_ >= n; });
  }
  // Waits (at most 10 s of real time) until `n` waiting threads are asleep: each tried to
  // download its artifact and waits for its next try.
  bool AwaitAsleep(size_t n) { return clock_.AwaitSleepers(n, seconds(10)); }
  // Waits (at most 10 s of real time) until the trigger waits for `n` releases, i.e. the
  // others' threads saw their release end, or gave up, and returned.
  bool AwaitWaiting(size_t n) {
    const auto give_up = std::chrono::steady_clock::now() + seconds(10);
    while (trigger_->waiting() != n) {
      if (std::chrono::steady_clock::now() > give_up) return false;
      std::this_thread::sleep_for(milliseconds(1));
    }
    return true;
  }

  UnixMs Pass() {
    auto next = engine_->Reconcile();
    EXPECT_TRUE(next.ok()) << next.status().ToString();
    return next.ok() ? *next : -1;
  }
  // The release after the trigger reported its artifact (`kicks` in all so far) and a pass.
  ReleaseRecord AfterTheArtifactCheck(int64_t id, int kicks_so_far = 2) {
    EXPECT_TRUE(AwaitKicks(kicks_so_far));
    Pass();
    return Release(id);
  }

  ReleaseRecord Release(int64_t id) {
    auto r = store_->GetRelease(id);
    EXPECT_TRUE(r.ok()) << r.status().ToString();
    return r.ok() ? *r : ReleaseRecord();
  }
  std::vector<ReleaseRecord> Releases() {
    auto releases = store_->FindReleases(ReleaseQuery::Newest("", 0));
    EXPECT_TRUE(releases.ok()) << releases.status().ToString();
    return releases.ok() ? *releases : std::vector<ReleaseRecord>{};
  }
  // The audited actions on release `id` as "actor action", oldest first.
  std::vector<std::string> ActionsOn(int64_t id) {
    std::vector<std::string> out;
    auto audit = store_->Audit(1000);
    EXPECT_TRUE(audit.ok());
    for (const auto& a : *audit) {
      if (a.target == "release/" + std::to_string(id)) {
        out.insert(out.begin(), a.actor + " " + a.action);
      }
    }
    return out;
  }

  fs::path dir_;
  ManualClock clock_;
  NoAgents sink_;
  RecordingObserver observer_;
  std::unique_ptr<Store> store_;
  std::vector<Pipeline> pipelines_;
  std::unique_ptr<Engine> engine_;
  TestHttpServer artifacts_;
  std::mutex kick_mu_;
  std::condition_variable kick_cv_;
  int kicks_ = 0;  // guarded by kick_mu_
  std::unique_ptr<GithubPushTrigger> trigger_;
};

// --- authentication ---

TEST_F(GithubTriggerTest, EveryDeliveryNoSecretVerifiesGetsOneIdenticalAnswer) {
  Start({Shop(), Billing()});
  artifacts_.Serve(ShopArtifact(kCommitA), "app");
  const std::string configured = PushBody("acme/shop", "main", kCommitA, kTen);
  const std::string unconfigured = PushBody("acme/unknown", "main", kCommitA, kTen);
  const std::string not_json = "this is not JSON {";

  const WebhookReply reference = Deliver(configured, "");
  EXPECT_EQ(reference.http_status, 401);
  EXPECT_EQ(reference.body, json({{"error", "invalid or missing X-Hub-Signature-256"}}));

  struct Case {
    std::string body;
    std::string signature;
    std::string event;
  };
  const std::vector<Case> cases = {
      {configured, "", "push"},
      {configured, "sha256=" + std::string(64, '0'), "push"},
      {configured, GithubSignature("wrong-secret", configured), "push"},
      // Signed with the right secret, but over other bytes.
      {configured, GithubSignature("s3cret-shop", unconfigured), "push"},
      {unconfigured, "", "push"},
      {unconfigured, GithubSignature("wrong-secret", unconfigured), "push"},
      {not_json, "", "push"},
      {not_json, GithubSignature("wrong-secret", not_json), "push"},
      {"{}", "", "ping"},
      {"{}", "", "issues"},
      {"{}", "", ""},
      {"", "", "push"},
  };
  for (const Case& c : cases) {
    WebhookReply r = Deliver(c.body, c.signature, c.event);
    EXPECT_EQ(r.http_status, reference.http_status) << c.body << " / " << c.event;
    EXPECT_EQ(r.body.dump(), reference.body.dump()) << c.body << " / " << c.event;
  }
  EXPECT_TRUE(Releases().empty());
  EXPECT_EQ(artifacts_.Hits(ShopArtifact(kCommitA)), 0);
  EXPECT_EQ(kicks(), 0);
  EXPECT_EQ(trigger_->waiting(), 0u);
}

TEST_F(GithubTriggerTest, ASignedPingIsAnsweredWithPong) {
  Start({Shop()});
  WebhookReply r = Deliver("{}", GithubSignature("s3cret-shop", "{}"), "ping");
  EXPECT_EQ(r.http_status, 200);
  EXPECT_EQ(r.body, json({{"pong", true}}));
}

TEST_F(GithubTriggerTest, ASignedBodyThatIsNotAPushIsABadRequest) {
  Start({Shop()});
  WebhookReply r = DeliverSigned("this is not JSON {");
  EXPECT_EQ(r.http_status, 400);
  EXPECT_EQ(r.body["error"].get<std::string>().rfind("not JSON: ", 0), 0u) << r.body;
}

TEST_F(GithubTriggerTest, APushSignedWithAnotherPipelinesSecretTriggersNothing) {
  Start({Shop(), Billing()});
  artifacts_.Serve(ShopArtifact(kCommitA), "app");
  WebhookReply r = DeliverSigned(PushBody("acme/shop", "main", kCommitA, kTen), "s3cret-billing");
  EXPECT_EQ(r.http_status, 202) << r.body;
  EXPECT_EQ(r.body["ignored"], "no pipeline that accepts this signature is triggered by acme/shop");
  EXPECT_TRUE(Releases().empty());
  EXPECT_EQ(artifacts_.Hits(ShopArtifact(kCommitA)), 0);
}

TEST_F(GithubTriggerTest, APushToAnotherBranchIsIgnored) {
  Start({Shop()});
  WebhookReply r = DeliverSigned(PushBody("acme/shop", "feature", kCommitA, kTen));
  EXPECT_EQ(r.http_status, 202);
  EXPECT_EQ(r.body["ignored"], "push to feature");
  EXPECT_TRUE(Releases().empty());
}

TEST_F(GithubTriggerTest, ASecretThatBecameUnreadableStopsOnlyItsOwnPipeline) {
  Start({Shop(), Billing()});
  artifacts_.Serve("/billing/" + std::string(kCommitA) + ".tgz", "billing app");
  fs::remove(SecretPath("shop-secret"));

  WebhookReply shop = DeliverSigned(PushBody("acme/shop", "main", kCommitA, kTen));
  EXPECT_EQ(shop.http_status, 401);
  WebhookReply billing =
      DeliverSigned(PushBody("acme/billing", "main", kCommitA, kTen), "s3cret-billing");
  EXPECT_EQ(billing.http_status, 202) << billing.body;
  EXPECT_NE(IdOf(billing), 0) << billing.body;
  ASSERT_EQ(Releases().size(), 1u);
  EXPECT_EQ(Releases()[0].pipeline, "billing");
}

TEST_F(GithubTriggerTest, ARotatedSecretIsUsedWithoutARestart) {
  Start({Shop()});
  artifacts_.Serve(ShopArtifact(kCommitA), "app");
  WriteSecret("shop-secret", "rotated\n");
  const std::string body = PushBody("acme/shop", "main", kCommitA, kTen);
  EXPECT_EQ(DeliverSigned(body, "s3cret-shop").http_status, 401);
  WebhookReply r = DeliverSigned(body, "rotated");
  EXPECT_EQ(r.http_status, 202) << r.body;
  EXPECT_NE(IdOf(r), 0) << r.body;
}

// --- releases, and waiting for their artifact ---

TEST_F(GithubTriggerTest, APushIsAnsweredAtOnceWithAReleaseThatWaitsForItsArtifact) {
  Start({Shop()});
  const auto started = std::chrono::steady_clock::now();
  WebhookReply r = DeliverSigned(PushBody("acme/shop", "main", kCommitA, kTen));
  // The clock never moved: the answer cannot have waited for a retry. (GitHub waits 10 s.)
  EXPECT_LT(std::chrono::steady_clock::now() - started, seconds(2));
  ASSERT_EQ(r.http_status, 202) << r.body;
  const json& release = r.body["release"];
  EXPECT_EQ(release["state"], "waiting_for_artifact");
  EXPECT_EQ(release["commit"], kCommitA);
  EXPECT_EQ(release["final"], false);
  EXPECT_EQ(release["in_flight"], false);

  const int64_t id = IdOf(r);
  ReleaseRecord stored = Release(id);
  EXPECT_EQ(stored.state, "waiting_for_artifact");
  EXPECT_EQ(stored.pipeline, "shop");
  EXPECT_EQ(stored.commit, kCommitA);
  EXPECT_EQ(stored.commit_at, kTenMs);
  EXPECT_EQ(stored.version, std::string(kCommitA).substr(0, 12));
  EXPECT_EQ(stored.author, "Ada");
  EXPECT_EQ(stored.artifact_url, artifacts_.Url(ShopArtifact(kCommitA)));
  EXPECT_EQ(stored.sha256, "");
  EXPECT_EQ(ActionsOn(id), std::vector<std::string>{"webhook:github release.create"});

  // In the background: one download, nothing there, asleep until the next try.
  ASSERT_TRUE(AwaitAsleep(1));
  EXPECT_EQ(artifacts_.Hits(ShopArtifact(kCommitA)), 1);
  EXPECT_EQ(trigger_->waiting(), 1u);
  Pass();
  EXPECT_EQ(Release(id).state, "waiting_for_artifact");
  EXPECT_EQ(observer_.Of(id), std::vector<std::string>{"waiting_for_artifact"});
  EXPECT_EQ(kicks(), 1);
}

TEST_F(GithubTriggerTest, AnArtifactPublishedLaterQueuesTheRelease) {
  Start({Shop()});
  ASSERT_TRUE(engine_->Freeze("shop", "hold", "test").ok());  // so that queued stays queued
  WebhookReply r = DeliverSigned(PushBody("acme/shop", "main", kCommitA, kTen));
  ASSERT_EQ(r.http_status, 202) << r.body;
  const int64_t id = IdOf(r);
  ASSERT_TRUE(AwaitAsleep(1));
  Pass();

  artifacts_.Serve(ShopArtifact(kCommitA), "late bytes");
  clock_.Advance(seconds(1));  // the next try
  ReleaseRecord queued = AfterTheArtifactCheck(id);
  EXPECT_EQ(queued.state, "queued");
  EXPECT_EQ(queued.sha256, Sha256Hex("late bytes"));
  EXPECT_EQ(queued.reason, "waiting: pipeline frozen by test (hold)");
  EXPECT_EQ(artifacts_.Hits(ShopArtifact(kCommitA)), 2);
  EXPECT_EQ(observer_.Of(id), (std::vector<std::string>{"waiting_for_artifact", "queued"}));
  EXPECT_EQ(ActionsOn(id),
            (std::vector<std::string>{"webhook:github release.create", "engine release.queued"}));
  EXPECT_TRUE(AwaitWaiting(0));
}

TEST_F(GithubTriggerTest, AnArtifactAlreadyPublishedIsReleasedAtTheFirstTry) {
  Start({Shop()});
  artifacts_.Serve(ShopArtifact(kCommitA), "the app's bytes");
  WebhookReply r = DeliverSigned(PushBody("acme/shop", "main", kCommitA, kTen));
  ASSERT_EQ(r.http_status, 202) << r.body;
  const int64_t id = IdOf(r);
  ReleaseRecord released = AfterTheArtifactCheck(id);
  EXPECT_EQ(released.sha256, Sha256Hex("the app's bytes"));
  auto events = observer_.Of(id);
  ASSERT_GE(events.size(), 3u);
  EXPECT_EQ(events[0], "waiting_for_artifact");
  EXPECT_EQ(events[1], "queued");
  EXPECT_EQ(events[2], "release_started");
  EXPECT_EQ(artifacts_.Hits(ShopArtifact(kCommitA)), 1);
}

TEST_F(GithubTriggerTest, RetriesBackOffUpToTheLongestDelay) {
  Start({Shop()});
  ASSERT_EQ(DeliverSigned(PushBody("acme/shop", "main", kCommitA, kTen)).http_status, 202);
  const std::string path = ShopArtifact(kCommitA);
  ASSERT_TRUE(AwaitAsleep(1));
  // Tries at 0 s, then 1, 2 and 4 s apart, then 4 s apart (the longest delay).
  const std::pair<int, int> steps[] = {{1, 2}, {1, 2}, {1, 3}, {3, 3},
                                       {1, 4}, {4, 5}, {3, 5}, {1, 6}};
  for (const auto& [advance, hits] : steps) {
    clock_.Advance(seconds(advance));
    ASSERT_TRUE(AwaitAsleep(1));
    EXPECT_EQ(artifacts_.Hits(path), hits) << "at " << clock_.Now();
  }
}

TEST_F(GithubTriggerTest, TheSamePushDeliveredAgainIsADuplicate) {
  Start({Shop()});
  const std::string body = PushBody("acme/shop", "main", kCommitA, kTen);
  WebhookReply first = DeliverSigned(body);
  ASSERT_EQ(first.http_status, 202) << first.body;
  WebhookReply again = DeliverSigned(body);  // still waiting for its artifact
  EXPECT_EQ(again.http_status, 200) << again.body;
  EXPECT_EQ(again.body["duplicate"], first.body["release"]["id"]);
  EXPECT_EQ(Releases().size(), 1u);
}

TEST_F(GithubTriggerTest, ANewerPushSupersedesAReleaseStillWaitingForItsArtifact) {
  Start({Shop()});
  ASSERT_TRUE(engine_->Freeze("shop", "hold", "test").ok());
  WebhookReply a = DeliverSigned(PushBody("acme/shop", "main", kCommitA, kTen));
  ASSERT_EQ(a.http_status, 202) << a.body;
  ASSERT_TRUE(AwaitAsleep(1));
  WebhookReply b = DeliverSigned(PushBody("acme/shop", "main", kCommitB, kEleven));
  ASSERT_EQ(b.http_status, 202) << b.body;
  ASSERT_TRUE(AwaitAsleep(2));
  Pass();
  ReleaseRecord older = Release(IdOf(a));
  EXPECT_EQ(older.state, "superseded");
  EXPECT_EQ(older.reason, "superseded by release " + std::to_string(IdOf(b)));
  EXPECT_EQ(ActionsOn(IdOf(a)), (std::vector<std::string>{"webhook:github release.create",
                                                          "engine release.superseded"}));
  EXPECT_EQ(Release(IdOf(b)).state, "waiting_for_artifact");

  // The older wait ends at its next try, without downloading; the newer goes on.
  artifacts_.Serve(ShopArtifact(kCommitA), "old");
  clock_.Advance(seconds(1));
  ASSERT_TRUE(AwaitWaiting(1));
  ASSERT_TRUE(AwaitAsleep(1));
  EXPECT_EQ(artifacts_.Hits(ShopArtifact(kCommitA)), 1);
  EXPECT_EQ(artifacts_.Hits(ShopArtifact(kCommitB)), 2);

  artifacts_.Serve(ShopArtifact(kCommitB), "new");
  clock_.Advance(seconds(2));
  ReleaseRecord newer = AfterTheArtifactCheck(IdOf(b), 3);  // two creations, one artifact
  EXPECT_EQ(newer.state, "queued");
  EXPECT_EQ(newer.sha256, Sha256Hex("new"));
  EXPECT_EQ(Release(IdOf(a)).state, "superseded");
}

TEST_F(GithubTriggerTest, AbortingAReleaseWaitingForItsArtifactEndsTheWait) {
  Start({Shop()});
  WebhookReply r = DeliverSigned(PushBody("acme/shop", "main", kCommitA, kTen));
  ASSERT_EQ(r.http_status, 202) << r.body;
  const int64_t id = IdOf(r);
  ASSERT_TRUE(AwaitAsleep(1));
  ASSERT_TRUE(engine_->Abort(id, "erin").ok());
  Pass();
  ReleaseRecord aborted = Release(id);
  EXPECT_EQ(aborted.state, "aborted");
  EXPECT_EQ(aborted.reason, "aborted by erin before its artifact arrived");
  EXPECT_EQ(ActionsOn(id),
            (std::vector<std::string>{"webhook:github release.create", "erin release.abort",
                                      "engine release.aborted"}));
  EXPECT_EQ(observer_.Of(id), (std::vector<std::string>{"waiting_for_artifact", "aborted"}));

  // At its next try the waiting thread sees the release ended, and downloads nothing.
  artifacts_.Serve(ShopArtifact(kCommitA), "late");
  clock_.Advance(seconds(1));
  ASSERT_TRUE(AwaitWaiting(0));
  EXPECT_EQ(artifacts_.Hits(ShopArtifact(kCommitA)), 1);
  Pass();
  EXPECT_EQ(Release(id).state, "aborted");
}

TEST_F(GithubTriggerTest, TheWaitRunningOutFailsTheRelease) {
  Pipeline shop = Shop();
  shop.github->artifact_wait = seconds(10);
  Start({shop});
  WebhookReply r = DeliverSigned(PushBody("acme/shop", "main", kCommitA, kTen));
  ASSERT_EQ(r.http_status, 202) << r.body;
  const int64_t id = IdOf(r);
  ASSERT_TRUE(AwaitAsleep(1));
  for (int delay : {1, 2, 4}) {  // tries at 1, 3 and 7 s
    clock_.Advance(seconds(delay));
    ASSERT_TRUE(AwaitAsleep(1));
  }
  EXPECT_EQ(artifacts_.Hits(ShopArtifact(kCommitA)), 4);
  clock_.Advance(seconds(3));  // 10 s: the deadline, not another try
  ASSERT_TRUE(AwaitKicks(2));
  ASSERT_TRUE(AwaitWaiting(0));
  EXPECT_EQ(artifacts_.Hits(ShopArtifact(kCommitA)), 4);
  Pass();
  ReleaseRecord failed = Release(id);
  EXPECT_EQ(failed.state, "failed");
  EXPECT_EQ(failed.reason, "artifact " + artifacts_.Url(ShopArtifact(kCommitA)) +
                               " did not appear within 10s (trigger.github.artifact_wait)");
  // Reported (and so notified) like any failure, and audited.
  EXPECT_EQ(observer_.Of(id), (std::vector<std::string>{"waiting_for_artifact", "failed"}));
  EXPECT_EQ(ActionsOn(id),
            (std::vector<std::string>{"webhook:github release.create", "engine release.failed"}));
}

TEST_F(GithubTriggerTest, ADeliveryAgainAfterTheWaitRanOutTriesAgain) {
  Pipeline shop = Shop();
  shop.github->artifact_wait = seconds(1);
  Start({shop});
  const std::string body = PushBody("acme/shop", "main", kCommitA, kTen);
  WebhookReply first = DeliverSigned(body);
  ASSERT_EQ(first.http_status, 202) << first.body;
  ASSERT_TRUE(AwaitAsleep(1));
  clock_.Advance(seconds(1));
  ASSERT_TRUE(AwaitKicks(2));
  Pass();
  ASSERT_EQ(Release(IdOf(first)).state, "failed");

  artifacts_.Serve(ShopArtifact(kCommitA), "fixed CI");
  WebhookReply again = DeliverSigned(body);
  ASSERT_EQ(again.http_status, 202) << again.body;
  ASSERT_NE(IdOf(again), IdOf(first));
  ReleaseRecord released = AfterTheArtifactCheck(IdOf(again), 4);
  EXPECT_EQ(released.sha256, Sha256Hex("fixed CI"));
}

TEST_F(GithubTriggerTest, ARestartedTriggerWaitsAgainForTheArtifact) {
  Start({Shop()});
  ASSERT_TRUE(engine_->Freeze("shop", "hold", "test").ok());
  WebhookReply r = DeliverSigned(PushBody("acme/shop", "main", kCommitA, kTen));
  ASSERT_EQ(r.http_status, 202) << r.body;
  const int64_t id = IdOf(r);
  ASSERT_TRUE(AwaitAsleep(1));
  trigger_.reset();  // lockstepd stops: the release stays waiting in the store
  EXPECT_EQ(Release(id).state, "waiting_for_artifact");

  clock_.Advance(std::chrono::minutes(5));
  StartTrigger();
  ASSERT_TRUE(AwaitAsleep(1));  // it tried again at once
  EXPECT_EQ(trigger_->waiting(), 1u);
  EXPECT_EQ(artifacts_.Hits(ShopArtifact(kCommitA)), 2);
  artifacts_.Serve(ShopArtifact(kCommitA), "published while lockstepd was down");
  clock_.Advance(seconds(1));
  ReleaseRecord queued = AfterTheArtifactCheck(id);
  EXPECT_EQ(queued.state, "queued");
  EXPECT_EQ(queued.sha256, Sha256Hex("published while lockstepd was down"));
}

TEST_F(GithubTriggerTest, ARestartedTriggerWaitsOnlyForWhatIsLeftOfTheWait) {
  Pipeline shop = Shop();
  shop.github->artifact_wait = std::chrono::minutes(10);
  Start({shop});
  WebhookReply r = DeliverSigned(PushBody("acme/shop", "main", kCommitA, kTen));
  ASSERT_EQ(r.http_status, 202) << r.body;
  const int64_t id = IdOf(r);
  ASSERT_TRUE(AwaitAsleep(1));
  trigger_.reset();

  clock_.Advance(std::chrono::minutes(10) - seconds(1));
  StartTrigger();
  ASSERT_TRUE(AwaitAsleep(1));
  clock_.Advance(seconds(1));  // ten minutes after the push
  ASSERT_TRUE(AwaitKicks(2));  // the creation, and giving up
  ASSERT_TRUE(AwaitWaiting(0));
  Pass();
  EXPECT_EQ(Release(id).state, "failed");
  EXPECT_EQ(Release(id).reason, "artifact " + artifacts_.Url(ShopArtifact(kCommitA)) +
                                    " did not appear within 10m (trigger.github.artifact_wait)");
}

// The attack: a signed push that made no release (its artifact was unusable) is recorded and
// delivered again after a newer commit was released.
TEST_F(GithubTriggerTest, AReplayedOlderPushIsIgnoredAndCreatesNoRelease) {
  Start({Shop()});
  const std::string old_push = PushBody("acme/shop", "main", kCommitA, kTen);
  artifacts_.ServeStatus(ShopArtifact(kCommitA), 410);
  WebhookReply first = DeliverSigned(old_push);
  ASSERT_EQ(first.http_status, 202) << first.body;
  EXPECT_EQ(AfterTheArtifactCheck(IdOf(first)).state, "failed");

  artifacts_.Serve(ShopArtifact(kCommitB), "new");
  ASSERT_EQ(DeliverSigned(PushBody("acme/shop", "main", kCommitB, kEleven)).http_status, 202);

  artifacts_.Serve(ShopArtifact(kCommitA), "old");
  WebhookReply replay = DeliverSigned(old_push);
  EXPECT_EQ(replay.http_status, 202) << replay.body;
  EXPECT_NE(replay.body.value("ignored", "")
                .find("commit aaaaaaaaaaaa of 2026-12-05T10:00:00.000Z is older than the current "
                      "release bbbbbbbbbbbb of pipeline shop"),
            std::string::npos)
      << replay.body;
  ASSERT_EQ(Releases().size(), 2u);
  EXPECT_EQ(Releases()[0].commit, kCommitB);
  EXPECT_EQ(artifacts_.Hits(ShopArtifact(kCommitA)), 1);  // the replay downloaded nothing
}

TEST_F(GithubTriggerTest, AnOlderPushIsIgnoredOnceTheNewerReleaseSucceeded) {
  Start({Shop()});
  ASSERT_EQ(DeliverSigned(PushBody("acme/shop", "main", kCommitB, kEleven)).http_status, 202);
  // The release finished: it is no longer open, it is what the fleet should run.
  ReleaseRecord done = Releases()[0];
  done.state = release_state::kSucceeded;
  done.finished_at = clock_.Now();
  WriteBatch batch;
  batch.releases.push_back(done);
  ASSERT_TRUE(store_->Write(batch).ok());
  ASSERT_TRUE(OpenReleases(*store_, "shop")->empty());

  artifacts_.Serve(ShopArtifact(kCommitA), "old");
  WebhookReply r = DeliverSigned(PushBody("acme/shop", "main", kCommitA, kTen));
  EXPECT_EQ(r.http_status, 202) << r.body;
  EXPECT_TRUE(r.body.contains("ignored")) << r.body;
  EXPECT_EQ(Releases().size(), 1u);
}

TEST_F(GithubTriggerTest, ANewerPushIsReleasedAfterAnOlderOne) {
  Start({Shop()});
  WebhookReply a = DeliverSigned(PushBody("acme/shop", "main", kCommitA, kTen));
  ASSERT_EQ(a.http_status, 202) << a.body;
  WebhookReply b = DeliverSigned(PushBody("acme/shop", "main", kCommitB, kEleven));
  EXPECT_EQ(b.http_status, 202) << b.body;
  EXPECT_NE(IdOf(b), 0) << b.body;
  EXPECT_EQ(Releases().size(), 2u);
}

TEST_F(GithubTriggerTest, APushWithoutCommitTimeIsIgnoredOnceTheCurrentReleaseHasOne) {
  Start({Shop()});
  ASSERT_EQ(DeliverSigned(PushBody("acme/shop", "main", kCommitA, kTen)).http_status, 202);
  WebhookReply r = DeliverSigned(PushBody("acme/shop", "main", kCommitB, ""));
  EXPECT_EQ(r.http_status, 202) << r.body;
  EXPECT_TRUE(r.body.contains("ignored")) << r.body;
  EXPECT_EQ(Releases().size(), 1u);
}

// --- downloading the artifact ---

TEST_F(GithubTriggerTest, ARedirectWithinTheArtifactServerIsFollowed) {
  RedirectServer server;
  server.Redirect("/shop/" + std::string(kCommitA) + ".tgz", "/store/a.tgz");
  server.Redirect("/store/a.tgz", server.Url("/blobs/a"));
  server.Serve("/blobs/a", "redirected bytes");
  Start({MakePipeline("shop", "acme/shop", server.Url("/shop/{sha}.tgz"), "shop-secret")});

  WebhookReply r = DeliverSigned(PushBody("acme/shop", "main", kCommitA, kTen));
  ASSERT_EQ(r.http_status, 202) << r.body;
  EXPECT_EQ(AfterTheArtifactCheck(IdOf(r)).sha256, Sha256Hex("redirected bytes"));
}

TEST_F(GithubTriggerTest, ARedirectToAnotherHostIsRefused) {
  RedirectServer server;
  artifacts_.Serve("/elsewhere.tgz", "bytes from another host");
  const std::string port = std::to_string(artifacts_.port());
  server.Redirect("/shop/" + std::string(kCommitA) + ".tgz",
                  "http://localhost:" + port + "/elsewhere.tgz");
  Start({MakePipeline("shop", "acme/shop", server.Url("/shop/{sha}.tgz"), "shop-secret")});

  WebhookReply r = DeliverSigned(PushBody("acme/shop", "main", kCommitA, kTen));
  ASSERT_EQ(r.http_status, 202) << r.body;
  ReleaseRecord failed = AfterTheArtifactCheck(IdOf(r));
  EXPECT_EQ(failed.state, "failed");
  EXPECT_NE(failed.reason.find("redirect to another host refused: http://localhost:" + port),
            std::string::npos)
      << failed.reason;
  EXPECT_EQ(artifacts_.Hits("/elsewhere.tgz"), 0);
}

TEST_F(GithubTriggerTest, ARedirectToAnotherPortOfTheSameHostIsRefused) {
  RedirectServer server;
  artifacts_.Serve("/elsewhere.tgz", "bytes from another port");
  server.Redirect("/shop/" + std::string(kCommitA) + ".tgz", artifacts_.Url("/elsewhere.tgz"));
  Start({MakePipeline("shop", "acme/shop", server.Url("/shop/{sha}.tgz"), "shop-secret")});

  WebhookReply r = DeliverSigned(PushBody("acme/shop", "main", kCommitA, kTen));
  ASSERT_EQ(r.http_status, 202) << r.body;
  ReleaseRecord failed = AfterTheArtifactCheck(IdOf(r));
  EXPECT_EQ(failed.state, "failed");
  EXPECT_NE(failed.reason.find("redirect to another host refused: http://127.0.0.1:" +
                               std::to_string(artifacts_.port())),
            std::string::npos)
      << failed.reason;
  EXPECT_EQ(artifacts_.Hits("/elsewhere.tgz"), 0);
}

TEST_F(GithubTriggerTest, EndlessRedirectsAreRefused) {
  RedirectServer server;
  const std::string path = "/shop/" + std::string(kCommitA) + ".tgz";
  server.Redirect(path, path);
  Start({MakePipeline("shop", "acme/shop", server.Url("/shop/{sha}.tgz"), "shop-secret")});

  WebhookReply r = DeliverSigned(PushBody("acme/shop", "main", kCommitA, kTen));
  ASSERT_EQ(r.http_status, 202) << r.body;
  ReleaseRecord failed = AfterTheArtifactCheck(IdOf(r));
  EXPECT_EQ(failed.state, "failed");
  EXPECT_NE(failed.reason.find("more than 5 redirects"), std::string::npos) << failed.reason;
  EXPECT_EQ(server.Hits(path), 6);  // the first request and five redirects
}

TEST_F(GithubTriggerTest, AnArtifactLargerThanMaxArtifactBytesFailsTheRelease) {
  Pipeline shop = Shop();
  shop.github->max_artifact_bytes = 1000;
  Start({shop});
  artifacts_.Serve(ShopArtifact(kCommitA), std::string(1001, 'x'));

  WebhookReply r = DeliverSigned(PushBody("acme/shop", "main", kCommitA, kTen));
  ASSERT_EQ(r.http_status, 202) << r.body;
  ReleaseRecord failed = AfterTheArtifactCheck(IdOf(r));
  EXPECT_EQ(failed.state, "failed");
  EXPECT_EQ(failed.reason, "artifact " + artifacts_.Url(ShopArtifact(kCommitA)) +
                               " could not be fetched: larger than 1000 bytes "
                               "(trigger.github.max_artifact_bytes)");
}

TEST_F(GithubTriggerTest, AnArtifactOfExactlyMaxArtifactBytesIsAccepted) {
  Pipeline shop = Shop();
  shop.github->max_artifact_bytes = 1000;
  Start({shop});
  artifacts_.Serve(ShopArtifact(kCommitA), std::string(1000, 'x'));
  WebhookReply r = DeliverSigned(PushBody("acme/shop", "main", kCommitA, kTen));
  ASSERT_EQ(r.http_status, 202) << r.body;
  EXPECT_EQ(AfterTheArtifactCheck(IdOf(r)).sha256, Sha256Hex(std::string(1000, 'x')));
}

TEST_F(GithubTriggerTest, StopEndsAWaitAndLeavesTheReleaseWaiting) {
  Start({Shop()});
  WebhookReply r = DeliverSigned(PushBody("acme/shop", "main", kCommitA, kTen));
  ASSERT_EQ(r.http_status, 202) << r.body;
  ASSERT_TRUE(AwaitAsleep(1));
  trigger_->Stop();  // returns once the waiting thread has
  EXPECT_EQ(trigger_->waiting(), 0u);
  EXPECT_EQ(Release(IdOf(r)).state, "waiting_for_artifact");  // the next lockstepd resumes it
  WebhookReply later = DeliverSigned(PushBody("acme/shop", "main", kCommitB, kEleven));
  EXPECT_EQ(later.http_status, 503) << later.body;
  EXPECT_EQ(Releases().size(), 1u);
}

TEST_F(GithubTriggerTest, StopEndsADownloadInProgress) {
  Start({Shop()});
  artifacts_.Serve(ShopArtifact(kCommitA), "slow");
  artifacts_.SetDelay(ShopArtifact(kCommitA), std::chrono::seconds(60));
  WebhookReply r = DeliverSigned(PushBody("acme/shop", "main", kCommitA, kTen));
  ASSERT_EQ(r.http_status, 202) << r.body;
  ASSERT_TRUE(artifacts_.AwaitHits(ShopArtifact(kCommitA), 1, seconds(10)));
  const auto started = std::chrono::steady_clock::now();
  trigger_->Stop();
  EXPECT_LT(std::chrono::steady_clock::now() - started, seconds(10));
  EXPECT_EQ(trigger_->waiting(), 0u);
  EXPECT_EQ(Release(IdOf(r)).state, "waiting_for_artifact");
}

// --- CheckGithubSecrets ---

TEST_F(GithubTriggerTest, CheckGithubSecretsAcceptsReadableSecrets) {
  Pipeline no_trigger = Shop();
  no_trigger.name = "plain";
  no_trigger.github.reset();
  Status st = CheckGithubSecrets({Shop(), Billing(), no_trigger});
  EXPECT_TRUE(st.ok()) << st.ToString();
}

TEST_F(GithubTriggerTest, CheckGithubSecretsNamesThePipelineWhoseSecretFileIsMissing) {
  Pipeline shop = Shop();
  shop.github->secret_file = SecretPath("no-such-secret");
  Status st = CheckGithubSecrets({Billing(), shop});
  ASSERT_FALSE(st.ok());
  EXPECT_EQ(st.code(), StatusCode::kFailedPrecondition);
  EXPECT_NE(st.message().find("pipeline shop (shop.yaml): trigger.github.secret_file \"" +
                              SecretPath("no-such-secret") + "\": cannot read"),
            std::string::npos)
      << st.message();
  EXPECT_EQ(st.message().find("billing"), std::string::npos) << st.message();
}

TEST_F(GithubTriggerTest, CheckGithubSecretsRefusesAnEmptySecretFile) {
  WriteSecret("shop-secret", " \n");
  Status st = CheckGithubSecrets({Shop()});
  ASSERT_FALSE(st.ok());
  EXPECT_NE(st.message().find("pipeline shop (shop.yaml): trigger.github.secret_file \"" +
                              SecretPath("shop-secret") + "\": is empty"),
            std::string::npos)
      << st.message();
}

TEST_F(GithubTriggerTest, CheckGithubSecretsNamesAnUnsetEnvironmentVariable) {
  Pipeline shop = Shop();
  shop.github->secret_file.clear();
  shop.github->secret_env = "LOCKSTEP_TEST_UNSET_GITHUB_SECRET";
  unsetenv("LOCKSTEP_TEST_UNSET_GITHUB_SECRET");
  Status st = CheckGithubSecrets({shop});
  ASSERT_FALSE(st.ok());
  EXPECT_NE(st.message().find("pipeline shop (shop.yaml): trigger.github.secret_env: environment "
                              "variable LOCKSTEP_TEST_UNSET_GITHUB_SECRET is not set"),
            std::string::npos)
      << st.message();
}

TEST_F(GithubTriggerTest, CheckGithubSecretsRefusesATriggerWithoutASecret) {
  Pipeline shop = Shop();
  shop.github->secret_file.clear();
  Status st = CheckGithubSecrets({shop});
  ASSERT_FALSE(st.ok());
  EXPECT_NE(st.message().find("pipeline shop (shop.yaml): trigger.github has neither "
                              "secret_file nor secret_env"),
            std::string::npos)
      << st.message();
}

TEST_F(GithubTriggerTest, ASecretFromTheEnvironmentVerifiesDeliveries) {
  setenv("LOCKSTEP_TEST_GITHUB_SECRET", "from-env", 1);
  Pipeline shop = Shop();
  shop.github->secret_file.clear();
  shop.github->secret_env = "LOCKSTEP_TEST_GITHUB_SECRET";
  Start({shop});
  artifacts_.Serve(ShopArtifact(kCommitA), "app");
  const std::string body = PushBody("acme/shop", "main", kCommitA, kTen);
  EXPECT_EQ(DeliverSigned(body, "s3cret-shop").http_status, 401);
  EXPECT_EQ(DeliverSigned(body, "from-env").http_status, 202);
  unsetenv("LOCKSTEP_TEST_GITHUB_SECRET");
}

}  // namespace
}  // namespace lockstep
