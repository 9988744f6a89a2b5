#include "orchestrator/notify/notifier.h"

#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <functional>
#include <future>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "tests/support/http_server.h"

namespace lockstep {
namespace {

using std::chrono::milliseconds;
using Clock = std::chrono::steady_clock;

// Upper bound for every wait on the worker; the behaviour under test takes milliseconds.
constexpr milliseconds kPatience{5000};

// Polls `done` until it holds or kPatience passes. The worker runs on its own thread and
// exposes progress only through stats(), so a bounded poll is the observable way to wait.
bool Eventually(const std::function<bool()>& done) {
  const auto give_up = Clock::now() + kPatience;
  while (!done()) {
    if (Clock::now() > give_up) return false;
    std::this_thread::sleep_for(milliseconds(2));
  }
  return true;
}

// A loopback port that refuses connections: bound but not listening, so no other process can
// take it while the test runs.
class RefusingPort {
 public:
  RefusingPort() {
    fd_ = ::socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (fd_ < 0 || ::bind(fd_, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) return;
    socklen_t len = sizeof(addr);
    if (::getsockname(fd_, reinterpret_cast<sockaddr*>(&addr), &len) == 0) {
      port_ = ntohs(addr.sin_port);
    }
  }
  ~RefusingPort() {
    if (fd_ >= 0) ::close(fd_);
  }
  RefusingPort(const RefusingPort&) = delete;
  RefusingPort& operator=(const RefusingPort&) = delete;
  int port() const { return port_; }  // 0 if the socket could not be set up

 private:
  int fd_ = -1;
  int port_ = 0;
};

class NotifierTest : public ::testing::Test {
 protected:
  // Small backoffs keep retries within milliseconds.
  static NotifierOptions Fast() {
    NotifierOptions options;
    options.attempts = 3;
    options.initial_backoff = milliseconds(10);
    options.max_backoff = milliseconds(40);
    options.timeout = milliseconds(2000);
    return options;
  }

  Notification To(const std::string& url, const std::string& text) {
    return Notification{url, "wave_passed",
                        NotificationBody("wave_passed", text, {{"pipeline", "web"}})};
  }

  void Reply(const std::string& path, int status) {
    server_.OnPost(path, [status](const std::string&) { return status; });
  }

