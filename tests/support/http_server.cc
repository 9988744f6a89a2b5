#include "tests/support/http_server.h"

#include <httplib.h>

#include <algorithm>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <map>
#include <mutex>
#include <optional>
#include <sstream>
#include <thread>

namespace lockstep::testing {
namespace {

// Larger than httplib's default so that a few delayed requests cannot starve the rest.
constexpr size_t kWorkerThreads = 16;

struct Route {
  int status = 200;
  std::string body;
  std::optional<size_t> send_bytes;  // set: send only this much of `body`, then hang up
  std::string file;                  // set: the body is this file's contents at request time
};

}  // namespace

struct TestHttpServer::Impl {
  httplib::Server server;
  std::thread thread;
  int port = 0;

  mutable std::mutex mu;
  std::condition_variable stopping_cv;
  std::condition_variable hits_cv;  // notified whenever a count in `hits` grows
  // Guarded by mu.
  bool stopping = false;
  std::map<std::string, Route> routes;
  std::map<std::string, std::chrono::milliseconds> delays;
  std::map<std::string, int> hits;
  std::map<std::string, std::function<int(const std::string&)>> post_handlers;
  std::map<std::string, std::vector<ReceivedPost>> posts;

  void Handle(const httplib::Request& req, httplib::Response& res) {
    std::optional<Route> route;
    {
      std::unique_lock<std::mutex> lock(mu);
      ++hits[req.path];
      hits_cv.notify_all();
      auto delay = delays.find(req.path);
      if (delay != delays.end()) {
        // Waits on the condition variable rather than sleeping so that the destructor
        // does not have to wait out a long delay.
        stopping_cv.wait_for(lock, delay->second, [this] { return stopping; });
      }
      auto it = routes.find(req.path);
      if (it != routes.end()) route = it->second;
    }
    if (!route) {
      res.status = 404;
      res.set_content("not found\n", "text/plain");
      return;
    }
    res.status = route->status;
    if (!route->file.empty()) {
      std::ifstream in(route->file, std::ios::binary);
      std::stringstream contents;
      contents << in.rdbuf();
      res.set_content(contents.str(), "text/plain");
      return;
    }
    if (!route->send_bytes) {
      res.set_content(route->body, "application/octet-stream");
      return;
    }
    const size_t send_bytes = std::min(*route->send_bytes, route->body.size());
    auto body = std::make_shared<std::string>(std::move(route->body));
    res.set_content_provider(
        body->size(), "application/octet-stream",
        [body, send_bytes](size_t offset, size_t length, httplib::DataSink& sink) {
          if (offset < send_bytes)
            sink.write(body->data() + offset, std::min(length, send_bytes - offset));
          // Returning false makes httplib close the connection short of Content-Length.
          return false;
        });
  }

  void HandlePost(const httplib::Request& req, httplib::Response& res) {
    std::function<int(const std::string&)> handler;
    {
      std::unique_lock<std::mutex> lock(mu);
      ++hits[req.path];
      hits_cv.notify_all();
      posts[req.path].push_back(ReceivedPost{req.get_header_value("Content-Type"), req.body});
      auto delay = delays.find(req.path);
      if (delay != delays.end()) {
        stopping_cv.wait_for(lock, delay->second, [this] { return stopping; });
      }
      auto it = post_handlers.find(req.path);
      if (it != post_handlers.end()) handler = it->second;
    }
    res.status = handler ? handler(req.body) : 404;
    res.set_content(res.status >= 200 && res.status < 300 ? "ok\n" : "error\n", "text/plain");
  }
};

TestHttpServer::TestHttpServer() : impl_(std::make_unique<Impl>()) {
  Impl* impl = impl_.get();
  impl->server.new_task_queue = [] { return new httplib::ThreadPool(kWorkerThreads); };
  impl->server.Get(R"(/.*)", [impl](const httplib::Request& req, httplib::Response& res) {
    impl->Handle(req, res);
  });
  impl->server.Post(R"(/.*)", [impl](const httplib::Request& req, httplib::Response& res) {
    impl->HandlePost(req, res);
  });
  impl->port = impl->server.bind_to_any_port("127.0.0.1");
  if (impl->port <= 0) {
    std::fprintf(stderr, "TestHttpServer: cannot bind 127.0.0.1\n");
    std::abort();
  }
  impl->thread = std::thread([impl] { impl->server.listen_after_bind(); });
  const auto give_up = std::chrono::steady_clock::now() + std::chrono::seconds(5);
  while (!impl->server.is_running()) {
    if (std::chrono::steady_clock::now() > give_up) {
      std::fprintf(stderr, "TestHttpServer: server on port %d did not start\n", impl->port);
      std::abort();
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
}

TestHttpServer::~TestHttpServer() {
  {
    std::lock_guard<std::mutex> lock(impl_->mu);
    impl_->stopping = true;
  }
  impl_->stopping_cv.notify_all();
  impl_->server.stop();
  impl_->thread.join();
}

int TestHttpServer::port() const { return impl_->port; }

std::string TestHttpServer::Url(const std::string& path) const {
  return "http://127.0.0.1:" + std::to_string(impl_->port) + path;
}

void TestHttpServer::Serve(const std::string& path, std::string body) {
  ServeStatus(path, 200, std::move(body));
}

void TestHttpServer::ServeFile(const std::string& path, const std::string& file) {
  std::lock_guard<std::mutex> lock(impl_->mu);
  impl_->routes[path] = Route{200, "", std::nullopt, file};
}

void TestHttpServer::ServeStatus(const std::string& path, int status, std::string body) {
  std::lock_guard<std::mutex> lock(impl_->mu);
  impl_->routes[path] = Route{status, std::move(body), std::nullopt, ""};
}

void TestHttpServer::ServeTruncated(const std::string& path, std::string body, size_t send_bytes) {
  std::lock_guard<std::mutex> lock(impl_->mu);
  impl_->routes[path] = Route{200, std::move(body), send_bytes, ""};
}

void TestHttpServer::SetDelay(const std::string& path, std::chrono::milliseconds delay) {
  std::lock_guard<std::mutex> lock(impl_->mu);
  impl_->delays[path] = delay;
}

void TestHttpServer::Remove(const std::string& path) {
  std::lock_guard<std::mutex> lock(impl_->mu);
  impl_->routes.erase(path);
  impl_->delays.erase(path);
  impl_->post_handlers.erase(path);
}

int TestHttpServer::Hits(const std::string& path) const {
  std::lock_guard<std::mutex> lock(impl_->mu);
  auto it = impl_->hits.find(path);
  return it == impl_->hits.end() ? 0 : it->second;
}

bool TestHttpServer::AwaitHits(const std::string& path, int n,
                               std::chrono::milliseconds limit) const {
  std::unique_lock<std::mutex> lock(impl_->mu);
  return impl_->hits_cv.wait_for(lock, limit, [&] {
    auto it = impl_->hits.find(path);
    return it != impl_->hits.end() && it->second >= n;
  });
}

void TestHttpServer::OnPost(const std::string& path,
                            std::function<int(const std::string& body)> handler) {
  std::lock_guard<std::mutex> lock(impl_->mu);
  impl_->post_handlers[path] = std::move(handler);
}

std::vector<TestHttpServer::ReceivedPost> TestHttpServer::Posts(const std::string& path) const {
  std::lock_guard<std::mutex> lock(impl_->mu);
  auto it = impl_->posts.find(path);
  return it == impl_->posts.end() ? std::vector<ReceivedPost>{} : it->second;
}

}  // namespace lockstep::testing
