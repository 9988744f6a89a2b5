#include "orchestrator/server/observers.h"

namespace lockstep {

void FanOutObserver::OnReleaseEvent(const Pipeline& pipeline, const ReleaseRecord& release,
                                    const std::string& event, const std::string& detail) {
  for (EngineObserver* o : observers_) {
    if (o) o->OnReleaseEvent(pipeline, release, event, detail);
  }
}

void FanOutObserver::OnReleaseChanged(int64_t release_id) {
  for (EngineObserver* o : observers_) {
    if (o) o->OnReleaseChanged(release_id);
  }
}

}  // namespace lockstep
