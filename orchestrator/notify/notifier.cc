#include "orchestrator/notify/notifier.h"

#include <curl/curl.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <cctype>
#include <map>
#include <random>
#include <set>
#include <thread>
#include <utility>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "common/curl_options.h"

namespace lockstep {
namespace {

// Enough of a rejected response to explain it in the log (Slack answers "invalid_payload",
// "no_text", ...), not so much that a misbehaving receiver fills the log.
constexpr size_t kMaxResponseExcerpt = 200;

bool HasHttpScheme(const std::string& url) {
  std::string prefix = url.substr(0, 8);
  std::transform(prefix.begin(), prefix.end(), prefix.begin(),
                 [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  return prefix.rfind("http://", 0) == 0 || prefix.rfind("https://", 0) == 0;
}

// "scheme://host[:port]" of `url`: the path, query and user info of a webhook URL are
// credentials (Slack puts its token in the path) and must not reach the log.
std::string RedactUrl(const std::string& url) {
  const size_t scheme_end = url.find("://");
  if (scheme_end == std::string::npos) return "<url without scheme>";
  const size_t host_begin = scheme_end + 3;
  const size_t host_end = std::min(url.find_first_of("/?#", host_begin), url.size());
  std::string authority = url.substr(host_begin, host_end - host_begin);
  const size_t at = authority.rfind('@');
  if (at != std::string::npos) authority.erase(0, at + 1);
  return url.substr(0, host_begin) + authority + (host_end < url.size() ? "/..." : "");
}

size_t KeepExcerpt(char* data, size_t size, size_t nmemb, void* user) {
  auto* out = static_cast<std::string*>(user);
  const size_t n = size * nmemb;
  if (out->size() < kMaxResponseExcerpt) {
    out->append(data, std::min(n, kMaxResponseExcerpt - out->size()));
  }
  return n;
}

// Failures that another attempt can cure: the receiver or the path to it is down or busy.
// Everything else (a malformed URL, a TLS certificate that does not verify, ...) will fail
// the same way every time.
bool IsTransient(CURLcode rc) {
  switch (rc) {
    case CURLE_COULDNT_RESOLVE_PROXY:
    case CURLE_COULDNT_RESOLVE_HOST:
    case CURLE_COULDNT_CONNECT:
    case CURLE_OPERATION_TIMEDOUT:
    case CURLE_SEND_ERROR:
    case CURLE_RECV_ERROR:
    case CURLE_GOT_NOTHING:
    case CURLE_PARTIAL_FILE:
    case CURLE_SSL_CONNECT_ERROR:
    case CURLE_HTTP2:
    case CURLE_HTTP2_STREAM:
      return true;
    default:
      return false;
  }
}

struct AttemptResult {
  enum class Kind { kDelivered, kRetry, kFinal };
  Kind kind;
  std::string detail;  // why it was not delivered
};

// One POST of `body` to `url`. Runs on the worker thread without any lock held.
AttemptResult PostOnce(const std::string& url, const std::string& body,
                       std::chrono::milliseconds timeout) {
  using Kind = AttemptResult::Kind;
  std::unique_ptr<CURL, CurlEasyDeleter> curl(curl_easy_init());
  if (!curl) return {Kind::kRetry, "curl_easy_init failed"};
  std::unique_ptr<curl_slist, CurlSlistDeleter> headers(
      curl_slist_append(nullptr, "Content-Type: application/json"));
  // Without this, curl delays larger bodies waiting for "100 Continue" from the receiver.
  if (headers) headers.reset(curl_slist_append(headers.release(), "Expect:"));
  if (!headers) return {Kind::kRetry, "curl_slist_append failed"};

  char errbuf[CURL_ERROR_SIZE] = {0};
  std::string excerpt;
  CURL* c = curl.get();
  // A redirect is not followed: curl would turn the POST into a GET, and a webhook that
  // redirects is misconfigured. It is a final failure, reported with its status.
  SetCommonCurlOptions(c, url.c_str(), errbuf, timeout, "lockstep-notifier");
  curl_easy_setopt(c, CURLOPT_HTTPHEADER, headers.get());
  curl_easy_setopt(c, CURLOPT_POSTFIELDS, body.data());
  curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE_LARGE, static_cast<curl_off_t>(body.size()));
  curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, &KeepExcerpt);
  curl_easy_setopt(c, CURLOPT_WRITEDATA, &excerpt);

  const CURLcode rc = curl_easy_perform(c);
  if (rc != CURLE_OK) {
    std::string error = errbuf[0] != '\0' ? errbuf : curl_easy_strerror(rc);
    return {IsTransient(rc) ? Kind::kRetry : Kind::kFinal, "no response: " + error};
  }
  long status = 0;  // NOLINT(runtime/int): curl writes a long
  curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &status);
  if (status >= 200 && status < 300) return {Kind::kDelivered, ""};
  std::string detail = "HTTP " + std::to_string(status);
  while (!excerpt.empty() && std::isspace(static_cast<unsigned char>(excerpt.back()))) {
    excerpt.pop_back();
  }
  if (!excerpt.empty()) detail += ": " + excerpt;
  const bool transient = status >= 500 || status == 429;
  return {transient ? Kind::kRetry : Kind::kFinal, std::move(detail)};
}

}  // namespace

