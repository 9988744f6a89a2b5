#include "orchestrator/server/hub.h"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <chrono>
#include <future>
#include <vector>

#include "common/untrusted.h"
#include "orchestrator/auth/authenticator.h"
#include "orchestrator/server/hello_limits.h"

namespace lockstep {

int64_t HeartbeatPolicy::IntervalFor(size_t connected) const {
  const int64_t spread = static_cast<int64_t>(connected) * 1000 / kPerSecond;
  return std::clamp(spread, base_ms, std::max(base_ms, ceiling_ms));
}

Hub::Hub(const Clock* clock, HeartbeatPolicy heartbeats, const Authenticator* auth)
    : clock_(clock),
      heartbeats_(heartbeats),
      heartbeat_interval_ms_(heartbeats.IntervalFor(0)),
      auth_(auth),
      alarm_(clock->NewAlarm()) {}

void Hub::RetuneHeartbeats() {
  std::vector<std::shared_ptr<StreamHandle>> streams;
  int64_t want = 0;
  {
    absl::MutexLock lock(&mu_);
    want = heartbeats_.IntervalFor(streams_.size());
    if (2 * want < 3 * heartbeat_interval_ms_ && 3 * want > 2 * heartbeat_interval_ms_) return;
    heartbeat_interval_ms_ = want;
    streams.reserve(streams_.size());
    for (const auto& [name, stream] : streams_) streams.push_back(stream);
  }
  spdlog::info("{} agents connected: heartbeats every {} ms", streams.size(), want);
  lockstep::v1::ServerMessage settings;
  settings.mutable_settings()->set_heartbeat_interval_ms(want);
  for (const auto& s : streams) s->Deliver(settings);
}

void Hub::OnMessage(const std::shared_ptr<StreamHandle>& stream, lockstep::v1::AgentMessage msg) {
  // Heartbeats and progress lines wake nobody (see kLazyEventMs). Liveness is measured in tens
  // of seconds; waking the engine thread for each of ten thousand agents' heartbeats is what
  // would cost.
  const bool urgent = !msg.has_heartbeat() && !msg.has_progress();
  {
    absl::MutexLock lock(&mu_);
    inbox_.push_back(Event{stream, std::move(msg), nullptr});
    if (urgent) urgent_ = true;
  }
  if (urgent) alarm_->Wake();
}

void Hub::OnClosed(const std::shared_ptr<StreamHandle>& stream, bool clean) {
  {
    absl::MutexLock lock(&mu_);
    inbox_.push_back(Event{stream, std::nullopt, nullptr, clean});
    urgent_ = true;
  }
  alarm_->Wake();
}

void Hub::Kick() {
  {
    absl::MutexLock lock(&mu_);
    kicked_ = true;
  }
  alarm_->Wake();
}

void Hub::Stop() {
  {
    absl::MutexLock lock(&mu_);
    stopping_ = true;
  }
  alarm_->Wake();
}

void Hub::SetLeadership(int64_t epoch, std::function<bool()> may_send) {
  epoch_ = epoch;
  may_send_ = std::move(may_send);
}

bool Hub::Deliver(const std::string& agent, const lockstep::v1::ServerMessage& msg) {
  if (may_send_ && !may_send_()) {
    spdlog::warn("not sending to {}: the leader lease may have passed to another lockstepd", agent);
    return false;
  }
  std::shared_ptr<StreamHandle> stream;
  {
    absl::MutexLock lock(&mu_);
    auto it = streams_.find(agent);
    if (it == streams_.end()) return false;
    stream = it->second;
  }
  stream->Deliver(msg);
  return true;
}

bool Hub::Send(const std::string& agent, const lockstep::v1::Task& task) {
  lockstep::v1::ServerMessage msg;
  *msg.mutable_task() = task;
  msg.mutable_task()->set_epoch(epoch_);
  // The wall clock, not clock_: this records when the task really left, for measurements.
  msg.mutable_task()->set_sent_at_us(std::chrono::duration_cast<std::chrono::microseconds>(
                                         std::chrono::system_clock::now().time_since_epoch())
                                         .count());
  return Deliver(agent, msg);
}

bool Hub::SendGateCheck(const std::string& agent, const lockstep::v1::GateCheck& check) {
  lockstep::v1::ServerMessage msg;
  *msg.mutable_gate_check() = check;
  msg.mutable_gate_check()->set_epoch(epoch_);
  return Deliver(agent, msg);
}

bool Hub::Apply(Event& ev) {
  std::string name;
  {
    absl::MutexLock lock(&mu_);
    auto it = names_.find(ev.stream.get());
    if (it != names_.end()) name = it->second;
  }
  if (ev.task) {
    ev.task();
    return true;
  }
  if (!ev.msg) {  // stream closed
    // A broken connection was last vouched for by the transport this long ago at most.
    const int64_t silent_ms = ev.clean ? 0 : heartbeats_.transport_silence_ms;
    last_heard_.erase(ev.stream.get());
    if (name.empty()) return false;
    bool current = false;
    {
      absl::MutexLock lock(&mu_);
      names_.erase(ev.stream.get());
      auto it = streams_.find(name);
      if (it != streams_.end() && it->second == ev.stream) {
        streams_.erase(it);
        current = true;
      }
    }
    // A stream replaced by a newer connection of the same agent does not disconnect it.
    if (current) {
      RetuneHeartbeats();
      spdlog::info("agent {} disconnected", name);
      if (Status st = engine_->AgentDisconnected(name, silent_ms); !st.ok()) {
        spdlog::error("recording disconnect of {}: {}", name, st.ToString());
      }
    }
    return current;
  }

  auto& msg = *ev.msg;
  if (msg.has_hello()) {
    if (!name.empty()) return false;  // a second hello on one stream changes nothing
    return Hello(ev.stream, msg.hello());
  }
  if (name.empty()) {
    ev.stream->Close("the first message on a stream must be a hello");
    return false;
  }
  last_heard_[ev.stream.get()] = clock_->Now();
  // Even an authenticated agent sends only what fits: its words are stored and shown.
  if (msg.has_heartbeat() && msg.heartbeat().current_version().size() > 128) {
    ev.stream->Close("current_version longer than 128 characters");
    return false;
  }
  if (msg.has_result()) {
    auto* r = msg.mutable_result();
    if (r->task_id().size() > 128 || r->current_version().size() > 128) {
      ev.stream->Close("task result with an oversized field");
      return false;
    }
    if (r->error().size() > 2048) r->mutable_error()->resize(2048);
    if (r->output_tail().size() > 16384) {
      r->set_output_tail(r->output_tail().substr(r->output_tail().size() - 16384));
    }
    if (r->versions_on_disk_size() > 64)
      r->mutable_versions_on_disk()->DeleteSubrange(64, r->versions_on_disk_size() - 64);
  }
  if (msg.has_heartbeat()) {
    auto changed = engine_->AgentHeartbeat(name, msg.heartbeat().current_version());
    if (!changed.ok()) {
      spdlog::error("recording heartbeat of {}: {}", name, changed.status().ToString());
      return false;
    }
    return *changed;
  }
  if (msg.has_gate_verdict()) {
    if (Status st = engine_->GateVerdictReceived(name, msg.gate_verdict()); !st.ok()) {
      if (st.code() == StatusCode::kPermissionDenied) {
        // Counted by the engine; an agent answering others' checks must not flood the log.
        if (LogAllowed()) spdlog::warn("gate verdict from {} dropped: {}", name, st.message());
      } else {
        spdlog::error("recording gate verdict from {}: {}", name, st.ToString());
      }
    }
  } else if (msg.has_result()) {
    if (Status st = engine_->TaskFinished(name, msg.result()); !st.ok()) {
      spdlog::error("recording result of task {} from {}: {}", LogSafe(msg.result().task_id()),
                    name, st.ToString());
    }
  } else if (msg.has_progress()) {
    if (!spdlog::should_log(spdlog::level::debug)) return false;  // a line per hook line
    // Not even at debug level does a region's hook output reach this log if it must stay in
    // the region (an agent that sends it anyway is not believed).
    spdlog::debug("{} {} {}: {}", name, LogSafe(msg.progress().task_id()),
                  LogSafe(msg.progress().step()),
                  engine_->WithholdsHookOutputOf(name) ? std::string("(withheld: the region "
                                                                     "keeps hook output)")
                                                       : LogSafe(msg.progress().output(), 1024));
    return false;
  }
  return true;
}

namespace {

std::string RefusalReason(const Status& st) {
  switch (st.code()) {
    case StatusCode::kUnauthenticated:
      return "unauthenticated";
    case StatusCode::kPermissionDenied:
      return "permission_denied";
    default:
      return "refused";
  }
}

}  // namespace

void Hub::Refuse(const std::shared_ptr<StreamHandle>& stream, const std::string& reason,
                 const lockstep::v1::AgentHello& hello, const std::string& why) {
  {
    absl::MutexLock lock(&mu_);
    ++refusals_[reason];
  }
  stream->Close(why);
  // Refusals of a caller who proved it holds a valid enrollment token or credential (a
  // takeover attempt, a duplicate host) are audited as well; others only logged.
  // One budget per refusal covers both its audit entry and its log line.
  if (!LogAllowed()) return;
  if (reason == "permission_denied" || reason == "already_connected") {
    auth_->RecordAgentRefusal(hello.name(), hello.region(), why);
  }
  spdlog::warn("agent \"{}\" ({}) refused: {}", LogSafe(hello.name(), 64),
               LogSafe(hello.region(), 64), LogSafe(why, 200));
}

bool Hub::LogAllowed() {
  const UnixMs now = clock_->Now();
  if (now / 1000 != refusal_log_second_) {
    if (refusal_log_suppressed_ > 0) {
      spdlog::warn("{} more agent refusals not logged", refusal_log_suppressed_);
    }
    refusal_log_second_ = now / 1000;
    refusal_log_count_ = 0;
    refusal_log_suppressed_ = 0;
  }
  if (++refusal_log_count_ > 20) {
    ++refusal_log_suppressed_;
    return false;
  }
  return true;
}

bool Hub::Hello(const std::shared_ptr<StreamHandle>& stream, const lockstep::v1::AgentHello& h) {
  if (auto bad = CheckHelloFields(h); !bad.empty()) {
    Refuse(stream, "malformed", h, bad);
    return false;
  }
  // Authentication first: until the caller proved who it is, its refusal names nothing it
  // could learn the fleet from (which names are enrolled or connected, which regions exist).
  auto check = auth_->CheckAgent(h.name(), h.region(), h.token(), h.credential());
  if (!check.ok()) {
    Refuse(stream, RefusalReason(check.status()), h, check.status().message());
    return false;
  }
  auto pipeline = engine_->AgentPipeline(h);
  if (!pipeline.ok()) {
    Refuse(stream, "refused", h, pipeline.status().message());
    return false;
  }
  // One stream per host. A second connection for a live one is refused, not swapped in: two
  // agents configured with one name would otherwise push each other off forever. Where the
  // transport watches liveness, an open stream is a live one (a dead one is closed within
  // transport_silence_ms); otherwise a stream silent for three heartbeat intervals is presumed
  // dead and replaced.
  std::shared_ptr<StreamHandle> replaced;
  {
    absl::MutexLock lock(&mu_);
    auto it = streams_.find(h.name());
    if (it != streams_.end() && it->second != stream) replaced = it->second;
  }
  if (replaced) {
    auto heard = last_heard_.find(replaced.get());
    const UnixMs last = heard == last_heard_.end() ? 0 : heard->second;
    if (heartbeats_.transport_silence_ms > 0 || clock_->Now() - last < 3 * heartbeat_interval_ms_) {
      Refuse(stream, "already_connected", h,
             "agent \"" + h.name() + "\" is already connected; a host connects once");
      return false;
    }
  }
  std::string credential;
  if (check->enroll && !h.keeps_credential()) {
    // An agent from before host credentials could not keep one: it is admitted on its
    // token, as it always was, until it is upgraded and enrolls.
    if (LogAllowed()) {
      spdlog::warn(
          "agent {} ({}) cannot keep a host credential; admitted with enrollment token "
          "{} until it is upgraded",
          h.name(), h.region(), check->token_name);
    }
  } else if (check->enroll) {
    auto issued = auth_->Enroll(h.name(), h.region(), check->token_name);
    if (!issued.ok()) {
      Refuse(stream, RefusalReason(issued.status()), h, issued.status().message());
      return false;
    }
    credential = std::move(*issued);
    spdlog::info("agent {} ({}) enrolled with token {}", h.name(), h.region(), check->token_name);
  }
  auto assigned = engine_->AgentConnected(h);
  if (!assigned.ok()) {
    Refuse(stream, "refused", h, assigned.status().message());
    return false;
  }
  {
    absl::MutexLock lock(&mu_);
    auto& slot = streams_[h.name()];
    if (slot && slot != stream) names_.erase(slot.get());
    slot = stream;
    names_[stream.get()] = h.name();
  }
  if (replaced) {
    last_heard_.erase(replaced.get());
    replaced->Close("replaced: this stream was silent and presumed dead");
  }
  last_heard_[stream.get()] = clock_->Now();
  stream->Accept();
  RetuneHeartbeats();  // before the welcome, which then carries the interval in force
  lockstep::v1::ServerMessage welcome;
  welcome.mutable_welcome()->set_pipeline(*assigned);
  welcome.mutable_welcome()->set_heartbeat_interval_ms(heartbeat_interval_ms_);
  welcome.mutable_welcome()->set_send_progress(spdlog::should_log(spdlog::level::debug));
  welcome.mutable_welcome()->set_credential(credential);
  welcome.mutable_welcome()->set_epoch(epoch_);
  welcome.mutable_welcome()->set_liveness_timeout_ms(heartbeats_.liveness_timeout_ms);
  welcome.mutable_welcome()->set_heartbeat_on_change(heartbeats_.transport_silence_ms > 0);
  stream->Deliver(welcome);
  spdlog::info("agent {} connected (region {}, pipeline {}, running {}, agent {})", h.name(),
               h.region(), *assigned,
               h.current_version().empty() ? "nothing" : LogSafe(h.current_version()),
               h.agent_version().empty() ? "unknown" : LogSafe(h.agent_version()));
  return true;
}

Status Hub::RemoveAgent(const std::string& name, const std::string& actor) {
  return RunOnEngine("the removal", [this, name, actor] {
    std::shared_ptr<StreamHandle> stream;
    {
      absl::MutexLock lock(&mu_);
      auto it = streams_.find(name);
      if (it != streams_.end()) {
        stream = it->second;
        names_.erase(stream.get());
        streams_.erase(it);
      }
    }
    if (stream) {
      last_heard_.erase(stream.get());
      stream->Close("this host was removed by " + actor);
      RetuneHeartbeats();
    }
    return engine_->RemoveAgent(name, actor);
  });
}

Status Hub::ReplacePipelines(std::vector<Pipeline> pipelines, const std::string& actor) {
  auto shared = std::make_shared<std::vector<Pipeline>>(std::move(pipelines));
  return RunOnEngine("the reload", [this, shared, actor] {
    Status st = engine_->ReplacePipelines(std::move(*shared), actor);
    {
      absl::MutexLock lock(&mu_);
      kicked_ = true;  // the next pass works with them at once
    }
    return st;
  });
}

Status Hub::RunOnEngine(const std::string& what, std::function<Status()> task) {
  auto done = std::make_shared<std::promise<Status>>();
  auto result = done->get_future();
  Event ev;
  ev.task = [task = std::move(task), done] { done->set_value(task()); };
  {
    absl::MutexLock lock(&mu_);
    if (stopping_) return Unavailable("lockstepd is shutting down");
    inbox_.push_back(std::move(ev));
    urgent_ = true;
  }
  alarm_->Wake();
  // Real time on purpose: this bounds how long a caller waits for a stuck engine thread.
  if (result.wait_for(std::chrono::seconds(30)) != std::future_status::ready) {
    return Unavailable("the engine did not answer within 30 s; " + what + " may still happen");
  }
  try {
    return result.get();
  } catch (const std::future_error&) {  // the engine loop stopped before running it
    return Unavailable("lockstepd is shutting down");
  }
}

std::map<std::string, uint64_t> Hub::RefusalCounts() const {
  absl::MutexLock lock(&mu_);
  return refusals_;
}

void Hub::Run(Engine* engine) {
  engine_ = engine;
  // Agents recorded as connected by an earlier process must reconnect to count.
  if (Status st = engine_->MarkAllDisconnected(); !st.ok()) {
    spdlog::error("resetting agent connections: {}", st.ToString());
  }
  UnixMs next_wake = 0;
  for (;;) {
    std::deque<Event> events;
    bool need_pass = false;
    {
      absl::MutexLock lock(&mu_);
      UnixMs wake = next_wake;
      if (!inbox_.empty()) {
        UnixMs lazy = clock_->Now() + kLazyEventMs;
        if (wake == 0 || lazy < wake) wake = lazy;
      }
      // Sleeps (without mu_) until ready or the wake-up is due. A Wake left over from events
      // this thread already took only sends it round the loop once more.
      if (wake > 0) {
        const auto wait = std::chrono::milliseconds(std::max<int64_t>(0, wake - clock_->Now()));
        const MonoTime deadline = clock_->Monotonic() + wait;
        while (!ReadyLocked()) {
          mu_.Unlock();
          const bool woken = alarm_->WaitUntil(deadline);
          mu_.Lock();
          if (!woken) break;  // due
        }
      } else {
        while (!ReadyLocked()) {
          mu_.Unlock();
          alarm_->Wait();
          mu_.Lock();
        }
      }
      if (stopping_) return;
      events.swap(inbox_);
      need_pass = kicked_;
      kicked_ = false;
      urgent_ = false;
    }
    for (auto& ev : events) need_pass = Apply(ev) || need_pass;
    // Heartbeats alone change nothing a pass acts on before its next wake-up: with
    // thousands of idle agents they would otherwise cost a pass each.
    if (!need_pass && (next_wake == 0 || clock_->Now() < next_wake)) continue;
    auto next = engine_->Reconcile();
    if (next.ok()) {
      next_wake = *next;
    } else {
      // A store failure: nothing was sent. Try again shortly rather than spinning.
      spdlog::error("reconcile pass failed: {}", next.status().ToString());
      next_wake = clock_->Now() + 1000;
    }
  }
}

}  // namespace lockstep
