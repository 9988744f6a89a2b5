#include "common/clock.h"

#include <ctime>
#include <string>

namespace lockstep {

UnixMs SystemClock::Now() const {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

std::chrono::steady_clock::time_point SystemClock::Monotonic() const {
  return std::chrono::steady_clock::now();
}

SystemClock* SystemClock::Get() {
  static SystemClock clock;
  return &clock;
}

std::string FormatUnixMs(UnixMs t) {
  if (t <= 0) return "";
  std::time_t secs = static_cast<std::time_t>(t / 1000);
  std::tm tm{};
  gmtime_r(&secs, &tm);
  char buf[40];
  std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%S", &tm);
  char out[64];
  std::snprintf(out, sizeof out, "%s.%03dZ", buf, static_cast<int>(t % 1000));
  return out;
}

}  // namespace lockstep