struct Notifier::Impl {
  struct Pending {
    std::string url;
    std::string event;
    std::string body;  // serialised once, in Post
    int attempts_made = 0;
    MonoTime due;
    std::function<void(bool, const std::string&)> done;  // Notification::done
  };

  Impl(NotifierOptions o, const Clock* c) : options(std::move(o)), clock(c), alarm(c->NewAlarm()) {
    options.attempts = std::max(1, options.attempts);
    options.max_queue = std::max<size_t>(1, options.max_queue);
    options.initial_backoff = std::max(std::chrono::milliseconds(0), options.initial_backoff);
    options.max_backoff = std::max(options.initial_backoff, options.max_backoff);
  }

  NotifierOptions options;  // immutable once the worker runs
  const Clock* const clock;
  // The worker sleeps here until the next attempt is due; Post (something new is due) and the
  // destructor (stopping) wake it.
  const std::unique_ptr<Alarm> alarm;
  std::thread worker;

  mutable absl::Mutex mu;  // before any alarm's own lock
  bool stopping ABSL_GUARDED_BY(mu) = false;
  bool in_flight ABSL_GUARDED_BY(mu) = false;
  uint64_t next_seq ABSL_GUARDED_BY(mu) = 0;
  // By Post order: begin() is the oldest.
  std::map<uint64_t, Pending> waiting ABSL_GUARDED_BY(mu);
  // By next attempt: begin() goes next.
  std::set<std::pair<MonoTime, uint64_t>> due ABSL_GUARDED_BY(mu);
  Stats stats ABSL_GUARDED_BY(mu);
  // The Drain calls waiting; woken after every attempt.
  std::set<Alarm*> drainers ABSL_GUARDED_BY(mu);

  std::mt19937_64 rng{std::random_device{}()};  // worker thread only

  // Adds `p` under a new or its existing sequence number, then drops the oldest waiting
  // notifications while the queue is over its bound.
  void EnqueueLocked(uint64_t seq, Pending p) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu) {
    due.emplace(p.due, seq);
    waiting.emplace(seq, std::move(p));
    while (waiting.size() > options.max_queue) {
      auto oldest = waiting.begin();
      spdlog::warn("notify: queue full ({} waiting), dropping {} for {}", options.max_queue,
                   oldest->second.event, RedactUrl(oldest->second.url));
      due.erase({oldest->second.due, oldest->first});
      waiting.erase(oldest);
      ++stats.dropped;
    }
  }

  bool IdleLocked() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu) {
    return waiting.empty() && !in_flight;
  }

  // Drain calls re-examine the queue.
  void WakeDrainersLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu) {
    for (Alarm* drainer : drainers) drainer->Wake();
  }

  // The wait before attempt `attempts_made + 1`: initial_backoff doubled per earlier retry,
  // capped, then jittered into [half, full] so that many notifiers do not retry in step.
  std::chrono::milliseconds Backoff(int attempts_made) {
    std::chrono::milliseconds base = options.initial_backoff;
    for (int i = 1; i < attempts_made && base < options.max_backoff; ++i) base *= 2;
    base = std::min(base, options.max_backoff);
    std::uniform_int_distribution<int64_t> jitter(base.count() / 2, base.count());
    return std::chrono::milliseconds(jitter(rng));
  }

  void Run() ABSL_LOCKS_EXCLUDED(mu) {
    absl::MutexLock lock(&mu);
    while (!stopping) {
      if (due.empty()) {
        mu.Unlock();
        alarm->Wait();
        mu.Lock();
        continue;
      }
      const auto [when, seq] = *due.begin();
      if (clock->Monotonic() < when) {
        // Re-examined on wake: a Post may have added something due sooner.
        mu.Unlock();
        alarm->WaitUntil(when);
        mu.Lock();
        continue;
      }
      due.erase(due.begin());
      auto node = waiting.extract(seq);
      Pending p = std::move(node.mapped());
      in_flight = true;
      mu.Unlock();

      const AttemptResult result = PostOnce(p.url, p.body, options.timeout);
      ++p.attempts_made;

      mu.Lock();
      in_flight = false;
      Finish(seq, std::move(p), result);
      WakeDrainersLocked();
    }
    if (!waiting.empty()) {
      spdlog::warn("notify: stopping with {} undelivered notification(s), dropping them",
                   waiting.size());
      stats.dropped += waiting.size();
      waiting.clear();
      due.clear();
    }
    WakeDrainersLocked();
  }

  // Records the outcome of one attempt and schedules the next, if any.
  void Finish(uint64_t seq, Pending p, const AttemptResult& result)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu) {
    using Kind = AttemptResult::Kind;
    if (result.kind == Kind::kDelivered) {
      ++stats.delivered;
      if (p.done) p.done(true, "delivered");
      return;
    }
    if (result.kind == Kind::kRetry && p.attempts_made < options.attempts) {
      const auto wait = Backoff(p.attempts_made);
      spdlog::debug("notify: {} to {} failed ({}), retrying in {} ms", p.event, RedactUrl(p.url),
                    result.detail, wait.count());
      ++stats.retried;
      p.due = clock->Monotonic() + wait;
      EnqueueLocked(seq, std::move(p));
      return;
    }
    ++stats.failed;
    spdlog::warn("notify: giving up on {} to {} after {} attempt(s): {}", p.event, RedactUrl(p.url),
                 p.attempts_made, result.detail);
    if (p.done) {
      p.done(false,
             "failed after " + std::to_string(p.attempts_made) + " attempt(s): " + result.detail);
    }
  }
};

