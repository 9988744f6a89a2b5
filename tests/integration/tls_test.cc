// gRPC with TLS and mutual TLS, with certificates made by the test.

#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>

#include "tests/integration/fleet.h"

namespace lockstep::testing {
namespace {

// A CA, a server certificate for 127.0.0.1 and a client certificate, made with openssl.
void MakeCertificates(const std::string& dir) {
  auto run = [&](const std::string& cmd) {
    CommandResult r =
        RunCommand({"/bin/sh", "-c", "cd '" + dir + "' && " + cmd}, std::chrono::seconds(30));
    ASSERT_EQ(r.exit_code, 0) << cmd << "\n" << r.err;
  };
  run("openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj /CN=lockstep-test-ca "
      "-keyout ca.key -out ca.pem");
  for (const char* who : {"server", "client"}) {
    std::string w = who;
    run("openssl req -newkey rsa:2048 -nodes -subj /CN=" + w + " -keyout " + w + ".key -out " + w +
        ".csr");
    run("printf 'subjectAltName=IP:127.0.0.1,DNS:localhost\\n' > " + w + ".ext");
    run("openssl x509 -req -in " + w +
        ".csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 2 "
        "-extfile " +
        w + ".ext -out " + w + ".pem");
  }
}

const char* kPipeline = R"(pipeline: monolith
regions: [us-east-1, eu-west-1]
waves:
  - name: all
    select: {per_region: "100%"}
timeouts: {hook: 10s, fetch: 10s, agent_lost: 10s}
)";

TEST(TlsTest, MutualTlsCarriesARolloutAndRefusesClientsWithoutACertificate) {
  Fleet fleet;
  MakeCertificates(fleet.dir());
  std::string d = fleet.dir() + "/";
  fleet.WritePipeline("monolith.yaml", kPipeline);
  fleet.cli_flags = {"--tls-ca",       d + "ca.pem", "--tls-cert",
                     d + "client.pem", "--tls-key",  d + "client.key"};
  fleet.agent_flags = fleet.cli_flags;
  fleet.StartOrchestrator({"--tls-cert", d + "server.pem", "--tls-key", d + "server.key",
                           "--tls-client-ca", d + "ca.pem"});
  fleet.StartAgent("use1", "us-east-1");
  fleet.StartAgent("euw1", "eu-west-1");
  fleet.WaitForAgents(2);
  Artifact v1 = fleet.ServeApp("v1");
  CommandResult r = fleet.Cli({"release", "create", "--pipeline", "monolith", "--version", "v1",
                               "--artifact", v1.url, "--sha256", v1.sha256, "--wait"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(fleet.CurrentOf("use1"), "v1");
  EXPECT_EQ(fleet.CurrentOf("euw1"), "v1");

  // Without a client certificate: refused.
  fleet.cli_flags = {"--tls-ca", d + "ca.pem"};
  r = fleet.Cli({"status"}, std::chrono::seconds(30));
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.err.find("TLS handshake failed"), std::string::npos) << r.err;
  // Without TLS at all: refused, and told why it may be.
  fleet.cli_flags.clear();
  r = fleet.Cli({"status"}, std::chrono::seconds(30));
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.err.find("if lockstepd serves gRPC with TLS, pass --tls-ca"), std::string::npos)
      << r.err;
  // lockstepd says so too, in its own log format: gRPC's lines go through its logger.
  const std::string log_path = fleet.dir() + "/logs/lockstepd.log";
  auto log_text = [&] {
    std::ifstream in(log_path);
    return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
  };
  EXPECT_TRUE(Fleet::WaitFor(
      [&] { return log_text().find("warning [lockstepd] grpc: ") != std::string::npos; },
      std::chrono::seconds(10)))
      << log_text();
  EXPECT_EQ(log_text().find("] Handshake failed"), std::string::npos)
      << "a gRPC line in gRPC's own format:\n"
      << log_text();
  // An agent without a client certificate never joins.
  fleet.agent_flags = {"--tls-ca", d + "ca.pem"};
  fleet.cli_flags = {"--tls-ca",       d + "ca.pem", "--tls-cert",
                     d + "client.pem", "--tls-key",  d + "client.key"};
  fleet.StartAgent("euw2", "eu-west-1");
  // It tries, and its stream ends each time (the handshake is refused): twice is enough.
  const std::string agent_log = fleet.dir() + "/logs/agent-euw2.log";
  auto ended = [&] {
    std::ifstream in(agent_log);
    const std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    size_t n = 0;
    for (size_t at = text.find("stream to "); at != std::string::npos;
         at = text.find("stream to ", at + 1)) {
      ++n;
    }
    return n >= 2;
  };
  EXPECT_TRUE(Fleet::WaitFor(ended, std::chrono::seconds(30)));
  for (const auto& a : fleet.CliJson({"agents"})) EXPECT_NE(a["name"], "euw2");
}

// A key that belongs to another certificate is named as such, by --check and at start,
// instead of a failed bind.
TEST(TlsTest, AKeyThatDoesNotMatchItsCertificateIsNamedAtCheckAndAtStart) {
  Fleet fleet;
  MakeCertificates(fleet.dir());
  const std::string pipelines = fleet.dir() + "/tls-pipelines";
  std::filesystem::create_directories(pipelines);
  std::ofstream(pipelines + "/monolith.yaml") << kPipeline;
  for (bool check : {true, false}) {
    std::vector<std::string> argv = {BinPath("lockstepd"),
                                     "--tls-cert",
                                     fleet.dir() + "/server.pem",
                                     "--tls-key",
                                     fleet.dir() + "/client.key",
                                     "--pipelines",
                                     pipelines,
                                     "--data-dir",
                                     fleet.dir() + "/tls-data",
                                     "--grpc-listen",
                                     "127.0.0.1:0",
                                     "--http-listen",
                                     "127.0.0.1:0"};
    if (check) argv.push_back("--check");
    CommandResult r = RunCommand(argv, std::chrono::seconds(20));
    EXPECT_EQ(r.exit_code, 2) << r.err;
    EXPECT_NE(r.err.find("TLS key file " + fleet.dir() +
                         "/client.key does not match the "
                         "certificate in " +
                         fleet.dir() + "/server.pem"),
              std::string::npos)
        << r.err;
  }
  CommandResult good = RunCommand({BinPath("lockstepd"), "--tls-cert", fleet.dir() + "/server.pem",
                                   "--tls-key", fleet.dir() + "/server.key", "--tls-client-ca",
                                   fleet.dir() + "/ca.pem", "--pipelines", pipelines, "--check"},
                                  std::chrono::seconds(20));
  EXPECT_EQ(good.exit_code, 0) << good.err;
  EXPECT_NE(good.out.find("TLS files load and match"), std::string::npos) << good.out;
  CommandResult not_a_cert =
      RunCommand({BinPath("lockstepd"), "--tls-cert", fleet.dir() + "/server.key", "--tls-key",
                  fleet.dir() + "/server.key", "--pipelines", pipelines, "--check"},
                 std::chrono::seconds(20));
  EXPECT_EQ(not_a_cert.exit_code, 2);
  EXPECT_NE(not_a_cert.err.find("holds no certificate"), std::string::npos) << not_a_cert.err;
}

TEST(TlsTest, AMissingKeyFileIsAClearStartupError) {
  CommandResult r = RunCommand({BinPath("lockstepd"), "--tls-cert", "/nonexistent/cert.pem",
                                "--tls-key", "/nonexistent/key.pem", "--pipelines", "/nonexistent"},
                               std::chrono::seconds(10));
  EXPECT_NE(r.exit_code, 0);
  CommandResult a = RunCommand({BinPath("lockstep-agent"), "--region", "r", "--name", "n", "--root",
                                "/tmp", "--tls-cert", "/x.pem"},
                               std::chrono::seconds(10));
  EXPECT_EQ(a.exit_code, 2);
  EXPECT_NE(a.err.find("--tls-ca"), std::string::npos) << a.err;
}

}  // namespace
}  // namespace lockstep::testing
