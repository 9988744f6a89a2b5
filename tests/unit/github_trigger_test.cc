// The GitHub push trigger end to end, without HTTP in front of it: deliveries go straight to
// GithubPushTrigger::Handle, releases land in a real Engine over an in-memory SQLite store,
// and artifacts are downloaded from real HTTP servers on 127.0.0.1. What is asserted is what
// an attacker or an operator would see: the reply, and the releases in the store.

#include "orchestrator/webhook/github_trigger.h"

#include <gtest/gtest.h>
#include <httplib.h>
#include <stdlib.h>

#include <atomic>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <future>
#include <map>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "common/sha256.h"
#include "orchestrator/engine/history.h"
#include "tests/support/http_server.h"

namespace lockstep {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;
using std::chrono::milliseconds;
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

  static GithubPushTriggerOptions FastOptions() {
    GithubPushTriggerOptions o;
    o.artifact_attempts = 3;
    o.artifact_retry_delay = milliseconds(10);
    o.connect_timeout = milliseconds(2000);
    o.transfer_timeout = milliseconds(20000);
    return o;
  }

  void Start(std::vector<Pipeline> pipelines, GithubPushTriggerOptions options = FastOptions()) {
    engine_ = std::make_unique<Engine>(pipelines, store_.get(), &clock_, &sink_);
    trigger_ = std::make_unique<GithubPushTrigger>(
        pipelines, engine_.get(), store_.get(), SystemClock::Get(), [this] { ++kicks_; }, options);
  }

  WebhookReply Deliver(const std::string& body, const std::string& signature,
                       const std::string& event = "push") {
    return trigger_->Handle(event, signature, "delivery-1", body);
  }
  WebhookReply DeliverSigned(const std::string& body, const std::string& secret = "s3cret-shop") {
    return Deliver(body, GithubSignature(secret, body));
  }

  std::vector<ReleaseRecord> Releases() {
    auto releases = store_->FindReleases(ReleaseQuery::Newest("", 0));
    EXPECT_TRUE(releases.ok()) << releases.status().ToString();
    return releases.ok() ? *releases : std::vector<ReleaseRecord>{};
  }

  fs::path dir_;
  ManualClock clock_;
  NoAgents sink_;
  std::unique_ptr<Store> store_;
  std::unique_ptr<Engine> engine_;
  TestHttpServer artifacts_;
  std::atomic<int> kicks_{0};
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
  EXPECT_EQ(kicks_.load(), 0);
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
  EXPECT_EQ(billing.http_status, 201) << billing.body;
  ASSERT_EQ(Releases().size(), 1u);
  EXPECT_EQ(Releases()[0].pipeline, "billing");
}

TEST_F(GithubTriggerTest, ARotatedSecretIsUsedWithoutARestart) {
  Start({Shop()});
  artifacts_.Serve(ShopArtifact(kCommitA), "app");
  WriteSecret("shop-secret", "rotated\n");
  const std::string body = PushBody("acme/shop", "main", kCommitA, kTen);
  EXPECT_EQ(DeliverSigned(body, "s3cret-shop").http_status, 401);
  EXPECT_EQ(DeliverSigned(body, "rotated").http_status, 201);
}

// --- releases ---

TEST_F(GithubTriggerTest, ASignedPushCreatesAReleaseCarryingTheCommitAndItsTime) {
  Start({Shop()});
  artifacts_.Serve(ShopArtifact(kCommitA), "the app's bytes");
  WebhookReply r = DeliverSigned(PushBody("acme/shop", "main", kCommitA, kTen));
  ASSERT_EQ(r.http_status, 201) << r.body;
  EXPECT_EQ(r.body["release"]["commit"], kCommitA);

  std::vector<ReleaseRecord> releases = Releases();
  ASSERT_EQ(releases.size(), 1u);
  EXPECT_EQ(releases[0].pipeline, "shop");
  EXPECT_EQ(releases[0].commit, kCommitA);
  EXPECT_EQ(releases[0].commit_at, kTenMs);
  EXPECT_EQ(releases[0].version, std::string(kCommitA).substr(0, 12));
  EXPECT_EQ(releases[0].author, "Ada");
  EXPECT_EQ(releases[0].artifact_url, artifacts_.Url(ShopArtifact(kCommitA)));
  EXPECT_EQ(releases[0].sha256, Sha256Hex("the app's bytes"));
  EXPECT_EQ(kicks_.load(), 1);
}

