// lockstep-agent: runs on every host, makes it run its pipeline's release.

#include <signal.h>
#include <spdlog/spdlog.h>

#include <atomic>
#include <cstdio>
#include <fstream>
#include <iostream>
#include <thread>

#include "agents/artifact/fetch.h"
#include "agents/connection.h"
#include "agents/executor.h"
#include "common/flags.h"
#include "common/grpc_runtime.h"
#include "common/log.h"
#include "common/untrusted.h"
#include "common/version.h"

namespace {

int Fail(const std::string& msg) {
  std::fprintf(stderr, "lockstep-agent: %s\n", msg.c_str());
  return 2;
}

}  // namespace

int main(int argc, char** argv) {
  lockstep::Flags flags;
  flags.Value("server", "127.0.0.1:7400",
              "lockstepd gRPC address; several (one leading, the rest standing by) separated "
              "by commas");
  flags.Value("region", "", "the region this host is in (required)");
  flags.Value("name", "", "this host's agent name, unique in the fleet (required)");
  flags.Value("root", "", "directory holding releases/, current and agent state (required)");
  flags.Value("token-file", "", "file holding the enrollment token");
  flags.Value("token", "", "the enrollment token");
  flags.Value("pipeline", "", "pipeline to join (default: the only one listing the region)");
  flags.Value("keep-releases", "5", "releases kept on disk");
  flags.Value("tls-ca", "", "PEM CA that signed lockstepd's certificate (enables TLS)");
  flags.Value("tls-cert", "", "PEM client certificate, for mutual TLS");
  flags.Value("tls-key", "", "PEM client key, for mutual TLS");
  flags.Value("log-level", "info", "debug, info, warn or error");
  flags.Value("hook-env", "",
              "NAME[,NAME...]: variables of the agent's environment passed on to hooks, which "
              "otherwise see only PATH, LANG and LOCKSTEP_* (never CREDENTIALS_DIRECTORY)");
  flags.Value("hook-user", "",
              "user hooks run as, with its primary and supplementary groups (default: the "
              "agent's user; needs root)");
  flags.Value("hook-output", "tail",
              "tail: a failed hook's last lines go to lockstepd (unless the region's "
              "hook_output is none); none: hook output never leaves this host");
  flags.Bool("help", "show this help");
  flags.Bool("version", "print the version and commit, and exit");
  if (auto st = flags.Parse(argc, argv); !st.ok()) {
    return Fail(st.message() + "\nusage: lockstep-agent [flags]\n" + flags.Usage());
  }
  if (flags.GetBool("help")) {
    std::cout << "usage: lockstep-agent [flags]\n" << flags.Usage();
    return 0;
  }
  if (flags.GetBool("version")) {
    std::cout << "lockstep-agent " << lockstep::LockstepVersion() << " (commit "
              << lockstep::LockstepCommit() << ")\n";
    return 0;
  }
  for (const char* required : {"region", "name", "root"}) {
    if (flags.Get(required).empty()) return Fail(std::string("--") + required + " is required");
  }
  std::string token(lockstep::TrimSpace(flags.Get("token")));
  if (!flags.Get("token-file").empty()) {
    std::ifstream f(flags.Get("token-file"));
    if (!f) return Fail("cannot read --token-file " + flags.Get("token-file"));
    std::getline(f, token);
    token = std::string(lockstep::TrimSpace(token));
  }
  const std::string hook_output = flags.Get("hook-output");
  if (hook_output != "tail" && hook_output != "none") {
    return Fail("--hook-output: unknown value \"" + hook_output + "\" (tail or none)");
  }
  int keep = std::atoi(flags.Get("keep-releases").c_str());
  if (keep < 2) return Fail("--keep-releases must be at least 2 (current and previous)");

  if (auto bad = lockstep::CheckLogLevel(flags.Get("log-level")); !bad.empty()) return Fail(bad);
  lockstep::InitLogging("agent:" + flags.Get("name"), flags.Get("log-level"));
  lockstep::TuneGrpcRuntime();
  lockstep::agent::CurlGlobalInit();

  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGTERM);
  sigaddset(&set, SIGINT);
  pthread_sigmask(SIG_BLOCK, &set, nullptr);

  lockstep::agent::Connection* conn_ptr = nullptr;
  auto hook_env = lockstep::agent::ParseHookEnvAllowList(flags.Get("hook-env"));
  if (!hook_env.ok()) return Fail(hook_env.status().message());
  lockstep::agent::Executor executor(
      {flags.Get("root"), flags.Get("name"), flags.Get("region"), static_cast<size_t>(keep),
       *hook_env, flags.Get("hook-user"), hook_output == "none"},
      [&](const lockstep::v1::TaskProgress& p) {
        if (conn_ptr) conn_ptr->SendProgress(p);
      },
      [&](const lockstep::v1::TaskResult& r) {
        if (conn_ptr) conn_ptr->SendResult(r);
      },
      [&](const lockstep::v1::GateVerdict& v) {
        if (conn_ptr) conn_ptr->SendVerdict(v);
      });
  lockstep::TlsFiles tls{flags.Get("tls-ca"), flags.Get("tls-cert"), flags.Get("tls-key")};
  if (auto creds = lockstep::ChannelCredentialsFrom(tls); !creds.ok()) {
    return Fail(creds.status().message());
  }
  lockstep::agent::Connection conn(
      {flags.Get("server"), flags.Get("name"), flags.Get("region"), flags.Get("pipeline"), token,
       tls, flags.Get("root") + "/host-credential"},
      &executor);
  conn_ptr = &conn;
  if (auto st = executor.Start(); !st.ok()) return Fail(st.message());
  spdlog::info("agent {} in {} running {}", flags.Get("name"), flags.Get("region"),
               executor.CurrentVersion().empty() ? "nothing" : executor.CurrentVersion());

  // The signal thread stops the connection; it is joined before `conn` goes away, since a
  // stop may still be waiting for the stream's clean end when Run returns.
  std::atomic<bool> finished{false};
  std::thread watcher([&conn, &finished, set] {
    int sig = 0;
    sigwait(&set, &sig);
    if (finished.load()) return;
    spdlog::info("signal {}: stopping", sig);
    conn.Stop();
  });
  lockstep::Status run = conn.Run();
  finished = true;
  pthread_kill(watcher.native_handle(), SIGTERM);  // ends its wait if no signal came
  watcher.join();
  executor.Stop();
  if (!run.ok()) return Fail(run.message());
  return 0;
}
