// lockstepd: the Lockstep orchestrator.

#include <signal.h>
#include <spdlog/spdlog.h>
#include <sys/stat.h>
#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <cctype>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <iostream>
#include <thread>

#include "common/duration.h"
#include "common/flags.h"
#include "common/grpc_runtime.h"
#include "common/log.h"
#include "common/tls.h"
#include "common/version.h"
#include "orchestrator/pipeline/pipeline.h"
#include "orchestrator/server/orchestrator.h"
#include "orchestrator/webhook/github_trigger.h"

namespace {

int Fail(const std::string& msg) {
  std::fprintf(stderr, "lockstepd: %s\n", msg.c_str());
  return 2;
}

// --config FILE: a YAML map whose keys are flag names. Flags given on the command line win.
lockstep::Status ApplyConfigFile(lockstep::Flags& flags, const std::string& path) {
  try {
    YAML::Node root = YAML::LoadFile(path);
    if (!root.IsMap()) return lockstep::InvalidArgument(path + ": expected a map of settings");
    for (const auto& kv : root) {
      std::string key = kv.first.as<std::string>();
      if (key == "config") return lockstep::InvalidArgument(path + ": config cannot nest");
      if (!kv.second.IsScalar()) {
        return lockstep::InvalidArgument(path + ":" + std::to_string(kv.second.Mark().line + 1) +
                                         ": " + key + ": expected a single value");
      }
      if (auto st = flags.SetDefault(key, kv.second.as<std::string>()); !st.ok()) {
        return lockstep::InvalidArgument(path + ":" + std::to_string(kv.first.Mark().line + 1) +
                                         ": " + st.message());
      }
    }
  } catch (const YAML::Exception& e) {
    return lockstep::InvalidArgument(path + ": " + e.what());
  }
  return lockstep::Status::Ok();
}

}  // namespace

