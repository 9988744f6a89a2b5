#include "agents/connection.h"

#include <grpcpp/grpcpp.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <mutex>
#include <optional>
#include <random>
#include <thread>
#include <vector>

#include "agents/credential.h"
#include "agents/executor.h"
#include "common/standby.h"
#include "common/version.h"
#include "proto/lockstep.grpc.pb.h"

namespace lockstep::agent {

using Stream = grpc::ClientReaderWriter<v1::AgentMessage, v1::ServerMessage>;

namespace {

// Keepalive for a liveness timeout: a ping after 3/4 of it without hearing from lockstepd,
// answered within the last quarter, so a lockstepd that stopped answering is given up within
// the liveness timeout. Each ping is a wake-up for lockstepd (times every agent), so they are
// as rare as that allows; the same ping tells lockstepd's transport this agent is alive.
int64_t KeepaliveTimeFor(int64_t liveness_ms) {
  return std::max<int64_t>(liveness_ms * 3 / 4, 500);
}
int64_t KeepaliveTimeoutFor(int64_t liveness_ms) { return std::max<int64_t>(liveness_ms / 4, 250); }

}  // namespace

// How one session ended.
struct SessionEnd {
  bool welcomed = false;
  std::string leader;    // a standby named the leader: go there next, at once
  bool standby = false;  // a standby answered: a takeover may be under way
  bool retune = false;   // the welcome asked for a shorter keepalive: reconnect with it
};

struct Connection::Impl {
  Impl(ConnectionOptions o, Executor* e, const Clock* c)
      : options(std::move(o)), executor(e), clock(c), backoff_alarm(c->NewAlarm()) {}

  const ConnectionOptions options;
  Executor* const executor;
  const Clock* const clock;

