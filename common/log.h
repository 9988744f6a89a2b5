// Logging set-up shared by the three binaries: spdlog to stderr with a component name.
#pragma once

#include <string>

namespace lockstep {

// level: "debug", "info", "warn", "error". Unknown levels fall back to info.
void InitLogging(const std::string& component, const std::string& level);

}  // namespace lockstep
