#include "orchestrator/webhook/github_trigger.h"

#include <curl/curl.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <memory>
#include <optional>
#include <system_error>
#include <thread>
#include <utility>
#include <vector>

#include "common/curl_options.h"
#include "common/json_views.h"
#include "common/sha256.h"
#include "common/untrusted.h"
#include "orchestrator/engine/history.h"
#include "orchestrator/server/views.h"

namespace lockstep {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;

constexpr size_t kMaxSecretBytes = 64 * 1024;
// The body of a response other than 200 (an error page, a redirect) is read only this far.
constexpr size_t kMaxOtherBodyBytes = 64 * 1024;
constexpr size_t kShortSha = 12;
constexpr size_t kMaxAuthorBytes = 200;  // Engine::ValidateRelease refuses longer authors
constexpr char kUserAgent[] = "lockstepd-webhook";
constexpr char kActor[] = "webhook:github";  // who releases made by pushes are audited as
constexpr char kShuttingDown[] = "lockstepd is shutting down; redeliver later";

// One answer for every delivery no configured secret verifies. It must not depend on the
// body, the event or the repository: that would tell an unsigned caller what is configured.
WebhookReply Unauthorized() {
  return {401, json{{"error", "invalid or missing X-Hub-Signature-256"}}};
}

WebhookReply Ignored(std::string why) { return {202, json{{"ignored", std::move(why)}}}; }

WebhookReply Error(int status, std::string message) {
  return {status, json{{"error", std::move(message)}}};
}

// `s` cut to at most `max` bytes without splitting a UTF-8 sequence.
std::string Truncated(std::string s, size_t max) {
  if (s.size() <= max) return s;
  size_t n = max;
  while (n > 0 && (static_cast<unsigned char>(s[n]) & 0xC0) == 0x80) --n;
  s.resize(n);
  return s;
}

// A commit time for a message: ISO 8601 UTC, or the raw number for times before 1970.
std::string TimeText(UnixMs t) {
  std::string text = FormatUnixMs(t);
  return text.empty() ? std::to_string(t) + " ms" : text;
}

// Scheme, host and port of a URL, as curl resolves them (host lower-cased, default ports
// filled in), for comparing where a redirect leads with where the download started.
struct Origin {
  std::string scheme;
  std::string host;
  std::string port;

