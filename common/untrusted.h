// Checks and escapes for strings that arrive from outside lockstepd's trust boundary: names
// an agent sends in its hello, regions in pipeline files, anything that ends up in a log line.
//
// Host and region names share one DNS-like alphabet so that they are safe everywhere they
// travel (log lines, Prometheus labels, file names, URLs, the dashboard): 1-253 characters
// of letters, digits, '.', '_' and '-', starting with a letter or digit.
//
// Every function is pure and may be called from any thread.
#pragma once

#include <cstddef>
#include <string>
#include <string_view>

namespace lockstep {

inline constexpr size_t kMaxNameLength = 253;

// True if `name` is a valid host (agent) or region name.
bool IsValidName(std::string_view name);

// "" if valid, else why not, naming `what` (e.g. "agent name"), never echoing a long value.
std::string CheckName(std::string_view what, std::string_view name);

// `s` made safe for one log line: control characters, quotes, backslashes and bytes outside
// printable ASCII are escaped (\n, \x1b, ...), and anything past `max_chars` input bytes is
// cut and marked with "...(N bytes)".
std::string LogSafe(std::string_view s, size_t max_chars = 128);

// `s` without leading and trailing ASCII whitespace (space, \t, \r, \n, \v, \f): how a
// token, secret or reason read from a flag, the environment or a file is taken.
std::string_view TrimSpace(std::string_view s);

}  // namespace lockstep
