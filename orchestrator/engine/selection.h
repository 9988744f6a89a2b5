// Which hosts a wave covers. Waves are cumulative and deterministic: within a region, hosts
// are ordered by name and a wave takes the first Count(total) of them, so each wave's
// selection contains the previous wave's.
#pragma once

#include <string>
#include <vector>

#include "orchestrator/pipeline/pipeline.h"
#include "orchestrator/store/model.h"

namespace lockstep {

// Agents of `pipeline` selected by `wave`, grouped by region in the wave's region order,
// by name within a region. `agents` may hold agents of other pipelines; they are ignored.
std::vector<const AgentRecord*> SelectWaveHosts(const std::string& pipeline, const WaveSpec& wave,
                                                const std::vector<AgentRecord>& agents);

}  // namespace lockstep
