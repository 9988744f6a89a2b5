#include "tests/integration/nginx.h"

#include <arpa/inet.h>
#include <dirent.h>
#include <gtest/gtest.h>
#include <httplib.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdlib.h>  // mkdtemp
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cctype>
#include <cerrno>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <sstream>
#include <system_error>
#include <thread>
#include <utility>

namespace lockstep::testing {
namespace {

namespace fs = std::filesystem;

constexpr char kBinary[] = "/usr/sbin/nginx";
// Answered by nginx itself, never proxied: the body is the mirror's own token, so that the
// readiness probe cannot mistake another server that took the port for this nginx.
constexpr char kReadyPath[] = "/.lockstep-mirror-ready";
// Losing the race for a free port is rare; two more tries make it negligible.
constexpr int kStartAttempts = 3;
constexpr std::chrono::seconds kReadyTimeout{10};
constexpr std::chrono::milliseconds kPollInterval{20};
constexpr std::chrono::seconds kStopGrace{10};

std::string Tail(const std::string& text, size_t max_chars) {
  return text.size() <= max_chars ? text : "..." + text.substr(text.size() - max_chars);
}

std::string Errno(const std::string& what) {
  const int err = errno;
  return what + ": " + std::strerror(err);
}

// A socket bound to a port of 127.0.0.1 that nobody else holds; the caller closes it (to hand
// the port to nginx) or keeps it (a port that refuses connections). Sets *port.
StatusOr<int> BindLoopbackPort(int* port) {
  const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return Internal(Errno("socket"));
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = 0;
  socklen_t len = sizeof(addr);
  if (::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0 ||
      ::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len) != 0) {
    Status st = Internal(Errno("cannot bind a loopback port"));
    ::close(fd);
    return st;
  }
  *port = static_cast<int>(ntohs(addr.sin_port));
  return fd;
}

// The PIDs of `parent`'s children, from /proc.
std::vector<pid_t> ChildrenOf(pid_t parent) {
  std::vector<pid_t> children;
  DIR* proc = ::opendir("/proc");
  if (proc == nullptr) return children;
  while (const dirent* entry = ::readdir(proc)) {
    const pid_t child = static_cast<pid_t>(std::atol(entry->d_name));
    if (child <= 0) continue;
    // "<pid> (<comm>) <state> <ppid> ...": comm may hold spaces and parentheses.
    const std::string stat = ReadFile("/proc/" + std::string(entry->d_name) + "/stat");
    const size_t paren = stat.rfind(')');
    if (paren == std::string::npos || paren + 3 >= stat.size()) continue;
    if (static_cast<pid_t>(std::atol(stat.c_str() + paren + 3)) == parent) {
      children.push_back(child);
    }
  }
  ::closedir(proc);
  return children;
}

// "http://HOST:PORT" with an optional trailing '/', and nothing nginx's configuration syntax
// would read differently.
bool ValidOrigin(const std::string& url) {
  const std::string scheme = "http://";
  if (url.rfind(scheme, 0) != 0 || url.size() == scheme.size()) return false;
  const std::string rest = url.substr(scheme.size());
  const size_t slash = rest.find('/');
  if (slash != std::string::npos && slash + 1 != rest.size()) return false;
  for (char c : rest) {
    if (!(std::isalnum(static_cast<unsigned char>(c)) || c == '.' || c == ':' || c == '-' ||
          c == '/' || c == '[' || c == ']')) {
      return false;
    }
  }
  return true;
}

}  // namespace

NginxMirror::NginxMirror(Mode mode, std::string origin_url, std::string log_path)
    : mode_(mode), origin_url_(std::move(origin_url)), log_path_(std::move(log_path)) {}

StatusOr<std::unique_ptr<NginxMirror>> NginxMirror::Caching(const std::string& origin_url,
                                                            const std::string& log_path) {
  std::string origin = origin_url;
  if (!ValidOrigin(origin)) {
    return InvalidArgument("NginxMirror: origin must be http://HOST:PORT, got \"" + origin + "\"");
  }
  if (origin.back() == '/') origin.pop_back();
  std::unique_ptr<NginxMirror> mirror(new NginxMirror(Mode::kCaching, origin, log_path));
  LOCKSTEP_RETURN_IF_ERROR(mirror->Launch());
  return mirror;
}

StatusOr<std::unique_ptr<NginxMirror>> NginxMirror::WrongBytes(const std::string& log_path) {
  std::unique_ptr<NginxMirror> mirror(new NginxMirror(Mode::kWrongBytes, "", log_path));
  LOCKSTEP_RETURN_IF_ERROR(mirror->Launch());
  return mirror;
}

