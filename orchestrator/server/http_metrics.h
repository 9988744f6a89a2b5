// HttpMetrics: what /metrics reports, in Prometheus' text format (version 0.0.4).
//
// Gauges read at each scrape: releases by pipeline and state, agents connected by region.
// Counters: agent hellos refused by reason, HTTP requests by status code, HTTP connections
// refused and slow requests dropped, gate verdicts by verdict and dropped verdicts.
// Histograms kept since this process started: rollout and rollback durations.
//
// The endpoint takes no token (scrapers carry none), so it reveals only counts: no names of
// hosts, tokens or commits. A final release's gate verdicts never change and are counted once.
//
// Thread safety: every method may be called from any thread.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "common/clock.h"
#include "common/status.h"
#include "orchestrator/store/model.h"

namespace lockstep {

class Engine;
class Hub;
class StoreReader;

class HttpMetrics {
 public:
  // All must outlive the metrics.
  HttpMetrics(const Engine* engine, StoreReader* store, const Hub* hub, const Clock* clock);

  // A release event (OnReleaseEvent): ends of releases feed the duration histograms.
  void RecordRelease(const ReleaseRecord& release, const std::string& event)
      ABSL_LOCKS_EXCLUDED(mu_);
  void CountResponse(int http_status) ABSL_LOCKS_EXCLUDED(mu_);

  // Counters the HTTP server keeps itself.
  struct ServerCounters {
    uint64_t refused_connections = 0;
    uint64_t slow_requests = 0;
  };
  StatusOr<std::string> Render(const ServerCounters& server) ABSL_LOCKS_EXCLUDED(mu_);

 private:
  // A Prometheus histogram kept in memory.
  struct Histogram {
    std::vector<double> bounds = {10, 30, 60, 120, 300, 600, 1200, 1800, 3600, 7200};
    std::vector<uint64_t> buckets = std::vector<uint64_t>(bounds.size(), 0);
    double sum = 0;
    uint64_t count = 0;
    void Observe(double v);
    void Write(std::string& out, const std::string& name) const;
  };
  StatusOr<std::map<std::string, uint64_t>> GateCounts(const ReleaseRecord& r)
      ABSL_LOCKS_EXCLUDED(mu_);

  const Engine* const engine_;
  StoreReader* const store_;
  const Hub* const hub_;
  const Clock* const clock_;
  absl::Mutex mu_;
  Histogram rollout_seconds_ ABSL_GUARDED_BY(mu_);
  Histogram rollback_seconds_ ABSL_GUARDED_BY(mu_);
  std::map<int, uint64_t> requests_by_code_ ABSL_GUARDED_BY(mu_);
  std::map<int64_t, std::map<std::string, uint64_t>> final_gate_counts_ ABSL_GUARDED_BY(mu_);
};

}  // namespace lockstep
