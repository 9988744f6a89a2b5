#include "agents/health/metric_gate.h"

#include <arpa/inet.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <memory>
#include <string>
#include <thread>

#include "agents/artifact/fetch.h"
#include "tests/support/http_server.h"
#include "tests/support/prometheus.h"

namespace lockstep::agent {
namespace {

using ::testing::HasSubstr;
using v1::GateVerdict;

// Bounds every wait on Prometheus; its first scrape alone takes about 5 s.
constexpr std::chrono::seconds kWait{30};

// What the exporter exposes, in the Prometheus text format. Each group belongs to the tests
// that query it; metric names are unique so that tests never see each other's data.
constexpr char kExporterUp[] = "lockstep_test_exporter_up 1\n";
constexpr char kErrorRate[] = "lockstep_test_error_rate 0.031\n";
constexpr char kSuccessRatio[] = "lockstep_test_success_ratio 0.95\n";
constexpr char kLatencyByRegion[] =
    "lockstep_test_latency_seconds{region=\"eu\"} 0.2\n"
    "lockstep_test_latency_seconds{region=\"us\"} 0.9\n"
    "lockstep_test_latency_seconds{region=\"ap\"} 0.4\n";
constexpr char kNaNRatio[] = "lockstep_test_nan_ratio NaN\n";
constexpr char kDivisor[] = "lockstep_test_divisor 0\n";

// One real Prometheus for the whole suite, scraping an exporter the suite serves: starting
// Prometheus and waiting for its first scrape costs about 5 s, too much to pay per test.
class MetricGateTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    CurlGlobalInit();
    exporter_ = std::make_unique<testing::TestHttpServer>();
    // Every group is exposed from the start so that Prometheus's first scrape, which the
    // suite waits for anyway, brings all of them; a test's Publish() then returns at once
    // instead of costing a scrape interval.
    for (const char* lines :
         {kExporterUp, kErrorRate, kSuccessRatio, kLatencyByRegion, kNaNRatio, kDivisor}) {
      exposition_ += lines;
    }
    exporter_->Serve("/metrics", exposition_);
    prometheus_ =
        std::make_unique<testing::TestPrometheus>("127.0.0.1:" + std::to_string(exporter_->port()));
    // Not asserted here: gtest reports every test as skipped after a failure in
    // SetUpTestSuite. SetUp fails each test with the reason instead.
    ready_ = prometheus_->WaitReady(kWait) &&
             prometheus_->WaitForSample("lockstep_test_exporter_up", kWait);
    if (!ready_) startup_failure_ = prometheus_->Explain();
  }

  static void TearDownTestSuite() {
    prometheus_.reset();
    exporter_.reset();
    exposition_.clear();  // --gtest_repeat runs SetUpTestSuite again
    ready_ = false;
    startup_failure_.clear();
  }

  void SetUp() override { ASSERT_TRUE(ready_) << startup_failure_; }

  // Makes sure the exporter exposes `lines` and waits until Prometheus has scraped them, i.e.
  // until `query` returns a series.
  static ::testing::AssertionResult Publish(const std::string& lines, const std::string& query) {
    if (exposition_.find(lines) == std::string::npos) {
      exposition_ += lines;
      exporter_->Serve("/metrics", exposition_);
    }
    if (prometheus_->WaitForSample(query, kWait)) return ::testing::AssertionSuccess();
    return ::testing::AssertionFailure() << prometheus_->Explain();
  }

  static v1::MetricGate Gate(const std::string& query) {
    v1::MetricGate gate;
    gate.set_name("error_rate");
    gate.set_prometheus(prometheus_->url());
    gate.set_query(query);
    gate.set_timeout_ms(5000);
    return gate;
  }
  static v1::MetricGate MaxGate(const std::string& query, double max) {
    v1::MetricGate gate = Gate(query);
    gate.set_has_max(true);
    gate.set_max(max);
    return gate;
  }
  static v1::MetricGate MinGate(const std::string& query, double min) {
    v1::MetricGate gate = Gate(query);
    gate.set_has_min(true);
    gate.set_min(min);
    return gate;
  }

