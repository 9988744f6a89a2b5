// The trust boundary, tried as an attacker would, against the real lockstepd and agents on
// loopback: what a caller with no token, or with only an enrollment token, can read or make
// happen on the HTTP and agent ports. The hostile agent is a raw client built from proto/,
// so it can send what a real agent never would.

#include <arpa/inet.h>
#include <grpcpp/grpcpp.h>
#include <gtest/gtest.h>
#include <httplib.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <filesystem>
#include <fstream>
#include <map>
#include <sstream>
#include <thread>
#include <vector>

#include "proto/lockstep.grpc.pb.h"
#include "tests/integration/fleet.h"

namespace lockstep::testing {
namespace {

namespace v1 = lockstep::v1;
using nlohmann::json;
using std::chrono::seconds;

// A TCP connection to lockstepd's HTTP port from the loopback address `source` (any of
// 127.0.0.0/8), so that a test can play several clients. -1 if it cannot connect.
int ConnectFrom(const std::string& source, int port) {
  int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  if (fd < 0) return -1;
  sockaddr_in local{};
  local.sin_family = AF_INET;
  ::inet_pton(AF_INET, source.c_str(), &local.sin_addr);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<uint16_t>(port));
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  timeval tv{20, 0};
  ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  if (::bind(fd, reinterpret_cast<sockaddr*>(&local), sizeof local) != 0 ||
      ::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) {
    ::close(fd);
    return -1;
  }
  return fd;
}

// Reads what the server sends until it closes the connection (or the 20 s receive timeout).
std::string ReadToClose(int fd) {
  std::string out;
  char buf[4096];
  for (int i = 0; i < 10000; ++i) {
    ssize_t n = ::recv(fd, buf, sizeof buf, 0);
    if (n <= 0) break;
    out.append(buf, static_cast<size_t>(n));
  }
  return out;
}

// One raw HTTP/1.1 request over a plain socket, so the request line goes out exactly as
// written (no client-side normalisation of "//" or "%2F"). Returns the whole response.
std::string RawHttp(int port, const std::string& request) {
  int fd = ConnectFrom("127.0.0.1", port);
  EXPECT_GE(fd, 0);
  if (fd < 0) return "";
  EXPECT_EQ(::send(fd, request.data(), request.size(), 0), static_cast<ssize_t>(request.size()));
  std::string out = ReadToClose(fd);
  ::close(fd);
  return out;
}

int StatusOf(const std::string& response) {
  // "HTTP/1.1 404 Not Found"
  if (response.size() < 12) return 0;
  return std::atoi(response.c_str() + 9);
}

mode_t ModeOf(const std::string& path) {
  struct stat st;
  if (::lstat(path.c_str(), &st) != 0) return 0;
  return st.st_mode & 07777;
}

class TrustBoundaryTest : public ::testing::Test {
 protected:
  void SetUp() override {
    fleet_.WritePipeline("monolith.yaml", R"(pipeline: monolith
regions: [us-east-1, eu-west-1]
waves:
  - name: all
    select: {per_region: "100%"}
timeouts: {hook: 10s, fetch: 10s, agent_lost: 10s}
)");
  }

  std::string Get(const std::string& path, const std::string& host = "") {
    return RawHttp(fleet_.http_port(),
                   "GET " + path + " HTTP/1.1\r\nHost: " + (host.empty() ? "127.0.0.1" : host) +
                       "\r\nConnection: close\r\n\r\n");
  }

