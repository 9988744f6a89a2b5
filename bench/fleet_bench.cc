// lockstep-fleet-bench: measures a real lockstepd against N simulated hosts.
//
// Starts build/bin/lockstepd as a child process (temp data dir, generated 3-region pipeline,
// zero bake), serves tiny artifacts without hooks from an in-process HTTP server, and hosts N
// agents using the agent's own classes: one Executor, one Connection (one gRPC stream) and one
// root directory per simulated host. Up to --agents-per-process hosts live in this process; the
// rest in copies of this program started with --worker (one process cannot hold 10,000 hosts'
// sockets under a 20,000-descriptor limit). Then, through ControlService with the
// admin token, it times full rollouts and on-call rollbacks and reads lockstepd's CPU and RSS
// from /proc. Prints a table; --json FILE writes the figures. Every wait is bounded and every
// child process is stopped by PID.

#include <fcntl.h>
#include <grpcpp/grpcpp.h>
#include <httplib.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <iostream>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <sstream>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "agents/artifact/fetch.h"
#include "agents/connection.h"
#include "agents/executor.h"
#include "agents/releases/release_dir.h"
#include "common/clock.h"
#include "common/grpc_runtime.h"
#include "common/http_backlog.h"
#include "common/log.h"
#include "common/sha256.h"
#include "common/untrusted.h"
#include "orchestrator/webhook/github.h"
#include "proto/lockstep.grpc.pb.h"