int main(int argc, char** argv) {
  lockstep::Flags flags;
  flags.Value("data-dir", "./lockstep-data", "directory for the SQLite store");
  flags.Value("store", "",
              "sqlite:PATH, or a PostgreSQL URI (postgresql://...) or conninfo shared by several "
              "lockstepd, one leading; default: SQLite in --data-dir (one owner)");
  flags.Value("advertise-grpc", "",
              "where agents and the CLI reach this lockstepd, told to them by standbys "
              "(default: the --grpc-listen host, or this host's name, and the bound port)");
  flags.Value("advertise-http", "",
              "the URL HTTP callers reach this lockstepd at, for standbys' redirects");
  flags.Value("lease-ttl", "3s",
              "how long the leader's lease lasts unrenewed: a standby takes over this long "
              "after the leader stops (shared store only)");
  flags.Value("pipelines", "./pipelines", "directory of pipeline YAML files");
  flags.Value("grpc-listen", "127.0.0.1:7400", "gRPC address for agents and the CLI");
  flags.Value("http-listen", "127.0.0.1:7480", "HTTP address for the API and dashboard");
  flags.Value("config", "", "YAML file with the same keys as these flags");
  flags.Value("bootstrap-token-file", "",
              "where the first admin token is written (default DATA_DIR/admin-token)");
  flags.Value("web-dir", LOCKSTEP_DEFAULT_WEB_DIR, "the dashboard's static files");
  flags.Value("port-file", "", "write the bound ports here as JSON once listening");
  flags.Value("tls-cert", "", "PEM certificate for gRPC TLS");
  flags.Value("tls-key", "", "PEM private key for gRPC TLS");
  flags.Value("tls-client-ca", "", "PEM CA for client certificates (enables mutual TLS)");
  flags.Value("http-allowed-hosts", "",
              "comma-separated Host names the HTTP port answers to, or *; default: loopback "
              "names for a loopback --http-listen, any for 0.0.0.0");
  flags.Value("http-max-connections-per-client", "16",
              "open HTTP connections allowed from one address (raise it behind a proxy)");
  flags.Value("http-request-timeout", "10s",
              "time a request (line, headers, body) may take to arrive");
  flags.Value("http-max-event-streams", "64", "open /api/v1/events streams allowed at once");
  flags.Value("max-watches", "256",
              "live views (WatchRelease, WatchStatus: release watch, --wait) open at once");
  flags.Value("agent-hello-timeout", "10s",
              "an agent stream that is not authenticated by then is closed");
  flags.Value("max-pending-agent-streams-per-peer", "256",
              "unauthenticated agent streams allowed at once from one address");
  flags.Value("max-pending-agent-streams", "2048",
              "unauthenticated agent streams allowed at once in total");
  flags.Value("log-level", "info", "debug, info, warn or error");
  flags.Bool("help", "show this help");
  flags.Bool("version", "print the version and commit, and exit");
  flags.Bool("check",
             "check the configuration, every pipeline file, webhook secrets and TLS files, then "
             "exit: 0 if all is well, else 2 naming the file and the problem");
  if (auto st = flags.Parse(argc, argv); !st.ok()) {
    return Fail(st.message() + "\nusage: lockstepd [flags]\n" + flags.Usage());
  }
  if (flags.GetBool("help")) {
    std::cout << "usage: lockstepd [flags]\n" << flags.Usage();
    return 0;
  }
  if (flags.GetBool("version")) {
    std::cout << "lockstepd " << lockstep::LockstepVersion() << " (commit "
              << lockstep::LockstepCommit() << ")\n";
    return 0;
  }
  if (!flags.positional().empty()) return Fail("unexpected argument " + flags.positional()[0]);
  if (!flags.Get("config").empty()) {
    if (auto st = ApplyConfigFile(flags, flags.Get("config")); !st.ok()) {
      return Fail(st.message());
    }
  }
  if (auto bad = lockstep::CheckLogLevel(flags.Get("log-level")); !bad.empty()) return Fail(bad);
  lockstep::InitLogging("lockstepd", flags.Get("log-level"));
  lockstep::TuneGrpcRuntime();

  auto pipelines = lockstep::LoadPipelineDir(flags.Get("pipelines"));
  if (!pipelines.ok()) return Fail(pipelines.status().message());
  if (pipelines->empty()) return Fail("no pipeline files (*.yaml) in " + flags.Get("pipelines"));
  // A webhook secret that cannot be read is found now, not when the first push arrives.
  if (auto st = lockstep::CheckGithubSecrets(*pipelines); !st.ok()) return Fail(st.message());

  // A file-size limit (RLIMIT_FSIZE, e.g. systemd's LimitFSIZE=) must surface as a failed
  // write that the store reports and latches, not kill the daemon mid-commit with SIGXFSZ.
  signal(SIGXFSZ, SIG_IGN);
  // The store, the bootstrap token and anything else lockstepd writes are readable by its own
  // user only, whatever umask the service manager handed down.
  umask(077);

  // Signals are taken synchronously by a watcher thread, not in a handler.
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGTERM);
  sigaddset(&set, SIGINT);
  sigaddset(&set, SIGHUP);
  pthread_sigmask(SIG_BLOCK, &set, nullptr);

  lockstep::OrchestratorOptions options;
  options.data_dir = flags.Get("data-dir");
  options.store = flags.Get("store");
  options.advertise_grpc = flags.Get("advertise-grpc");
  options.advertise_http = flags.Get("advertise-http");
  auto lease_ttl = lockstep::ParseDuration(flags.Get("lease-ttl"));
  if (!lease_ttl.ok() || lease_ttl->count() < 300 || lease_ttl->count() > 600'000) {
    return Fail("--lease-ttl: " + (lease_ttl.ok() ? std::string("must be from 300ms to 10m")
                                                  : lease_ttl.status().message()));
  }
  options.lease_ttl_ms = lease_ttl->count();
  options.pipelines = std::move(*pipelines);
  options.pipelines_dir = flags.Get("pipelines");
  options.grpc_listen = flags.Get("grpc-listen");
  options.http_listen = flags.Get("http-listen");
  options.web_dir = flags.Get("web-dir");
  options.bootstrap_token_file = flags.Get("bootstrap-token-file");
  options.tls = {flags.Get("tls-client-ca"), flags.Get("tls-cert"), flags.Get("tls-key")};
  for (std::string rest = flags.Get("http-allowed-hosts"); !rest.empty();) {
    auto comma = rest.find(',');
    std::string name = rest.substr(0, comma);
    rest = comma == std::string::npos ? "" : rest.substr(comma + 1);
    std::transform(name.begin(), name.end(), name.begin(),
                   [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
    if (!name.empty()) options.http_allowed_hosts.push_back(name);
  }
  auto hello_timeout = lockstep::ParseDuration(flags.Get("agent-hello-timeout"));
  if (!hello_timeout.ok() || hello_timeout->count() <= 0) {
    return Fail("--agent-hello-timeout: " + (hello_timeout.ok()
                                                 ? std::string("must be positive")
                                                 : hello_timeout.status().message()));
  }
  options.hello_timeout_ms = hello_timeout->count();
  auto request_timeout = lockstep::ParseDuration(flags.Get("http-request-timeout"));
  if (!request_timeout.ok() || request_timeout->count() <= 0 ||
      request_timeout->count() > 3'600'000) {
    return Fail("--http-request-timeout: " + (request_timeout.ok()
                                                  ? std::string("must be from 1ms to 1h")
                                                  : request_timeout.status().message()));
  }
  options.http_request_timeout_ms = static_cast<int>(request_timeout->count());
  for (auto [flag, field] :
       {std::pair{"max-pending-agent-streams-per-peer", &options.max_pending_streams_per_peer},
        std::pair{"max-pending-agent-streams", &options.max_pending_streams},
        std::pair{"http-max-connections-per-client", &options.http_max_connections_per_client},
        std::pair{"http-max-event-streams", &options.http_max_event_streams},
        std::pair{"max-watches", &options.max_watches}}) {
    const std::string v = flags.Get(flag);
    char* end = nullptr;
    long n = std::strtol(v.c_str(), &end, 10);
    if (v.empty() || *end != '\0' || n < 1 || n > 1'000'000) {
      return Fail(std::string("--") + flag + ": expected a number from 1 to 1000000, got \"" + v +
                  "\"");
    }
    *field = static_cast<int>(n);
  }
  if (flags.GetBool("check")) {
    // What start-up would refuse, found without starting: for ExecStartPre= or CI.
    if (auto st = lockstep::CheckTlsFiles(options.tls, "--tls-cert", "--tls-client-ca"); !st.ok()) {
      return Fail(st.message());
    }
    if (options.tls.enabled() && (options.tls.cert.empty() || options.tls.key.empty())) {
      return Fail("TLS needs both --tls-cert and --tls-key");
    }
    std::string names;
    for (const auto& p : options.pipelines) names += (names.empty() ? "" : ", ") + p.name;
    std::cout << "lockstepd --check: ok: " << options.pipelines.size() << " pipeline(s) (" << names
              << ")" << (options.tls.enabled() ? ", TLS files load and match" : "") << "\n";
    return 0;
  }
  auto orch = lockstep::Orchestrator::Start(std::move(options));
  if (!orch.ok()) return Fail(orch.status().message());

  if (!flags.Get("port-file").empty()) {
    std::string tmp = flags.Get("port-file") + ".tmp";
    {
      std::ofstream f(tmp);
      f << "{\"grpc\": " << (*orch)->grpc_port() << ", \"http\": " << (*orch)->http_port() << "}\n";
    }
    std::rename(tmp.c_str(), flags.Get("port-file").c_str());
  }

  lockstep::Orchestrator* o = orch->get();
  std::thread watcher([o, set] {
    for (;;) {
      int sig = 0;
      sigwait(&set, &sig);
      if (sig == SIGHUP) {
        // Re-reads the pipelines; a bad directory keeps the running ones (logged, audited).
        spdlog::info("signal {}: reloading pipelines", sig);
        (void)o->ReloadPipelines();  // logged and audited either way
        continue;
      }
      spdlog::info("signal {}: shutting down", sig);
      o->Shutdown();
      return;
    }
  });
  watcher.detach();
  o->Wait();
  const int code = o->exit_code();
  spdlog::info("lockstepd stopped{}", code == 0 ? "" : " (it lost the leader lease)");
  return code;
}
