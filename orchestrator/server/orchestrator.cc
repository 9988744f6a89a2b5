#include "orchestrator/server/orchestrator.h"

#include <fcntl.h>
#include <grpcpp/grpcpp.h>
#include <grpcpp/impl/service_type.h>
#include <spdlog/spdlog.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <condition_variable>
#include <cstring>
#include <filesystem>
#include <optional>
#include <thread>

#include "common/random.h"
#include "orchestrator/auth/authenticator.h"
#include "orchestrator/engine/engine.h"
#include "orchestrator/notify/notifier.h"
#include "orchestrator/server/http_api.h"
#include "orchestrator/server/hub.h"
#include "orchestrator/server/leadership.h"
#include "orchestrator/server/observers.h"
#include "orchestrator/server/operations.h"
#include "orchestrator/server/outbox_relay.h"
#include "orchestrator/server/services.h"
#include "orchestrator/server/store_guard.h"
#include "orchestrator/server/watchers.h"
#include "orchestrator/store/store.h"
#include "orchestrator/webhook/github_trigger.h"

namespace lockstep {

namespace {
constexpr int kMaxGrpcMessageBytes = 1 << 20;

// One SQLite store has one owner: a lock file (DATA_DIR/lockstepd.lock, or PATH.lock for
// --store sqlite:PATH) is locked (flock) for the life of the process and holds its pid, so a
// second lockstepd on the same store refuses to start and names the first. The lock goes with
// the process, however it ends. Returns the fd.
StatusOr<int> LockStore(const std::string& path, const std::string& what) {
  int fd = ::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);
  if (fd < 0) return Unavailable("cannot open " + path + ": " + std::strerror(errno));
  if (::flock(fd, LOCK_EX | LOCK_NB) != 0) {
    char buf[32] = {};
    ssize_t n = ::pread(fd, buf, sizeof(buf) - 1, 0);
    ::close(fd);
    std::string pid = n > 0 ? std::string(buf, static_cast<size_t>(n)) : "";
    while (!pid.empty() && (pid.back() == '\n' || pid.back() == ' ')) pid.pop_back();
    return FailedPrecondition(what + " is in use by another lockstepd (pid " +
                              (pid.empty() ? std::string("unknown") : pid) + ", " + path +
                              "); one SQLite store has one owner: stop that process first, or "
                              "run several lockstepd on a shared PostgreSQL store (--store)");
  }
  const std::string mine = std::to_string(::getpid()) + "\n";
  if (::ftruncate(fd, 0) != 0 ||
      ::pwrite(fd, mine.data(), mine.size(), 0) != static_cast<ssize_t>(mine.size())) {
    ::close(fd);
    return Unavailable("cannot write " + path + ": " + std::strerror(errno));
  }
  return fd;
}

// "0.0.0.0:7400" with bound port 7401 -> "HOSTNAME:7401"; "127.0.0.1:0" -> "127.0.0.1:7401".
std::string AdvertisedAddress(const std::string& listen, int port) {
  std::string host = listen.substr(0, listen.rfind(':'));
  if (host.empty() || host == "0.0.0.0" || host == "[::]" || host == "::") {
    char name[256] = {};
    host = ::gethostname(name, sizeof(name) - 1) == 0 ? name : "localhost";
  }
  return host + ":" + std::to_string(port);
}

}  // namespace

struct Orchestrator::Impl {
  OrchestratorOptions options;
  int data_dir_lock = -1;  // the SQLite data directory's lock, held while the process lives
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
  std::unique_ptr<OutboxRelay> outbox;  // the leader delivers the notification outbox
  std::unique_ptr<FanOutObserver> observers;
  std::thread engine_thread;
  std::unique_ptr<Leadership> leadership;
  // Pipelines reloaded (SIGHUP) while standing by, put in force on election. Guarded by mu.
  std::optional<std::vector<Pipeline>> pending_pipelines;
  std::string token_file;  // where the first admin token is written
  Status bootstrap;        // how writing it went, if this process made it
  int exit_code = 0;       // guarded by mu
  int grpc_port = 0;
  int http_port = 0;
  mutable std::mutex mu;
  std::condition_variable cv;
  bool shut_down = false;  // guarded by mu; Shutdown has begun
  bool stopped = false;    // guarded by mu; Shutdown has finished
};

Orchestrator::Orchestrator(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}

