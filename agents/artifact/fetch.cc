#include "agents/artifact/fetch.h"

#include <curl/curl.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <memory>
#include <mutex>

#include "common/curl_options.h"
#include "common/sha256.h"

namespace lockstep::agent {
namespace {

// Redirects are allowed because artifact stores commonly answer with one to a CDN or a
// pre-signed URL, but only a few: a loop should fail fast, not burn the whole timeout.
constexpr long kMaxRedirects = 5;  // NOLINT(runtime/int): curl takes a long
// Doubling stops here so that a large `attempts` does not turn into hour-long sleeps.
constexpr std::chrono::milliseconds kMaxBackoff{30000};

struct FileCloser {
  void operator()(std::FILE* f) const { std::fclose(f); }
};

bool HasHttpScheme(const std::string& url) {
  auto starts_with_ci = [&url](std::string_view prefix) {
    if (url.size() < prefix.size()) return false;
    return std::equal(prefix.begin(), prefix.end(), url.begin(), [](char a, char b) {
      return a == std::tolower(static_cast<unsigned char>(b));
    });
  };
  return starts_with_ci("http://") || starts_with_ci("https://");
}

std::string ToLower(std::string s) {
  for (char& c : s) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return s;
}

// State shared with the write callback for one attempt.
struct Transfer {
  CURL* curl = nullptr;
  std::FILE* file = nullptr;
  Sha256 sha;
  int64_t bytes = 0;
  int64_t max_bytes = 0;
  enum class Abort { kNone, kTooLarge, kWriteFailed, kHttpError } abort = Abort::kNone;
  int write_errno = 0;
};

size_t WriteBody(char* data, size_t size, size_t nmemb, void* userdata) {
  auto* t = static_cast<Transfer*>(userdata);
  const size_t n = size * nmemb;
  // FAILONERROR is off so that the status can be classified here; an error page must not
  // end up in the .part file or in the digest, and there is no reason to download it.
  long status = 0;  // NOLINT(runtime/int): curl writes a long
  curl_easy_getinfo(t->curl, CURLINFO_RESPONSE_CODE, &status);
  if (status < 200 || status >= 300) {
    t->abort = Transfer::Abort::kHttpError;
    return 0;
  }
  // Content-Length is checked by CURLOPT_MAXFILESIZE_LARGE, but a chunked body has none.
  if (t->bytes + static_cast<int64_t>(n) > t->max_bytes) {
    t->abort = Transfer::Abort::kTooLarge;
    return 0;
  }
  if (n > 0 && std::fwrite(data, 1, n, t->file) != n) {
    t->write_errno = errno;
    t->abort = Transfer::Abort::kWriteFailed;
    return 0;
  }
  t->sha.Update(data, n);
  t->bytes += static_cast<int64_t>(n);
  return n;
}

bool IsTransientCurlError(CURLcode code) {
  switch (code) {
    case CURLE_COULDNT_RESOLVE_HOST:
    case CURLE_COULDNT_CONNECT:
    case CURLE_OPERATION_TIMEDOUT:
    case CURLE_PARTIAL_FILE:
    case CURLE_GOT_NOTHING:
    case CURLE_SEND_ERROR:
    case CURLE_RECV_ERROR:
    case CURLE_HTTP2:
    case CURLE_HTTP2_STREAM:
    case CURLE_SSL_CONNECT_ERROR:
      return true;
    default:
      return false;
  }
}

// The outcome of one attempt. `retry` says whether another attempt could help.
struct AttemptResult {
  Status status;
  bool retry = false;
  std::string mismatch_digest;  // set when the body arrived whole but hashed differently
};

AttemptResult FetchOnce(const std::string& url, const std::string& expected_lower,
                        const std::string& part_path, const FetchOptions& options) {
  std::unique_ptr<std::FILE, FileCloser> file(std::fopen(part_path.c_str(), "wb"));
  if (!file) {
    return {Internal("cannot create " + part_path + ": " + std::strerror(errno)), false, {}};
  }
  CurlEasy curl(curl_easy_init());
  if (!curl) return {Internal("curl_easy_init failed"), false, {}};

  Transfer t;
  t.curl = curl.get();
  t.file = file.get();
  t.max_bytes = options.max_bytes;
  char errbuf[CURL_ERROR_SIZE] = {0};

  CURL* c = curl.get();
  curl_easy_setopt(c, CURLOPT_URL, url.c_str());
  curl_easy_setopt(c, CURLOPT_ERRORBUFFER, errbuf);
  // The agent is multi-threaded: signals must not be used for DNS timeouts.
  curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
  curl_easy_setopt(c, CURLOPT_PROTOCOLS_STR, "http,https");
  curl_easy_setopt(c, CURLOPT_REDIR_PROTOCOLS_STR, "http,https");
  curl_easy_setopt(c, CURLOPT_FOLLOWLOCATION, 1L);
  curl_easy_setopt(c, CURLOPT_MAXREDIRS, kMaxRedirects);
  curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, static_cast<long>(options.timeout.count()));  // NOLINT
  curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT_MS,
                   static_cast<long>(options.connect_timeout.count()));  // NOLINT
  curl_easy_setopt(c, CURLOPT_MAXFILESIZE_LARGE, static_cast<curl_off_t>(options.max_bytes));
  curl_easy_setopt(c, CURLOPT_FAILONERROR, 0L);
  curl_easy_setopt(c, CURLOPT_USERAGENT, "lockstep-agent");
  curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, &WriteBody);
  curl_easy_setopt(c, CURLOPT_WRITEDATA, &t);

  const CURLcode rc = curl_easy_perform(c);
  long http_status = 0;  // NOLINT(runtime/int): curl writes a long
  curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &http_status);

  // A full disk often shows up only when the buffer is flushed at fclose, and a file that
  // failed to close must not be renamed into place.
  const bool close_failed = std::fclose(file.release()) != 0;
  const int close_errno = errno;

  const std::string get = "GET " + url;
  if (http_status != 0 && (http_status < 200 || http_status >= 300)) {
    const std::string msg = get + " returned HTTP " + std::to_string(http_status);
    if (http_status >= 500) return {Unavailable(msg), true, {}};
    if (http_status == 404) return {NotFound(msg), false, {}};
    return {Unavailable(msg), false, {}};
  }
  if (t.abort == Transfer::Abort::kTooLarge || rc == CURLE_FILESIZE_EXCEEDED) {
    return {FailedPrecondition("artifact at " + url + " is larger than the limit of " +
                               std::to_string(options.max_bytes) + " bytes"),
            false,
            {}};
  }
  if (t.abort == Transfer::Abort::kWriteFailed) {
    return {Internal("cannot write " + part_path + ": " + std::strerror(t.write_errno)), false, {}};
  }
  if (rc != CURLE_OK) {
    const std::string detail = errbuf[0] != '\0' ? errbuf : curl_easy_strerror(rc);
    switch (rc) {
      case CURLE_UNSUPPORTED_PROTOCOL:
      case CURLE_URL_MALFORMAT:
        return {InvalidArgument("bad artifact URL " + url + ": " + detail), false, {}};
      case CURLE_PARTIAL_FILE:
        return {DataLoss(get + ": body truncated after " + std::to_string(t.bytes) +
                         " bytes: " + detail),
                true,
                {}};
      case CURLE_OPERATION_TIMEDOUT:
        // errbuf says whether connecting or the whole transfer ran out of time.
        return {Unavailable(get + " timed out: " + detail), true, {}};
      default:
        return {Unavailable(get + " failed: " + detail), IsTransientCurlError(rc), {}};
    }
  }
  if (close_failed) {
    return {Internal("cannot write " + part_path + ": " + std::strerror(close_errno)), false, {}};
  }
  std::string got = t.sha.FinishHex();
  if (!ConstantTimeEquals(got, expected_lower)) {
    return {
        DataLoss("sha256 mismatch for " + url + ": expected " + expected_lower + ", got " + got),
        true, got};
  }
  return {Status::Ok(), false, {}};
}

}  // namespace

