// lockstep: the command-line client for on-call and automation.

#include <cstdio>
#include <cstdlib>
#include <iostream>
#include <string>

#include "cli/commands.h"
#include "common/flags.h"

namespace {

constexpr const char* kUsage =
    R"(usage: lockstep [--server ADDR] [--token T] [--output json] COMMAND

commands:
  release create --pipeline P --version V --artifact URL --sha256 HEX [--commit SHA]
                 [--author NAME] [--wait] [--timeout 60m]
  release list [--pipeline P] [--limit N]
  release show ID
  status [PIPELINE]
  agents

--server defaults to $LOCKSTEP_SERVER or 127.0.0.1:7400; --token to $LOCKSTEP_TOKEN.
)";

int Usage(const std::string& why) {
  std::fprintf(stderr, "lockstep: %s\n%s", why.c_str(), kUsage);
  return 2;
}

}  // namespace

int main(int argc, char** argv) {
  lockstep::Flags flags;
  const char* env_server = std::getenv("LOCKSTEP_SERVER");
  const char* env_token = std::getenv("LOCKSTEP_TOKEN");
  flags.Value("server", env_server ? env_server : "127.0.0.1:7400", "lockstepd gRPC address");
  flags.Value("token", env_token ? env_token : "", "API token");
  flags.Value("output", "text", "text or json");
  flags.Value("pipeline", "", "pipeline name");
  flags.Value("version", "", "release version");
  flags.Value("artifact", "", "artifact URL (.tar.gz over http or https)");
  flags.Value("sha256", "", "artifact sha256, 64 hex digits");
  flags.Value("commit", "", "commit the release was built from");
  flags.Value("author", "", "author of that commit");
  flags.Value("limit", "20", "how many releases to list");
  flags.Value("timeout", "60m", "how long --wait waits at most");
  flags.Bool("wait", "wait until the release reaches a final state");
  flags.Bool("help", "show this help");
  if (auto st = flags.Parse(argc, argv); !st.ok()) return Usage(st.message());
  if (flags.GetBool("help")) {
    std::cout << kUsage;
    return 0;
  }
  if (flags.Get("output") != "text" && flags.Get("output") != "json") {
    return Usage("--output must be text or json");
  }
  lockstep::cli::Context ctx{flags.Get("server"), flags.Get("token"),
                             flags.Get("output") == "json"};
  const auto& args = flags.positional();
  if (args.empty()) return Usage("missing command");
  const std::string& cmd = args[0];
  std::vector<std::string> rest(args.begin() + 1, args.end());
  if (cmd == "release") {
    if (rest.empty()) return Usage("release needs a subcommand: create, list or show");
    const std::string& sub = rest[0];
    std::vector<std::string> sub_args(rest.begin() + 1, rest.end());
    if (sub == "create") {
      if (!sub_args.empty()) return Usage("unexpected argument " + sub_args[0]);
      return lockstep::cli::ReleaseCreate(ctx, flags);
    }
    if (sub == "list") {
      if (!sub_args.empty()) return Usage("unexpected argument " + sub_args[0]);
      return lockstep::cli::ReleaseList(ctx, flags);
    }
    if (sub == "show") return lockstep::cli::ReleaseShow(ctx, sub_args);
    return Usage("unknown release subcommand \"" + sub + "\"");
  }
  if (cmd == "status") return lockstep::cli::Status(ctx, rest);
  if (cmd == "agents") {
    if (!rest.empty()) return Usage("unexpected argument " + rest[0]);
    return lockstep::cli::Agents(ctx);
  }
  return Usage("unknown command \"" + cmd + "\"");
}