  static inline std::unique_ptr<testing::TestHttpServer> exporter_;
  static inline std::unique_ptr<testing::TestPrometheus> prometheus_;
  static inline std::string exposition_;
  static inline bool ready_ = false;
  static inline std::string startup_failure_;
};

TEST_F(MetricGateTest, ValueUnderMaxPasses) {
  ASSERT_TRUE(Publish(kErrorRate, "lockstep_test_error_rate"));

  GateVerdict v = EvaluateMetricGate(MaxGate("lockstep_test_error_rate", 0.05));

  EXPECT_EQ(v.verdict(), GateVerdict::PASS) << v.detail();
  EXPECT_EQ(v.gate(), "error_rate");
  EXPECT_DOUBLE_EQ(v.value(), 0.031);
  EXPECT_THAT(v.detail(), HasSubstr("0.031 <= max 0.05"));
}

// lockstepd counts a verdict only if Prometheus evaluated the query late enough, so the
// verdict carries the evaluation instant from Prometheus's own answer.
TEST_F(MetricGateTest, AVerdictCarriesTheInstantPrometheusEvaluatedAt) {
  ASSERT_TRUE(Publish(kErrorRate, "lockstep_test_error_rate"));
  auto now_ms = [] {
    return std::chrono::duration_cast<std::chrono::milliseconds>(
               std::chrono::system_clock::now().time_since_epoch())
        .count();
  };
  const int64_t before = now_ms();
  GateVerdict v = EvaluateMetricGate(MaxGate("lockstep_test_error_rate", 0.05));
  const int64_t after = now_ms();
  ASSERT_EQ(v.verdict(), GateVerdict::PASS) << v.detail();
  // Same machine, same clock; Prometheus rounds to the millisecond.
  EXPECT_GE(v.evaluated_at_ms(), before - 1);
  EXPECT_LE(v.evaluated_at_ms(), after + 1);
}

int64_t NowMs() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

// A wave is judged only by evidence gathered after it switched: until Prometheus has scraped
// every target since then, even a clear violation (or a clear pass) is no verdict at all.
TEST_F(MetricGateTest, SamplesScrapedBeforeTheSwitchNeverJudgeTheWave) {
  ASSERT_TRUE(Publish(kErrorRate, "lockstep_test_error_rate"));
  v1::MetricGate pass = MaxGate("lockstep_test_error_rate", 0.05);
  pass.set_evidence_since_ms(NowMs() + 3'600'000);  // a switch no scrape has followed yet
  GateVerdict v = EvaluateMetricGate(pass);
  EXPECT_EQ(v.verdict(), GateVerdict::INCONCLUSIVE) << v.detail();
  EXPECT_THAT(v.detail(), HasSubstr("no sample scraped since the wave switched"));
  v1::MetricGate fail = MaxGate("lockstep_test_error_rate", 0.01);
  fail.set_evidence_since_ms(NowMs() + 3'600'000);
  EXPECT_EQ(EvaluateMetricGate(fail).verdict(), GateVerdict::INCONCLUSIVE);
}

TEST_F(MetricGateTest, SamplesScrapedAfterTheSwitchJudgeIt) {
  ASSERT_TRUE(Publish(kErrorRate, "lockstep_test_error_rate"));
  v1::MetricGate gate = MaxGate("lockstep_test_error_rate", 0.01);
  gate.set_evidence_since_ms(NowMs());
  // The next scrape (every second here) brings the evidence; until then, no verdict.
  GateVerdict v;
  const auto until = std::chrono::steady_clock::now() + kWait;
  do {
    v = EvaluateMetricGate(gate);
    if (v.verdict() != GateVerdict::INCONCLUSIVE) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  } while (std::chrono::steady_clock::now() < until);
  EXPECT_EQ(v.verdict(), GateVerdict::FAIL) << v.detail();
}

