// Pipeline files: what a valid file means, and that every mistake is reported as
// "<file>:<line>: <field path>: <what is wrong>" so it can be fixed without reading code.

#include "orchestrator/pipeline/pipeline.h"

#include <gtest/gtest.h>
#include <stdlib.h>

#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

namespace lockstep {
namespace {

using std::chrono::milliseconds;

// Parses `yaml` as if read from "p.yaml"; fails the test if it does not parse.
Pipeline Parsed(const std::string& yaml) {
  StatusOr<Pipeline> p = ParsePipeline(yaml, "p.yaml");
  EXPECT_TRUE(p.ok()) << p.status().ToString();
  return p.ok() ? *p : Pipeline{};
}

// The message of the error that parsing `yaml` as "p.yaml" reports.
std::string ErrorOf(const std::string& yaml) {
  StatusOr<Pipeline> p = ParsePipeline(yaml, "p.yaml");
  EXPECT_FALSE(p.ok()) << "parsed without error:\n" << yaml;
  if (p.ok()) return "";
  EXPECT_EQ(p.status().code(), StatusCode::kInvalidArgument);
  return p.status().message();
}

// The pipeline file of INTERFACES.md, with real values in place of its placeholders and its
// long flow mappings continued on a second line to fit 100 columns.
constexpr char kInterfacesExample[] = R"yaml(pipeline: monolith
regions: [us-east-1, eu-west-1, ap-southeast-2]
waves:
  - name: canary
    select: {per_region: 1}          # one host in every region
    bake: 30s
  - name: half
    select: {per_region: "50%"}
    bake: 2m
  - name: all
    select: {per_region: "100%"}
    approval: manual                 # optional
  # a wave may instead name regions: {regions: [us-east-1], hosts: "100%"}
concurrency: {per_region: 10}        # hosts deploying at once per region
health:
  check_hook: true                   # run deploy/check if present
  http: [{url: "http://127.0.0.1:8080/healthz", expect: 200, timeout: 2s, attempts: 5,
          interval: 1s}]
gates:
  - metric: {prometheus: "http://127.0.0.1:9090",
             query: 'sum(rate(http_errors_total{region="{region}"}[1m]))', max: 0.01}
timeouts: {hook: 60s, fetch: 120s, agent_lost: 30s}
rollback: {automatic: true, tolerate_failed_hosts: 0}
trigger: {github: {repository: org/repo, branch: main,
                   artifact: "https://artifacts.example.com/monolith/{sha}.tar.gz"}}
)yaml";

const std::vector<std::string> kExampleRegions = {"us-east-1", "eu-west-1", "ap-southeast-2"};

TEST(ParsePipelineTest, ParsesTheInterfacesExample) {
  Pipeline p = Parsed(kInterfacesExample);

  EXPECT_EQ(p.name, "monolith");
  EXPECT_EQ(p.file, "p.yaml");
  EXPECT_EQ(p.regions, kExampleRegions);

  ASSERT_EQ(p.waves.size(), 3u);
  EXPECT_EQ(p.waves[0].name, "canary");
  EXPECT_EQ(p.waves[0].regions, kExampleRegions);
  EXPECT_EQ(p.waves[0].hosts.kind, HostSelector::Kind::kCount);
  EXPECT_EQ(p.waves[0].hosts.value, 1);
  EXPECT_EQ(p.waves[0].bake, milliseconds(30'000));
  EXPECT_FALSE(p.waves[0].manual_approval);
  EXPECT_EQ(p.waves[0].line, 4);
  EXPECT_EQ(p.waves[1].name, "half");
  EXPECT_EQ(p.waves[1].regions, kExampleRegions);
  EXPECT_EQ(p.waves[1].hosts.kind, HostSelector::Kind::kPercent);
  EXPECT_EQ(p.waves[1].hosts.value, 50);
  EXPECT_EQ(p.waves[1].bake, milliseconds(120'000));
  EXPECT_FALSE(p.waves[1].manual_approval);
  EXPECT_EQ(p.waves[1].line, 7);
  EXPECT_EQ(p.waves[2].name, "all");
  EXPECT_EQ(p.waves[2].regions, kExampleRegions);
  EXPECT_EQ(p.waves[2].hosts.kind, HostSelector::Kind::kPercent);
  EXPECT_EQ(p.waves[2].hosts.value, 100);
  EXPECT_EQ(p.waves[2].bake, milliseconds(0));
  EXPECT_TRUE(p.waves[2].manual_approval);
  EXPECT_EQ(p.waves[2].line, 10);

  EXPECT_EQ(p.concurrency_per_region, 10);
  EXPECT_TRUE(p.check_hook);
  ASSERT_EQ(p.http_probes.size(), 1u);
  EXPECT_EQ(p.http_probes[0].url, "http://127.0.0.1:8080/healthz");
  EXPECT_EQ(p.http_probes[0].expect_status, 200);
  EXPECT_EQ(p.http_probes[0].timeout, milliseconds(2'000));
  EXPECT_EQ(p.http_probes[0].attempts, 5);
  EXPECT_EQ(p.http_probes[0].interval, milliseconds(1'000));

  ASSERT_EQ(p.metric_gates.size(), 1u);
  const MetricGateSpec& gate = p.metric_gates[0];
  EXPECT_EQ(gate.name, "metric-0");
  EXPECT_EQ(gate.prometheus, "http://127.0.0.1:9090");
  EXPECT_EQ(gate.query, "sum(rate(http_errors_total{region=\"{region}\"}[1m]))");
  EXPECT_EQ(gate.max, 0.01);
  EXPECT_EQ(gate.min, std::nullopt);
  EXPECT_TRUE(gate.regions.empty());
  EXPECT_EQ(gate.consecutive_failures, 1);
  EXPECT_EQ(gate.interval, milliseconds(5'000));
  EXPECT_EQ(gate.inconclusive_deadline, milliseconds(60'000));

  EXPECT_EQ(p.timeouts.hook, milliseconds(60'000));
  EXPECT_EQ(p.timeouts.fetch, milliseconds(120'000));
  EXPECT_EQ(p.timeouts.agent_lost, milliseconds(30'000));
  EXPECT_TRUE(p.rollback.automatic);
  EXPECT_EQ(p.rollback.tolerate_failed_hosts.value, 0);
  EXPECT_EQ(p.rollback.on_failure, RollbackPolicy::OnFailure::kRollback);

  ASSERT_TRUE(p.github.has_value());
  EXPECT_EQ(p.github->repository, "org/repo");
  EXPECT_EQ(p.github->branch, "main");
  EXPECT_EQ(p.github->artifact, "https://artifacts.example.com/monolith/{sha}.tar.gz");
  EXPECT_EQ(p.github->secret_file, "");
  EXPECT_EQ(p.github->secret_env, "");
  EXPECT_EQ(p.github->max_artifact_bytes, int64_t{2} << 30);
  EXPECT_TRUE(p.notify.empty());
  EXPECT_FALSE(p.window.has_value());
}

TEST(ParsePipelineTest, OmittedSectionsTakeTheirDefaults) {
  Pipeline p = Parsed(R"(pipeline: web
regions: [us-east-1]
waves:
  - name: all
    select: {per_region: "100%"}
)");
  EXPECT_EQ(p.concurrency_per_region, 10);
  EXPECT_TRUE(p.check_hook);
  EXPECT_TRUE(p.http_probes.empty());
  EXPECT_TRUE(p.metric_gates.empty());
  EXPECT_EQ(p.timeouts.hook, milliseconds(60'000));
  EXPECT_EQ(p.timeouts.fetch, milliseconds(120'000));
  EXPECT_EQ(p.timeouts.agent_lost, milliseconds(30'000));
  EXPECT_TRUE(p.rollback.automatic);
  EXPECT_EQ(p.rollback.tolerate_failed_hosts.value, 0);
  EXPECT_EQ(p.rollback.on_failure, RollbackPolicy::OnFailure::kRollback);
  EXPECT_FALSE(p.github.has_value());
  EXPECT_TRUE(p.notify.empty());
  EXPECT_FALSE(p.window.has_value());
  EXPECT_EQ(p.waves[0].bake, milliseconds(0));
  EXPECT_FALSE(p.waves[0].manual_approval);
}

TEST(ParsePipelineTest, ParsesEveryOptionalKey) {
  Pipeline p = Parsed(R"(pipeline: payments_v2
regions: [us-east-1, eu-west-1]
waves:
  - name: eu-first
    select: {regions: [eu-west-1], hosts: 2}
    bake: 1m30s
  - name: us
    select: {regions: [us-east-1, eu-west-1]}
concurrency: {per_region: 3}
health:
  check_hook: false
  http:
    - {url: "https://127.0.0.1:8443/ready", expect: 204, timeout: 500ms, attempts: 3, interval: 0}
gates:
  - metric:
      name: error-rate
      prometheus: "http://prometheus.internal:9090"
      query: "up"
      min: 0.5
      max: 1
      regions: [eu-west-1]
      consecutive_failures: 3
      interval: 10s
      inconclusive_deadline: 5m
timeouts: {hook: 10s, fetch: 1m, agent_lost: 45s}
rollback: {automatic: false, tolerate_failed_hosts: 2, on_failure: pause}
trigger:
  github:
    repository: acme/payments
    branch: release
    artifact: "https://ci.example.com/{sha}.tar.gz"
    secret_env: GITHUB_WEBHOOK_SECRET
    max_artifact_bytes: 500MiB
notify:
  - url: "https://hooks.example.com/lockstep"
    events: [failed, rolled_back, approval_needed]
  - url: "http://127.0.0.1:9000/all"
window: {start: "09:00", end: "17:30", days: [fri, mon, sun]}
)");
  EXPECT_EQ(p.name, "payments_v2");
  ASSERT_EQ(p.waves.size(), 2u);
  EXPECT_EQ(p.waves[0].regions, std::vector<std::string>{"eu-west-1"});
  EXPECT_EQ(p.waves[0].hosts.kind, HostSelector::Kind::kCount);
  EXPECT_EQ(p.waves[0].hosts.value, 2);
  EXPECT_EQ(p.waves[0].bake, milliseconds(90'000));
  EXPECT_EQ(p.waves[1].regions, (std::vector<std::string>{"us-east-1", "eu-west-1"}));
  EXPECT_EQ(p.waves[1].hosts.kind, HostSelector::Kind::kPercent);
  EXPECT_EQ(p.waves[1].hosts.value, 100);

  EXPECT_EQ(p.concurrency_per_region, 3);
  EXPECT_FALSE(p.check_hook);
  ASSERT_EQ(p.http_probes.size(), 1u);
  EXPECT_EQ(p.http_probes[0].url, "https://127.0.0.1:8443/ready");
  EXPECT_EQ(p.http_probes[0].expect_status, 204);
  EXPECT_EQ(p.http_probes[0].timeout, milliseconds(500));
  EXPECT_EQ(p.http_probes[0].attempts, 3);
  EXPECT_EQ(p.http_probes[0].interval, milliseconds(0));

  ASSERT_EQ(p.metric_gates.size(), 1u);
  const MetricGateSpec& gate = p.metric_gates[0];
  EXPECT_EQ(gate.name, "error-rate");
  EXPECT_EQ(gate.prometheus, "http://prometheus.internal:9090");
  EXPECT_EQ(gate.query, "up");
  EXPECT_EQ(gate.min, 0.5);
  EXPECT_EQ(gate.max, 1.0);
  EXPECT_EQ(gate.regions, std::vector<std::string>{"eu-west-1"});
  EXPECT_EQ(gate.consecutive_failures, 3);
  EXPECT_EQ(gate.interval, milliseconds(10'000));
  EXPECT_EQ(gate.inconclusive_deadline, milliseconds(300'000));

  EXPECT_EQ(p.timeouts.hook, milliseconds(10'000));
  EXPECT_EQ(p.timeouts.fetch, milliseconds(60'000));
  EXPECT_EQ(p.timeouts.agent_lost, milliseconds(45'000));
  EXPECT_FALSE(p.rollback.automatic);
  EXPECT_EQ(p.rollback.tolerate_failed_hosts.value, 2);
  EXPECT_EQ(p.rollback.on_failure, RollbackPolicy::OnFailure::kPause);

  ASSERT_TRUE(p.github.has_value());
  EXPECT_EQ(p.github->repository, "acme/payments");
  EXPECT_EQ(p.github->branch, "release");
  EXPECT_EQ(p.github->artifact, "https://ci.example.com/{sha}.tar.gz");
  EXPECT_EQ(p.github->secret_file, "");
  EXPECT_EQ(p.github->secret_env, "GITHUB_WEBHOOK_SECRET");
  EXPECT_EQ(p.github->max_artifact_bytes, int64_t{500} << 20);

  ASSERT_EQ(p.notify.size(), 2u);
  EXPECT_EQ(p.notify[0].url, "https://hooks.example.com/lockstep");
  EXPECT_EQ(p.notify[0].events,
            (std::vector<std::string>{"failed", "rolled_back", "approval_needed"}));
  EXPECT_EQ(p.notify[1].url, "http://127.0.0.1:9000/all");
  EXPECT_TRUE(p.notify[1].events.empty());

  ASSERT_TRUE(p.window.has_value());
  EXPECT_EQ(p.window->start_minute, 9 * 60);
  EXPECT_EQ(p.window->end_minute, 17 * 60 + 30);
  EXPECT_EQ(p.window->weekdays, (std::vector<int>{0, 1, 5}));
}

TEST(ParsePipelineTest, GatesWithoutNameAreNamedByTheirIndex) {
  Pipeline p = Parsed(R"(pipeline: web
regions: [us-east-1]
waves: [{name: all, select: {per_region: 1}}]
gates:
  - metric: {name: latency, prometheus: "http://p:9090", query: "a", max: 1}
  - metric: {prometheus: "http://p:9090", query: "b", min: 0}
)");
  ASSERT_EQ(p.metric_gates.size(), 2u);
  EXPECT_EQ(p.metric_gates[0].name, "latency");
  EXPECT_EQ(p.metric_gates[1].name, "metric-1");
}

TEST(ParsePipelineTest, WindowMayEndAtMidnight) {
  Pipeline p = Parsed(R"(pipeline: web
regions: [us-east-1]
waves: [{name: all, select: {per_region: 1}}]
window: {start: "22:00", end: "24:00"}
)");
  ASSERT_TRUE(p.window.has_value());
  EXPECT_EQ(p.window->start_minute, 22 * 60);
  EXPECT_EQ(p.window->end_minute, 24 * 60);
  EXPECT_TRUE(p.window->weekdays.empty());
}

// --- Unknown, duplicate and missing keys ---

TEST(ParsePipelineTest, UnknownKeyNamesItsFieldAndListsTheAllowedKeys) {
  EXPECT_EQ(ErrorOf(R"(pipeline: web
regions: [us-east-1]
waves:
  - name: canary
    bak: 30s
    select: {per_region: 1}
)"),
            "p.yaml:5: waves[0].bak: unknown key, did you mean \"bake\"? "
            "(allowed: name, select, bake, approval, tolerate_failed_hosts)");
}

TEST(ParsePipelineTest, UnknownKeyUnlikeAnyAllowedKeyHasNoSuggestion) {
  EXPECT_EQ(
      ErrorOf(R"(pipeline: web
regions: [us-east-1]
waves: [{name: all, select: {per_region: 1}}]
timeouts: {hook: 60s, deadline: 5m}
)"),
      "p.yaml:4: timeouts.deadline: unknown key (allowed: hook, fetch, agent_lost, approval)");
}

TEST(ParsePipelineTest, UnknownTopLevelKeyIsAnError) {
  EXPECT_EQ(ErrorOf(R"(pipeline: web
regions: [us-east-1]
stages: []
waves: [{name: all, select: {per_region: 1}}]
)"),
            "p.yaml:3: stages: unknown key (allowed: pipeline, regions, waves, concurrency, "
            "health, gates, timeouts, rollback, trigger, notify, window, artifacts, links)");
}

TEST(ParsePipelineTest, RepeatedKeyIsAnError) {
  EXPECT_EQ(ErrorOf(R"(pipeline: web
regions: [us-east-1]
waves:
  - name: all
    select: {per_region: 1}
    bake: 30s
    bake: 1m
)"),
            "p.yaml:7: waves[0].bake: duplicate key");
}

TEST(ParsePipelineTest, MissingPipelineNameIsAnError) {
  EXPECT_EQ(ErrorOf(R"(regions: [us-east-1]
waves: [{name: all, select: {per_region: 1}}]
)"),
            "p.yaml:1: pipeline: required key is missing; name the pipeline, e.g. \"pipeline: "
            "web\"");
}

TEST(ParsePipelineTest, PipelineNameMustBeLowercaseLettersDigitsDashOrUnderscore) {
  for (const char* name : {"Web", "-web", "_web", "web.app", "\"web app\"", "\"\"",
                           "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"}) {
    std::string message = ErrorOf(std::string("pipeline: ") + name + R"(
regions: [us-east-1]
waves: [{name: all, select: {per_region: 1}}]
)");
    EXPECT_TRUE(message.rfind("p.yaml:1: pipeline: ", 0) == 0) << name << ": " << message;
  }
  EXPECT_EQ(ErrorOf(R"(pipeline: Web
regions: [us-east-1]
waves: [{name: all, select: {per_region: 1}}]
)"),
            "p.yaml:1: pipeline: invalid name \"Web\"; use 1 to 64 characters from a-z, 0-9, "
            "'-' and '_', starting with a letter or digit");
}

TEST(ParsePipelineTest, PipelineNameMayBeSixtyFourCharacters) {
  std::string name(64, 'a');
  EXPECT_EQ(Parsed("pipeline: " + name + R"(
regions: [us-east-1]
waves: [{name: all, select: {per_region: 1}}]
)")
                .name,
            name);
  EXPECT_EQ(Parsed(R"(pipeline: 0-a_b
regions: [us-east-1]
waves: [{name: all, select: {per_region: 1}}]
)")
                .name,
            "0-a_b");
}

// --- Regions ---

TEST(ParsePipelineTest, DuplicateRegionIsAnError) {
  EXPECT_EQ(ErrorOf(R"(pipeline: web
regions:
  - us-east-1
  - eu-west-1
  - us-east-1
waves: [{name: all, select: {per_region: 1}}]
)"),
            "p.yaml:5: regions[2]: duplicate region \"us-east-1\"");
}

TEST(ParsePipelineTest, EmptyRegionListIsAnError) {
  EXPECT_EQ(ErrorOf(R"(pipeline: web
regions: []
waves: [{name: all, select: {per_region: 1}}]
)"),
            "p.yaml:2: regions: empty list; a pipeline needs at least one region");
}

TEST(ParsePipelineTest, RegionsGivenAsStringIsAnError) {
  EXPECT_EQ(ErrorOf(R"(pipeline: web
regions: us-east-1
waves: [{name: all, select: {per_region: 1}}]
)"),
            "p.yaml:2: regions: expected a list, got \"us-east-1\"");
}

TEST(ParsePipelineTest, WaveRegionMustBeDeclared) {
  EXPECT_EQ(ErrorOf(R"(pipeline: web
regions: [us-east-1, eu-west-1]
waves:
  - name: eu
    select:
      regions: [eu-west-1, eu-central-1]
)"),
            "p.yaml:6: waves[0].select.regions[1]: undeclared region \"eu-central-1\" "
            "(declared in regions: us-east-1, eu-west-1)");
}

TEST(ParsePipelineTest, GateRegionMustBeDeclared) {
  EXPECT_EQ(ErrorOf(R"(pipeline: web
regions: [us-east-1]
waves: [{name: all, select: {per_region: 1}}]
gates:
  - metric:
      prometheus: "http://127.0.0.1:9090"
      query: up
      min: 1
      regions: [eu-central-1]
)"),
            "p.yaml:9: gates[0].metric.regions[0]: undeclared region \"eu-central-1\" "
            "(declared in regions: us-east-1)");
}

// --- Waves ---

TEST(ParsePipelineTest, MissingWavesIsAnError) {
  EXPECT_EQ(ErrorOf(R"(pipeline: web
regions: [us-east-1]
)"),
            "p.yaml:1: waves: required key is missing; a pipeline needs at least one wave");
}

TEST(ParsePipelineTest, EmptyWaveListIsAnError) {
  EXPECT_EQ(ErrorOf(R"(pipeline: web
regions: [us-east-1]
waves: []
)"),
            "p.yaml:3: waves: empty list; a pipeline needs at least one wave");
}

TEST(ParsePipelineTest, WaveWithoutNameIsAnError) {
  EXPECT_EQ(ErrorOf(R"(pipeline: web
regions: [us-east-1]
waves:
  - name: canary
    select: {per_region: 1}
  - select: {per_region: "100%"}
)"),
            "p.yaml:6: waves[1].name: required key is missing; every wave needs a unique name");
}

TEST(ParsePipelineTest, EmptyWaveNameIsAnError) {
  EXPECT_EQ(ErrorOf(R"(pipeline: web
regions: [us-east-1]
waves:
  - name: ""
    select: {per_region: 1}
)"),
            "p.yaml:4: waves[0].name: must not be empty");
}

TEST(ParsePipelineTest, DuplicateWaveNameIsAnError) {
  EXPECT_EQ(ErrorOf(R"(pipeline: web
regions: [us-east-1]
waves:
  - name: canary
    select: {per_region: 1}
  - name: canary
    select: {per_region: "100%"}
)"),
            "p.yaml:6: waves[1].name: duplicate wave name \"canary\" (also waves[0])");
}

TEST(ParsePipelineTest, WaveWithoutSelectIsAnError) {
  EXPECT_EQ(ErrorOf(R"(pipeline: web
regions: [us-east-1]
waves:
  - name: all
    bake: 1m
)"),
            "p.yaml:4: waves[0].select: required key is missing; e.g. {per_region: 1} or "
            "{regions: [us-east-1], hosts: \"100%\"}");
}

TEST(ParsePipelineTest, WaveWithEmptyRegionListSelectsNoRegion) {
  EXPECT_EQ(ErrorOf(R"(pipeline: web
regions: [us-east-1]
waves:
  - name: none
    select: {regions: [], hosts: 1}
)"),
            "p.yaml:5: waves[0].select.regions: empty list; a wave must select at least one "
            "region");
}

TEST(ParsePipelineTest, WaveWithHostsButNoRegionsSelectsNoRegion) {
  EXPECT_EQ(ErrorOf(R"(pipeline: web
regions: [us-east-1]
waves:
  - name: none
    select: {hosts: 1}
)"),
            "p.yaml:5: waves[0].select: selects no region; use {per_region: N} or {regions: "
            "[...], hosts: N}");
}

TEST(ParsePipelineTest, PerRegionZeroSelectsNoHosts) {
  EXPECT_EQ(ErrorOf(R"(pipeline: web
regions: [us-east-1]
waves:
  - name: none
    select: {per_region: 0}
)"),
            "p.yaml:5: waves[0].select.per_region: selects no hosts (\"0\"); use a count of at "
            "least 1 or a percentage from 1% to 100%");
}

TEST(ParsePipelineTest, ZeroPercentSelectsNoHosts) {
  EXPECT_EQ(ErrorOf(R"(pipeline: web
regions: [us-east-1]
waves:
  - name: none
    select: {regions: [us-east-1], hosts: "0%"}
)"),
            "p.yaml:5: waves[0].select.hosts: selects no hosts (\"0%\"); use a count of at "
            "least 1 or a percentage from 1% to 100%");
}

TEST(ParsePipelineTest, PercentageAboveHundredIsAnError) {
  EXPECT_EQ(ErrorOf(R"(pipeline: web
regions: [us-east-1]
waves:
  - name: all
    select: {per_region: "150%"}
)"),
            "p.yaml:5: waves[0].select.per_region: \"150%\" is more than 100%");
}

TEST(ParsePipelineTest, NegativeHostCountIsAnError) {
  EXPECT_EQ(ErrorOf(R"(pipeline: web
regions: [us-east-1]
waves:
  - name: all
    select: {per_region: -1}
)"),
            "p.yaml:5: waves[0].select.per_region: must not be negative, got \"-1\"");
}

TEST(ParsePipelineTest, HostsThatAreNeitherCountNorPercentageAreAnError) {
  EXPECT_EQ(ErrorOf(R"(pipeline: web
regions: [us-east-1]
waves:
  - name: half
    select: {per_region: half}
)"),
            "p.yaml:5: waves[0].select.per_region: expected a host count (e.g. 1) or a "
            "percentage (e.g. \"50%\"), got \"half\"");
}

TEST(ParsePipelineTest, PerRegionCannotBeCombinedWithRegions) {
  EXPECT_EQ(ErrorOf(R"(pipeline: web
regions: [us-east-1]
waves:
  - name: all
    select: {per_region: 1, regions: [us-east-1]}
)"),
            "p.yaml:5: waves[0].select: use either {per_region: N} or {regions: [...], hosts: "
            "N}, not both");
}

TEST(ParsePipelineTest, ApprovalOtherThanManualIsAnError) {
  EXPECT_EQ(ErrorOf(R"(pipeline: web
regions: [us-east-1]
waves:
  - name: all
    select: {per_region: 1}
    approval: automatic
)"),
            "p.yaml:6: waves[0].approval: unknown value \"automatic\"; the only value is "
            "\"manual\" (omit the key for none)");
}

TEST(ParsePipelineTest, MultiLineValueIsQuotedOnOneLine) {
  EXPECT_EQ(ErrorOf(R"(pipeline: web
regions: [us-east-1]
waves:
  - name: all
    select: {per_region: 1}
    approval: |
      manual
)"),
            "p.yaml:6: waves[0].approval: unknown value \"manual\\n\"; the only value is "
            "\"manual\" (omit the key for none)");
}

// --- Durations ---

TEST(ParsePipelineTest, BadDurationQuotesTheText) {
  EXPECT_EQ(ErrorOf(R"(pipeline: web
regions: [us-east-1]
waves:
  - name: canary
    select: {per_region: 1}
    bake: 30s
  - name: all
    select: {per_region: "100%"}
    bake: 2x
)"),
            "p.yaml:9: waves[1].bake: bad duration \"2x\": unknown unit (use forms like 500ms, "
            "30s, 2m, 1h)");
}

TEST(ParsePipelineTest, TimeoutWithoutUnitIsAnError) {
  EXPECT_EQ(ErrorOf(R"(pipeline: web
regions: [us-east-1]
waves: [{name: all, select: {per_region: 1}}]
timeouts:
  hook: 60
)"),
            "p.yaml:5: timeouts.hook: bad duration \"60\": missing unit (use forms like 500ms, "
            "30s, 2m, 1h)");
}

TEST(ParsePipelineTest, ZeroTimeoutIsAnError) {
  EXPECT_EQ(ErrorOf(R"(pipeline: web
regions: [us-east-1]
waves: [{name: all, select: {per_region: 1}}]
timeouts: {agent_lost: 0s}
)"),
            "p.yaml:4: timeouts.agent_lost: must be longer than 0");
}

TEST(ParsePipelineTest, EmptyValueIsReportedOnTheLineOfItsKey) {
  EXPECT_EQ(ErrorOf(R"(pipeline: web
regions: [us-east-1]
waves:
  - name: all
    bake:

    select: {per_region: 1}
)"),
            "p.yaml:5: waves[0].bake: expected a duration such as 30s, got nothing");
}

// --- Wrong types and out-of-range numbers ---

TEST(ParsePipelineTest, MappingWhereStringExpectedIsAnError) {
  EXPECT_EQ(ErrorOf(R"(pipeline: {name: web}
regions: [us-east-1]
waves: [{name: all, select: {per_region: 1}}]
)"),
            "p.yaml:1: pipeline: expected a string, got a mapping");
}

TEST(ParsePipelineTest, ListWhereMappingExpectedIsAnError) {
  EXPECT_EQ(ErrorOf(R"(pipeline: web
regions: [us-east-1]
waves: [{name: all, select: {per_region: 1}}]
timeouts: [60s]
)"),
            "p.yaml:4: timeouts: expected a mapping, got a list");
}

TEST(ParsePipelineTest, WaveThatIsNotAMappingIsAnError) {
  EXPECT_EQ(ErrorOf(R"(pipeline: web
regions: [us-east-1]
waves:
  - canary
)"),
            "p.yaml:4: waves[0]: expected a mapping, got \"canary\"");
}

TEST(ParsePipelineTest, ConcurrencyBelowOneIsAnError) {
  EXPECT_EQ(ErrorOf(R"(pipeline: web
regions: [us-east-1]
waves: [{name: all, select: {per_region: 1}}]
concurrency: {per_region: 0}
)"),
            "p.yaml:4: concurrency.per_region: must be at least 1, got 0");
}

TEST(ParsePipelineTest, FractionalConcurrencyIsAnError) {
  EXPECT_EQ(ErrorOf(R"(pipeline: web
regions: [us-east-1]
waves: [{name: all, select: {per_region: 1}}]
concurrency: {per_region: 1.5}
)"),
            "p.yaml:4: concurrency.per_region: expected a whole number, got \"1.5\"");
}

TEST(ParsePipelineTest, NegativeToleratedFailedHostsIsAnError) {
  EXPECT_EQ(ErrorOf(R"(pipeline: web
regions: [us-east-1]
waves: [{name: all, select: {per_region: 1}}]
rollback:
  automatic: true
  tolerate_failed_hosts: -1
)"),
            "p.yaml:6: rollback.tolerate_failed_hosts: must not be negative, got \"-1\"");
}

TEST(ParsePipelineTest, AWaveTakesItsOwnFailureToleranceAsACountOrAPercentage) {
  Pipeline p = Parsed(R"(pipeline: web
regions: [us-east-1]
waves:
  - {name: canary, select: {per_region: 1}, tolerate_failed_hosts: 0}
  - {name: all, select: {per_region: "100%"}, tolerate_failed_hosts: "10%"}
rollback: {tolerate_failed_hosts: 2}
)");
  ASSERT_TRUE(p.waves[0].tolerate_failed_hosts.has_value());
  EXPECT_EQ(p.waves[0].tolerate_failed_hosts->value, 0);
  EXPECT_FALSE(p.waves[0].tolerate_failed_hosts->percent);
  ASSERT_TRUE(p.waves[1].tolerate_failed_hosts.has_value());
  EXPECT_TRUE(p.waves[1].tolerate_failed_hosts->percent);
  EXPECT_EQ(p.waves[1].tolerate_failed_hosts->Allowed(25), 2);  // rounds down
  EXPECT_EQ(p.rollback.tolerate_failed_hosts.Allowed(100), 2);
  EXPECT_EQ(ErrorOf(R"(pipeline: web
regions: [us-east-1]
waves: [{name: all, select: {per_region: 1}, tolerate_failed_hosts: "101%"}]
)"),
            "p.yaml:3: waves[0].tolerate_failed_hosts: \"101%\" is more than 100%");
}

TEST(ParsePipelineTest, OnFailureMustBeRollbackOrPause) {
  EXPECT_EQ(ErrorOf(R"(pipeline: web
regions: [us-east-1]
waves: [{name: all, select: {per_region: 1}}]
rollback: {on_failure: ignore}
)"),
            "p.yaml:4: rollback.on_failure: unknown value \"ignore\" (allowed: rollback, pause)");
}

TEST(ParsePipelineTest, CheckHookMustBeTrueOrFalse) {
  EXPECT_EQ(ErrorOf(R"(pipeline: web
regions: [us-east-1]
waves: [{name: all, select: {per_region: 1}}]
health: {check_hook: sometimes}
)"),
            "p.yaml:4: health.check_hook: expected true or false, got \"sometimes\"");
}

// --- Health probes and gates ---

TEST(ParsePipelineTest, ProbeExpectMustBeAnHttpStatus) {
  EXPECT_EQ(ErrorOf(R"(pipeline: web
regions: [us-east-1]
waves: [{name: all, select: {per_region: 1}}]
health:
  http:
    - url: "http://127.0.0.1:8080/healthz"
      expect: 42
)"),
            "p.yaml:7: health.http[0].expect: must be at least 100, got 42");
}

TEST(ParsePipelineTest, ProbeUrlMustBeHttp) {
  EXPECT_EQ(ErrorOf(R"(pipeline: web
regions: [us-east-1]
waves: [{name: all, select: {per_region: 1}}]
health:
  http: [{url: "127.0.0.1:8080/healthz"}]
)"),
            "p.yaml:5: health.http[0].url: expected an http:// or https:// URL, got "
            "\"127.0.0.1:8080/healthz\"");
}

TEST(ParsePipelineTest, GateWithoutMaxOrMinIsAnError) {
  EXPECT_EQ(ErrorOf(R"(pipeline: web
regions: [us-east-1]
waves: [{name: all, select: {per_region: 1}}]
gates:
  - metric: {prometheus: "http://127.0.0.1:9090", query: up}
)"),
            "p.yaml:5: gates[0].metric: needs max or min (the bounds the query result must stay "
            "within)");
}

TEST(ParsePipelineTest, GateMinAboveMaxIsAnError) {
  EXPECT_EQ(ErrorOf(R"(pipeline: web
regions: [us-east-1]
waves: [{name: all, select: {per_region: 1}}]
gates:
  - metric:
      prometheus: "http://127.0.0.1:9090"
      query: up
      max: 0.1
      min: 0.5
)"),
            "p.yaml:9: gates[0].metric.min: min 0.5 is greater than max 0.1; no value could "
            "pass");
}

TEST(ParsePipelineTest, GateThresholdMustBeANumber) {
  EXPECT_EQ(ErrorOf(R"(pipeline: web
regions: [us-east-1]
waves: [{name: all, select: {per_region: 1}}]
gates:
  - metric: {prometheus: "http://127.0.0.1:9090", query: up, max: 1%}
)"),
            "p.yaml:5: gates[0].metric.max: expected a number, got \"1%\"");
}

TEST(ParsePipelineTest, DuplicateGateNameIsAnError) {
  EXPECT_EQ(ErrorOf(R"(pipeline: web
regions: [us-east-1]
waves: [{name: all, select: {per_region: 1}}]
gates:
  - metric: {name: errors, prometheus: "http://p:9090", query: a, max: 1}
  - metric: {name: errors, prometheus: "http://p:9090", query: b, max: 1}
)"),
            "p.yaml:6: gates[1].metric.name: duplicate gate name \"errors\" (also gates[0])");
}

TEST(ParsePipelineTest, GateOtherThanMetricIsAnError) {
  EXPECT_EQ(ErrorOf(R"(pipeline: web
regions: [us-east-1]
waves: [{name: all, select: {per_region: 1}}]
gates:
  - datadog: {query: a}
)"),
            "p.yaml:5: gates[0].datadog: unknown key (allowed: metric)");
}

// --- Trigger, notify, window ---

TEST(ParsePipelineTest, TriggerArtifactMustContainSha) {
  EXPECT_EQ(ErrorOf(R"(pipeline: web
regions: [us-east-1]
waves: [{name: all, select: {per_region: 1}}]
trigger:
  github:
    repository: org/repo
    artifact: "https://ci.example.com/latest.tar.gz"
)"),
            "p.yaml:7: trigger.github.artifact: must contain \"{sha}\" (replaced by the commit), "
            "got \"https://ci.example.com/latest.tar.gz\"");
}

TEST(ParsePipelineTest, TriggerRepositoryMustBeOwnerSlashName) {
  EXPECT_EQ(ErrorOf(R"(pipeline: web
regions: [us-east-1]
waves: [{name: all, select: {per_region: 1}}]
trigger: {github: {repository: repo, artifact: "https://ci/{sha}.tar.gz"}}
)"),
            "p.yaml:4: trigger.github.repository: expected \"owner/name\", got \"repo\"");
}

TEST(ParsePipelineTest, TriggerWithBothSecretSourcesIsAnError) {
  EXPECT_EQ(ErrorOf(R"(pipeline: web
regions: [us-east-1]
waves: [{name: all, select: {per_region: 1}}]
trigger:
  github:
    repository: org/repo
    artifact: "https://ci/{sha}.tar.gz"
    secret_file: /etc/lockstep/github-secret
    secret_env: GITHUB_SECRET
)"),
            "p.yaml:9: trigger.github.secret_env: set only one of secret_file and secret_env");
}

// A pipeline whose trigger.github has `github_lines` (indented by four spaces), starting at
// line 6.
std::string WithGithubTrigger(const std::string& github_lines) {
  return "pipeline: web\nregions: [us-east-1]\nwaves: [{name: all, select: {per_region: 1}}]\n"
         "trigger:\n  github:\n    repository: org/repo\n" +
         github_lines;
}

TEST(ParsePipelineTest, TriggerArtifactMustBeAnHttpUrl) {
  EXPECT_EQ(ErrorOf(WithGithubTrigger("    artifact: \"ftp://ci.example.com/{sha}.tar.gz\"\n")),
            "p.yaml:7: trigger.github.artifact: expected an http:// or https:// URL, got "
            "\"ftp://ci.example.com/{sha}.tar.gz\"");
  EXPECT_EQ(ErrorOf(WithGithubTrigger("    artifact: \"/srv/artifacts/{sha}.tar.gz\"\n")),
            "p.yaml:7: trigger.github.artifact: expected an http:// or https:// URL, got "
            "\"/srv/artifacts/{sha}.tar.gz\"");
}

TEST(ParsePipelineTest, TriggerArtifactMustNotCarryCredentials) {
  std::string error = ErrorOf(
      WithGithubTrigger("    artifact: \"https://bot:hunter2@ci.example.com/{sha}.tgz\"\n"));
  EXPECT_EQ(error,
            "p.yaml:7: trigger.github.artifact: must not contain credentials (user:password@ "
            "before the host); they would be logged, stored and sent to every agent");
  EXPECT_EQ(error.find("hunter2"), std::string::npos);
  EXPECT_EQ(
      ErrorOf(WithGithubTrigger("    artifact: \"http://token@ci.example.com/{sha}.tgz\"\n")),
      "p.yaml:7: trigger.github.artifact: must not contain credentials (user:password@ before "
      "the host); they would be logged, stored and sent to every agent");
}

TEST(ParsePipelineTest, AnAtSignInTheArtifactPathIsNotACredential) {
  Pipeline p =
      Parsed(WithGithubTrigger("    artifact: \"https://ci.example.com/@scope/{sha}.tgz\"\n"));
  ASSERT_TRUE(p.github.has_value());
  EXPECT_EQ(p.github->artifact, "https://ci.example.com/@scope/{sha}.tgz");
}

TEST(ParsePipelineTest, TriggerArtifactNeedsAHost) {
  EXPECT_EQ(ErrorOf(WithGithubTrigger("    artifact: \"https:///{sha}.tgz\"\n")),
            "p.yaml:7: trigger.github.artifact: has no host: \"https:///{sha}.tgz\"");
}

TEST(ParsePipelineTest, MaxArtifactBytesTakesAWholeNumberOrAUnit) {
  const std::string artifact = "    artifact: \"https://ci.example.com/{sha}.tgz\"\n";
  const std::pair<const char*, int64_t> cases[] = {{"1048576", 1048576},
                                                   {"500MiB", int64_t{500} << 20},
                                                   {"2 GiB", int64_t{2} << 30},
                                                   {"1GB", 1000 * 1000 * 1000},
                                                   {"64KiB", 64 * 1024},
                                                   {"1TiB", int64_t{1} << 40},
                                                   {"700B", 700}};
  for (const auto& [text, bytes] : cases) {
    Pipeline p = Parsed(WithGithubTrigger(artifact + "    max_artifact_bytes: " + text + "\n"));
    ASSERT_TRUE(p.github.has_value()) << text;
    EXPECT_EQ(p.github->max_artifact_bytes, bytes) << text;
  }
}

TEST(ParsePipelineTest, BadMaxArtifactBytesIsAnErrorNamingTheField) {
  const std::string artifact = "    artifact: \"https://ci.example.com/{sha}.tgz\"\n";
  EXPECT_EQ(ErrorOf(WithGithubTrigger(artifact + "    max_artifact_bytes: lots\n")),
            "p.yaml:8: trigger.github.max_artifact_bytes: expected a size in bytes such as "
            "1048576, 500MiB or 2GiB, got \"lots\"");
  EXPECT_EQ(ErrorOf(WithGithubTrigger(artifact + "    max_artifact_bytes: 1.5GiB\n")),
            "p.yaml:8: trigger.github.max_artifact_bytes: expected a size in bytes such as "
            "1048576, 500MiB or 2GiB, got \"1.5GiB\"");
  EXPECT_EQ(ErrorOf(WithGithubTrigger(artifact + "    max_artifact_bytes: 0\n")),
            "p.yaml:8: trigger.github.max_artifact_bytes: must be at least 1 byte, got \"0\"");
  EXPECT_EQ(ErrorOf(WithGithubTrigger(artifact + "    max_artifact_bytes: 99999999999TiB\n")),
            "p.yaml:8: trigger.github.max_artifact_bytes: \"99999999999TiB\" is out of range");
  EXPECT_EQ(ErrorOf(WithGithubTrigger(artifact + "    max_artifact_bytes: [1]\n")),
            "p.yaml:8: trigger.github.max_artifact_bytes: expected a size in bytes such as "
            "1048576, 500MiB or 2GiB, got a list");
}

TEST(ParsePipelineTest, ArtifactWaitIsThirtyMinutesUnlessSet) {
  const std::string artifact = "    artifact: \"https://ci.example.com/{sha}.tgz\"\n";
  Pipeline defaulted = Parsed(WithGithubTrigger(artifact));
  ASSERT_TRUE(defaulted.github.has_value());
  EXPECT_EQ(defaulted.github->artifact_wait, milliseconds(30 * 60 * 1000));
  Pipeline set = Parsed(WithGithubTrigger(artifact + "    artifact_wait: 1h30m\n"));
  ASSERT_TRUE(set.github.has_value());
  EXPECT_EQ(set.github->artifact_wait, milliseconds(90 * 60 * 1000));
}

TEST(ParsePipelineTest, BadArtifactWaitIsAnErrorNamingTheField) {
  const std::string artifact = "    artifact: \"https://ci.example.com/{sha}.tgz\"\n";
  EXPECT_EQ(ErrorOf(WithGithubTrigger(artifact + "    artifact_wait: 30\n")),
            "p.yaml:8: trigger.github.artifact_wait: bad duration \"30\": missing unit (use "
            "forms like 500ms, 30s, 2m, 1h)");
  EXPECT_EQ(ErrorOf(WithGithubTrigger(artifact + "    artifact_wait: 0s\n")),
            "p.yaml:8: trigger.github.artifact_wait: must be longer than 0");
}

TEST(ParsePipelineTest, RegionNamesMustBeSafeNames) {
  EXPECT_EQ(ErrorOf(R"(pipeline: web
regions: [us-east-1, "eu west 1"]
waves: [{name: all, select: {per_region: 1}}]
)"),
            "p.yaml:2: regions[1]: region \"eu west 1\" must start with a letter or digit and "
            "hold only letters, digits, '.', '_' and '-'");
  EXPECT_EQ(ErrorOf(R"(pipeline: web
regions:
  - us-east-1
  - "-eu"
waves: [{name: all, select: {per_region: 1}}]
)"),
            "p.yaml:4: regions[1]: region \"-eu\" must start with a letter or digit and hold "
            "only letters, digits, '.', '_' and '-'");
  EXPECT_EQ(ErrorOf(R"(pipeline: web
regions: ["eu\u001b[31m"]
waves: [{name: all, select: {per_region: 1}}]
)"),
            "p.yaml:2: regions[0]: region \"eu\\x1b[31m\" must start with a letter or digit and "
            "hold only letters, digits, '.', '_' and '-'");
  EXPECT_EQ(ErrorOf("pipeline: web\nregions: [" + std::string(254, 'a') +
                    "]\nwaves: [{name: all, select: {per_region: 1}}]\n"),
            "p.yaml:2: regions[0]: region is 254 characters long (at most 253)");
}

TEST(ParsePipelineTest, RegionNamesMayUseDotsAndUnderscores) {
  Pipeline p = Parsed(R"(pipeline: web
regions: [us-east-1, eu_west.2, AP9]
waves: [{name: all, select: {per_region: 1}}]
)");
  EXPECT_EQ(p.regions, (std::vector<std::string>{"us-east-1", "eu_west.2", "AP9"}));
}

TEST(ParsePipelineTest, UnknownNotifyEventIsAnError) {
  EXPECT_EQ(ErrorOf(R"(pipeline: web
regions: [us-east-1]
waves: [{name: all, select: {per_region: 1}}]
notify:
  - url: "https://hooks.example.com/x"
    events: [failed, exploded]
)"),
            "p.yaml:6: notify[0].events[1]: unknown event \"exploded\" (allowed: "
            "release_started, wave_passed, succeeded, failed, rolled_back, approval_needed, "
            "aborted, bringup_failed, bringup_rolled_back, bringup_succeeded)");
}

TEST(ParsePipelineTest, WindowTimeMustBeHoursAndMinutes) {
  EXPECT_EQ(ErrorOf(R"(pipeline: web
regions: [us-east-1]
waves: [{name: all, select: {per_region: 1}}]
window: {start: "9am", end: "17:00"}
)"),
            "p.yaml:4: window.start: expected a UTC time of day as \"HH:MM\", got \"9am\"");
}

TEST(ParsePipelineTest, WindowMustEndAfterItStarts) {
  EXPECT_EQ(ErrorOf(R"(pipeline: web
regions: [us-east-1]
waves: [{name: all, select: {per_region: 1}}]
window:
  start: "22:00"
  end: "06:00"
)"),
            "p.yaml:6: window.end: must be later than start \"22:00\" (a window ends the same UTC "
            "day; use \"24:00\" for midnight)");
}

TEST(ParsePipelineTest, UnknownWindowDayIsAnError) {
  EXPECT_EQ(ErrorOf(R"(pipeline: web
regions: [us-east-1]
waves: [{name: all, select: {per_region: 1}}]
window: {start: "09:00", end: "17:00", days: [mon, monday]}
)"),
            "p.yaml:4: window.days[1]: unknown day \"monday\" (allowed: sun, mon, tue, wed, thu, "
            "fri, sat)");
}

// --- Documents ---

TEST(ParsePipelineTest, MalformedYamlIsASyntaxErrorWithItsLine) {
  EXPECT_EQ(ErrorOf(R"(pipeline: web
regions: [us-east-1
waves: [{name: all, select: {per_region: 1}}]
)"),
            "p.yaml:3: syntax error: end of sequence flow not found");
}

TEST(ParsePipelineTest, DeepNestingIsASyntaxError) {
  std::string yaml = "pipeline: web\nregions: " + std::string(1000, '[') + std::string(1000, ']');
  EXPECT_EQ(ErrorOf(yaml), "p.yaml:2: syntax error: nested too deeply");
}

TEST(ParsePipelineTest, EmptyDocumentIsAnError) {
  EXPECT_EQ(ErrorOf("# nothing yet\n"), "p.yaml:1: (document): expected a mapping, got nothing");
}

TEST(ParsePipelineTest, SecondDocumentIsAnError) {
  EXPECT_EQ(ErrorOf(R"(pipeline: web
regions: [us-east-1]
waves: [{name: all, select: {per_region: 1}}]
---
pipeline: api
)"),
            "p.yaml:4: (document): a pipeline file holds one YAML document; another one starts "
            "here");
}

TEST(ParsePipelineTest, EmptyDocumentsAfterTheFirstAreIgnored) {
  EXPECT_EQ(Parsed(R"(---
pipeline: web
regions: [us-east-1]
waves: [{name: all, select: {per_region: 1}}]
---
# nothing here
---
)")
                .name,
            "web");
}

// yaml-cpp 0.7 loops forever, allocating, on a stray top-level flow indicator
// (jbeder/yaml-cpp#1040); the loader must report it instead.
TEST(ParsePipelineTest, StrayLeadingCommaIsASyntaxError) {
  EXPECT_EQ(ErrorOf(R"(,pipeline: web
regions: [us-east-1]
waves: [{name: all, select: {per_region: 1}}]
)"),
            "p.yaml:1: syntax error: unexpected \",\"");
}

TEST(ParsePipelineTest, StrayCommaAfterAFlowDocumentIsASyntaxError) {
  EXPECT_EQ(ErrorOf("{pipeline: web, regions: [us-east-1]},\n"),
            "p.yaml:1: syntax error: unexpected \",\"");
}

// --- HostSelector ---

TEST(HostSelectorTest, CountSelectsAtMostTheHostsOfTheRegion) {
  HostSelector two{HostSelector::Kind::kCount, 2};
  EXPECT_EQ(two.Count(5), 2);
  EXPECT_EQ(two.Count(2), 2);
  EXPECT_EQ(two.Count(1), 1);
}

TEST(HostSelectorTest, PercentageRoundsUp) {
  auto percent = [](int value) { return HostSelector{HostSelector::Kind::kPercent, value}; };
  EXPECT_EQ(percent(50).Count(3), 2);
  EXPECT_EQ(percent(50).Count(4), 2);
  EXPECT_EQ(percent(33).Count(3), 1);
  EXPECT_EQ(percent(34).Count(3), 2);
  EXPECT_EQ(percent(1).Count(1), 1);
  EXPECT_EQ(percent(1).Count(101), 2);
  EXPECT_EQ(percent(100).Count(7), 7);
}

TEST(HostSelectorTest, EmptyRegionSelectsNoHosts) {
  EXPECT_EQ((HostSelector{HostSelector::Kind::kCount, 3}).Count(0), 0);
  EXPECT_EQ((HostSelector{HostSelector::Kind::kPercent, 100}).Count(0), 0);
}

TEST(HostSelectorTest, ToStringShowsCountOrPercentage) {
  EXPECT_EQ((HostSelector{HostSelector::Kind::kCount, 1}).ToString(), "1");
  EXPECT_EQ((HostSelector{HostSelector::Kind::kPercent, 50}).ToString(), "50%");
}

// --- Files and directories ---

constexpr char kWebPipeline[] = R"(pipeline: web
regions: [us-east-1]
waves: [{name: all, select: {per_region: 1}}]
)";

constexpr char kApiPipeline[] = R"(pipeline: api
regions: [eu-west-1]
waves: [{name: all, select: {per_region: "100%"}}]
)";

// Each test gets a fresh directory under /tmp, removed afterwards.
class PipelineFilesTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char pattern[] = "/tmp/lockstep-pipeline-test-XXXXXX";
    ASSERT_NE(mkdtemp(pattern), nullptr);
    dir_ = pattern;
  }
  void TearDown() override {
    std::error_code ec;
    std::filesystem::remove_all(dir_, ec);
  }

  std::string Write(const std::string& name, const std::string& text) {
    std::string path = dir_ + "/" + name;
    std::ofstream(path) << text;
    return path;
  }

  std::string dir_;
};

TEST_F(PipelineFilesTest, LoadPipelineFileRemembersItsPath) {
  std::string path = Write("web.yaml", kWebPipeline);
  StatusOr<Pipeline> p = LoadPipelineFile(path);
  ASSERT_TRUE(p.ok()) << p.status().ToString();
  EXPECT_EQ(p->name, "web");
  EXPECT_EQ(p->file, path);
}

TEST_F(PipelineFilesTest, LoadPipelineFileErrorsNameThePath) {
  std::string path = Write("web.yaml", R"(pipeline: web
regions: [us-east-1]
waves: [{name: all, select: {per_region: 1}, bake: soon}]
)");
  StatusOr<Pipeline> p = LoadPipelineFile(path);
  ASSERT_FALSE(p.ok());
  EXPECT_EQ(p.status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(p.status().message(), path +
                                      ":3: waves[0].bake: bad duration \"soon\": expected a "
                                      "number (use forms like 500ms, 30s, 2m, 1h)");
}

TEST_F(PipelineFilesTest, MissingFileIsNotFound) {
  StatusOr<Pipeline> p = LoadPipelineFile(dir_ + "/absent.yaml");
  ASSERT_FALSE(p.ok());
  EXPECT_EQ(p.status().code(), StatusCode::kNotFound);
  EXPECT_EQ(p.status().message(), dir_ + "/absent.yaml: no such file");
}

TEST_F(PipelineFilesTest, LoadPipelineDirLoadsYamlAndYmlFilesInNameOrder) {
  Write("b-web.yml", kWebPipeline);
  Write("a-api.yaml", kApiPipeline);
  Write("README.md", "not a pipeline");
  Write(".#a-api.yaml", "editor lock file, not a pipeline");
  StatusOr<std::vector<Pipeline>> pipelines = LoadPipelineDir(dir_);
  ASSERT_TRUE(pipelines.ok()) << pipelines.status().ToString();
  ASSERT_EQ(pipelines->size(), 2u);
  EXPECT_EQ((*pipelines)[0].name, "api");
  EXPECT_EQ((*pipelines)[0].file, dir_ + "/a-api.yaml");
  EXPECT_EQ((*pipelines)[1].name, "web");
  EXPECT_EQ((*pipelines)[1].file, dir_ + "/b-web.yml");
}

TEST_F(PipelineFilesTest, LoadPipelineDirRejectsOneNameInTwoFilesNamingBoth) {
  Write("a.yaml", kWebPipeline);
  Write("b.yaml", std::string("# the same pipeline again\n") + kWebPipeline);
  StatusOr<std::vector<Pipeline>> pipelines = LoadPipelineDir(dir_);
  ASSERT_FALSE(pipelines.ok());
  EXPECT_EQ(pipelines.status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(pipelines.status().message(),
            dir_ + "/b.yaml:2: pipeline: duplicate pipeline name \"web\", already defined in " +
                dir_ + "/a.yaml:1");
}

TEST_F(PipelineFilesTest, LoadPipelineDirReportsTheBadFile) {
  Write("a.yaml", kWebPipeline);
  Write("b.yaml", "pipeline: api\nregions: [eu-west-1]\nwaves: []\n");
  StatusOr<std::vector<Pipeline>> pipelines = LoadPipelineDir(dir_);
  ASSERT_FALSE(pipelines.ok());
  EXPECT_EQ(pipelines.status().message(),
            dir_ + "/b.yaml:3: waves: empty list; a pipeline needs at least one wave");
}

TEST_F(PipelineFilesTest, LoadPipelineDirOfEmptyDirectoryIsEmpty) {
  StatusOr<std::vector<Pipeline>> pipelines = LoadPipelineDir(dir_);
  ASSERT_TRUE(pipelines.ok()) << pipelines.status().ToString();
  EXPECT_TRUE(pipelines->empty());
}

TEST_F(PipelineFilesTest, LoadPipelineDirOfMissingDirectoryNamesIt) {
  StatusOr<std::vector<Pipeline>> pipelines = LoadPipelineDir(dir_ + "/absent");
  ASSERT_FALSE(pipelines.ok());
  EXPECT_EQ(pipelines.status().code(), StatusCode::kNotFound);
  EXPECT_EQ(pipelines.status().message(), dir_ + "/absent: no such pipeline directory");
}

TEST(ParsePipelineTest, RegionsTakeAStageAndAHookOutputPolicy) {
  Pipeline p = Parsed(R"(pipeline: web
regions:
  - us-east-1
  - {name: eu-west-1, hook_output: none}
  - {name: ap-southeast-2, stage: bringup}
  - {name: sa-east-1, stage: serving, hook_output: tail}
waves:
  - {name: canary, select: {per_region: 1}}
  - {name: us, select: {regions: [us-east-1], hosts: "100%"}}
  - {name: all, select: {per_region: "100%"}}
artifacts:
  mirrors:
    ap-southeast-2: "http://mirror.ap.example:8080/"
    eu-west-1: "https://mirror.eu.example/cache"
)");
  EXPECT_EQ(p.regions,
            (std::vector<std::string>{"us-east-1", "eu-west-1", "ap-southeast-2", "sa-east-1"}));
  EXPECT_EQ(p.BringupRegions(), (std::vector<std::string>{"ap-southeast-2"}));
  EXPECT_TRUE(p.IsBringup("ap-southeast-2"));
  EXPECT_FALSE(p.IsBringup("sa-east-1"));
  EXPECT_TRUE(p.WithholdsHookOutput("eu-west-1"));
  EXPECT_FALSE(p.WithholdsHookOutput("us-east-1"));
  EXPECT_FALSE(p.WithholdsHookOutput("ap-southeast-2"));
  // per_region waves cover the serving regions; the bring-up region has a track of its own.
  EXPECT_EQ(p.waves[0].regions, (std::vector<std::string>{"us-east-1", "eu-west-1", "sa-east-1"}));
  EXPECT_TRUE(p.waves[0].per_region);
  EXPECT_FALSE(p.waves[1].per_region);
  // A mirror replaces the scheme and host, and keeps the path and query.
  EXPECT_EQ(p.MirrorUrl("ap-southeast-2", "https://ci.example.com/builds/v1.tar.gz?x=1"),
            "http://mirror.ap.example:8080/builds/v1.tar.gz?x=1");
  EXPECT_EQ(p.MirrorUrl("eu-west-1", "http://ci:81/a.tgz"),
            "https://mirror.eu.example/cache/a.tgz");
  EXPECT_EQ(p.MirrorUrl("us-east-1", "http://ci:81/a.tgz"), "");
}

TEST(ParsePipelineTest, BadRegionStagesPoliciesAndMirrorsAreErrorsNamingTheField) {
  EXPECT_EQ(ErrorOf(R"(pipeline: web
regions: [us-east-1, {name: ap, stage: later}]
waves: [{name: all, select: {per_region: 1}}]
)"),
            "p.yaml:2: regions[1].stage: unknown value \"later\" (allowed: serving, bringup; a "
            "bare name is serving)");
  EXPECT_EQ(ErrorOf(R"(pipeline: web
regions: [us-east-1, {name: ap, hook_output: all}]
waves: [{name: all, select: {per_region: 1}}]
)"),
            "p.yaml:2: regions[1].hook_output: unknown value \"all\" (allowed: tail, none)");
  EXPECT_EQ(ErrorOf(R"(pipeline: web
regions: [us-east-1, {stage: bringup}]
waves: [{name: all, select: {per_region: 1}}]
)"),
            "p.yaml:2: regions[1].name: required key is missing; e.g. {name: ap-southeast-2, "
            "stage: bringup}");
  EXPECT_EQ(ErrorOf(R"(pipeline: web
regions: [{name: ap, stage: bringup}]
waves: [{name: all, select: {per_region: 1}}]
)"),
            "p.yaml:2: regions: every region is in bring-up; a pipeline needs at least one "
            "serving region (a bare name, or stage: serving)");
  EXPECT_EQ(ErrorOf(R"(pipeline: web
regions: [us-east-1, {name: ap, stage: bringup}]
waves: [{name: all, select: {regions: [us-east-1, ap]}}]
)"),
            "p.yaml:3: waves[0].select.regions: region \"ap\" is in bring-up: it takes every "
            "release in waves of its own (list it here once it is promoted with stage: serving)");
  EXPECT_EQ(ErrorOf(R"(pipeline: web
regions: [us-east-1]
waves: [{name: all, select: {per_region: 1}}]
artifacts: {mirrors: {eu-west-1: "http://m:80"}}
)"),
            "p.yaml:4: artifacts.mirrors: undeclared region \"eu-west-1\" (declared in regions: "
            "us-east-1)");
  EXPECT_EQ(ErrorOf(R"(pipeline: web
regions: [us-east-1]
waves: [{name: all, select: {per_region: 1}}]
artifacts: {mirrors: {us-east-1: "http://user:pw@m:80"}}
)"),
            "p.yaml:4: artifacts.mirrors.us-east-1: must not contain credentials (user:password@ "
            "before the host); they would be logged, stored and sent to every agent");
  EXPECT_EQ(ErrorOf(R"(pipeline: web
regions: [us-east-1]
waves: [{name: all, select: {per_region: 1}}]
artifacts: {mirrors: {us-east-1: "ftp://m"}}
)"),
            "p.yaml:4: artifacts.mirrors.us-east-1: expected an http:// or https:// URL, got "
            "\"ftp://m\"");
  EXPECT_EQ(ErrorOf(R"(pipeline: web
regions: [us-east-1]
waves: [{name: all, select: {per_region: 1}}]
artifacts: {mirrors: [http://m]}
)"),
            "p.yaml:4: artifacts.mirrors: expected a mapping of region to base URL, got a list");
}

TEST(ParsePipelineTest, LinksAreUrlTemplatesFilledWithEncodedCommits) {
  Pipeline p = Parsed(R"(pipeline: web
regions: [us-east-1]
waves: [{name: all, select: {per_region: 1}}]
links:
  commit: "https://github.com/org/repo/commit/{sha}"
  compare: "https://github.com/org/repo/compare/{from}...{to}"
)");
  EXPECT_EQ(p.CommitUrl("abc123"), "https://github.com/org/repo/commit/abc123");
  EXPECT_EQ(p.CompareUrl("0ff1ce", "abc123"),
            "https://github.com/org/repo/compare/0ff1ce...abc123");
  // A commit is whatever the caller said: it cannot add a path, a query or a script.
  EXPECT_EQ(p.CommitUrl("a/../b?x=<y>"),
            "https://github.com/org/repo/commit/a%2F..%2Fb%3Fx%3D%3Cy%3E");
  EXPECT_EQ(p.CommitUrl(""), "");
  EXPECT_EQ(p.CompareUrl("", "abc"), "");
  Pipeline none = Parsed(R"(pipeline: web
regions: [us-east-1]
waves: [{name: all, select: {per_region: 1}}]
)");
  EXPECT_EQ(none.CommitUrl("abc"), "");
}

TEST(ParsePipelineTest, LinksNeedTheirPlaceholdersAndAnHttpUrl) {
  EXPECT_EQ(ErrorOf(R"(pipeline: web
regions: [us-east-1]
waves: [{name: all, select: {per_region: 1}}]
links: {commit: "https://code.example/c/"}
)"),
            "p.yaml:4: links.commit: must contain \"{sha}\" (replaced by the release's commit), "
            "got \"https://code.example/c/\"");
  EXPECT_EQ(ErrorOf(R"(pipeline: web
regions: [us-east-1]
waves: [{name: all, select: {per_region: 1}}]
links: {compare: "https://code.example/compare/{to}"}
)"),
            "p.yaml:4: links.compare: must contain \"{from}\" and \"{to}\" (the previous "
            "release's commit and this one's), got \"https://code.example/compare/{to}\"");
  EXPECT_EQ(ErrorOf(R"(pipeline: web
regions: [us-east-1]
waves: [{name: all, select: {per_region: 1}}]
links: {commit: "javascript:alert(1)//{sha}"}
)"),
            "p.yaml:4: links.commit: expected an http:// or https:// URL, got "
            "\"javascript:alert(1)//{sha}\"");
  EXPECT_EQ(ErrorOf(R"(pipeline: web
regions: [us-east-1]
waves: [{name: all, select: {per_region: 1}}]
links: {tree: "https://x/{sha}"}
)"),
            "p.yaml:4: links.tree: unknown key (allowed: commit, compare)");
}

}  // namespace
}  // namespace lockstep
