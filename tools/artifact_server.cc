// lockstep-artifact-server: serves the files of one directory over HTTP on loopback. The
// local demo uses it as the artifact store that a CI system would otherwise provide.

#include <httplib.h>

#include <cstdio>
#include <fstream>
#include <iostream>

#include "common/flags.h"
#include "common/http_backlog.h"

int main(int argc, char** argv) {
  lockstep::Flags flags;
  flags.Value("dir", "", "directory to serve (required)");
  flags.Value("listen", "127.0.0.1:0", "address to listen on; port 0 picks a free one");
  flags.Value("port-file", "", "write the bound port here once listening");
  if (auto st = flags.Parse(argc, argv); !st.ok() || flags.Get("dir").empty()) {
    std::fprintf(stderr, "lockstep-artifact-server: %s\n%s",
                 st.ok() ? "--dir is required" : st.message().c_str(), flags.Usage().c_str());
    return 2;
  }
  std::string listen = flags.Get("listen");
  auto colon = listen.rfind(':');
  if (colon == std::string::npos) {
    std::fprintf(stderr, "lockstep-artifact-server: --listen must be HOST:PORT\n");
    return 2;
  }
  std::string host = listen.substr(0, colon);
  int port = std::atoi(listen.c_str() + colon + 1);

  httplib::Server server;
  if (!server.set_mount_point("/", flags.Get("dir"))) {
    std::fprintf(stderr, "lockstep-artifact-server: cannot serve %s\n", flags.Get("dir").c_str());
    return 2;
  }
  lockstep::ListenBacklog backlog(server);  // a whole fleet fetches at once
  if (port == 0) {
    port = server.bind_to_any_port(host);
  } else if (!server.bind_to_port(host, port)) {
    port = -1;
  }
  if (port <= 0) {
    std::fprintf(stderr, "lockstep-artifact-server: cannot listen on %s\n", listen.c_str());
    return 1;
  }
  backlog.Widen();
  if (!flags.Get("port-file").empty()) {
    std::string tmp = flags.Get("port-file") + ".tmp";
    std::ofstream(tmp) << port << "\n";
    std::rename(tmp.c_str(), flags.Get("port-file").c_str());
  }
  std::fprintf(stderr, "serving %s on http://%s:%d/\n", flags.Get("dir").c_str(), host.c_str(),
               port);
  return server.listen_after_bind() ? 0 : 1;
}
