// The fan-out that forwards every engine callback to several observers (release notifications
// go through the durable outbox instead: outbox_relay.h). Called on the engine thread; it only
// forwards and must not block.
#pragma once

#include <vector>

#include "orchestrator/engine/engine.h"

namespace lockstep {

// Forwards each callback to every observer, in order. The observers are not owned and must
// outlive it; null entries are skipped.
class FanOutObserver final : public EngineObserver {
 public:
  explicit FanOutObserver(std::vector<EngineObserver*> observers)
      : observers_(std::move(observers)) {}

  void OnReleaseEvent(const Pipeline& pipeline, const ReleaseRecord& release,
                      const std::string& event, const std::string& detail) override;
  void OnReleaseChanged(int64_t release_id) override;

 private:
  const std::vector<EngineObserver*> observers_;
};

}  // namespace lockstep
