// Data residency end to end: only verdicts cross a region's border. A region with
// `hook_output: none` (or a host started with --hook-output none) keeps its hooks' output on
// its own hosts. A failing health check prints markers on stdout and stderr on every host;
// then the bytes of everything lockstepd keeps (its data directory), logs (at debug level),
// serves (HTTP API, CLI), streams (/api/v1/events) and notifies are searched for them. The
// markers of a `tail` region are found where they belong (the release view, the store, the
// debug log, the event stream), which shows that the search would have found the others.

#include <gtest/gtest.h>
#include <httplib.h>

#include <algorithm>
#include <atomic>
#include <filesystem>
#include <fstream>
#include <mutex>
#include <set>
#include <sstream>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "tests/integration/fleet.h"

namespace lockstep::testing {
namespace {

using nlohmann::json;
namespace fs = std::filesystem;
using std::chrono::seconds;

// Each host's failing check prints 60 lines "filler-<host>-NNN", then
// "CUSTOMER-DATA-7f3a9c-<host>-stdout" on stdout and "CUSTOMER-DATA-7f3a9c-<host>-stderr" on
// stderr. Plain ASCII: no escaping (JSON, a log line) can hide one from a byte search.
constexpr char kSecret[] = "7f3a9c";

std::string Marker(const std::string& host, const std::string& stream) {
  return std::string("CUSTOMER-DATA-") + kSecret + "-" + host + "-" + stream;
}

// What must not leave a host that keeps its hook output: any piece of its markers that
// names it (a cut one too), and its filler lines.
std::vector<std::string> Withheld(const std::string& host) {
  return {std::string(kSecret) + "-" + host, "filler-" + host + "-"};
}

// deploy/check of the failing release. In eu-west-1 it first waits (at most 30 s) for
// $FAULT_DIR/eu-may-fail, so that the test decides when those hosts fail: after every host
// of us-east-1 did, and the release halted on one of them.
std::string FailingCheck() {
  return std::string(
             "if [ \"$LOCKSTEP_REGION\" = eu-west-1 ]; then n=0; "
             "while [ ! -e \"$FAULT_DIR/eu-may-fail\" ] && [ $n -lt 600 ]; do sleep 0.05; "
             "n=$((n+1)); done; fi\n"
             "i=1; while [ $i -le 60 ]; do printf 'filler-%s-%03d\\n' \"$LOCKSTEP_AGENT\" $i; "
             "i=$((i+1)); done\n") +
         "echo \"CUSTOMER-DATA-" + kSecret + "-${LOCKSTEP_AGENT}-stdout\"\n" +
         "echo \"CUSTOMER-DATA-" + kSecret + "-${LOCKSTEP_AGENT}-stderr\" >&2\n" + "exit 1\n";
}

// One wave over every region; a failed wave halts the release, so that failed hosts stay
// failed (and their evidence shown) until the test aborts it.
std::string PipelineYaml(const std::string& regions, const std::string& notify_url) {
  return "pipeline: monolith\nregions: " + regions + "\n" + R"(waves:
  - name: all
    select: {per_region: "100%"}
health:
  check_hook: true
timeouts: {hook: 60s, fetch: 10s, agent_lost: 10s}
rollback: {automatic: true, tolerate_failed_hosts: 0, on_failure: pause}
notify:
  - url: )" +
         notify_url + "\n";
}

// A place lockstepd put bytes, and the bytes.
struct Seen {
  std::string where;
  std::string bytes;
};

std::string FileBytes(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream buf;
  buf << in.rdbuf();
  return buf.str();
}

bool Contains(const std::string& haystack, const std::string& needle) {
  return haystack.find(needle) != std::string::npos;
}

// The bytes around `at`, printable, for a failure message.
std::string Around(const std::string& bytes, size_t at) {
  if (at >= bytes.size()) return "";
  const size_t from = at > 80 ? at - 80 : 0;
  std::string out = bytes.substr(from, 240);
  for (char& ch : out) {
    const auto u = static_cast<unsigned char>(ch);
    if (u < 0x20 || u > 0x7e) ch = '.';
  }
  return out;
}

void ExpectNowhere(const std::vector<std::string>& needles, const std::vector<Seen>& seen) {
  for (const auto& s : seen) {
    for (const auto& needle : needles) {
      const size_t at = s.bytes.find(needle);
      EXPECT_EQ(at, std::string::npos) << "\"" << needle << "\" left its region: it is in "
                                       << s.where << ": ..." << Around(s.bytes, at) << "...";
    }
  }
}

std::string Join(const std::vector<std::string>& words) {
  std::string out;
  for (const auto& w : words) out += (out.empty() ? "" : " ") + w;
  return out;
}

// The host `agent` of a release JSON, or an empty object.
json HostOf(const json& release, const std::string& agent) {
  if (!release.is_object() || !release.contains("hosts")) return json::object();
  for (const auto& h : release.at("hosts")) {
    if (h.value("agent", "") == agent) return h;
  }
  return json::object();
}

// The release events of an event stream's bytes ("event: release\ndata: {...}\n\n").
std::vector<json> ReleaseEvents(const std::string& bytes) {
  static const std::string kPrefix = "event: release\ndata: ";
  std::vector<json> out;
  for (size_t pos = bytes.find(kPrefix); pos != std::string::npos; pos = bytes.find(kPrefix, pos)) {
    pos += kPrefix.size();
    const size_t stop = bytes.find("\n\n", pos);
    if (stop == std::string::npos) break;
    json j = json::parse(bytes.substr(pos, stop - pos), nullptr, /*allow_exceptions=*/false);
    if (j.is_object()) out.push_back(std::move(j));
    pos = stop;
  }
  return out;
}

bool StreamHas(const std::string& bytes, int64_t id, const std::string& type) {
  for (const auto& e : ReleaseEvents(bytes)) {
    if (e.value("type", "") != type || !e.contains("release") || !e.at("release").is_object()) {
      continue;
    }
    if (e.at("release").value("id", int64_t{0}) == id) return true;
  }
  return false;
}

// Reads lockstepd's event stream (/api/v1/events) on a thread of its own, keeping every byte,
// from construction until Stop (or until lockstepd ends the stream).
class EventTap {
 public:
  EventTap(int port, const std::string& token) : client_("127.0.0.1", port) {
    client_.set_connection_timeout(seconds(5));
    client_.set_read_timeout(seconds(60));  // a keep-alive comes every 15 s
    reader_ = std::thread([this, token] {
      httplib::Headers headers = {{"Authorization", "Bearer " + token}};
      client_.Get("/api/v1/events", headers, [this](const char* data, size_t len) {
        std::lock_guard lock(mu_);
        bytes_.append(data, len);
        return !stop_.load();
      });
    });
  }
  ~EventTap() { Stop(); }
  EventTap(const EventTap&) = delete;
  EventTap& operator=(const EventTap&) = delete;

