#include "agents/connection.h"

#include <grpcpp/grpcpp.h>
#include <spdlog/spdlog.h>

#include <mutex>
#include <random>
#include <thread>

#include "agents/credential.h"
#include "agents/executor.h"
#include "common/version.h"
#include "proto/lockstep.grpc.pb.h"

namespace lockstep::agent {

using Stream = grpc::ClientReaderWriter<v1::AgentMessage, v1::ServerMessage>;

struct Connection::Impl {
  Impl(ConnectionOptions o, Executor* e, const Clock* c)
      : options(std::move(o)), executor(e), clock(c), backoff_alarm(c->NewAlarm()) {}

  const ConnectionOptions options;
  Executor* const executor;
  const Clock* const clock;

  std::string credential;  // this host's own credential; "" until enrolled (Session thread)

  // Run's thread sleeps here between connection attempts; Stop wakes it.
  const std::unique_ptr<Alarm> backoff_alarm;

  std::mutex mu;                           // before any alarm's own lock
  bool stopping = false;                   // guarded by mu
  grpc::ClientContext* context = nullptr;  // guarded by mu; the live call, if any

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

  // Sends a heartbeat every interval (as last set by lockstepd) until `stop`. Each wait is
  // drawn from 90-110 % of the interval, and the first from anywhere in it: agents that
  // connected together, as after a lockstepd restart, do not all beat in the same instant.
  // Sleeps on `alarm`, which is woken whenever `stop` or `retuned` is set.
  void Heartbeats(std::mutex& hb_mu, Alarm& alarm, const bool& stop, const int64_t& interval_ms,
                  bool& retuned) {
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
          v1::AgentMessage m;
          m.mutable_heartbeat()->set_current_version(executor->CurrentVersion());
          stream->Write(m);
        }
      }
      lock.lock();
    }
  }

  // One connection attempt, until the stream ends. Returns true if it got a welcome.
  bool Session(v1::AgentService::Stub& stub) {
    grpc::ClientContext ctx;
    std::unique_ptr<Stream> call;
    {
      std::lock_guard lock(mu);
      if (stopping) return false;
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
    h->set_current_version(executor->CurrentVersion());
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
        {
          std::lock_guard lock(write_mu);
          welcomed = true;
          send_progress = in.welcome().send_progress();
        }
        spdlog::info("connected to {} (pipeline {})", options.server, in.welcome().pipeline());
        set_interval(in.welcome().heartbeat_interval_ms());
        if (!heartbeat.joinable()) {
          heartbeat = std::thread(
              [&] { Heartbeats(hb_mu, *hb_alarm, hb_stop, hb_interval_ms, hb_retuned); });
        }
      } else if (in.has_settings()) {
        spdlog::debug("heartbeats every {} ms from now on", in.settings().heartbeat_interval_ms());
        set_interval(in.settings().heartbeat_interval_ms());
      } else if (in.has_reject()) {
        spdlog::error("refused by {}: {}", options.server, in.reject().reason());
      } else if (in.has_task()) {
        executor->Submit(in.task());
      } else if (in.has_gate_check()) {
        executor->SubmitGateCheck(in.gate_check());
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
    if (!st.ok() && st.error_code() != grpc::StatusCode::CANCELLED) {
      spdlog::warn("stream to {} ended: {}", options.server, st.error_message());
    }
    return got_welcome;
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
  grpc::ChannelArguments args;
  // A lockstepd that hangs with its connection open is noticed within 70 s. One whose host or
  // network vanished is noticed sooner: with keepalive on, gRPC also sets TCP_USER_TIMEOUT
  // (10 s), which fails the connection when a heartbeat goes unacknowledged. Each ping costs
  // lockstepd a wake-up; at one a minute ten thousand agents send 170 a second.
  args.SetInt(GRPC_ARG_KEEPALIVE_TIME_MS, 60000);
  args.SetInt(GRPC_ARG_KEEPALIVE_TIMEOUT_MS, 10000);
  args.SetInt(GRPC_ARG_KEEPALIVE_PERMIT_WITHOUT_CALLS, 1);
  // One connection per host: gRPC shares a connection between channels with equal arguments,
  // and lockstepd allows few streams per connection. A real agent is alone in its process;
  // hosts simulated in one process (the fleet benchmark) must not queue behind each other.
  args.SetString("lockstep.agent", impl_->options.name);
  std::mt19937 rng(std::random_device{}());
  // Capped well below any sensible agent_lost, so an orchestrator that comes back finds
  // every agent again within a couple of seconds.
  constexpr auto kMin = std::chrono::milliseconds(100);
  constexpr auto kMax = std::chrono::milliseconds(2000);
  auto backoff = kMin;
  for (;;) {
    // A fresh channel per attempt: a channel that failed to connect keeps failing calls fast
    // for its own backoff period, even after the server is back.
    auto credentials = ChannelCredentialsFrom(impl_->options.tls);  // checked at start-up
    auto channel = grpc::CreateCustomChannel(
        impl_->options.server, credentials.ok() ? *credentials : grpc::InsecureChannelCredentials(),
        args);
    auto stub = v1::AgentService::NewStub(channel);
    bool welcomed = impl_->Session(*stub);
    if (welcomed) backoff = kMin;
    std::uniform_int_distribution<int64_t> jitter(0, backoff.count() / 2);
    auto wait = backoff + std::chrono::milliseconds(jitter(rng));
    if (!impl_->Sleep(wait)) return Status::Ok();
    backoff = std::min(kMax, backoff * 2);
  }
}

void Connection::Stop() {
  std::lock_guard lock(impl_->mu);
  impl_->stopping = true;
  if (impl_->context) impl_->context->TryCancel();
  impl_->backoff_alarm->Wake();
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