Notifier::Notifier(NotifierOptions options, const Clock* clock)
    : impl_(std::make_unique<Impl>(std::move(options), clock)) {
  CurlGlobalInitOnce();
  Impl* impl = impl_.get();
  impl->worker = std::thread([impl] { impl->Run(); });
}

Notifier::~Notifier() {
  {
    absl::MutexLock lock(&impl_->mu);
    impl_->stopping = true;
  }
  impl_->alarm->Wake();
  impl_->worker.join();
}

void Notifier::Post(Notification n) {
  std::string invalid;
  if (!HasHttpScheme(n.url)) {
    invalid = "URL is not http:// or https://";
  } else if (auto text = n.payload.find("text");  // end() unless an object
             text == n.payload.end() || !text->is_string()) {
    invalid = "payload has no string \"text\" field";
  }
  if (!invalid.empty()) {
    spdlog::warn("notify: not sending {} to {}: {}", n.event, RedactUrl(n.url), invalid);
    absl::MutexLock lock(&impl_->mu);
    ++impl_->stats.failed;
    if (n.done) n.done(false, "not sent: " + invalid);
    return;
  }
  // `replace` rather than throwing: a release note with invalid UTF-8 should still notify.
  std::string body = n.payload.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);

  Impl::Pending p{std::move(n.url),          std::move(n.event), std::move(body), 0,
                  impl_->clock->Monotonic(), std::move(n.done)};
  {
    absl::MutexLock lock(&impl_->mu);
    impl_->EnqueueLocked(impl_->next_seq++, std::move(p));
  }
  impl_->alarm->Wake();
}

Notifier::Stats Notifier::stats() const {
  absl::MutexLock lock(&impl_->mu);
  return impl_->stats;
}

bool Notifier::Drain(std::chrono::milliseconds timeout) {
  Impl& impl = *impl_;
  const MonoTime deadline = impl.clock->Monotonic() + timeout;
  // This caller's own place to sleep: several Drain calls may wait at once.
  const std::unique_ptr<Alarm> drainer = impl.clock->NewAlarm();
  absl::MutexLock lock(&impl.mu);
  impl.drainers.insert(drainer.get());
  bool idle = false;
  for (;;) {
    idle = impl.IdleLocked();
    if (idle) break;
    // Nothing is sent before the next attempt is due: if that is past the deadline, so is
    // idleness, and waiting for the deadline would only waste the caller's time.
    if (!impl.in_flight && !impl.due.empty() && impl.due.begin()->first > deadline) break;
    impl.mu.Unlock();
    const bool woken = drainer->WaitUntil(deadline);
    impl.mu.Lock();
    if (!woken) {
      idle = impl.IdleLocked();
      break;
    }
  }
  impl.drainers.erase(drainer.get());
  return idle;
}

nlohmann::json NotificationBody(const std::string& event, const std::string& text,
                                nlohmann::json fields) {
  nlohmann::json body = nlohmann::json::object();
  if (fields.is_object()) {
    body = std::move(fields);
  } else if (!fields.is_null()) {
    body["fields"] = std::move(fields);
  }
  body["text"] = text;
  body["event"] = event;
  return body;
}

}  // namespace lockstep