// {window} is the time since the switch, never shorter than the gate's interval: a rate()
// right after the switch needs at least two samples.
TEST(MetricGateWindowTest, WindowIsTheTimeSinceTheSwitchButAtLeastTheMinimum) {
  const int64_t now = 1'700'000'000'000;
  EXPECT_EQ(ExpandWindow("rate(x[{window}])", now - 37'400, 5'000, now), "rate(x[37s])");
  EXPECT_EQ(ExpandWindow("rate(x[{window}])", now - 1'000, 5'000, now), "rate(x[5s])");
  EXPECT_EQ(ExpandWindow("a[{window}] / b[{window}]", now - 200, 0, now), "a[1s] / b[1s]");
  EXPECT_EQ(ExpandWindow("no placeholder", now - 1'000, 5'000, now), "no placeholder");
  EXPECT_EQ(ExpandWindow("rate(x[{window}])", 0, 5'000, now), "rate(x[{window}])");
}

TEST_F(MetricGateTest, WindowIsTheTimeSinceTheSwitch) {
  ASSERT_TRUE(Publish(kErrorRate, "lockstep_test_error_rate"));
  v1::MetricGate gate = MaxGate("max_over_time(lockstep_test_error_rate[{window}])", 0.05);
  gate.set_evidence_since_ms(NowMs() - 120'000);  // long enough ago that a scrape followed
  GateVerdict v = EvaluateMetricGate(gate);
  EXPECT_EQ(v.verdict(), GateVerdict::PASS) << v.detail();
}

TEST_F(MetricGateTest, ValueOverMaxFailsReportingTheValue) {
  ASSERT_TRUE(Publish(kErrorRate, "lockstep_test_error_rate"));

  GateVerdict v = EvaluateMetricGate(MaxGate("lockstep_test_error_rate", 0.01));

  EXPECT_EQ(v.verdict(), GateVerdict::FAIL) << v.detail();
  EXPECT_DOUBLE_EQ(v.value(), 0.031);
  EXPECT_THAT(v.detail(), HasSubstr("0.031 > max 0.01"));
}

TEST_F(MetricGateTest, ValueUnderMinFails) {
  ASSERT_TRUE(Publish(kSuccessRatio, "lockstep_test_success_ratio"));

  GateVerdict v = EvaluateMetricGate(MinGate("lockstep_test_success_ratio", 0.99));

  EXPECT_EQ(v.verdict(), GateVerdict::FAIL) << v.detail();
  EXPECT_DOUBLE_EQ(v.value(), 0.95);
  EXPECT_THAT(v.detail(), HasSubstr("0.95 < min 0.99"));
}

TEST_F(MetricGateTest, ValueOverMinPasses) {
  ASSERT_TRUE(Publish(kSuccessRatio, "lockstep_test_success_ratio"));

  GateVerdict v = EvaluateMetricGate(MinGate("lockstep_test_success_ratio", 0.9));

  EXPECT_EQ(v.verdict(), GateVerdict::PASS) << v.detail();
  EXPECT_THAT(v.detail(), HasSubstr("0.95 >= min 0.9"));
}

TEST_F(MetricGateTest, QueryWithNoDataIsInconclusive) {
  GateVerdict v = EvaluateMetricGate(MaxGate("lockstep_test_never_exported", 0.01));

  EXPECT_EQ(v.verdict(), GateVerdict::INCONCLUSIVE) << v.detail();
  EXPECT_EQ(v.value(), 0);
  EXPECT_THAT(v.detail(), HasSubstr("no data for query \"lockstep_test_never_exported\""));
}

TEST_F(MetricGateTest, MalformedQueryIsInconclusiveWithPrometheusError) {
  GateVerdict v = EvaluateMetricGate(MaxGate("rate(lockstep_test_error_rate[5m]", 0.01));

  EXPECT_EQ(v.verdict(), GateVerdict::INCONCLUSIVE) << v.detail();
  EXPECT_THAT(v.detail(), HasSubstr("prometheus returned HTTP 400: "));
  EXPECT_THAT(v.detail(), HasSubstr("parse error"));  // Prometheus's own words
}

TEST_F(MetricGateTest, OneSeriesOverMaxAmongSeveralFails) {
  ASSERT_TRUE(Publish(kLatencyByRegion, "count(lockstep_test_latency_seconds) == 3"));

  GateVerdict v = EvaluateMetricGate(MaxGate("lockstep_test_latency_seconds", 0.5));

  EXPECT_EQ(v.verdict(), GateVerdict::FAIL) << v.detail();
  EXPECT_DOUBLE_EQ(v.value(), 0.9);
  // The verdict and its number only: the series' labels stay in the region (the agent's log).
  EXPECT_EQ(v.detail(), "0.9 > max 0.5 (worst of 3 series)");
}

TEST_F(MetricGateTest, EverySeriesWithinMaxPassesReportingTheWorst) {
  ASSERT_TRUE(Publish(kLatencyByRegion, "count(lockstep_test_latency_seconds) == 3"));

  GateVerdict v = EvaluateMetricGate(MaxGate("lockstep_test_latency_seconds", 1));

  EXPECT_EQ(v.verdict(), GateVerdict::PASS) << v.detail();
  EXPECT_DOUBLE_EQ(v.value(), 0.9);
  EXPECT_THAT(v.detail(), HasSubstr("0.9 <= max 1 (worst of 3 series)"));
}

TEST_F(MetricGateTest, ScalarResultIsCompared) {
  GateVerdict v = EvaluateMetricGate(MaxGate("scalar(vector(42))", 10));

  EXPECT_EQ(v.verdict(), GateVerdict::FAIL) << v.detail();
  EXPECT_DOUBLE_EQ(v.value(), 42);
  EXPECT_THAT(v.detail(), HasSubstr("42 > max 10"));
}

TEST_F(MetricGateTest, NaNValueIsInconclusive) {
  ASSERT_TRUE(Publish(kNaNRatio, "lockstep_test_nan_ratio"));

  GateVerdict v = EvaluateMetricGate(MaxGate("lockstep_test_nan_ratio", 0.01));

  EXPECT_EQ(v.verdict(), GateVerdict::INCONCLUSIVE) << v.detail();
  EXPECT_EQ(v.value(), 0);
  EXPECT_THAT(v.detail(), HasSubstr("returned NaN"));
}

TEST_F(MetricGateTest, InfiniteValueIsInconclusive) {
  // The usual source: a ratio whose denominator is zero.
  ASSERT_TRUE(Publish(kDivisor, "lockstep_test_divisor"));

  GateVerdict v = EvaluateMetricGate(MinGate("1 / lockstep_test_divisor", 0.5));

  EXPECT_EQ(v.verdict(), GateVerdict::INCONCLUSIVE) << v.detail();
  EXPECT_THAT(v.detail(), HasSubstr("returned +Inf"));
}

// Checks that need no Prometheus at all.
TEST(MetricGateOfflineTest, UnreachablePrometheusIsInconclusive) {
  // A socket bound but not listening holds the port and refuses connections, so no other
  // process can take the port while the test runs.
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  ASSERT_GE(fd, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof(addr);
  ASSERT_EQ(::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)), 0);
  ASSERT_EQ(::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len), 0);
  const std::string url = "http://127.0.0.1:" + std::to_string(ntohs(addr.sin_port));
  v1::MetricGate gate;
  gate.set_name("error_rate");
  gate.set_prometheus(url);
  gate.set_query("up");
  gate.set_has_max(true);
  gate.set_max(1);
  gate.set_timeout_ms(2000);

  GateVerdict v = EvaluateMetricGate(gate);
  ::close(fd);

  EXPECT_EQ(v.verdict(), GateVerdict::INCONCLUSIVE) << v.detail();
  EXPECT_EQ(v.gate(), "error_rate");
  EXPECT_THAT(v.detail(), HasSubstr("prometheus " + url + " unreachable: "));
}

TEST(MetricGateOfflineTest, PrometheusSlowerThanTheTimeoutIsInconclusive) {
  // A stand-in that accepts the connection and then says nothing for longer than the gate
  // waits: the real Prometheus cannot be made slow on demand.
  testing::TestHttpServer slow;
  slow.Serve("/api/v1/query", R"({"status":"success","data":{"resultType":"scalar",)"
                              R"("result":[0,"0"]}})");
  slow.SetDelay("/api/v1/query", std::chrono::seconds(10));
  v1::MetricGate gate;
  gate.set_prometheus(slow.Url(""));
  gate.set_query("up");
  gate.set_has_max(true);
  gate.set_max(1);
  gate.set_timeout_ms(200);

  const auto start = std::chrono::steady_clock::now();
  GateVerdict v = EvaluateMetricGate(gate);

  EXPECT_EQ(v.verdict(), GateVerdict::INCONCLUSIVE) << v.detail();
  EXPECT_THAT(v.detail(), HasSubstr("did not answer within 200 ms"));
  EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::seconds(5));
}

