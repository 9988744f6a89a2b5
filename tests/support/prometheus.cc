#include "tests/support/prometheus.h"

#include <arpa/inet.h>
#include <httplib.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <nlohmann/json.hpp>
#include <system_error>
#include <thread>
#include <utility>
#include <vector>

namespace lockstep::testing {
namespace {

constexpr char kBinary[] = "/usr/bin/prometheus";
// Losing the race for a port (see FreePort) is rare; two more tries make it negligible.
constexpr int kStartAttempts = 3;
constexpr std::chrono::milliseconds kPollInterval{50};

// A port nobody listens on right now. Another process may take it before Prometheus binds
// it; WaitReady() notices ("address already in use" in the log) and starts again.
StatusOr<int> FreePort() {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  if (fd < 0) return Internal(std::string("socket: ") + std::strerror(errno));
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = 0;
  socklen_t len = sizeof(addr);
  if (::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0 ||
      ::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len) != 0) {
    const int err = errno;
    ::close(fd);
    return Internal(std::string("cannot find a free port: ") + std::strerror(err));
  }
  ::close(fd);
  return static_cast<int>(ntohs(addr.sin_port));
}

// Prometheus refuses a scrape_timeout longer than the interval, hence both at 1s.
std::string Config(const std::string& target) {
  return "global:\n"
         "  scrape_interval: 1s\n"
         "  scrape_timeout: 1s\n"
         "scrape_configs:\n"
         "  - job_name: exporter\n"
         "    metrics_path: /metrics\n"
         "    static_configs:\n"
         "      - targets: [\"" +
         target + "\"]\n";
}

// The end of a log: the reason for an exit is in its last lines.
std::string Tail(const std::string& text, size_t max_chars = 4000) {
  return text.size() <= max_chars ? text : "..." + text.substr(text.size() - max_chars);
}

// True when a query API answer holds something to compare: a vector or matrix lists series,
// a scalar is a [time, value] pair; either way a non-empty array.
bool HasSample(const std::string& body) {
  try {
    const nlohmann::json answer = nlohmann::json::parse(body);
    const nlohmann::json& result = answer.at("data").at("result");
    return answer.at("status") == "success" && result.is_array() && !result.empty();
  } catch (const nlohmann::json::exception&) {
    return false;  // not ready yet, or not Prometheus: the caller keeps polling
  }
}

}  // namespace

TestPrometheus::TestPrometheus(std::string scrape_target)
    : scrape_target_(std::move(scrape_target)) {
  if (::access(kBinary, X_OK) != 0) {
    status_ = FailedPrecondition(std::string(kBinary) +
                                 " not found: these tests need the real Prometheus server, "
                                 "install the Debian package (apt-get install prometheus)");
    return;
  }
  std::string tmpl = (std::filesystem::temp_directory_path() / "lockstep-prometheus-XXXXXX");
  if (::mkdtemp(tmpl.data()) == nullptr) {
    status_ = Internal("mkdtemp " + tmpl + ": " + std::strerror(errno));
    return;
  }
  dir_ = tmpl;
  std::ofstream config(dir_ / "prometheus.yml");
  config << Config(scrape_target_);
  config.close();
  if (!config) {
    status_ = Internal("cannot write " + (dir_ / "prometheus.yml").string());
    return;
  }
  Start();
}

TestPrometheus::~TestPrometheus() {
  // Stopped before the directory goes: Prometheus writes its WAL there until it exits.
  if (process_) process_->Stop(std::chrono::seconds(5));
  process_.reset();
  if (!dir_.empty()) {
    std::error_code ignored;
    std::filesystem::remove_all(dir_, ignored);
  }
}

void TestPrometheus::Start() {
  StatusOr<int> port = FreePort();
  if (!port.ok()) {
    status_ = port.status();
    return;
  }
  port_ = *port;
  // A fresh log per start, so that WaitReady() judges this start's failure, not the last one.
  const std::filesystem::path log = dir_ / "prometheus.log";
  std::error_code ignored;
  std::filesystem::remove(log, ignored);
  const std::vector<std::string> argv = {
      kBinary,
      "--config.file=" + (dir_ / "prometheus.yml").string(),
      "--storage.tsdb.path=" + (dir_ / "data").string(),
      "--web.listen-address=127.0.0.1:" + std::to_string(port_),
      // Startup chatter at info level would bury the warning that explains a failure.
      "--log.level=warn",
  };
  auto process = Process::Start(argv, log.string());
  if (!process.ok()) {
    status_ = process.status();
    return;
  }
  process_ = std::move(*process);
}

std::string TestPrometheus::url() const { return "http://127.0.0.1:" + std::to_string(port_); }

bool TestPrometheus::WaitReady(std::chrono::milliseconds timeout) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  int starts = 1;
  while (status_.ok() && process_) {
    if (!process_->Running()) {
      const std::string log = ReadFile(process_->log_path());
      if (log.find("address already in use") == std::string::npos || starts == kStartAttempts) {
        last_poll_ = "prometheus exited with status " + std::to_string(process_->Wait({})) +
                     " before it was ready";
        return false;
      }
      ++starts;
      process_.reset();
      Start();
      continue;
    }
    httplib::Client client("127.0.0.1", port_);
    client.set_connection_timeout(std::chrono::seconds(1));
    client.set_read_timeout(std::chrono::seconds(1));
    httplib::Result res = client.Get("/-/ready");
    if (res && res->status == 200) return true;
    last_poll_ =
        res ? "GET /-/ready answered HTTP " + std::to_string(res->status) + ": " + res->body
            : "GET /-/ready failed: " + httplib::to_string(res.error());
    if (std::chrono::steady_clock::now() >= deadline) return false;
    std::this_thread::sleep_for(kPollInterval);
  }
  last_poll_ = "prometheus was not started";
  return false;
}

bool TestPrometheus::WaitForSample(const std::string& query, std::chrono::milliseconds timeout) {
  if (!status_.ok() || !process_) {
    last_poll_ = "prometheus was not started";
    return false;
  }
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  httplib::Client client("127.0.0.1", port_);
  client.set_connection_timeout(std::chrono::seconds(1));
  client.set_read_timeout(std::chrono::seconds(2));
  for (;;) {
    httplib::Result res =
        client.Get("/api/v1/query", httplib::Params{{"query", query}}, httplib::Headers{});
    if (!res) {
      last_poll_ = "GET /api/v1/query failed: " + httplib::to_string(res.error());
    } else {
      if (res->status == 200 && HasSample(res->body)) return true;
      last_poll_ =
          "query \"" + query + "\" answered HTTP " + std::to_string(res->status) + ": " + res->body;
    }
    if (!process_->Running()) {
      last_poll_ += "; prometheus has exited";
      return false;
    }
    if (std::chrono::steady_clock::now() >= deadline) return false;
    std::this_thread::sleep_for(kPollInterval);
  }
}

std::string TestPrometheus::Explain() const {
  if (!status_.ok()) return status_.ToString();
  std::string text = "prometheus at " + url() + " scraping " + scrape_target_ + ": " + last_poll_;
  if (process_) {
    const std::string log = ReadFile(process_->log_path());
    text += log.empty() ? "\n(prometheus log is empty)" : "\nprometheus log:\n" + Tail(log);
  }
  return text;
}

}  // namespace lockstep::testing
