#include "orchestrator/server/views.h"

#include <algorithm>
#include <map>
#include <tuple>

#include "common/untrusted.h"
#include "orchestrator/engine/engine.h"
#include "orchestrator/engine/history.h"
#include "orchestrator/store/store.h"

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
  out.set_kind(r.kind);
  out.set_created_by(r.created_by);
  out.set_final(release_state::IsFinal(r.state));
  out.set_in_flight(release_state::IsInFlight(r.state));
  return out;
}

lockstep::v1::Release ReleaseView(const ReleaseRecord& r, const std::vector<WaveRecord>& waves,
                                  const std::vector<HostRecord>& hosts,
                                  const std::vector<GateResult>& gates, const Pipeline* pipeline) {
  lockstep::v1::Release out = ReleaseSummary(r);
  if (r.kind == release_kind::kRollback) pipeline = nullptr;  // one implicit wave
  size_t wave_count = pipeline ? pipeline->waves.size() : waves.size();
  for (size_t i = 0; i < wave_count; ++i) {
    auto* w = out.add_waves();
    w->set_index(static_cast<int>(i));
    w->set_state(wave_state::kPending);
    if (pipeline) {
      const WaveSpec& spec = pipeline->waves[i];
      w->set_name(spec.name);
      w->set_bake_ms(spec.bake.count());
      w->set_manual_approval(spec.manual_approval);
      for (const auto& region : spec.regions) w->add_regions()->set_region(region);
    }
    for (const auto& rec : waves) {
      if (rec.index != static_cast<int>(i)) continue;
      w->set_name(rec.name);
      // Its hosts went back: a done wave of a reverted release is reverted.
      const bool reverted =
          r.state == release_state::kRolledBack ||
          (r.state == release_state::kAborted && r.kind == release_kind::kRollout);
      w->set_state(reverted && rec.state == wave_state::kDone ? wave_state::kReverted : rec.state);
      w->set_started_at_ms(rec.started_at);
      w->set_finished_at_ms(rec.finished_at);
      w->set_bake_started_at_ms(rec.bake_started_at);
      w->set_first_switch_at_ms(rec.first_switch_at);
      w->set_last_switch_at_ms(rec.last_switch_at);
      w->set_approved_by(rec.approved_by);
      w->set_approved_at_ms(rec.approved_at);
      w->set_approval_requested_at_ms(rec.approval_requested_at);
      if (pipeline && rec.state == wave_state::kAwaitingApproval && rec.approved_at == 0 &&
          rec.approval_requested_at > 0) {
        w->set_approval_deadline_ms(rec.approval_requested_at +
                                    pipeline->timeouts.approval.count());
      }
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
    hp->set_from_version(h.from_version);
    hp->set_output_tail(h.output_tail);
    hp->set_failure(h.failure);
  }
  // The latest verdict of each wave, gate and region, with the recent ones before it.
  constexpr size_t kGateHistory = 20;
  std::map<std::tuple<int, std::string, std::string>, std::vector<const GateResult*>> by_key;
  for (const auto& g : gates) by_key[{g.wave, g.gate, g.region}].push_back(&g);
  for (const auto& [key, list] : by_key) {
    const GateResult* g = list.back();
    auto* gv = out.add_gates();
    gv->set_wave(g->wave);
    gv->set_gate(g->gate);
    gv->set_region(g->region);
    gv->set_at_ms(g->at);
    gv->set_verdict(g->verdict);
    gv->set_value(g->value);
    gv->set_detail(g->detail);
    for (size_t i = list.size() > kGateHistory ? list.size() - kGateHistory : 0; i < list.size();
         ++i) {
      auto* sample = gv->add_history();
      sample->set_at_ms(list[i]->at);
      sample->set_verdict(list[i]->verdict);
      sample->set_value(list[i]->value);
    }
    const Pipeline* spec_of = pipeline;
    if (!spec_of) continue;
    for (const auto& spec : spec_of->metric_gates) {
      if (spec.name != g->gate) continue;
      std::string query = spec.query;
      for (size_t pos; (pos = query.find("{region}")) != std::string::npos;) {
        query.replace(pos, 8, g->region);
      }
      gv->set_query(query);
      if (spec.max) {
        gv->set_has_max(true);
        gv->set_max(*spec.max);
      }
      if (spec.min) {
        gv->set_has_min(true);
        gv->set_min(*spec.min);
      }
    }
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
  out.set_agent_version(a.agent_version);
  return out;
}

lockstep::v1::AuditEntry AuditView(const AuditRecord& a) {
  lockstep::v1::AuditEntry e;
  e.set_id(a.id);
  e.set_at_ms(a.at);
  e.set_actor(a.actor);
  e.set_action(a.action);
  e.set_target(a.target);
  e.set_detail(a.detail);
  e.set_outcome(a.outcome);
  return e;
}

lockstep::v1::TokenInfo TokenView(const TokenRecord& t) {
  lockstep::v1::TokenInfo v;
  v.set_name(t.name);
  v.set_role(t.role);
  v.set_region(t.region);
  v.set_created_at_ms(t.created_at);
  v.set_created_by(t.created_by);
  v.set_last_used_at_ms(t.last_used_at);
  v.set_expires_at_ms(t.expires_at);
  v.set_revoked_at_ms(t.revoked_at);
  v.set_revoked_by(t.revoked_by);
  return v;
}

StatusOr<lockstep::v1::Release> LoadReleaseView(StoreReader& store, const Engine& engine,
                                                int64_t id) {
  LOCKSTEP_ASSIGN_OR_RETURN(auto r, store.GetRelease(id));
  LOCKSTEP_ASSIGN_OR_RETURN(auto waves, store.Waves(id));
  LOCKSTEP_ASSIGN_OR_RETURN(auto hosts, store.Hosts(id));
  LOCKSTEP_ASSIGN_OR_RETURN(auto gates, store.GateResults(id));
  const Pipeline* pipeline = engine.FindPipeline(r.pipeline);
  auto view = ReleaseView(r, waves, hosts, gates, pipeline);
  LOCKSTEP_ASSIGN_OR_RETURN(auto tracks, store.BringupTracks(id));
  if (r.previous_release_id > 0) {
    auto previous = store.GetRelease(r.previous_release_id);
    if (previous.ok()) view.set_previous_commit(previous->commit);
  }
  if (pipeline) {
    view.set_commit_url(pipeline->CommitUrl(r.commit));
    // A rollback goes back to its target: there is no change to compare.
    if (r.kind == release_kind::kRollout) {
      view.set_compare_url(pipeline->CompareUrl(view.previous_commit(), r.commit));
    }
  }
  for (const auto& t : tracks) {
    auto* b = view.add_bringup();
    b->set_region(t.region);
    b->set_state(t.state);
    b->set_wave(t.wave);
    if (pipeline && t.wave >= 0 && static_cast<size_t>(t.wave) < pipeline->waves.size()) {
      b->set_wave_name(pipeline->waves[static_cast<size_t>(t.wave)].name);
    }
    b->set_reason(t.reason);
    b->set_started_at_ms(t.started_at);
    b->set_bake_started_at_ms(t.bake_started_at);
    b->set_finished_at_ms(t.finished_at);
  }
  if (release_state::IsInFlight(r.state)) {
    LOCKSTEP_ASSIGN_OR_RETURN(auto pstate, store.GetPipelineState(r.pipeline));
    view.set_paused(pstate.paused);
    view.set_paused_by(pstate.paused_by);
  }
  return view;
}

StatusOr<std::vector<ReleaseRecord>> ListReleasesView(StoreReader& store, const Engine& engine,
                                                      const std::string& pipeline, int limit,
                                                      const std::string& state,
                                                      const std::string& kind,
                                                      const ReleaseFilter& filter) {
  if (!pipeline.empty() && !engine.FindPipeline(pipeline)) {
    return NotFound("unknown pipeline \"" + LogSafe(pipeline, 64) + "\"");
  }
  const auto& states = release_state::All();
  if (!state.empty() && std::find(states.begin(), states.end(), state) == states.end()) {
    std::string known;
    for (const auto& s : states) known += (known.empty() ? "" : ", ") + s;
    return InvalidArgument("state: unknown state \"" + LogSafe(state, 40) + "\" (one of " + known +
                           ")");
  }
  if (!kind.empty() && kind != release_kind::kRollout && kind != release_kind::kRollback) {
    return InvalidArgument("kind: unknown kind \"" + LogSafe(kind, 40) +
                           "\" (rollout or rollback)");
  }
  ReleaseQuery q;
  q.pipeline = pipeline;
  if (!state.empty()) q.states = {state};
  if (!kind.empty()) q.kinds = {kind};
  q.limit = limit > 0 ? limit : 50;
  q.version = filter.version;
  q.actor = filter.actor;
  q.created_from = filter.since;
  q.created_to = filter.until;
  q.before_id = filter.before_id;
  return store.FindReleases(q);
}

StatusOr<lockstep::v1::StatusResponse> LoadStatusView(StoreReader& store, const Engine& engine,
                                                      const std::string& pipeline) {
  if (!pipeline.empty() && !engine.FindPipeline(pipeline)) {
    return NotFound("unknown pipeline \"" + pipeline + "\"");
  }
  LOCKSTEP_ASSIGN_OR_RETURN(auto agents, store.Agents());
  lockstep::v1::StatusResponse out;
  for (const auto& p : engine.pipelines()) {
    if (!pipeline.empty() && p.name != pipeline) continue;
    auto* ps = out.add_pipelines();
    ps->set_pipeline(p.name);
    LOCKSTEP_ASSIGN_OR_RETURN(auto desired, DesiredRelease(store, p.name));
    if (desired.has_value()) ps->set_desired_version(desired->version);
    LOCKSTEP_ASSIGN_OR_RETURN(auto pstate, store.GetPipelineState(p.name));
    ps->set_paused(pstate.paused);
    ps->set_paused_by(pstate.paused_by);
    ps->set_frozen(pstate.frozen);
    ps->set_frozen_by(pstate.frozen_by);
    ps->set_freeze_reason(pstate.freeze_reason);
    ps->set_commit_link(p.links.commit);
    ps->set_compare_link(p.links.compare);
    LOCKSTEP_ASSIGN_OR_RETURN(auto open, OpenReleases(store, p.name));
    for (const auto& r : open) {
      if (!release_state::IsInFlight(r.state)) continue;
      LOCKSTEP_ASSIGN_OR_RETURN(auto view, LoadReleaseView(store, engine, r.id));
      *ps->mutable_active() = std::move(view);
    }
    for (const auto& region : p.regions) {
      auto* rs = ps->add_regions();
      rs->set_region(region);
      const RegionSpec spec = p.Region(region);
      rs->set_stage(spec.StageName());
      rs->set_hook_output(spec.HookOutputName());
      for (const auto& a : agents) {
        if (a.pipeline == p.name && a.region == region) *rs->add_hosts() = AgentView(a);
      }
    }
  }
  return out;
}

}  // namespace lockstep
