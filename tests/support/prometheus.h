// A real Prometheus server for tests: the Debian package's /usr/bin/prometheus (2.42), started
// as a child process on 127.0.0.1 and a free port, scraping one target's /metrics every
// second. Its config, storage and log live in a fresh temporary directory; the destructor
// stops the process by PID (SIGTERM, then SIGKILL) and removes the directory.
//
// Starting never aborts and never skips: when the binary is missing or cannot be started,
// status() says why (naming the package to install) and every wait returns false at once, so a
// test that asserts on WaitReady() fails with Explain() as its message.
//
// Timing: Prometheus 2.42 hands static targets to its scrape loops only on its discovery
// manager's 5-second update tick (no flag changes that), so the first sample arrives about
// 5 s after start; later ones follow every second. Start one per test suite, not per test.
//
// Thread safety: none; use an instance from one thread at a time.
#pragma once

#include <chrono>
#include <filesystem>
#include <memory>
#include <string>

#include "common/status.h"
#include "tests/support/process.h"

namespace lockstep::testing {

class TestPrometheus {
 public:
  // Starts Prometheus scraping http://`scrape_target`/metrics, e.g. "127.0.0.1:41234".
  // Returns before Prometheus is ready: call WaitReady().
  explicit TestPrometheus(std::string scrape_target);
  ~TestPrometheus();
  TestPrometheus(const TestPrometheus&) = delete;
  TestPrometheus& operator=(const TestPrometheus&) = delete;

  // Ok once the process was started; otherwise why it could not be.
  const Status& status() const { return status_; }
  // "http://127.0.0.1:PORT". May change during WaitReady() if another process took the port
  // first and Prometheus had to be restarted on a new one, so read it after WaitReady().
  std::string url() const;

  // Polls /-/ready until it answers 200. False on timeout, or when the process exited for a
  // reason other than a lost race for its port.
  bool WaitReady(std::chrono::milliseconds timeout);
  // Polls /api/v1/query until `query` returns at least one series (or a scalar), so that a
  // test does not race the scrape that brings its data. REQUIRES: WaitReady() returned true.
  bool WaitForSample(const std::string& query, std::chrono::milliseconds timeout);

  // Why the last wait failed: status(), the last poll's outcome and Prometheus's log (which
  // holds only warnings and errors). Meant for assertion messages.
  std::string Explain() const;

 private:
  // Picks a free port and starts the process on it; sets status_ on failure.
  void Start();

  std::string scrape_target_;
  std::filesystem::path dir_;  // empty if it could not be created
  int port_ = 0;
  Status status_;
  std::unique_ptr<Process> process_;
  std::string last_poll_;  // what the last poll saw, for Explain()
};

}  // namespace lockstep::testing
