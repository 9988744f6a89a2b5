// Convergence: when no release is in flight, every connected host of a pipeline should run
// the pipeline's current release (the last that succeeded). A new host, a host back from a
// partition, or one found running something else (drift) is brought to it with one DEPLOY
// task, tracked as a host row of that release.

#include <spdlog/spdlog.h>

#include "orchestrator/engine/engine.h"
#include "orchestrator/engine/engine_internal.h"
#include "orchestrator/engine/history.h"

namespace lockstep {

namespace {
// A failed convergence is tried again after this long, not in a tight loop.
constexpr int64_t kConvergeRetryMs = 30'000;
}  // namespace

Status Engine::Converge(const Pipeline& p, const ReleaseRecord& desired, UnixMs now, Pass& pass) {
  releases_seen_[desired.id] = desired;
  LOCKSTEP_RETURN_IF_ERROR(LoadAgents());
  HostMap* hosts = nullptr;
  // Bring-up regions the desired release has not reached by convergence: one still walking
  // its track (the track moves its hosts), or one whose track failed and went back (the
  // release failed there; the region waits for the next release).
  std::set<std::string> not_converged;

  for (const auto& [name, a] : agents_) {
    if (a.pipeline != p.name || !a.connected || a.current_version == desired.version) continue;
    if (!hosts) {
      LOCKSTEP_ASSIGN_OR_RETURN(auto loaded, HostsOf(desired.id));
      hosts = loaded;
      pass.live_releases.insert(desired.id);
      LOCKSTEP_ASSIGN_OR_RETURN(auto tracks, store_->BringupTracks(desired.id));
      for (const auto& t : tracks) {
        if (t.state != bringup_state::kSucceeded && t.state != bringup_state::kSuperseded) {
          not_converged.insert(t.region);
        }
      }
    }
    if (not_converged.count(a.region)) continue;
    HostRecord h;
    auto it = hosts->find(a.name);
    if (it != hosts->end()) {
      h = it->second;
      if (HostInFlight(h)) {
        UnixMs deadline = h.task_sent_at + TaskBudgetMs(p, v1::Task::DEPLOY);
        if (now < deadline) {
          pass.WakeAt(deadline);
          continue;
        }
        h.state = host_state::kFailed;
        h.detail = "convergence timed out";
        RecordFailure(h);
      }
      if (h.state == host_state::kFailed && now < h.finished_at + kConvergeRetryMs) {
        pass.WakeAt(h.finished_at + kConvergeRetryMs);
        if (h.detail == "convergence timed out") {
          h.finished_at = now;
          it->second = h;
          pass.changed_hosts.emplace(desired.id, a.name);
        }
        continue;
      }
    } else {
      h.release_id = desired.id;
      h.agent = a.name;
      h.region = a.region;
      h.wave = -1;
    }
    h.from_version = a.current_version;
    h.state = host_state::kConverging;
    h.detail = "converging from " + (a.current_version.empty() ? "nothing" : a.current_version) +
               " to " + desired.version;
    h.started_at = now;
    h.finished_at = 0;
    // Each attempt has its own task id, so the agent runs it again.
    SendStep(pass, p, desired, h, host_step::kConverge, now);
    (*hosts)[a.name] = h;
    pass.changed_hosts.emplace(desired.id, a.name);
    pass.batch.audit.push_back({0, now, "engine", "agent.converge", "agent/" + a.name,
                                "running " +
                                    (a.current_version.empty() ? "nothing" : a.current_version) +
                                    ", expected " + desired.version,
                                "ok"});
    spdlog::info("agent {} runs {}; converging to {}", a.name,
                 a.current_version.empty() ? "nothing" : a.current_version, desired.version);
  }
  return Status::Ok();
}

}  // namespace lockstep
