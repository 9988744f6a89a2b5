#include "common/json_views.h"

#include "common/clock.h"

namespace lockstep {

using nlohmann::json;

namespace {
std::string Time(int64_t ms) { return ms > 0 ? FormatUnixMs(ms) : ""; }
}  // namespace

json ReleaseJson(const lockstep::v1::Release& r) {
  json j = {{"id", r.id()},
            {"pipeline", r.pipeline()},
            {"kind", r.kind().empty() ? "rollout" : r.kind()},
            {"version", r.version()},
            {"artifact", r.artifact_url()},
            {"sha256", r.sha256()},
            {"commit", r.commit()},
            {"author", r.author()},
            {"state", r.state()},
            {"final", r.final()},
            {"in_flight", r.in_flight()},
            {"paused", r.paused()},
            {"paused_by", r.paused_by()},
            {"reason", r.reason()},
            {"current_wave", r.current_wave()},
            {"previous_version", r.previous_version()},
            {"created_at", Time(r.created_at_ms())},
            {"started_at", Time(r.started_at_ms())},
            {"finished_at", Time(r.finished_at_ms())},
            {"created_at_ms", r.created_at_ms()},
            {"started_at_ms", r.started_at_ms()},
            {"finished_at_ms", r.finished_at_ms()},
            {"created_by", r.created_by()},
            {"commit_url", r.commit_url()},
            {"compare_url", r.compare_url()},
            {"previous_commit", r.previous_commit()}};
  if (r.waves_size() > 0 || r.hosts_size() > 0) {
    j["waves"] = json::array();
    for (const auto& w : r.waves()) {
      json jw = {{"index", w.index()},
                 {"name", w.name()},
                 {"state", w.state()},
                 {"bake_ms", w.bake_ms()},
                 {"manual_approval", w.manual_approval()},
                 {"approved_by", w.approved_by()},
                 {"approved_at_ms", w.approved_at_ms()},
                 {"approval_requested_at_ms", w.approval_requested_at_ms()},
                 {"approval_deadline_ms", w.approval_deadline_ms()},
                 {"started_at_ms", w.started_at_ms()},
                 {"bake_started_at_ms", w.bake_started_at_ms()},
                 {"finished_at_ms", w.finished_at_ms()},
                 {"first_switch_at_ms", w.first_switch_at_ms()},
                 {"last_switch_at_ms", w.last_switch_at_ms()},
                 {"mixed_version_window_ms",
                  w.last_switch_at_ms() > 0 ? w.last_switch_at_ms() - w.first_switch_at_ms() : 0},
                 {"regions", json::array()}};
      for (const auto& rp : w.regions()) {
        jw["regions"].push_back({{"region", rp.region()},
                                 {"selected", rp.selected()},
                                 {"done", rp.done()},
                                 {"failed", rp.failed()}});
      }
      j["waves"].push_back(std::move(jw));
    }
    j["hosts"] = json::array();
    for (const auto& h : r.hosts()) {
      j["hosts"].push_back({{"agent", h.agent()},
                            {"region", h.region()},
                            {"wave", h.wave()},
                            {"state", h.state()},
                            {"detail", h.detail()},
                            {"from_version", h.from_version()},
                            {"output_tail", h.output_tail()},
                            {"failure", h.failure()},
                            {"started_at_ms", h.started_at_ms()},
                            {"finished_at_ms", h.finished_at_ms()}});
    }
    j["bringup"] = json::array();
    for (const auto& b : r.bringup()) {
      j["bringup"].push_back({{"region", b.region()},
                              {"state", b.state()},
                              {"wave", b.wave()},
                              {"wave_name", b.wave_name()},
                              {"reason", b.reason()},
                              {"started_at_ms", b.started_at_ms()},
                              {"bake_started_at_ms", b.bake_started_at_ms()},
                              {"finished_at_ms", b.finished_at_ms()}});
    }
    j["gates"] = json::array();
    for (const auto& g : r.gates()) {
      json history = json::array();
      for (const auto& s : g.history()) {
        history.push_back({{"at_ms", s.at_ms()}, {"verdict", s.verdict()}, {"value", s.value()}});
      }
      j["gates"].push_back({{"wave", g.wave()},
                            {"gate", g.gate()},
                            {"region", g.region()},
                            {"verdict", g.verdict()},
                            {"value", g.value()},
                            {"detail", g.detail()},
                            {"at_ms", g.at_ms()},
                            {"query", g.query()},
                            {"max", g.has_max() ? json(g.max()) : json(nullptr)},
                            {"min", g.has_min() ? json(g.min()) : json(nullptr)},
                            {"history", std::move(history)}});
    }
  }
  return j;
}

json AgentJson(const lockstep::v1::Agent& a) {
  json versions = json::array();
  for (const auto& v : a.versions_on_disk()) versions.push_back(v);
  return {{"name", a.name()},
          {"region", a.region()},
          {"pipeline", a.pipeline()},
          {"current_version", a.current_version()},
          {"versions_on_disk", versions},
          {"connected", a.connected()},
          {"last_seen", Time(a.last_seen_ms())},
          {"last_seen_ms", a.last_seen_ms()},
          {"agent_version", a.agent_version()}};
}

json PipelineStatusJson(const lockstep::v1::PipelineStatus& p) {
  json jp = {{"pipeline", p.pipeline()},
             {"desired_version", p.desired_version()},
             {"paused", p.paused()},
             {"paused_by", p.paused_by()},
             {"frozen", p.frozen()},
             {"frozen_by", p.frozen_by()},
             {"freeze_reason", p.freeze_reason()},
             {"links", {{"commit", p.commit_link()}, {"compare", p.compare_link()}}},
             {"active", nullptr},
             {"regions", json::array()}};
  if (p.has_active()) jp["active"] = ReleaseJson(p.active());
  for (const auto& rs : p.regions()) {
    json jr = {{"region", rs.region()},
               {"stage", rs.stage().empty() ? "serving" : rs.stage()},
               {"hook_output", rs.hook_output().empty() ? "tail" : rs.hook_output()},
               {"hosts", json::array()}};
    for (const auto& h : rs.hosts()) {
      json jh = AgentJson(h);
      // A host already on the release in flight is moving, not drifting.
      bool on_active = p.has_active() && h.current_version() == p.active().version();
      jh["drift"] =
          !p.desired_version().empty() && h.current_version() != p.desired_version() && !on_active;
      jr["hosts"].push_back(std::move(jh));
    }
    jp["regions"].push_back(std::move(jr));
  }
  return jp;
}

json AuditJson(const lockstep::v1::AuditEntry& e) {
  return {{"id", e.id()},         {"at", Time(e.at_ms())}, {"at_ms", e.at_ms()},
          {"actor", e.actor()},   {"action", e.action()},  {"target", e.target()},
          {"detail", e.detail()}, {"outcome", e.outcome()}};
}

json TokenJson(const lockstep::v1::TokenInfo& t) {
  auto when = [](int64_t ms) { return ms == 0 ? json(nullptr) : json(Time(ms)); };
  return {{"name", t.name()},
          {"role", t.role()},
          {"region", t.region()},
          {"created", Time(t.created_at_ms())},
          {"created_by", t.created_by()},
          {"last_used", when(t.last_used_at_ms())},
          {"expires", when(t.expires_at_ms())},
          {"revoked", when(t.revoked_at_ms())},
          {"revoked_by", t.revoked_by()}};
}

}  // namespace lockstep