TEST_F(GithubTriggerTest, TheSamePushDeliveredAgainIsADuplicate) {
  Start({Shop()});
  artifacts_.Serve(ShopArtifact(kCommitA), "app");
  const std::string body = PushBody("acme/shop", "main", kCommitA, kTen);
  WebhookReply first = DeliverSigned(body);
  ASSERT_EQ(first.http_status, 201) << first.body;
  WebhookReply again = DeliverSigned(body);
  EXPECT_EQ(again.http_status, 200) << again.body;
  EXPECT_EQ(again.body["duplicate"], first.body["release"]["id"]);
  EXPECT_EQ(Releases().size(), 1u);
}

// The attack: a signed push that made no release (its artifact was not there yet) is recorded
// and delivered again after a newer commit was released.
TEST_F(GithubTriggerTest, AReplayedOlderPushIsIgnoredAndCreatesNoRelease) {
  Start({Shop()});
  const std::string old_push = PushBody("acme/shop", "main", kCommitA, kTen);
  artifacts_.ServeStatus(ShopArtifact(kCommitA), 410);
  EXPECT_EQ(DeliverSigned(old_push).http_status, 502);
  EXPECT_TRUE(Releases().empty());

  artifacts_.Serve(ShopArtifact(kCommitB), "new");
  ASSERT_EQ(DeliverSigned(PushBody("acme/shop", "main", kCommitB, kEleven)).http_status, 201);

  artifacts_.Serve(ShopArtifact(kCommitA), "old");
  WebhookReply replay = DeliverSigned(old_push);
  EXPECT_EQ(replay.http_status, 202) << replay.body;
  EXPECT_NE(replay.body["ignored"].get<std::string>().find(
                "commit aaaaaaaaaaaa of 2026-12-05T10:00:00.000Z is older than the current "
                "release bbbbbbbbbbbb of pipeline shop"),
            std::string::npos)
      << replay.body;
  ASSERT_EQ(Releases().size(), 1u);
  EXPECT_EQ(Releases()[0].commit, kCommitB);
  EXPECT_EQ(artifacts_.Hits(ShopArtifact(kCommitA)), 1);  // the replay downloaded nothing
}

TEST_F(GithubTriggerTest, AnOlderPushIsIgnoredOnceTheNewerReleaseSucceeded) {
  Start({Shop()});
  artifacts_.Serve(ShopArtifact(kCommitB), "new");
  ASSERT_EQ(DeliverSigned(PushBody("acme/shop", "main", kCommitB, kEleven)).http_status, 201);
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
  EXPECT_EQ(Releases().size(), 1u);
}

TEST_F(GithubTriggerTest, ANewerPushIsReleasedAfterAnOlderOne) {
  Start({Shop()});
  artifacts_.Serve(ShopArtifact(kCommitA), "old");
  artifacts_.Serve(ShopArtifact(kCommitB), "new");
  ASSERT_EQ(DeliverSigned(PushBody("acme/shop", "main", kCommitA, kTen)).http_status, 201);
  WebhookReply r = DeliverSigned(PushBody("acme/shop", "main", kCommitB, kEleven));
  EXPECT_EQ(r.http_status, 201) << r.body;
  EXPECT_EQ(Releases().size(), 2u);
}

