#include "tests/support/postgres_server.h"

#include <dirent.h>
#include <grp.h>
#include <libpq-fe.h>
#include <pwd.h>
#include <signal.h>
#include <stdlib.h>  // mkdtemp
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <functional>
#include <map>
#include <system_error>
#include <thread>
#include <utility>

namespace lockstep::testing {
namespace {

constexpr char kBinDir[] = "/usr/lib/postgresql/15/bin";
constexpr char kPort[] = "5432";
constexpr char kUser[] = "lockstep";
// The socket's path (dir + "/.s.PGSQL.5432") must fit in sockaddr_un's 108 bytes.
constexpr size_t kMaxSocketPath = 100;
constexpr std::chrono::seconds kReadyTimeout{30};
constexpr std::chrono::seconds kStopTimeout{30};
constexpr std::chrono::seconds kInitdbTimeout{120};
constexpr std::chrono::milliseconds kPollInterval{5};

std::string Binary(const char* name) { return std::string(kBinDir) + "/" + name; }

// Messages and locale independent of the test's environment.
const std::map<std::string, std::string>& ServerEnv() {
  static const std::map<std::string, std::string> kEnv = {{"LC_ALL", "C"}};
  return kEnv;
}

std::string Tail(const std::string& text, size_t max_chars) {
  return text.size() <= max_chars ? text : "..." + text.substr(text.size() - max_chars);
}

std::string TrimEnd(std::string text) {
  while (!text.empty() && (text.back() == '\n' || text.back() == ' ')) text.pop_back();
  return text;
}

// `what` and the current errno's message.
std::string Errno(const std::string& what) {
  const int err = errno;
  return what + ": " + std::strerror(err);
}

// A process's state letter from /proc/<pid>/stat ('R', 'S', 'T', 'Z', ...), or 0 if there is no
// such process. `ppid`, if not null, is set to its parent's PID.
char ProcessState(pid_t pid, pid_t* ppid = nullptr) {
  const std::string text = ReadFile("/proc/" + std::to_string(pid) + "/stat");
  // "<pid> (<comm>) <state> <ppid> ...": comm may hold spaces and parentheses, so parse from
  // the last ')'.
  const size_t paren = text.rfind(')');
  if (paren == std::string::npos || paren + 2 >= text.size()) return 0;
  const char state = text[paren + 2];
  if (ppid != nullptr) *ppid = static_cast<pid_t>(std::atol(text.c_str() + paren + 3));
  return state;
}

// Gone for good: no such process, or a zombie (which holds no memory, no socket, no lock).
bool Gone(pid_t pid) {
  const char state = ProcessState(pid);
  return state == 0 || state == 'Z' || state == 'X' || state == 'x';
}

// The PIDs of `parent`'s children, from /proc.
std::vector<pid_t> ChildrenOf(pid_t parent) {
  std::vector<pid_t> children;
  DIR* proc = ::opendir("/proc");
  if (proc == nullptr) return children;
  while (const dirent* entry = ::readdir(proc)) {
    char* end = nullptr;
    const long pid = std::strtol(entry->d_name, &end, 10);
    if (pid <= 0 || end == entry->d_name || *end != '\0') continue;
    pid_t ppid = 0;
    if (ProcessState(static_cast<pid_t>(pid), &ppid) != 0 && ppid == parent) {
      children.push_back(static_cast<pid_t>(pid));
    }
  }
  ::closedir(proc);
  return children;
}

// Polls `done` every few milliseconds until it holds or `timeout` passes; true if it held.
bool WaitUntil(std::chrono::milliseconds timeout, const std::function<bool()>& done) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  for (;;) {
    if (done()) return true;
    if (std::chrono::steady_clock::now() >= deadline) return false;
    std::this_thread::sleep_for(kPollInterval);
  }
}

std::string QuoteIdentifier(const std::string& name) {
  std::string quoted = "\"";
  for (char c : name) {
    if (c == '"') quoted += '"';
    quoted += c;
  }
  return quoted + "\"";
}

// Runs one statement outside any transaction block (CREATE and DROP DATABASE need that) on a
// connection of its own.
Status Execute(const std::string& conninfo, const std::string& sql) {
  std::unique_ptr<PGconn, decltype(&PQfinish)> conn(
      PQconnectdb((conninfo + " connect_timeout=10").c_str()), &PQfinish);
  if (conn == nullptr) return Internal("libpq could not allocate a connection");
  if (PQstatus(conn.get()) != CONNECTION_OK) {
    return Unavailable("cannot connect (" + conninfo + "): " + TrimEnd(PQerrorMessage(conn.get())));
  }
  std::unique_ptr<PGresult, decltype(&PQclear)> result(PQexec(conn.get(), sql.c_str()), &PQclear);
  if (PQresultStatus(result.get()) != PGRES_COMMAND_OK) {
    std::string why = TrimEnd(PQresultErrorMessage(result.get()));
    if (why.empty()) why = TrimEnd(PQerrorMessage(conn.get()));
    return Internal(sql + ": " + why);
  }
  return Status::Ok();
}

size_t FileSize(const std::string& path) {
  std::error_code ec;
  const auto size = std::filesystem::file_size(path, ec);
  return ec ? 0 : static_cast<size_t>(size);
}

}  // namespace

