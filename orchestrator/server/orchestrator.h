// Orchestrator: lockstepd's runtime. Opens the store, builds the engine, starts the gRPC
// server (agent stream + control API) and the engine thread.
//
// Thread safety: Start, then Wait from one thread; Shutdown from any thread (e.g. a signal
// watcher). Shutdown stops accepting work, ends open watches (WatchRelease, WatchStatus: their
// clients see UNAVAILABLE and retry), lets the current pass commit, and returns.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "common/clock.h"
#include "common/status.h"
#include "common/tls.h"
#include "orchestrator/pipeline/pipeline.h"

namespace lockstep {

struct OrchestratorOptions {
  std::string data_dir;
  // Where state lives. Empty: SQLite in data_dir, which this process then locks (one owner).
  // A PostgreSQL URI or conninfo: a database several lockstepd share, one leading at a time
  // (leadership.h); the others stand by and point callers at it.
  std::string store;
  // Where other processes reach this one, as stored in the lease for standbys to point at.
  // Empty: the listen address with its bound port (the host name for a wildcard address).
  std::string advertise_grpc;
  std::string advertise_http;
  int64_t lease_ttl_ms = 3000;
  std::vector<Pipeline> pipelines;
  // Where `pipelines` were read from, for ReloadPipelines.
  std::string pipelines_dir;
  std::string grpc_listen = "127.0.0.1:7400";  // port 0: pick a free one
  std::string http_listen = "127.0.0.1:7480";  // port 0: pick a free one; empty: no HTTP
  std::string web_dir;                         // the dashboard's static files
  // Where the first admin token is written on first start (default DATA_DIR/admin-token).
  std::string bootstrap_token_file;
  // How often agents send a heartbeat. 0: a third of the smallest agent_lost of any
  // pipeline, between 1 s and 10 s, so each agent has three chances before it counts as
  // lost; lockstepd lengthens it as the fleet grows (HeartbeatPolicy), never beyond a third
  // of agent_lost. Non-zero: exactly this, whatever the fleet size.
  int64_t heartbeat_interval_ms = 0;
  TlsFiles tls;  // gRPC TLS: cert+key, and a client CA for mutual TLS
  // Host header names the HTTP port answers to (HttpApiOptions::allowed_hosts).
  std::vector<std::string> http_allowed_hosts;
  // HTTP limits (HttpApiOptions): open connections per client address, the time a request
  // may take to arrive, and open event streams.
  int http_max_connections_per_client = 16;
  int http_request_timeout_ms = 10'000;
  int http_max_event_streams = 64;
  // The agent port before authentication: how long a stream may take to say hello, and how
  // many unauthenticated streams may be open at once, per peer address and in total.
  int64_t hello_timeout_ms = 10'000;
  int max_pending_streams_per_peer = 256;
  int max_pending_streams = 2048;
  // Live views (WatchRelease, WatchStatus) open at once; more get RESOURCE_EXHAUSTED. Each
  // holds a gRPC request thread while open.
  int max_watches = 256;
  const Clock* clock = SystemClock::Get();
};

class Orchestrator {
 public:
  // Fails with a message naming what is wrong: the data directory, the store, the port.
  static StatusOr<std::unique_ptr<Orchestrator>> Start(OrchestratorOptions options);
  ~Orchestrator();

  int grpc_port() const;
  int http_port() const;
  void Wait();
  void Shutdown();
  // After Wait: 0, or kLostLease if it stopped because another lockstepd took the lease (a
  // supervisor restarts it, and it comes back as a standby).
  int exit_code() const;
  static constexpr int kLostLease = 75;

  // Reads the pipelines directory again (SIGHUP) and puts the result in force, as
  // Engine::ReplacePipelines describes. A directory that does not load (a bad file, an
  // unreadable webhook secret, no pipeline left) changes nothing: the running pipelines stay,
  // and the refusal is logged and audited ("pipelines.reload", outcome "refused") naming the
  // file and the problem, which is also returned.
  Status ReloadPipelines();

 private:
  struct Impl;
  explicit Orchestrator(std::unique_ptr<Impl> impl);
  // On election: the first admin token (if none was ever made), then the engine loop.
  static void StartLeading(Impl& impl, int64_t epoch);
  static void StopImpl(Impl& impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace lockstep