TEST_F(GithubTriggerTest, APushWithoutCommitTimeIsIgnoredOnceTheCurrentReleaseHasOne) {
  Start({Shop()});
  artifacts_.Serve(ShopArtifact(kCommitA), "a");
  artifacts_.Serve(ShopArtifact(kCommitB), "b");
  ASSERT_EQ(DeliverSigned(PushBody("acme/shop", "main", kCommitA, kTen)).http_status, 201);
  WebhookReply r = DeliverSigned(PushBody("acme/shop", "main", kCommitB, ""));
  EXPECT_EQ(r.http_status, 202) << r.body;
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
  ASSERT_EQ(r.http_status, 201) << r.body;
  EXPECT_EQ(Releases()[0].sha256, Sha256Hex("redirected bytes"));
}

TEST_F(GithubTriggerTest, ARedirectToAnotherHostIsRefused) {
  RedirectServer server;
  artifacts_.Serve("/elsewhere.tgz", "bytes from another host");
  const std::string port = std::to_string(artifacts_.port());
  server.Redirect("/shop/" + std::string(kCommitA) + ".tgz",
                  "http://localhost:" + port + "/elsewhere.tgz");
  Start({MakePipeline("shop", "acme/shop", server.Url("/shop/{sha}.tgz"), "shop-secret")});

  WebhookReply r = DeliverSigned(PushBody("acme/shop", "main", kCommitA, kTen));
  EXPECT_EQ(r.http_status, 502) << r.body;
  EXPECT_NE(r.body["error"].get<std::string>().find(
                "redirect to another host refused: http://localhost:" + port),
            std::string::npos)
      << r.body;
  EXPECT_EQ(artifacts_.Hits("/elsewhere.tgz"), 0);
  EXPECT_TRUE(Releases().empty());
}

TEST_F(GithubTriggerTest, ARedirectToAnotherPortOfTheSameHostIsRefused) {
  RedirectServer server;
  artifacts_.Serve("/elsewhere.tgz", "bytes from another port");
  server.Redirect("/shop/" + std::string(kCommitA) + ".tgz", artifacts_.Url("/elsewhere.tgz"));
  Start({MakePipeline("shop", "acme/shop", server.Url("/shop/{sha}.tgz"), "shop-secret")});

  WebhookReply r = DeliverSigned(PushBody("acme/shop", "main", kCommitA, kTen));
  EXPECT_EQ(r.http_status, 502) << r.body;
  EXPECT_NE(r.body["error"].get<std::string>().find(
                "redirect to another host refused: http://127.0.0.1:" +
                std::to_string(artifacts_.port())),
            std::string::npos)
      << r.body;
  EXPECT_EQ(artifacts_.Hits("/elsewhere.tgz"), 0);
  EXPECT_TRUE(Releases().empty());
}

TEST_F(GithubTriggerTest, EndlessRedirectsAreRefused) {
  RedirectServer server;
  const std::string path = "/shop/" + std::string(kCommitA) + ".tgz";
  server.Redirect(path, path);
  Start({MakePipeline("shop", "acme/shop", server.Url("/shop/{sha}.tgz"), "shop-secret")});

  WebhookReply r = DeliverSigned(PushBody("acme/shop", "main", kCommitA, kTen));
  EXPECT_EQ(r.http_status, 502) << r.body;
  EXPECT_NE(r.body["error"].get<std::string>().find("more than 5 redirects"), std::string::npos)
      << r.body;
  EXPECT_EQ(server.Hits(path), 6);  // the first request and five redirects
  EXPECT_TRUE(Releases().empty());
}

TEST_F(GithubTriggerTest, AnArtifactLargerThanMaxArtifactBytesIsRefused) {
  Pipeline shop = Shop();
  shop.github->max_artifact_bytes = 1000;
  Start({shop});
  artifacts_.Serve(ShopArtifact(kCommitA), std::string(1001, 'x'));

  WebhookReply r = DeliverSigned(PushBody("acme/shop", "main", kCommitA, kTen));
  EXPECT_EQ(r.http_status, 502) << r.body;
  EXPECT_NE(r.body["error"].get<std::string>().find(
                "larger than 1000 bytes (trigger.github.max_artifact_bytes)"),
            std::string::npos)
      << r.body;
  EXPECT_TRUE(Releases().empty());
}

