// GuardedHttpServer: cpp-httplib's server with the limits a port open to untrusted clients
// needs, which the library itself lacks.
//
// cpp-httplib gives each connection a pool thread for as long as the client keeps it open,
// and bounds a request only by the gap between two reads: a client that sends one byte every
// few seconds ("slowloris") holds a thread forever, and a few dozen of them take every
// thread. This server takes over the per-connection loop (httplib's protected
// process_request still parses, routes and answers) and adds:
//
//  - a per-client bound: at most `max_connections_per_client` open connections from one
//    address; more are answered 429 and closed at once, without taking a request thread
//    for longer than that answer;
//  - a request read deadline: the request line, headers and body of each request must all
//    arrive within `request_read_timeout` of its first byte, however the client paces them;
//  - an idle deadline between keep-alive requests (keep_alive_timeout_sec_).
//
// Responses are not bounded in time (event streams are long by design); each write still
// fails after the write timeout if the client stops reading.
//
// Thread safety: as httplib::Server. Counters may be read from any thread.
#pragma once

#include <httplib.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <map>
#include <mutex>
#include <string>

namespace lockstep {

struct HttpGuardOptions {
  int max_connections_per_client = 16;
  std::chrono::milliseconds request_read_timeout{10'000};
};

class GuardedHttpServer final : public httplib::Server {
 public:
  explicit GuardedHttpServer(HttpGuardOptions options) : guard_(options) {}

  // Connections refused because their client had too many open.
  uint64_t refused_connections() const { return refused_.load(); }
  // Requests dropped because they did not arrive within the read deadline.
  uint64_t slow_requests() const { return slow_.load(); }

 private:
  // Called by httplib on a pool thread for each accepted connection.
  bool process_and_close_socket(socket_t sock) override;

  // Takes a connection slot for `client`; false if it already holds the maximum.
  bool Admit(const std::string& client);
  void Leave(const std::string& client);

  const HttpGuardOptions guard_;
  std::mutex mu_;
  std::map<std::string, int> open_;  // guarded by mu_: open connections per client address
  std::atomic<uint64_t> refused_{0};
  std::atomic<uint64_t> slow_{0};
};

}  // namespace lockstep
