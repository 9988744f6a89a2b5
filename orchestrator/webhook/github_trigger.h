// The GitHub push trigger: turns a signed push delivery into a release of every pipeline it
// triggers, and answers at once; the artifact is waited for in the background, because CI
// often publishes it minutes after the push and GitHub gives up on an answer after 10 s (and
// does not deliver again). Transport-free: the HTTP layer hands over the three headers and
// the raw body and sends back the reply, so the whole flow is testable without a web server.
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
//     current release (the newest commit_at of its desired release and its open releases,
//     those waiting for their artifact included) is ignored (202), so replaying a recorded
//     delivery cannot take the fleet back. So is a push without head_commit.timestamp once
//     the current release has a commit time. A push of a commit that already has a release
//     answers 200 {"duplicate": id} (GitHub redelivers on timeouts), unless that release
//     failed without ever getting its artifact: then the delivery tries again. The checks and
//     the creation are made under one lock, so two deliveries cannot both pass them.
//  4. The release is created through the Engine (CreateReleaseAwaitingArtifact) in state
//     `waiting_for_artifact`, with the commit and its time, and answered 202 {"release":
//     {...}} naming its id; `kick` is called so that a pass reports it and lets it replace an
//     older release of the pipeline that still waits.
//  5. In the background, on a thread of its own, the artifact (trigger.github.artifact with
//     {sha} filled in) is downloaded to compute its sha256: at once, then again after
//     artifact_retry_delay, doubling up to artifact_max_retry_delay, while 404, 403, 5xx and
//     network errors say it may still appear, until trigger.github.artifact_wait has passed
//     since the release was created. Redirects are followed only within the same scheme, host
//     and port, at most 5; the body may not exceed trigger.github.max_artifact_bytes. What was
//     found (the sha256, or why the artifact can never be used) is reported to the Engine
//     (ArtifactChecked) and `kick` is called: the next pass queues the release (or fails it).
//     The wait stops early once the release no longer waits (a newer push superseded it, or
//     someone asked to abort it), and at the deadline, when the engine fails the release.
// On construction the trigger resumes waiting for every release of its pipelines that an
// earlier lockstepd left waiting_for_artifact, for what is left of its artifact_wait (counted
// from the release's created_at, which is stored).
//
// Replies: 202 {"release": {...}} accepted (the release waits for its artifact); 200
// {"duplicate": id} or {"pong": true}; 202 {"ignored": "why"}; 400 {"error"} a signed but
// malformed delivery; 401 as above; 500 the store could not be read or written; 503 stopping.
//
// Thread safety: Handle may be called from many threads at once (one per HTTP request); Stop
// and waiting() from any thread. Each release waited for has a thread, ended and joined by
// Stop (or the destructor). Engine, Store and Clock must outlive the trigger.
#pragma once

#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
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
  // Waiting for CI to publish an artifact: the first download at once, the next after
  // artifact_retry_delay, each delay twice the last up to artifact_max_retry_delay (on the
  // trigger's Clock), until the pipeline's trigger.github.artifact_wait runs out.
  std::chrono::milliseconds artifact_retry_delay{500};
  std::chrono::milliseconds artifact_max_retry_delay{std::chrono::seconds(30)};
  // Bounds of one HTTP request of a download (each redirect is another request).
  std::chrono::milliseconds connect_timeout{5000};
  std::chrono::milliseconds transfer_timeout{std::chrono::minutes(10)};
  // Redirects followed per download, all to the artifact URL's own scheme, host and port.
  int max_redirects = 5;
  // Whether construction resumes the waits of releases left waiting_for_artifact. A standby
  // lockstepd constructs its trigger without (it writes nothing) and calls ResumeWaiting when
  // it starts to lead.
  bool resume_now = true;
  // An unreadable secret is logged at most this often per pipeline.
  std::chrono::milliseconds secret_error_log_interval{std::chrono::minutes(1)};
};

class GithubPushTrigger {
 public:
  // The pipelines are the engine's in force at each delivery (a reload applies at once);
  // those without a github trigger are never acted on. `kick` asks
  // for an engine pass; it is called from request threads and waiting threads and must not
  // block. Resumes waiting for the artifacts of releases left waiting_for_artifact (see
  // above); a store that cannot be read then is logged, and those releases fail at their
  // deadline.
  GithubPushTrigger(Engine* engine, Store* store, const Clock* clock, std::function<void()> kick,
                    GithubPushTriggerOptions options = {});
  ~GithubPushTrigger();
  // StartWaiting for every release of the pipelines left waiting (at construction, unless
  // options.resume_now is false).
  void ResumeWaiting();
  GithubPushTrigger(const GithubPushTrigger&) = delete;
  GithubPushTrigger& operator=(const GithubPushTrigger&) = delete;

  // Handles one delivery of POST /hooks/github: the X-GitHub-Event, X-Hub-Signature-256 and
  // X-GitHub-Delivery headers (empty if absent) and the raw body. Never waits for an
  // artifact: reads and writes the store, and returns.
  WebhookReply Handle(const std::string& event_header, const std::string& signature_header,
                      const std::string& delivery_header, const std::string& body);

  // Ends every wait and download in progress and joins their threads (a download notices
  // within about a second), and makes later deliveries answer 503. The releases stay
  // waiting_for_artifact in the store; the next lockstepd resumes them. Idempotent.
  void Stop();

  // Releases whose artifact is being waited for now.
  size_t waiting() const;

 private:
  struct Waiter;

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

  // Starts a thread that waits for the artifact of `release` (of `p`, waiting_for_artifact),
  // unless the trigger is stopping or already waits for it. Joins threads that ended.
  void StartWaiting(const Pipeline& p, const ReleaseRecord& release);
  // A waiting thread: downloads until the artifact is there or unusable (reported to the
  // engine), the release no longer waits, the deadline passes, or Stop.
  void WaitForArtifact(Waiter& w);

  Engine* const engine_;
  Store* const store_;
  const Clock* const clock_;
  const std::function<void()> kick_;
  const GithubPushTriggerOptions options_;

  // Set once, under waiters_mu_; read without it by downloads (curl's progress callback).
  std::atomic<bool> stopping_{false};
  mutable absl::Mutex waiters_mu_;
  // The waiting threads by release id; a thread that ended is in finished_ until joined.
  std::map<int64_t, std::unique_ptr<Waiter>> waiters_ ABSL_GUARDED_BY(waiters_mu_);
  std::set<int64_t> finished_ ABSL_GUARDED_BY(waiters_mu_);

  // Held from the refusal checks to the creation of the release, so two deliveries cannot
  // both pass the checks and create releases of one commit, or out of order.
  absl::Mutex create_mu_;

  absl::Mutex log_mu_;
  // When an unreadable secret of a pipeline was last logged.
  std::map<std::string, MonoTime> secret_logged_at_ ABSL_GUARDED_BY(log_mu_);
};

}  // namespace lockstep
