// Durations as people write them in pipeline files and flags: "500ms", "30s", "2m", "1h",
// and combinations such as "1m30s". A bare "0" is zero. Anything else is an error that
// quotes the text.
#pragma once

#include <chrono>
#include <string>
#include <string_view>

#include "common/status.h"

namespace lockstep {

StatusOr<std::chrono::milliseconds> ParseDuration(std::string_view text);

// A credential's lifetime: ParseDuration's forms, or whole days ("30d", "365d"), at most
// ten years; must be positive.
StatusOr<std::chrono::milliseconds> ParseLifetime(std::string_view text);

// The shortest form that ParseDuration reads back: "1m30s", "250ms", "0s".
std::string FormatDuration(std::chrono::milliseconds d);

}  // namespace lockstep
