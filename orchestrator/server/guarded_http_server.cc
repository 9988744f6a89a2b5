#include "orchestrator/server/guarded_http_server.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>

namespace lockstep {
namespace {

using Clock = std::chrono::steady_clock;

// Waits until `sock` is ready for `events` or `wait` passed. True if ready.
bool WaitReady(socket_t sock, short events, std::chrono::milliseconds wait) {
  if (wait.count() <= 0) return false;
  pollfd p{sock, events, 0};
  for (;;) {
    int n = ::poll(&p, 1, static_cast<int>(wait.count()));
    if (n < 0 && errno == EINTR) continue;
    return n > 0 && (p.revents & (events | POLLHUP | POLLERR)) != 0;
  }
}

std::string AddressOf(const sockaddr_storage& addr, int* port) {
  char buf[INET6_ADDRSTRLEN] = "";
  if (addr.ss_family == AF_INET) {
    const auto* in = reinterpret_cast<const sockaddr_in*>(&addr);
    ::inet_ntop(AF_INET, &in->sin_addr, buf, sizeof buf);
    if (port) *port = ntohs(in->sin_port);
  } else if (addr.ss_family == AF_INET6) {
    const auto* in6 = reinterpret_cast<const sockaddr_in6*>(&addr);
    ::inet_ntop(AF_INET6, &in6->sin6_addr, buf, sizeof buf);
    if (port) *port = ntohs(in6->sin6_port);
  }
  return buf;
}

std::string PeerOf(socket_t sock, int* port = nullptr) {
  sockaddr_storage addr{};
  socklen_t len = sizeof addr;
  if (::getpeername(sock, reinterpret_cast<sockaddr*>(&addr), &len) != 0) return "";
  return AddressOf(addr, port);
}

// A socket stream whose reads share one deadline per request: however the client paces its
// bytes, the request must have arrived by then. Writes wait at most the write timeout each.
class DeadlineStream final : public httplib::Stream {
 public:
  DeadlineStream(socket_t sock, std::chrono::milliseconds read_timeout,
                 std::chrono::milliseconds write_timeout)
      : sock_(sock), read_timeout_(read_timeout), write_timeout_(write_timeout) {}

  void StartRequest(Clock::time_point deadline) {
    deadline_ = deadline;
    deadline_hit_ = false;
  }
  bool deadline_hit() const { return deadline_hit_; }

  bool is_readable() const override {
    auto left = std::chrono::ceil<std::chrono::milliseconds>(deadline_ - Clock::now());
    if (left.count() <= 0) {
      deadline_hit_ = true;
      return false;
    }
    const bool deadline_bounds = left <= read_timeout_;
    bool ready = WaitReady(sock_, POLLIN, deadline_bounds ? left : read_timeout_);
    // Nothing came before the request's deadline (rather than within one read timeout).
    if (!ready && deadline_bounds) deadline_hit_ = true;
    return ready;
  }
  bool is_writable() const override { return WaitReady(sock_, POLLOUT, write_timeout_); }

  ssize_t read(char* ptr, size_t size) override {
    if (!is_readable()) return -1;
    ssize_t n;
    do {
      n = ::recv(sock_, ptr, size, 0);
    } while (n < 0 && errno == EINTR);
    return n;
  }
  ssize_t write(const char* ptr, size_t size) override {
    if (!is_writable()) return -1;
    ssize_t n;
    do {
      n = ::send(sock_, ptr, size, MSG_NOSIGNAL);
    } while (n < 0 && errno == EINTR);
    return n;
  }
  void get_remote_ip_and_port(std::string& ip, int& port) const override {
    ip = PeerOf(sock_, &port);
  }
  void get_local_ip_and_port(std::string& ip, int& port) const override {
    sockaddr_storage addr{};
    socklen_t len = sizeof addr;
    if (::getsockname(sock_, reinterpret_cast<sockaddr*>(&addr), &len) == 0) {
      ip = AddressOf(addr, &port);
    }
  }
  socket_t socket() const override { return sock_; }

 private:
  const socket_t sock_;
  const std::chrono::milliseconds read_timeout_;
  const std::chrono::milliseconds write_timeout_;
  Clock::time_point deadline_ = Clock::now();
  mutable bool deadline_hit_ = false;
};

std::chrono::milliseconds Ms(time_t sec, time_t usec) {
  return std::chrono::milliseconds(sec * 1000 + usec / 1000);
}

}  // namespace

bool GuardedHttpServer::Admit(const std::string& client) {
  std::lock_guard lock(mu_);
  int& n = open_[client];
  if (n >= guard_.max_connections_per_client) return false;
  ++n;
  return true;
}

void GuardedHttpServer::Leave(const std::string& client) {
  std::lock_guard lock(mu_);
  auto it = open_.find(client);
  if (it != open_.end() && --it->second <= 0) open_.erase(it);
}

bool GuardedHttpServer::process_and_close_socket(socket_t sock) {
  const std::string client = PeerOf(sock);
  bool ok = false;
  if (!Admit(client)) {
    ++refused_;
    const std::string body = "{\"error\": \"too many open connections from " + client + " (limit " +
                             std::to_string(guard_.max_connections_per_client) + ")\"}\n";
    const std::string answer =
        "HTTP/1.1 429 Too Many Requests\r\nContent-Type: "
        "application/json\r\nConnection: close\r\nContent-Length: " +
        std::to_string(body.size()) + "\r\n\r\n" + body;
    if (WaitReady(sock, POLLOUT, std::chrono::milliseconds(1000))) {
      (void)::send(sock, answer.data(), answer.size(), MSG_NOSIGNAL);
    }
  } else {
    DeadlineStream stream(sock, Ms(read_timeout_sec_, read_timeout_usec_),
                          Ms(write_timeout_sec_, write_timeout_usec_));
    // Keep-alive, as httplib does it, but every request's reads share one deadline.
    const auto idle = std::chrono::seconds(keep_alive_timeout_sec_);
    for (size_t left = keep_alive_max_count_; left > 0 && svr_sock_ != INVALID_SOCKET; --left) {
      // Wait for the next request in short steps, so that stop() is noticed.
      bool ready = false;
      for (auto until = Clock::now() + idle; !ready && Clock::now() < until;) {
        if (svr_sock_ == INVALID_SOCKET) break;
        ready = WaitReady(sock, POLLIN, std::chrono::milliseconds(100));
      }
      if (!ready) break;
      stream.StartRequest(Clock::now() + guard_.request_read_timeout);
      bool closed = false;
      ok = process_request(stream, /*close_connection=*/left == 1, closed, nullptr);
      if (stream.deadline_hit()) ++slow_;
      if (!ok || closed) break;
    }
    Leave(client);
  }
  ::shutdown(sock, SHUT_RDWR);
  ::close(sock);
  return ok;
}

}  // namespace lockstep
