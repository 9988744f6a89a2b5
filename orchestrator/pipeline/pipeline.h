// Pipeline definitions: what pipelines/*.yaml files mean, loaded and validated.
//
// A Pipeline is immutable configuration: regions, ordered waves, health checks, gates,
// timeouts and rollback policy. Loading validates everything up front; every error names
// the file, the line and the field ("pipelines/monolith.yaml:14: waves[1].bake: bad
// duration \"2x\" ..."), so a platform engineer can fix it without reading code.
//
// Thread safety: Pipeline values are plain data; share them as const.
#pragma once

#include <chrono>
#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "common/status.h"

namespace lockstep {

// How many hosts of a region a wave covers. Waves are cumulative: a wave's selection
// includes the hosts of earlier waves (the first hosts by name), so "per_region: 1" then
// "per_region: 50%" then "100%" walks one host, then half, then every host of each region.
struct HostSelector {
  enum class Kind { kCount, kPercent };
  Kind kind = Kind::kPercent;
  int value = 100;  // a count of hosts, or a percentage in 1..100

  // Number of hosts of a region of `total` hosts selected. A percentage rounds up, so a
  // non-zero percentage of a non-empty region selects at least one host.
  int Count(int total) const;
  std::string ToString() const;  // "1", "50%"
};

// How many failed hosts a wave tolerates before it fails: a count, or a percentage of the
// hosts that wave added (waves are cumulative; a host belongs to the wave that first
// selected it). A percentage rounds down: "10%" of 9 hosts tolerates none.
struct FailureTolerance {
  bool percent = false;
  int value = 0;

  int Allowed(int hosts) const;
  std::string ToString() const;  // "2", "10%"
};

struct WaveSpec {
  std::string name;
  // The regions this wave touches; for a per_region wave, every serving region of the
  // pipeline (bring-up regions walk the per_region waves in a track of their own).
  std::vector<std::string> regions;
  bool per_region = false;
  HostSelector hosts;
  std::chrono::milliseconds bake{0};
  bool manual_approval = false;
  // Overrides the pipeline's rollback.tolerate_failed_hosts while this wave is in progress.
  std::optional<FailureTolerance> tolerate_failed_hosts;
  int line = 0;  // 1-based line of the wave in its file, for messages
};

struct HttpProbeSpec {
  std::string url;
  int expect_status = 200;
  std::chrono::milliseconds timeout{2000};
  int attempts = 1;
  std::chrono::milliseconds interval{1000};
};

struct MetricGateSpec {
  std::string name;        // defaults to "metric-<index>"
  std::string prometheus;  // base URL of a Prometheus HTTP API
  std::string query;       // PromQL; "{region}" is replaced by the region evaluated
  std::optional<double> max;
  std::optional<double> min;
  // Only these regions (each evaluated by an agent of that region, against this URL);
  // empty means every region of the pipeline.
  std::vector<std::string> regions;
  int consecutive_failures = 1;              // failing evaluations in a row that fail the gate
  std::chrono::milliseconds interval{5000};  // between evaluations
  std::chrono::milliseconds inconclusive_deadline{60000};  // no data/errors this long fails
  // How long after the wave's hosts switched before an evaluation counts. Metrics lag: a
  // scrape interval (15s by default in Prometheus), then a rate() needs two samples of the
  // new process. 30s covers both at Prometheus's defaults; evaluations Prometheus made
  // earlier never count, whatever the wave's bake.
  std::chrono::milliseconds delay{30000};
  // Passing evaluations in a row (each made after switch + delay) the wave needs from this
  // gate in every region before it may finish.
  int passes = 3;
};

struct Timeouts {
  std::chrono::milliseconds hook{60000};
  std::chrono::milliseconds fetch{120000};
  std::chrono::milliseconds agent_lost{30000};
  // How long a wave may wait for a manual approval before it counts as a failed gate.
  std::chrono::milliseconds approval{24 * 3600 * 1000};
};

struct RollbackPolicy {
  bool automatic = true;
  FailureTolerance tolerate_failed_hosts;  // for waves that do not set their own
  enum class OnFailure { kRollback, kPause };
  OnFailure on_failure = OnFailure::kRollback;
};

struct GithubTrigger {
  std::string repository;  // "org/repo"
  std::string branch = "main";
  // http:// or https:// URL template without credentials; "{sha}" is replaced by the commit.
  std::string artifact;
  std::string secret_file;  // file holding the webhook secret
  std::string secret_env;   // or an environment variable holding it
  // lockstepd downloads the artifact once to compute its sha256; it stops reading past this
  // many bytes. `max_artifact_bytes: 500MiB` (B, KB, MB, GB, KiB, MiB, GiB, TiB or none).
  int64_t max_artifact_bytes = int64_t{2} << 30;
  // How long a pushed commit's release waits (waiting_for_artifact) for CI to publish its
  // artifact, counted from the push; then it fails.
  std::chrono::milliseconds artifact_wait{std::chrono::minutes(30)};
};

struct NotifySpec {
  std::string url;
  std::vector<std::string> events;  // empty: every event
};

// A daily window in UTC in which new rollouts may start: "09:00-17:00", optional weekdays.
struct DeployWindow {
  int start_minute = 0;  // minutes after 00:00 UTC
  int end_minute = 0;
  std::vector<int> weekdays;  // 0 = Sunday .. 6 = Saturday; empty = every day
};

// How a region of a pipeline takes part in releases.
struct RegionSpec {
  std::string name;
  // A serving region is in the waves: its failures fail the release. A bring-up region (one
  // being built) takes every release at the same time, in waves of its own; its failures
  // roll back its own hosts only and never fail, hold or roll back the serving regions.
  enum class Stage { kServing, kBringup };
  Stage stage = Stage::kServing;
  // Whether hook output may leave the region: kTail sends a failed hook's last lines to
  // lockstepd (shown in `release show` and on the dashboard); kNone keeps it on the host.
  enum class HookOutput { kTail, kNone };
  HookOutput hook_output = HookOutput::kTail;

