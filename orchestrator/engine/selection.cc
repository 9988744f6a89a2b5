#include "orchestrator/engine/selection.h"

#include <algorithm>

namespace lockstep {

std::vector<const AgentRecord*> SelectWaveHosts(const std::string& pipeline, const WaveSpec& wave,
                                                const std::vector<AgentRecord>& agents) {
  std::vector<const AgentRecord*> out;
  for (const auto& region : wave.regions) {
    std::vector<const AgentRecord*> in_region;
    for (const auto& a : agents) {
      if (a.pipeline == pipeline && a.region == region) in_region.push_back(&a);
    }
    std::sort(in_region.begin(), in_region.end(),
              [](const AgentRecord* x, const AgentRecord* y) { return x->name < y->name; });
    int n = wave.hosts.Count(static_cast<int>(in_region.size()));
    out.insert(out.end(), in_region.begin(), in_region.begin() + n);
  }
  return out;
}

}  // namespace lockstep