TEST_F(GithubTriggerTest, AnArtifactOfExactlyMaxArtifactBytesIsAccepted) {
  Pipeline shop = Shop();
  shop.github->max_artifact_bytes = 1000;
  Start({shop});
  artifacts_.Serve(ShopArtifact(kCommitA), std::string(1000, 'x'));
  WebhookReply r = DeliverSigned(PushBody("acme/shop", "main", kCommitA, kTen));
  EXPECT_EQ(r.http_status, 201) << r.body;
}

TEST_F(GithubTriggerTest, WaitingForTheArtifactIsBounded) {
  Start({Shop()});  // three attempts
  WebhookReply r = DeliverSigned(PushBody("acme/shop", "main", kCommitA, kTen));
  EXPECT_EQ(r.http_status, 504) << r.body;
  EXPECT_EQ(artifacts_.Hits(ShopArtifact(kCommitA)), 3);
  EXPECT_TRUE(Releases().empty());
}

TEST_F(GithubTriggerTest, AnArtifactPublishedWhileWaitingIsReleased) {
  GithubPushTriggerOptions options = FastOptions();
  options.artifact_attempts = 1000;
  Start({Shop()}, options);
  auto reply = std::async(std::launch::async, [&] {
    return DeliverSigned(PushBody("acme/shop", "main", kCommitA, kTen));
  });
  for (int i = 0; i < 10000 && artifacts_.Hits(ShopArtifact(kCommitA)) == 0; ++i) {
    std::this_thread::sleep_for(milliseconds(1));
  }
  artifacts_.Serve(ShopArtifact(kCommitA), "late");
  ASSERT_EQ(reply.wait_for(std::chrono::seconds(30)), std::future_status::ready);
  WebhookReply r = reply.get();
  EXPECT_EQ(r.http_status, 201) << r.body;
  EXPECT_EQ(Releases()[0].sha256, Sha256Hex("late"));
}

TEST_F(GithubTriggerTest, StopEndsAWaitForTheArtifact) {
  GithubPushTriggerOptions options = FastOptions();
  options.artifact_attempts = 1'000'000;
  Start({Shop()}, options);
  auto reply = std::async(std::launch::async, [&] {
    return DeliverSigned(PushBody("acme/shop", "main", kCommitA, kTen));
  });
  for (int i = 0; i < 10000 && artifacts_.Hits(ShopArtifact(kCommitA)) < 2; ++i) {
    std::this_thread::sleep_for(milliseconds(1));
  }
  trigger_->Stop();
  ASSERT_EQ(reply.wait_for(std::chrono::seconds(10)), std::future_status::ready);
  EXPECT_EQ(reply.get().http_status, 503);
  EXPECT_TRUE(Releases().empty());
}

TEST_F(GithubTriggerTest, StopEndsADownloadInProgress) {
  Start({Shop()});
  artifacts_.Serve(ShopArtifact(kCommitA), "slow");
  artifacts_.SetDelay(ShopArtifact(kCommitA), std::chrono::seconds(60));
  auto reply = std::async(std::launch::async, [&] {
    return DeliverSigned(PushBody("acme/shop", "main", kCommitA, kTen));
  });
  for (int i = 0; i < 10000 && artifacts_.Hits(ShopArtifact(kCommitA)) == 0; ++i) {
    std::this_thread::sleep_for(milliseconds(1));
  }
  trigger_->Stop();
  ASSERT_EQ(reply.wait_for(std::chrono::seconds(10)), std::future_status::ready);
  EXPECT_EQ(reply.get().http_status, 503);
  EXPECT_TRUE(Releases().empty());
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
  EXPECT_EQ(DeliverSigned(body, "from-env").http_status, 201);
  unsetenv("LOCKSTEP_TEST_GITHUB_SECRET");
}

}  // namespace
}  // namespace lockstep
