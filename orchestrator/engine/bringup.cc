// Bring-up regions: a region being built takes every release at the same time as the
// serving regions, walking the pipeline's per_region waves in a track of its own (the same
// host selectors, bakes and metric gates, no approvals). Its failures are reported and send
// only its own hosts back; they never fail, hold or roll back the serving regions, and the
// release's outcome is theirs. A serving failure still takes the bring-up hosts back with
// every other host that took the release.

#include <spdlog/spdlog.h>

#include <algorithm>

#include "common/duration.h"
#include "orchestrator/engine/engine.h"
#include "orchestrator/engine/engine_internal.h"
#include "orchestrator/engine/history.h"
#include "orchestrator/engine/selection.h"

namespace lockstep {

namespace {

// The waves a bring-up region walks: the pipeline's per_region waves, in order. A pipeline
// whose waves all name their regions gives the region one step: its last wave, taken as
// every host of the region.
std::vector<int> TrackWaves(const Pipeline& p) {
  std::vector<int> out;
  for (size_t i = 0; i < p.waves.size(); ++i) {
    if (p.waves[i].per_region) out.push_back(static_cast<int>(i));
  }
  if (out.empty() && !p.waves.empty()) out.push_back(static_cast<int>(p.waves.size()) - 1);
  return out;
}

// Wave `wi` as a bring-up region takes it: its selector (or every host), bake and tolerance,
// in that one region.
WaveSpec TrackWave(const Pipeline& p, int wi, const std::string& region) {
  WaveSpec w = p.waves[static_cast<size_t>(wi)];
  if (!w.per_region) w.hosts = HostSelector{HostSelector::Kind::kPercent, 100};
  w.regions = {region};
  w.manual_approval = false;
  return w;
}

}  // namespace

void Engine::FailBringup(ReleaseCtx& c, BringupRecord& t, const std::string& reason) {
  t.reason = reason;
  t.state = bringup_state::kRollingBack;
  c.MarkTrack(t.region);
  Audit(c.pass, c.now, "release.bringup_failed", c.r, t.region + ": " + reason);
  c.Event("bringup_failed", t.region + ": " + reason);
  spdlog::warn("release {} ({} {}): bring-up region {} failed: {}", c.r.id, c.p.name, c.r.version,
               t.region, reason);
  if (!c.previous) {
    t.state = bringup_state::kFailed;
    t.reason += "; no earlier release to roll back to";
    t.finished_at = c.now;
    return;
  }
  // Only this region's hosts that may have switched go back; the serving regions carry on.
  int reverting = 0;
  for (auto& [name, h] : c.hosts) {
    if (h.region != t.region || !h.switch_sent) continue;
    h.state = host_state::kReverting;
    h.detail = "reverting to " + c.previous->version + " (bring-up region failed)";
    h.finished_at = 0;
    SendStep(c.pass, c.p, *c.previous, h, host_step::kRevert, c.now);
    c.MarkHost(name);
    ++reverting;
  }
  if (reverting == 0) {
    t.state = bringup_state::kRolledBack;
    t.reason += "; no host had switched to it";
    t.finished_at = c.now;
    c.Event("bringup_rolled_back", t.region + ": no host had switched to " + c.r.version);
  }
}

void Engine::AdvanceBringup(ReleaseCtx& c) {
  if (c.bringup.empty()) return;
  const Pipeline& p = c.p;
  const std::vector<int> track_waves = TrackWaves(p);
  std::set<std::string> watched;
  for (const auto& [region, t] : c.bringup) {
    if (!bringup_state::IsFinal(t.state)) watched.insert(region);
  }
  if (watched.empty()) return;
  FailLostOrLateHosts(c, &watched);

  for (auto& [region, t] : c.bringup) {
    if (t.state == bringup_state::kRollingBack) {
      int reverting = 0;
      std::string stuck;
      for (const auto& [name, h] : c.hosts) {
        if (h.region != region) continue;
        if (h.state == host_state::kReverting) ++reverting;
        if (h.state == host_state::kRevertFailed) {
          stuck += (stuck.empty() ? "" : ", ") + name + " (" + h.detail + ")";
        }
      }
      if (reverting > 0) continue;
      t.finished_at = c.now;
      c.MarkTrack(region);
      if (!stuck.empty()) {
        t.state = bringup_state::kFailed;
        t.reason += "; rollback incomplete on " + stuck;
        Audit(c.pass, c.now, "release.bringup_failed", c.r, region + ": " + t.reason);
        c.Event("bringup_failed", region + ": " + t.reason);
        continue;
      }
      t.state = bringup_state::kRolledBack;
      const std::string back = "every host back on " + c.previous->version;
      Audit(c.pass, c.now, "release.bringup_rolled_back", c.r, region + ": " + back);
      c.Event("bringup_rolled_back", region + ": " + back);
      spdlog::info("release {}: bring-up region {} rolled back: {}", c.r.id, region, back);
      continue;
    }
    if (t.state != bringup_state::kRolling) continue;

    // Failures first, as for the serving waves: each wave judges the hosts it added.
    // (A structured binding is not captured: clang before 16 refuses it.)
    const std::string& of_region = region;
    const std::string failure = WaveBeyondTolerance(
        p, c.hosts, [&of_region](const HostRecord& h) { return h.region == of_region; });
    if (!failure.empty()) {
      FailBringup(c, t, failure);
      continue;
    }
    if (c.pstate.paused) continue;

    // At most one step per wave of the track in one pass.
    for (size_t guard = 0; guard <= track_waves.size() && t.state == bringup_state::kRolling;
         ++guard) {
      auto pos = std::find(track_waves.begin(), track_waves.end(), t.wave);
      if (pos == track_waves.end()) {
        // Its wave is gone (the definition changed under a restart): start from the first.
        t.wave = track_waves.front();
        t.wave_started_at = 0;
        t.bake_started_at = 0;
        c.MarkTrack(region);
        pos = track_waves.begin();
      }
      const WaveSpec spec = TrackWave(p, t.wave, region);
      if (t.wave_started_at == 0) {
        t.wave_started_at = c.now;
        c.MarkTrack(region);
      }
      if (t.bake_started_at == 0) {
        auto selected =
            SelectWaveHosts(p.name, spec, c.agents, c.now, p.timeouts.agent_lost.count());
        const std::string& in = region;
        if (!DeployWave(c, t.wave, selected,
                        [&in](const HostRecord& h) { return h.region == in; })) {
          break;
        }
        t.bake_started_at = c.now;
        c.MarkTrack(region);
      }
      bool passing = true;
      const std::string gate_failure =
          EvaluateGates(c, t.wave, spec.regions, t.bake_started_at, &passing);
      if (!gate_failure.empty()) {
        FailBringup(c, t, "wave " + spec.name + ": " + gate_failure);
        break;
      }
      const UnixMs bake_end = t.bake_started_at + spec.bake.count();
      if (c.now < bake_end) {
        c.pass.WakeAt(bake_end);
        break;
      }
      if (!passing) break;
      if (std::next(pos) != track_waves.end()) {
        t.wave = *std::next(pos);
        t.wave_started_at = c.now;
        t.bake_started_at = 0;
        c.MarkTrack(region);
        continue;
      }
      bool in_flight = false;
      for (const auto& [name, h] : c.hosts) {
        if (h.region == region && HostInFlight(h)) in_flight = true;
      }
      if (in_flight) break;
      t.state = bringup_state::kSucceeded;
      t.finished_at = c.now;
      c.MarkTrack(region);
      Audit(c.pass, c.now, "release.bringup_succeeded", c.r, region);
      c.Event("bringup_succeeded", region);
      spdlog::info("release {}: bring-up region {} runs {}", c.r.id, region, c.r.version);
    }
  }
}

Status Engine::AdvanceTrailingBringup(const Pipeline& p, const ReleaseRecord& desired,
                                      const PipelineState& pstate, UnixMs now, Pass& pass) {
  if (desired.kind != release_kind::kRollout) return Status::Ok();
  LOCKSTEP_ASSIGN_OR_RETURN(auto tracks, store_->BringupTracks(desired.id));
  if (std::all_of(tracks.begin(), tracks.end(),
                  [](const BringupRecord& t) { return bringup_state::IsFinal(t.state); })) {
    return Status::Ok();
  }
  releases_seen_[desired.id] = desired;
  LOCKSTEP_RETURN_IF_ERROR(LoadAgents());
  LOCKSTEP_ASSIGN_OR_RETURN(auto hosts, HostsOf(desired.id));
  pass.live_releases.insert(desired.id);
  ReleaseRecord r = desired;
  ReleaseCtx c(p, r, *hosts, agents_, now, pass);
  c.pstate = pstate;
  for (auto& t : tracks) {
    std::string region = t.region;
    c.bringup.emplace(std::move(region), std::move(t));
  }
  if (r.previous_release_id > 0) {
    auto prev = ReleaseById(r.previous_release_id);
    if (prev.ok()) c.previous = *prev;
  }
  LOCKSTEP_ASSIGN_OR_RETURN(auto gates, store_->GateResults(r.id));
  c.gate_results = std::move(gates);
  AdvanceBringup(c);
  c.Flush();
  return Status::Ok();
}

void Engine::SupersedeTracks(Pass& pass, int64_t release_id, const std::string& reason,
                             UnixMs now) const {
  if (release_id <= 0) return;
  auto tracks = store_->BringupTracks(release_id);
  if (!tracks.ok()) {
    // Left as they are: a trailing track of an ended release is never advanced again (only
    // the desired release's are), so what is lost is the word "superseded" on it.
    spdlog::warn("release {}: reading bring-up tracks: {}", release_id, tracks.status().ToString());
    return;
  }
  for (auto& t : *tracks) {
    if (bringup_state::IsFinal(t.state)) continue;
    t.state = bringup_state::kSuperseded;
    t.reason = reason;
    t.finished_at = now;
    pass.batch.bringup.push_back(t);
    pass.changed_releases.insert(release_id);
  }
}

}  // namespace lockstep
