// The CLI's commands in one table: which flags each takes (anything else is refused, exit
// 2), its help with examples (`lockstep COMMAND --help`), and the bash completion built from
// both (`lockstep completion bash`). Pure data and string building; no I/O.
#pragma once

#include <map>
#include <optional>
#include <set>
#include <string>
#include <vector>

namespace lockstep::cli {

// Command ("release create", "rollback", ...) -> the flags it takes beyond the global ones
// (--server, --token, --output, TLS).
const std::map<std::string, std::set<std::string>>& CommandFlags();

// Every command-specific flag the CLI declares.
const std::vector<std::string>& CommandFlagNames();

// The help of `command` ("rollback", "release list"; "release" alone lists its
// subcommands), or nullopt if there is no such command.
std::optional<std::string> CommandHelp(const std::string& command);

// A bash completion script for `lockstep`: commands, release subcommands, and for each
// command exactly the flags it takes. Load with: source <(lockstep completion bash)
std::string BashCompletion();

}  // namespace lockstep::cli
