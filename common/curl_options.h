// The libcurl settings every Lockstep HTTP client shares: http(s) only, no signals (we are
// threaded), an error buffer, bounded time, and redirects not followed (each caller says
// why). Callers add what is theirs (method, body, write callback).
#pragma once

#include <curl/curl.h>

#include <chrono>

namespace lockstep {

// REQUIRES: `errbuf` has CURL_ERROR_SIZE bytes and outlives the transfer.
inline void SetCommonCurlOptions(CURL* c, const char* url, char* errbuf,
                                 std::chrono::milliseconds timeout, const char* user_agent) {
  curl_easy_setopt(c, CURLOPT_URL, url);
  curl_easy_setopt(c, CURLOPT_ERRORBUFFER, errbuf);
  curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
  curl_easy_setopt(c, CURLOPT_PROTOCOLS_STR, "http,https");
  curl_easy_setopt(c, CURLOPT_FOLLOWLOCATION, 0L);
  curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, static_cast<long>(timeout.count()));         // NOLINT
  curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT_MS, static_cast<long>(timeout.count()));  // NOLINT
  curl_easy_setopt(c, CURLOPT_USERAGENT, user_agent);
}

}  // namespace lockstep
