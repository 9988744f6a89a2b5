// Fetching artifacts over HTTP(S) with libcurl, verifying their sha256 while they stream.
//
// The body is written to `dest_path` + ".part" and hashed as it arrives; only when the
// transfer completed, the HTTP status was 2xx, the size is within `max_bytes` and the digest
// equals `expected_sha256` is it renamed to `dest_path`. On any failure nothing is left at
// `dest_path` and the .part file is removed. Transient failures (connect errors, 5xx,
// truncated bodies) are retried up to `attempts` times with backoff; a digest mismatch is
// not retried twice for identical bytes (it is reported as kDataLoss).
//
// Thread safety: FetchArtifact may run on several threads at once (one curl easy handle per
// call). REQUIRES: CurlGlobalInit() called once before any thread calls it.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <string>

#include "common/clock.h"
#include "common/status.h"

namespace lockstep::agent {

void CurlGlobalInit();

struct FetchOptions {
  std::chrono::milliseconds timeout{120000};  // whole transfer, per attempt
  std::chrono::milliseconds connect_timeout{10000};
  int64_t max_bytes = int64_t{4} << 30;  // refuse artifacts larger than this
  int attempts = 3;
  std::chrono::milliseconds backoff{200};  // doubled after each failed attempt
  // Measures the backoff between attempts (the transfer timeouts are curl's, real time).
  // Must outlive the call.
  const Clock* clock = SystemClock::Get();
};

// Returns kDataLoss for a digest mismatch or truncated body, kUnavailable for network
// and HTTP errors, kInvalidArgument for a bad URL or bad expected digest.
Status FetchArtifact(const std::string& url, const std::string& expected_sha256,
                     const std::string& dest_path, const FetchOptions& options,
                     const std::function<void(const std::string&)>& note = nullptr);

}  // namespace lockstep::agent