  void Stop() {
    if (!reader_.joinable()) return;
    stop_ = true;
    client_.stop();
    reader_.join();
  }
  std::string bytes() const {
    std::lock_guard lock(mu_);
    return bytes_;
  }

 private:
  httplib::Client client_;
  mutable std::mutex mu_;
  std::string bytes_;  // guarded by mu_
  std::atomic<bool> stop_{false};
  std::thread reader_;
};

class ResidencyTest : public ::testing::Test {
 protected:
  void SetUp() override {
    fault_dir_ = fleet_.dir() + "/faults";
    fs::create_directories(fault_dir_);
    fleet_.agent_env["FAULT_DIR"] = fault_dir_;
    receiver_.OnPost("/notify", [](const std::string&) { return 200; });
  }
  // A check hook still waiting for its word (a test that stopped early) ends now.
  void TearDown() override { std::ofstream(fault_dir_ + "/eu-may-fail") << "go\n"; }

  // Starts lockstepd at debug level, then the hosts (name, region); those in `keep_output`
  // are started with --hook-output none.
  void StartFleet(const std::string& regions,
                  const std::vector<std::pair<std::string, std::string>>& hosts,
                  const std::set<std::string>& keep_output = {}) {
    fleet_.WritePipeline("monolith.yaml", PipelineYaml(regions, receiver_.Url("/notify")));
    fleet_.StartOrchestrator({"--log-level", "debug"});
    for (const auto& [name, region] : hosts) {
      if (keep_output.count(name)) fleet_.agent_flags = {"--hook-output", "none"};
      fleet_.StartAgent(name, region);
      fleet_.agent_flags.clear();
    }
    fleet_.WaitForAgents(hosts.size());
  }

