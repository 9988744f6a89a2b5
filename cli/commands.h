// The `lockstep` CLI's commands. Each takes parsed flags and positional arguments, prints
// its result (human-readable, or JSON with --output json) and returns the process exit
// status: 0 on success, 1 when the operation ran but did not reach the state asked for,
// 2 for bad usage, 3 when the server could not be reached or refused the request.
#pragma once

#include <string>
#include <vector>

#include "common/flags.h"

namespace lockstep::cli {

struct Context {
  std::string server;
  std::string token;
  bool json = false;
};

int ReleaseCreate(const Context& ctx, const Flags& flags);
int ReleaseList(const Context& ctx, const Flags& flags);
int ReleaseShow(const Context& ctx, const std::vector<std::string>& args);
int Status(const Context& ctx, const std::vector<std::string>& args);
int Agents(const Context& ctx);

}  // namespace lockstep::cli
