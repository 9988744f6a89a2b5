// Metric gates evaluated by the agent inside its region: one PromQL instant query against the
// region's Prometheus HTTP API (GET <prometheus>/api/v1/query), compared with the gate's max
// and/or min. Only the verdict, one number and a one-line detail leave the region.
//
// Contract:
// - PASS only when the query succeeded and returned at least one finite value, and every
//   value satisfies every threshold set (v <= max, v >= min). Instant vectors and scalars are
//   accepted; range vectors (matrix) and strings are not.
// - FAIL when at least one finite value violates a threshold, even if other series are NaN:
//   a definite violation is more useful to the operator than "unknown".
// - INCONCLUSIVE (never a pass) for everything else: a bad gate definition (no threshold, a
//   non-finite threshold, a URL that is not http/https), Prometheus unreachable or too slow,
//   a non-2xx answer, status != "success", no series, a NaN or infinite value, or a body
//   that is not the JSON Prometheus documents.
// - `value` is the worst value compared (the one furthest past, or closest to, a threshold);
//   0 when no finite value was compared. `detail` is one line naming the value and threshold
//   or the error, capped in length because it is shown in the UI and sent to lockstepd.
//
// Each call is bounded by gate.timeout_ms() (default 5000 ms) and reads at most 4 MiB.
//
// Thread safety: EvaluateMetricGate may run on several threads at once (one curl easy handle
// per call); it calls CurlGlobalInit() itself.
#pragma once

#include <cstdint>
#include <string>

#include "proto/lockstep.pb.h"

namespace lockstep::agent {

// Evaluates one metric gate now. Never throws; network/parse problems are INCONCLUSIVE. The
// result's check_id is left empty for the caller to fill in.
lockstep::v1::GateVerdict EvaluateMetricGate(const lockstep::v1::MetricGate& gate);

// Replaces every "{window}" in `query` with the time from `since_ms` (the wave's switch) to
// `now_ms` as a Prometheus duration in whole seconds ("37s"), never less than
// `min_window_ms` nor 1s. Without a switch time (`since_ms` 0) the query is unchanged.
std::string ExpandWindow(std::string query, int64_t since_ms, int64_t min_window_ms,
                         int64_t now_ms);

}  // namespace lockstep::agent
