// A region's artifact mirror for integration tests: the real nginx (Debian package nginx-light,
// /usr/sbin/nginx), started by the test as a child process on 127.0.0.1 and a free port, with
// its configuration, pid file, temporary files, cache and access log in a fresh temporary
// directory. Three kinds:
//
//  - Caching(origin): a caching reverse proxy of `origin`, configured as docs/operations.md
//    recommends (proxy_cache keyed on the URI, proxy_cache_lock on, 200s kept for an hour),
//    so that however many hosts of a region ask at once, the origin is asked once.
//  - WrongBytes(): an nginx that answers every artifact path with 200 and kWrongBody, as a
//    mirror with a corrupt cache or a bad configuration would.
//  - Down(): no nginx at all; the base URL names a loopback port that is bound (so that no
//    other process takes it) but not listening, so a connection to it is refused at once.
//
// When the test runs as root, nginx's master stays root and its workers run as `nobody`
// (nginx's default), which owns the directories nginx creates; the temporary directory is
// made traversable for it. As any other user, every process runs as that user.
//
// Start returns once nginx answers a request on its port (at most 10 s per try). Losing the
// race for the free port to another process (nginx then exits: "Address already in use") is
// retried on a new port, a bounded number of times. The destructor stops nginx by PID
// (SIGTERM, then SIGKILL for the master and its workers) and removes the directory; if the
// test failed and nginx's log is in that directory, it prints the log first.
//
// Thread safety: the accessors may be called from any thread; construction and destruction
// from one.
#pragma once

#include <sys/types.h>

#include <memory>
#include <string>
#include <vector>

#include "common/status.h"
#include "tests/support/process.h"

namespace lockstep::testing {

class NginxMirror {
 public:
  enum class Mode { kCaching, kWrongBytes, kDown };

  // What a WrongBytes() mirror answers for every path.
  static constexpr char kWrongBody[] = "not the artifact";

  // A caching reverse proxy of `origin_url`, "http://HOST:PORT" (no path). nginx's output goes
  // to `log_path` if given (e.g. into a Fleet's logs directory, so that it is shown when the
  // test fails), otherwise into the mirror's directory. FailedPrecondition naming the package
  // if /usr/sbin/nginx is missing.
  static StatusOr<std::unique_ptr<NginxMirror>> Caching(const std::string& origin_url,
                                                        const std::string& log_path = "");
  // An nginx that serves kWrongBody for every artifact path.
  static StatusOr<std::unique_ptr<NginxMirror>> WrongBytes(const std::string& log_path = "");
  // No nginx: a base URL nobody answers (connection refused).
  static StatusOr<std::unique_ptr<NginxMirror>> Down();

  ~NginxMirror();
  NginxMirror(const NginxMirror&) = delete;
  NginxMirror& operator=(const NginxMirror&) = delete;

  Mode mode() const { return mode_; }
  int port() const { return port_; }
  // "http://127.0.0.1:PORT": the mirror's base URL, for a pipeline's artifacts.mirrors.
  std::string base_url() const;
  // The nginx master's PID; 0 for Down().
  pid_t pid() const;
  // The directory holding nginx.conf, the cache and the access log; empty for Down().
  const std::string& dir() const { return dir_; }

  // One line of the access log: a request nginx answered.
  struct Request {
    std::string uri;
    int status = 0;
    // $upstream_cache_status: "MISS" (fetched from the origin), "HIT", "EXPIRED", ...; "-"
    // when the answer did not involve the cache (WrongBytes(), the readiness probe).
    std::string cache_status;
  };
  // Every request nginx answered so far for `uri` (the readiness probe's are left out), in
  // order. A request is logged once its answer was sent. Empty for Down().
  std::vector<Request> Requests(const std::string& uri) const;

  // The end of nginx's error output, for failure messages.
  std::string LogTail(size_t max_chars = 4000) const;

 private:
  NginxMirror(Mode mode, std::string origin_url, std::string log_path);
  // Creates the directory, then starts nginx until one start answers on its port.
  Status Launch();
  // Picks a free port, writes the configuration and starts nginx once.
  Status StartOnce();
  // Polls the readiness path until nginx answers it. Sets *port_taken if nginx exited because
  // another process had the port.
  Status AwaitReady(size_t log_offset, bool* port_taken);
  std::string Config() const;
  void Stop();

  Mode mode_;
  std::string origin_url_;  // kCaching only
  std::string log_path_;    // nginx's stdout and stderr
  bool owns_log_ = false;   // log_path_ is in dir_ (no log path was given)
  std::string dir_;         // empty for kDown
  std::string ready_token_;
  int port_ = 0;
  int held_fd_ = -1;  // kDown: the bound, not listening socket that keeps the port
  std::unique_ptr<Process> process_;
};

}  // namespace lockstep::testing