  testing::TestHttpServer server_;
};

TEST_F(NotifierTest, PostArrivesAsJsonWithTextAndEvent) {
  Reply("/hook", 200);
  Notifier notifier(Fast());

  notifier.Post(Notification{
      server_.Url("/hook"), "release_started",
      NotificationBody("release_started", "web v42: rollout started", {{"release", "v42"}})});

  ASSERT_TRUE(notifier.Drain(kPatience));
  const auto posts = server_.Posts("/hook");
  ASSERT_EQ(posts.size(), 1u);
  EXPECT_EQ(posts[0].content_type, "application/json");
  const auto body = nlohmann::json::parse(posts[0].body);
  EXPECT_EQ(body["text"], "web v42: rollout started");
  EXPECT_EQ(body["event"], "release_started");
  EXPECT_EQ(body["release"], "v42");
  EXPECT_EQ(notifier.stats().delivered, 1u);
}

TEST_F(NotifierTest, BodyTextAndEventWinOverFieldsOfTheSameName) {
  const auto body = NotificationBody("failed", "web v42 failed",
                                     {{"text", "other"}, {"event", "other"}, {"wave", 2}});

  EXPECT_EQ(body["text"], "web v42 failed");
  EXPECT_EQ(body["event"], "failed");
  EXPECT_EQ(body["wave"], 2);
}

TEST_F(NotifierTest, ServerErrorsAreRetriedUntilAccepted) {
  auto calls = std::make_shared<std::atomic<int>>(0);
  server_.OnPost("/hook", [calls](const std::string&) { return ++*calls <= 2 ? 500 : 200; });
  NotifierOptions options = Fast();
  options.attempts = 5;
  Notifier notifier(options);

  notifier.Post(To(server_.Url("/hook"), "wave 1 passed"));

  ASSERT_TRUE(notifier.Drain(kPatience));
  EXPECT_EQ(server_.Hits("/hook"), 3);
  const auto stats = notifier.stats();
  EXPECT_EQ(stats.delivered, 1u);
  EXPECT_EQ(stats.retried, 2u);
  EXPECT_EQ(stats.failed, 0u);
}

TEST_F(NotifierTest, TooManyRequestsIsRetried) {
  auto calls = std::make_shared<std::atomic<int>>(0);
  server_.OnPost("/hook", [calls](const std::string&) { return ++*calls == 1 ? 429 : 200; });
  Notifier notifier(Fast());

  notifier.Post(To(server_.Url("/hook"), "wave 1 passed"));

  ASSERT_TRUE(notifier.Drain(kPatience));
  EXPECT_EQ(server_.Hits("/hook"), 2);
  EXPECT_EQ(notifier.stats().delivered, 1u);
  EXPECT_EQ(notifier.stats().retried, 1u);
}

TEST_F(NotifierTest, ClientErrorIsNotRetried) {
  Reply("/hook", 400);
  Notifier notifier(Fast());

  notifier.Post(To(server_.Url("/hook"), "wave 1 passed"));

  ASSERT_TRUE(notifier.Drain(kPatience));
  EXPECT_EQ(server_.Hits("/hook"), 1);
  const auto stats = notifier.stats();
  EXPECT_EQ(stats.failed, 1u);
  EXPECT_EQ(stats.retried, 0u);
  EXPECT_EQ(stats.delivered, 0u);
}

TEST_F(NotifierTest, UnreachableReceiverFailsAfterEveryAttempt) {
  RefusingPort refusing;
  ASSERT_NE(refusing.port(), 0);
  Notifier notifier(Fast());

  notifier.Post(
      To("http://127.0.0.1:" + std::to_string(refusing.port()) + "/hook", "wave 1 passed"));

  ASSERT_TRUE(notifier.Drain(kPatience));
  const auto stats = notifier.stats();
  EXPECT_EQ(stats.failed, 1u);
  EXPECT_EQ(stats.retried, 2u);  // Fast().attempts == 3
  EXPECT_EQ(stats.delivered, 0u);
}

TEST_F(NotifierTest, PostReturnsImmediatelyWhileTheReceiverIsSlow) {
  Reply("/slow", 200);
  server_.SetDelay("/slow", milliseconds(2000));
  NotifierOptions options = Fast();
  options.attempts = 1;
  options.timeout = milliseconds(500);  // so that the destructor does not wait out the 2 s
  Notifier notifier(options);
  notifier.Post(To(server_.Url("/slow"), "first"));
  ASSERT_TRUE(Eventually([&] { return server_.Hits("/slow") == 1; }));  // now in flight

  const auto start = Clock::now();
  notifier.Post(To(server_.Url("/slow"), "second"));
  const auto took = Clock::now() - start;

  EXPECT_LT(took, milliseconds(100));
}

TEST_F(NotifierTest, FullQueueDropsTheOldestAndCountsIt) {
  // The first POST is held in flight until released, so the rest pile up in the queue.
  auto arrived = std::make_shared<std::promise<void>>();
  auto release = std::make_shared<std::promise<void>>();
  auto held = std::make_shared<std::atomic<bool>>(false);
  std::shared_future<void> released = release->get_future().share();
  server_.OnPost("/hook", [arrived, released, held](const std::string&) {
    if (!held->exchange(true)) {
      arrived->set_value();
      released.wait_for(kPatience);
    }
    return 200;
  });
  NotifierOptions options = Fast();
  options.max_queue = 2;
  Notifier notifier(options);
  notifier.Post(To(server_.Url("/hook"), "a"));
  ASSERT_EQ(arrived->get_future().wait_for(kPatience), std::future_status::ready);

  for (const char* text : {"b", "c", "d", "e"}) notifier.Post(To(server_.Url("/hook"), text));
  const uint64_t dropped = notifier.stats().dropped;
  release->set_value();

  EXPECT_EQ(dropped, 2u);
  ASSERT_TRUE(notifier.Drain(kPatience));
  std::vector<std::string> texts;
  for (const auto& post : server_.Posts("/hook")) {
    texts.push_back(nlohmann::json::parse(post.body)["text"].get<std::string>());
  }
  EXPECT_EQ(texts, (std::vector<std::string>{"a", "d", "e"}));
  EXPECT_EQ(notifier.stats().delivered, 3u);
}

TEST_F(NotifierTest, NotificationWaitingForItsRetryDoesNotDelayOthers) {
  Reply("/down", 503);
  Reply("/up", 200);
  NotifierOptions options = Fast();
  options.initial_backoff = std::chrono::hours(1);
  options.max_backoff = std::chrono::hours(1);
  Notifier notifier(options);
  notifier.Post(To(server_.Url("/down"), "to a receiver that is down"));
  ASSERT_TRUE(Eventually([&] { return notifier.stats().retried == 1; }));

  notifier.Post(To(server_.Url("/up"), "to a receiver that is up"));

  EXPECT_TRUE(Eventually([&] { return notifier.stats().delivered == 1; }));
  EXPECT_EQ(server_.Hits("/down"), 1);
}

TEST_F(NotifierTest, DestructorReturnsPromptlyWhileARetryIsScheduled) {
  Reply("/hook", 503);
  NotifierOptions options = Fast();
  options.initial_backoff = std::chrono::hours(1);
  options.max_backoff = std::chrono::hours(1);
  auto notifier = std::make_unique<Notifier>(options);
  notifier->Post(To(server_.Url("/hook"), "wave 1 passed"));
  ASSERT_TRUE(Eventually([&] { return notifier->stats().retried == 1; }));

  const auto start = Clock::now();
  notifier.reset();
  const auto took = Clock::now() - start;

  EXPECT_LT(took, milliseconds(1000));
  EXPECT_EQ(server_.Hits("/hook"), 1);
}

TEST_F(NotifierTest, NonHttpUrlFailsWithoutARequest) {
  Reply("/hook", 200);
  Notifier notifier(Fast());

  notifier.Post(To("ftp://127.0.0.1:" + std::to_string(server_.port()) + "/hook", "x"));

  EXPECT_EQ(notifier.stats().failed, 1u);
  EXPECT_TRUE(notifier.Drain(kPatience));
  EXPECT_EQ(server_.Hits("/hook"), 0);
  EXPECT_EQ(notifier.stats().delivered, 0u);
}

TEST_F(NotifierTest, PayloadWithoutTextFailsWithoutARequest) {
  Reply("/hook", 200);
  Notifier notifier(Fast());

  notifier.Post(Notification{server_.Url("/hook"), "succeeded", {{"event", "succeeded"}}});

  EXPECT_EQ(notifier.stats().failed, 1u);
  EXPECT_TRUE(notifier.Drain(kPatience));
  EXPECT_EQ(server_.Hits("/hook"), 0);
}

}  // namespace
}  // namespace lockstep
