// What every Lockstep libcurl client shares: the settings (http(s) only, no signals (we are
// threaded), an error buffer, bounded time, and redirects not followed: each caller says
// why), owning handles for curl's objects, and the process-wide init. Callers add what is
// theirs (method, body, write callback).
#pragma once

#include <curl/curl.h>

#include <chrono>
#include <memory>
#include <mutex>

namespace lockstep {

struct CurlEasyDeleter {
  void operator()(CURL* c) const { curl_easy_cleanup(c); }
};
struct CurlFreeDeleter {
  void operator()(char* p) const { curl_free(p); }
};
struct CurlSlistDeleter {
  void operator()(curl_slist* list) const { curl_slist_free_all(list); }
};
struct CurlUrlDeleter {
  void operator()(CURLU* u) const { curl_url_cleanup(u); }
};
using CurlEasy = std::unique_ptr<CURL, CurlEasyDeleter>;

// curl_global_init, once per process, from whichever thread gets here first. Call it before
// the first easy handle is made (curl_global_init is not itself thread-safe).
inline void CurlGlobalInitOnce() {
  static std::once_flag once;
  std::call_once(once, [] { curl_global_init(CURL_GLOBAL_DEFAULT); });
}

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
