// How a rollout advances: waves in order, two phases per wave, bake and metric gates,
// approvals, deadlines, and what a failure does.

#include <spdlog/spdlog.h>

#include <algorithm>

#include "common/duration.h"
#include "common/random.h"
#include "orchestrator/engine/engine.h"
#include "orchestrator/engine/engine_internal.h"
#include "orchestrator/engine/selection.h"

namespace lockstep {

std::string WaveBeyondTolerance(const Pipeline& p, const std::map<std::string, HostRecord>& hosts,
                                const std::function<bool(const HostRecord&)>& counts) {
  std::map<int, std::pair<int, int>> failed_of_wave;  // wave -> (failed, hosts)
  std::map<int, std::string> first_failure;
  for (const auto& [name, h] : hosts) {
    if (!counts(h)) continue;
    auto& [failed, total] = failed_of_wave[h.wave];
    ++total;
    if (h.state != host_state::kFailed) continue;
    ++failed;
    if (!first_failure.count(h.wave)) first_failure[h.wave] = name + ": " + h.detail;
  }
  for (const auto& [w, n] : failed_of_wave) {
    if (w < 0 || static_cast<size_t>(w) >= p.waves.size()) continue;
    const WaveSpec& of = p.waves[static_cast<size_t>(w)];
    const FailureTolerance& tolerance =
        of.tolerate_failed_hosts ? *of.tolerate_failed_hosts : p.rollback.tolerate_failed_hosts;
    if (n.first > tolerance.Allowed(n.second) || (n.first > 0 && n.first == n.second)) {
      return "wave " + of.name + ": " + std::to_string(n.first) + " host(s) failed (" +
             first_failure[w] + "; " + tolerance.ToString() + " tolerated)";
    }
  }
  return "";
}

void Engine::FailLostOrLateHosts(ReleaseCtx& c, const std::set<std::string>* only_regions) {
  for (auto& [name, h] : c.hosts) {
    if (only_regions && !only_regions->count(h.region)) continue;
    bool in_flight = HostInFlight(h);
    // A host that finished is still watched while its release is not over: losing it
    // during the bake is a failure too.
    bool watched = in_flight || h.state == host_state::kDone;
    if (!watched) continue;
    const AgentRecord* agent = c.Agent(name);
    if (in_flight) {
      UnixMs deadline = h.task_sent_at + TaskBudgetMs(c.p, TaskKindOf(h.step));
      if (c.now >= deadline) {
        bool reverting = h.state == host_state::kReverting;
        h.state = reverting ? host_state::kRevertFailed : host_state::kFailed;
        h.detail = h.step + " timed out after " +
                   FormatDuration(std::chrono::milliseconds(c.now - h.task_sent_at));
        h.finished_at = c.now;
        RecordFailure(h);
        c.MarkHost(name);
        continue;
      }
      c.pass.WakeAt(deadline);
    }
    if (!agent) continue;
    const AgentRecord& a = *agent;
    UnixMs since = std::max(LastContact(a), h.task_sent_at);
    UnixMs lost_at = since + c.p.timeouts.agent_lost.count();
    if (c.now >= lost_at) {
      h.state = h.state == host_state::kReverting ? host_state::kRevertFailed : host_state::kFailed;
      h.detail = "agent lost: no contact for " +
                 FormatDuration(std::chrono::milliseconds(c.now - LastContact(a)));
      h.finished_at = c.now;
      RecordFailure(h);
      c.MarkHost(name);
    } else {
      c.pass.WakeAt(lost_at);
    }
  }
}

void Engine::ReopenDrifted(ReleaseCtx& c) {
  for (auto& [name, h] : c.hosts) {
    if (h.state != host_state::kDone) continue;
    const AgentRecord* a = c.Agent(name);
    if (!a || !a->connected || a->current_version == c.r.version) continue;
    h.state = host_state::kActivating;
    h.detail = "reported running " + (a->current_version.empty() ? "nothing" : a->current_version) +
               "; deploying " + c.r.version + " again";
    h.finished_at = 0;
    SendStep(c.pass, c.p, c.r, h, host_step::kDeploy, c.now);
    c.MarkHost(name);
    spdlog::warn("release {}: host {} {}", c.r.id, name, h.detail);
    if (c.r.kind != release_kind::kRollout) continue;
    if (auto t = c.bringup.find(h.region); t != c.bringup.end()) {
      // A bring-up region's wave is not healthy any more either: its bake starts over.
      if (t->second.state == bringup_state::kRolling && t->second.wave == h.wave &&
          t->second.bake_started_at != 0) {
        t->second.bake_started_at = 0;
        c.MarkTrack(h.region);
      }
      continue;
    }
    // The wave it belongs to is not healthy any more: its bake and gates start over once
    // the host is back.
    if (h.wave == c.r.current_wave) {
      WaveRecord& wave = c.waves[static_cast<size_t>(h.wave)];
      if (wave.state == wave_state::kBaking || wave.state == wave_state::kAwaitingApproval) {
        wave.state = wave_state::kDeploying;
        wave.bake_started_at = 0;
        wave.approval_requested_at = 0;
        c.MarkWave(h.wave);
      }
    }
  }
}

void Engine::FailRollout(ReleaseCtx& c, const std::string& reason) {
  WaveRecord& wave = c.waves[static_cast<size_t>(c.r.current_wave)];
  wave.state = wave_state::kFailed;
  wave.finished_at = c.now;
  c.MarkWave(c.r.current_wave);
  bool revert =
      c.p.rollback.automatic && c.p.rollback.on_failure == RollbackPolicy::OnFailure::kRollback;
  if (!revert) {
    c.r.state = release_state::kHalted;
    c.r.reason = reason + " (holding the fleet where it is: abort to roll back, or release a fix)";
    c.release_changed = true;
    Audit(c.pass, c.now, "release.halt", c.r, c.r.reason);
    c.Event("halted", c.r.reason);
    spdlog::warn("release {} halted: {}", c.r.id, c.r.reason);
    return;
  }
  BeginRevert(c, release_state::kRollingBack, reason);
}

std::string Engine::EvaluateGates(ReleaseCtx& c, int wi, const std::vector<std::string>& regions,
                                  UnixMs switched, bool* all_passing) {
  *all_passing = true;
  if (c.p.metric_gates.empty()) return "";
  for (const auto& g : c.p.metric_gates) {
    // Only evaluations Prometheus made this long after the switch judge the new release.
    const UnixMs counts_from = switched + g.delay.count();
    for (const auto& region : regions) {
      if (!g.regions.empty() &&
          std::find(g.regions.begin(), g.regions.end(), region) == g.regions.end()) {
        continue;
      }
      // Verdicts for this wave, gate and region, oldest first.
      int consecutive_failures = 0;
      int consecutive_passes = 0;
      UnixMs last_pass = 0;
      std::string latest_detail;
      for (const auto& res : c.gate_results) {
        if (res.wave != wi || res.gate != g.name || res.region != region) continue;
        // Agents that do not report Prometheus's evaluation time are judged by arrival.
        const UnixMs evaluated = res.evaluated_at > 0 ? res.evaluated_at : res.at;
        if (evaluated < counts_from) continue;  // evidence about the release before
        latest_detail = res.detail;
        if (res.verdict == "fail") {
          ++consecutive_failures;
          consecutive_passes = 0;
        } else if (res.verdict == "pass") {
          consecutive_failures = 0;
          // A pass from before an outage of this process longer than the interval is
          // re-checked, not trusted: nobody watched the release in between.
          const bool before_outage = res.at < started_at_.load() - g.interval.count();
          consecutive_passes = before_outage ? 0 : consecutive_passes + 1;
          last_pass = res.at;
        } else {
          consecutive_passes = 0;  // passes count only in a row
        }
      }
      if (consecutive_failures >= g.consecutive_failures) {
        return "metric gate " + g.name + " failed in " + region + ": " + latest_detail;
      }
      UnixMs conclusive_since = std::max(last_pass, counts_from);
      UnixMs inconclusive_deadline = conclusive_since + g.inconclusive_deadline.count();
      if (consecutive_passes < g.passes) {
        *all_passing = false;
        if (c.now >= inconclusive_deadline) {
          return "metric gate " + g.name + " in " + region + " gave no passing result for " +
                 FormatDuration(std::chrono::milliseconds(c.now - conclusive_since)) +
                 (latest_detail.empty() ? "" : " (last: " + latest_detail + ")");
        }
        c.pass.WakeAt(inconclusive_deadline);
      }

      // Ask again every interval: an agent of the region that is alive, preferring hosts
      // that run the release.
      if (c.now < counts_from) {
        c.pass.WakeAt(counts_from);
        continue;
      }
      auto key = std::make_tuple(c.r.id, wi, g.name, region);
      UnixMs& last_sent = gate_last_sent_[key];
      UnixMs due = last_sent + g.interval.count();
      if (last_sent != 0 && c.now < due) {
        c.pass.WakeAt(due);
        continue;
      }
      const AgentRecord* asked = nullptr;
      for (const auto& [agent_name, a] : c.agents) {
        if (a.pipeline != c.p.name || a.region != region || !a.connected) continue;
        if (!AgentAlive(a, c.now, c.p)) continue;
        auto h = c.hosts.find(a.name);
        bool runs_release = h != c.hosts.end() && h->second.state == host_state::kDone;
        if (!asked || runs_release) asked = &a;
        if (runs_release) break;
      }
      if (!asked) continue;  // no agent to ask now: the inconclusive deadline covers it
      // 128 random bits: a verdict counts only if it names a check this process sent, and
      // only from the agent it was sent to (GateVerdictReceived).
      std::string check_id = "g" + RandomHex(16);
      gate_checks_[check_id] = PendingGateCheck{key, asked->name};
      last_sent = c.now;
      v1::GateCheck check;
      check.set_check_id(check_id);
      check.set_release_id(c.r.id);
      auto* mg = check.mutable_gate();
      auto subst = [&](std::string s) {
        for (size_t pos; (pos = s.find("{region}")) != std::string::npos;) {
          s.replace(pos, 8, region);
        }
        // "{window}" is replaced by the agent, which knows when it asks.
        return s;
      };
      mg->set_name(g.name);
      mg->set_prometheus(subst(g.prometheus));
      mg->set_query(subst(g.query));
      if (g.max) {
        mg->set_has_max(true);
        mg->set_max(*g.max);
      }
      if (g.min) {
        mg->set_has_min(true);
        mg->set_min(*g.min);
      }
      mg->set_timeout_ms(std::min<int64_t>(g.interval.count(), 10'000));
      // Every host of the wave had switched when the bake started: only what was scraped
      // after that may judge the wave.
      mg->set_evidence_since_ms(switched);
      mg->set_min_window_ms(g.interval.count());
      c.pass.checks.emplace_back(asked->name, std::move(check));
      c.pass.WakeAt(c.now + g.interval.count());
    }
  }
  return "";
}

bool Engine::DeployWave(ReleaseCtx& c, int wi, const std::vector<const AgentRecord*>& selected,
                        const std::function<bool(const HostRecord&)>& belongs) {
  const Pipeline& p = c.p;
  for (const AgentRecord* a : selected) {
    if (c.hosts.count(a->name)) continue;
    HostRecord h;
    h.release_id = c.r.id;
    h.agent = a->name;
    h.region = a->region;
    h.wave = wi;
    h.from_version = a->current_version;
    c.hosts.emplace(a->name, std::move(h));
    c.MarkHost(a->name);
  }

  // Per-region concurrency counts hosts with a task in flight.
  std::map<std::string, int> busy;
  for (const auto& [name, h] : c.hosts) {
    if (HostInFlight(h)) ++busy[h.region];
  }
  auto start_task = [&](HostRecord& h, bool activate) {
    if (busy[h.region] >= p.concurrency_per_region) return;
    ++busy[h.region];
    h.state = activate ? host_state::kActivating : host_state::kPreparing;
    h.detail = activate ? "activating" : "preparing";
    SendStep(c.pass, p, c.r, h, activate ? host_step::kActivate : host_step::kPrepare, c.now);
    c.MarkHost(h.agent);
  };

  // Phase one: every host of the wave prepares.
  bool all_prepared = true;
  bool all_done = true;
  for (auto& [name, h] : c.hosts) {
    if (h.wave != wi || !belongs(h)) continue;
    if (h.state == host_state::kPending) start_task(h, false);
    if (h.state == host_state::kPending || h.state == host_state::kPreparing) {
      all_prepared = false;
    }
    if (h.state != host_state::kDone && h.state != host_state::kFailed) all_done = false;
  }
  // Phase two: only once all are prepared, they switch. This keeps the window in which a
  // wave runs mixed versions as short as a link switch, not a download.
  if (all_prepared) {
    for (auto& [name, h] : c.hosts) {
      if (h.wave == wi && belongs(h) && h.state == host_state::kPrepared) start_task(h, true);
    }
  }
  return all_done;
}

void Engine::AdvanceRollout(ReleaseCtx& c) {
  const Pipeline& p = c.p;
  ReleaseRecord& r = c.r;
  const bool paused = c.pstate.paused;

  ReopenDrifted(c);
  // Each iteration handles the current wave; it moves on only when a wave completes with no
  // wait left, so the loop runs at most once per wave plus once.
  for (size_t guard = 0; guard <= p.waves.size() && r.state == release_state::kRolling; ++guard) {
    const int wi = r.current_wave;
    const WaveSpec& spec = p.waves[static_cast<size_t>(wi)];
    WaveRecord& wave = c.waves[static_cast<size_t>(wi)];

    FailLostOrLateHosts(c);
    // Each wave judges the hosts it added (WaveBeyondTolerance); a bring-up region's hosts
    // are judged by its own track.
    const std::string failure =
        WaveBeyondTolerance(p, c.hosts, [&c](const HostRecord& h) { return !c.InBringup(h); });
    if (!failure.empty()) {
      FailRollout(c, failure);
      return;
    }
    if (paused) return;  // results and failures are still recorded; nothing new starts

    if (wave.state == wave_state::kPending) {
      wave.state = wave_state::kDeploying;
      wave.started_at = c.now;
      c.MarkWave(wi);
    }

    if (wave.state == wave_state::kDeploying) {
      std::vector<const AgentRecord*> selected;
      for (const AgentRecord* a :
           SelectWaveHosts(p.name, spec, c.agents, c.now, p.timeouts.agent_lost.count())) {
        // A region in bring-up for this release walks the waves in its own track.
        if (!c.bringup.count(a->region)) selected.push_back(a);
      }
      if (!DeployWave(c, wi, selected, [&](const HostRecord& h) { return !c.InBringup(h); })) {
        return;
      }

      // Every host healthy: the bake starts, and with it the metric gates.
      wave.state = wave_state::kBaking;
      wave.bake_started_at = c.now;
      c.MarkWave(wi);
      c.release_changed = true;
    }

    if (wave.state == wave_state::kBaking) {
      bool gates_passing = true;
      // The bake starts when lockstepd has seen every host of the wave switched and healthy.
      std::string gate_failure =
          EvaluateGates(c, wi, spec.regions, wave.bake_started_at, &gates_passing);
      if (!gate_failure.empty()) {
        FailRollout(c, "wave " + spec.name + ": " + gate_failure);
        return;
      }
      UnixMs bake_end = wave.bake_started_at + spec.bake.count();
      if (c.now < bake_end) {
        c.pass.WakeAt(bake_end);
        return;
      }
      if (!gates_passing) return;  // bake over, a gate has no passing verdict yet
      if (spec.manual_approval) {
        wave.state = wave_state::kAwaitingApproval;
        wave.approval_requested_at = c.now;
        c.MarkWave(wi);
        Audit(c.pass, c.now, "release.approval_needed", r, "wave " + spec.name);
        c.Event("approval_needed", "wave " + spec.name);
      } else {
        wave.state = wave_state::kDone;
        wave.finished_at = c.now;
        c.MarkWave(wi);
      }
    }

    if (wave.state == wave_state::kAwaitingApproval) {
      if (wave.approved_at == 0) {
        UnixMs deadline = wave.approval_requested_at + p.timeouts.approval.count();
        if (c.now >= deadline) {
          FailRollout(c, "wave " + spec.name + ": no approval within " +
                             FormatDuration(p.timeouts.approval));
          return;
        }
        c.pass.WakeAt(deadline);
        return;
      }
      wave.state = wave_state::kDone;
      wave.finished_at = c.now;
      c.MarkWave(wi);
    }

    if (wave.state == wave_state::kDone) {
      c.Event("wave_passed", "wave " + spec.name);
      if (static_cast<size_t>(wi) + 1 < p.waves.size()) {
        r.current_wave = wi + 1;
        c.release_changed = true;
        spdlog::info("release {} wave {} done; wave {} starts", r.id, spec.name,
                     p.waves[static_cast<size_t>(wi) + 1].name);
      } else {
        // A host of an earlier wave sent the release again (it reported another version)
        // must be back before the release can say every host runs it.
        for (const auto& [name, h] : c.hosts) {
          if (HostInFlight(h) && !c.InBringup(h)) return;
        }
        r.state = release_state::kSucceeded;
        r.reason.clear();
        r.finished_at = c.now;
        c.release_changed = true;
        Audit(c.pass, c.now, "release.succeeded", r, "");
        c.Event("succeeded", "");
        spdlog::info("release {} ({} {}) succeeded", r.id, p.name, r.version);
      }
    }
  }
}

}  // namespace lockstep
