// lockstep: the command-line client for on-call and automation.

#include <cstdio>
#include <cstdlib>
#include <iostream>
#include <map>
#include <optional>
#include <set>
#include <string>

#include "cli/command_table.h"
#include "cli/commands.h"
#include "common/duration.h"
#include "common/flags.h"
#include "common/untrusted.h"
#include "common/version.h"

namespace {

constexpr const char* kUsage =
    R"(usage: lockstep [--server ADDR[,ADDR...]] [--token T] [--output json] COMMAND

commands:
  release create --pipeline P --version V --artifact URL --sha256 HEX [--commit SHA]
                 [--author NAME] [--wait] [--timeout 60m]
  release list [--pipeline P] [--limit N] [--state S] [--kind rollout|rollback]
  release show ID | release show latest [--pipeline P]
  release watch ID               live progress until a final state
  status [PIPELINE] [--watch]
  agents [--region R]
  agents remove NAME             retire a host and its credential (it must enroll again)
  approve ID                     approve the wave waiting for a manual approval
  pause PIPELINE | resume PIPELINE
  freeze PIPELINE --reason TEXT | unfreeze PIPELINE
  abort ID                       stop the release and roll back what it changed
  rollback PIPELINE [--to V] [--no-wait] [--accept-offline]
                                 every host of every region back on the last good release;
                                 the pipeline is then held until `resume`
  audit [--limit N]
  tokens create --role ROLE --name NAME [--region R] [--expires-in 30d]
  tokens list                    names, roles, last use, expiry; never the secret
  tokens revoke NAME             at once; open event streams of the token are closed
  completion bash                a bash completion script: source <(lockstep completion bash)

lockstep COMMAND --help shows a command's flags and examples.

--server defaults to $LOCKSTEP_SERVER or 127.0.0.1:7400; with several lockstepd (one leads),
list them all: a standby's answer sends the CLI to the leader. --token defaults to
$LOCKSTEP_TOKEN (leading and trailing whitespace, CR and LF are dropped).
lockstep --version prints this build's version and commit.
TLS: --tls-ca FILE (or $LOCKSTEP_TLS_CA), and --tls-cert/--tls-key for mutual TLS.
Exit status: 0 done; 1 the release or rollback ended elsewhere than asked; 2 bad usage;
3 lockstepd unreachable or the request refused.
)";

int Usage(const std::string& why) {
  std::fprintf(stderr, "lockstep: %s\n%s", why.c_str(), kUsage);
  return 2;
}

// Refuses (exit 2, nothing sent) a flag that `command` does not take, naming the ones it does.
std::optional<int> RefuseForeignFlags(const lockstep::Flags& flags, const std::string& command) {
  auto it = lockstep::cli::CommandFlags().find(command);
  if (it == lockstep::cli::CommandFlags().end()) return std::nullopt;
  for (const auto& name : lockstep::cli::CommandFlagNames()) {
    if (!flags.Given(name) || it->second.count(name)) continue;
    std::string takes;
    for (const auto& f : it->second) takes += (takes.empty() ? "" : ", ") + ("--" + f);
    return Usage(
        "lockstep " + command + " does not take --" + name + " (" +
        (takes.empty() ? std::string("it takes no flags of its own") : "its flags: " + takes) +
        ")" + (command == "rollback" && name == "version" ? "; did you mean --to?" : ""));
  }
  return std::nullopt;
}

}  // namespace