StatusOr<std::unique_ptr<NginxMirror>> NginxMirror::Down() {
  std::unique_ptr<NginxMirror> mirror(new NginxMirror(Mode::kDown, "", ""));
  // Bound but never listening: the kernel refuses connections to it, and no other process can
  // bind it while the mirror lives.
  LOCKSTEP_ASSIGN_OR_RETURN(mirror->held_fd_, BindLoopbackPort(&mirror->port_));
  return mirror;
}

NginxMirror::~NginxMirror() {
  // A log of the caller's (in a Fleet's logs, say) is shown by its owner; the mirror's own goes
  // with its directory, so it is shown here.
  if (process_ && owns_log_ && ::testing::Test::HasFailure()) {
    std::cerr << "==== nginx mirror " << base_url() << " (" << dir_ << ") ====\n"
              << LogTail() << "\n";
  }
  Stop();
  if (held_fd_ >= 0) ::close(held_fd_);
  if (!dir_.empty()) {
    std::error_code ignored;
    fs::remove_all(dir_, ignored);
  }
}

std::string NginxMirror::base_url() const { return "http://127.0.0.1:" + std::to_string(port_); }

pid_t NginxMirror::pid() const { return process_ ? process_->pid() : 0; }

Status NginxMirror::Launch() {
  if (::access(kBinary, X_OK) != 0) {
    return FailedPrecondition(std::string(kBinary) +
                              " not found: the mirror tests need the real nginx, install the "
                              "Debian package (apt-get install nginx-light)");
  }
  // Under /tmp whatever TMPDIR says: every directory above it must be traversable by nginx's
  // workers, and its path must need no quoting in nginx.conf.
  std::string tmpl = "/tmp/lockstep-nginx-XXXXXX";
  if (::mkdtemp(tmpl.data()) == nullptr) return Internal(Errno("mkdtemp " + tmpl));
  dir_ = tmpl;
  // As root, nginx's workers run as `nobody`: they must reach the cache and temporary
  // directories nginx creates (and gives to that user) inside this one.
  if (::chmod(dir_.c_str(), 0755) != 0) return Internal(Errno("chmod " + dir_));
  ready_token_ = fs::path(dir_).filename().string();
  if (log_path_.empty()) {
    log_path_ = dir_ + "/nginx.log";
    owns_log_ = true;
  }
  Status last = Internal("nginx was not started");
  for (int attempt = 1; attempt <= kStartAttempts; ++attempt) {
    last = StartOnce();
    if (last.ok()) return last;
    if (last.code() != StatusCode::kUnavailable) return last;  // not a lost race for the port
  }
  return last;
}

Status NginxMirror::StartOnce() {
  LOCKSTEP_ASSIGN_OR_RETURN(const int fd, BindLoopbackPort(&port_));
  ::close(fd);  // nginx binds it next; another process could first (then we try again)
  const std::string conf = dir_ + "/nginx.conf";
  {
    std::ofstream out(conf, std::ios::trunc);
    out << Config();
    out.close();
    if (!out) return Internal("cannot write " + conf);
  }
  std::error_code ec;
  const size_t log_offset = fs::exists(log_path_, ec) ? fs::file_size(log_path_, ec) : 0;
  // -e: errors before the configuration is read go to stderr too, not to /var/log/nginx.
  auto process = Process::Start({kBinary, "-p", dir_ + "/", "-c", conf, "-e", "stderr"}, log_path_);
  if (!process.ok()) return process.status();
  process_ = std::move(*process);
  bool port_taken = false;
  Status ready = AwaitReady(log_offset, &port_taken);
  if (ready.ok()) return ready;
  Stop();
  // Unavailable: the caller may try again on another port.
  return port_taken ? Unavailable(ready.message()) : Internal(ready.message());
}

