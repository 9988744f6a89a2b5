// Regional artifact mirrors end to end: the real lockstepd and agents, the fleet's artifact
// server as the origin, and a real nginx per region as its caching mirror (tests/integration/
// nginx.h), all on loopback. What is counted: requests at the origin (its own counter), what
// each nginx answered and whether from its cache (its access log), and what lockstepd reports
// on /metrics.

#include <gtest/gtest.h>
#include <httplib.h>

#include <cstdio>
#include <cstdlib>
#include <map>
#include <sstream>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "tests/integration/fleet.h"
#include "tests/integration/nginx.h"

namespace lockstep::testing {
namespace {

using nlohmann::json;
using std::chrono::seconds;

constexpr char kFetches[] = "lockstep_artifact_fetches_total";
constexpr char kFetchBytes[] = "lockstep_artifact_fetch_bytes_total";
constexpr char kMirrorFailures[] = "lockstep_artifact_mirror_failures_total";

// Region and the prefix of its hosts' names.
const std::vector<std::pair<std::string, std::string>> kRegions = {
    {"us-east-1", "use1"}, {"eu-west-1", "euw1"}, {"ap-southeast-2", "apse2"}};

std::string PipelineYaml(const std::map<std::string, std::string>& mirrors) {
  std::string yaml =
      "pipeline: monolith\n"
      "regions: [us-east-1, eu-west-1, ap-southeast-2]\n"
      "artifacts:\n"
      "  mirrors:\n";
  for (const auto& [region, base] : mirrors) yaml += "    " + region + ": \"" + base + "\"\n";
  yaml += R"(waves:
  - name: canary
    select: {per_region: 1}
  - name: all
    select: {per_region: "100%"}
concurrency: {per_region: 10}
health:
  check_hook: true
timeouts: {hook: 10s, fetch: 10s, agent_lost: 10s}
rollback: {automatic: true, tolerate_failed_hosts: 0}
)";
  return yaml;
}

// The path (and query) of an absolute URL: what the origin counts hits by.
std::string PathOf(const std::string& url) {
  const size_t scheme = url.find("://");
  const size_t path = url.find('/', scheme == std::string::npos ? 0 : scheme + 3);
  return path == std::string::npos ? "/" : url.substr(path);
}

// One sample of a Prometheus text exposition.
using Labels = std::map<std::string, std::string>;
struct Sample {
  Labels labels;
  double value = 0;
};

// Every sample of the metric `name` in `exposition`, whatever the order of its labels.
std::vector<Sample> Samples(const std::string& exposition, const std::string& name) {
  std::vector<Sample> out;
  std::istringstream in(exposition);
  std::string line;
  while (std::getline(in, line)) {
    if (line.empty() || line[0] == '#' || line.compare(0, name.size(), name) != 0) continue;
    size_t i = name.size();
    if (i >= line.size() || (line[i] != '{' && line[i] != ' ')) continue;  // a longer name
    Sample sample;
    if (line[i] == '{') {
      ++i;
      while (i < line.size() && line[i] != '}') {
        const size_t eq = line.find("=\"", i);
        if (eq == std::string::npos) break;
        const std::string key = line.substr(i, eq - i);
        std::string value;
        size_t j = eq + 2;
        for (; j < line.size() && line[j] != '"'; ++j) {
          if (line[j] == '\\' && j + 1 < line.size()) {
            ++j;
            value += line[j] == 'n' ? '\n' : line[j];
          } else {
            value += line[j];
          }
        }
        sample.labels[key] = value;
        i = j + 1;
        if (i < line.size() && line[i] == ',') ++i;
      }
      ++i;  // past '}'
    }
    if (i >= line.size()) continue;
    sample.value = std::strtod(line.c_str() + i, nullptr);
    out.push_back(sample);
  }
  return out;
}

// The sum of the samples of `name` whose labels include every one of `match`; 0 if none has
// (a counter that was never incremented may be absent).
double Sum(const std::string& exposition, const std::string& name, const Labels& match) {
  double sum = 0;
  for (const Sample& s : Samples(exposition, name)) {
    bool matches = true;
    for (const auto& [key, value] : match) {
      auto it = s.labels.find(key);
      matches = matches && it != s.labels.end() && it->second == value;
    }
    if (matches) sum += s.value;
  }
  return sum;
}

// How many of `requests` were answered with `status` and `cache_status`.
int Count(const std::vector<NginxMirror::Request>& requests, int status,
          const std::string& cache_status) {
  int n = 0;
  for (const auto& r : requests) n += r.status == status && r.cache_status == cache_status;
  return n;
}

class MirrorTest : public ::testing::Test {
 protected:
  // Starts lockstepd with the pipeline naming each region's mirror, then `per_region` agents
  // in each region (use1-00, use1-01, ..., euw1-00, ..., apse2-00, ...).
  void StartFleet(int per_region) {
    std::map<std::string, std::string> bases;
    for (const auto& [region, mirror] : mirrors_) bases[region] = mirror->base_url();
    fleet_.WritePipeline("monolith.yaml", PipelineYaml(bases));
    fleet_.StartOrchestrator();
    for (const auto& [region, prefix] : kRegions) {
      for (int i = 0; i < per_region; ++i) {
        char name[32];
        std::snprintf(name, sizeof(name), "%s-%02d", prefix.c_str(), i);
        hosts_.emplace_back(name, region);
        fleet_.StartAgent(name, region);
      }
    }
    fleet_.WaitForAgents(hosts_.size());
  }

