// A real PostgreSQL server for tests: Debian's PostgreSQL 15 (/usr/lib/postgresql/15/bin,
// package postgresql-15), initialised by the test in a fresh directory under /tmp and started
// as a child process tracked by its PID. It listens only on a unix socket in that directory
// (listen_addresses is empty: never TCP), so servers of concurrent test binaries never clash
// even though every one uses port 5432 in its socket's name.
//
// initdb and postgres refuse to run as root. Tests run as root in CI, so when the test's
// effective uid is 0 the directory is given to `nobody` (group nogroup) and both run through
// `setpriv --reuid=<nobody> --regid=<nogroup> --clear-groups --`; otherwise they run as the
// test's own user. Authentication is `trust` for the one role, "lockstep" (a superuser).
//
// Durability is traded for speed (fsync and full_page_writes off, initdb --no-sync), which
// loses data only if the machine itself crashes; synchronous_commit stays on, so a commit
// the server acknowledged survives Kill() (the server process dying) as in production.
//
// Thread safety: CreateDatabase and DropDatabase may be called from several threads at once
// (each uses its own connection); Kill, Restart and Stop from one thread, while no other call
// is under way.
#pragma once

#include <sys/types.h>

#include <atomic>
#include <memory>
#include <string>
#include <vector>

#include "common/status.h"
#include "tests/support/process.h"

namespace lockstep::testing {

class PostgresServer {
 public:
  // Creates the directory, runs initdb in it and starts the server, returning once it accepts
  // connections (at most ~30 s). FailedPrecondition naming the package to install if the
  // binaries are missing; otherwise an error naming the step that failed, with the end of its
  // output or of postgres.log. Never returns a server that is not running.
  static StatusOr<std::unique_ptr<PostgresServer>> Start();

  // Stops the server (Stop(), or Kill() if that fails) and removes its directory.
  ~PostgresServer();
  PostgresServer(const PostgresServer&) = delete;
  PostgresServer& operator=(const PostgresServer&) = delete;

  // "host=<dir> port=5432 user=lockstep dbname=<dbname>": a libpq connection string.
  std::string ConnInfo(const std::string& dbname) const;

  // Creates an empty database with a fresh name ("lockstep_test_<n>", unique for this server)
  // and returns its ConnInfo; if `name` is not null, sets it to the database's name (for
  // DropDatabase).
  StatusOr<std::string> CreateDatabase(std::string* name = nullptr);
  // DROP DATABASE ... WITH (FORCE): connections still open to it are terminated first.
  Status DropDatabase(const std::string& name);

  // PostgreSQL dies: SIGKILL to the postmaster and to every server process it had started
  // (backends, checkpointer, ...), all at once, as when the machine's OOM killer or a crash
  // takes the server. Returns once they are all gone (reaped, or zombies of another parent),
  // so that Restart() finds no process still attached to the old shared memory. Clients see
  // their connections drop; a commit acknowledged before stays committed. No-op if not running.
  void Kill();
  // Starts the server again on the same directory and socket (after Kill() it first runs
  // crash recovery) and waits until it accepts connections. Stops it first if it is running.
  Status Restart();
  // Fast shutdown (SIGINT: open connections are closed, a checkpoint is written), waiting for
  // the server to exit; kills it if it does not within 30 s. Ok if it was not running.
  Status Stop();

  // The directory holding the socket (.s.PGSQL.5432), the cluster (data/) and postgres.log.
  const std::string& dir() const { return dir_; }
  // The postmaster's PID; 0 when it is not running (after Kill() or Stop()).
  int pid() const;
  // The last `max_chars` characters of postgres.log, for failure messages.
  std::string LogTail(size_t max_chars = 4000) const;

 private:
  explicit PostgresServer(std::string dir);

  // `argv` run as the server's user: wrapped in setpriv when the test runs as root.
  std::vector<std::string> AsServerUser(std::vector<std::string> argv) const;
  // Starts the postmaster and waits until it accepts connections.
  Status Launch();
  std::string LogPath() const;

  std::string dir_;
  bool as_nobody_ = false;  // the test runs as root: the server runs as uid_/gid_
  uid_t uid_ = 0;
  gid_t gid_ = 0;
  std::string setpriv_;               // the setpriv binary, when as_nobody_
  std::unique_ptr<Process> process_;  // the postmaster; null when not running
  std::atomic<int> next_database_{0};
};

}  // namespace lockstep::testing