  std::string credential;  // this host's own credential; "" until enrolled (Session thread)
  std::string target;      // the server of the current session (Run's thread)
  // The newest leader epoch seen in a welcome, task or gate check; older ones are refused.
  std::atomic<int64_t> newest_epoch{0};
  // The liveness timeout the last welcome gave; the keepalive of the next channel follows it.
  // The first channel's assumes the default agent_lost (30 s): lockstepd gives 4/5 of it.
  std::atomic<int64_t> liveness_ms{24'000};

  // Run's thread sleeps here between connection attempts; Stop wakes it.
  const std::unique_ptr<Alarm> backoff_alarm;

  std::mutex mu;                           // before any alarm's own lock
  bool stopping = false;                   // guarded by mu
  grpc::ClientContext* context = nullptr;  // guarded by mu; the live call, if any
  std::condition_variable session_over;    // notified (with mu) when `context` is cleared

  // Writes may block on flow control, so they have their own lock: Stop (under mu) can
  // always cancel the call, which unblocks them.
  std::mutex write_mu;
  Stream* stream = nullptr;    // guarded by write_mu
  bool welcomed = false;       // guarded by write_mu
  bool send_progress = false;  // guarded by write_mu; as the welcome asked

  bool Write(const v1::AgentMessage& msg) {
    std::lock_guard lock(write_mu);
    if (!stream || !welcomed || (msg.has_progress() && !send_progress)) return false;
    return stream->Write(msg);
  }

  // Waits up to `d` of the clock's time or until Stop. Returns false if stopping.
  bool Sleep(std::chrono::milliseconds d) {
    {
      std::lock_guard lock(mu);
      if (stopping) return false;
    }
    backoff_alarm->WaitFor(d);  // a Stop after the check above still ends it: Wakes are kept
    std::lock_guard lock(mu);
    return !stopping;
  }

  // Sends a heartbeat every interval (as last set by lockstepd) until `stop`; with
  // `on_change` (lockstepd watches liveness itself, Welcome.heartbeat_on_change) only when the
  // running version differs from the one last sent. Each wait is drawn from 90-110 % of the
  // interval, and the first from anywhere in it: agents that connected together, as after a
  // lockstepd restart, do not all beat in the same instant. Sleeps on `alarm`, which is woken
  // whenever `stop` or `retuned` is set.
  void Heartbeats(std::mutex& hb_mu, Alarm& alarm, const bool& stop, const int64_t& interval_ms,
                  bool& retuned, bool on_change, std::string said_in_hello) {
    // The version lockstepd last heard from this agent: on a change only, the hello counts.
    std::optional<std::string> sent;
    if (on_change) sent = std::move(said_in_hello);
    std::mt19937_64 rng(std::random_device{}());
    std::unique_lock lock(hb_mu);
    auto draw = [&](double lo, double hi) {  // REQUIRES: hb_mu held (reads interval_ms)
      std::uniform_real_distribution<double> share(lo, hi);
      return clock->Monotonic() + std::chrono::milliseconds(static_cast<int64_t>(
                                      share(rng) * static_cast<double>(interval_ms)));
    };
    retuned = false;
    auto next = draw(0.0, 1.0);
    for (;;) {
      if (stop) return;
      if (retuned) {
        retuned = false;
        next = draw(0.0, 1.0);
        continue;
      }
      if (clock->Monotonic() < next) {
        lock.unlock();
        alarm.WaitUntil(next);
        lock.lock();
        continue;
      }
      next = draw(0.9, 1.1);
      lock.unlock();
      {
        // The version is read under the write lock so that a heartbeat never reaches the
        // orchestrator after a task result it predates: a stale version there would read as
        // drift and make a host look as if it ran the other release.
        std::lock_guard write_lock(write_mu);
        if (stream && welcomed) {
          std::string version = executor->CurrentVersion();
          if (!on_change || version != sent) {
            v1::AgentMessage m;
            m.mutable_heartbeat()->set_current_version(version);
            stream->Write(m);
            sent = std::move(version);
          }
        }
      }
      lock.lock();
    }
  }

  // Whether a message stamped with `epoch` may be acted on: not from a deposed leader.
  bool Current(int64_t epoch, const char* what) {
    int64_t newest = newest_epoch.load();
    if (epoch < newest) {
      spdlog::warn("refused a {} of leader epoch {} from {}: epoch {} has been seen", what, epoch,
                   target, newest);
      return false;
    }
    while (epoch > newest && !newest_epoch.compare_exchange_weak(newest, epoch)) {
    }
    return true;
  }

  // One connection attempt, until the stream ends. `keepalive_for` is the liveness timeout
  // the channel's keepalive was tuned to.
  SessionEnd Session(v1::AgentService::Stub& stub, int64_t keepalive_for) {
    SessionEnd end;
    grpc::ClientContext ctx;
    std::unique_ptr<Stream> call;
    {
      std::lock_guard lock(mu);
      if (stopping) return end;
      context = &ctx;
    }
    call = stub.Connect(&ctx);
    {
      std::lock_guard lock(write_mu);
      stream = call.get();
      welcomed = false;
    }
    v1::AgentMessage hello;
    auto* h = hello.mutable_hello();
    h->set_name(options.name);
    h->set_region(options.region);
    h->set_pipeline(options.pipeline);
    h->set_token(options.token);
    h->set_credential(credential);
    h->set_keeps_credential(true);
    const std::string hello_version = executor->CurrentVersion();
    h->set_current_version(hello_version);
    for (const auto& v : executor->VersionsOnDisk()) h->add_versions_on_disk(v);
    h->set_agent_version(std::string(LockstepVersion()) + " (" + LockstepCommit() + ")");
    bool ok;
    {
      std::lock_guard lock(write_mu);
      ok = call->Write(hello);
    }

    bool got_welcome = false;
    std::thread heartbeat;
    std::mutex hb_mu;
    // The heartbeat thread sleeps here; set_interval and the end of the session wake it.
    const std::unique_ptr<Alarm> hb_alarm = clock->NewAlarm();
    bool hb_stop = false;        // guarded by hb_mu
    int64_t hb_interval_ms = 0;  // guarded by hb_mu; lockstepd's latest word
    bool hb_retuned = false;     // guarded by hb_mu
    auto set_interval = [&](int64_t ms) {
      {
        std::lock_guard lock(hb_mu);
        hb_interval_ms = std::max<int64_t>(100, ms);
        hb_retuned = true;
      }
      hb_alarm->Wake();
    };
    v1::ServerMessage in;
    while (ok && call->Read(&in)) {
      if (in.has_welcome()) {
        if (!Current(in.welcome().epoch(), "welcome")) {
          ctx.TryCancel();  // a deposed leader: try the next server
          break;
        }
        got_welcome = true;
        if (!in.welcome().credential().empty()) {
          // Enrolled: from now on this host proves itself with its own credential.
          credential = in.welcome().credential();
          if (!options.credential_file.empty()) {
            if (Status st = SaveHostCredential(options.credential_file, credential); !st.ok()) {
              spdlog::error("{}; this host will have to be re-enrolled after a restart",
                            st.message());
            }
          }
          spdlog::info("enrolled: credential kept in {}",
                       options.credential_file.empty() ? "memory" : options.credential_file);
        }
        // After the credential is kept: a retune reconnects with it.
        if (int64_t liveness = in.welcome().liveness_timeout_ms(); liveness > 0) {
          liveness_ms = liveness;
          if (liveness < keepalive_for) {
            // This channel would notice a frozen lockstepd too late: reconnect with one that
            // does not (once; the next channel is tuned to this).
            spdlog::info("reconnecting to {} to notice an unresponsive lockstepd within {} ms",
                         target, liveness);
            end.retune = true;
            ctx.TryCancel();
            break;
          }
        }
        {
          std::lock_guard lock(write_mu);
          welcomed = true;
          send_progress = in.welcome().send_progress();
        }
        spdlog::info("connected to {} (pipeline {}, leader epoch {})", target,
                     in.welcome().pipeline(), in.welcome().epoch());
        set_interval(in.welcome().heartbeat_interval_ms());
        if (!heartbeat.joinable()) {
          heartbeat = std::thread([&, on_change = in.welcome().heartbeat_on_change()] {
            Heartbeats(hb_mu, *hb_alarm, hb_stop, hb_interval_ms, hb_retuned, on_change,
                       hello_version);
          });
        }
      } else if (in.has_settings()) {
        spdlog::debug("heartbeats every {} ms from now on", in.settings().heartbeat_interval_ms());
        set_interval(in.settings().heartbeat_interval_ms());
      } else if (in.has_reject()) {
        spdlog::error("refused by {}: {}", target, in.reject().reason());
      } else if (in.has_task()) {
        if (Current(in.task().epoch(), "task")) executor->Submit(in.task());
      } else if (in.has_gate_check()) {
        if (Current(in.gate_check().epoch(), "gate check")) {
          executor->SubmitGateCheck(in.gate_check());
        }
      }
    }
    {
      std::lock_guard lock(hb_mu);
      hb_stop = true;
    }
    hb_alarm->Wake();
    if (heartbeat.joinable()) heartbeat.join();
    {
      std::lock_guard lock(write_mu);
      stream = nullptr;
      welcomed = false;
    }
    grpc::Status st = call->Finish();
    {
      std::lock_guard lock(mu);
      context = nullptr;
    }
    session_over.notify_all();
    if (!st.ok() && st.error_code() != grpc::StatusCode::CANCELLED) {
      spdlog::warn("stream to {} ended: {}", target, st.error_message());
    }
    if (st.error_code() == grpc::StatusCode::UNAVAILABLE) {
      end.leader = LeaderNamedIn(st.error_message());
      end.standby = st.error_message().find("standby") != std::string::npos;
    }
    end.welcomed = got_welcome;
    return end;
  }
};

Connection::Connection(ConnectionOptions options, Executor* executor, const Clock* clock)
    : impl_(std::make_unique<Impl>(std::move(options), executor, clock)) {}

Connection::~Connection() { Stop(); }

Status Connection::Run() {
  if (!impl_->options.credential_file.empty()) {
    LOCKSTEP_ASSIGN_OR_RETURN(auto stored, LoadHostCredential(impl_->options.credential_file));
    impl_->credential = stored;
  }
  const std::vector<std::string> servers = SplitServerList(impl_->options.server);
  if (servers.empty()) return InvalidArgument("--server: no address given");
  std::mt19937 rng(std::random_device{}());
  // Capped well below any sensible agent_lost, so an orchestrator that comes back finds
  // every agent again within a couple of seconds.
  constexpr auto kMin = std::chrono::milliseconds(100);
  constexpr auto kMax = std::chrono::milliseconds(2000);
  // Redirects followed in a row without a welcome before backing off: two standbys that
  // name each other (a lease in flux) must not make the agent spin.
  constexpr int kMaxRedirects = 3;
  // Between asks of a standby during a takeover (plus up to as much jitter).
  constexpr auto kStandbyRetry = std::chrono::milliseconds(200);
  constexpr auto kConnectTimeout = std::chrono::milliseconds(3000);
  constexpr auto kRecheckUnreachable = std::chrono::milliseconds(1000);
  auto backoff = kMin;
  size_t next = 0;
  int redirects = 0;
  std::string redirect;
  // The last server that could not be reached, and when. A standby naming it as the leader
  // within kRecheckUnreachable of that is asked again instead of followed (it has not taken
  // over yet); later the name is followed again (the leader may be back, at the same address).
  std::string unreachable;
  MonoTime unreachable_at{};
  for (;;) {
    impl_->target = !redirect.empty() ? redirect : servers[next % servers.size()];
    const int64_t liveness = impl_->liveness_ms.load();
    grpc::ChannelArguments args;
    // A lockstepd that stops answering with its connection open (frozen, or its host gone)
    // is noticed by keepalive pings within the liveness timeout lockstepd asked for;
    // with keepalive on, gRPC also sets TCP_USER_TIMEOUT, which fails the connection when a
    // ping goes unacknowledged. Pings are answered by lockstepd's transport, not its engine.
    args.SetInt(GRPC_ARG_KEEPALIVE_TIME_MS, static_cast<int>(KeepaliveTimeFor(liveness)));
    args.SetInt(GRPC_ARG_KEEPALIVE_TIMEOUT_MS, static_cast<int>(KeepaliveTimeoutFor(liveness)));
    args.SetInt(GRPC_ARG_KEEPALIVE_PERMIT_WITHOUT_CALLS, 1);
    // A frozen lockstepd still accepts TCP connections (its kernel does) but never finishes
    // the HTTP/2 handshake: give up on a connection attempt after this, not gRPC's 20 s.
    args.SetInt(GRPC_ARG_MIN_RECONNECT_BACKOFF_MS, static_cast<int>(kConnectTimeout.count()));
    args.SetInt(GRPC_ARG_HTTP2_MAX_PINGS_WITHOUT_DATA, 0);
    // An idle agent sends no data (heartbeats come only with a change): without this, gRPC
    // would space its keepalive pings five minutes apart.
    args.SetInt(GRPC_ARG_HTTP2_MIN_SENT_PING_INTERVAL_WITHOUT_DATA_MS,
                static_cast<int>(KeepaliveTimeFor(liveness)));
    // One connection per host: gRPC shares a connection between channels with equal
    // arguments, and lockstepd allows few streams per connection. A real agent is alone in
    // its process; hosts simulated in one process (the fleet benchmark) must not queue
    // behind each other.
    args.SetString("lockstep.agent", impl_->options.name);
    // A fresh channel per attempt: a channel that failed to connect keeps failing calls fast
    // for its own backoff period, even after the server is back.
    auto credentials = ChannelCredentialsFrom(impl_->options.tls);  // checked at start-up
    auto channel = grpc::CreateCustomChannel(
        impl_->target, credentials.ok() ? *credentials : grpc::InsecureChannelCredentials(), args);
    auto stub = v1::AgentService::NewStub(channel);
    SessionEnd end = impl_->Session(*stub, liveness);
    const std::string tried = impl_->target;
    const bool was_redirect = !redirect.empty();
    redirect.clear();
    if (end.welcomed || end.retune) {
      backoff = kMin;
      redirects = 0;
      unreachable.clear();
    }
    if (end.retune) continue;  // at once, to the same server
    const bool just_failed = end.leader == unreachable &&
                             impl_->clock->Monotonic() - unreachable_at < kRecheckUnreachable;
    if (!end.leader.empty() && end.leader != tried && !just_failed && redirects < kMaxRedirects) {
      // A standby named the leader: straight there, no backoff.
      ++redirects;
      spdlog::info("{} is a standby; following it to the leader at {}", tried, end.leader);
      redirect = end.leader;
      if (!impl_->Sleep(std::chrono::milliseconds(0))) return Status::Ok();
      continue;
    }
    redirects = 0;
    if (end.standby) {
      // A standby answered, naming no leader or the one this agent just failed to reach: a
      // takeover is under way, and this standby may lead within the lease's ttl. Ask it again
      // soon rather than after a backoff grown while the leader was unreachable.
      std::uniform_int_distribution<int64_t> jitter(0, kStandbyRetry.count());
      if (!impl_->Sleep(kStandbyRetry + std::chrono::milliseconds(jitter(rng)))) {
        return Status::Ok();
      }
      backoff = kMin;
      redirect = tried;
      continue;
    }
    unreachable = tried;
    unreachable_at = impl_->clock->Monotonic();
    // The server after the one that failed (a leader that went away, or a redirect that
    // failed), not the one after where this agent first came in: that may be the same one.
    if (auto at = std::find(servers.begin(), servers.end(), tried); at != servers.end()) {
      next = static_cast<size_t>(at - servers.begin()) + 1;
    } else if (!was_redirect) {
      ++next;
    }
    std::uniform_int_distribution<int64_t> jitter(0, backoff.count() / 2);
    auto wait = backoff + std::chrono::milliseconds(jitter(rng));
    if (!impl_->Sleep(wait)) return Status::Ok();
    // Back off only once every server was tried.
    if (next % servers.size() == 0) backoff = std::min(kMax, backoff * 2);
  }
}

void Connection::Stop() {
  bool live = false;
  {
    std::lock_guard lock(impl_->mu);
    impl_->stopping = true;
    live = impl_->context != nullptr;
  }
  impl_->backoff_alarm->Wake();
  if (!live) return;
  // The stream is ended cleanly first: a half-close, which lockstepd answers by finishing the
  // call. lockstepd then counts this host's silence from now, as for a host that left, not
  // from its keepalive bound, as for a connection that broke (agent_lost would otherwise run
  // out sooner for an agent restarted in the middle of a release). A write blocked on flow
  // control, or a lockstepd that does not finish the call within a second, gets it cancelled.
  bool half_closed = false;
  {
    std::unique_lock write_lock(impl_->write_mu, std::try_to_lock);
    if (write_lock.owns_lock() && impl_->stream) {
      half_closed = impl_->stream->WritesDone();
      impl_->stream = nullptr;  // nothing may be written after the half-close
      impl_->welcomed = false;
    }
  }
  std::unique_lock lock(impl_->mu);
  if (half_closed) {
    impl_->session_over.wait_for(lock, std::chrono::seconds(1),
                                 [&] { return impl_->context == nullptr; });
  }
  if (impl_->context) impl_->context->TryCancel();
}

void Connection::SendProgress(const v1::TaskProgress& p) {
  spdlog::info("task {} {}: {}", p.task_id(), p.step(), p.output());
  v1::AgentMessage m;
  *m.mutable_progress() = p;
  impl_->Write(m);
}

void Connection::SendVerdict(const v1::GateVerdict& v) {
  v1::AgentMessage m;
  *m.mutable_gate_verdict() = v;
  impl_->Write(m);
}

void Connection::SendResult(const v1::TaskResult& r) {
  v1::AgentMessage m;
  *m.mutable_result() = r;
  if (!impl_->Write(m)) {
    spdlog::info("result of {} kept for the next connection", r.task_id());
  }
}

}  // namespace lockstep::agent
