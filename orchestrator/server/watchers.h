// Watchers: what the control API's live views (WatchRelease, WatchStatus) wait on.
//
// Publishing. Every change to what a view shows reaches the Watchers as it happens, and costs
// the publisher one lock and a few increments: no store read, no wait for a watch, so the engine
// thread is never held up by a slow client. Three feeds, one set of generation counters (one
// per watched release, one for everything else, one for every change):
//  - the engine's observer callbacks (OnReleaseEvent, OnReleaseChanged): releases, waves and
//    gate verdicts, reported after the pass that changed them committed;
//  - commits through the store the engine writes with (PublishingStore): host rows, agents
//    (connected, disconnected, their version), pipeline switches (pause, freeze, holds),
//    approvals and abort requests, and retired hosts. The engine reports none of these, or,
//    for a task result, reports it when it applies it in memory, before the pass that writes
//    it; the commit is when a view loaded from the store shows it;
//  - Touch, for anything else (the orchestrator calls it when a token is revoked).
// What reaches no feed (a token expiring, the pipeline files reloaded) shows at the latest
// with the next keep-alive, which loads the view again.
//
// Waiting. Each open watch (a Watch) runs on its own request thread (a gRPC sync-server
// thread). It remembers the generation it last loaded at, sleeps until a newer one, its next
// keep-alive, Shutdown or its client going away, and then loads the view itself through the
// caller's hooks (Operations, which authenticates the caller again: a revoked token ends the
// watch at its next view). A watch costs the store one read per wake-up, and sends only views
// that differ from the last one it sent, except the keep-alive: the current view again after
// `keepalive` without a message, so a client can tell a live but quiet server from a dead one.
//
// Limits. At most max_watches are open at once (kResourceExhausted naming the limit beyond),
// so watches cannot take every request thread. Shutdown ends every wait at once (the watch
// returns kUnavailable) and refuses new watches, so stopping the server is not held up by
// open streams.
//
// Time. Deadlines are the Clock's monotonic time, so a ManualClock moves them; the waits
// themselves are timed waits of real time on a condition variable, at most `gone_poll` long,
// so under a ManualClock a watch notices a deadline that time was advanced past within one
// real `gone_poll`.
//
// Thread safety: every method of Watchers and PublishingStore may be called from any thread.
// A Watch is used by one thread at a time. REQUIRES: every Watch is destroyed before its
// Watchers.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "common/clock.h"
#include "common/status.h"
#include "orchestrator/engine/engine.h"
#include "orchestrator/store/store.h"

namespace lockstep {

struct WatchLimits {
  static constexpr int kDefaultMaxWatches = 256;
  int max_watches = kDefaultMaxWatches;
  // The current view is sent again after this long without a message.
  std::chrono::milliseconds keepalive{15'000};
  // How often a waiting watch asks whether its client went away (a sync gRPC handler is not
  // told; it has to ask).
  std::chrono::milliseconds gone_poll{1'000};
};

class Watch;

class Watchers final : public EngineObserver {
 public:
  // `clock` must outlive the Watchers.
  Watchers(const Clock* clock, WatchLimits limits);
  ~Watchers() override;

  // Engine thread, after a pass committed (EngineObserver): release `release.id` changed.
  void OnReleaseEvent(const Pipeline& pipeline, const ReleaseRecord& release,
                      const std::string& event, const std::string& detail) override;
  void OnReleaseChanged(int64_t release_id) override;
  // Release `release_id` changed (PublishingStore: its host rows were written).
  void PublishRelease(int64_t release_id);
  // Something that is not one release changed: an agent, a pipeline switch, a token.
  void Touch();

  // Opens a watch of one release: it wakes for that release's changes and for Touch. Of
  // every status: it wakes for any change. kResourceExhausted at max_watches, kUnavailable
  // after Shutdown.
  StatusOr<std::unique_ptr<Watch>> OpenRelease(int64_t release_id);
  StatusOr<std::unique_ptr<Watch>> OpenStatus();

  // Ends every wait (its watch returns kUnavailable) and refuses new watches. Idempotent.
  void Shutdown();

 private:
  friend class Watch;
  enum class Wake { kChanged, kDue, kGone, kShutdown };

  StatusOr<std::unique_ptr<Watch>> Open(bool all, int64_t release_id);
  void Close(const Watch& w);
  // Blocks until what `w` follows moved past the generation it last saw (then records the
  // new one), `due` passes, Shutdown, or `gone` says its client went away (asked every
  // gone_poll).
  Wake Await(Watch& w, MonoTime due, const std::function<bool()>& gone);
  // What `w` follows, as one number that grows whenever anything it follows changes.
  uint64_t StampLocked(const Watch& w) const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void PublishLocked(int64_t release_id) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  const Clock* const clock_;
  const WatchLimits limits_;

  mutable absl::Mutex mu_;
  absl::CondVar changed_;  // signalled on every publication and on Shutdown
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  int open_ ABSL_GUARDED_BY(mu_) = 0;
  uint64_t touched_ ABSL_GUARDED_BY(mu_) = 0;  // Touch
  uint64_t all_ ABSL_GUARDED_BY(mu_) = 0;      // every publication
  struct Watched {
    uint64_t generation = 0;
    int watches = 0;  // open watches of this release; the entry goes with the last
  };
  // Only releases someone watches: publishing for others is an increment of all_ alone.
  std::map<int64_t, Watched> releases_ ABSL_GUARDED_BY(mu_);
};

// One open watch, holding one of the Watchers' slots until destroyed.
class Watch {
 public:
  ~Watch();
  Watch(const Watch&) = delete;
  Watch& operator=(const Watch&) = delete;

  // What a load of the view found.
  struct Look {
    // The view as it would be sent (e.g. serialized): one equal to the last one sent is not
    // sent again, except as the keep-alive.
    std::string bytes;
    bool last = false;  // send it, then end the watch with OK
  };
  // How a front door shows the view. Called on the watch's thread only.
  struct Hooks {
    // Loads the current view (authenticating the caller again) and keeps it for `send`. An
    // error ends the watch with it.
    std::function<StatusOr<Look>()> load;
    // Sends the view `load` kept. False: the client is gone.
    std::function<bool()> send;
    // Whether the client went away (cancelled, disconnected).
    std::function<bool()> gone;
  };

  // Runs the watch: sends the first view at once; then, whenever what it follows changed,
  // loads the view and sends it if it differs; and sends the current view again after
  // `keepalive` without a message. Ends with OK right after sending a `last` view, with the
  // load's error, or kUnavailable when the client went away or the Watchers shut down.
  Status Run(const Hooks& hooks);

 private:
  friend class Watchers;
  Watch(Watchers* owner, bool all, int64_t release_id, uint64_t seen)
      : owner_(owner), all_(all), release_id_(release_id), seen_(seen) {}

  Watchers* const owner_;
  const bool all_;            // every change (a status watch), else one release and Touch
  const int64_t release_id_;  // when !all_
  uint64_t seen_;             // the stamp the view was last loaded at; the watch's thread only
};

// The store the engine writes through: forwards everything, and after each write that
// commits publishes what it changed that the engine's callbacks do not report (see above):
// the releases of written host rows, approvals and abort requests, and a Touch for agents,
// pipeline switches, holds and retired hosts. Both must outlive it.
class PublishingStore final : public ForwardingStore {
 public:
  PublishingStore(Store* inner, Watchers* watchers) : ForwardingStore(inner), watchers_(watchers) {}

  Status Write(const WriteBatch& batch) override;
  Status RemoveAgent(const std::string& name, const AuditRecord& audit) override;

 private:
  Watchers* const watchers_;
};

}  // namespace lockstep
