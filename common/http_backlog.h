// A listen backlog for cpp-httplib servers that takes a burst of connections.
//
// cpp-httplib as packaged by Debian is a compiled library that listens with a backlog of 5.
// A burst of connections (a fleet fetching one artifact, a dashboard and its event streams,
// webhooks arriving together) overflows that, and every dropped SYN costs its client the
// kernel's one-second retransmit. Create one before binding; after binding, call Widen().
#pragma once

#include <httplib.h>
#include <sys/socket.h>

namespace lockstep {

class ListenBacklog {
 public:
  explicit ListenBacklog(httplib::Server& server) {
    server.set_socket_options([this](socket_t fd) {
      httplib::default_socket_options(fd);
      fd_ = fd;
    });
  }
  // Listens again on the bound socket with `backlog` (Linux updates it in place; capped by
  // net.core.somaxconn). Returns false if the server has no bound socket.
  bool Widen(int backlog = 1024) const { return fd_ >= 0 && ::listen(fd_, backlog) == 0; }

 private:
  socket_t fd_ = -1;
};

}  // namespace lockstep
