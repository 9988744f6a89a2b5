// Pieces shared by the engine's source files (engine.cc, rollout.cc, rollback.cc,
// convergence.cc). Not part of the engine's interface.
#pragma once

#include <functional>
#include <map>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "orchestrator/engine/engine.h"

namespace lockstep {

// A host with a task outstanding.
bool HostInFlight(const HostRecord& h);

// Judges failed hosts wave by wave: each wave's hosts (those `counts` accepts) against its
// own tolerance, else the pipeline's; a percentage is of the hosts that wave added. A host
// of an earlier wave that fails later (lost during a bake) counts against its own wave. No
// tolerance lets a wave pass in which every host failed: nothing showed the release healthy.
// Returns why the first wave beyond its tolerance failed ("wave W: N host(s) failed (...)"),
// or "" if none is.
std::string WaveBeyondTolerance(const Pipeline& p, const std::map<std::string, HostRecord>& hosts,
                                const std::function<bool(const HostRecord&)>& counts);

// Keeps what a host just failed with (state failed or revert_failed, detail set) as its
// failure, which later steps (a revert, a retry) do not overwrite. A failed revert does not
// hide the failure that caused it.
inline void RecordFailure(HostRecord& h) {
  if (h.state == host_state::kFailed || h.failure.empty()) h.failure = h.detail;
}

// The kind of task a step is: a prepare, a rollout's activate, or a DEPLOY (reverts,
// on-call rollbacks, convergence, a host sent its release again).
lockstep::v1::Task::Kind TaskKindOf(const std::string& step);

// How long a host may take on a task before the engine gives up on it.
int64_t TaskBudgetMs(const Pipeline& p, lockstep::v1::Task::Kind kind);

// What one pass decides: records to write, tasks to send after the write, events to report
// after the write, next wake-up.
struct Engine::Pass {
  WriteBatch batch;
  std::vector<std::pair<std::string, lockstep::v1::Task>> sends;
  std::vector<std::pair<std::string, lockstep::v1::GateCheck>> checks;
  struct Event {
    const Pipeline* pipeline;
    ReleaseRecord release;
    std::string event;
    std::string detail;
  };
  std::vector<Event> events;
  std::set<int64_t> changed_releases;
  // Host rows changed by the pass (release, agent); written from the engine's copies.
  std::set<std::pair<int64_t, std::string>> changed_hosts;
  // Releases whose host rows the engine keeps a copy of after this pass.
  std::set<int64_t> live_releases;
  // Artifact reports numbered below this were made before the pass began.
  uint64_t artifact_check_seq = 0;
  UnixMs next_wake = 0;

  void WakeAt(UnixMs t) {
    if (t > 0 && (next_wake == 0 || t < next_wake)) next_wake = t;
  }
};

// The release being advanced in a pass, with everything read for it. Changes are made in
// place and marked; Flush() moves the marked records into the pass's batch.
struct Engine::ReleaseCtx {
  const Pipeline& p;
  ReleaseRecord& r;
  std::vector<WaveRecord> waves;
  HostMap& hosts;  // the engine's copy, changed in place
  const std::map<std::string, AgentRecord>& agents;
  std::vector<GateResult> gate_results;
  PipelineState pstate;
  std::optional<ReleaseRecord> previous;  // the release a revert goes back to
  UnixMs now;
  Pass& pass;

  // The release's bring-up regions (a track each), by region: read for rollouts.
  std::map<std::string, BringupRecord> bringup;

  bool release_changed = false;
  std::set<int> changed_waves;
  std::set<std::string> changed_hosts;
  std::set<std::string> changed_tracks;

  ReleaseCtx(const Pipeline& pipeline, ReleaseRecord& release, HostMap& host_rows,
             const std::map<std::string, AgentRecord>& all_agents, UnixMs t, Pass& ps)
      : p(pipeline), r(release), hosts(host_rows), agents(all_agents), now(t), pass(ps) {}
  const AgentRecord* Agent(const std::string& name) const {
    auto it = agents.find(name);
    return it == agents.end() ? nullptr : &it->second;
  }
  void MarkWave(int i) { changed_waves.insert(i); }
  void MarkHost(const std::string& name) { changed_hosts.insert(name); }
  void MarkTrack(const std::string& region) { changed_tracks.insert(region); }
  // Whether the host belongs to a bring-up region of this release (its own track).
  bool InBringup(const HostRecord& h) const { return bringup.count(h.region) > 0; }
  void Event(const std::string& event, const std::string& detail) {
    pass.events.push_back({&p, r, event, detail});
  }
  void Flush() {
    if (release_changed) pass.batch.releases.push_back(r);
    for (int i : changed_waves) pass.batch.waves.push_back(waves[static_cast<size_t>(i)]);
    for (const auto& name : changed_hosts) pass.changed_hosts.emplace(r.id, name);
    for (const auto& region : changed_tracks) pass.batch.bringup.push_back(bringup.at(region));
    if (release_changed || !changed_waves.empty() || !changed_hosts.empty() ||
        !changed_tracks.empty()) {
      pass.changed_releases.insert(r.id);
    }
  }
};

}  // namespace lockstep
