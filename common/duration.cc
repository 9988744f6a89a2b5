#include "common/duration.h"

#include <cctype>
#include <cstdint>
#include <limits>

namespace lockstep {

StatusOr<std::chrono::milliseconds> ParseDuration(std::string_view text) {
  auto bad = [&](const char* why) {
    return InvalidArgument("bad duration \"" + std::string(text) + "\": " + why +
                           " (use forms like 500ms, 30s, 2m, 1h)");
  };
  if (text == "0") return std::chrono::milliseconds(0);
  if (text.empty()) return bad("empty");
  int64_t total = 0;
  size_t i = 0;
  while (i < text.size()) {
    if (!std::isdigit(static_cast<unsigned char>(text[i]))) return bad("expected a number");
    int64_t n = 0;
    while (i < text.size() && std::isdigit(static_cast<unsigned char>(text[i]))) {
      if (n > std::numeric_limits<int64_t>::max() / 10 - 10) return bad("too large");
      n = n * 10 + (text[i] - '0');
      ++i;
    }
    size_t unit_start = i;
    while (i < text.size() && std::isalpha(static_cast<unsigned char>(text[i]))) ++i;
    std::string_view unit = text.substr(unit_start, i - unit_start);
    int64_t scale;
    if (unit == "ms") {
      scale = 1;
    } else if (unit == "s") {
      scale = 1000;
    } else if (unit == "m") {
      scale = 60 * 1000;
    } else if (unit == "h") {
      scale = 3600 * 1000;
    } else if (unit.empty()) {
      return bad("missing unit");
    } else {
      return bad("unknown unit");
    }
    // Bounded at 30 days: no wait in a rollout is meaningfully longer.
    constexpr int64_t kMax = int64_t{30} * 24 * 3600 * 1000;
    if (n > kMax / scale || total + n * scale > kMax) return bad("longer than 30 days");
    total += n * scale;
  }
  return std::chrono::milliseconds(total);
}

StatusOr<std::chrono::milliseconds> ParseLifetime(std::string_view text) {
  if (text.size() >= 2 && text.back() == 'd') {
    int64_t days = 0;
    for (char c : text.substr(0, text.size() - 1)) {
      if (!std::isdigit(static_cast<unsigned char>(c)) || days > 3650) {
        return InvalidArgument("bad lifetime \"" + std::string(text) +
                               "\": use whole days like 30d, or forms like 12h");
      }
      days = days * 10 + (c - '0');
    }
    if (days == 0 || days > 3650) {
      return InvalidArgument("bad lifetime \"" + std::string(text) + "\": 1d to 3650d");
    }
    return std::chrono::milliseconds(days * 24 * 3600 * 1000);
  }
  LOCKSTEP_ASSIGN_OR_RETURN(auto d, ParseDuration(text));
  if (d.count() <= 0) {
    return InvalidArgument("bad lifetime \"" + std::string(text) + "\": must be positive");
  }
  return d;
}

std::string FormatDuration(std::chrono::milliseconds d) {
  int64_t ms = d.count();
  if (ms == 0) return "0s";
  std::string out;
  auto take = [&](int64_t unit, const char* suffix) {
    if (ms >= unit) {
      out += std::to_string(ms / unit) + suffix;
      ms %= unit;
    }
  };
  take(3600 * 1000, "h");
  take(60 * 1000, "m");
  take(1000, "s");
  take(1, "ms");
  return out;
}

}  // namespace lockstep