  // A raw agent stream. The caller writes and reads as it likes.
  struct RawAgent {
    std::shared_ptr<grpc::Channel> channel;
    std::unique_ptr<v1::AgentService::Stub> stub;
    grpc::ClientContext ctx;
    std::unique_ptr<grpc::ClientReaderWriter<v1::AgentMessage, v1::ServerMessage>> stream;
  };
  // `channel`: share one connection (streams on it reach lockstepd in order); null: a new one.
  std::unique_ptr<RawAgent> Open(std::shared_ptr<grpc::Channel> channel = nullptr) {
    auto a = std::make_unique<RawAgent>();
    a->channel = channel ? channel
                         : grpc::CreateChannel(fleet_.server(), grpc::InsecureChannelCredentials());
    a->stub = v1::AgentService::NewStub(a->channel);
    a->ctx.set_deadline(std::chrono::system_clock::now() + seconds(30));
    a->stream = a->stub->Connect(&a->ctx);
    return a;
  }
  static bool SendHello(RawAgent& a, const std::string& name, const std::string& region,
                        const std::string& token, const std::string& credential = "") {
    v1::AgentMessage m;
    m.mutable_hello()->set_name(name);
    m.mutable_hello()->set_region(region);
    m.mutable_hello()->set_token(token);
    m.mutable_hello()->set_credential(credential);
    m.mutable_hello()->set_keeps_credential(true);
    return a.stream->Write(m);
  }
  // Reads until the stream ends; returns its final status and the last reject, if any.
  static std::pair<grpc::Status, std::string> Drain(RawAgent& a) {
    v1::ServerMessage in;
    std::string reject;
    for (int i = 0; i < 1000 && a.stream->Read(&in); ++i) {
      if (in.has_reject()) reject = in.reject().reason();
    }
    return {a.stream->Finish(), reject};
  }

  std::string EnrollmentToken(const std::string& region) {
    CommandResult r = fleet_.Cli({"--output", "json", "tokens", "create", "--role", "agent",
                                  "--region", region, "--name", "raw-" + region});
    EXPECT_EQ(r.exit_code, 0) << r.err;
    return json::parse(r.out).at("token").get<std::string>();
  }

  // Each path answers 200 to the admin from 127.0.0.1, within a few seconds.
  void ExpectServed(std::initializer_list<const char*> paths) {
    for (const char* path : paths) {
      httplib::Client cli("127.0.0.1", fleet_.http_port());
      cli.set_read_timeout(seconds(5));
      httplib::Headers h = {{"Authorization", "Bearer " + fleet_.admin_token()}};
      auto r = cli.Get(path, h);
      ASSERT_TRUE(r) << path;
      EXPECT_EQ(r->status, 200) << path;
    }
  }

