#include "orchestrator/notify/notifier.h"

#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <future>
#include <memory>
#include <string>
#include <vector>

#include "common/clock.h"
#include "tests/support/http_server.h"

namespace lockstep {
namespace {

using std::chrono::hours;
using std::chrono::milliseconds;
using std::chrono::seconds;

// Upper bound, in real time, for every wait on the worker; the behaviour under test takes
// milliseconds.
constexpr milliseconds kPatience{5000};

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

// The notifier runs on a ManualClock: a backoff passes only when a test advances the clock,
// and a test advances it only while the worker sleeps (ManualClock::AwaitSleepers), so every
// step is deterministic and no test sleeps. The receiver is a real HTTP server on loopback.
class NotifierTest : public ::testing::Test {
 protected:
  // Backoffs of the clock's time, from 10 ms doubling to at most 40 ms.
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

  // Waits until the worker sleeps: it sent everything due and waits for a retry or a Post.
  bool WorkerAsleep() { return clock_.AwaitSleepers(1, kPatience); }

  // Waits until the worker sleeps, then says whether it is idle: nothing waiting for a retry,
  // nothing being sent.
  bool Settled(Notifier& notifier) { return WorkerAsleep() && notifier.Drain(milliseconds(0)); }

  // Lets `retries` retries happen, one at a time: each time the worker waits for one, time
  // moves by `backoff` (no less than the wait drawn for it).
  void RunRetries(int retries, milliseconds backoff) {
    for (int i = 0; i < retries; ++i) {
      ASSERT_TRUE(WorkerAsleep()) << "before retry " << i + 1;
      clock_.Advance(backoff);
    }
  }

  // Whether `call` ends within kPatience of real time. If it does not, time moves by `unblock`
  // so that it ends (and the test with it) all the same.
  template <typename T>
  bool EndsWithoutTime(std::future<T>& call, milliseconds unblock) {
    if (call.wait_for(kPatience) == std::future_status::ready) return true;
    clock_.Advance(unblock);
    return false;
  }

