// HttpApi: lockstepd's HTTP face, and the routes and guards of it. The JSON API under /api/v1
// (docs/reference.md) is the HTTP front door of Operations (operations.h), which authenticates,
// authorizes, validates, acts and answers exactly as the gRPC door does; this layer only
// parses requests and writes JSON. The other concerns live in files of their own: server-sent
// events at /api/v1/events (event_streams.h), Prometheus metrics at /metrics
// (http_metrics.h), the GitHub push webhook at /hooks/github (webhook/github_trigger.h), the
// dashboard's static files at / (static_files.h), and the JSON plumbing (http_json.h).
//
// Every /api/v1 call needs "Authorization: Bearer <token>"; roles are enforced per endpoint
// (401 without a valid token, 403 for a role that may not, and nothing changes), and a
// request body is parsed only after that check. Errors are
// JSON {"error": "..."} with 400, 401, 403, 404, 409 or 413, and 503 while lockstepd cannot
// write its store. Bodies are limited in size. /healthz answers 200 {"status": "ok"}, or 503
// {"status": "unhealthy", "error": "..."} while `health` reports an error.
//
// It is also an EngineObserver: release events and changes are published to every
// connected event stream. Publishing never blocks the engine: each stream has a bounded
// queue, and a stream that falls behind is closed (the browser reconnects).
//
// Thread safety: Start/Stop from the owner's thread; the observer methods from the engine
// thread; requests run on the server's own thread pool.
#pragma once

#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "common/clock.h"
#include "common/status.h"
#include "orchestrator/engine/engine.h"
#include "orchestrator/server/leadership.h"

namespace lockstep {

class Authenticator;
class Hub;
class Operations;
class Store;

struct HttpApiOptions {
  std::string listen = "127.0.0.1:7480";  // port 0: pick a free one
  std::string web_dir;                    // static files served at /; empty: none
  size_t max_body_bytes = 1 << 20;        // larger request bodies get 413
  int threads = 32;                       // for requests; event streams have threads of their own
  int max_event_streams = 64;             // open /api/v1/events streams at once (503 beyond)
  int max_event_streams_per_token = 16;   // per token name (429 beyond)
  // Each request (line, headers, body) must arrive within this of its first byte.
  int request_timeout_ms = 10'000;
  int max_connections_per_client = 16;  // open connections from one address (429 beyond)
  // Host header names (lower case, without port) this lockstepd answers to; others get 421,
  // which defeats DNS rebinding. "*": any. Empty: derived from `listen` (loopback names for
  // a loopback address; any name for a wildcard address).
  std::vector<std::string> allowed_hosts;
  // What /healthz reports: OK, or why lockstepd cannot do its work (e.g. the store refuses
  // writes). Called on request threads. Unset: always healthy.
  std::function<Status()> health;
  // Leadership (leadership.h): who leads. While another lockstepd does, every request but
  // /healthz and /metrics is answered 307 to the same path at the leader's URL (503 if none is
  // known), and /healthz says "standby". Unset: this lockstepd always leads.
  std::function<LeaderInfo()> leadership;
};

class HttpApi : public EngineObserver {
 public:
  // Binds and starts serving. kUnavailable naming the address if it cannot listen.
  // `ops` serves the API; the others feed the webhook, event streams and metrics. All must
  // outlive the HttpApi.
  static StatusOr<std::unique_ptr<HttpApi>> Start(const HttpApiOptions& options,
                                                  const Operations* ops, Engine* engine,
                                                  Store* store, Hub* hub, const Authenticator* auth,
                                                  const Clock* clock);
  ~HttpApi() override;

  virtual int port() const = 0;
  // Stops accepting requests and closes event streams. Idempotent.
  virtual void Stop() = 0;
  // This lockstepd now leads (with HttpApiOptions::leadership set): the webhook trigger
  // resumes waiting for the artifacts of releases left waiting.
  virtual void StartLeading() = 0;

 protected:
  HttpApi() = default;
};

}  // namespace lockstep