  void AddMirror(const std::string& region, StatusOr<std::unique_ptr<NginxMirror>> mirror) {
    ASSERT_TRUE(mirror.ok()) << region << ": " << mirror.status().ToString();
    mirrors_[region] = std::move(*mirror);
  }

  std::string NginxLog(const std::string& region) const {
    return fleet_.dir() + "/logs/nginx-" + region + ".log";
  }

  std::string OriginUrl() {
    return "http://127.0.0.1:" + std::to_string(fleet_.artifact_server().port());
  }

  CommandResult Release(const Artifact& a) {
    return fleet_.Cli({"--output", "json", "release", "create", "--pipeline", "monolith",
                       "--version", a.version, "--artifact", a.url, "--sha256", a.sha256, "--wait",
                       "--timeout", "120s"});
  }

  std::string Metrics() {
    httplib::Client cli("127.0.0.1", fleet_.http_port());
    cli.set_read_timeout(seconds(5));
    auto m = cli.Get("/metrics");
    return m && m->status == 200 ? m->body : "";
  }

  // /metrics once lockstepd has counted `fetches` artifact fetches in all (it counts a
  // fetch when the host's result arrives); fails the test if it never does.
  std::string MetricsAfter(double fetches) {
    std::string text;
    const bool counted = Fleet::WaitFor(
        [&] {
          text = Metrics();
          return Sum(text, kFetches, {}) >= fetches;
        },
        seconds(30));
    EXPECT_TRUE(counted) << "lockstepd did not count " << fetches << " artifact fetches:\n" << text;
    return text;
  }

  // What `mirror` answered for `path`, once it logged at least `n` requests (nginx logs a
  // request just after its answer went out) or after a bound.
  static std::vector<NginxMirror::Request> RequestsAfter(const NginxMirror& mirror,
                                                         const std::string& path, size_t n) {
    std::vector<NginxMirror::Request> requests;
    Fleet::WaitFor(
        [&] {
          requests = mirror.Requests(path);
          return requests.size() >= n;
        },
        seconds(10));
    return requests;
  }

  void ExpectEveryHostOn(const std::string& version) {
    for (const auto& [name, region] : hosts_) {
      EXPECT_EQ(fleet_.CurrentOf(name), version) << name << " (" << region << ")";
    }
  }