Orchestrator::~Orchestrator() {
  Shutdown();
  if (impl_->data_dir_lock >= 0) ::close(impl_->data_dir_lock);
}

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
  // --store: empty (SQLite in the data directory), sqlite:PATH, or PostgreSQL.
  const bool sqlite_path = o.store.rfind("sqlite:", 0) == 0;
  const bool shared = !o.store.empty() && !sqlite_path;
  const std::string db_path = sqlite_path
                                  ? o.store.substr(std::strlen("sqlite:"))
                                  : (std::filesystem::path(o.data_dir) / "lockstep.db").string();
  if (sqlite_path && db_path.empty()) return InvalidArgument("--store sqlite:PATH: PATH is empty");
  std::unique_ptr<Store> store;
  if (shared) {
    LOCKSTEP_ASSIGN_OR_RETURN(store, OpenPostgresStore(o.store));
  } else {
    LOCKSTEP_ASSIGN_OR_RETURN(
        impl->data_dir_lock,
        sqlite_path ? LockStore(db_path + ".lock", "store " + db_path)
                    : LockStore((std::filesystem::path(o.data_dir) / "lockstepd.lock").string(),
                                "data directory " + o.data_dir));
    LOCKSTEP_ASSIGN_OR_RETURN(store, OpenSqliteStore(db_path));
    for (const char* suffix : {"", "-wal", "-shm"}) {
      std::string f = db_path + suffix;
      if (::chmod(f.c_str(), 0600) != 0 && errno != ENOENT) {
        return Unavailable("cannot make " + f + " private (mode 0600)");
      }
    }
  }
  // Everything reaches the store through the guard, so a disk that refuses writes turns into
  // "unavailable" answers and an unhealthy /healthz rather than anonymous internal errors.
  impl->store = std::make_unique<StoreGuard>(std::move(store));
  impl->auth = std::make_unique<Authenticator>(impl->store.get(), o.clock);
  impl->token_file = o.bootstrap_token_file.empty()
                         ? (std::filesystem::path(o.data_dir) / "admin-token").string()
                         : o.bootstrap_token_file;
  HeartbeatPolicy heartbeats;
  int64_t lost = INT64_MAX;
  for (const auto& p : o.pipelines) lost = std::min<int64_t>(lost, p.timeouts.agent_lost.count());
  if (lost == INT64_MAX) lost = 30'000;
  // Liveness in both directions from one HTTP/2 ping per connection, answered by gRPC's
  // transport without waking a Lockstep thread, instead of a heartbeat message per agent.
  // Agents ping every 3/4 of their liveness timeout (0.6 of agent_lost) and give up on a
  // lockstepd that does not answer within 1/4 of it: a frozen leader is left within 4/5 of
  // agent_lost. lockstepd pings a connection silent for 0.65 of agent_lost, which a live
  // agent's own ping (at 0.6) forestalls, and closes it when the ping goes unanswered for a
  // quarter of agent_lost (room for a busy host): an open stream is an agent heard within 0.9
  // of agent_lost. Each ping costs lockstepd a wake-up, so their interval is as long as these
  // bounds allow.
  heartbeats.liveness_timeout_ms = std::max<int64_t>(lost * 4 / 5, 1000);
  const int64_t keepalive_time_ms = std::max<int64_t>(lost * 13 / 20, 1000);
  const int64_t keepalive_timeout_ms = std::max<int64_t>(lost / 4, 500);
  heartbeats.transport_silence_ms = keepalive_time_ms + keepalive_timeout_ms;
  if (o.heartbeat_interval_ms > 0) {
    heartbeats.base_ms = heartbeats.ceiling_ms = o.heartbeat_interval_ms;
  } else {
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
  impl->engine->set_liveness_by_transport(true);
  // A revoked token's watches end at once: they read their next view with it.
  Watchers* watchers = impl->watchers.get();
  impl->auth->OnRevoke([watchers](const std::string& /*token_name*/) { watchers->Touch(); });

  // Leadership is decided after the servers listen (a standby must answer, to point callers
  // at the leader), but everything that asks it is wired now.
  Impl* raw = impl.get();
  auto standby = [raw]() -> std::string {
    return raw->leadership ? raw->leadership->Refusal() : "lockstepd is starting";
  };
  impl->store->set_leading([raw] { return raw->leadership && raw->leadership->leader(); });
  impl->agent_service = MakeAgentService(
      impl->hub.get(),
      AgentServiceLimits{o.hello_timeout_ms, o.max_pending_streams_per_peer, o.max_pending_streams},
      standby);
  impl->operations = std::make_unique<Operations>(impl->engine.get(), impl->store.get(),
                                                  impl->hub.get(), impl->auth.get());
  impl->operations->set_watchers(impl->watchers.get());
  impl->operations->set_standby(standby);
  impl->control_service = MakeControlService(impl->operations.get());

  LOCKSTEP_ASSIGN_OR_RETURN(auto credentials, ServerCredentialsFrom(o.tls));
  grpc::ServerBuilder builder;
  builder.AddListeningPort(o.grpc_listen, credentials, &impl->grpc_port);
  // Without this, gRPC sets SO_REUSEPORT and a second lockstepd would share the port.
  builder.AddChannelArgument(GRPC_ARG_ALLOW_REUSEPORT, 0);
  builder.RegisterService(impl->agent_service.get());
  builder.RegisterService(impl->control_service.get());
  // Agents' liveness (see transport_silence_ms above): a connection silent for the keepalive
  // time is pinged, and closed if the ping goes unanswered. Pings continue without data.
  // Agents ping more often (to notice a frozen lockstepd, Welcome.liveness_timeout_ms); any
  // rate is allowed.
  builder.AddChannelArgument(GRPC_ARG_KEEPALIVE_TIME_MS, static_cast<int>(keepalive_time_ms));
  builder.AddChannelArgument(GRPC_ARG_KEEPALIVE_TIMEOUT_MS, static_cast<int>(keepalive_timeout_ms));
  builder.AddChannelArgument(GRPC_ARG_KEEPALIVE_PERMIT_WITHOUT_CALLS, 1);
  builder.AddChannelArgument(GRPC_ARG_HTTP2_MAX_PINGS_WITHOUT_DATA, 0);
  // Without data on a connection gRPC would otherwise space its own pings five minutes apart.
  builder.AddChannelArgument(GRPC_ARG_HTTP2_MIN_SENT_PING_INTERVAL_WITHOUT_DATA_MS,
                             static_cast<int>(keepalive_time_ms));
  builder.AddChannelArgument(GRPC_ARG_HTTP2_MIN_RECV_PING_INTERVAL_WITHOUT_DATA_MS, 500);
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
    ho.leadership = [raw] { return raw->leadership ? raw->leadership->Current() : LeaderInfo(); };
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
  impl->outbox = std::make_unique<OutboxRelay>(impl->store.get(), impl->notifier.get(), o.clock);
  impl->engine->set_outbox(NotificationRows);
  impl->observers = std::make_unique<FanOutObserver>(
      std::vector<EngineObserver*>{impl->outbox.get(), impl->http.get(), watchers});
  impl->engine->set_observer(impl->observers.get());

  LeadershipOptions lo;
  char host[256] = {};
  ::gethostname(host, sizeof(host) - 1);
  lo.holder = std::string(host) + "/" + std::to_string(::getpid()) + "/" + RandomHex(4);
  lo.grpc_address = o.advertise_grpc.empty() ? AdvertisedAddress(o.grpc_listen, impl->grpc_port)
                                             : o.advertise_grpc;
  lo.http_url = !o.advertise_http.empty() ? o.advertise_http
                : impl->http_port > 0
                    ? "http://" + AdvertisedAddress(o.http_listen, impl->http_port)
                    : "";
  lo.ttl_ms = o.lease_ttl_ms;
  lo.sole_owner = !shared;
  StoreGuard* health_of = impl->store.get();
  lo.store_health = [health_of] { return health_of->WriteHealth(); };
  Leadership::Callbacks callbacks;
  callbacks.elected = [raw](int64_t epoch) { StartLeading(*raw, epoch); };
  callbacks.lost = [raw](const std::string& why) {
    {
      std::lock_guard lock(raw->mu);
      raw->exit_code = kLostLease;
    }
    spdlog::critical("stopping: {}", why);
    // Not on this thread: shutting down joins it.
    std::thread([raw] { StopImpl(*raw); }).detach();
  };
  impl->leadership =
      std::make_unique<Leadership>(impl->store.get(), o.clock, lo, std::move(callbacks));
  Status led = impl->leadership->Start();
  // A lone lockstepd that cannot write its first admin token would lock everyone out.
  if (led.ok() && !shared) led = impl->bootstrap;
  if (!led.ok()) {
    StopImpl(*impl);
    return led;
  }
  spdlog::info("lockstepd serving gRPC on port {}, HTTP on port {}, {} pipeline(s), store {}, {}",
               impl->grpc_port, impl->http_port, o.pipelines.size(),
               shared ? std::string("postgresql (shared)") : db_path,
               impl->leadership->leader() ? "leading" : "standing by");
  return std::unique_ptr<Orchestrator>(new Orchestrator(std::move(impl)));
}

