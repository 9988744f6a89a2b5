#include "orchestrator/server/event_streams.h"

#include <httplib.h>

#include <algorithm>
#include <deque>
#include <tuple>

#include "orchestrator/server/http_json.h"

namespace lockstep {

using nlohmann::json;

namespace {
const absl::Duration kKeepaliveInterval = absl::Seconds(15);
}  // namespace

// One open stream. The engine thread only appends release ids; the stream's own server
// thread loads the views.
struct EventStreams::Subscriber {
  absl::Mutex mu;
  absl::CondVar cv;
  std::deque<std::pair<std::string, int64_t>> queue ABSL_GUARDED_BY(mu);  // (type, release id)
  bool closed ABSL_GUARDED_BY(mu) = false;
  std::string principal;  // the token's name; set before the stream is registered
};

EventStreams::EventStreams(Limits limits, LoadRelease load_release)
    : limits_(limits), load_release_(std::move(load_release)) {}

EventStreams::~EventStreams() { CloseAll(); }

void EventStreams::Close(Subscriber& s) {
  absl::MutexLock lock(&s.mu);
  s.closed = true;
  s.cv.SignalAll();
}

void EventStreams::CloseFor(const std::string& principal) {
  absl::MutexLock lock(&mu_);
  for (auto it = subs_.begin(); it != subs_.end();) {
    if ((*it)->principal == principal) {
      Close(**it);
      it = subs_.erase(it);
    } else {
      ++it;
    }
  }
}

void EventStreams::CloseAll() {
  absl::MutexLock lock(&mu_);
  stopping_ = true;
  for (auto& s : subs_) Close(*s);
  subs_.clear();
}

void EventStreams::Publish(const std::string& type, int64_t id) {
  absl::MutexLock lock(&mu_);
  for (auto it = subs_.begin(); it != subs_.end();) {
    Subscriber& s = **it;
    s.mu.Lock();
    bool redundant = false;
    if (type == "changed") {
      for (const auto& q : s.queue) redundant = redundant || q.second == id;
    }
    if (!redundant) {
      if (s.queue.size() >= kMaxQueue) {
        s.closed = true;
      } else {
        s.queue.emplace_back(type, id);
      }
      s.cv.SignalAll();
    }
    bool closed = s.closed;
    s.mu.Unlock();
    it = closed ? subs_.erase(it) : std::next(it);
  }
}

void EventStreams::Open(const std::string& principal, httplib::Response& res) {
  auto sub = std::make_shared<Subscriber>();
  sub->principal = principal;
  {
    absl::MutexLock lock(&mu_);
    if (stopping_) return SendError(res, 503, "shutting down");
    size_t mine = 0;
    for (const auto& s : subs_) mine += s->principal == principal ? 1 : 0;
    if (subs_.size() >= static_cast<size_t>(limits_.max_streams)) {
      res.set_header("Retry-After", "5");
      return SendError(
          res, 503,
          "too many open event streams (limit " + std::to_string(limits_.max_streams) + ")");
    }
    if (mine >= static_cast<size_t>(limits_.max_per_token)) {
      res.set_header("Retry-After", "5");
      return SendError(res, 429,
                       "token \"" + principal + "\" already holds " + std::to_string(mine) +
                           " event streams (limit " + std::to_string(limits_.max_per_token) + ")");
    }
    subs_.push_back(sub);
  }
  res.set_header("X-Accel-Buffering", "no");
  auto hello_sent = std::make_shared<bool>(false);
  res.set_chunked_content_provider(
      "text/event-stream",
      [this, sub, hello_sent](size_t, httplib::DataSink& sink) -> bool {
        auto write = [&sink](const std::string& s) { return sink.write(s.data(), s.size()); };
        if (!*hello_sent) {
          *hello_sent = true;
          return write(": connected\n\n");
        }
        std::string type;
        int64_t id = 0;
        {
          absl::MutexLock lock(&sub->mu);
          const absl::Time deadline = absl::Now() + kKeepaliveInterval;
          while (!sub->closed && sub->queue.empty()) {
            if (sub->cv.WaitWithDeadline(&sub->mu, deadline)) break;  // timed out
          }
          if (sub->closed) {
            type = "";
          } else if (sub->queue.empty()) {
            type = ":keepalive";
          } else {
            std::tie(type, id) = sub->queue.front();
            sub->queue.pop_front();
          }
        }
        if (type.empty()) {
          sink.done();
          return true;
        }
        if (type == ":keepalive") return write(": keepalive\n\n");
        auto view = load_release_(id);
        if (!view.ok()) return true;  // nothing to show; keep the stream
        json event = {{"type", type}, {"release", *view}};
        return write("event: release\ndata: " + event.dump() + "\n\n");
      },
      [this, sub](bool) {
        Close(*sub);
        absl::MutexLock lock(&mu_);
        std::erase(subs_, sub);
      });
}

}  // namespace lockstep
