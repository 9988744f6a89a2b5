#include "agents/health/http_probe.h"

#include <curl/curl.h>

#include <algorithm>
#include <chrono>
#include <memory>

#include "agents/artifact/fetch.h"
#include "common/curl_options.h"

namespace lockstep::agent {
namespace {

// A probe without a timeout must still end: a hung service would otherwise stall the
// activation that waits for it.
constexpr std::chrono::milliseconds kDefaultTimeout{5000};

size_t DiscardBody(char*, size_t size, size_t nmemb, void*) { return size * nmemb; }

// One GET. Returns the HTTP status, or 0 with `error` set when no response arrived.
long GetStatus(const std::string& url, std::chrono::milliseconds timeout,  // NOLINT(runtime/int)
               std::string* error) {
  std::unique_ptr<CURL, CurlEasyDeleter> curl(curl_easy_init());
  if (!curl) {
    *error = "curl_easy_init failed";
    return 0;
  }
  char errbuf[CURL_ERROR_SIZE] = {0};
  CURL* c = curl.get();
  // Redirects are not followed: a probe that expects 301 must see the 301, and one that
  // expects 200 should not pass because a redirect led somewhere healthy.
  SetCommonCurlOptions(c, url.c_str(), errbuf, timeout, "lockstep-agent-probe");
  curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, &DiscardBody);

  const CURLcode rc = curl_easy_perform(c);
  if (rc != CURLE_OK) {
    *error = errbuf[0] != '\0' ? errbuf : curl_easy_strerror(rc);
    return 0;
  }
  long status = 0;  // NOLINT(runtime/int): curl writes a long
  curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &status);
  return status;
}

}  // namespace

Status RunHttpProbe(const lockstep::v1::HttpProbe& probe,
                    const std::function<void(std::chrono::milliseconds)>& sleep_for,
                    const Clock* clock) {
  const std::string& url = probe.url();
  if (url.rfind("http://", 0) != 0 && url.rfind("https://", 0) != 0) {
    return InvalidArgument("health probe URL must start with http:// or https://: '" + url + "'");
  }
  CurlGlobalInit();
  const long expect = probe.expect_status() == 0 ? 200 : probe.expect_status();  // NOLINT
  const int attempts = std::max(1, probe.attempts());
  const auto timeout =
      probe.timeout_ms() > 0 ? std::chrono::milliseconds(probe.timeout_ms()) : kDefaultTimeout;
  const std::chrono::milliseconds interval(std::max<int64_t>(0, probe.interval_ms()));

  std::string last;
  for (int attempt = 1; attempt <= attempts; ++attempt) {
    if (attempt > 1 && interval.count() > 0) {
      if (sleep_for) {
        sleep_for(interval);
      } else {
        clock->SleepFor(interval);
      }
    }
    std::string error;
    const long status = GetStatus(url, timeout, &error);  // NOLINT(runtime/int)
    if (status == expect) return Status::Ok();
    last = status != 0 ? "got HTTP " + std::to_string(status) : "got no response: " + error;
  }
  return Unavailable("health probe GET " + url + ": expected HTTP " + std::to_string(expect) +
                     ", last " + last + " (" + std::to_string(attempts) +
                     (attempts == 1 ? " attempt)" : " attempts)"));
}

}  // namespace lockstep::agent
