// The GitHub push trigger: turns a signed push delivery into a release of every pipeline it
// triggers. Transport-free: the HTTP layer hands over the three headers and the raw body and
// sends back the reply, so the whole flow is testable without a web server.
//
// What a delivery goes through, in order:
//  1. Authentication, before a byte of the body is parsed. The body's HMAC is checked against
//     the secret of every pipeline with a github trigger (secrets are read again for every
//     delivery, so they rotate without a restart). A delivery no secret verifies gets one
//     fixed answer, 401 {"error": "invalid or missing X-Hub-Signature-256"}, whatever the
//     event, the body (JSON or not) or the repository it names: an unsigned caller learns
//     nothing, not even which repositories are configured. "ping" must be signed too.
//  2. Parsing (ParsePushEvent), then matching: only pipelines whose secret verified the body,
//     whose trigger.github.repository is the pushed repository and whose branch was pushed.
//  3. Replay protection. A push whose head commit is older than the commit of the pipeline's
//     current release (the newest commit_at of its desired release and its open releases) is
//     ignored (202), so replaying a recorded delivery cannot take the fleet back. So is a push
//     without head_commit.timestamp once the current release has a commit time. A push of a
//     commit that already has one of the pipeline's recent releases answers 200 {"duplicate":
//     id} (GitHub redelivers on timeouts). Both checks are made again, under a lock, just
//     before the release is created.
//  4. The artifact (trigger.github.artifact with {sha} filled in) is downloaded once to
//     compute its sha256, waiting for CI to publish it: 404, 403, 5xx and network errors are
//     retried a bounded number of times. Redirects are followed only within the same scheme,
//     host and port, at most 5; the body may not exceed trigger.github.max_artifact_bytes.
//  5. The release is created through the Engine with the commit and its time, and `kick` is
//     called so the engine acts on it at once.
//
// Replies: 201 {"release": {...}} created; 200 {"duplicate": id} or {"pong": true}; 202
// {"ignored": "why"}; 400 {"error"} a signed but malformed delivery; 401 as above; 502 the
// artifact could not be fetched; 503 stopping; 504 the artifact did not appear in time.
//
// Thread safety: Handle may be called from many threads at once (one per HTTP request); Stop
// from any thread. Engine, Store and Clock must outlive the trigger.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <mutex>
#include <nlohmann/json.hpp>
#include <optional>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "common/clock.h"
#include "common/status.h"
#include "orchestrator/engine/engine.h"
#include "orchestrator/pipeline/pipeline.h"
#include "orchestrator/store/store.h"
#include "orchestrator/webhook/github.h"

namespace lockstep {

// Every pipeline with a github trigger has a secret it can read now: secret_file names a
// readable regular file, or secret_env a set variable, holding a non-empty secret (surrounding
// whitespace is ignored). Otherwise kFailedPrecondition naming each such pipeline, its file
// and the file or variable. lockstepd calls this at start-up and refuses to start on an error.
Status CheckGithubSecrets(const std::vector<Pipeline>& pipelines);

// The webhook secret of a trigger as it is now, trimmed of surrounding whitespace. An error
// (naming the file or variable, not the pipeline) if none is configured, it cannot be read,
// it is larger than 64 KiB, or it is empty.
StatusOr<std::string> ReadGithubSecret(const GithubTrigger& trigger);

struct WebhookReply {
  int http_status = 0;
  nlohmann::json body;
};

struct GithubPushTriggerOptions {
  // Waiting for CI to publish an artifact: this many downloads, this far apart (on the
  // trigger's Clock). The default waits about 30 s, about as long as GitHub waits for the
  // answer to a delivery.
  int artifact_attempts = 60;
  std::chrono::milliseconds artifact_retry_delay{500};
  // Bounds of one HTTP request of a download (each redirect is another request).
  std::chrono::milliseconds connect_timeout{5000};
  std::chrono::milliseconds transfer_timeout{std::chrono::minutes(10)};
  // Redirects followed per download, all to the artifact URL's own scheme, host and port.
  int max_redirects = 5;
  // An unreadable secret is logged at most this often per pipeline.
  std::chrono::milliseconds secret_error_log_interval{std::chrono::minutes(1)};
};

class GithubPushTrigger {
 public:
  // `pipelines` are copied; those without a github trigger are never acted on. `kick` is
  // called (on the calling thread) after a release was created; it must not block.
  GithubPushTrigger(std::vector<Pipeline> pipelines, Engine* engine, Store* store,
                    const Clock* clock, std::function<void()> kick,
                    GithubPushTriggerOptions options = {});
  ~GithubPushTrigger();
  GithubPushTrigger(const GithubPushTrigger&) = delete;
  GithubPushTrigger& operator=(const GithubPushTrigger&) = delete;

  // Handles one delivery of POST /hooks/github: the X-GitHub-Event, X-Hub-Signature-256 and
  // X-GitHub-Delivery headers (empty if absent) and the raw body. May block while it waits
  // for the artifact (bounded by the options; Stop ends the wait).
  WebhookReply Handle(const std::string& event_header, const std::string& signature_header,
                      const std::string& delivery_header, const std::string& body);

  // Ends every wait and download in progress (their deliveries answer 503) and makes later
  // deliveries answer 503 instead of creating releases. Does not wait for Handle calls to
  // return.
  void Stop();

 private:
  WebhookReply TriggerRelease(const Pipeline& p, const PushEvent& push);
  // A reply if `push` must not create a release of `p` (older than the current release, or
  // already released), else nullopt.
  StatusOr<std::optional<WebhookReply>> RefusalOf(const Pipeline& p, const PushEvent& push);
  // The secret of `p`, or "" (logged, at most once per interval) if it cannot be read.
  std::string SecretOf(const Pipeline& p);

  struct Digest {
    int http_status = 0;  // of the last response; 0 if there was none
    std::string sha256;   // set on success
    std::string error;
    bool may_appear = false;  // worth retrying: the artifact may not be published yet
  };
  // One download of `url`, following same-origin redirects, hashing the body.
  Digest DownloadOnce(const std::string& url, int64_t max_bytes);
  // Downloads until the artifact is there, the attempts run out or Stop is called. The status
  // is 200, 502 (unusable), 503 (stopping) or 504 (never appeared).
  std::pair<int, Digest> WaitForArtifact(const std::string& url, int64_t max_bytes);

  const std::vector<Pipeline> pipelines_;
  Engine* const engine_;
  Store* const store_;
  const Clock* const clock_;
  const std::function<void()> kick_;
  const GithubPushTriggerOptions options_;

  std::atomic<bool> stopping_{false};
  std::mutex stop_mu_;
  // Guarded by stop_mu_: the alarm of each artifact retry wait in progress (one per
  // delivery waiting, made by clock_), woken by Stop.
  std::set<Alarm*> retry_waits_;

  std::mutex inflight_mu_;
  std::set<std::string> inflight_;  // guarded by inflight_mu_: "pipeline@commit" being handled

  // Held from the last refusal check to the creation of the release, so two deliveries cannot
  // both pass the checks and create releases out of order.
  std::mutex create_mu_;

  std::mutex log_mu_;
  // guarded by log_mu_: when an unreadable secret of a pipeline was last logged
  std::map<std::string, std::chrono::steady_clock::time_point> secret_logged_at_;
};

}  // namespace lockstep