  ManualClock clock_;
  testing::TestHttpServer server_;
};

TEST_F(NotifierTest, PostArrivesAsJsonWithTextAndEvent) {
  Reply("/hook", 200);
  Notifier notifier(Fast(), &clock_);

  notifier.Post(Notification{
      server_.Url("/hook"), "release_started",
      NotificationBody("release_started", "web v42: rollout started", {{"release", "v42"}})});

  ASSERT_TRUE(Settled(notifier));
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
  Notifier notifier(options, &clock_);

  notifier.Post(To(server_.Url("/hook"), "wave 1 passed"));
  RunRetries(2, options.max_backoff);

  ASSERT_TRUE(Settled(notifier));
  EXPECT_EQ(server_.Hits("/hook"), 3);
  const auto stats = notifier.stats();
  EXPECT_EQ(stats.delivered, 1u);
  EXPECT_EQ(stats.retried, 2u);
  EXPECT_EQ(stats.failed, 0u);
}

// A retry waits between half and all of its backoff (jitter), and the backoff doubles: a
// retry comes neither before the shortest wait it may have drawn nor after the longest.
TEST_F(NotifierTest, ARetryComesOnlyOnceItsBackoffHasPassedAndTheBackoffDoubles) {
  auto calls = std::make_shared<std::atomic<int>>(0);
  server_.OnPost("/hook", [calls](const std::string&) { return ++*calls <= 2 ? 503 : 200; });
  NotifierOptions options = Fast();
  options.initial_backoff = seconds(10);
  options.max_backoff = seconds(60);
  Notifier notifier(options, &clock_);
  notifier.Post(To(server_.Url("/hook"), "wave 1 passed"));
  ASSERT_TRUE(WorkerAsleep());
  ASSERT_EQ(server_.Hits("/hook"), 1);

  // The first retry waits 5 to 10 s.
  clock_.Advance(seconds(5) - milliseconds(1));
  ASSERT_TRUE(WorkerAsleep());
  EXPECT_EQ(server_.Hits("/hook"), 1) << "retried before the shortest backoff passed";
  clock_.Advance(seconds(5) + milliseconds(1));
  ASSERT_TRUE(WorkerAsleep());
  EXPECT_EQ(server_.Hits("/hook"), 2) << "not retried once the longest backoff passed";

  // The second waits twice as long: 10 to 20 s.
  clock_.Advance(seconds(10) - milliseconds(1));
  ASSERT_TRUE(WorkerAsleep());
  EXPECT_EQ(server_.Hits("/hook"), 2) << "retried before the shortest backoff passed";
  clock_.Advance(seconds(10) + milliseconds(1));
  ASSERT_TRUE(Settled(notifier));
  EXPECT_EQ(server_.Hits("/hook"), 3) << "not retried once the longest backoff passed";
  EXPECT_EQ(notifier.stats().delivered, 1u);
  EXPECT_EQ(notifier.stats().retried, 2u);
}

TEST_F(NotifierTest, TooManyRequestsIsRetried) {
  auto calls = std::make_shared<std::atomic<int>>(0);
  server_.OnPost("/hook", [calls](const std::string&) { return ++*calls == 1 ? 429 : 200; });
  Notifier notifier(Fast(), &clock_);

  notifier.Post(To(server_.Url("/hook"), "wave 1 passed"));
  RunRetries(1, Fast().max_backoff);

  ASSERT_TRUE(Settled(notifier));
  EXPECT_EQ(server_.Hits("/hook"), 2);
  EXPECT_EQ(notifier.stats().delivered, 1u);
  EXPECT_EQ(notifier.stats().retried, 1u);
}

TEST_F(NotifierTest, ClientErrorIsNotRetried) {
  Reply("/hook", 400);
  Notifier notifier(Fast(), &clock_);

  notifier.Post(To(server_.Url("/hook"), "wave 1 passed"));

  ASSERT_TRUE(Settled(notifier));
  EXPECT_EQ(server_.Hits("/hook"), 1);
  const auto stats = notifier.stats();
  EXPECT_EQ(stats.failed, 1u);
  EXPECT_EQ(stats.retried, 0u);
  EXPECT_EQ(stats.delivered, 0u);
}

TEST_F(NotifierTest, UnreachableReceiverFailsAfterEveryAttempt) {
  RefusingPort refusing;
  ASSERT_NE(refusing.port(), 0);
  Notifier notifier(Fast(), &clock_);

  notifier.Post(
      To("http://127.0.0.1:" + std::to_string(refusing.port()) + "/hook", "wave 1 passed"));
  RunRetries(2, Fast().max_backoff);

  ASSERT_TRUE(Settled(notifier));
  const auto stats = notifier.stats();
  EXPECT_EQ(stats.failed, 1u);
  EXPECT_EQ(stats.retried, 2u);  // Fast().attempts == 3
  EXPECT_EQ(stats.delivered, 0u);
}

TEST_F(NotifierTest, PostReturnsImmediatelyWhileTheReceiverIsSlow) {
  // The receiver holds every POST until released (at most kPatience).
  auto release = std::make_shared<std::promise<void>>();
  std::shared_future<void> released = release->get_future().share();
  auto answered = std::make_shared<std::atomic<bool>>(false);
  server_.OnPost("/slow", [released, answered](const std::string&) {
    released.wait_for(kPatience);
    *answered = true;
    return 200;
  });
  Notifier notifier(Fast(), &clock_);
  notifier.Post(To(server_.Url("/slow"), "first"));
  ASSERT_TRUE(server_.AwaitHits("/slow", 1, kPatience));  // now in flight

  notifier.Post(To(server_.Url("/slow"), "second"));

  // Post returned while the first POST was still unanswered: it did not wait for it.
  EXPECT_FALSE(answered->load());
  release->set_value();
  ASSERT_TRUE(Settled(notifier));
  EXPECT_EQ(notifier.stats().delivered, 2u);
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
  Notifier notifier(options, &clock_);
  notifier.Post(To(server_.Url("/hook"), "a"));
  ASSERT_EQ(arrived->get_future().wait_for(kPatience), std::future_status::ready);

  for (const char* text : {"b", "c", "d", "e"}) notifier.Post(To(server_.Url("/hook"), text));
  const uint64_t dropped = notifier.stats().dropped;
  release->set_value();

  EXPECT_EQ(dropped, 2u);
  ASSERT_TRUE(Settled(notifier));
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
  options.initial_backoff = hours(1);
  options.max_backoff = hours(1);
  Notifier notifier(options, &clock_);
  notifier.Post(To(server_.Url("/down"), "to a receiver that is down"));
  ASSERT_TRUE(WorkerAsleep());
  ASSERT_EQ(notifier.stats().retried, 1u);

  notifier.Post(To(server_.Url("/up"), "to a receiver that is up"));

  ASSERT_TRUE(WorkerAsleep());
  EXPECT_EQ(notifier.stats().delivered, 1u);
  EXPECT_EQ(server_.Hits("/down"), 1);
}

TEST_F(NotifierTest, DrainWaitsOnTheClockForARetryDueWithinItsTimeout) {
  auto calls = std::make_shared<std::atomic<int>>(0);
  server_.OnPost("/hook", [calls](const std::string&) { return ++*calls == 1 ? 503 : 200; });
  Notifier notifier(Fast(), &clock_);
  notifier.Post(To(server_.Url("/hook"), "wave 1 passed"));
  ASSERT_TRUE(WorkerAsleep());

  auto drained = std::async(std::launch::async, [&] { return notifier.Drain(seconds(1)); });
  ASSERT_TRUE(clock_.AwaitSleepers(2, kPatience));  // the worker, and Drain waiting for it
  clock_.Advance(Fast().max_backoff);

  ASSERT_TRUE(EndsWithoutTime(drained, seconds(1)));
  EXPECT_TRUE(drained.get());
  EXPECT_EQ(server_.Hits("/hook"), 2);
}

TEST_F(NotifierTest, DrainGivesUpAtOnceWhenTheNextRetryIsDueAfterItsTimeout) {
  Reply("/hook", 503);
  NotifierOptions options = Fast();
  options.initial_backoff = hours(1);
  options.max_backoff = hours(1);
  Notifier notifier(options, &clock_);
  notifier.Post(To(server_.Url("/hook"), "wave 1 passed"));
  ASSERT_TRUE(WorkerAsleep());

  // Time stands still: Drain ends only because it sees that the retry comes too late.
  auto drained = std::async(std::launch::async, [&] { return notifier.Drain(seconds(1)); });

  ASSERT_TRUE(EndsWithoutTime(drained, seconds(1))) << "Drain waited out its timeout";
  EXPECT_FALSE(drained.get());
  EXPECT_EQ(server_.Hits("/hook"), 1);
}

TEST_F(NotifierTest, DestructorReturnsPromptlyWhileARetryIsScheduled) {
  Reply("/hook", 503);
  NotifierOptions options = Fast();
  options.initial_backoff = hours(1);
  options.max_backoff = hours(1);
  auto notifier = std::make_unique<Notifier>(options, &clock_);
  notifier->Post(To(server_.Url("/hook"), "wave 1 passed"));
  ASSERT_TRUE(WorkerAsleep());
  ASSERT_EQ(notifier->stats().retried, 1u);

  // Time stands still: the destructor ends only if it does not wait for the retry.
  auto destroyed = std::async(std::launch::async, [&] { notifier.reset(); });

  EXPECT_TRUE(EndsWithoutTime(destroyed, hours(1)));
  EXPECT_EQ(server_.Hits("/hook"), 1);
}

TEST_F(NotifierTest, NonHttpUrlFailsWithoutARequest) {
  Reply("/hook", 200);
  Notifier notifier(Fast(), &clock_);

  notifier.Post(To("ftp://127.0.0.1:" + std::to_string(server_.port()) + "/hook", "x"));

  EXPECT_EQ(notifier.stats().failed, 1u);
  EXPECT_TRUE(Settled(notifier));
  EXPECT_EQ(server_.Hits("/hook"), 0);
  EXPECT_EQ(notifier.stats().delivered, 0u);
}

TEST_F(NotifierTest, PayloadWithoutTextFailsWithoutARequest) {
  Reply("/hook", 200);
  Notifier notifier(Fast(), &clock_);

  notifier.Post(Notification{server_.Url("/hook"), "succeeded", {{"event", "succeeded"}}});

  EXPECT_EQ(notifier.stats().failed, 1u);
  EXPECT_TRUE(Settled(notifier));
  EXPECT_EQ(server_.Hits("/hook"), 0);
}

}  // namespace
}  // namespace lockstep