void Orchestrator::StartLeading(Impl& impl, int64_t epoch) {
  if (auto bootstrapped = impl.auth->Bootstrap(impl.token_file); !bootstrapped.ok()) {
    impl.bootstrap = bootstrapped.status();
    spdlog::error("first admin token: {}", bootstrapped.status().ToString());
  } else if (*bootstrapped) {
    spdlog::info("first start: admin token written to {}", impl.token_file);
  }
  Leadership* lead = impl.leadership.get();
  impl.hub->SetLeadership(epoch, [lead] { return lead->HoldsLease(); });
  if (impl.http) impl.http->StartLeading();
  Hub* hub = impl.hub.get();
  Engine* engine = impl.engine.get();
  std::lock_guard lock(impl.mu);
  if (impl.shut_down) return;
  if (impl.pending_pipelines) {
    // Reloaded while standing by; the engine thread does not run yet, so this is the only
    // thread touching the engine.
    if (Status st = engine->ReplacePipelines(std::move(*impl.pending_pipelines), "signal:SIGHUP");
        !st.ok()) {
      spdlog::error("putting the reloaded pipelines in force: {}", st.ToString());
    }
    impl.pending_pipelines.reset();
  }
  impl.outbox->Start();  // notifications left pending by earlier leaders go out now
  impl.engine_thread = std::thread([hub, engine] { hub->Run(engine); });
  hub->Kick();  // resume whatever was in flight when the last leader stopped
}

