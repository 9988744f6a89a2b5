#include "orchestrator/server/views.h"

#include <map>

namespace lockstep {

lockstep::v1::Release ReleaseSummary(const ReleaseRecord& r) {
  lockstep::v1::Release out;
  out.set_id(r.id);
  out.set_pipeline(r.pipeline);
  out.set_version(r.version);
  out.set_artifact_url(r.artifact_url);
  out.set_sha256(r.sha256);
  out.set_commit(r.commit);
  out.set_author(r.author);
  out.set_state(r.state);
  out.set_reason(r.reason);
  out.set_current_wave(r.current_wave);
  out.set_previous_version(r.previous_version);
  out.set_created_at_ms(r.created_at);
  out.set_started_at_ms(r.started_at);
  out.set_finished_at_ms(r.finished_at);
  return out;
}

lockstep::v1::Release ReleaseView(const ReleaseRecord& r, const std::vector<WaveRecord>& waves,
                                  const std::vector<HostRecord>& hosts, const Pipeline* pipeline) {
  lockstep::v1::Release out = ReleaseSummary(r);
  size_t wave_count = pipeline ? pipeline->waves.size() : waves.size();
  for (size_t i = 0; i < wave_count; ++i) {
    auto* w = out.add_waves();
    w->set_index(static_cast<int>(i));
    w->set_state(wave_state::kPending);
    if (pipeline) {
      const WaveSpec& spec = pipeline->waves[i];
      w->set_name(spec.name);
      w->set_bake_ms(spec.bake.count());
      for (const auto& region : spec.regions) w->add_regions()->set_region(region);
    }
    for (const auto& rec : waves) {
      if (rec.index != static_cast<int>(i)) continue;
      w->set_name(rec.name);
      w->set_state(rec.state);
      w->set_started_at_ms(rec.started_at);
      w->set_finished_at_ms(rec.finished_at);
    }
    // Per-region counts for this wave: hosts selected by it (cumulatively, a wave covers
    // the hosts of earlier waves too, and they count as done).
    std::map<std::string, lockstep::v1::RegionProgress*> by_region;
    for (auto& rp : *w->mutable_regions()) by_region[rp.region()] = &rp;
    for (const auto& h : hosts) {
      if (h.wave > static_cast<int>(i) || h.wave < 0) continue;  // < 0: converged later
      auto it = by_region.find(h.region);
      if (it == by_region.end()) {
        if (pipeline) continue;  // region not part of this wave
        auto* rp = w->add_regions();
        rp->set_region(h.region);
        it = by_region.emplace(h.region, rp).first;
      }
      it->second->set_selected(it->second->selected() + 1);
      if (h.state == host_state::kDone) it->second->set_done(it->second->done() + 1);
      if (h.state == host_state::kFailed) it->second->set_failed(it->second->failed() + 1);
    }
  }
  for (const auto& h : hosts) {
    auto* hp = out.add_hosts();
    hp->set_agent(h.agent);
    hp->set_region(h.region);
    hp->set_wave(h.wave);
    hp->set_state(h.state);
    hp->set_detail(h.detail);
    hp->set_started_at_ms(h.started_at);
    hp->set_finished_at_ms(h.finished_at);
  }
  return out;
}

lockstep::v1::Agent AgentView(const AgentRecord& a) {
  lockstep::v1::Agent out;
  out.set_name(a.name);
  out.set_region(a.region);
  out.set_pipeline(a.pipeline);
  out.set_current_version(a.current_version);
  for (const auto& v : a.versions_on_disk) out.add_versions_on_disk(v);
  out.set_connected(a.connected);
  out.set_last_seen_ms(a.last_seen);
  return out;
}

}  // namespace lockstep