  bool operator==(const Origin&) const = default;
  std::string ToString() const { return scheme + "://" + host + ":" + port; }
};

std::optional<Origin> OriginOf(const std::string& url) {
  std::unique_ptr<CURLU, CurlUrlDeleter> u(curl_url());
  if (!u || curl_url_set(u.get(), CURLUPART_URL, url.c_str(), 0) != CURLUE_OK) return std::nullopt;
  auto part = [&](CURLUPart which, unsigned int flags) -> std::optional<std::string> {
    char* value = nullptr;
    if (curl_url_get(u.get(), which, &value, flags) != CURLUE_OK || value == nullptr) {
      return std::nullopt;
    }
    std::string out = value;
    curl_free(value);
    return out;
  };
  std::optional<std::string> scheme = part(CURLUPART_SCHEME, 0);
  std::optional<std::string> host = part(CURLUPART_HOST, 0);
  std::optional<std::string> port = part(CURLUPART_PORT, CURLU_DEFAULT_PORT);
  if (!scheme || !host || !port) return std::nullopt;
  Origin o{*scheme, *host, *port};
  for (std::string* s : {&o.scheme, &o.host}) {
    std::transform(s->begin(), s->end(), s->begin(),
                   [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  }
  return o;
}

bool IsRedirect(long code) {  // NOLINT(google-runtime-int): curl's type
  return code == 301 || code == 302 || code == 303 || code == 307 || code == 308;
}

// State of one HTTP request, shared with curl's callbacks.
struct Transfer {
  CURL* curl = nullptr;
  const std::atomic<bool>* stopping = nullptr;
  int64_t max_bytes = 0;
  Sha256 hash;
  int64_t bytes = 0;
  size_t other_bytes = 0;
  bool too_big = false;
};

size_t OnBody(char* data, size_t size, size_t count, void* user) {
  auto* t = static_cast<Transfer*>(user);
  const size_t len = size * count;
  long code = 0;  // NOLINT(google-runtime-int): curl's type
  curl_easy_getinfo(t->curl, CURLINFO_RESPONSE_CODE, &code);
  if (code != 200) {
    // Only the status and headers of an error or a redirect matter.
    t->other_bytes += len;
    return t->other_bytes > kMaxOtherBodyBytes ? 0 : len;
  }
  // CURLOPT_MAXFILESIZE_LARGE refuses a Content-Length over the limit; this catches a body
  // that has none (chunked) or lies about it.
  t->bytes += static_cast<int64_t>(len);
  if (t->bytes > t->max_bytes) {
    t->too_big = true;
    return 0;
  }
  t->hash.Update(data, len);
  return len;
}

// Called by curl at least once a second, even while nothing arrives: how Stop ends a transfer.
int OnProgress(void* user, curl_off_t, curl_off_t, curl_off_t, curl_off_t) {
  return static_cast<Transfer*>(user)->stopping->load() ? 1 : 0;
}

}  // namespace

StatusOr<std::string> ReadGithubSecret(const GithubTrigger& trigger) {
  if (!trigger.secret_file.empty()) {
    const std::string what = "trigger.github.secret_file \"" + LogSafe(trigger.secret_file) + "\"";
    std::error_code ec;
    fs::file_status st = fs::status(trigger.secret_file, ec);
    if (ec) return FailedPrecondition(what + ": cannot read: " + ec.message());
    if (!fs::is_regular_file(st)) return FailedPrecondition(what + ": not a regular file");
    std::ifstream in(trigger.secret_file, std::ios::binary);
    if (!in) return FailedPrecondition(what + ": cannot open: " + std::strerror(errno));
    std::string text(kMaxSecretBytes + 1, '\0');
    in.read(text.data(), static_cast<std::streamsize>(text.size()));
    if (in.bad()) return FailedPrecondition(what + ": cannot read: " + std::strerror(errno));
    text.resize(static_cast<size_t>(in.gcount()));
    if (text.size() > kMaxSecretBytes) {
      return FailedPrecondition(what + ": larger than " + std::to_string(kMaxSecretBytes) +
                                " bytes; is it the right file?");
    }
    std::string secret(TrimSpace(text));
    if (secret.empty()) return FailedPrecondition(what + ": is empty");
    return secret;
  }
  if (!trigger.secret_env.empty()) {
    const std::string what =
        "trigger.github.secret_env: environment variable " + LogSafe(trigger.secret_env);
    const char* value = std::getenv(trigger.secret_env.c_str());
    if (value == nullptr) return FailedPrecondition(what + " is not set");
    std::string secret(TrimSpace(value));
    if (secret.empty()) return FailedPrecondition(what + " is empty");
    return secret;
  }
  return FailedPrecondition(
      "trigger.github has neither secret_file nor secret_env, so no delivery can be verified");
}

Status CheckGithubSecrets(const std::vector<Pipeline>& pipelines) {
  std::string errors;
  for (const Pipeline& p : pipelines) {
    if (!p.github) continue;
    StatusOr<std::string> secret = ReadGithubSecret(*p.github);
    if (secret.ok()) continue;
    if (!errors.empty()) errors += "; ";
    errors += "pipeline " + p.name + " (" + p.file + "): " + secret.status().message();
  }
  if (errors.empty()) return Status::Ok();
  return FailedPrecondition("webhook secret not usable: " + errors);
}

// One release waited for, and the thread that waits.
struct GithubPushTrigger::Waiter {
  int64_t release_id = 0;
  std::string pipeline;
  std::string url;
  int64_t max_bytes = 0;
  MonoTime deadline;             // on clock_: the release's created_at + artifact_wait
  std::unique_ptr<Alarm> alarm;  // the retry delay; only Stop wakes it
  std::thread thread;
};

GithubPushTrigger::GithubPushTrigger(Engine* engine, Store* store, const Clock* clock,
                                     std::function<void()> kick, GithubPushTriggerOptions options)
    : engine_(engine), store_(store), clock_(clock), kick_(std::move(kick)), options_(options) {
  CurlGlobalInitOnce();
  if (options_.resume_now) ResumeWaiting();
}

GithubPushTrigger::~GithubPushTrigger() { Stop(); }

void GithubPushTrigger::Stop() {
  std::map<int64_t, std::unique_ptr<Waiter>> all;
  {
    absl::MutexLock lock(&waiters_mu_);
    stopping_ = true;
    all.swap(waiters_);
    finished_.clear();
  }
  // A waiter checks stopping_ before every download and sleep, and a Wake that comes before
  // its sleep is kept (see Alarm); a download in progress ends at curl's next progress call.
  for (auto& entry : all) entry.second->alarm->Wake();
  for (auto& entry : all) {
    if (entry.second->thread.joinable()) entry.second->thread.join();
  }
}

size_t GithubPushTrigger::waiting() const {
  absl::MutexLock lock(&waiters_mu_);
  size_t n = 0;
  for (const auto& entry : waiters_) {
    if (!finished_.count(entry.first)) ++n;
  }
  return n;
}

std::string GithubPushTrigger::SecretOf(const Pipeline& p) {
  StatusOr<std::string> secret = ReadGithubSecret(*p.github);
  if (secret.ok()) return std::move(*secret);
  const auto now = clock_->Monotonic();
  absl::MutexLock lock(&log_mu_);
  auto it = secret_logged_at_.find(p.name);
  if (it == secret_logged_at_.end() || now - it->second >= options_.secret_error_log_interval) {
    secret_logged_at_[p.name] = now;
    spdlog::error("webhook: pipeline {} cannot verify GitHub deliveries: {}", p.name,
                  secret.status().message());
  }
  return "";
}

WebhookReply GithubPushTrigger::Handle(const std::string& event_header,
                                       const std::string& signature_header,
                                       const std::string& delivery_header,
                                       const std::string& body) {
  // Authenticate before anything in the body is looked at.
  std::vector<const Pipeline*> verified;
  for (const Pipeline& p : engine_->pipelines()) {
    if (!p.github) continue;
    const std::string secret = SecretOf(p);
    if (!secret.empty() && VerifyGithubSignature(secret, body, signature_header)) {
      verified.push_back(&p);
    }
  }
  const std::string delivery =
      delivery_header.empty() ? "no delivery id" : LogSafe(delivery_header, 64);
  if (verified.empty()) {
    spdlog::debug("webhook: delivery ({}) not signed by any configured secret", delivery);
    return Unauthorized();
  }

  if (event_header == "ping") return {200, json{{"pong", true}}};
  if (event_header.empty()) return Error(400, "missing X-GitHub-Event header");
  if (event_header != "push") {
    return Ignored("event \"" + LogSafe(event_header, 64) + "\" is not a push");
  }
  StatusOr<PushEvent> push = ParsePushEvent(body);
  if (!push.ok()) {
    spdlog::warn("webhook: signed delivery ({}) is not a usable push: {}", delivery,
                 push.status().message());
    return Error(400, push.status().message());
  }
  spdlog::info("webhook push {} ({})", LogSafe(push->delivery_hint), delivery);
  if (push->deleted) return Ignored("branch deleted");

  std::vector<const Pipeline*> targets;
  for (const Pipeline* p : verified) {
    if (p->github->repository == push->repository) targets.push_back(p);
  }
  if (targets.empty()) {
    // The caller holds a configured secret, so naming the repository tells it nothing new.
    return Ignored("no pipeline that accepts this signature is triggered by " +
                   LogSafe(push->repository));
  }

  // Each target on the pushed branch gets a release; the answer is the first one's outcome
  // (a repository usually triggers one pipeline).
  std::optional<WebhookReply> reply;
  for (const Pipeline* p : targets) {
    if (push->branch.empty() || push->branch != p->github->branch) continue;
    WebhookReply r = TriggerRelease(*p, *push);
    if (!reply) reply = std::move(r);
  }
  if (!reply) {
    return Ignored("push to " + LogSafe(push->branch.empty() ? push->ref : push->branch));
  }
  return std::move(*reply);
}

StatusOr<std::optional<WebhookReply>> GithubPushTrigger::RefusalOf(const Pipeline& p,
                                                                   const PushEvent& push) {
  // The current release: the newest commit among what the fleet should run and what is on
  // its way (waiting for its artifact included). Releases made by hand carry no commit time
  // and do not count.
  const ReleaseRecord* current = nullptr;
  LOCKSTEP_ASSIGN_OR_RETURN(auto desired, DesiredRelease(*store_, p.name));
  LOCKSTEP_ASSIGN_OR_RETURN(auto open, OpenReleases(*store_, p.name));
  auto consider = [&](const ReleaseRecord& r) {
    if (r.commit_at != 0 && (current == nullptr || r.commit_at > current->commit_at)) {
      current = &r;
    }
  };
  if (desired.has_value()) consider(*desired);
  for (const ReleaseRecord& r : open) consider(r);

  const std::string commit = push.after.substr(0, kShortSha);
  if (current != nullptr) {
    const std::string of_current = "the current release " + current->version + " of pipeline " +
                                   p.name + " (commit " + current->commit.substr(0, kShortSha) +
                                   " of " + TimeText(current->commit_at) + ")";
    std::string why;
    if (push.committed_at_ms == 0) {
      why = "commit " + commit + " has no head_commit.timestamp, so it cannot be shown to be " +
            "newer than " + of_current;
    } else if (push.committed_at_ms < current->commit_at) {
      why = "commit " + commit + " of " + TimeText(push.committed_at_ms) + " is older than " +
            of_current + "; a replayed or late push cannot move the fleet back (lockstep " +
            "rollback can)";
    }
    if (!why.empty()) {
      spdlog::warn("webhook: pipeline {}: {}", p.name, why);
      return std::optional<WebhookReply>(Ignored(std::move(why)));
    }
  }

  ReleaseQuery same_commit;
  same_commit.pipeline = p.name;
  same_commit.commit = push.after;
  same_commit.limit = 1;
  LOCKSTEP_ASSIGN_OR_RETURN(auto earlier, store_->FindReleases(same_commit));
  if (!earlier.empty()) {
    const ReleaseRecord& last = earlier.front();
    // A release whose artifact never came (the wait ran out) is no reason to refuse the
    // commit: a delivery sent again once CI is fixed tries again.
    const bool never_had_artifact =
        last.state == release_state::kFailed && last.sha256.empty() && last.started_at == 0;
    if (!never_had_artifact) {
      return std::optional<WebhookReply>(WebhookReply{200, json{{"duplicate", last.id}}});
    }
  }
  return std::optional<WebhookReply>();
}

WebhookReply GithubPushTrigger::TriggerRelease(const Pipeline& p, const PushEvent& push) {
  if (stopping_) return Error(503, kShuttingDown);
  StatusOr<ReleaseRecord> created = Internal("no release created");
  {
    absl::MutexLock lock(&create_mu_);
    StatusOr<std::optional<WebhookReply>> refusal = RefusalOf(p, push);
    if (!refusal.ok()) return Error(500, refusal.status().message());
    if (refusal->has_value()) return std::move(**refusal);

    NewRelease nr;
    nr.pipeline = p.name;
    nr.version = push.after.substr(0, kShortSha);
    nr.artifact_url = ExpandArtifactTemplate(p.github->artifact, push.after);
    nr.commit = push.after;
    nr.author = Truncated(push.author, kMaxAuthorBytes);
    nr.commit_at = push.committed_at_ms;
    // The same push delivered to two lockstepd (or twice to one) makes one release: the
    // store refuses a second release with this id. A commit retried after its artifact
    // never came gets a fresh id, named after the failed attempt.
    nr.request_id = "github-push:" + push.after;
    ReleaseQuery same_commit;
    same_commit.pipeline = p.name;
    same_commit.commit = push.after;
    same_commit.limit = 1;
    if (auto earlier = store_->FindReleases(same_commit); earlier.ok() && !earlier->empty()) {
      nr.request_id += ":after-" + std::to_string(earlier->front().id);
    }
    created = engine_->CreateReleaseAwaitingArtifact(nr, kActor);
  }
  if (!created.ok()) {
    return Error(HttpStatusOf(created.status().code()), created.status().message());
  }
  spdlog::info("webhook: release {} of pipeline {} created for commit {}; waiting for {}",
               created->id, p.name, push.after, created->artifact_url);
  StartWaiting(p, *created);
  if (kick_) kick_();
  return {202, json{{"release", ReleaseJson(ReleaseSummary(*created))}}};
}

void GithubPushTrigger::ResumeWaiting() {
  for (const Pipeline& p : engine_->pipelines()) {
    if (!p.github) continue;
    ReleaseQuery q;
    q.pipeline = p.name;
    q.states = {release_state::kWaitingForArtifact};
    q.oldest_first = true;
    q.limit = 0;
    StatusOr<std::vector<ReleaseRecord>> waiting = store_->FindReleases(q);
    if (!waiting.ok()) {
      spdlog::error(
          "webhook: pipeline {}: cannot find the releases waiting for their artifact ({}); "
          "they fail when their trigger.github.artifact_wait runs out",
          p.name, waiting.status().ToString());
      continue;
    }
    for (const ReleaseRecord& r : *waiting) {
      spdlog::info("webhook: release {} of pipeline {}: waiting again for its artifact {}", r.id,
                   p.name, r.artifact_url);
      StartWaiting(p, r);
    }
  }
}

void GithubPushTrigger::StartWaiting(const Pipeline& p, const ReleaseRecord& release) {
  auto w = std::make_unique<Waiter>();
  w->release_id = release.id;
  w->pipeline = p.name;
  w->url = release.artifact_url;
  w->max_bytes = p.github->max_artifact_bytes;
  // The deadline is stored (created_at) plus configured (artifact_wait), so a restarted
  // lockstepd waits only for what is left.
  const UnixMs deadline = release.created_at + p.github->artifact_wait.count();
  const int64_t left = std::max<int64_t>(0, deadline - clock_->Now());
  w->deadline = clock_->Monotonic() + std::chrono::milliseconds(left);
  w->alarm = clock_->NewAlarm();

  std::vector<std::unique_ptr<Waiter>> ended;
  {
    absl::MutexLock lock(&waiters_mu_);
    for (int64_t id : finished_) {
      auto it = waiters_.find(id);
      if (it == waiters_.end()) continue;
      ended.push_back(std::move(it->second));
      waiters_.erase(it);
    }
    finished_.clear();
    if (!stopping_ && !waiters_.count(release.id)) {
      Waiter* waiter = w.get();
      waiter->thread = std::thread([this, waiter] {
        WaitForArtifact(*waiter);
        absl::MutexLock done(&waiters_mu_);
        finished_.insert(waiter->release_id);
      });
      waiters_.emplace(release.id, std::move(w));
    }
  }
  // These threads have returned (or are about to: they only had finished_ left to write).
  for (auto& e : ended) e->thread.join();
}

void GithubPushTrigger::WaitForArtifact(Waiter& w) {
  std::chrono::milliseconds delay = options_.artifact_retry_delay;
  std::string last_error = "not tried";
  for (;;) {
    if (stopping_) return;
    // A pass ends a waiting release (aborted, superseded, failed at its deadline). Once it
    // has, or an abort was asked for, nothing is left to wait for.
    StatusOr<ReleaseRecord> r = store_->GetRelease(w.release_id);
    if (!r.ok()) {
      spdlog::warn("webhook: release {}: cannot read it ({}); still waiting for its artifact",
                   w.release_id, r.status().ToString());
    } else if (r->state != release_state::kWaitingForArtifact || r->abort_requested_at != 0) {
      spdlog::info("webhook: release {} of pipeline {} is {}{}; no longer waiting for {}",
                   w.release_id, w.pipeline, r->state,
                   r->abort_requested_at != 0 ? " (abort requested)" : "", w.url);
      return;
    }
    if (clock_->Monotonic() >= w.deadline) {
      spdlog::warn("webhook: release {} of pipeline {}: artifact {} did not appear in time ({})",
                   w.release_id, w.pipeline, w.url, last_error);
      if (kick_) kick_();  // the pass that fails it is due now
      return;
    }
    const Digest d = DownloadOnce(w.url, w.max_bytes);
    if (stopping_) return;
    if (!d.sha256.empty()) {
      spdlog::info("webhook: release {} of pipeline {}: artifact {} arrived, sha256 {}",
                   w.release_id, w.pipeline, w.url, d.sha256);
      engine_->ArtifactChecked(w.release_id, d.sha256, "");
      if (kick_) kick_();
      return;
    }
    if (!d.may_appear) {
      const std::string why = "artifact " + w.url + " could not be fetched: " + d.error;
      spdlog::warn("webhook: release {} of pipeline {}: {}", w.release_id, w.pipeline, why);
      engine_->ArtifactChecked(w.release_id, "", why);
      if (kick_) kick_();
      return;
    }
    last_error = d.error;
    spdlog::debug("webhook: release {}: artifact {} not there yet ({}); next try in {} ms",
                  w.release_id, w.url, d.error, delay.count());
    // Woken early only by Stop, which the top of the loop sees.
    w.alarm->WaitUntil(std::min(clock_->Monotonic() + delay, w.deadline));
    delay = std::min(delay * 2, options_.artifact_max_retry_delay);
  }
}

GithubPushTrigger::Digest GithubPushTrigger::DownloadOnce(const std::string& url,
                                                          int64_t max_bytes) {
  Digest d;
  const std::optional<Origin> origin = OriginOf(url);
  if (!origin) {
    d.error = "not a valid http(s) URL";
    return d;
  }
  CurlEasy curl(curl_easy_init());
  if (!curl) {
    d.error = "cannot start an HTTP client";
    return d;
  }
  char errbuf[CURL_ERROR_SIZE];
  std::string current = url;
  for (int hop = 0;; ++hop) {
    errbuf[0] = '\0';
    Transfer t;
    t.curl = curl.get();
    t.stopping = &stopping_;
    t.max_bytes = max_bytes;
    CURL* c = curl.get();
    SetCommonCurlOptions(c, current.c_str(), errbuf, options_.transfer_timeout, kUserAgent);
    curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT_MS,
                     static_cast<long>(options_.connect_timeout.count()));  // NOLINT
    curl_easy_setopt(c, CURLOPT_HTTPGET, 1L);
    curl_easy_setopt(c, CURLOPT_MAXFILESIZE_LARGE, static_cast<curl_off_t>(max_bytes));
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, &OnBody);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, &t);
    curl_easy_setopt(c, CURLOPT_NOPROGRESS, 0L);
    curl_easy_setopt(c, CURLOPT_XFERINFOFUNCTION, &OnProgress);
    curl_easy_setopt(c, CURLOPT_XFERINFODATA, &t);
    const CURLcode rc = curl_easy_perform(c);
    long code = 0;  // NOLINT(google-runtime-int): curl's type
    curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &code);
    d.http_status = static_cast<int>(code);
    const std::string curl_error = errbuf[0] != '\0' ? errbuf : curl_easy_strerror(rc);

    if (stopping_) {
      d.error = "stopped";
      return d;
    }
    if (t.too_big || rc == CURLE_FILESIZE_EXCEEDED) {
      d.error =
          "larger than " + std::to_string(max_bytes) + " bytes (trigger.github.max_artifact_bytes)";
      return d;
    }
    if (code == 0) {
      d.error = curl_error;
      d.may_appear = true;  // the server may be starting, or the network back soon
      return d;
    }
    if (IsRedirect(code)) {
      char* location = nullptr;
      curl_easy_getinfo(c, CURLINFO_REDIRECT_URL, &location);
      if (location == nullptr) {
        d.error = "HTTP " + std::to_string(code) + " redirect without a usable Location";
        return d;
      }
      const std::string target = location;
      const std::optional<Origin> next = OriginOf(target);
      if (!next || !(*next == *origin)) {
        const std::string where =
            next ? next->ToString() : "\"" + LogSafe(target, 200) + "\" (not an http(s) URL)";
        d.error = "redirect to another host refused: " + LogSafe(where, 200) +
                  " (only redirects within " + origin->ToString() + " are followed)";
        return d;
      }
      if (hop + 1 > options_.max_redirects) {
        d.error = "more than " + std::to_string(options_.max_redirects) + " redirects";
        return d;
      }
      current = target;
      continue;
    }
    if (code != 200) {
      d.error = "HTTP " + std::to_string(code);
      d.may_appear = code == 404 || code == 403 || code >= 500;
      return d;
    }
    if (rc != CURLE_OK) {
      d.error = "download interrupted: " + curl_error;
      d.may_appear = true;
      return d;
    }
    d.sha256 = t.hash.FinishHex();
    return d;
  }
}

}  // namespace lockstep