  CommandResult Release(const Artifact& a) {
    return fleet_.Cli({"--output", "json", "release", "create", "--pipeline", "monolith",
                       "--version", a.version, "--artifact", a.url, "--sha256", a.sha256, "--wait",
                       "--timeout", "90s"});
  }

  // Creates a release of `a` and waits until it halted; returns its id (0 if it did not).
  int64_t ReleaseUntilHalted(const Artifact& a, std::vector<Seen>* seen) {
    CommandResult r = Release(a);
    seen->push_back(Seen{"lockstep release create --wait", r.out + r.err});
    json release = json::parse(r.out, nullptr, /*allow_exceptions=*/false);
    EXPECT_EQ(release.is_object() ? release.value("state", "") : "", "halted") << r.out << r.err;
    return release.is_object() ? release.value("id", int64_t{0}) : 0;
  }

  std::string HttpGet(const std::string& path) {
    httplib::Client cli("127.0.0.1", fleet_.http_port());
    cli.set_connection_timeout(seconds(5));
    cli.set_read_timeout(seconds(30));
    httplib::Headers headers = {{"Authorization", "Bearer " + fleet_.admin_token()}};
    httplib::Result r = cli.Get(path.c_str(), headers);
    if (!r) {
      ADD_FAILURE() << "GET " << path << ": no answer";
      return "";
    }
    EXPECT_EQ(r->status, 200) << "GET " << path << ": " << r->body;
    return r->body;
  }

  json ReleaseView(int64_t id) {
    return json::parse(HttpGet("/api/v1/releases/" + std::to_string(id)), nullptr,
                       /*allow_exceptions=*/false);
  }

  // Waits until every one of `agents` is `state` in release `id`; returns the release then.
  json WaitForHosts(int64_t id, const std::vector<std::string>& agents, const std::string& state) {
    json release;
    bool all = Fleet::WaitFor(
        [&] {
          release = ReleaseView(id);
          for (const auto& a : agents) {
            if (HostOf(release, a).value("state", "") != state) return false;
          }
          return true;
        },
        seconds(60));
    EXPECT_TRUE(all) << "not every one of " << Join(agents) << " is " << state << ":\n"
                     << release.dump(2);
    return release;
  }

  bool Notified(int64_t id, const std::string& event, std::string* text = nullptr) const {
    for (const auto& p : receiver_.Posts("/notify")) {
      json j = json::parse(p.body, nullptr, /*allow_exceptions=*/false);
      if (!j.is_object() || j.value("event", "") != event) continue;
      if (j.value("release_id", int64_t{0}) != id) continue;
      if (text) *text = j.value("text", "");
      return true;
    }
    return false;
  }

  // Every answer lockstepd gives about the fleet: its HTTP API (what the dashboard reads),
  // /metrics, and the CLI as text and as JSON.
  std::vector<Seen> Served(int64_t id) {
    const std::string rid = std::to_string(id);
    std::vector<Seen> out;
    const std::vector<std::string> paths = {"/api/v1/releases/" + rid,
                                            "/api/v1/releases?pipeline=monolith&limit=1000",
                                            "/api/v1/audit?limit=100000",
                                            "/api/v1/agents",
                                            "/api/v1/pipelines",
                                            "/api/v1/pipelines/monolith",
                                            "/metrics"};
    for (const auto& path : paths) out.push_back(Seen{"GET " + path, HttpGet(path)});
    const std::vector<std::vector<std::string>> commands = {
        {"release", "show", rid},
        {"--output", "json", "release", "show", rid},
        {"release", "list", "--pipeline", "monolith"},
        {"--output", "json", "release", "list", "--pipeline", "monolith"},
        {"status", "monolith"},
        {"--output", "json", "status", "monolith"},
        {"agents"},
        {"--output", "json", "agents"},
        {"audit", "--limit", "1000"},
        {"--output", "json", "audit", "--limit", "1000"}};
    for (const auto& args : commands) {
      CommandResult r = fleet_.Cli(args);
      EXPECT_EQ(r.exit_code, 0) << "lockstep " << Join(args) << ": " << r.err;
      out.push_back(Seen{"lockstep " + Join(args), r.out + r.err});
    }
    return out;
  }

