// Engine observers the orchestrator wires together: a fan-out that forwards every callback to
// several observers, and release notifications posted to each pipeline's `notify:` webhooks.
//
// Both are called on the engine thread and must not block it: FanOutObserver only forwards,
// and ReleaseNotifications only enqueues into a Notifier, whose worker does the network I/O.
#pragma once

#include <vector>

#include "orchestrator/engine/engine.h"
#include "orchestrator/notify/notifier.h"

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

// Posts NotificationBody(event, "<pipeline> <version>: <event> ...", fields) to every
// `notify:` entry of the release's pipeline whose event filter admits the event (an empty
// filter admits all). Fields: pipeline, release_id, version, commit, author, state, reason,
// detail, kind. `notifier` is not owned and must outlive this object.
class ReleaseNotifications final : public EngineObserver {
 public:
  explicit ReleaseNotifications(Notifier* notifier) : notifier_(notifier) {}

  void OnReleaseEvent(const Pipeline& pipeline, const ReleaseRecord& release,
                      const std::string& event, const std::string& detail) override;
  // Progress is not worth a chat message.
  void OnReleaseChanged(int64_t /*release_id*/) override {}

 private:
  Notifier* const notifier_;
};

}  // namespace lockstep
