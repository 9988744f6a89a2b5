// HTTP health probes run by the agent on its own host: GET the URL and expect a status,
// up to `attempts` times with `interval` between them, each bounded by `timeout`.
#pragma once

#include <chrono>
#include <functional>
#include <string>

#include "common/clock.h"
#include "common/status.h"
#include "proto/lockstep.pb.h"

namespace lockstep::agent {

// Ok if one attempt got the expected status; otherwise kUnavailable naming the URL, the
// last status or error, and the number of attempts. `sleep_for` waits between attempts (the
// executor passes one on its clock that wakes early on shutdown); when it is empty, `clock`
// sleeps (Clock::SleepFor). Each attempt's own timeout is curl's, in real time.
Status RunHttpProbe(const lockstep::v1::HttpProbe& probe,
                    const std::function<void(std::chrono::milliseconds)>& sleep_for,
                    const Clock* clock = SystemClock::Get());

}  // namespace lockstep::agent