  Fleet fleet_;
};

// --- the HTTP port, without a token ---

TEST_F(TrustBoundaryTest, StaticFilesNeverLeaveTheWebDirectory) {
  fleet_.StartOrchestrator();
  const std::string token_file = fleet_.dir() + "/data/admin-token";
  const std::string db = fleet_.dir() + "/data/lockstep.db";
  const std::vector<std::string> paths = {"/" + token_file,
                                          "//" + token_file.substr(1),
                                          "/%2F" + token_file.substr(1),
                                          "/" + db,
                                          "/../../../../../../etc/passwd",
                                          "/%2e%2e/%2e%2e/etc/passwd",
                                          "/..%2F..%2F..%2Fetc/passwd",
                                          "/.git/config"};
  for (const std::string& path : paths) {
    std::string r = Get(path);
    EXPECT_EQ(StatusOf(r), 404) << path << "\n" << r.substr(0, 200);
    EXPECT_EQ(r.find(fleet_.admin_token()), std::string::npos) << path;
    EXPECT_EQ(r.find("root:"), std::string::npos) << path;
    EXPECT_EQ(r.find("SQLite format"), std::string::npos) << path;
  }
  // The dashboard itself is still served.
  std::string index = Get("/");
  EXPECT_EQ(StatusOf(index), 200) << index.substr(0, 200);
  EXPECT_NE(index.find("<title>Lockstep"), std::string::npos);
  EXPECT_EQ(StatusOf(Get("/app.js")), 200);
}

TEST_F(TrustBoundaryTest, EveryAnswerCarriesSecurityHeaders) {
  fleet_.StartOrchestrator();
  for (const char* path : {"/", "/api/v1/pipelines", "/healthz", "/no-such-file"}) {
    httplib::Client cli("127.0.0.1", fleet_.http_port());
    auto r = cli.Get(path);
    ASSERT_TRUE(r) << path;
    EXPECT_NE(r->get_header_value("Content-Security-Policy").find("frame-ancestors 'none'"),
              std::string::npos)
        << path;
    EXPECT_EQ(r->get_header_value("X-Content-Type-Options"), "nosniff") << path;
    EXPECT_EQ(r->get_header_value("Referrer-Policy"), "no-referrer") << path;
    EXPECT_EQ(r->get_header_value("Cache-Control"), "no-store") << path;
  }
}

// A POST with no body at all (no Content-Length, as `curl -X POST` sends it) reaches its
// route: the role is checked first (403, nothing read), and a caller who may gets the action.
TEST_F(TrustBoundaryTest, ABodylessPostIsJudgedByItsRouteRoleFirst) {
  fleet_.StartOrchestrator();
  CommandResult viewer =
      fleet_.Cli({"--output", "json", "tokens", "create", "--role", "viewer", "--name", "vic"});
  ASSERT_EQ(viewer.exit_code, 0) << viewer.err;
  const std::string viewer_token = json::parse(viewer.out).at("token").get<std::string>();
  auto post = [&](const std::string& path, const std::string& token) {
    return RawHttp(fleet_.http_port(), "POST " + path +
                                           " HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: "
                                           "Bearer " +
                                           token + "\r\nConnection: close\r\n\r\n");
  };
  std::string refused = post("/api/v1/releases", viewer_token);
  EXPECT_EQ(refused.rfind("HTTP/1.1 403", 0), 0u) << refused;
  EXPECT_NE(refused.find("may not"), std::string::npos) << refused;
  // A body is not parsed for a caller who may not make the request: 403, not 400.
  const std::string malformed = "{\"pipeline\": ";
  std::string unparsed =
      RawHttp(fleet_.http_port(),
              "POST /api/v1/releases HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer " +
                  viewer_token + "\r\nContent-Type: application/json\r\nContent-Length: " +
                  std::to_string(malformed.size()) + "\r\nConnection: close\r\n\r\n" + malformed);
  EXPECT_EQ(unparsed.rfind("HTTP/1.1 403", 0), 0u) << unparsed;
  std::string paused = post("/api/v1/pipelines/monolith/pause", fleet_.admin_token());
  EXPECT_EQ(paused.rfind("HTTP/1.1 200", 0), 0u) << paused;
  EXPECT_NE(paused.find("\"paused\":true"), std::string::npos) << paused;
}

TEST_F(TrustBoundaryTest, AForeignHostNameIsRefusedSoDnsRebindingFindsNothing) {
  fleet_.StartOrchestrator();
  const std::string port = std::to_string(fleet_.http_port());
  EXPECT_EQ(StatusOf(Get("/healthz", "attacker.example:" + port)), 421);
  EXPECT_EQ(StatusOf(Get("/", "attacker.example")), 421);
  EXPECT_EQ(StatusOf(Get("/healthz", "localhost:" + port)), 200);
  EXPECT_EQ(StatusOf(Get("/healthz", "127.0.0.1:" + port)), 200);
}

TEST_F(TrustBoundaryTest, AllowedHostNamesAreConfigurable) {
  fleet_.StartOrchestrator({"--http-allowed-hosts", "lockstep.internal"});
  EXPECT_EQ(StatusOf(Get("/healthz", "lockstep.internal")), 200);
  EXPECT_EQ(StatusOf(Get("/healthz", "LOCKSTEP.internal:443")), 200);
  EXPECT_EQ(StatusOf(Get("/healthz", "127.0.0.1")), 421);
}

// --- the HTTP port under load ---

TEST_F(TrustBoundaryTest, SlowClientsCannotTakeDownHealthzOrTheApi) {
  fleet_.StartOrchestrator({"--http-request-timeout", "2s"});
  // 48 clients from one address each send half a request line and then nothing.
  std::vector<int> slow;
  for (int i = 0; i < 48; ++i) {
    int fd = ConnectFrom("127.0.0.2", fleet_.http_port());
    ASSERT_GE(fd, 0);
    const std::string partial = "GET /healthz HT";
    ASSERT_EQ(::send(fd, partial.data(), partial.size(), 0), ssize_t(partial.size()));
    slow.push_back(fd);
  }
  // Everyone else is still served, at once.
  ExpectServed({"/healthz", "/api/v1/pipelines", "/"});
  // Only 16 of the slow ones were let in; the rest were turned away with a 429, and the 16
  // are dropped once the request timeout passes, however long they wait.
  int refused = 0, dropped = 0;
  for (int fd : slow) {
    std::string answer = ReadToClose(fd);
    if (StatusOf(answer) == 429) {
      ++refused;
    } else if (answer.empty() || StatusOf(answer) == 408 || StatusOf(answer) == 400) {
      ++dropped;
    }
    ::close(fd);
  }
  EXPECT_EQ(refused, 32);
  EXPECT_EQ(dropped, 16);
  httplib::Client cli("127.0.0.1", fleet_.http_port());
  auto m = cli.Get("/metrics");
  ASSERT_TRUE(m);
  EXPECT_NE(m->body.find("lockstep_http_connections_refused_total 32"), std::string::npos);
  EXPECT_NE(m->body.find("lockstep_http_slow_requests_total 16"), std::string::npos);
}

TEST_F(TrustBoundaryTest, EventStreamsHaveABudgetOfTheirOwn) {
  fleet_.StartOrchestrator({"--http-max-event-streams", "8"});
  // Twelve viewers, each from its own address, hold event streams open.
  std::vector<int> streams;
  int answered = 0, refused = 0;
  for (int i = 0; i < 12; ++i) {
    int fd = ConnectFrom("127.0.1." + std::to_string(i + 1), fleet_.http_port());
    ASSERT_GE(fd, 0);
    const std::string req =
        "GET /api/v1/events HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer " +
        fleet_.admin_token() + "\r\n\r\n";
    ASSERT_EQ(::send(fd, req.data(), req.size(), 0), ssize_t(req.size()));
    char buf[512];
    ssize_t n = ::recv(fd, buf, sizeof buf, 0);  // the status line comes at once either way
    ASSERT_GT(n, 0);
    int status = StatusOf(std::string(buf, static_cast<size_t>(n)));
    if (status == 200) ++answered;
    if (status == 503) ++refused;
    streams.push_back(fd);
  }
  EXPECT_EQ(answered, 8);
  EXPECT_EQ(refused, 4);
  // The streams hold threads of their own budget: the rest of the API is unaffected.
  ExpectServed({"/healthz", "/api/v1/pipelines", "/api/v1/agents"});
  for (int fd : streams) ::close(fd);
}

// --- files ---

TEST_F(TrustBoundaryTest, TheDataDirectoryTheStoreAndTheBootstrapTokenAreLockstepdsAlone) {
  // Whatever the umask lockstepd is started with.
  mode_t old = ::umask(0);
  fleet_.StartOrchestrator();
  ::umask(old);
  EXPECT_EQ(ModeOf(fleet_.dir() + "/data"), 0700u);
  EXPECT_EQ(ModeOf(fleet_.dir() + "/data/lockstep.db"), 0600u);
  EXPECT_EQ(ModeOf(fleet_.dir() + "/data/admin-token"), 0600u);
}

TEST_F(TrustBoundaryTest, AnAgentKeepsItsCredentialPrivate) {
  fleet_.StartOrchestrator();
  fleet_.StartAgent("use1-a", "us-east-1");
  fleet_.WaitForAgents(1);
  const std::string credential = fleet_.AgentRoot("use1-a") + "/host-credential";
  ASSERT_TRUE(Fleet::WaitFor([&] { return std::filesystem::exists(credential); }, seconds(10)));
  EXPECT_EQ(ModeOf(credential), 0600u);
}

// --- the agent port ---

TEST_F(TrustBoundaryTest, AnEnrollmentTokenCannotTakeAnEnrolledHostsName) {
  fleet_.StartOrchestrator();
  fleet_.StartAgent("use1-a", "us-east-1");
  fleet_.WaitForAgents(1);
  // Same region's token, and another region's token: neither takes the name.
  for (const std::string region : {"us-east-1", "eu-west-1"}) {
    auto a = Open();
    ASSERT_TRUE(SendHello(*a, "use1-a", region, EnrollmentToken(region)));
    auto [st, reject] = Drain(*a);
    EXPECT_FALSE(st.ok());
    EXPECT_NE(reject.find("already enrolled"), std::string::npos) << region << ": " << reject;
  }
  // The real host was never pushed off.
  json agents = fleet_.CliJson({"agents"});
  ASSERT_EQ(agents.size(), 1u);
  EXPECT_TRUE(agents[0]["connected"].get<bool>());
  // The attempts are counted for whoever watches /metrics.
  httplib::Client cli("127.0.0.1", fleet_.http_port());
  auto m = cli.Get("/metrics");
  ASSERT_TRUE(m);
  EXPECT_NE(m->body.find("lockstep_agent_refusals_total{reason=\"permission_denied\"} 2"),
            std::string::npos)
      << m->body;
}

TEST_F(TrustBoundaryTest, AStreamThatNeverSaysHelloIsClosedAtTheHelloDeadline) {
  fleet_.StartOrchestrator({"--agent-hello-timeout", "1s"});
  auto a = Open();
  auto [st, reject] = Drain(*a);  // sends nothing at all
  EXPECT_EQ(st.error_code(), grpc::StatusCode::DEADLINE_EXCEEDED) << st.error_message();
  EXPECT_NE(st.error_message().find("no accepted hello"), std::string::npos) << st.error_message();
}

TEST_F(TrustBoundaryTest, UnauthenticatedStreamsAreCappedPerPeer) {
  fleet_.StartOrchestrator(
      {"--max-pending-agent-streams-per-peer", "3", "--agent-hello-timeout", "2s"});
  // Four silent streams from one address: whichever order they reach lockstepd in, exactly
  // one is refused at once and the other three are held only until the hello deadline.
  auto channel = grpc::CreateChannel(fleet_.server(), grpc::InsecureChannelCredentials());
  std::vector<std::unique_ptr<RawAgent>> streams;
  for (int i = 0; i < 4; ++i) streams.push_back(Open(channel));
  std::map<grpc::StatusCode, int> ends;
  for (auto& a : streams) ++ends[Drain(*a).first.error_code()];
  EXPECT_EQ(ends[grpc::StatusCode::RESOURCE_EXHAUSTED], 1);
  EXPECT_EQ(ends[grpc::StatusCode::DEADLINE_EXCEEDED], 3);
  // Their slots are free again: a real agent gets in.
  fleet_.StartAgent("use1-a", "us-east-1");
  fleet_.WaitForAgents(1);
}

TEST_F(TrustBoundaryTest, BadHellosAreRefusedWithoutAToken) {
  fleet_.StartOrchestrator();
  struct Case {
    std::string name, region, token;
  };
  for (const Case& c : {Case{std::string(2'500'000, 'x'), "us-east-1", ""},
                        Case{"evil\nFAKE LOG LINE", "us-east-1", ""},
                        Case{"use1-a", "us-east-1", "lst_" + std::string(64, '0')},
                        Case{"use1-a", "us-east-1", ""}}) {
    auto a = Open();
    SendHello(*a, c.name, c.region, c.token);
    a->stream->WritesDone();
    auto [st, reject] = Drain(*a);
    EXPECT_FALSE(st.ok()) << c.name.substr(0, 20);
  }
  // None of them left a trace that other users see.
  json agents = fleet_.CliJson({"agents"});
  EXPECT_EQ(agents.size(), 0u) << agents.dump();
  // And no forged line reached lockstepd's log.
  fleet_.StopOrchestrator();
  std::ifstream log(fleet_.dir() + "/logs/lockstepd.log");
  std::string line;
  while (std::getline(log, line)) {
    EXPECT_NE(line.rfind("FAKE LOG LINE", 0), 0u) << line;
  }
}

TEST_F(TrustBoundaryTest, ARemovedHostMustEnrollAgainAndTheCliSaysSo) {
  fleet_.StartOrchestrator();
  fleet_.StartAgent("use1-a", "us-east-1");
  fleet_.WaitForAgents(1);
  CommandResult viewer =
      fleet_.Cli({"--token", fleet_.CreateToken("viewer", "v"), "agents", "remove", "use1-a"});
  EXPECT_EQ(viewer.exit_code, 3) << viewer.err;
  CommandResult r = fleet_.Cli({"agents", "remove", "use1-a"});
  EXPECT_EQ(r.exit_code, 0) << r.err;
  // The agent still holds the old credential, which no longer works; it re-enrolls with its
  // enrollment token because the name is free again, and shows up once more.
  fleet_.WaitForAgents(1);
  json audit = fleet_.CliJson({"audit"});
  bool removed = false;
  for (const auto& e : audit) removed = removed || e["action"] == "agents.remove";
  EXPECT_TRUE(removed) << audit.dump();
}

TEST_F(TrustBoundaryTest, ForgedGateVerdictsAreDroppedAndCounted) {
  fleet_.StartOrchestrator();
  // An enrolled agent of another region answers checks it was never sent, guessing ids.
  auto a = Open();
  ASSERT_TRUE(SendHello(*a, "euw1-rogue", "eu-west-1", EnrollmentToken("eu-west-1")));
  v1::ServerMessage in;
  ASSERT_TRUE(a->stream->Read(&in));
  ASSERT_TRUE(in.has_welcome()) << in.DebugString();
  for (int i = 1; i <= 50; ++i) {
    v1::AgentMessage m;
    m.mutable_gate_verdict()->set_check_id("g" + std::to_string(i));
    m.mutable_gate_verdict()->set_gate("error-rate");
    m.mutable_gate_verdict()->set_verdict(v1::GateVerdict::PASS);
    ASSERT_TRUE(a->stream->Write(m));
  }
  // lockstepd takes them in order: once the last is counted, all were judged.
  httplib::Client cli("127.0.0.1", fleet_.http_port());
  EXPECT_TRUE(Fleet::WaitFor(
      [&] {
        auto m = cli.Get("/metrics");
        return m && m->body.find("lockstep_gate_verdicts_dropped_total 50\n") != std::string::npos;
      },
      seconds(20)));
  a->ctx.TryCancel();
}

TEST_F(TrustBoundaryTest, HooksSeeACuratedEnvironmentAndUnpackedFilesAreNotWorldWritable) {
  fleet_.WritePipeline("monolith.yaml", R"(pipeline: monolith
regions: [us-east-1]
waves:
  - name: all
    select: {per_region: "100%"}
timeouts: {hook: 10s, fetch: 10s, agent_lost: 10s}
)");
  fleet_.agent_env["CREDENTIALS_DIRECTORY"] = fleet_.dir() + "/credentials";
  fleet_.agent_env["AGENT_SECRET"] = "s3cret";
  fleet_.StartOrchestrator();
  fleet_.StartAgent("use1-a", "us-east-1");
  fleet_.WaitForAgents(1);
  AppBehaviour b;
  b.start_prologue = "env > \"$EVENT_LOG.env\"\n";
  b.extra_entries.push_back({TarEntry::Type::kFile, "data/shared.txt", "x", "", 0777, -1});
  Artifact app = fleet_.ServeApp("v1", b);
  CommandResult r = fleet_.Cli({"--output", "json", "release", "create", "--pipeline", "monolith",
                                "--version", "v1", "--artifact", app.url, "--sha256", app.sha256,
                                "--wait", "--timeout", "120s"});
  ASSERT_EQ(r.exit_code, 0) << r.err << r.out;
  std::ifstream env_file(fleet_.event_log() + ".env");
  std::stringstream env;
  env << env_file.rdbuf();
  ASSERT_FALSE(env.str().empty());
  EXPECT_EQ(env.str().find("CREDENTIALS_DIRECTORY"), std::string::npos) << env.str();
  EXPECT_EQ(env.str().find("AGENT_SECRET"), std::string::npos) << env.str();
  EXPECT_NE(env.str().find("LOCKSTEP_VERSION=v1"), std::string::npos) << env.str();
  EXPECT_NE(env.str().find("EVENT_LOG="), std::string::npos) << "the allow-listed one is passed";
  EXPECT_EQ(ModeOf(fleet_.AgentRoot("use1-a") + "/releases/v1/data/shared.txt"), 0755u);
}

// --- tokens ---

TEST_F(TrustBoundaryTest, TokensCanBeListedRevokedAndExpireWithoutShowingTheirSecrets) {
  fleet_.StartOrchestrator();
  const std::string viewer = fleet_.CreateToken("viewer", "alice");
  json list = fleet_.CliJson({"tokens", "list"});
  bool found = false;
  for (const auto& t : list) {
    found = found || t["name"] == "alice";
    EXPECT_EQ(t.dump().find("lst_"), std::string::npos) << "a secret is listed: " << t.dump();
  }
  EXPECT_TRUE(found) << list.dump();
  EXPECT_EQ(fleet_.Cli({"--token", viewer, "status"}).exit_code, 0);
  CommandResult revoke = fleet_.Cli({"tokens", "revoke", "alice"});
  EXPECT_EQ(revoke.exit_code, 0) << revoke.err;
  CommandResult after = fleet_.Cli({"--token", viewer, "status"});
  EXPECT_EQ(after.exit_code, 3);
  EXPECT_NE(after.err.find("revoked"), std::string::npos) << after.err;
  // A bad lifetime is refused before anything is sent.
  CommandResult bad = fleet_.Cli(
      {"tokens", "create", "--role", "viewer", "--name", "bob", "--expires-in", "forever"});
  EXPECT_EQ(bad.exit_code, 2) << bad.err;
  CommandResult ok =
      fleet_.Cli({"tokens", "create", "--role", "viewer", "--name", "bob", "--expires-in", "30d"});
  EXPECT_EQ(ok.exit_code, 0) << ok.err;
}

TEST_F(TrustBoundaryTest, RevokingATokenClosesItsOpenEventStreams) {
  fleet_.StartOrchestrator();
  const std::string viewer = fleet_.CreateToken("viewer", "watcher");
  std::atomic<bool> opened{false}, ended{false};
  std::thread reader([&] {
    httplib::Client cli("127.0.0.1", fleet_.http_port());
    cli.set_read_timeout(seconds(60));
    httplib::Headers h = {{"Authorization", "Bearer " + viewer}};
    cli.Get("/api/v1/events", h, [&](const char*, size_t) {
      opened = true;  // the stream's first bytes: it is registered
      return true;
    });
    ended = true;
  });
  // Revoking before the stream is open would prove nothing.
  ASSERT_TRUE(Fleet::WaitFor([&] { return opened.load(); }, seconds(20)));
  ASSERT_FALSE(ended.load());
  ASSERT_EQ(fleet_.Cli({"tokens", "revoke", "watcher"}).exit_code, 0);
  EXPECT_TRUE(Fleet::WaitFor([&] { return ended.load(); }, seconds(20)));
  reader.join();
}

}  // namespace
}  // namespace lockstep::testing