Status NginxMirror::AwaitReady(size_t log_offset, bool* port_taken) {
  *port_taken = false;
  const auto deadline = std::chrono::steady_clock::now() + kReadyTimeout;
  httplib::Client client("127.0.0.1", port_);
  client.set_connection_timeout(std::chrono::seconds(1));
  client.set_read_timeout(std::chrono::seconds(2));
  std::string last_poll = "not polled yet";
  for (;;) {
    if (!process_->Running()) {
      const std::string log = ReadFile(log_path_);
      const std::string this_start = log.size() > log_offset ? log.substr(log_offset) : "";
      *port_taken = this_start.find("Address already in use") != std::string::npos;
      return Internal("nginx on port " + std::to_string(port_) + " exited with status " +
                      std::to_string(process_->Wait(std::chrono::milliseconds(0))) +
                      " before it was ready:\n" + Tail(this_start, 4000));
    }
    httplib::Result res = client.Get(kReadyPath);
    if (res && res->status == 200 && res->body == ready_token_) return Status::Ok();
    last_poll = res ? "HTTP " + std::to_string(res->status) + ": " + Tail(res->body, 200)
                    : "no answer: " + httplib::to_string(res.error());
    if (std::chrono::steady_clock::now() >= deadline) {
      return Internal("nginx on port " + std::to_string(port_) + " was not ready within " +
                      std::to_string(kReadyTimeout.count()) + " s (last poll: " + last_poll +
                      "):\n" + LogTail());
    }
    std::this_thread::sleep_for(kPollInterval);
  }
}

std::string NginxMirror::Config() const {
  const std::string& d = dir_;
  std::ostringstream c;
  // Foreground, one worker, every file nginx writes inside the mirror's directory. No `user`
  // directive: as root the workers run as nginx's default, nobody; otherwise as the test's user.
  c << "daemon off;\n"
    << "master_process on;\n"
    << "worker_processes 1;\n"
    << "pid " << d << "/nginx.pid;\n"
    << "lock_file " << d << "/nginx.lock;\n"
    << "error_log stderr warn;\n"
    << "events {\n"
    << "  worker_connections 512;\n"
    << "}\n"
    << "http {\n"
    << "  default_type application/octet-stream;\n"
    << "  log_format mirror '$uri $status $upstream_cache_status';\n"
    << "  access_log " << d << "/access.log mirror;\n"
    << "  client_body_temp_path " << d << "/client_body_temp;\n"
    << "  proxy_temp_path " << d << "/proxy_temp;\n"
    << "  fastcgi_temp_path " << d << "/fastcgi_temp;\n"
    << "  uwsgi_temp_path " << d << "/uwsgi_temp;\n"
    << "  scgi_temp_path " << d << "/scgi_temp;\n";
  if (mode_ == Mode::kCaching) {
    c << "  proxy_cache_path " << d
      << "/cache levels=1:2 keys_zone=artifacts:10m max_size=1g inactive=1h "
         "use_temp_path=off;\n";
  }
  c << "  server {\n"
    << "    listen 127.0.0.1:" << port_ << ";\n"
    << "    location = " << kReadyPath << " {\n"
    << "      return 200 \"" << ready_token_ << "\";\n"
    << "    }\n"
    << "    location / {\n";
  if (mode_ == Mode::kCaching) {
    c << "      proxy_pass " << origin_url_ << ";\n"
      << "      proxy_http_version 1.1;\n"
      << "      proxy_set_header Connection \"\";\n"
      << "      proxy_cache artifacts;\n"
      << "      proxy_cache_key $uri;\n"
      << "      proxy_cache_valid 200 1h;\n"
      << "      proxy_cache_lock on;\n"
      << "      proxy_cache_lock_timeout 30s;\n"
      << "      proxy_cache_lock_age 30s;\n"
      << "      proxy_ignore_headers Cache-Control Expires Set-Cookie X-Accel-Expires;\n"
      << "      add_header X-Cache-Status $upstream_cache_status always;\n";
  } else {
    c << "      return 200 \"" << kWrongBody << "\";\n";
  }
  c << "    }\n"
    << "  }\n"
    << "}\n";
  return c.str();
}

std::vector<NginxMirror::Request> NginxMirror::Requests(const std::string& uri) const {
  std::vector<Request> out;
  if (dir_.empty()) return out;
  std::istringstream in(ReadFile(dir_ + "/access.log"));
  std::string line;
  while (std::getline(in, line)) {
    std::istringstream fields(line);
    Request r;
    fields >> r.uri >> r.status >> r.cache_status;
    if (r.uri == uri) out.push_back(r);
  }
  return out;
}

std::string NginxMirror::LogTail(size_t max_chars) const {
  if (log_path_.empty()) return "";
  const std::string log = ReadFile(log_path_);
  return log.empty() ? "(nginx log is empty)" : Tail(log, max_chars);
}

void NginxMirror::Stop() {
  if (!process_) return;
  // SIGTERM: the master stops its workers, waits for them and exits.
  process_->Signal(SIGTERM);
  if (process_->Wait(kStopGrace) == -1) {
    // A master that does not stop would leave its workers holding the port: kill them first.
    for (pid_t child : ChildrenOf(process_->pid())) ::kill(child, SIGKILL);
    process_->Kill();
  }
  process_.reset();
}

}  // namespace lockstep::testing
