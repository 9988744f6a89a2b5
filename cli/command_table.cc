#include "cli/command_table.h"

namespace lockstep::cli {

namespace {

struct Help {
  const char* usage;
  const char* what;
  const char* examples;
};

const std::map<std::string, Help>& Helps() {
  static const std::map<std::string, Help> kHelps = {
      {"release create",
       {"lockstep release create --pipeline P --version V --artifact URL --sha256 HEX "
        "[--commit SHA] [--author NAME] [--wait] [--timeout 60m]",
        "Queues a release of pipeline P. It starts when nothing else is in flight and the "
        "pipeline is neither paused nor frozen, then walks the pipeline's waves. With --wait, "
        "follows it and exits 0 if it succeeded, 1 if it ended otherwise.",
        "lockstep release create --pipeline monolith --version v1.8.0 \\\n"
        "    --artifact https://ci.example/monolith-v1.8.0.tar.gz --sha256 9f86d0... --wait"}},
      {"release list",
       {"lockstep release list [--pipeline P] [--limit N] [--state S] [--kind rollout|rollback]",
        "The newest releases first, with their kind and state.",
        "lockstep release list --pipeline monolith --state rolling\n"
        "lockstep release list --kind rollback --limit 5"}},
      {"release show",
       {"lockstep release show ID | lockstep release show latest [--pipeline P]",
        "One release: waves with per-region counts, gate verdicts, every host's state and "
        "detail.",
        "lockstep release show 42\nlockstep release show latest --pipeline monolith"}},
      {"release watch",
       {"lockstep release watch ID [--timeout 60m]",
        "Follows a release until it ends; exits 0 if it succeeded, 1 otherwise. A lockstepd "
        "restart is ridden out (\"lost contact; retrying\").",
        "lockstep release watch 42"}},
      {"status",
       {"lockstep status [PIPELINE] [--watch]",
        "Per pipeline: the desired version, whether it is paused or frozen, the release in "
        "flight, and every host with the version it runs. With --watch, printed again (under "
        "the time) whenever any of it changes, until interrupted; a lockstepd restart is ridden "
        "out.",
        "lockstep status monolith\nlockstep status monolith --watch"}},
      {"agents",
       {"lockstep agents [--region R] | lockstep agents remove NAME",
        "Every host lockstepd knows, or one region's. `remove` retires a host and its "
        "credential: it must enroll again to return.",
        "lockstep agents --region eu-west-1\nlockstep agents remove web-eu-17"}},
      {"approve",
       {"lockstep approve ID [--comment TEXT]",
        "Approves the wave of release ID that waits for a manual approval; the comment goes into "
        "the audit log.",
        "lockstep approve 42 --comment \"canary dashboards clean\""}},
      {"abort",
       {"lockstep abort ID",
        "Stops release ID; every host it changed goes back to the release before.",
        "lockstep abort 42"}},
      {"pause",
       {"lockstep pause PIPELINE",
        "Holds the pipeline: no new release starts, the one in flight takes no new step, and "
        "nothing converges. Results and failures are still recorded.",
        "lockstep pause monolith"}},
      {"resume",
       {"lockstep resume PIPELINE",
        "Lifts a pause, including the hold lockstepd puts on a pipeline after an on-call "
        "rollback.",
        "lockstep resume monolith"}},
      {"freeze",
       {"lockstep freeze PIPELINE --reason TEXT",
        "No new release starts until unfreeze; the one in flight continues.",
        "lockstep freeze monolith --reason \"payments incident 4711\""}},
      {"unfreeze", {"lockstep unfreeze PIPELINE", "Lifts a freeze.", "lockstep unfreeze monolith"}},
      {"rollback",
       {"lockstep rollback PIPELINE [--to V] [--no-wait] [--accept-offline] [--timeout 60m]",
        "Every host of every region back on the last good release (or V), at once; preempts "
        "what is in flight, then holds the pipeline until `resume`. Exits 0 only when every "
        "registered host is on the target (or with --accept-offline, naming the others).",
        "lockstep rollback monolith\nlockstep rollback monolith --to v1.7.0"}},
      {"audit",
       {"lockstep audit [--limit N]", "Who did what, newest first.", "lockstep audit --limit 50"}},
      {"tokens",
       {"lockstep tokens create --role ROLE --name NAME [--region R] [--expires-in 30d] | "
        "tokens list | tokens revoke NAME",
        "API tokens and agent enrollment tokens. The secret is printed once, at creation; only "
        "its sha256 is stored.",
        "lockstep tokens create --role deployer --name ci --expires-in 90d\n"
        "lockstep tokens create --role agent --region eu-west-1 --name enroll-eu\n"
        "lockstep tokens revoke ci"}},
      {"completion",
       {"lockstep completion bash", "Prints a bash completion script for lockstep.",
        "source <(lockstep completion bash)"}},
  };
  return kHelps;
}

}  // namespace

const std::map<std::string, std::set<std::string>>& CommandFlags() {
  static const std::map<std::string, std::set<std::string>> kFlags = {
      {"release create",
       {"pipeline", "version", "artifact", "sha256", "commit", "author", "wait", "timeout"}},
      {"release list", {"pipeline", "limit", "state", "kind"}},
      {"release show", {"pipeline"}},
      {"release watch", {"timeout"}},
      {"status", {"watch"}},
      {"agents", {"region"}},
      {"approve", {"comment"}},
      {"abort", {}},
      {"pause", {}},
      {"resume", {}},
      {"freeze", {"reason"}},
      {"unfreeze", {}},
      {"rollback", {"to", "no-wait", "timeout", "accept-offline"}},
      {"audit", {"limit"}},
      {"tokens", {"role", "name", "region", "expires-in"}},
      {"completion", {}},
  };
  return kFlags;
}

const std::vector<std::string>& CommandFlagNames() {
  static const std::vector<std::string> kNames = [] {
    std::set<std::string> all;
    for (const auto& [command, flags] : CommandFlags()) all.insert(flags.begin(), flags.end());
    return std::vector<std::string>(all.begin(), all.end());
  }();
  return kNames;
}

std::optional<std::string> CommandHelp(const std::string& command) {
  if (command == "release") {
    std::string out = "lockstep release create|list|show|watch\n\n";
    for (const char* sub : {"release create", "release list", "release show", "release watch"}) {
      out += "  " + std::string(Helps().at(sub).usage) + "\n";
    }
    return out + "\nlockstep release SUBCOMMAND --help for each one's examples.\n";
  }
  auto it = Helps().find(command);
  if (it == Helps().end()) return std::nullopt;
  const Help& h = it->second;
  std::string out = std::string("usage: ") + h.usage + "\n\n" + h.what + "\n";
  const auto& flags = CommandFlags().at(command);
  if (!flags.empty()) {
    out += "\nflags:";
    for (const auto& f : flags) out += " --" + f;
    out += "\n";
  }
  out += "\nexamples:\n";
  std::string examples = h.examples;
  for (size_t start = 0; start < examples.size();) {
    size_t end = examples.find('\n', start);
    if (end == std::string::npos) end = examples.size();
    out += "  " + examples.substr(start, end - start) + "\n";
    start = end + 1;
  }
  return out +
         "\nglobal flags: --server ADDR, --token T, --output json, --tls-ca/--tls-cert/--tls-key\n";
}

std::string BashCompletion() {
  std::set<std::string> commands;
  std::string top, release;
  for (const auto& [command, flags] : CommandFlags()) {
    if (command.rfind("release ", 0) == 0) {
      release += (release.empty() ? "" : " ") + command.substr(8);
    }
    commands.insert(command.substr(0, command.find(' ')));
  }
  for (const auto& w : commands) top += (top.empty() ? "" : " ") + w;
  std::string cases;
  for (const auto& [command, flags] : CommandFlags()) {
    std::string words;
    for (const auto& f : flags) words += " --" + f;
    cases += "    \"" + command + "\") flags=\"" + words +
             " --server --token --output --tls-ca --tls-cert --tls-key --help\" ;;\n";
  }
  return "# bash completion for lockstep; load with: source <(lockstep completion bash)\n"
         "_lockstep() {\n"
         "  local cur=\"${COMP_WORDS[COMP_CWORD]}\" words=() i cmd=\"\" flags=\"\"\n"
         "  for ((i = 1; i < COMP_CWORD; i++)); do\n"
         "    case \"${COMP_WORDS[i]}\" in\n"
         "      --wait | --no-wait | --accept-offline | --watch | --help | --*=*) ;;\n"
         "      -*) ((i++)) ;;  # a flag's value is not a command\n"
         "      *) words+=(\"${COMP_WORDS[i]}\") ;;\n"
         "    esac\n"
         "  done\n"
         "  if ((${#words[@]} == 0)); then\n"
         "    COMPREPLY=($(compgen -W \"" +
         top +
         "\" -- \"$cur\")); return\n"
         "  fi\n"
         "  cmd=\"${words[0]}\"\n"
         "  if [[ $cmd == release ]]; then\n"
         "    if ((${#words[@]} == 1)); then\n"
         "      COMPREPLY=($(compgen -W \"" +
         release +
         "\" -- \"$cur\")); return\n"
         "    fi\n"
         "    cmd=\"release ${words[1]}\"\n"
         "  fi\n"
         "  case \"$cmd\" in\n" +
         cases +
         "    *) return ;;\n"
         "  esac\n"
         "  if [[ $cur == -* ]]; then COMPREPLY=($(compgen -W \"$flags\" -- \"$cur\")); fi\n"
         "}\n"
         "complete -F _lockstep lockstep\n";
}

}  // namespace lockstep::cli
