// Which hosts a wave covers. Waves are cumulative and deterministic: within a region, hosts
// are ordered by name and a wave takes the first Count(total) of them, so each wave's
// selection contains the previous wave's.
#pragma once

#include <map>
#include <string>
#include <vector>

#include "orchestrator/pipeline/pipeline.h"
#include "orchestrator/store/model.h"

namespace lockstep {

// Agents of `pipeline` that are up (connected, or seen within `agent_lost_ms` of `now`, e.g.
// just reconnecting after an orchestrator restart) selected by `wave`, grouped by region in
// the wave's region order, by name within a region. Agents of other pipelines and agents
// gone for longer are ignored: a host that is down converges when it returns. `agents` is
// keyed by name.
std::vector<const AgentRecord*> SelectWaveHosts(const std::string& pipeline, const WaveSpec& wave,
                                                const std::map<std::string, AgentRecord>& agents,
                                                UnixMs now, int64_t agent_lost_ms);

// The rule above, for one agent.
bool AgentUp(const AgentRecord& a, UnixMs now, int64_t agent_lost_ms);

}  // namespace lockstep