int main(int argc, char** argv) {
  // `--version` alone is the binary's version; elsewhere it is a release's (release create).
  if (argc == 2 && std::string(argv[1]) == "--version") {
    std::cout << "lockstep " << lockstep::LockstepVersion() << " (commit "
              << lockstep::LockstepCommit() << ")\n";
    return 0;
  }
  lockstep::Flags flags;
  const char* env_server = std::getenv("LOCKSTEP_SERVER");
  const char* env_token = std::getenv("LOCKSTEP_TOKEN");
  flags.Value("server", env_server ? env_server : "127.0.0.1:7400",
              "lockstepd gRPC address; several separated by commas (one leads)");
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
  flags.Bool("no-wait", "rollback: return once the rollback is queued");
  flags.Bool("watch", "status: print again whenever something changes, until interrupted");
  flags.Value("to", "", "rollback: the version to go back to");
  flags.Bool("accept-offline",
             "rollback: exit 0 although offline hosts are not on the target (they are named)");
  flags.Value("reason", "", "freeze: why");
  flags.Value("comment", "", "approve: a line for the audit log");
  flags.Value("role", "", "tokens create: the token's role");
  flags.Value("name", "", "tokens create: the token's name");
  flags.Value("region", "", "tokens create: an agent token's region; agents: only this region");
  flags.Value("state", "", "release list: only releases in this state");
  flags.Value("kind", "", "release list: only rollouts or rollbacks");
  flags.Value("expires-in", "", "tokens create: lifetime, e.g. 30d or 12h (default: none)");
  const char* env_ca = std::getenv("LOCKSTEP_TLS_CA");
  flags.Value("tls-ca", env_ca ? env_ca : "", "PEM CA of lockstepd's certificate (TLS)");
  flags.Value("tls-cert", "", "PEM client certificate (mutual TLS)");
  flags.Value("tls-key", "", "PEM client key (mutual TLS)");
  flags.Bool("help", "show this help");
  if (auto st = flags.Parse(argc, argv); !st.ok()) return Usage(st.message());
  if (flags.GetBool("help")) {
    // `lockstep COMMAND --help`: that command's usage, flags and examples.
    const auto& words = flags.positional();
    if (words.empty()) {
      std::cout << kUsage;
      return 0;
    }
    std::string command = words[0];
    if (command == "release" && words.size() > 1) command += " " + words[1];
    auto help = lockstep::cli::CommandHelp(command);
    if (!help) return Usage("unknown command \"" + command + "\"");
    std::cout << *help;
    return 0;
  }
  if (flags.Get("output") != "text" && flags.Get("output") != "json") {
    return Usage("--output must be text or json");
  }
  // A token copied from a file or a Windows clipboard often ends in CR or LF; anything else
  // that is not printable would be refused by gRPC's metadata check (an abort).
  const std::string token(lockstep::TrimSpace(flags.Get("token")));
  for (unsigned char c : token) {
    if (c < 0x21 || c > 0x7e) {
      return Usage("--token (or $LOCKSTEP_TOKEN) holds a character that cannot be in a token");
    }
  }
  lockstep::cli::Context ctx{
      flags.Get("server"), token, flags.Get("output") == "json",
      lockstep::TlsFiles{flags.Get("tls-ca"), flags.Get("tls-cert"), flags.Get("tls-key")}};
  if (auto creds = lockstep::ChannelCredentialsFrom(ctx.tls); !creds.ok()) {
    return Usage(creds.status().message());
  }
  const auto& args = flags.positional();
  if (args.empty()) return Usage("missing command");
  const std::string& cmd = args[0];
  std::vector<std::string> rest(args.begin() + 1, args.end());
  const std::string command = cmd == "release" && !rest.empty() ? cmd + " " + rest[0] : cmd;
  if (auto refused = RefuseForeignFlags(flags, command)) return *refused;
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
    if (sub == "show") return lockstep::cli::ReleaseShow(ctx, sub_args, flags.Get("pipeline"));
    if (sub == "watch") {
      auto timeout = lockstep::ParseDuration(flags.Get("timeout"));
      if (!timeout.ok()) return Usage("--timeout: " + timeout.status().message());
      return lockstep::cli::ReleaseWatch(ctx, sub_args, *timeout);
    }
    return Usage("unknown release subcommand \"" + sub + "\"");
  }
  if (cmd == "completion") {
    if (rest.size() != 1 || rest[0] != "bash") return Usage("usage: lockstep completion bash");
    std::cout << lockstep::cli::BashCompletion();
    return 0;
  }
  if (cmd == "status") return lockstep::cli::Status(ctx, rest, flags.GetBool("watch"));
  if (cmd == "agents") {
    if (!rest.empty() && rest[0] == "remove") {
      if (rest.size() != 2) return Usage("usage: lockstep agents remove NAME");
      return lockstep::cli::AgentsRemove(ctx, rest[1]);
    }
    if (!rest.empty()) return Usage("unexpected argument " + rest[0]);
    return lockstep::cli::Agents(ctx, flags.Get("region"));
  }
  if (cmd == "approve" || cmd == "abort") {
    return lockstep::cli::ReleaseAction(ctx, cmd, rest, flags.Get("comment"));
  }
  if (cmd == "pause" || cmd == "resume" || cmd == "freeze" || cmd == "unfreeze") {
    // A missing flag is a usage error; a given reason, blank or not, is the server's to judge,
    // so both front doors refuse it with the same words.
    if (cmd == "freeze" && !flags.Given("reason")) return Usage("freeze needs --reason");
    return lockstep::cli::PipelineAction(ctx, cmd, rest, flags.Get("reason"));
  }
  if (cmd == "rollback") {
    auto timeout = lockstep::ParseDuration(flags.Get("timeout"));
    if (!timeout.ok()) return Usage("--timeout: " + timeout.status().message());
    return lockstep::cli::Rollback(ctx, rest, flags.Get("to"), !flags.GetBool("no-wait"),
                                   flags.GetBool("accept-offline"), *timeout);
  }
  if (cmd == "audit") return lockstep::cli::Audit(ctx, std::atoi(flags.Get("limit").c_str()));
  if (cmd == "tokens") {
    const std::string sub = rest.empty() ? "" : rest[0];
    if (sub == "create" && rest.size() == 1) {
      int64_t expires_in_ms = 0;
      if (!flags.Get("expires-in").empty()) {
        auto lifetime = lockstep::ParseLifetime(flags.Get("expires-in"));
        if (!lifetime.ok()) return Usage("--expires-in: " + lifetime.status().message());
        expires_in_ms = lifetime->count();
      }
      return lockstep::cli::TokensCreate(ctx, flags.Get("role"), flags.Get("name"),
                                         flags.Get("region"), expires_in_ms);
    }
    if (sub == "list" && rest.size() == 1) return lockstep::cli::TokensList(ctx);
    if (sub == "revoke" && rest.size() == 2) return lockstep::cli::TokensRevoke(ctx, rest[1]);
    return Usage(
        "usage: lockstep tokens create --role ROLE --name NAME [--region R] [--expires-in D] | "
        "tokens list | tokens revoke NAME");
  }
  return Usage("unknown command \"" + cmd + "\"");
}
