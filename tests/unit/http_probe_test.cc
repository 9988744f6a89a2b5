#include "agents/health/http_probe.h"

#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <string>
#include <vector>

#include "agents/artifact/fetch.h"
#include "tests/support/http_server.h"

namespace lockstep::agent {
namespace {

using std::chrono::milliseconds;

class HttpProbeTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() { CurlGlobalInit(); }

  v1::HttpProbe Probe(const std::string& url, int expect_status, int attempts) {
    v1::HttpProbe probe;
    probe.set_url(url);
    probe.set_expect_status(expect_status);
    probe.set_attempts(attempts);
    probe.set_timeout_ms(2000);
    probe.set_interval_ms(250);
    return probe;
  }

  // Records waits instead of sleeping: the tests check the schedule, not wall time.
  std::function<void(milliseconds)> RecordSleeps() {
    return [this](milliseconds d) { sleeps_.push_back(d); };
  }

  testing::TestHttpServer server_;
  std::vector<milliseconds> sleeps_;
};

TEST_F(HttpProbeTest, ExpectedStatusPasses) {
  server_.ServeStatus("/healthz", 204);

  Status st = RunHttpProbe(Probe(server_.Url("/healthz"), 204, 3), RecordSleeps());

  EXPECT_TRUE(st.ok()) << st.ToString();
  EXPECT_EQ(server_.Hits("/healthz"), 1);
  EXPECT_TRUE(sleeps_.empty());
}

TEST_F(HttpProbeTest, UnsetExpectedStatusMeans200) {
  server_.Serve("/healthz", "ok");

  Status st = RunHttpProbe(Probe(server_.Url("/healthz"), 0, 1), RecordSleeps());

  EXPECT_TRUE(st.ok()) << st.ToString();
}

TEST_F(HttpProbeTest, WrongStatusFailsAfterEveryAttempt) {
  server_.ServeStatus("/healthz", 503, "warming up");

  Status st = RunHttpProbe(Probe(server_.Url("/healthz"), 200, 3), RecordSleeps());

  EXPECT_EQ(st.code(), StatusCode::kUnavailable) << st.ToString();
  EXPECT_NE(st.message().find(server_.Url("/healthz")), std::string::npos) << st.message();
  EXPECT_NE(st.message().find("200"), std::string::npos) << st.message();
  EXPECT_NE(st.message().find("503"), std::string::npos) << st.message();
  EXPECT_NE(st.message().find("3 attempts"), std::string::npos) << st.message();
  EXPECT_EQ(server_.Hits("/healthz"), 3);
  EXPECT_EQ(sleeps_, (std::vector<milliseconds>{milliseconds(250), milliseconds(250)}));
}

TEST_F(HttpProbeTest, UnreachablePortFails) {
  // A socket bound but not listening holds the port and refuses connections, so no other
  // process can take the port while the test runs.
  int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  ASSERT_GE(fd, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = 0;
  ASSERT_EQ(::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)), 0);
  socklen_t len = sizeof(addr);
  ASSERT_EQ(::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len), 0);
  const std::string url = "http://127.0.0.1:" + std::to_string(ntohs(addr.sin_port)) + "/healthz";

  Status st = RunHttpProbe(Probe(url, 200, 2), RecordSleeps());
  ::close(fd);

  EXPECT_EQ(st.code(), StatusCode::kUnavailable) << st.ToString();
  EXPECT_NE(st.message().find(url), std::string::npos) << st.message();
  EXPECT_EQ(sleeps_.size(), 1u);
}

}  // namespace
}  // namespace lockstep::agent