  bool bringup() const { return stage == Stage::kBringup; }
  const char* StageName() const { return bringup() ? "bringup" : "serving"; }
  const char* HookOutputName() const { return hook_output == HookOutput::kNone ? "none" : "tail"; }
};

struct Pipeline {
  std::string name;
  std::string file;                      // the file it was loaded from, for messages
  std::vector<std::string> regions;      // every region, serving and bring-up, in file order
  std::vector<RegionSpec> region_specs;  // the same regions, with their stage and policies
  // Per region, a base URL ("http://mirror.ap:8080") that replaces the artifact URL's scheme
  // and host: agents fetch from it first and from the origin if it fails.
  std::map<std::string, std::string> mirrors;
  // URL templates for people: a release's commit ("{sha}") and the change since the release
  // before ("{from}", "{to}": commits), e.g. a code host's commit and compare pages.
  struct Links {
    std::string commit;
    std::string compare;
  };
  Links links;
  std::vector<WaveSpec> waves;
  int concurrency_per_region = 10;
  bool check_hook = true;
  std::vector<HttpProbeSpec> http_probes;
  std::vector<MetricGateSpec> metric_gates;
  Timeouts timeouts;
  RollbackPolicy rollback;
  std::optional<GithubTrigger> github;
  std::vector<NotifySpec> notify;
  std::optional<DeployWindow> window;

  bool HasRegion(const std::string& region) const;
  // The region's spec; a region the pipeline does not declare is a serving region that may
  // send hook output (the defaults).
  RegionSpec Region(const std::string& region) const;
  bool IsBringup(const std::string& region) const { return Region(region).bringup(); }
  bool WithholdsHookOutput(const std::string& region) const {
    return Region(region).hook_output == RegionSpec::HookOutput::kNone;
  }
  std::vector<std::string> BringupRegions() const;
  // The URL an agent of `region` tries first for `artifact_url`, "" if the region has no
  // mirror: the mirror's base followed by the artifact URL's path and query.
  std::string MirrorUrl(const std::string& region, const std::string& artifact_url) const;
  // links.commit for `sha`, links.compare from `from` to `to`; "" without a template or a
  // commit. Substituted values are percent-encoded.
  std::string CommitUrl(const std::string& sha) const;
  std::string CompareUrl(const std::string& from, const std::string& to) const;
};

// Parses one pipeline document. `file` is used only in messages.
StatusOr<Pipeline> ParsePipeline(const std::string& yaml_text, const std::string& file);
StatusOr<Pipeline> LoadPipelineFile(const std::string& path);
// Every key path the loader accepts, e.g. "waves[].select.per_region": built from the same
// key lists the loader checks, so the reference can be tested against it.
std::vector<std::string> PipelineKeyPaths();

// Loads every *.yaml / *.yml file of a directory, in name order. Two files defining the same
// pipeline name is an error naming both files.
StatusOr<std::vector<Pipeline>> LoadPipelineDir(const std::string& dir);

}  // namespace lockstep
