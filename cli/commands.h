// The `lockstep` CLI's commands. Each takes parsed flags and positional arguments, prints
// its result (human-readable, or JSON with --output json) and returns the process exit
// status: 0 on success, 1 when the operation ran but did not reach the state asked for,
// 2 for bad usage, 3 when the server could not be reached or refused the request.
#pragma once

#include <chrono>
#include <cstdint>
#include <string>
#include <vector>

#include "common/flags.h"
#include "common/tls.h"

namespace lockstep::cli {

struct Context {
  std::string server;
  std::string token;
  bool json = false;
  TlsFiles tls;
};

int ReleaseCreate(const Context& ctx, const Flags& flags);
int ReleaseList(const Context& ctx, const Flags& flags);
// ID, or "latest": the newest release (of --pipeline, if given).
int ReleaseShow(const Context& ctx, const std::vector<std::string>& args,
                const std::string& pipeline);
// `watch`: print again whenever something changes, until interrupted.
int Status(const Context& ctx, const std::vector<std::string>& args, bool watch);
// `region`: only its hosts ("" for all).
int Agents(const Context& ctx, const std::string& region);
int ReleaseWatch(const Context& ctx, const std::vector<std::string>& args,
                 std::chrono::milliseconds timeout);
// approve ID [--comment TEXT] | abort ID
int ReleaseAction(const Context& ctx, const std::string& action,
                  const std::vector<std::string>& args, const std::string& comment = "");
// pause | resume | freeze | unfreeze PIPELINE
int PipelineAction(const Context& ctx, const std::string& action,
                   const std::vector<std::string>& args, const std::string& reason);
// Exit 0 only when every registered host of the pipeline runs the target version (unless
// !wait): a host that was offline, and so not rolled back, is named and makes it exit 1,
// unless `accept_offline`, when it is still named.
int Rollback(const Context& ctx, const std::vector<std::string>& args, const std::string& to,
             bool wait, bool accept_offline, std::chrono::milliseconds timeout);
int Audit(const Context& ctx, int limit);
int TokensCreate(const Context& ctx, const std::string& role, const std::string& name,
                 const std::string& region, int64_t expires_in_ms);
// Name, role, region, created, last used, expires, revoked: never the secret.
int TokensList(const Context& ctx);
int TokensRevoke(const Context& ctx, const std::string& name);
// Retires a host and its credential; it must enroll again to come back.
int AgentsRemove(const Context& ctx, const std::string& name);

}  // namespace lockstep::cli