PostgresServer::PostgresServer(std::string dir) : dir_(std::move(dir)) {}

StatusOr<std::unique_ptr<PostgresServer>> PostgresServer::Start() {
  for (const char* name : {"initdb", "postgres"}) {
    const std::string path = Binary(name);
    if (::access(path.c_str(), X_OK) != 0) {
      return FailedPrecondition(path +
                                " not found: these tests need a real PostgreSQL 15 server, "
                                "install the Debian package (apt-get install postgresql-15)");
    }
  }
  char tmpl[] = "/tmp/lockstep-pg-XXXXXX";
  if (::mkdtemp(tmpl) == nullptr) return Internal(Errno("mkdtemp /tmp/lockstep-pg-XXXXXX"));
  // From here on the destructor removes the directory, whichever step fails.
  std::unique_ptr<PostgresServer> server(new PostgresServer(tmpl));
  const std::string socket_path = server->dir_ + "/.s.PGSQL." + kPort;
  if (socket_path.size() >= kMaxSocketPath) {
    return Internal("the socket path " + socket_path + " is too long for a unix socket");
  }

  if (::geteuid() == 0) {
    // initdb and postgres refuse to run as root.
    const passwd* nobody = ::getpwnam("nobody");
    if (nobody == nullptr) {
      return FailedPrecondition(
          "the tests run as root, which PostgreSQL refuses, and there is no user \"nobody\" "
          "to run it as");
    }
    server->uid_ = nobody->pw_uid;
    server->gid_ = nobody->pw_gid;
    if (const group* nogroup = ::getgrnam("nogroup")) server->gid_ = nogroup->gr_gid;
    for (const char* path : {"/usr/bin/setpriv", "/bin/setpriv"}) {
      if (::access(path, X_OK) == 0) {
        server->setpriv_ = path;
        break;
      }
    }
    if (server->setpriv_.empty()) {
      return FailedPrecondition(
          "the tests run as root and PostgreSQL must run as nobody, but setpriv is missing "
          "(apt-get install util-linux)");
    }
    if (::chown(server->dir_.c_str(), server->uid_, server->gid_) != 0) {
      return Internal(Errno("chown " + server->dir_ + " to nobody"));
    }
    server->as_nobody_ = true;
  }

  const std::string data = server->dir_ + "/data";
  const CommandResult init =
      RunCommand(server->AsServerUser({Binary("initdb"), "-D", data, "-A", "trust", "-U", kUser,
                                       "--no-sync", "-E", "UTF8", "--locale=C"}),
                 kInitdbTimeout, ServerEnv());
  if (init.exit_code != 0) {
    const std::string how =
        init.exit_code == -1
            ? "did not finish within " + std::to_string(kInitdbTimeout.count()) + " s"
            : "failed with exit status " + std::to_string(init.exit_code);
    return Internal("initdb of " + data + (server->as_nobody_ ? " (as nobody) " : " ") + how +
                    ":\n" + Tail(init.out + init.err, 4000));
  }
  LOCKSTEP_RETURN_IF_ERROR(server->Launch());
  return StatusOr<std::unique_ptr<PostgresServer>>(std::move(server));
}

PostgresServer::~PostgresServer() {
  (void)Stop();
  std::error_code ignored;  // a leftover directory under /tmp must not fail a test
  std::filesystem::remove_all(dir_, ignored);
}

std::string PostgresServer::ConnInfo(const std::string& dbname) const {
  return "host=" + dir_ + " port=" + kPort + " user=" + kUser + " dbname=" + dbname;
}

std::vector<std::string> PostgresServer::AsServerUser(std::vector<std::string> argv) const {
  if (!as_nobody_) return argv;
  std::vector<std::string> wrapped = {setpriv_, "--reuid=" + std::to_string(uid_),
                                      "--regid=" + std::to_string(gid_), "--clear-groups", "--"};
  wrapped.insert(wrapped.end(), argv.begin(), argv.end());
  return wrapped;
}

std::string PostgresServer::LogPath() const { return dir_ + "/postgres.log"; }

std::string PostgresServer::LogTail(size_t max_chars) const {
  const std::string log = ReadFile(LogPath());
  return log.empty() ? "(postgres.log is empty)" : Tail(log, max_chars);
}

int PostgresServer::pid() const { return process_ ? static_cast<int>(process_->pid()) : 0; }

