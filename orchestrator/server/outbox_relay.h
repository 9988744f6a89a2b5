// OutboxRelay: delivers the durable notification outbox. A release event's notifications are
// rows written in the same transaction as the transition they report (NotificationRows, run
// by the engine before it commits), so a lockstepd that dies a moment later loses none: the
// next leader's relay finds them pending and sends them. At least once: a notification whose
// delivery was not recorded before a crash or failover is sent again.
//
// The relay runs on the leader only. It reads pending rows (at once when kicked after a
// commit, else every second), hands each to the Notifier (which retries with backoff), and
// records the final outcome in the row. A row is handed over once per relay; a notification
// the Notifier dropped (its queue full, or stopping) stays pending for the next relay.
//
// Thread safety: Kick may be called from any thread; Start and Stop from one.
#pragma once

#include <absl/base/thread_annotations.h>
#include <absl/synchronization/mutex.h>

#include <memory>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "common/clock.h"
#include "orchestrator/engine/engine.h"
#include "orchestrator/notify/notifier.h"
#include "orchestrator/pipeline/pipeline.h"
#include "orchestrator/store/model.h"

namespace lockstep {

class Store;

// The outbox rows of one release event: one per `notify:` entry of the pipeline whose event
// filter admits it (an empty filter admits all), each with the Slack-compatible body
// NotificationBody(event, "<pipeline> <version>: <event> ...", fields). Fields: pipeline,
// release_id, version, commit, author, state, reason, detail, kind.
std::vector<OutboxRecord> NotificationRows(const Pipeline& pipeline, const ReleaseRecord& release,
                                           const std::string& event, const std::string& detail,
                                           UnixMs now);

// Also an engine observer: each release event means rows were just committed (a kick).
class OutboxRelay final : public EngineObserver {
 public:
  // All must outlive the relay.
  OutboxRelay(Store* store, Notifier* notifier, const Clock* clock);
  ~OutboxRelay() override;  // Stop
  OutboxRelay(const OutboxRelay&) = delete;
  OutboxRelay& operator=(const OutboxRelay&) = delete;

  void Start();
  // Rows may have been committed: look now.
  void Kick();
  // Ends the thread; outcomes not yet recorded leave their rows pending.
  void Stop();

  void OnReleaseEvent(const Pipeline& /*pipeline*/, const ReleaseRecord& /*release*/,
                      const std::string& /*event*/, const std::string& /*detail*/) override {
    Kick();
  }
  void OnReleaseChanged(int64_t /*release_id*/) override {}

 private:
  struct Outcome {
    int64_t id = 0;
    int attempts = 0;
    bool delivered = false;
    std::string text;
  };
  void Run();
  // The notifier's worker, with its lock held: hands the outcome to Run.
  void Finished(Outcome outcome);

  Store* const store_;
  Notifier* const notifier_;
  const Clock* const clock_;
  const std::unique_ptr<Alarm> alarm_;
  std::thread thread_;
  absl::Mutex mu_;
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  bool kicked_ ABSL_GUARDED_BY(mu_) = false;
  std::set<int64_t> handed_over_ ABSL_GUARDED_BY(mu_);  // posted, outcome not yet recorded
  std::vector<Outcome> finished_ ABSL_GUARDED_BY(mu_);  // to record
};

}  // namespace lockstep
