// RecordingObserver: an EngineObserver for tests that keeps every release event a pass
// reports, in order. Engine thread only (the tests drive the engine themselves).
#pragma once

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "orchestrator/engine/engine.h"

namespace lockstep::testing {

class RecordingObserver final : public EngineObserver {
 public:
  void OnReleaseEvent(const Pipeline&, const ReleaseRecord& release, const std::string& event,
                      const std::string&) override {
    events.emplace_back(release.id, event);
  }
  void OnReleaseChanged(int64_t) override {}
  // The events of release `id`, in order.
  std::vector<std::string> Of(int64_t id) const {
    std::vector<std::string> out;
    for (const auto& [release, event] : events) {
      if (release == id) out.push_back(event);
    }
    return out;
  }
  std::vector<std::pair<int64_t, std::string>> events;
};

}  // namespace lockstep::testing
