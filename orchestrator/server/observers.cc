#include "orchestrator/server/observers.h"

#include <algorithm>

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

void ReleaseNotifications::OnReleaseEvent(const Pipeline& pipeline, const ReleaseRecord& release,
                                          const std::string& event, const std::string& detail) {
  if (pipeline.notify.empty()) return;
  std::string text = pipeline.name + " " + release.version + ": " + event;
  if (release.kind == release_kind::kRollback) text += " (on-call rollback)";
  if (!detail.empty()) {
    text += " — " + detail;
  } else if (!release.reason.empty()) {
    text += " — " + release.reason;
  }
  if (!release.author.empty()) text += " (by " + release.author + ")";
  nlohmann::json fields = {
      {"pipeline", pipeline.name}, {"release_id", release.id}, {"version", release.version},
      {"commit", release.commit},  {"author", release.author}, {"state", release.state},
      {"reason", release.reason},  {"detail", detail},         {"kind", release.kind}};
  for (const auto& spec : pipeline.notify) {
    if (!spec.events.empty() &&
        std::find(spec.events.begin(), spec.events.end(), event) == spec.events.end()) {
      continue;
    }
    notifier_->Post(Notification{spec.url, event, NotificationBody(event, text, fields)});
  }
}

}  // namespace lockstep