int Orchestrator::grpc_port() const { return impl_->grpc_port; }

int Orchestrator::http_port() const { return impl_->http_port; }

void Orchestrator::Wait() {
  std::unique_lock lock(impl_->mu);
  impl_->cv.wait(lock, [&] { return impl_->stopped; });
}

void Orchestrator::Shutdown() { StopImpl(*impl_); }

int Orchestrator::exit_code() const {
  std::lock_guard lock(impl_->mu);
  return impl_->exit_code;
}

void Orchestrator::StopImpl(Impl& impl) {
  {
    std::lock_guard lock(impl.mu);
    if (impl.shut_down) return;
    impl.shut_down = true;
  }
  // Stop taking RPCs first (streams are cancelled), then the engine loop; the store's last
  // committed pass is the state a restart resumes from. Open watches are ended first: their
  // handlers wait on the Watchers, not on gRPC, and the server's shutdown waits for them.
  // The lease is given up last, once nothing more will be written or sent, so a standby
  // takes over at once instead of after the lease's ttl.
  impl.watchers->Shutdown();
  impl.server->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(2));
  if (impl.http) impl.http->Stop();
  impl.hub->Stop();
  if (impl.engine_thread.joinable()) impl.engine_thread.join();
  // Notifications not delivered by now stay pending in the outbox for the next leader.
  impl.outbox->Stop();
  if (impl.leadership) impl.leadership->Stop(/*give_up=*/true);
  {
    std::lock_guard lock(impl.mu);
    impl.stopped = true;
  }
  impl.cv.notify_all();
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
  {
    // A standby runs no engine to hand them to: it keeps them, and puts them in force when it
    // starts to lead (StartLeading), before its first pass.
    std::lock_guard lock(impl.mu);
    if (!impl.engine_thread.joinable()) {
      spdlog::info("reloaded {} pipeline(s); they are put in force when this lockstepd leads",
                   loaded->size());
      impl.pending_pipelines = std::move(*loaded);
      return Status::Ok();
    }
  }
  LOCKSTEP_RETURN_IF_ERROR(impl.hub->ReplacePipelines(std::move(*loaded), "signal:SIGHUP"));
  impl.watchers->Touch();  // open status watches show the new pipelines now
  return Status::Ok();
}

}  // namespace lockstep