  // Declared before the mirrors: the mirrors (which proxy to the fleet's artifact server) stop
  // first.
  Fleet fleet_;
  std::map<std::string, std::unique_ptr<NginxMirror>> mirrors_;
  std::vector<std::pair<std::string, std::string>> hosts_;  // name, region
};

TEST_F(MirrorTest, ThirtyHostsInThreeRegionsFetchFromTheOriginOncePerRegion) {
  const std::string origin = OriginUrl();
  for (const auto& [region, prefix] : kRegions) {
    AddMirror(region, NginxMirror::Caching(origin, NginxLog(region)));
  }
  ASSERT_FALSE(HasFatalFailure());
  StartFleet(10);
  ASSERT_FALSE(HasFatalFailure());
  ASSERT_EQ(hosts_.size(), 30u);

  Artifact v1 = fleet_.ServeApp("v1.0.0");
  const std::string path = PathOf(v1.url);
  CommandResult r = Release(v1);
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(json::parse(r.out)["state"], "succeeded") << r.out;
  ExpectEveryHostOn("v1.0.0");

  // The origin was asked once per region: by each mirror, filling its cache.
  EXPECT_EQ(fleet_.artifact_server().Hits(path), 3);

  // Each mirror answered its region's ten hosts: the first from the origin, nine from its cache.
  for (const auto& [region, mirror] : mirrors_) {
    const std::vector<NginxMirror::Request> requests = RequestsAfter(*mirror, path, 10);
    EXPECT_EQ(requests.size(), 10u) << region;
    EXPECT_EQ(Count(requests, 200, "MISS"), 1) << region;
    EXPECT_EQ(Count(requests, 200, "HIT"), 9) << region;
  }

  // lockstepd saw the same from the hosts' results: every fetch from a mirror, none from the
  // origin, no mirror failed.
  const std::string metrics = MetricsAfter(30);
  httplib::Client origin_client(origin);
  auto artifact = origin_client.Get(path);
  ASSERT_TRUE(artifact && artifact->status == 200);
  const double artifact_bytes = static_cast<double>(artifact->body.size());
  for (const auto& [region, prefix] : kRegions) {
    EXPECT_EQ(Sum(metrics, kFetches, {{"region", region}, {"source", "mirror"}}), 10) << region;
    EXPECT_EQ(Sum(metrics, kFetches, {{"region", region}, {"source", "origin"}}), 0) << region;
    EXPECT_EQ(Sum(metrics, kFetchBytes, {{"region", region}, {"source", "mirror"}}),
              10 * artifact_bytes)
        << region;
    EXPECT_EQ(Sum(metrics, kFetchBytes, {{"region", region}, {"source", "origin"}}), 0) << region;
    EXPECT_EQ(Sum(metrics, kMirrorFailures, {{"region", region}}), 0) << region;
  }
  EXPECT_EQ(Sum(metrics, kFetches, {{"source", "mirror"}}), 30) << metrics;
  EXPECT_EQ(Sum(metrics, kFetches, {{"source", "origin"}}), 0) << metrics;
}

TEST_F(MirrorTest, AMirrorThatIsDownOrServesWrongBytesStillEndsInACorrectRelease) {
  const std::string down = "us-east-1", wrong = "eu-west-1", good = "ap-southeast-2";
  AddMirror(down, NginxMirror::Down());
  AddMirror(wrong, NginxMirror::WrongBytes(NginxLog(wrong)));
  AddMirror(good, NginxMirror::Caching(OriginUrl(), NginxLog(good)));
  ASSERT_FALSE(HasFatalFailure());
  StartFleet(2);
  ASSERT_FALSE(HasFatalFailure());

  Artifact v1 = fleet_.ServeApp("v1.0.0");
  const std::string path = PathOf(v1.url);
  CommandResult r = Release(v1);
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(json::parse(r.out)["state"], "succeeded") << r.out;
  ExpectEveryHostOn("v1.0.0");

  // Every host of the two broken regions went to the origin itself; the good region's mirror
  // went once for both of its hosts.
  EXPECT_EQ(fleet_.artifact_server().Hits(path), 2 + 2 + 1);
  // Each host asked its mirror first, once.
  EXPECT_EQ(RequestsAfter(*mirrors_[wrong], path, 2).size(), 2u);
  const std::vector<NginxMirror::Request> served = RequestsAfter(*mirrors_[good], path, 2);
  EXPECT_EQ(served.size(), 2u);
  EXPECT_EQ(Count(served, 200, "MISS"), 1);
  EXPECT_EQ(Count(served, 200, "HIT"), 1);

  const std::string metrics = MetricsAfter(6);
  for (const std::string& broken : {down, wrong}) {
    EXPECT_EQ(Sum(metrics, kFetches, {{"region", broken}, {"source", "origin"}}), 2) << broken;
    EXPECT_EQ(Sum(metrics, kFetches, {{"region", broken}, {"source", "mirror"}}), 0) << broken;
    EXPECT_EQ(Sum(metrics, kMirrorFailures, {{"region", broken}}), 2) << broken;
  }
  EXPECT_EQ(Sum(metrics, kFetches, {{"region", good}, {"source", "mirror"}}), 2);
  EXPECT_EQ(Sum(metrics, kFetches, {{"region", good}, {"source", "origin"}}), 0);
  EXPECT_EQ(Sum(metrics, kMirrorFailures, {{"region", good}}), 0);

  // The hosts reported why the mirror was not used, and lockstepd logged it.
  const std::string lockstepd_log = ReadFile(fleet_.dir() + "/logs/lockstepd.log");
  EXPECT_NE(lockstepd_log.find("sha256 mismatch for " + mirrors_[wrong]->base_url() + path),
            std::string::npos)
      << "lockstepd did not log the wrong-bytes mirror's failure (its log is printed below)";
  // Each broken region's hosts said in their own logs which mirror failed, and how.
  for (const auto& [name, region] : hosts_) {
    if (region == good) continue;
    const std::string log = ReadFile(fleet_.dir() + "/logs/agent-" + name + ".log");
    EXPECT_NE(log.find(mirrors_[region]->base_url() + path), std::string::npos) << name;
    if (region == wrong) {
      EXPECT_NE(log.find("sha256 mismatch"), std::string::npos) << name;
    }
  }
}

// The mirror the tests above rely on is a caching mirror: hosts that ask at once for an
// artifact it does not have yet cost the origin one request (proxy_cache_lock), and later ones
// none.
TEST(NginxMirrorTest, HostsAskingAtOnceCostTheOriginOneRequest) {
  TestHttpServer origin;
  const std::string path = "/artifacts/app-v1.tar.gz";
  const std::string body(256 * 1024, 'a');
  origin.Serve(path, body);
  // Holds the first request long enough that the others arrive while it is in flight.
  origin.SetDelay(path, std::chrono::milliseconds(500));
  auto mirror = NginxMirror::Caching("http://127.0.0.1:" + std::to_string(origin.port()));
  ASSERT_TRUE(mirror.ok()) << mirror.status().ToString();

  constexpr int kHosts = 10;
  std::vector<std::string> received(kHosts);
  std::vector<std::thread> hosts;
  for (int i = 0; i < kHosts; ++i) {
    hosts.emplace_back([&, i] {
      httplib::Client cli("127.0.0.1", (*mirror)->port());
      cli.set_read_timeout(seconds(30));
      auto res = cli.Get(path);
      if (res && res->status == 200) received[i] = res->body;
    });
  }
  for (auto& t : hosts) t.join();
  for (int i = 0; i < kHosts; ++i) EXPECT_TRUE(received[i] == body) << "host " << i;
  EXPECT_EQ(origin.Hits(path), 1);

  httplib::Client late("127.0.0.1", (*mirror)->port());
  auto again = late.Get(path);
  ASSERT_TRUE(again);
  EXPECT_EQ(again->status, 200);
  EXPECT_EQ(again->get_header_value("X-Cache-Status"), "HIT");
  EXPECT_EQ(origin.Hits(path), 1);
}

// The two broken kinds of mirror are broken as promised: one answers other bytes, the other
// refuses connections.
TEST(NginxMirrorTest, AWrongMirrorAnswersOtherBytesAndADownOneRefusesConnections) {
  auto wrong = NginxMirror::WrongBytes();
  ASSERT_TRUE(wrong.ok()) << wrong.status().ToString();
  httplib::Client wrong_client("127.0.0.1", (*wrong)->port());
  auto res = wrong_client.Get("/artifacts/app-v1.tar.gz");
  ASSERT_TRUE(res);
  EXPECT_EQ(res->status, 200);
  EXPECT_EQ(res->body, NginxMirror::kWrongBody);

  auto down = NginxMirror::Down();
  ASSERT_TRUE(down.ok()) << down.status().ToString();
  EXPECT_EQ((*down)->pid(), 0);
  httplib::Client down_client("127.0.0.1", (*down)->port());
  down_client.set_connection_timeout(seconds(2));
  auto refused = down_client.Get("/artifacts/app-v1.tar.gz");
  ASSERT_FALSE(refused);
  EXPECT_EQ(refused.error(), httplib::Error::Connection);
}

}  // namespace
}  // namespace lockstep::testing
