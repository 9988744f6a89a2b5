// EventStreams: the server-sent event streams of /api/v1/events, which the dashboard follows
// to update live.
//
// Each open stream gets "event: release" messages, {"type": <event or "changed">, "release":
// <the release view>}, for every release event and change the engine publishes, plus a
// keep-alive comment every 15 s. Publishing never blocks the engine: it appends a (type,
// release id) pair to each stream's bounded queue, and the stream's own server thread loads
// the view when it sends. A stream that falls kMaxQueue behind is closed (EventSource
// reconnects). Limits: at most max_streams open (503 beyond) and max_per_token per token
// (429 beyond), both with Retry-After. A revoked token's streams are closed at once.
//
// Thread safety: Publish from the engine thread; Open on request threads; CloseFor and
// CloseAll from any thread.
#pragma once

#include <functional>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "common/status.h"

namespace httplib {
struct Response;
}

namespace lockstep {

class EventStreams {
 public:
  static constexpr size_t kMaxQueue = 256;
  struct Limits {
    int max_streams = 64;
    int max_per_token = 16;
  };
  // `load_release` builds the JSON view of a release on a stream's thread.
  using LoadRelease = std::function<StatusOr<nlohmann::json>(int64_t release_id)>;
  EventStreams(Limits limits, LoadRelease load_release);
  ~EventStreams();

  // Starts a stream on `res` for the (already authenticated) token `principal`, or answers
  // 503/429 when a limit is reached or the server is stopping.
  void Open(const std::string& principal, httplib::Response& res);
  // Queues (type, release) on every open stream; a "changed" already queued is not repeated.
  void Publish(const std::string& type, int64_t release_id);
  // Ends every stream of token `principal` (it was revoked).
  void CloseFor(const std::string& principal);
  // Ends every stream and refuses new ones. Idempotent.
  void CloseAll();

 private:
  struct Subscriber;
  static void Close(Subscriber& s);

  const Limits limits_;
  const LoadRelease load_release_;
  absl::Mutex mu_;
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  std::vector<std::shared_ptr<Subscriber>> subs_ ABSL_GUARDED_BY(mu_);
};

}  // namespace lockstep
