// Notifier: delivers release-event notifications to webhooks (Slack-compatible JSON POSTs)
// without ever making the rollout engine wait for the network.
//
// Post() validates and enqueues, then returns; one background worker thread owned by the
// Notifier sends each notification as `Content-Type: application/json` and retries with
// exponential backoff and jitter when the outcome may change on its own: no connection, a
// timeout, HTTP 5xx or 429. Any 2xx is delivered. Other HTTP statuses (other 4xx, 3xx:
// redirects are not followed) and URLs that are not http:// or https:// fail at once. A
// notification that waits for its retry does not hold up the others: the worker sends
// whatever is due first, so deliveries of different notifications interleave. A final
// failure is logged at warn (with the URL cut to scheme and host, because the path of a Slack
// webhook URL is its secret) and counted; nothing is reported back to the caller.
//
// Bounded memory: at most `max_queue` notifications wait (for a first attempt or a retry),
// not counting the one being sent. When a Post would exceed that, the OLDEST waiting
// notification (by Post order) is dropped and counted: the newest events describe the
// current state of a release, and the oldest is the one most likely stuck retrying against a
// receiver that is down.
//
// Time: backoffs and Drain's timeout are measured on the Clock given at construction, and the
// worker sleeps on an Alarm of it. Under a ManualClock a retry happens only once the test
// advanced time past its backoff; the per-attempt `timeout` is curl's and is real time.
//
// Thread safety: Post, stats and Drain may be called from any thread, concurrently. None of
// them blocks on the network; Post and stats only take an internal lock that the worker never
// holds while sending. Destruction must not race with other calls.
//
// A POST whose response is lost (a timeout) is sent again, so a receiver may see a
// notification twice; Slack messages are informational, so that beats losing one.
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>

#include "common/clock.h"

namespace lockstep {

struct Notification {
  std::string url;    // http:// or https:// webhook URL
  std::string event;  // release_started, wave_passed, succeeded, failed, ... (for logs)
  // The JSON body. Must be an object with a string "text" field (Slack shows it); see
  // NotificationBody.
  nlohmann::json payload;
  // Called once with the final outcome: delivered (a 2xx), or given up on (rejected, invalid,
  // out of attempts), with a short reason. Not called for a notification dropped from a full
  // queue or abandoned when the notifier stops: it was neither. Runs on the notifier's worker
  // (or in Post, for an invalid one) with an internal lock held: it must only hand off.
  std::function<void(bool delivered, const std::string& outcome)> done = nullptr;
};

struct NotifierOptions {
  int attempts = 5;  // POSTs per notification, including the first; values < 1 mean 1
  // Wait before the second attempt; doubles for each further one, up to max_backoff. Each wait
  // is drawn uniformly from [half, full] of that value (jitter), so it is never shorter than
  // half of it.
  std::chrono::milliseconds initial_backoff{500};
  std::chrono::milliseconds max_backoff{30000};
  std::chrono::milliseconds timeout{5000};  // per attempt, connecting included
  size_t max_queue = 1000;                  // waiting notifications; values < 1 mean 1
};

class Notifier {
 public:
  // Starts the worker thread. Initialises libcurl globally on first use. `clock` must outlive
  // the notifier.
  explicit Notifier(NotifierOptions options = {}, const Clock* clock = SystemClock::Get());
  // Stops the worker: waits for an in-flight POST (bounded by options.timeout), then abandons
  // every waiting notification, counting each as dropped. Call Drain first to deliver them.
  ~Notifier();
  Notifier(const Notifier&) = delete;
  Notifier& operator=(const Notifier&) = delete;

  // Enqueues `n` and returns without waiting for the network. A notification whose URL is not
  // http(s) or whose payload lacks a string "text" is counted as failed here, logged, and
  // never sent. May drop the oldest waiting notification (see above).
  void Post(Notification n);

  struct Stats {
    uint64_t delivered = 0;  // got a 2xx
    uint64_t failed = 0;     // final failure: rejected, invalid, or out of attempts
    uint64_t dropped = 0;    // evicted from a full queue, or abandoned at destruction
    uint64_t retried = 0;    // attempts after the first, over all notifications
  };
  Stats stats() const;

  // Waits until nothing is waiting or being sent, at most `timeout` of the clock's time.
  // Returns true if that happened. A notification waiting for a retry later than `timeout`
  // makes this return false, as soon as nothing is being sent (it cannot go sooner). For tests
  // and orderly shutdown.
  bool Drain(std::chrono::milliseconds timeout);

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// The Slack-compatible body for a release event: {"text": text, "event": event} plus every
// key of `fields` (an object; null adds nothing; any other JSON value is stored under
// "fields"). "text" and "event" always come from the arguments, even if `fields` has them.
nlohmann::json NotificationBody(const std::string& event, const std::string& text,
                                nlohmann::json fields);

}  // namespace lockstep
