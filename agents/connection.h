// Connection: the agent's link to lockstepd. Opens the bidirectional stream, says hello
// with what is on disk, hands received tasks to the Executor and streams progress, results
// and heartbeats back. When the stream breaks it reconnects with capped exponential backoff
// and jitter; results produced while disconnected are not lost, because the orchestrator
// re-sends outstanding tasks on reconnect and the executor answers them from its journal.
//
// Several lockstepd (one leading, the rest standing by): `server` lists them all. A standby
// ends the stream with UNAVAILABLE naming the leader ("the leader is at ADDR"), which the
// agent follows at once, without backoff; a server that cannot be reached sends it to the
// next one. A lockstepd that stops answering (frozen, partitioned) is noticed by the
// transport's keepalive, tuned to the liveness timeout its welcome gave (2/3 of agent_lost),
// and the agent moves on. Every task, gate check and welcome carries the sender's leader
// epoch; the agent refuses any older than the newest it has seen (a deposed leader's).
//
// Time: the reconnect backoff and the heartbeat timer are measured on the Clock given at
// construction and sleep on its Alarms (gRPC's own deadlines and keepalives are real time).
//
// Thread safety: Run blocks on the calling thread until Stop (from any thread). Send* may be
// called from any thread.
#pragma once

#include <memory>
#include <string>

#include "common/clock.h"
#include "common/status.h"
#include "common/tls.h"
#include "proto/lockstep.pb.h"

namespace lockstep::agent {

class Executor;

struct ConnectionOptions {
  std::string server;  // host:port, or several separated by commas (tried in turn)
  std::string name;
  std::string region;
  std::string pipeline;
  std::string token;
  TlsFiles tls;  // CA of the server, and our certificate for mutual TLS
  // Where this host's own credential is kept (agents/credential.h); empty: in memory only.
  // Once lockstepd issued one, every hello presents it.
  std::string credential_file;
};

class Connection {
 public:
  // `executor` and `clock` must outlive the connection.
  Connection(ConnectionOptions options, Executor* executor,
             const Clock* clock = SystemClock::Get());
  ~Connection();

  // Runs until Stop. Fails at once, naming the file, if the stored credential is unreadable.
  Status Run();
  void Stop();

  // Dropped silently when not connected (the orchestrator re-sends what it needs).
  void SendProgress(const lockstep::v1::TaskProgress& p);
  void SendResult(const lockstep::v1::TaskResult& r);
  void SendVerdict(const lockstep::v1::GateVerdict& v);

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace lockstep::agent