void CurlGlobalInit() { CurlGlobalInitOnce(); }

Status FetchArtifact(const std::string& url, const std::string& expected_sha256,
                     const std::string& dest_path, const FetchOptions& options,
                     const std::function<void(const std::string&)>& note) {
  if (!HasHttpScheme(url)) {
    return InvalidArgument("artifact URL must start with http:// or https://: " + url);
  }
  if (!IsSha256Hex(expected_sha256)) {
    return InvalidArgument("expected sha256 for " + url + " is not 64 hex digits: '" +
                           expected_sha256 + "'");
  }
  if (dest_path.empty()) return InvalidArgument("empty destination path for " + url);
  CurlGlobalInit();

  const std::string expected = ToLower(expected_sha256);
  const std::string part_path = dest_path + ".part";
  const int attempts = std::max(1, options.attempts);
  std::chrono::milliseconds backoff = options.backoff;
  std::string previous_mismatch;
  Status last;
  int made = 0;
  for (int attempt = 1; attempt <= attempts; ++attempt) {
    made = attempt;
    if (attempt > 1) {
      if (note) {
        note("attempt " + std::to_string(attempt) + "/" + std::to_string(attempts) +
             " after: " + last.message());
      }
      options.clock->SleepFor(backoff);
      backoff = std::min(backoff * 2, kMaxBackoff);
    }
    AttemptResult r = FetchOnce(url, expected, part_path, options);
    if (r.status.ok()) {
      if (std::rename(part_path.c_str(), dest_path.c_str()) != 0) {
        last = Internal("cannot rename " + part_path + " to " + dest_path + ": " +
                        std::strerror(errno));
        break;
      }
      return Status::Ok();
    }
    last = r.status;
    // A mismatch may be corruption in transit, worth one more try; the same wrong digest
    // twice means the server really has different bytes, and more attempts only waste time.
    if (!r.mismatch_digest.empty()) {
      if (r.mismatch_digest == previous_mismatch) break;
      previous_mismatch = r.mismatch_digest;
    }
    if (!r.retry) break;
  }
  ::unlink(part_path.c_str());
  // The contract is that a failed fetch leaves nothing at dest_path, not even an older copy
  // that a caller could mistake for this fetch's result.
  ::unlink(dest_path.c_str());
  if (made > 1) {
    last = Status(last.code(), last.message() + " (" + std::to_string(made) + " attempts)");
  }
  return last;
}

}  // namespace lockstep::agent
