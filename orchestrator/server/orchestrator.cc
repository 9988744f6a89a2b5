#include "orchestrator/server/orchestrator.h"

#include <grpcpp/grpcpp.h>
#include <grpcpp/impl/service_type.h>
#include <spdlog/spdlog.h>

#include <condition_variable>
#include <filesystem>
#include <thread>

#include "orchestrator/engine/engine.h"
#include "orchestrator/server/hub.h"
#include "orchestrator/server/services.h"
#include "orchestrator/store/store.h"

namespace lockstep {

struct Orchestrator::Impl {
  OrchestratorOptions options;
  std::unique_ptr<Store> store;
  std::unique_ptr<Engine> engine;
  std::unique_ptr<Hub> hub;
  std::unique_ptr<grpc::Service> agent_service;
  std::unique_ptr<grpc::Service> control_service;
  std::unique_ptr<grpc::Server> server;
  std::thread engine_thread;
  int grpc_port = 0;
  std::mutex mu;
  std::condition_variable cv;
  bool shut_down = false;  // guarded by mu; Shutdown has begun
  bool stopped = false;    // guarded by mu; Shutdown has finished
};

Orchestrator::Orchestrator(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}

Orchestrator::~Orchestrator() { Shutdown(); }

StatusOr<std::unique_ptr<Orchestrator>> Orchestrator::Start(OrchestratorOptions options) {
  auto impl = std::make_unique<Impl>();
  impl->options = std::move(options);
  auto& o = impl->options;

  std::error_code ec;
  std::filesystem::create_directories(o.data_dir, ec);
  if (ec) {
    return Unavailable("cannot create data directory " + o.data_dir + ": " + ec.message());
  }
  auto store = OpenSqliteStore((std::filesystem::path(o.data_dir) / "lockstep.db").string());
  if (!store.ok()) return store.status();
  impl->store = std::move(*store);
  impl->hub = std::make_unique<Hub>(o.clock, o.heartbeat_interval_ms);
  impl->engine = std::make_unique<Engine>(o.pipelines, impl->store.get(), o.clock, impl->hub.get());

  impl->agent_service = MakeAgentService(impl->hub.get());
  impl->control_service =
      MakeControlService(impl->engine.get(), impl->store.get(), impl->hub.get());

  grpc::ServerBuilder builder;
  builder.AddListeningPort(o.grpc_listen, grpc::InsecureServerCredentials(), &impl->grpc_port);
  // Without this, gRPC sets SO_REUSEPORT and a second lockstepd would share the port.
  builder.AddChannelArgument(GRPC_ARG_ALLOW_REUSEPORT, 0);
  builder.RegisterService(impl->agent_service.get());
  builder.RegisterService(impl->control_service.get());
  // Detect agents whose connection died silently (no FIN): ping idle streams.
  builder.AddChannelArgument(GRPC_ARG_KEEPALIVE_TIME_MS, 10000);
  builder.AddChannelArgument(GRPC_ARG_KEEPALIVE_TIMEOUT_MS, 5000);
  builder.AddChannelArgument(GRPC_ARG_KEEPALIVE_PERMIT_WITHOUT_CALLS, 1);
  builder.AddChannelArgument(GRPC_ARG_HTTP2_MIN_RECV_PING_INTERVAL_WITHOUT_DATA_MS, 5000);
  builder.AddChannelArgument(GRPC_ARG_HTTP2_MAX_PING_STRIKES, 0);
  impl->server = builder.BuildAndStart();
  if (!impl->server || impl->grpc_port == 0) {
    return Unavailable("cannot listen on " + o.grpc_listen +
                       " for gRPC (address in use or invalid)");
  }
  Hub* hub = impl->hub.get();
  Engine* engine = impl->engine.get();
  impl->engine_thread = std::thread([hub, engine] { hub->Run(engine); });
  hub->Kick();  // resume whatever was in flight when the last process stopped
  spdlog::info("lockstepd serving gRPC on port {} with {} pipeline(s), store {}/lockstep.db",
               impl->grpc_port, o.pipelines.size(), o.data_dir);
  return std::unique_ptr<Orchestrator>(new Orchestrator(std::move(impl)));
}

int Orchestrator::grpc_port() const { return impl_->grpc_port; }

void Orchestrator::Wait() {
  std::unique_lock lock(impl_->mu);
  impl_->cv.wait(lock, [&] { return impl_->stopped; });
}

void Orchestrator::Shutdown() {
  {
    std::lock_guard lock(impl_->mu);
    if (impl_->shut_down) return;
    impl_->shut_down = true;
  }
  // Stop taking RPCs first (streams are cancelled), then the engine loop; the store's last
  // committed pass is the state a restart resumes from.
  impl_->server->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(2));
  impl_->hub->Stop();
  if (impl_->engine_thread.joinable()) impl_->engine_thread.join();
  {
    std::lock_guard lock(impl_->mu);
    impl_->stopped = true;
  }
  impl_->cv.notify_all();
}

}  // namespace lockstep
