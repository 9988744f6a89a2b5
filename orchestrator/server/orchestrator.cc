#include "orchestrator/server/orchestrator.h"

#include <grpcpp/grpcpp.h>
#include <grpcpp/impl/service_type.h>
#include <spdlog/spdlog.h>
#include <sys/stat.h>

#include <algorithm>
#include <cerrno>
#include <condition_variable>
#include <filesystem>
#include <thread>

#include "orchestrator/auth/authenticator.h"
#include "orchestrator/engine/engine.h"
#include "orchestrator/notify/notifier.h"
#include "orchestrator/server/http_api.h"
#include "orchestrator/server/hub.h"
#include "orchestrator/server/observers.h"
#include "orchestrator/server/operations.h"
#include "orchestrator/server/services.h"
#include "orchestrator/server/store_guard.h"
#include "orchestrator/server/watchers.h"
#include "orchestrator/store/store.h"
#include "orchestrator/webhook/github_trigger.h"

namespace lockstep {

namespace {
constexpr int kMaxGrpcMessageBytes = 1 << 20;
}  // namespace

struct Orchestrator::Impl {
  OrchestratorOptions options;
  std::unique_ptr<StoreGuard> store;
  // The live views (WatchRelease, WatchStatus), and the store the engine writes through,
  // which tells them what each commit changed.
  std::unique_ptr<Watchers> watchers;
  std::unique_ptr<PublishingStore> engine_store;
  std::unique_ptr<Authenticator> auth;
  std::unique_ptr<Engine> engine;
  std::unique_ptr<Hub> hub;
  std::unique_ptr<Operations> operations;  // both front doors: control service and HTTP API
  std::unique_ptr<grpc::Service> agent_service;
  std::unique_ptr<grpc::Service> control_service;
  std::unique_ptr<grpc::Server> server;
  std::unique_ptr<HttpApi> http;
  // Release events go to the HTTP event streams and to each pipeline's notify webhooks.
  std::unique_ptr<Notifier> notifier;
  std::unique_ptr<ReleaseNotifications> notifications;
  std::unique_ptr<FanOutObserver> observers;
  std::thread engine_thread;
  int grpc_port = 0;
  int http_port = 0;
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
  // The data directory holds the store and the bootstrap admin token: lockstepd's user only.
  if (::chmod(o.data_dir.c_str(), 0700) != 0) {
    return Unavailable("cannot make data directory " + o.data_dir + " private (mode 0700)");
  }
  const std::string db_path = (std::filesystem::path(o.data_dir) / "lockstep.db").string();
  LOCKSTEP_ASSIGN_OR_RETURN(auto store, OpenSqliteStore(db_path));
  for (const char* suffix : {"", "-wal", "-shm"}) {
    std::string f = db_path + suffix;
    if (::chmod(f.c_str(), 0600) != 0 && errno != ENOENT) {
      return Unavailable("cannot make " + f + " private (mode 0600)");
    }
  }
  // Everything reaches the store through the guard, so a disk that refuses writes turns into
  // "unavailable" answers and an unhealthy /healthz rather than anonymous internal errors.
  impl->store = std::make_unique<StoreGuard>(std::move(store));
  impl->auth = std::make_unique<Authenticator>(impl->store.get(), o.clock);
  std::string token_file = o.bootstrap_token_file.empty()
                               ? (std::filesystem::path(o.data_dir) / "admin-token").string()
                               : o.bootstrap_token_file;
  LOCKSTEP_ASSIGN_OR_RETURN(auto bootstrapped, impl->auth->Bootstrap(token_file));
  if (bootstrapped) spdlog::info("first start: admin token written to {}", token_file);
  HeartbeatPolicy heartbeats;
  if (o.heartbeat_interval_ms > 0) {
    heartbeats.base_ms = heartbeats.ceiling_ms = o.heartbeat_interval_ms;
  } else {
    int64_t lost = INT64_MAX;
    for (const auto& p : o.pipelines) lost = std::min<int64_t>(lost, p.timeouts.agent_lost.count());
    if (lost == INT64_MAX) lost = 30'000;
    heartbeats.base_ms = std::clamp<int64_t>(lost / 3, 1000, 10'000);
    heartbeats.ceiling_ms = std::max<int64_t>(heartbeats.base_ms, lost / 3);
  }
  impl->hub = std::make_unique<Hub>(o.clock, heartbeats, impl->auth.get());
  WatchLimits watch_limits;
  watch_limits.max_watches = o.max_watches;
  impl->watchers = std::make_unique<Watchers>(o.clock, watch_limits);
  impl->engine_store = std::make_unique<PublishingStore>(impl->store.get(), impl->watchers.get());
  impl->engine =
      std::make_unique<Engine>(o.pipelines, impl->engine_store.get(), o.clock, impl->hub.get());
  // A revoked token's watches end at once: they read their next view with it.
  Watchers* watchers = impl->watchers.get();
  impl->auth->OnRevoke([watchers](const std::string& /*token_name*/) { watchers->Touch(); });

  impl->agent_service = MakeAgentService(
      impl->hub.get(), AgentServiceLimits{o.hello_timeout_ms, o.max_pending_streams_per_peer,
                                          o.max_pending_streams});
  impl->operations = std::make_unique<Operations>(impl->engine.get(), impl->store.get(),
                                                  impl->hub.get(), impl->auth.get());
  impl->operations->set_watchers(impl->watchers.get());
  impl->control_service = MakeControlService(impl->operations.get());

  LOCKSTEP_ASSIGN_OR_RETURN(auto credentials, ServerCredentialsFrom(o.tls));
  grpc::ServerBuilder builder;
  builder.AddListeningPort(o.grpc_listen, credentials, &impl->grpc_port);
  // Without this, gRPC sets SO_REUSEPORT and a second lockstepd would share the port.
  builder.AddChannelArgument(GRPC_ARG_ALLOW_REUSEPORT, 0);
  builder.RegisterService(impl->agent_service.get());
  builder.RegisterService(impl->control_service.get());
  // Detect agents whose connection died silently (no FIN): ping idle streams. The engine
  // already counts a silent agent as lost after agent_lost; this only frees the stream, so
  // it can be rare (each ping is a wake-up of lockstepd for every agent).
  builder.AddChannelArgument(GRPC_ARG_KEEPALIVE_TIME_MS, 120000);
  builder.AddChannelArgument(GRPC_ARG_KEEPALIVE_TIMEOUT_MS, 10000);
  builder.AddChannelArgument(GRPC_ARG_KEEPALIVE_PERMIT_WITHOUT_CALLS, 1);
  builder.AddChannelArgument(GRPC_ARG_HTTP2_MIN_RECV_PING_INTERVAL_WITHOUT_DATA_MS, 5000);
  builder.AddChannelArgument(GRPC_ARG_HTTP2_MAX_PING_STRIKES, 0);
  // Agents and the CLI send small messages (the largest is a task result with a bounded
  // output tail); a peer cannot make lockstepd buffer a large one. A connection carries
  // one agent stream or a few CLI calls, not hundreds.
  builder.SetMaxReceiveMessageSize(kMaxGrpcMessageBytes);
  builder.AddChannelArgument(GRPC_ARG_MAX_CONCURRENT_STREAMS, 32);
  impl->server = builder.BuildAndStart();
  if (!impl->server || impl->grpc_port == 0) {
    return Unavailable("cannot listen on " + o.grpc_listen +
                       " for gRPC (address in use or invalid)");
  }
  if (!o.http_listen.empty()) {
    HttpApiOptions ho;
    ho.listen = o.http_listen;
    ho.web_dir = o.web_dir;
    ho.allowed_hosts = o.http_allowed_hosts;
    ho.max_connections_per_client = o.http_max_connections_per_client;
    ho.request_timeout_ms = o.http_request_timeout_ms;
    ho.max_event_streams = o.http_max_event_streams;
    StoreGuard* guard = impl->store.get();
    ho.health = [guard] { return guard->WriteHealth(); };
    auto http = HttpApi::Start(ho, impl->operations.get(), impl->engine.get(), impl->store.get(),
                               impl->hub.get(), impl->auth.get(), o.clock);
    if (!http.ok()) {
      impl->server->Shutdown();
      return http.status();
    }
    impl->http = std::move(*http);
    impl->http_port = impl->http->port();
  }
  impl->notifier = std::make_unique<Notifier>(NotifierOptions{}, o.clock);
  impl->notifications = std::make_unique<ReleaseNotifications>(impl->notifier.get());
  impl->observers = std::make_unique<FanOutObserver>(
      std::vector<EngineObserver*>{impl->notifications.get(), impl->http.get(), watchers});
  impl->engine->set_observer(impl->observers.get());
  Hub* hub = impl->hub.get();
  Engine* engine = impl->engine.get();
  impl->engine_thread = std::thread([hub, engine] { hub->Run(engine); });
  hub->Kick();  // resume whatever was in flight when the last process stopped
  spdlog::info("lockstepd serving gRPC on port {}, HTTP on port {}, {} pipeline(s), store {}",
               impl->grpc_port, impl->http_port, o.pipelines.size(),
               (std::filesystem::path(o.data_dir) / "lockstep.db").string());
  return std::unique_ptr<Orchestrator>(new Orchestrator(std::move(impl)));
}

int Orchestrator::grpc_port() const { return impl_->grpc_port; }

int Orchestrator::http_port() const { return impl_->http_port; }

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
  // committed pass is the state a restart resumes from. Open watches are ended first: their
  // handlers wait on the Watchers, not on gRPC, and the server's shutdown waits for them.
  impl_->watchers->Shutdown();
  impl_->server->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(2));
  if (impl_->http) impl_->http->Stop();
  impl_->hub->Stop();
  if (impl_->engine_thread.joinable()) impl_->engine_thread.join();
  {
    std::lock_guard lock(impl_->mu);
    impl_->stopped = true;
  }
  impl_->cv.notify_all();
}

