// The agent's side of the stream contract, against a stand-in AgentService: a real
// lockstep-agent process over real gRPC on loopback.

#include <grpcpp/grpcpp.h>
#include <gtest/gtest.h>

#include <condition_variable>
#include <filesystem>
#include <mutex>

#include "proto/lockstep.grpc.pb.h"
#include "tests/integration/fleet.h"

namespace lockstep::testing {
namespace {

namespace fs = std::filesystem;
namespace v1 = lockstep::v1;
using std::chrono::seconds;

// Welcomes the agent with a heartbeat interval of ten minutes, then at once tells it 200 ms
// (as lockstepd does when the fleet shrinks), and counts the heartbeats that follow.
class RetuningOrchestrator final : public v1::AgentService::Service {
 public:
  grpc::Status Connect(
      grpc::ServerContext* /*ctx*/,
      grpc::ServerReaderWriter<v1::ServerMessage, v1::AgentMessage>* stream) override {
    v1::AgentMessage in;
    if (!stream->Read(&in) || !in.has_hello()) return grpc::Status::OK;
    v1::ServerMessage welcome;
    welcome.mutable_welcome()->set_pipeline("monolith");
    welcome.mutable_welcome()->set_heartbeat_interval_ms(600'000);
    stream->Write(welcome);
    v1::ServerMessage settings;
    settings.mutable_settings()->set_heartbeat_interval_ms(200);
    stream->Write(settings);
    while (stream->Read(&in)) {
      if (!in.has_heartbeat()) continue;
      std::lock_guard lock(mu_);
      ++heartbeats_;
      cv_.notify_all();
    }
    return grpc::Status::OK;
  }

  bool WaitHeartbeats(int n) {
    std::unique_lock lock(mu_);
    return cv_.wait_for(lock, seconds(20), [&] { return heartbeats_ >= n; });
  }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  int heartbeats_ = 0;  // guarded by mu_
};

TEST(AgentProtocolTest, AnAgentBeatsAtTheIntervalLockstepdLastToldIt) {
  char tmpl[] = "/tmp/lockstep-agent-protocol-XXXXXX";
  const std::string dir = mkdtemp(tmpl);
  fs::create_directories(dir + "/agent");
  RetuningOrchestrator stand_in;
  grpc::ServerBuilder builder;
  int port = 0;
  builder.AddListeningPort("127.0.0.1:0", grpc::InsecureServerCredentials(), &port);
  builder.RegisterService(&stand_in);
  std::unique_ptr<grpc::Server> server = builder.BuildAndStart();
  ASSERT_TRUE(server && port > 0);

  auto agent = Process::Start(
      {BinPath("lockstep-agent"), "--server", "127.0.0.1:" + std::to_string(port), "--region",
       "us-east-1", "--name", "us-east-1-1", "--root", dir + "/agent", "--token", "lst_any"},
      dir + "/agent.log");
  ASSERT_TRUE(agent.ok()) << agent.status().ToString();
  // At the welcome's ten minutes, five heartbeats would take most of an hour.
  bool beat = stand_in.WaitHeartbeats(5);
  (*agent)->Stop();
  server->Shutdown(std::chrono::system_clock::now() + seconds(2));
  EXPECT_TRUE(beat) << ReadFile(dir + "/agent.log");
  std::error_code ec;
  fs::remove_all(dir, ec);
}

}  // namespace
}  // namespace lockstep::testing