TEST(MetricGateOfflineTest, AnswerLargerThan4MiBIsInconclusive) {
  testing::TestHttpServer huge;
  huge.Serve("/api/v1/query", std::string(5 << 20, ' '));
  v1::MetricGate gate;
  gate.set_prometheus(huge.Url(""));
  gate.set_query("up");
  gate.set_has_max(true);
  gate.set_max(1);

  GateVerdict v = EvaluateMetricGate(gate);

  EXPECT_EQ(v.verdict(), GateVerdict::INCONCLUSIVE) << v.detail();
  EXPECT_THAT(v.detail(), HasSubstr("sent more than 4 MiB"));
}

TEST(MetricGateOfflineTest, ProxyErrorPageIsInconclusiveAndItsWordsStayInTheRegion) {
  // A proxy in front of Prometheus answers in its own words and encoding (here Latin-1).
  testing::TestHttpServer proxy;
  proxy.ServeStatus("/api/v1/query", 502,
                    "Passerelle d\xe9"
                    "faillante\n<html>...</html>");
  v1::MetricGate gate;
  gate.set_prometheus(proxy.Url(""));
  gate.set_query("up");
  gate.set_has_max(true);
  gate.set_max(1);

  GateVerdict v = EvaluateMetricGate(gate);

  EXPECT_EQ(v.verdict(), GateVerdict::INCONCLUSIVE) << v.detail();
  EXPECT_EQ(v.detail(), "prometheus returned HTTP 502");
  // lockstepd drops a message whose string fields are not UTF-8.
  v1::GateVerdict received;
  EXPECT_TRUE(received.ParseFromString(v.SerializeAsString()));
}

TEST(MetricGateOfflineTest, GateWithoutThresholdIsInconclusive) {
  v1::MetricGate gate;
  gate.set_prometheus("http://127.0.0.1:9");
  gate.set_query("up");

  GateVerdict v = EvaluateMetricGate(gate);

  EXPECT_EQ(v.verdict(), GateVerdict::INCONCLUSIVE) << v.detail();
  EXPECT_THAT(v.detail(), HasSubstr("neither a max nor a min"));
}

TEST(MetricGateOfflineTest, NonHttpPrometheusUrlIsInconclusive) {
  v1::MetricGate gate;
  gate.set_prometheus("file:///etc/passwd");
  gate.set_query("up");
  gate.set_has_max(true);
  gate.set_max(1);

  GateVerdict v = EvaluateMetricGate(gate);

  EXPECT_EQ(v.verdict(), GateVerdict::INCONCLUSIVE) << v.detail();
  EXPECT_THAT(v.detail(), HasSubstr("must start with http:// or https://"));
}

}  // namespace
}  // namespace lockstep::agent