Status Orchestrator::ReloadPipelines() {
  Impl& impl = *impl_;
  const std::string& dir = impl.options.pipelines_dir;
  StatusOr<std::vector<Pipeline>> loaded = LoadPipelineDir(dir);
  Status refused = loaded.ok() ? Status::Ok() : loaded.status();
  if (refused.ok() && loaded->empty()) {
    refused = InvalidArgument("no pipeline files (*.yaml) in " + dir);
  }
  if (refused.ok()) refused = CheckGithubSecrets(*loaded);
  if (!refused.ok()) {
    spdlog::error("reload refused, the running pipelines stay: {}", refused.message());
    AuditRecord a;
    a.at = impl.options.clock->Now();
    a.actor = "signal:SIGHUP";
    a.action = "pipelines.reload";
    a.target = "pipelines";
    a.detail = refused.message();
    a.outcome = "refused";
    WriteBatch b;
    b.audit.push_back(std::move(a));
    if (Status st = impl.store->Write(b); !st.ok()) {
      spdlog::error("auditing the refused reload: {}", st.ToString());
    }
    return refused;
  }
  LOCKSTEP_RETURN_IF_ERROR(impl.hub->ReplacePipelines(std::move(*loaded), "signal:SIGHUP"));
  impl.watchers->Touch();  // open status watches show the new pipelines now
  return Status::Ok();
}

}  // namespace lockstep