namespace {

namespace fs = std::filesystem;
namespace v1 = lockstep::v1;
using nlohmann::json;
using Clock = std::chrono::steady_clock;

const std::vector<std::string> kRegions = {"us-east-1", "eu-west-1", "ap-southeast-2"};
std::chrono::seconds kWait(120);  // --timeout

[[noreturn]] void Die(const std::string& msg) { throw std::runtime_error(msg); }

std::string ReadFile(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

double Ms(Clock::duration d) { return std::chrono::duration<double, std::milli>(d).count(); }

// A child process started with posix_spawn, stdout+stderr to a log file, stopped by PID.
class Child {
 public:
  Child(const std::vector<std::string>& argv, const std::string& log) {
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_addopen(&fa, 1, log.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0644);
    posix_spawn_file_actions_adddup2(&fa, 1, 2);
    std::vector<char*> args;
    for (const auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
    args.push_back(nullptr);
    int rc = posix_spawn(&pid_, args[0], &fa, nullptr, args.data(), environ);
    posix_spawn_file_actions_destroy(&fa);
    if (rc != 0) Die("cannot start " + argv[0] + ": " + std::strerror(rc));
  }
  ~Child() { Stop(); }
  pid_t pid() const { return pid_; }
  bool Running() {
    if (pid_ <= 0) return false;
    int st = 0;
    pid_t r = waitpid(pid_, &st, WNOHANG);
    if (r == pid_) {
      pid_ = -1;
      return false;
    }
    return true;
  }
  // SIGTERM, then SIGKILL after 10 s.
  void Stop() {
    if (pid_ <= 0) return;
    kill(pid_, SIGTERM);
    auto deadline = Clock::now() + std::chrono::seconds(10);
    int st = 0;
    while (Clock::now() < deadline) {
      if (waitpid(pid_, &st, WNOHANG) == pid_) {
        pid_ = -1;
        return;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    kill(pid_, SIGKILL);
    waitpid(pid_, &st, 0);
    pid_ = -1;
  }

 private:
  pid_t pid_ = -1;
};

// Runs a command to completion (bounded by its own nature: the CLI has a 15 s deadline).
std::string RunCapture(const std::vector<std::string>& argv, const std::string& log) {
  std::string out_file = log + ".out";
  {
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_addopen(&fa, 1, out_file.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    posix_spawn_file_actions_addopen(&fa, 2, log.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0644);
    std::vector<char*> args;
    for (const auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
    args.push_back(nullptr);
    pid_t pid = -1;
    int rc = posix_spawn(&pid, args[0], &fa, nullptr, args.data(), environ);
    posix_spawn_file_actions_destroy(&fa);
    if (rc != 0) Die("cannot start " + argv[0] + ": " + std::strerror(rc));
    // A pidfd becomes readable the moment the process exits: its exit is seen at once, not
    // at the next look of a polling loop (the CLI's exit time is a measured figure).
    int st = 0;
    const int pidfd = static_cast<int>(::syscall(SYS_pidfd_open, pid, 0));
    if (pidfd < 0) Die(std::string("pidfd_open: ") + std::strerror(errno));
    pollfd pfd{pidfd, POLLIN, 0};
    const int ready = ::poll(&pfd, 1, 60'000);
    ::close(pidfd);
    if (ready != 1) {
      kill(pid, SIGKILL);
      waitpid(pid, &st, 0);
      Die(argv[0] + " timed out");
    }
    waitpid(pid, &st, 0);
    if (!WIFEXITED(st) || WEXITSTATUS(st) != 0) {
      Die(argv[0] + " failed; see " + log + ":\n" + ReadFile(log));
    }
  }
  return ReadFile(out_file);
}

struct ProcStats {
  double cpu_s = 0;  // utime + stime
  long rss_kib = 0;
};

ProcStats ReadProc(pid_t pid) {
  ProcStats s;
  std::string stat = ReadFile("/proc/" + std::to_string(pid) + "/stat");
  auto close = stat.rfind(')');
  if (close != std::string::npos) {
    std::istringstream in(stat.substr(close + 2));
    std::vector<std::string> f;
    std::string x;
    while (in >> x) f.push_back(x);
    // fields after ")" start at field 3 (state); utime is field 14, stime 15.
    if (f.size() > 13) {
      double ticks = static_cast<double>(sysconf(_SC_CLK_TCK));
      s.cpu_s = (std::stod(f[11]) + std::stod(f[12])) / ticks;
    }
  }
  std::istringstream status(ReadFile("/proc/" + std::to_string(pid) + "/status"));
  std::string line;
  while (std::getline(status, line)) {
    if (line.rfind("VmRSS:", 0) == 0) s.rss_kib = std::atol(line.c_str() + 6);
  }
  return s;
}

struct Percentiles {
  double p50 = 0, p99 = 0, max = 0, min = 0, mean = 0;
};

Percentiles Summarise(std::vector<double> v) {
  Percentiles p;
  if (v.empty()) return p;
  std::sort(v.begin(), v.end());
  auto at = [&](double q) {
    // nearest-rank percentile
    size_t rank = static_cast<size_t>(std::ceil(q * static_cast<double>(v.size())));
    if (rank < 1) rank = 1;
    return v[std::min(rank, v.size()) - 1];
  };
  p.p50 = at(0.50);
  p.p99 = at(0.99);
  p.max = v.back();
  p.min = v.front();
  double sum = 0;
  for (double x : v) sum += x;
  p.mean = sum / static_cast<double>(v.size());
  return p;
}

class Control {
 public:
  Control(const std::string& server, std::string token) : token_(std::move(token)) {
    stub_ = v1::ControlService::NewStub(
        grpc::CreateChannel(server, grpc::InsecureChannelCredentials()));
  }
  template <typename Req, typename Resp, typename Fn>
  void Call(Fn fn, const Req& req, Resp* resp, const char* what) {
    grpc::ClientContext c;
    c.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(15));
    c.AddMetadata("authorization", "Bearer " + token_);
    grpc::Status st = ((*stub_).*fn)(&c, req, resp);
    if (!st.ok()) Die(std::string(what) + ": " + st.error_message());
  }
  v1::Release Create(const std::string& pipeline, const std::string& version,
                     const std::string& url, const std::string& sha) {
    v1::CreateReleaseRequest req;
    req.set_pipeline(pipeline);
    req.set_version(version);
    req.set_artifact_url(url);
    req.set_sha256(sha);
    req.set_author("fleet-bench");
    v1::Release r;
    Call(&v1::ControlService::Stub::CreateRelease, req, &r, "CreateRelease");
    return r;
  }
  v1::Release Rollback(const std::string& pipeline, const std::string& to) {
    v1::RollbackRequest req;
    req.set_pipeline(pipeline);
    req.set_to_version(to);
    v1::Release r;
    Call(&v1::ControlService::Stub::Rollback, req, &r, "Rollback");
    return r;
  }
  // An on-call rollback holds the pipeline; the next rollout needs it resumed.
  void Resume(const std::string& pipeline) {
    v1::PipelineRef req;
    req.set_pipeline(pipeline);
    v1::Empty resp;
    Call(&v1::ControlService::Stub::Resume, req, &resp, "Resume");
  }
  v1::Release Get(int64_t id) {
    v1::GetReleaseRequest req;
    req.set_id(id);
    v1::Release r;
    Call(&v1::ControlService::Stub::GetRelease, req, &r, "GetRelease");
    return r;
  }
  size_t Connected() {
    v1::ListAgentsRequest req;
    v1::ListAgentsResponse resp;
    Call(&v1::ControlService::Stub::ListAgents, req, &resp, "ListAgents");
    size_t n = 0;
    for (const auto& a : resp.agents()) n += a.connected() ? 1 : 0;
    return n;
  }
  // The release's summary (no host list) from ListReleases: cheap enough to poll often
  // without the polling itself showing up in lockstepd's CPU figures.
  v1::Release Summary(const std::string& pipeline, int64_t id) {
    v1::ListReleasesRequest req;
    req.set_pipeline(pipeline);
    req.set_limit(3);
    v1::ListReleasesResponse resp;
    Call(&v1::ControlService::Stub::ListReleases, req, &resp, "ListReleases");
    for (const auto& r : resp.releases()) {
      if (r.id() == id) return r;
    }
    return Get(id);
  }
  // The newest release of `pipeline`, hosts included.
  v1::Release Latest(const std::string& pipeline) {
    v1::ListReleasesRequest req;
    req.set_pipeline(pipeline);
    req.set_limit(1);
    v1::ListReleasesResponse resp;
    Call(&v1::ControlService::Stub::ListReleases, req, &resp, "ListReleases");
    if (resp.releases().empty()) Die("no release of " + pipeline);
    return Get(resp.releases(0).id());
  }
  // Polls until the release reaches a final state; returns it, hosts included. Dies unless
  // it succeeded.
  v1::Release WaitSucceeded(int64_t id, std::chrono::milliseconds every) {
    auto deadline = Clock::now() + kWait;
    for (;;) {
      v1::Release r = Summary("bench", id);
      const std::string s = r.state();  // a copy: `r` is replaced below
      if (s == "succeeded") return Get(id);
      if (r.final() || s == "halted") {
        Die("release " + std::to_string(id) + " ended " + s + ": " + r.reason());
      }
      if (Clock::now() > deadline) {
        r = Get(id);
        std::map<std::string, int> states;
        for (const auto& h : r.hosts()) {
          states["wave" + std::to_string(h.wave() + 1) + ":" + h.state()]++;
        }
        std::string hist;
        for (const auto& [k, n] : states) hist += " " + k + "=" + std::to_string(n);
        Die("release " + std::to_string(id) + " still " + s + " (wave " +
            std::to_string(r.current_wave() + 1) + ") after 120 s; hosts:" + hist);
      }
      std::this_thread::sleep_for(every);
    }
  }

 private:
  std::string token_;
  std::unique_ptr<v1::ControlService::Stub> stub_;
};

struct Host {
  std::string name, region, root;
  std::unique_ptr<lockstep::agent::Executor> executor;
  std::unique_ptr<lockstep::agent::Connection> conn;
  std::atomic<lockstep::agent::Connection*> conn_ptr{nullptr};
  std::thread runner;
  ~Host() {
    if (runner.joinable()) {
      conn->Stop();
      runner.join();
    }
    if (executor) executor->Stop();
    conn_ptr.store(nullptr);
  }
};

// Time (unix ns) the host's `current` symlink was created, i.e. its switch; 0 if none.
int64_t SwitchNs(const std::string& root) {
  struct stat sb {};
  if (::lstat((root + "/current").c_str(), &sb) != 0) return 0;
  return static_cast<int64_t>(sb.st_mtim.tv_sec) * 1000000000LL + sb.st_mtim.tv_nsec;
}

void RaiseFdLimit() {
  rlimit rl{};
  getrlimit(RLIMIT_NOFILE, &rl);
  rl.rlim_cur = rl.rlim_max;
  setrlimit(RLIMIT_NOFILE, &rl);
}

std::string HostName(int i) {
  char name[64];
  std::snprintf(name, sizeof(name), "host-%05d", i);
  return name;
}

const std::string& RegionOf(int i) { return kRegions[static_cast<size_t>(i) % kRegions.size()]; }

// Simulated hosts [first, first + count): each its own root under agents_dir, Executor and
// Connection (one gRPC stream), enrolled with its region's token.
std::vector<std::unique_ptr<Host>> StartHosts(const std::string& server,
                                              const std::map<std::string, std::string>& enroll,
                                              const std::string& agents_dir, int first, int count) {
  std::vector<std::unique_ptr<Host>> hosts;
  for (int i = first; i < first + count; ++i) {
    auto h = std::make_unique<Host>();
    h->region = RegionOf(i);
    h->name = HostName(i);
    h->root = agents_dir + "/" + h->name;
    fs::create_directories(h->root);
    Host* hp = h.get();
    h->executor = std::make_unique<lockstep::agent::Executor>(
        lockstep::agent::ExecutorOptions{h->root, h->name, h->region, 5},
        [hp](const v1::TaskProgress& p) {
          if (auto* c = hp->conn_ptr.load()) c->SendProgress(p);
        },
        [hp](const v1::TaskResult& r) {
          // When lockstepd handed this task to the stream (echoed by the agent), kept before
          // the result leaves so the parent finds it once the release is over.
          if (r.task_sent_at_us() > 0) {
            std::ofstream(hp->root + "/bench-sent", std::ios::app)
                << r.task_id() << ' ' << r.task_sent_at_us() << '\n';
          }
          if (auto* c = hp->conn_ptr.load()) c->SendResult(r);
        },
        [hp](const v1::GateVerdict& v) {
          if (auto* c = hp->conn_ptr.load()) c->SendVerdict(v);
        });
    h->conn = std::make_unique<lockstep::agent::Connection>(
        lockstep::agent::ConnectionOptions{
            server, h->name, h->region, "bench", enroll.at(h->region), {}, ""},
        h->executor.get());
    h->conn_ptr.store(h->conn.get());
    if (auto st = h->executor->Start(); !st.ok()) Die("executor: " + st.message());
    h->runner = std::thread([hp] { (void)hp->conn->Run(); });
    hosts.push_back(std::move(h));
    // Thousands of hosts that all connect in the same instant (over one loopback address)
    // make a connection storm no real fleet makes: lockstepd's caps on streams awaiting their
    // hello refuse most, and their retries exhaust the ephemeral ports. Starts are paced.
    if (count > 500) std::this_thread::sleep_for(std::chrono::milliseconds(3));
  }
  return hosts;
}

// The simulated agents' own log lines; LOCKSTEP_BENCH_LOG_LEVEL=info shows every step.
void InitAgentSide() {
  const char* level = std::getenv("LOCKSTEP_BENCH_LOG_LEVEL");
  lockstep::InitLogging("fleet-bench", level ? level : "error");
  lockstep::agent::CurlGlobalInit();
}

struct Window {
  double whole_ms = 0;                // first switch → last switch over all hosts
  std::map<int, double> per_wave_ms;  // same, within each wave
};

// First to last of a time per host of `r` (0: none), per wave and over all hosts, in ms;
// `unit_ns` is how many nanoseconds one unit of the time is.
Window Spread(const v1::Release& r, const std::map<std::string, std::string>& roots,
              const std::function<int64_t(const v1::HostProgress&, const std::string&)>& time_of,
              double unit_ns) {
  Window w;
  int64_t lo = INT64_MAX, hi = 0;
  std::map<int, std::pair<int64_t, int64_t>> waves;
  for (const auto& h : r.hosts()) {
    auto it = roots.find(h.agent());
    if (it == roots.end()) continue;
    const int64_t t = time_of(h, it->second);
    if (t == 0) continue;
    lo = std::min(lo, t);
    hi = std::max(hi, t);
    auto [wit, inserted] = waves.try_emplace(h.wave(), t, t);
    if (!inserted) {
      wit->second.first = std::min(wit->second.first, t);
      wit->second.second = std::max(wit->second.second, t);
    }
  }
  const double per_ms = 1e6 / unit_ns;
  if (hi > 0) w.whole_ms = static_cast<double>(hi - lo) / per_ms;
  for (const auto& [wave, span] : waves) {
    w.per_wave_ms[wave] = static_cast<double>(span.second - span.first) / per_ms;
  }
  return w;
}

// The mixed-version window: when each host's `current` was switched.
Window MixedWindow(const v1::Release& r, const std::map<std::string, std::string>& roots) {
  return Spread(
      r, roots, [](const v1::HostProgress&, const std::string& root) { return SwitchNs(root); },
      1.0);
}

// lockstepd's own fan-out: when each host's switching task of `r` (its ACTIVATE, or the DEPLOY
// of a rollback) left lockstepd. The times are the tasks' sent_at_us as the hosts echoed them
// (see StartHosts), so the benchmark's own queues play no part in it.
Window FanOut(const v1::Release& r, const std::map<std::string, std::string>& roots) {
  const std::string release = "r" + std::to_string(r.id()) + "/";
  auto sent_at = [&release](const v1::HostProgress& h, const std::string& root) {
    const std::string prefix = release + h.agent() + "/";
    std::istringstream lines(ReadFile(root + "/bench-sent"));
    std::string id;
    int64_t sent = 0, t = 0;
    while (lines >> id >> sent) {
      if (id.rfind(prefix, 0) != 0) continue;
      const std::string step = id.substr(prefix.size());
      if (step.rfind("activate", 0) == 0 || step.rfind("deploy", 0) == 0) t = std::max(t, sent);
    }
    return t;
  };
  return Spread(r, roots, sent_at, 1e3);
}

// --hooks: what a service's hooks do, in shell, with the shell's own builtins where it has
// them. The service is a background process whose pid and version live in the host's root;
// deploy/check asks it whether it is there and runs this release. A hook runs four processes
// per host: its three shells and the service.
constexpr const char* kStopHook = R"SH(#!/bin/sh
# Stops the service the previous release started.
pidfile="$LOCKSTEP_ROOT/service.pid"
read -r pid < "$pidfile" 2>/dev/null || { echo "no service running"; exit 0; }
kill "$pid" 2>/dev/null
: > "$pidfile"
echo "stopped $LOCKSTEP_PREVIOUS_VERSION (pid $pid)"
)SH";
constexpr const char* kStartHook = R"SH(#!/bin/sh
# Starts this release's service in the background, its output away from the hook's, and
# records its pid and version.
sleep 3600 </dev/null >/dev/null 2>&1 &
echo $! > "$LOCKSTEP_ROOT/service.pid"
echo "$LOCKSTEP_VERSION" > "$LOCKSTEP_ROOT/service.version"
echo "started $LOCKSTEP_VERSION (pid $!)"
)SH";
constexpr const char* kCheckHook = R"SH(#!/bin/sh
# Healthy when the service answers (signal 0) and runs this release.
read -r pid < "$LOCKSTEP_ROOT/service.pid" || { echo "no service pid"; exit 1; }
kill -0 "$pid" 2>/dev/null || { echo "service pid $pid does not answer"; exit 1; }
read -r running < "$LOCKSTEP_ROOT/service.version"
[ "$running" = "$LOCKSTEP_VERSION" ] || { echo "service runs $running, not $LOCKSTEP_VERSION"; exit 1; }
echo "$LOCKSTEP_VERSION answers (pid $pid)"
)SH";

// Stops the services the hosts' hooks started (by the pids they recorded).
void StopServices(const std::map<std::string, std::string>& roots) {
  for (const auto& [name, root] : roots) {
    const std::string pid = std::string(lockstep::TrimSpace(ReadFile(root + "/service.pid")));
    const long n = pid.empty() ? 0 : std::strtol(pid.c_str(), nullptr, 10);
    if (n > 1) ::kill(static_cast<pid_t>(n), SIGTERM);
  }
}

struct Options {
  int hosts = 100;
  int rollbacks = 20;
  int rollouts = 1;    // measured rollouts (each to a new version)
  int cli_runs = 10;   // `lockstep release create --wait` and `lockstep rollback` processes
  bool hooks = false;  // real deploy/stop|start|check shell hooks on every host
  // > 0: every simulated host in a worker process of this niceness. On two cores the fleet
  // and lockstepd compete for the same CPU; on real hosts they never do. Niced agents leave
  // lockstepd the CPU whenever it wants it, so its own figures (the fan-out) are its own.
  int agent_nice = 0;
  std::string json_file;
  std::string bin_dir = LOCKSTEP_BIN_DIR;
  // Where the simulated hosts' root directories go. Each real host syncs its own disk after
  // an unpack (syncfs); N simulated hosts sharing one disk would serialise N syncs of the
  // same filesystem, which measures the benchmark machine's disk, not Lockstep. A tmpfs
  // (the default when /dev/shm is writable) gives each host a sync as cheap as its own
  // idle disk would. lockstepd's store stays on the real disk.
  std::string agent_root;
  bool idle_only = false;  // connect, measure idle lockstepd, stop (for 10,000 agents)
  // lockstepd's --store: empty for SQLite in its data directory, or a PostgreSQL conninfo
  // (an empty database the caller made; scripts/bench-postgres.sh starts one).
  std::string store;
  bool keep = false;
  double idle_seconds = 0;        // 0: 20 s with --idle-only, else 5 s
  int agent_lost_s = 300;         // the pipeline's agent_lost; heartbeats follow from it
  int agents_per_process = 2500;  // ~3.6 descriptors and 3 threads per simulated host
  // --worker: host agents [first, first + count) for a parent benchmark and wait for SIGTERM.
  bool worker = false;
  std::string server, enroll_file;
  int first = 0, count = 0;
};

Options ParseArgs(int argc, char** argv) {
  Options o;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    auto next = [&]() -> std::string {
      if (i + 1 >= argc) Die(a + " needs a value");
      return argv[++i];
    };
    if (a == "--hosts") {
      o.hosts = std::atoi(next().c_str());
    } else if (a == "--rollbacks") {
      o.rollbacks = std::atoi(next().c_str());
    } else if (a == "--rollouts") {
      o.rollouts = std::atoi(next().c_str());
    } else if (a == "--cli-runs") {
      o.cli_runs = std::atoi(next().c_str());
    } else if (a == "--agent-nice") {
      o.agent_nice = std::atoi(next().c_str());
    } else if (a == "--hooks") {
      o.hooks = true;
    } else if (a == "--json") {
      o.json_file = next();
    } else if (a == "--bin-dir") {
      o.bin_dir = next();
    } else if (a == "--timeout") {
      kWait = std::chrono::seconds(std::atoi(next().c_str()));
    } else if (a == "--agent-root") {
      o.agent_root = next();
    } else if (a == "--store") {
      o.store = next();
    } else if (a == "--idle-only") {
      o.idle_only = true;
    } else if (a == "--keep") {
      o.keep = true;
    } else if (a == "--agent-lost") {
      o.agent_lost_s = std::atoi(next().c_str());
    } else if (a == "--idle-seconds") {
      o.idle_seconds = std::atof(next().c_str());
    } else if (a == "--agents-per-process") {
      o.agents_per_process = std::atoi(next().c_str());
    } else if (a == "--worker") {
      o.worker = true;
    } else if (a == "--server") {
      o.server = next();
    } else if (a == "--enroll-file") {
      o.enroll_file = next();
    } else if (a == "--first") {
      o.first = std::atoi(next().c_str());
    } else if (a == "--count") {
      o.count = std::atoi(next().c_str());
    } else if (a == "--help" || a == "-h") {
      std::cout
          << "usage: lockstep-fleet-bench [--hosts N=100] [--rollbacks R=20] [--rollouts N=1] "
             "[--cli-runs N=10] [--hooks] [--agent-nice N] "
             "[--json FILE] [--bin-dir DIR] [--timeout S=120] "
             "[--agent-root DIR=/dev/shm] [--agents-per-process P=2500] "
             "[--idle-only] [--idle-seconds S] [--agent-lost S=300] [--keep] "
             "[--store CONNINFO]\n"
             "       (internal) lockstep-fleet-bench --worker --server ADDR "
             "--enroll-file F --agent-root DIR --first I --count C\n";
      std::exit(0);
    } else {
      Die("unknown flag " + a);
    }
  }
  if (o.worker) {
    if (o.server.empty() || o.enroll_file.empty() || o.agent_root.empty() || o.count < 1) {
      Die("--worker needs --server, --enroll-file, --agent-root and --count");
    }
    return o;
  }
  if (o.hosts < 3) Die("--hosts must be at least 3");
  if (o.agents_per_process < 1) Die("--agents-per-process must be at least 1");
  if (o.agent_lost_s < 3) Die("--agent-lost must be at least 3 (seconds)");
  if (o.rollbacks < 1) Die("--rollbacks must be at least 1");
  if (o.rollouts < 1) Die("--rollouts must be at least 1");
  if (o.agent_nice < 0 || o.agent_nice > 19) Die("--agent-nice must be between 0 and 19");
  if (o.cli_runs < 1) Die("--cli-runs must be at least 1");
  if (o.agent_root.empty()) o.agent_root = ::access("/dev/shm", W_OK) == 0 ? "/dev/shm" : "/tmp";
  return o;
}

// --worker: hosts a slice of the fleet for a parent benchmark until SIGTERM or SIGINT. The
// parent removes the host roots; the streams close with the process.
int RunWorker(const Options& opt) {
  RaiseFdLimit();
  if (opt.agent_nice > 0 && ::setpriority(PRIO_PROCESS, 0, opt.agent_nice) != 0) {
    Die(std::string("setpriority: ") + std::strerror(errno));
  }
  sigset_t stop;
  sigemptyset(&stop);
  sigaddset(&stop, SIGTERM);
  sigaddset(&stop, SIGINT);
  // Blocked before any thread starts, so every thread inherits the mask and sigwait sees it.
  pthread_sigmask(SIG_BLOCK, &stop, nullptr);
  json enroll = json::parse(ReadFile(opt.enroll_file));
  std::map<std::string, std::string> tokens;
  for (const auto& region : kRegions) tokens[region] = enroll.at(region).get<std::string>();
  InitAgentSide();
  auto hosts = StartHosts(opt.server, tokens, opt.agent_root, opt.first, opt.count);
  int sig = 0;
  sigwait(&stop, &sig);
  std::fflush(nullptr);
  std::_Exit(0);
}

// The trigger points at the benchmark's artifact server: a push of commit C is served as
// /commits/C.tar.gz.
std::string PipelineYaml(int artifact_port, const std::string& secret_file, int agent_lost_s,
                         bool check_hook) {
  return R"(pipeline: bench
regions: [us-east-1, eu-west-1, ap-southeast-2]
waves:
  - name: canary
    select: {per_region: 1}
    bake: 0s
  - name: half
    select: {per_region: "50%"}
    bake: 0s
  - name: all
    select: {per_region: "100%"}
    bake: 0s
concurrency: {per_region: 10000}
health:
  check_hook: )" +
         std::string(check_hook ? "true" : "false") +
         R"(
timeouts: {hook: 300s, fetch: 300s, agent_lost: )" +
         std::to_string(agent_lost_s) + R"(s}
rollback: {automatic: false, tolerate_failed_hosts: 0}
trigger: {github: {repository: bench/app, branch: main, artifact: "http://127.0.0.1:)" +
         std::to_string(artifact_port) + R"(/commits/{sha}.tar.gz", secret_file: ")" + secret_file +
         R"("}}
)";
}

int64_t WallMs() { return lockstep::SystemClock::Get()->Now(); }

int RunBench(const Options& opt) {
  auto t_setup = Clock::now();
  // Many hosts: ~3 threads and a few fds each.
  RaiseFdLimit();

  char tmpl[] = "/tmp/lockstep-bench-XXXXXX";
  if (!mkdtemp(tmpl)) Die("mkdtemp failed");
  const std::string dir = tmpl;
  fs::create_directories(dir + "/pipelines");
  std::string agents_tmpl = opt.agent_root + "/lockstep-bench-agents-XXXXXX";
  if (!mkdtemp(agents_tmpl.data())) Die("mkdtemp under " + opt.agent_root + " failed");
  const std::string agents_dir = agents_tmpl.c_str();
  fs::create_directories(dir + "/art");

  // Artifacts: a VERSION file and deploy hooks. Without --hooks only a deploy/check that never
  // runs (the pipeline has check_hook off), so no hook runs at all (an artifact needs a start
  // or a check to be taken); with --hooks a service's deploy/stop, start and check. Built once
  // with tar.
  std::map<std::string, std::string> artifact_bytes, artifact_sha;
  const auto executable = fs::perms::owner_all | fs::perms::group_read | fs::perms::group_exec |
                          fs::perms::others_read | fs::perms::others_exec;
  for (const std::string version : {"v1", "v2", "v3"}) {
    std::string src = dir + "/art/" + version;
    fs::create_directories(src + "/deploy");
    std::ofstream(src + "/VERSION") << version << "\n";
    const std::map<std::string, const char*> hooks =
        opt.hooks ? std::map<std::string, const char*>{{"stop", kStopHook},
                                                       {"start", kStartHook},
                                                       {"check", kCheckHook}}
                  : std::map<std::string, const char*>{{"check", "#!/bin/sh\nexit 0\n"}};
    for (const auto& [name, text] : hooks) {
      std::ofstream(src + "/deploy/" + name) << text;
      fs::permissions(src + "/deploy/" + name, executable);
    }
    std::string out = dir + "/art/app-" + version + ".tar.gz";
    RunCapture({"/bin/tar", "-czf", out, "-C", src, "VERSION", "deploy"}, dir + "/tar.log");
    artifact_bytes[version] = ReadFile(out);
    artifact_sha[version] = lockstep::Sha256Hex(artifact_bytes[version]);
  }
  httplib::Server http;
  http.new_task_queue = [] { return new httplib::ThreadPool(256); };
  http.Get(R"(/artifacts/app-(v\d+)\.tar\.gz)",
           [&](const httplib::Request& req, httplib::Response& res) {
             auto it = artifact_bytes.find(req.matches[1].str());
             if (it == artifact_bytes.end()) {
               res.status = 404;
               return;
             }
             res.set_content(it->second, "application/gzip");
           });
  // What the push webhook's trigger fetches: v3, for any commit.
  http.Get(R"(/commits/([0-9a-f]{40})\.tar\.gz)",
           [&](const httplib::Request&, httplib::Response& res) {
             res.set_content(artifact_bytes["v3"], "application/gzip");
           });
  http.set_keep_alive_max_count(1);
  lockstep::ListenBacklog backlog(http);  // every host of a wave fetches at once
  int http_port = http.bind_to_any_port("127.0.0.1");
  if (http_port <= 0) Die("cannot bind the artifact server");
  backlog.Widen(4096);
  std::thread http_thread([&] { http.listen_after_bind(); });
  struct HttpGuard {
    httplib::Server& s;
    std::thread& t;
    ~HttpGuard() {
      s.stop();
      if (t.joinable()) t.join();
    }
  } http_guard{http, http_thread};
  const std::string secret = "bench-webhook-secret";
  std::ofstream(dir + "/github-secret") << secret << "\n";
  std::ofstream(dir + "/pipelines/bench.yaml")
      << PipelineYaml(http_port, dir + "/github-secret", opt.agent_lost_s, opt.hooks);
  auto url = [&](const std::string& v) {
    return "http://127.0.0.1:" + std::to_string(http_port) + "/artifacts/app-" + v + ".tar.gz";
  };

  // The real lockstepd.
  std::string port_file = dir + "/ports.json";
  std::vector<std::string> lockstepd_argv{opt.bin_dir + "/lockstepd",
                                          "--data-dir",
                                          dir + "/data",
                                          "--pipelines",
                                          dir + "/pipelines",
                                          "--grpc-listen",
                                          "127.0.0.1:0",
                                          "--http-listen",
                                          "127.0.0.1:0",
                                          "--port-file",
                                          port_file,
                                          "--log-level",
                                          std::getenv("LOCKSTEP_BENCH_LOCKSTEPD_LOG_LEVEL")
                                              ? std::getenv("LOCKSTEP_BENCH_LOCKSTEPD_LOG_LEVEL")
                                              : "warn"};
  if (!opt.store.empty()) {
    lockstepd_argv.push_back("--store");
    lockstepd_argv.push_back(opt.store);
  }
  auto lockstepd = std::make_unique<Child>(lockstepd_argv, dir + "/lockstepd.log");
  {
    auto deadline = Clock::now() + std::chrono::seconds(20);
    while (!fs::exists(port_file)) {
      if (!lockstepd->Running() || Clock::now() > deadline) {
        Die("lockstepd did not start:\n" + ReadFile(dir + "/lockstepd.log"));
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(50));  // the file is complete
  }
  json ports = json::parse(ReadFile(port_file));
  const std::string server = "127.0.0.1:" + std::to_string(ports.at("grpc").get<int>());
  const std::string admin(lockstep::TrimSpace(ReadFile(dir + "/data/admin-token")));
  if (admin.empty()) Die("no admin token in " + dir + "/data/admin-token");
  const pid_t dpid = lockstepd->pid();

  // Enrollment tokens, one per region, through the real CLI.
  std::map<std::string, std::string> enroll;
  for (const auto& region : kRegions) {
    std::string out = RunCapture({opt.bin_dir + "/lockstep", "--server", server, "--token", admin,
                                  "--output", "json", "tokens", "create", "--role", "agent",
                                  "--region", region, "--name", "bench-enroll-" + region},
                                 dir + "/cli.log");
    enroll[region] = json::parse(out).at("token").get<std::string>();
  }

  // The first --agents-per-process hosts in this process, the rest in worker processes.
  InitAgentSide();
  std::map<std::string, std::string> roots;
  for (int i = 0; i < opt.hosts; ++i) roots[HostName(i)] = agents_dir + "/" + HostName(i);
  const std::string enroll_file = dir + "/enroll.json";
  {
    std::ofstream f(enroll_file);
    f << json(enroll).dump() << "\n";
  }
  ProcStats before_connect = ReadProc(dpid);
  auto t_connect = Clock::now();
  // With --agent-nice every host lives in a worker process, all of them niced.
  const int own = opt.agent_nice > 0 ? 0 : std::min(opt.hosts, opt.agents_per_process);
  std::vector<std::unique_ptr<Child>> workers;
  for (int first = own; first < opt.hosts; first += opt.agents_per_process) {
    const int count = std::min(opt.agents_per_process, opt.hosts - first);
    workers.push_back(std::make_unique<Child>(
        std::vector<std::string>{"/proc/self/exe", "--worker", "--server", server, "--enroll-file",
                                 enroll_file, "--agent-root", agents_dir, "--first",
                                 std::to_string(first), "--count", std::to_string(count),
                                 "--agent-nice", std::to_string(opt.agent_nice)},
        dir + "/worker-" + std::to_string(workers.size() + 1) + ".log"));
  }
  std::vector<std::unique_ptr<Host>> hosts = StartHosts(server, enroll, agents_dir, 0, own);
  const size_t workers_started = workers.size() + 1;
  Control ctl(server, admin);
  {
    auto deadline = Clock::now() + kWait;
    size_t n = 0;
    while ((n = ctl.Connected()) < static_cast<size_t>(opt.hosts)) {
      for (size_t w = 0; w < workers.size(); ++w) {
        if (!workers[w]->Running()) {
          Die("agent worker " + std::to_string(w + 1) + " exited:\n" +
              ReadFile(dir + "/worker-" + std::to_string(w + 1) + ".log"));
        }
      }
      if (Clock::now() > deadline) {
        Die("only " + std::to_string(n) + " of " + std::to_string(opt.hosts) +
            " agents connected after " + std::to_string(kWait.count()) + " s");
      }
      // Each look lists every agent: at ten thousand that is real work for lockstepd.
      std::this_thread::sleep_for(std::chrono::milliseconds(opt.hosts > 1000 ? 1000 : 50));
    }
  }
  double connect_ms = Ms(Clock::now() - t_connect);
  ProcStats after_connect = ReadProc(dpid);

  // Stop: agents first, then lockstepd (the HTTP server stops with its guard).
  auto stop_everything = [&] {
    auto t_stop = Clock::now();
    for (auto& h : hosts) h->conn->Stop();
    for (auto& h : hosts) {
      if (h->runner.joinable()) h->runner.join();
      h->executor->Stop();
    }
    double ms = Ms(Clock::now() - t_stop);
    for (auto& h : hosts) h->conn_ptr.store(nullptr);
    hosts.clear();
    workers.clear();  // SIGTERM to each, waited for
    StopServices(roots);
    lockstepd->Stop();
    return ms;
  };

  // Idle: all hosts connected, nothing to do. Long enough for several heartbeats of each.
  const double idle_seconds = opt.idle_seconds > 0 ? opt.idle_seconds : opt.idle_only ? 20.0 : 5.0;
  ProcStats idle0 = ReadProc(dpid);
  std::this_thread::sleep_for(std::chrono::duration<double>(idle_seconds));
  ProcStats idle1 = ReadProc(dpid);
  double idle_cpu_pct = (idle1.cpu_s - idle0.cpu_s) / idle_seconds * 100.0;
  if (opt.idle_only) {
    std::printf(
        "\nlockstep-fleet-bench --idle-only: %d agents (in %zu processes) connected to one "
        "lockstepd\n\n",
        opt.hosts, workers_started);
    std::printf("connect all agents (until ListAgents shows N)  %10.1f ms\n", connect_ms);
    std::printf("lockstepd RSS with N connected                 %10.1f MiB   goal < 1024 MiB\n",
                static_cast<double>(idle1.rss_kib) / 1024.0);
    std::printf("lockstepd CPU idle, N connected (%.0f s)         %10.1f %%     goal < 5 %%\n",
                idle_seconds, idle_cpu_pct);
    if (!opt.json_file.empty()) {
      std::ofstream(opt.json_file) << json{{"hosts", opt.hosts},
                                           {"connect_ms", connect_ms},
                                           {"idle_rss_kib", idle1.rss_kib},
                                           {"idle_cpu_percent", idle_cpu_pct},
                                           {"idle_seconds", idle_seconds},
                                           {"agent_lost_s", opt.agent_lost_s},
                                           {"agent_processes", workers_started}}
                                          .dump(2)
                                   << "\n";
    }
    std::fflush(stdout);
    double stop_ms = stop_everything();
    std::printf("stop all agents                                %10.1f ms\n", stop_ms);
    std::error_code ec;
    fs::remove_all(dir, ec);
    fs::remove_all(agents_dir, ec);
    return 0;
  }

  const int64_t host_steps = static_cast<int64_t>(opt.hosts) * 2;  // prepare + activate

  // The services the hosts' hooks start are stopped whatever happens below.
  struct ServicesGuard {
    const std::map<std::string, std::string>& roots;
    ~ServicesGuard() { StopServices(roots); }
  } services_guard{roots};

  // (a1) first install of v1 everywhere (fetch + unpack on every host).
  ProcStats c0 = ReadProc(dpid);
  auto t0 = Clock::now();
  v1::Release r1 = ctl.Create("bench", "v1", url("v1"), artifact_sha["v1"]);
  ctl.WaitSucceeded(r1.id(), std::chrono::milliseconds(10));
  double install_ms = Ms(Clock::now() - t0);
  ProcStats c1 = ReadProc(dpid);

  // (a2) the measured rollouts, each to a new version (fetched and unpacked on every host),
  // three waves, zero bake: from CreateRelease until its summary says succeeded (polled every
  // 10 ms), and by lockstepd's own clock (created -> finished).
  std::vector<double> rollout_ms_v, rollout_server_ms_v;
  std::string previous = "v1", current = "v1";
  v1::Release done2;
  for (int i = 0; i < opt.rollouts; ++i) {
    const std::string version = i == 0 ? "v2" : "v2." + std::to_string(i);
    auto tr = Clock::now();
    v1::Release r2 = ctl.Create("bench", version, url("v2"), artifact_sha["v2"]);
    done2 = ctl.WaitSucceeded(r2.id(), std::chrono::milliseconds(10));
    rollout_ms_v.push_back(Ms(Clock::now() - tr));
    rollout_server_ms_v.push_back(
        static_cast<double>(done2.finished_at_ms() - done2.created_at_ms()));
    previous = std::exchange(current, version);
  }
  ProcStats c2 = ReadProc(dpid);
  const double rollout_ms = rollout_ms_v.back();
  Window rollout_window = MixedWindow(done2, roots);
  Window rollout_fanout = FanOut(done2, roots);
  double rollout_cpu_s = (c2.cpu_s - c1.cpu_s) / opt.rollouts;
  double install_cpu_s = c1.cpu_s - c0.cpu_s;

  // (a3) the same as an engineer types it: `lockstep release create --wait` as a process, from
  // the release's end (lockstepd's finished_at) until the process exited.
  std::vector<double> cli_wait_exit_ms, cli_create_ms;
  for (int i = 0; i < opt.cli_runs; ++i) {
    const std::string version = "v2.w" + std::to_string(i + 1);
    auto tc = Clock::now();
    RunCapture({opt.bin_dir + "/lockstep", "--server", server, "--token", admin, "release",
                "create", "--pipeline", "bench", "--version", version, "--artifact", url("v2"),
                "--sha256", artifact_sha["v2"], "--wait"},
               dir + "/cli-create.log");
    const int64_t exited_at = WallMs();
    cli_create_ms.push_back(Ms(Clock::now() - tc));
    v1::Release made = ctl.Latest("bench");
    if (made.version() != version || made.state() != "succeeded") {
      Die("lockstep release create --wait exited 0 with release " + std::to_string(made.id()) +
          " (" + made.version() + ") " + made.state());
    }
    cli_wait_exit_ms.push_back(static_cast<double>(exited_at - made.finished_at_ms()));
    previous = std::exchange(current, version);
  }

  // (b) on-call rollbacks to the previous release, each followed by a roll forward
  // (Rollback --to the current one).
  std::vector<double> rollback_ms, forward_ms, rollback_cpu_us_per_step;
  std::vector<double> rollback_window_ms, rollback_fanout_ms;
  // Where a rollback's time goes, from lockstepd's own timestamps (wall ms, same machine):
  // command -> the pass that sent every DEPLOY; -> the last host's result; -> the pass that
  // concluded; -> the client saw it.
  std::vector<double> rb_dispatch_ms, rb_agents_ms, rb_conclude_ms, rb_observe_ms;
  for (int i = 0; i < opt.rollbacks; ++i) {
    ProcStats b0 = ReadProc(dpid);
    auto tb = Clock::now();
    const int64_t command_at = WallMs();
    v1::Release rb = ctl.Rollback("bench", "");
    v1::Release rbd = ctl.WaitSucceeded(rb.id(), std::chrono::milliseconds(5));
    const int64_t seen_at = WallMs();
    rollback_ms.push_back(Ms(Clock::now() - tb));
    int64_t last_result = rbd.started_at_ms();
    for (const auto& hp : rbd.hosts()) last_result = std::max(last_result, hp.finished_at_ms());
    rb_dispatch_ms.push_back(static_cast<double>(rbd.started_at_ms() - command_at));
    rb_agents_ms.push_back(static_cast<double>(last_result - rbd.started_at_ms()));
    rb_conclude_ms.push_back(static_cast<double>(rbd.finished_at_ms() - last_result));
    rb_observe_ms.push_back(static_cast<double>(seen_at - rbd.finished_at_ms()));
    ProcStats b1 = ReadProc(dpid);
    rollback_cpu_us_per_step.push_back((b1.cpu_s - b0.cpu_s) * 1e6 /
                                       static_cast<double>(host_steps));
    rollback_window_ms.push_back(MixedWindow(rbd, roots).whole_ms);
    rollback_fanout_ms.push_back(FanOut(rbd, roots).whole_ms);
    if (rbd.version() != previous) Die("rollback went to " + rbd.version() + ", not " + previous);
    auto tf = Clock::now();
    v1::Release fw = ctl.Rollback("bench", current);
    v1::Release fwd = ctl.WaitSucceeded(fw.id(), std::chrono::milliseconds(5));
    forward_ms.push_back(Ms(Clock::now() - tf));
    if (fwd.version() != current) Die("roll forward went to " + fwd.version() + ", not " + current);
  }
  // (b2) the same through the real CLI, as on-call types it: the process starts, asks for the
  // rollback, waits until every host confirmed, exits 0. Then forward again the same way.
  std::vector<double> cli_rollback_ms;
  for (int i = 0; i < opt.cli_runs; ++i) {
    for (const bool back : {true, false}) {
      std::vector<std::string> argv = {
          opt.bin_dir + "/lockstep", "--server", server, "--token", admin, "rollback", "bench"};
      if (!back) argv.insert(argv.end(), {"--to", current});
      auto tc = Clock::now();
      RunCapture(argv, dir + "/cli-rollback.log");
      if (back) cli_rollback_ms.push_back(Ms(Clock::now() - tc));
    }
  }
  Percentiles cli_rb = Summarise(cli_rollback_ms);
  ctl.Resume("bench");

  // (c) a merge to main: signed push webhook -> the first canary host is sent its PREPARE.
  // Measured from just before the POST to the earliest task time lockstepd recorded for a
  // host (HostProgress.started_at_ms; same machine, same wall clock).
  const std::string commit = "5eed" + std::string(36, 'c');
  const std::string push =
      json{{"ref", "refs/heads/main"},
           {"after", commit},
           {"repository", {{"full_name", "bench/app"}}},
           {"head_commit", {{"message", "bench"}, {"author", {{"name", "B"}}}}}}
          .dump();
  httplib::Client hook_client("127.0.0.1", ports.at("http").get<int>());
  hook_client.set_read_timeout(60, 0);
  const int64_t push_at = WallMs();
  auto hook_res =
      hook_client.Post("/hooks/github",
                       {{"X-GitHub-Event", "push"},
                        {"X-GitHub-Delivery", "bench-1"},
                        {"X-Hub-Signature-256", lockstep::GithubSignature(secret, push)}},
                       push, "application/json");
  const int64_t accepted_at = WallMs();
  // 202: accepted, the artifact is fetched in the background (it is already published here).
  if (!hook_res || hook_res->status != 202) {
    Die("webhook not accepted: " + (hook_res
                                        ? std::to_string(hook_res->status) + " " + hook_res->body
                                        : std::string("no response")));
  }
  const int64_t hook_release = json::parse(hook_res->body).at("release").at("id").get<int64_t>();
  v1::Release hooked = ctl.WaitSucceeded(hook_release, std::chrono::milliseconds(10));
  int64_t first_task_at = 0;
  for (const auto& hp : hooked.hosts()) {
    if (hp.started_at_ms() > 0 && (first_task_at == 0 || hp.started_at_ms() < first_task_at)) {
      first_task_at = hp.started_at_ms();
    }
  }
  const double webhook_ms = static_cast<double>(first_task_at - push_at);
  const double webhook_accept_ms = static_cast<double>(accepted_at - push_at);

  // Every host on the pushed commit's release at the end, checked on disk.
  for (const auto& [name, root] : roots) {
    std::string cur = lockstep::agent::ReleaseDir(root).Current().value_or("");
    if (cur != hooked.version()) Die(name + " runs " + cur + ", not " + hooked.version());
  }
  ProcStats end = ReadProc(dpid);

  double stop_ms = stop_everything();

  Percentiles rb = Summarise(rollback_ms);
  Percentiles fw = Summarise(forward_ms);
  Percentiles rcpu = Summarise(rollback_cpu_us_per_step);
  Percentiles rwin = Summarise(rollback_window_ms);
  double cpu_per_step_us = rollout_cpu_s * 1e6 / static_cast<double>(host_steps);

  std::printf(
      "\nlockstep-fleet-bench: %d hosts in 3 regions (%zu process(es), Executor + Connection "
      "per host), %d rollbacks\n",
      opt.hosts, workers_started, opt.rollbacks);
  if (opt.agent_nice > 0) {
    std::printf("every simulated host in a worker process at nice %d\n", opt.agent_nice);
  }
  std::printf("%s; bake 0; concurrency per_region 10000\n",
              opt.hooks ? "hooks: deploy/stop, deploy/start (a background service), deploy/check "
                          "(it answers) on every host, through the agent's hook runner"
                        : "hooks: none run (artifact holds VERSION and a deploy/check; "
                          "check_hook off)");
  std::printf("host roots under %s; lockstepd store under %s\n\n", agents_dir.c_str(), dir.c_str());
  std::printf("%-52s %12s %14s\n", "figure", "measured", "goal");
  std::printf("%-52s %12s %14s\n", std::string(52, '-').c_str(), "--------", "----");
  auto row = [](const char* name, double v, const char* unit, const char* goal) {
    std::printf("%-52s %9.1f %-3s %13s\n", name, v, unit, goal);
  };
  row("connect all agents (until ListAgents shows N)", connect_ms, "ms", "-");
  row("first install v1 (fetch+unpack), 3 waves", install_ms, "ms", "-");
  Percentiles ro = Summarise(rollout_ms_v);
  Percentiles ro_server = Summarise(rollout_server_ms_v);
  Percentiles cli_wait = Summarise(cli_wait_exit_ms);
  Percentiles cli_create = Summarise(cli_create_ms);
  Percentiles rfan = Summarise(rollback_fanout_ms);
  std::printf("(%d rollouts, %d CLI runs of each command)\n", opt.rollouts, opt.cli_runs);
  row("rollout, 3 waves, CreateRelease -> seen succeeded p50", ro.p50, "ms", "-");
  row("rollout, 3 waves, CreateRelease -> seen succeeded p99", ro.p99, "ms", "< 3000 ms");
  row("rollout, lockstepd created -> finished p50", ro_server.p50, "ms", "-");
  row("rollout, lockstepd created -> finished p99", ro_server.p99, "ms", "-");
  row("lockstep release create --wait, whole process p50", cli_create.p50, "ms", "-");
  row("lockstep release create --wait: end -> exit p50", cli_wait.p50, "ms", "-");
  row("lockstep release create --wait: end -> exit p99", cli_wait.p99, "ms", "-");
  row("lockstepd CPU per host-step (rollout)", cpu_per_step_us, "us", "< 100 us");
  row("lockstepd CPU for the rollout", rollout_cpu_s * 1e3, "ms", "-");
  row("mixed-version window, rollout, all hosts", rollout_window.whole_ms, "ms", "-");
  for (const auto& [wave, ms] : rollout_window.per_wave_ms) {
    std::string n = "mixed-version window, rollout, wave " + std::to_string(wave + 1);
    row(n.c_str(), ms, "ms", wave == 2 ? "< 100 ms*" : "-");
  }
  for (const auto& [wave, ms] : rollout_fanout.per_wave_ms) {
    std::string n = "  lockstepd fan-out (ACTIVATEs sent), wave " + std::to_string(wave + 1);
    row(n.c_str(), ms, "ms", "-");
  }
  row("rollback v2->v1 p50", rb.p50, "ms", "-");
  row("rollback v2->v1 p99", rb.p99, "ms", "< 1000 ms");
  row("rollback v2->v1 max", rb.max, "ms", "-");
  row("rollback v2->v1 min", rb.min, "ms", "-");
  row("rollback lockstepd CPU per host-step p50", rcpu.p50, "us", "-");
  row("  rollback: command -> DEPLOYs sent p50", Summarise(rb_dispatch_ms).p50, "ms", "-");
  row("  rollback: DEPLOYs sent -> last result p50", Summarise(rb_agents_ms).p50, "ms", "-");
  row("  rollback: last result -> succeeded p50", Summarise(rb_conclude_ms).p50, "ms", "-");
  row("  rollback: succeeded -> client saw it p50", Summarise(rb_observe_ms).p50, "ms", "-");
  row("lockstep rollback (CLI process, until it exits) p50", cli_rb.p50, "ms", "-");
  row("lockstep rollback (CLI process, until it exits) p99", cli_rb.p99, "ms", "-");
  row("rollback mixed-version window p50", rwin.p50, "ms", "< 100 ms*");
  row("rollback mixed-version window p99", rwin.p99, "ms", "-");
  row("  lockstepd fan-out (DEPLOYs sent) p50", rfan.p50, "ms", "-");
  row("  lockstepd fan-out (DEPLOYs sent) p99", rfan.p99, "ms", "-");
  row("roll forward (Rollback --to v2) p50", fw.p50, "ms", "-");
  row("roll forward (Rollback --to v2) p99", fw.p99, "ms", "-");
  row("lockstepd RSS after connect", static_cast<double>(after_connect.rss_kib) / 1024.0, "MiB",
      "-");
  row("lockstepd RSS at end", static_cast<double>(end.rss_kib) / 1024.0, "MiB", "< 1024 MiB**");
  row("lockstepd CPU idle, N connected (5 s)", idle_cpu_pct, "%", "< 5 %**");
  row("webhook POST -> first canary PREPARE sent", webhook_ms, "ms", "< 100 ms");
  row("webhook POST -> 202 answered", webhook_accept_ms, "ms", "-");
  row("stop all agents", stop_ms, "ms", "-");
  std::printf(
      "\n*  the goal is for the window of a wave of 1,000 hosts; wave 3 holds half the "
      "fleet, a rollback all of it (time from switch-symlink mtimes; the fan-out from the "
      "tasks' sent_at_us).\n"
      "** the goal is for 10,000 idle agents; measured here with N.\n");
  std::printf("setup + run: %.1f s; lockstepd CPU total %.2f s (connect %.2f s, install %.2f s)\n",
              Ms(Clock::now() - t_setup) / 1e3, end.cpu_s,
              after_connect.cpu_s - before_connect.cpu_s, install_cpu_s);

  if (!opt.json_file.empty()) {
    json j = {
        {"hosts", opt.hosts},
        {"regions", kRegions},
        {"rollbacks", opt.rollbacks},
        {"agent_lost_s", opt.agent_lost_s},
        {"agent_processes", workers_started},
        {"hooks", opt.hooks
                      ? "deploy/stop, deploy/start, deploy/check on every host"
                      : "none run: artifact holds VERSION and deploy/check, check_hook false"},
        {"rollouts", opt.rollouts},
        {"agent_nice", opt.agent_nice},
        {"cli_runs", opt.cli_runs},
        {"rollout_all_ms", rollout_ms_v},
        {"rollout_p50_ms", ro.p50},
        {"rollout_p99_ms", ro.p99},
        {"rollout_server_ms", rollout_server_ms_v},
        {"rollout_server_p50_ms", ro_server.p50},
        {"rollout_server_p99_ms", ro_server.p99},
        {"cli_create_ms", cli_create_ms},
        {"cli_wait_exit_ms", cli_wait_exit_ms},
        {"cli_wait_exit_p50_ms", cli_wait.p50},
        {"cli_wait_exit_p99_ms", cli_wait.p99},
        {"cli_rollback_p99_ms", cli_rb.p99},
        {"rollback_mixed_window_ms", rollback_window_ms},
        {"rollback_mixed_window_ms_p99", rwin.p99},
        {"rollback_fanout_ms", rollback_fanout_ms},
        {"rollback_fanout_ms_p50", rfan.p50},
        {"rollback_fanout_ms_p99", rfan.p99},
        {"nproc", std::thread::hardware_concurrency()},
        {"connect_ms", connect_ms},
        {"install_ms", install_ms},
        {"install_cpu_s", install_cpu_s},
        {"rollout_ms", rollout_ms},
        {"rollout_cpu_s", rollout_cpu_s},
        {"rollout_cpu_per_host_step_us", cpu_per_step_us},
        {"rollout_mixed_window_ms", rollout_window.whole_ms},
        {"rollback_ms", rollback_ms},
        {"rollback_p50_ms", rb.p50},
        {"rollback_p99_ms", rb.p99},
        {"rollback_max_ms", rb.max},
        {"rollback_min_ms", rb.min},
        {"rollback_mean_ms", rb.mean},
        {"rollback_cpu_per_host_step_us_p50", rcpu.p50},
        {"rollback_mixed_window_ms_p50", rwin.p50},
        {"rollback_dispatch_ms_p50", Summarise(rb_dispatch_ms).p50},
        {"cli_rollback_ms", cli_rollback_ms},
        {"cli_rollback_p50_ms", cli_rb.p50},
        {"cli_rollback_max_ms", cli_rb.max},
        {"rollback_agents_ms_p50", Summarise(rb_agents_ms).p50},
        {"rollback_conclude_ms_p50", Summarise(rb_conclude_ms).p50},
        {"rollback_observe_ms_p50", Summarise(rb_observe_ms).p50},
        {"forward_ms", forward_ms},
        {"forward_p50_ms", fw.p50},
        {"forward_p99_ms", fw.p99},
        {"rss_after_connect_kib", after_connect.rss_kib},
        {"rss_end_kib", end.rss_kib},
        {"idle_cpu_percent", idle_cpu_pct},
        {"stop_ms", stop_ms},
        {"webhook_to_first_prepare_ms", webhook_ms},
        {"webhook_to_202_ms", webhook_accept_ms},
    };
    json waves = json::object();
    for (const auto& [wave, ms] : rollout_window.per_wave_ms) waves[std::to_string(wave + 1)] = ms;
    j["rollout_mixed_window_per_wave_ms"] = waves;
    json fanout = json::object();
    for (const auto& [wave, ms] : rollout_fanout.per_wave_ms) fanout[std::to_string(wave + 1)] = ms;
    j["rollout_fanout_per_wave_ms"] = fanout;
    std::ofstream(opt.json_file) << j.dump(2) << "\n";
  }
  if (!opt.keep) {
    std::error_code ec;
    fs::remove_all(dir, ec);
    fs::remove_all(agents_dir, ec);
  } else {
    std::printf("kept %s and %s\n", dir.c_str(), agents_dir.c_str());
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  signal(SIGPIPE, SIG_IGN);
  lockstep::TuneGrpcRuntime();
  try {
    Options opt = ParseArgs(argc, argv);
    return opt.worker ? RunWorker(opt) : RunBench(opt);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "lockstep-fleet-bench: %s\n", e.what());
    // Children are stopped by their destructors only on a normal unwind; main's unwinding
    // already ran them by now.
    return 1;
  }
}
