// Logging set-up shared by the three binaries: spdlog to stderr with a component name.
#pragma once

#include <string>

namespace lockstep {

// level: "debug", "info", "warn", "error" (check it first with CheckLogLevel).
void InitLogging(const std::string& component, const std::string& level);

// "" if `level` is one InitLogging takes, else a message for `--log-level` naming them.
std::string CheckLogLevel(const std::string& level);

}  // namespace lockstep
