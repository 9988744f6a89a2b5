// Going back: reverting every host that took a failed or aborted rollout, all regions at
// once; and on-call rollback releases, which take every host straight to their version.

#include <spdlog/spdlog.h>

#include "orchestrator/engine/engine.h"
#include "orchestrator/engine/engine_internal.h"
#include "orchestrator/engine/selection.h"

namespace lockstep {

void Engine::BeginRevert(ReleaseCtx& c, const char* state, const std::string& reason) {
  ReleaseRecord& r = c.r;
  r.state = state;
  r.reason = reason;
  c.release_changed = true;
  Audit(c.pass, c.now, std::string("release.") + state, r, reason);
  c.Event(state, reason);
  spdlog::warn("release {} ({} {}) {}: {}", r.id, c.p.name, r.version, state, reason);
  // Waves that had not finished never will.
  for (auto& w : c.waves) {
    if (w.state == wave_state::kDone || w.state == wave_state::kFailed ||
        w.state == wave_state::kPending) {
      continue;
    }
    w.state = wave_state::kFailed;
    w.finished_at = c.now;
    c.MarkWave(w.index);
  }
  if (!c.previous) {
    // Nothing to go back to (the pipeline's first release): leave hosts where they are.
    r.state = release_state::kFailed;
    r.reason = reason + "; no earlier release to roll back to";
    r.finished_at = c.now;
    Audit(c.pass, c.now, "release.failed", r, r.reason);
    c.Event("failed", r.reason);
    for (auto& [region, t] : c.bringup) {
      if (bringup_state::IsFinal(t.state)) continue;
      t.state = bringup_state::kFailed;
      t.reason = "the release failed; no earlier release to roll back to";
      t.finished_at = c.now;
      c.MarkTrack(region);
    }
    return;
  }
  // Every host that may have switched or stopped the previous release: any host sent an
  // activate (its switch may land, or may have landed before it failed or was lost), done
  // or not. Hosts that only prepared never changed `current`. No waves and no concurrency
  // limit: every region goes back at once.
  // Bring-up regions still taking the release go back with everyone; those already going
  // back (or back) on their own are left to finish.
  for (auto& [region, t] : c.bringup) {
    if (t.state != bringup_state::kRolling && t.state != bringup_state::kSucceeded) continue;
    t.state = bringup_state::kRollingBack;
    t.reason = "the release is going back in every region: " + reason;
    c.MarkTrack(region);
  }
  int reverting = 0;
  for (auto& [name, h] : c.hosts) {
    if (!h.switch_sent) continue;
    if (h.state == host_state::kReverting || h.state == host_state::kReverted) continue;
    h.state = host_state::kReverting;
    h.detail = "reverting to " + c.previous->version;
    h.finished_at = 0;
    SendStep(c.pass, c.p, *c.previous, h, host_step::kRevert, c.now);
    c.MarkHost(name);
    ++reverting;
  }
  if (reverting == 0 && r.state == release_state::kRollingBack) {
    // It failed before any host switched (a bad digest, a hostile artifact): nothing to
    // roll back, so the release simply failed.
    r.state = release_state::kFailed;
    r.reason = reason + "; no host had switched to it";
    r.finished_at = c.now;
    Audit(c.pass, c.now, "release.failed", r, r.reason);
    c.Event("failed", r.reason);
    for (auto& [region, t] : c.bringup) {
      if (t.state != bringup_state::kRollingBack) continue;
      t.state = bringup_state::kRolledBack;
      t.finished_at = c.now;
      c.MarkTrack(region);
    }
  }
}

void Engine::AdvanceRevert(ReleaseCtx& c) {
  ReleaseRecord& r = c.r;
  FailLostOrLateHosts(c);
  int reverting = 0;
  std::string stuck;
  for (const auto& [name, h] : c.hosts) {
    if (h.state == host_state::kReverting) ++reverting;
    if (h.state == host_state::kRevertFailed) {
      stuck += (stuck.empty() ? "" : ", ") + name + " (" + h.detail + ")";
    }
  }
  if (reverting > 0) return;
  for (auto& [region, t] : c.bringup) {
    if (t.state != bringup_state::kRollingBack) continue;
    bool stuck_here = false;
    for (const auto& [name, h] : c.hosts) {
      if (h.region == region && h.state == host_state::kRevertFailed) stuck_here = true;
    }
    t.state = stuck_here ? bringup_state::kFailed : bringup_state::kRolledBack;
    t.finished_at = c.now;
    c.MarkTrack(region);
  }
  r.finished_at = c.now;
  c.release_changed = true;
  if (!stuck.empty()) {
    r.state = release_state::kFailed;
    r.reason += "; rollback incomplete on " + stuck;
    Audit(c.pass, c.now, "release.failed", r, r.reason);
    c.Event("failed", r.reason);
    spdlog::error("release {} rollback incomplete: {}", r.id, stuck);
    return;
  }
  bool aborted = r.state == release_state::kAborting;
  r.state = aborted ? release_state::kAborted : release_state::kRolledBack;
  Audit(c.pass, c.now, std::string("release.") + r.state, r,
        "every host back on " + (c.previous ? c.previous->version : std::string("?")));
  c.Event(aborted ? "aborted" : "rolled_back", r.reason);
  spdlog::info("release {} {}: every host back on {}", r.id, r.state,
               c.previous ? c.previous->version : "?");
}

void Engine::AdvanceRollbackRelease(ReleaseCtx& c) {
  ReleaseRecord& r = c.r;
  WaveRecord& wave = c.waves[0];
  if (wave.state == wave_state::kPending) {
    wave.state = wave_state::kDeploying;
    wave.started_at = c.now;
    c.MarkWave(0);
  }
  // Every connected host of the pipeline, every region, at once. Hosts that are down are
  // not waited for: the rollback's version becomes the pipeline's desired release, and they
  // converge to it when they return.
  int offline = 0;
  for (const auto& [agent_name, a] : c.agents) {
    if (a.pipeline != c.p.name || c.hosts.count(a.name)) continue;
    if (!AgentUp(a, c.now, c.p.timeouts.agent_lost.count())) {
      ++offline;
      continue;
    }
    HostRecord h;
    h.release_id = r.id;
    h.agent = a.name;
    h.region = a.region;
    h.from_version = a.current_version;
    h.started_at = c.now;
    h.state = host_state::kActivating;
    // Every host is asked, even one that reports the target already: a task of the
    // preempted release (or an older one) may still be queued on it. Agents run tasks in
    // order, and one that finds the target current when this task's turn comes answers
    // without running a hook.
    const bool on_target = a.current_version == r.version;
    h.detail = on_target ? "confirming " + r.version : "rolling back to " + r.version;
    SendStep(c.pass, c.p, r, h, on_target ? host_step::kConfirm : host_step::kDeploy, c.now);
    c.hosts.emplace(a.name, std::move(h));
    c.MarkHost(a.name);
  }
  ReopenDrifted(c);
  if (offline > 0 && r.reason.empty()) {
    r.reason = std::to_string(offline) + " host(s) offline; they converge to " + r.version +
               " when they return and the pipeline is resumed";
    c.release_changed = true;
  }
  for (auto& [name, h] : c.hosts) {
    if (h.state != host_state::kActivating) continue;
    // A rollback task is a DEPLOY; its deadline is the prepare and activate budgets.
    UnixMs deadline = h.task_sent_at + TaskBudgetMs(c.p, v1::Task::DEPLOY);
    const AgentRecord* agent = c.Agent(name);
    UnixMs lost_at = (agent ? std::max(LastContact(*agent), h.task_sent_at) : h.task_sent_at) +
                     c.p.timeouts.agent_lost.count();
    if (c.now >= deadline || c.now >= lost_at) {
      h.state = host_state::kFailed;
      h.detail = c.now >= deadline ? "rollback timed out" : "agent lost during rollback";
      h.finished_at = c.now;
      RecordFailure(h);
      c.MarkHost(name);
    } else {
      c.pass.WakeAt(std::min(deadline, lost_at));
    }
  }
  int pending = 0;
  std::string failed;
  for (const auto& [name, h] : c.hosts) {
    if (h.state == host_state::kActivating) ++pending;
    if (h.state == host_state::kFailed) failed += (failed.empty() ? "" : ", ") + name;
  }
  if (pending > 0) return;
  wave.state = failed.empty() ? wave_state::kDone : wave_state::kFailed;
  wave.finished_at = c.now;
  c.MarkWave(0);
  r.finished_at = c.now;
  c.release_changed = true;
  if (failed.empty()) {
    r.state = release_state::kSucceeded;
    Audit(c.pass, c.now, "release.succeeded", r, "every host on " + r.version);
    c.Event("succeeded", "rollback: every host on " + r.version);
    spdlog::info("rollback {} done: every host of {} on {}", r.id, c.p.name, r.version);
  } else {
    r.state = release_state::kFailed;
    r.reason = "rollback incomplete on " + failed;
    Audit(c.pass, c.now, "release.failed", r, r.reason);
    c.Event("failed", r.reason);
  }
}

}  // namespace lockstep