Status PostgresServer::Launch() {
  const auto deadline = std::chrono::steady_clock::now() + kReadyTimeout;
  const std::string ping_conninfo = ConnInfo("postgres") + " connect_timeout=2";
  for (;;) {
    const size_t log_offset = FileSize(LogPath());
    auto started =
        Process::Start(AsServerUser({Binary("postgres"), "-D", dir_ + "/data", "-p", kPort, "-c",
                                     "listen_addresses=", "-c", "unix_socket_directories=" + dir_,
                                     "-c", "fsync=off", "-c", "full_page_writes=off", "-c",
                                     "synchronous_commit=on", "-c", "max_connections=200"}),
                       LogPath(), ServerEnv());
    if (!started.ok()) return started.status().WithContext("starting postgres in " + dir_);
    process_ = std::move(started).value();

    std::string last_ping = "no answer yet";
    for (;;) {
      const PGPing ping = PQping(ping_conninfo.c_str());
      if (ping == PQPING_OK) return Status::Ok();
      if (ping == PQPING_NO_ATTEMPT) {
        Kill();
        return Internal("libpq refused the connection string \"" + ping_conninfo + "\"");
      }
      last_ping = ping == PQPING_REJECT ? "the server answered but refused connections"
                                        : "no answer on the socket";
      if (!process_->Running()) {
        const int code = process_->Wait(std::chrono::milliseconds(0));
        process_.reset();
        const std::string log = ReadFile(LogPath());
        const std::string this_start = log.size() > log_offset ? log.substr(log_offset) : "";
        // A process of the server killed just before may still be on its way out, holding the
        // old shared memory: start again, as a supervisor would.
        const bool leftover =
            this_start.find("pre-existing shared memory block") != std::string::npos ||
            this_start.find("lock file \"postmaster.pid\" already exists") != std::string::npos;
        if (leftover && std::chrono::steady_clock::now() < deadline) {
          std::this_thread::sleep_for(kPollInterval);
          break;
        }
        return Internal("postgres in " + dir_ + " exited with status " + std::to_string(code) +
                        " before accepting connections; postgres.log ends with:\n" + LogTail());
      }
      if (std::chrono::steady_clock::now() >= deadline) {
        const std::string log = LogTail();
        Kill();
        return DeadlineExceeded("postgres in " + dir_ + " did not accept connections within " +
                                std::to_string(kReadyTimeout.count()) + " s (" + last_ping +
                                "); postgres.log ends with:\n" + log);
      }
      std::this_thread::sleep_for(kPollInterval);
    }
  }
}

void PostgresServer::Kill() {
  if (!process_) return;
  if (process_->Running()) {
    const pid_t postmaster = process_->pid();
    // Stopped first, so that it starts no new child between the listing and the kill; its
    // children are killed while it still holds them, so none of their PIDs can be reused
    // before the signal reaches it.
    process_->Signal(SIGSTOP);
    WaitUntil(std::chrono::seconds(5), [postmaster] {
      const char state = ProcessState(postmaster);
      return state == 'T' || state == 't' || state == 'Z' || state == 0;
    });
    const std::vector<pid_t> children = ChildrenOf(postmaster);
    for (pid_t child : children) ::kill(child, SIGKILL);
    process_->Kill();  // SIGKILL and reap
    WaitUntil(std::chrono::seconds(10), [&children] {
      for (pid_t child : children) {
        if (!Gone(child)) return false;
      }
      return true;
    });
  }
  process_.reset();
}

Status PostgresServer::Restart() {
  if (process_) {
    Status stopped = Stop();
    if (!stopped.ok()) return stopped.WithContext("restarting postgres");
  }
  return Launch();
}

Status PostgresServer::Stop() {
  if (!process_) return Status::Ok();
  process_->Signal(SIGINT);  // fast shutdown; SIGTERM would wait for every client to leave
  const int code = process_->Wait(kStopTimeout);
  if (code == -1) {
    const std::string log = LogTail();
    Kill();
    return DeadlineExceeded("postgres in " + dir_ + " did not stop within " +
                            std::to_string(kStopTimeout.count()) +
                            " s of SIGINT and was killed; postgres.log ends with:\n" + log);
  }
  process_.reset();
  if (code != 0) {
    return Internal("postgres in " + dir_ + " exited with status " + std::to_string(code) +
                    " when stopped; postgres.log ends with:\n" + LogTail());
  }
  return Status::Ok();
}

StatusOr<std::string> PostgresServer::CreateDatabase(std::string* name) {
  const std::string db = "lockstep_test_" + std::to_string(++next_database_);
  Status created = Execute(ConnInfo("postgres"), "CREATE DATABASE " + QuoteIdentifier(db));
  if (!created.ok()) {
    return created.WithContext("creating a database on the PostgreSQL server in " + dir_);
  }
  if (name != nullptr) *name = db;
  return ConnInfo(db);
}

Status PostgresServer::DropDatabase(const std::string& name) {
  Status dropped =
      Execute(ConnInfo("postgres"), "DROP DATABASE " + QuoteIdentifier(name) + " WITH (FORCE)");
  if (!dropped.ok()) {
    return dropped.WithContext("dropping database " + name + " on the PostgreSQL server in " +
                               dir_);
  }
  return Status::Ok();
}

}  // namespace lockstep::testing