  // Every file lockstepd keeps (the SQLite database, its -wal and -shm, ...), raw.
  std::vector<Seen> DataDir(const std::string& when) const {
    std::vector<Seen> out;
    std::error_code ec;
    for (fs::recursive_directory_iterator it(fleet_.dir() + "/data", ec), last; !ec && it != last;
         it.increment(ec)) {
      std::error_code type_ec;
      if (!it->is_regular_file(type_ec)) continue;
      out.push_back(
          Seen{"lockstepd's data directory (" + when + "): " + it->path().filename().string(),
               FileBytes(it->path())});
    }
    EXPECT_FALSE(ec) << ec.message();
    bool has_db = false;
    for (const auto& s : out) has_db = has_db || Contains(s.where, ": lockstep.db");
    EXPECT_TRUE(has_db) << "no lockstep.db in " << fleet_.dir() << "/data";
    return out;
  }

  std::vector<Seen> Notifications() const {
    std::vector<Seen> out;
    int n = 0;
    for (const auto& p : receiver_.Posts("/notify")) {
      out.push_back(Seen{"notification " + std::to_string(++n), p.body});
    }
    return out;
  }

  std::string Log(const std::string& name) const {
    return FileBytes(fleet_.dir() + "/logs/" + name + ".log");
  }

  TestHttpServer receiver_;  // the notify target
  Fleet fleet_;              // declared after receiver_: its lockstepd stops first
  std::string fault_dir_;
};

TEST_F(ResidencyTest, ANoneRegionsHookOutputStaysOnItsHostsWhileATailRegionsIsShown) {
  const std::vector<std::string> tail_hosts = {"use1-a", "use1-b"};
  const std::vector<std::string> none_hosts = {"euw1-a", "euw1-b"};
  StartFleet("[us-east-1, {name: eu-west-1, hook_output: none}]", {{"use1-a", "us-east-1"},
                                                                   {"use1-b", "us-east-1"},
                                                                   {"euw1-a", "eu-west-1"},
                                                                   {"euw1-b", "eu-west-1"}});
  EventTap tap(fleet_.http_port(), fleet_.admin_token());
  ASSERT_TRUE(Fleet::WaitFor([&] { return Contains(tap.bytes(), ": connected"); }, seconds(10)))
      << tap.bytes();

  CommandResult first = Release(fleet_.ServeApp("v1"));
  ASSERT_EQ(first.exit_code, 0) << first.out << first.err;

  std::vector<Seen> seen;  // everything lockstepd put out, searched at the end
  AppBehaviour failing;
  failing.check_prologue = FailingCheck();
  const int64_t id = ReleaseUntilHalted(fleet_.ServeApp("v2", failing), &seen);
  ASSERT_GT(id, 0);
  // Every host of us-east-1 fails, then (told so) every host of eu-west-1.
  WaitForHosts(id, tail_hosts, "failed");
  std::ofstream(fault_dir_ + "/eu-may-fail") << "go\n";
  std::vector<std::string> all = tail_hosts;
  all.insert(all.end(), none_hosts.begin(), none_hosts.end());
  json halted = WaitForHosts(id, all, "failed");
  ASSERT_TRUE(halted.is_object());
  ASSERT_EQ(halted.value("state", ""), "halted") << halted.dump(2);

  // The tail region: each failed host's output tail is shown, bounded (the last 40 lines of
  // the hook: the first filler lines are gone).
  CommandResult show = fleet_.Cli({"release", "show", std::to_string(id)});
  ASSERT_EQ(show.exit_code, 0) << show.err;
  json cli_json = fleet_.CliJson({"release", "show", std::to_string(id)});
  for (const auto& host : tail_hosts) {
    for (const json& release : {halted, cli_json}) {
      const std::string tail = HostOf(release, host).value("output_tail", "");
      EXPECT_TRUE(Contains(tail, Marker(host, "stdout"))) << host << ":\n" << release.dump(2);
      EXPECT_TRUE(Contains(tail, Marker(host, "stderr"))) << host << ":\n" << release.dump(2);
      EXPECT_TRUE(Contains(tail, "filler-" + host + "-060")) << tail;
      EXPECT_FALSE(Contains(tail, "filler-" + host + "-001")) << tail;
      EXPECT_LE(std::count(tail.begin(), tail.end(), '\n'), 40) << tail;
      EXPECT_LE(tail.size(), 16384u);
    }
    EXPECT_TRUE(Contains(show.out, "\n        " + Marker(host, "stdout") + "\n")) << show.out;
    EXPECT_TRUE(Contains(show.out, "\n        " + Marker(host, "stderr") + "\n")) << show.out;
  }
  EXPECT_TRUE(Contains(show.out, "\n        output:\n")) << show.out;
  // The none region: the verdict crosses (failed, and why in lockstepd's words), the words
  // do not.
  for (const auto& host : none_hosts) {
    const json h = HostOf(halted, host);
    EXPECT_EQ(h.value("output_tail", "?"), "") << h.dump(2);
    EXPECT_TRUE(Contains(h.value("detail", ""), "deploy/check of v2 exited with status 1"))
        << h.dump(2);
  }
  // The tail region's words are stored (the search of the store can find a marker).
  std::vector<Seen> store_halted = DataDir("release halted");
  bool stored = false;
  for (const auto& s : store_halted)
    stored = stored || Contains(s.bytes, Marker("use1-a", "stdout"));
  EXPECT_TRUE(stored) << "the tail region's output tail is not in lockstepd's store";
  seen.insert(seen.end(), store_halted.begin(), store_halted.end());
  seen.push_back(Seen{"lockstep release show (halted)", show.out + show.err});
  seen.push_back(Seen{"lockstep --output json release show (halted)", cli_json.dump()});
  for (auto& s : Served(id)) seen.push_back(Seen{s.where + " (halted)", std::move(s.bytes)});

  // The release runs to its end: aborted, every host back on v1.
  CommandResult abort_cmd = fleet_.Cli({"abort", std::to_string(id)});
  ASSERT_EQ(abort_cmd.exit_code, 0) << abort_cmd.err;
  seen.push_back(Seen{"lockstep abort", abort_cmd.out + abort_cmd.err});
  CommandResult watch =
      fleet_.Cli({"--output", "json", "release", "watch", std::to_string(id), "--timeout", "90s"});
  seen.push_back(Seen{"lockstep release watch", watch.out + watch.err});
  json ended = json::parse(watch.out, nullptr, /*allow_exceptions=*/false);
  ASSERT_TRUE(ended.is_object()) << watch.out << watch.err;
  ASSERT_EQ(ended.value("state", ""), "aborted") << ended.dump(2);
  for (const auto& host : all) EXPECT_EQ(fleet_.CurrentOf(host), "v1") << host;

  // Every event of the release reached the stream and the notify target.
  EXPECT_TRUE(Fleet::WaitFor([&] { return StreamHas(tap.bytes(), id, "aborted"); }, seconds(30)))
      << tap.bytes();
  EXPECT_TRUE(StreamHas(tap.bytes(), id, "halted")) << tap.bytes();
  EXPECT_TRUE(Fleet::WaitFor([&] { return Notified(id, "aborted"); }, seconds(30)));
  std::string halted_text;
  EXPECT_TRUE(Notified(id, "halted", &halted_text));
  EXPECT_TRUE(Contains(halted_text, "exited with status 1")) << halted_text;

  for (auto& s : Served(id)) seen.push_back(Seen{s.where + " (ended)", std::move(s.bytes)});
  for (auto& s : DataDir("release ended")) seen.push_back(std::move(s));
  tap.Stop();
  const std::string events = tap.bytes();
  seen.push_back(Seen{"the event stream /api/v1/events", events});
  const std::vector<Seen> notifications = Notifications();
  seen.insert(seen.end(), notifications.begin(), notifications.end());
  fleet_.StopOrchestrator();
  for (auto& s : DataDir("lockstepd stopped")) seen.push_back(std::move(s));
  const std::string daemon_log = Log("lockstepd");
  seen.push_back(Seen{"lockstepd's log (debug level)", daemon_log});

  // Nothing of eu-west-1's hook output anywhere...
  for (const auto& host : none_hosts) ExpectNowhere(Withheld(host), seen);
  // ...while the same search finds us-east-1's where it belongs: in the debug log (progress
  // lines) and in the event stream (the release view the halt was announced with).
  EXPECT_TRUE(Contains(daemon_log, Marker("use1-a", "stdout")))
      << "lockstepd at debug level logs a tail region's hook output lines";
  EXPECT_TRUE(Contains(events, std::string(kSecret) + "-use1-"))
      << "the halted event's release view carries the tail region's output tail";
  // An output tail is never notified, whatever the region.
  ExpectNowhere({kSecret, "filler-"}, notifications);
  // eu-west-1's hosts kept their words: in their own logs.
  for (const auto& host : none_hosts) {
    const std::string own = Log("agent-" + host);
    EXPECT_TRUE(Contains(own, Marker(host, "stdout"))) << host;
    EXPECT_TRUE(Contains(own, Marker(host, "stderr"))) << host;
  }
}

// --hook-output none on a host holds whatever its region's policy: the stricter wins.
TEST_F(ResidencyTest, AHostStartedWithHookOutputNoneKeepsItInATailRegion) {
  StartFleet("[us-east-1]", {{"use1-a", "us-east-1"}, {"use1-w", "us-east-1"}}, {"use1-w"});
  EventTap tap(fleet_.http_port(), fleet_.admin_token());
  ASSERT_TRUE(Fleet::WaitFor([&] { return Contains(tap.bytes(), ": connected"); }, seconds(10)))
      << tap.bytes();

  std::vector<Seen> seen;
  AppBehaviour failing;
  failing.check_prologue = FailingCheck();
  const int64_t id = ReleaseUntilHalted(fleet_.ServeApp("v1", failing), &seen);
  ASSERT_GT(id, 0);
  json halted = WaitForHosts(id, {"use1-a", "use1-w"}, "failed");
  // The same region, the same failure: one host's tail is shown, the other's is not.
  EXPECT_TRUE(
      Contains(HostOf(halted, "use1-a").value("output_tail", ""), Marker("use1-a", "stdout")))
      << halted.dump(2);
  const json kept = HostOf(halted, "use1-w");
  EXPECT_EQ(kept.value("output_tail", "?"), "") << kept.dump(2);
  EXPECT_TRUE(Contains(kept.value("detail", ""), "deploy/check of v1 exited with status 1"))
      << kept.dump(2);
  EXPECT_TRUE(Fleet::WaitFor([&] { return Notified(id, "halted"); }, seconds(30)));
  EXPECT_TRUE(Fleet::WaitFor([&] { return StreamHas(tap.bytes(), id, "halted"); }, seconds(30)))
      << tap.bytes();

  for (auto& s : Served(id)) seen.push_back(std::move(s));
  for (auto& s : DataDir("release halted")) seen.push_back(std::move(s));
  tap.Stop();
  seen.push_back(Seen{"the event stream /api/v1/events", tap.bytes()});
  for (auto& s : Notifications()) seen.push_back(std::move(s));
  fleet_.StopOrchestrator();
  for (auto& s : DataDir("lockstepd stopped")) seen.push_back(std::move(s));
  const std::string daemon_log = Log("lockstepd");
  seen.push_back(Seen{"lockstepd's log (debug level)", daemon_log});

  ExpectNowhere(Withheld("use1-w"), seen);
  EXPECT_TRUE(Contains(daemon_log, Marker("use1-a", "stdout")))
      << "lockstepd at debug level logs a tail region's hook output lines";
  const std::string own = Log("agent-use1-w");
  EXPECT_TRUE(Contains(own, Marker("use1-w", "stdout")));
  EXPECT_TRUE(Contains(own, Marker("use1-w", "stderr")));
}

}  // namespace
}  // namespace lockstep::testing
