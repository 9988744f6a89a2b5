#include "orchestrator/server/http_metrics.h"

#include <algorithm>
#include <sstream>

#include "orchestrator/engine/engine.h"
#include "orchestrator/server/hub.h"
#include "orchestrator/store/store.h"

namespace lockstep {
namespace {

std::string EscapeLabel(const std::string& v) {
  std::string out;
  for (char c : v) {
    if (c == '\\' || c == '"') out += '\\';
    if (c == '\n') {
      out += "\\n";
      continue;
    }
    out += c;
  }
  return out;
}

std::string Number(double v) {
  std::ostringstream s;
  s << v;
  return s.str();
}

}  // namespace

void HttpMetrics::Histogram::Observe(double v) {
  for (size_t i = 0; i < bounds.size(); ++i) {
    if (v <= bounds[i]) ++buckets[i];
  }
  sum += v;
  ++count;
}

void HttpMetrics::Histogram::Write(std::string& out, const std::string& name) const {
  for (size_t i = 0; i < bounds.size(); ++i) {
    out += name + "_bucket{le=\"" + Number(bounds[i]) + "\"} " + std::to_string(buckets[i]) + "\n";
  }
  out += name + "_bucket{le=\"+Inf\"} " + std::to_string(count) + "\n";
  out += name + "_sum " + Number(sum) + "\n";
  out += name + "_count " + std::to_string(count) + "\n";
}

HttpMetrics::HttpMetrics(const Engine* engine, StoreReader* store, const Hub* hub,
                         const Clock* clock)
    : engine_(engine), store_(store), hub_(hub), clock_(clock) {}

void HttpMetrics::RecordRelease(const ReleaseRecord& r, const std::string& event) {
  bool rollback_kind = r.kind == release_kind::kRollback;
  Histogram* h = nullptr;
  if (event == "succeeded") {
    h = rollback_kind ? &rollback_seconds_ : &rollout_seconds_;
  } else if (event == "rolled_back" || event == "aborted") {
    h = &rollback_seconds_;
  }
  if (!h || r.started_at <= 0) return;
  UnixMs end = r.finished_at > 0 ? r.finished_at : clock_->Now();
  absl::MutexLock lock(&mu_);
  h->Observe(static_cast<double>(std::max<UnixMs>(0, end - r.started_at)) / 1000.0);
}

void HttpMetrics::CountResponse(int http_status) {
  absl::MutexLock lock(&mu_);
  ++requests_by_code_[http_status];
}

StatusOr<std::map<std::string, uint64_t>> HttpMetrics::GateCounts(const ReleaseRecord& r) {
  {
    absl::MutexLock lock(&mu_);
    auto it = final_gate_counts_.find(r.id);
    if (it != final_gate_counts_.end()) return it->second;
  }
  LOCKSTEP_ASSIGN_OR_RETURN(auto results, store_->GateResults(r.id));
  std::map<std::string, uint64_t> counts;
  for (const auto& g : results) ++counts[g.verdict];
  if (release_state::IsFinal(r.state)) {
    absl::MutexLock lock(&mu_);
    final_gate_counts_[r.id] = counts;
  }
  return counts;
}

StatusOr<std::string> HttpMetrics::Render(const ServerCounters& server) {
  std::string out;
  out += "# HELP lockstep_releases Releases in the store by pipeline and state.\n";
  out += "# TYPE lockstep_releases gauge\n";
  std::map<std::string, uint64_t> verdicts = {{"pass", 0}, {"fail", 0}, {"inconclusive", 0}};
  for (const auto& p : engine_->pipelines()) {
    LOCKSTEP_ASSIGN_OR_RETURN(auto list, store_->FindReleases(ReleaseQuery::Newest(p.name, 0)));
    std::map<std::string, int> by_state;
    for (const auto& r : list) {
      ++by_state[r.state];
      LOCKSTEP_ASSIGN_OR_RETURN(auto counts, GateCounts(r));
      for (const auto& [v, n] : counts) verdicts[v] += n;
    }
    for (const auto& [state, n] : by_state) {
      out += "lockstep_releases{pipeline=\"" + EscapeLabel(p.name) + "\",state=\"" +
             EscapeLabel(state) + "\"} " + std::to_string(n) + "\n";
    }
  }
  LOCKSTEP_ASSIGN_OR_RETURN(auto agents, store_->Agents());
  std::map<std::string, int> connected;
  for (const auto& p : engine_->pipelines()) {
    for (const auto& region : p.regions) connected[region];
  }
  for (const auto& a : agents) connected[a.region] += a.connected ? 1 : 0;
  out += "# HELP lockstep_agents_connected Agents connected now, by region.\n";
  out += "# TYPE lockstep_agents_connected gauge\n";
  for (const auto& [region, n] : connected) {
    out += "lockstep_agents_connected{region=\"" + EscapeLabel(region) + "\"} " +
           std::to_string(n) + "\n";
  }
  out += "# HELP lockstep_agent_refusals_total Agent hellos refused, by reason.\n";
  out += "# TYPE lockstep_agent_refusals_total counter\n";
  for (const auto& [reason, n] : hub_->RefusalCounts()) {
    out += "lockstep_agent_refusals_total{reason=\"" + EscapeLabel(reason) + "\"} " +
           std::to_string(n) + "\n";
  }
  out +=
      "# HELP lockstep_http_connections_refused_total HTTP connections refused because their "
      "client address had too many open.\n"
      "# TYPE lockstep_http_connections_refused_total counter\n"
      "lockstep_http_connections_refused_total " +
      std::to_string(server.refused_connections) +
      "\n"
      "# HELP lockstep_http_slow_requests_total HTTP requests dropped because they did not "
      "arrive within the request timeout.\n"
      "# TYPE lockstep_http_slow_requests_total counter\n"
      "lockstep_http_slow_requests_total " +
      std::to_string(server.slow_requests) + "\n";
  out +=
      "# HELP lockstep_gate_verdicts_dropped_total Gate verdicts dropped: unknown check ids or "
      "answers from an agent that was not asked.\n"
      "# TYPE lockstep_gate_verdicts_dropped_total counter\n"
      "lockstep_gate_verdicts_dropped_total " +
      std::to_string(engine_->gate_verdicts_dropped()) + "\n";
  {
    // Where artifacts came from, per region: a regional mirror saves crossing an ocean once
    // per host; origin fetches in a region with a mirror mean the mirror is failing.
    const auto fetches = engine_->ArtifactFetchCounts();
    out +=
        "# HELP lockstep_artifact_fetches_total Artifacts agents fetched, by region and source "
        "(mirror or origin).\n"
        "# TYPE lockstep_artifact_fetches_total counter\n";
    for (const auto& [region, c] : fetches) {
      const std::string r = EscapeLabel(region);
      out += "lockstep_artifact_fetches_total{region=\"" + r + "\",source=\"mirror\"} " +
             std::to_string(c.mirror_fetches) + "\n";
      out += "lockstep_artifact_fetches_total{region=\"" + r + "\",source=\"origin\"} " +
             std::to_string(c.origin_fetches) + "\n";
    }
    out +=
        "# HELP lockstep_artifact_fetch_bytes_total Artifact bytes agents fetched, by region and "
        "source.\n"
        "# TYPE lockstep_artifact_fetch_bytes_total counter\n";
    for (const auto& [region, c] : fetches) {
      const std::string r = EscapeLabel(region);
      out += "lockstep_artifact_fetch_bytes_total{region=\"" + r + "\",source=\"mirror\"} " +
             std::to_string(c.mirror_bytes) + "\n";
      out += "lockstep_artifact_fetch_bytes_total{region=\"" + r + "\",source=\"origin\"} " +
             std::to_string(c.origin_bytes) + "\n";
    }
    out +=
        "# HELP lockstep_artifact_mirror_failures_total Fetches a region's mirror failed (down, "
        "an HTTP error, wrong bytes); the origin was tried next.\n"
        "# TYPE lockstep_artifact_mirror_failures_total counter\n";
    for (const auto& [region, c] : fetches) {
      out += "lockstep_artifact_mirror_failures_total{region=\"" + EscapeLabel(region) + "\"} " +
             std::to_string(c.mirror_failures) + "\n";
    }
  }
  out += "# HELP lockstep_gate_results_total Metric gate evaluations by verdict.\n";
  out += "# TYPE lockstep_gate_results_total counter\n";
  for (const auto& [v, n] : verdicts) {
    out += "lockstep_gate_results_total{verdict=\"" + EscapeLabel(v) + "\"} " + std::to_string(n) +
           "\n";
  }
  absl::MutexLock lock(&mu_);
  out +=
      "# HELP lockstep_rollout_duration_seconds Time from start to success of rollouts "
      "finished since this process started.\n"
      "# TYPE lockstep_rollout_duration_seconds histogram\n";
  rollout_seconds_.Write(out, "lockstep_rollout_duration_seconds");
  out +=
      "# HELP lockstep_rollback_duration_seconds Time from start to the end of releases "
      "rolled back or aborted, and of on-call rollbacks, since this process started.\n"
      "# TYPE lockstep_rollback_duration_seconds histogram\n";
  rollback_seconds_.Write(out, "lockstep_rollback_duration_seconds");
  out += "# HELP lockstep_http_requests_total HTTP requests answered, by status code.\n";
  out += "# TYPE lockstep_http_requests_total counter\n";
  for (const auto& [code, n] : requests_by_code_) {
    out += "lockstep_http_requests_total{code=\"" + std::to_string(code) + "\"} " +
           std::to_string(n) + "\n";
  }
  return out;
}

}  // namespace lockstep
