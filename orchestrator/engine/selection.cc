#include "orchestrator/engine/selection.h"

namespace lockstep {

bool AgentUp(const AgentRecord& a, UnixMs now, int64_t agent_lost_ms) {
  return a.connected || now - a.last_seen < agent_lost_ms;
}

std::vector<const AgentRecord*> SelectWaveHosts(const std::string& pipeline, const WaveSpec& wave,
                                                const std::map<std::string, AgentRecord>& agents,
                                                UnixMs now, int64_t agent_lost_ms) {
  std::vector<const AgentRecord*> out;
  for (const auto& region : wave.regions) {
    // The map is ordered by name, so each region's hosts come out in name order.
    std::vector<const AgentRecord*> in_region;
    for (const auto& [name, a] : agents) {
      // Only hosts that are up take part: a host that is down cannot deploy, and it
      // converges to the pipeline's release when it returns.
      if (a.pipeline == pipeline && a.region == region && AgentUp(a, now, agent_lost_ms)) {
        in_region.push_back(&a);
      }
    }
    int n = wave.hosts.Count(static_cast<int>(in_region.size()));
    out.insert(out.end(), in_region.begin(), in_region.begin() + n);
  }
  return out;
}

}  // namespace lockstep
