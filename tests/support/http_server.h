// A real HTTP server for tests, on 127.0.0.1 and an ephemeral port, serving bytes registered
// by path, with injectable faults (status codes, truncated bodies, delays). Used as the
// artifact server and as a probe target, and (POST) as a webhook receiver that records what
// it was sent.
//
// Thread safety: every method may be called from any thread while the server runs.
#pragma once

#include <chrono>
#include <functional>
#include <memory>
#include <string>
#include <vector>

namespace lockstep::testing {

class TestHttpServer {
 public:
  TestHttpServer();   // starts listening; aborts the test process if it cannot bind
  ~TestHttpServer();  // stops and joins
  TestHttpServer(const TestHttpServer&) = delete;
  TestHttpServer& operator=(const TestHttpServer&) = delete;

  int port() const;
  // "http://127.0.0.1:PORT" + path
  std::string Url(const std::string& path) const;

  // GET path → 200 with body.
  void Serve(const std::string& path, std::string body);
  // GET path → 200 with the contents of `file`, read at each request (so that a process the
  // test started, a hook say, can change what is served).
  void ServeFile(const std::string& path, const std::string& file);
  // GET path → `status` with body.
  void ServeStatus(const std::string& path, int status, std::string body = "");
  // GET path → headers claim the full length but only `send_bytes` of body are sent.
  void ServeTruncated(const std::string& path, std::string body, size_t send_bytes);
  // Waits `delay` before answering path (GET or POST).
  void SetDelay(const std::string& path, std::chrono::milliseconds delay);
  void Remove(const std::string& path);
  // Number of requests (GET or POST) received for path so far.
  int Hits(const std::string& path) const;
  // Waits until path has received at least `n` requests (GET or POST), at most `limit` of
  // real time; a request counts as it arrives, before it is answered. Returns whether it had.
  bool AwaitHits(const std::string& path, int n, std::chrono::milliseconds limit) const;

  // POST path → `handler(body)` is called on a server thread, without the server's lock, and
  // its return value is the response status. A handler may block (to hold a request in
  // flight) but must return within a bounded time: the destructor waits for it. POST to a
  // path without a handler → 404 (the request is still recorded). Remove(path) removes the handler
  // too.
  void OnPost(const std::string& path, std::function<int(const std::string& body)> handler);
  struct ReceivedPost {
    std::string content_type;
    std::string body;
  };
  // Every POST received for path so far, in arrival order.
  std::vector<ReceivedPost> Posts(const std::string& path) const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace lockstep::testing
