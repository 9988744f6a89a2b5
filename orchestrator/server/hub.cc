#include "orchestrator/server/hub.h"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <vector>

#include "orchestrator/auth/authenticator.h"

namespace lockstep {

int64_t HeartbeatPolicy::IntervalFor(size_t connected) const {
  const int64_t spread = static_cast<int64_t>(connected) * 1000 / kPerSecond;
  return std::clamp(spread, base_ms, std::max(base_ms, ceiling_ms));
}

Hub::Hub(const Clock* clock, HeartbeatPolicy heartbeats, const Authenticator* auth)
    : clock_(clock),
      heartbeats_(heartbeats),
      heartbeat_interval_ms_(heartbeats.IntervalFor(0)),
      auth_(auth) {}

void Hub::RetuneHeartbeats() {
  std::vector<std::shared_ptr<StreamHandle>> streams;
  int64_t want = 0;
  {
    std::lock_guard lock(mu_);
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
  // Heartbeats and progress lines wake nobody: they are taken with the next event or within
  // kLazyEventMs. Liveness is measured in tens of seconds; waking the engine thread for each
  // of ten thousand agents' heartbeats is what would cost.
  const bool urgent = !msg.has_heartbeat() && !msg.has_progress();
  {
    std::lock_guard lock(mu_);
    inbox_.push_back(Event{stream, std::move(msg)});
    if (urgent) urgent_ = true;
  }
  if (urgent) cv_.notify_one();
}

void Hub::OnClosed(const std::shared_ptr<StreamHandle>& stream) {
  {
    std::lock_guard lock(mu_);
    inbox_.push_back(Event{stream, std::nullopt});
    urgent_ = true;
  }
  cv_.notify_one();
}

void Hub::Kick() {
  {
    std::lock_guard lock(mu_);
    kicked_ = true;
  }
  cv_.notify_one();
}

void Hub::Stop() {
  {
    std::lock_guard lock(mu_);
    stopping_ = true;
  }
  cv_.notify_one();
}

bool Hub::Deliver(const std::string& agent, const lockstep::v1::ServerMessage& msg) {
  std::shared_ptr<StreamHandle> stream;
  {
    std::lock_guard lock(mu_);
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
  return Deliver(agent, msg);
}

bool Hub::SendGateCheck(const std::string& agent, const lockstep::v1::GateCheck& check) {
  lockstep::v1::ServerMessage msg;
  *msg.mutable_gate_check() = check;
  return Deliver(agent, msg);
}

bool Hub::Apply(Event& ev) {
  std::string name;
  {
    std::lock_guard lock(mu_);
    auto it = names_.find(ev.stream.get());
    if (it != names_.end()) name = it->second;
  }
  if (!ev.msg) {  // stream closed
    if (name.empty()) return false;
    bool current = false;
    {
      std::lock_guard lock(mu_);
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
      if (Status st = engine_->AgentDisconnected(name); !st.ok()) {
        spdlog::error("recording disconnect of {}: {}", name, st.ToString());
      }
    }
    return current;
  }

  auto& msg = *ev.msg;
  if (msg.has_hello()) {
    if (!name.empty()) return false;  // a second hello on one stream changes nothing
    if (Status st = auth_->AuthenticateAgent(msg.hello().token(), msg.hello().region()); !st.ok()) {
      spdlog::warn("agent {} ({}) refused: {}", msg.hello().name(), msg.hello().region(),
                   st.message());
      ev.stream->Close(st.message());
      return false;
    }
    auto pipeline = engine_->AgentConnected(msg.hello());
    if (!pipeline.ok()) {
      spdlog::warn("agent {} ({}) refused: {}", msg.hello().name(), msg.hello().region(),
                   pipeline.status().message());
      ev.stream->Close(pipeline.status().message());
      return false;
    }
    std::shared_ptr<StreamHandle> replaced;
    {
      std::lock_guard lock(mu_);
      auto& slot = streams_[msg.hello().name()];
      if (slot && slot != ev.stream) {
        replaced = slot;
        names_.erase(slot.get());
      }
      slot = ev.stream;
      names_[ev.stream.get()] = msg.hello().name();
    }
    if (replaced) replaced->Close("replaced by a newer connection of the same agent");
    RetuneHeartbeats();  // before the welcome, which then carries the interval in force
    lockstep::v1::ServerMessage welcome;
    welcome.mutable_welcome()->set_pipeline(*pipeline);
    welcome.mutable_welcome()->set_heartbeat_interval_ms(heartbeat_interval_ms_);
    welcome.mutable_welcome()->set_send_progress(spdlog::should_log(spdlog::level::debug));
    ev.stream->Deliver(welcome);
    spdlog::info("agent {} connected (region {}, pipeline {}, running {})", msg.hello().name(),
                 msg.hello().region(), *pipeline,
                 msg.hello().current_version().empty() ? "nothing" : msg.hello().current_version());
    return true;
  }
  if (name.empty()) {
    ev.stream->Close("the first message on a stream must be a hello");
    return false;
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
      spdlog::error("recording gate verdict from {}: {}", name, st.ToString());
    }
  } else if (msg.has_result()) {
    if (Status st = engine_->TaskFinished(name, msg.result()); !st.ok()) {
      spdlog::error("recording result of task {} from {}: {}", msg.result().task_id(), name,
                    st.ToString());
    }
  } else if (msg.has_progress()) {
    spdlog::debug("{} {} {}: {}", name, msg.progress().task_id(), msg.progress().step(),
                  msg.progress().output());
    return false;
  }
  return true;
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
      std::unique_lock lock(mu_);
      auto ready = [&] { return stopping_ || kicked_ || urgent_; };
      UnixMs wake = next_wake;
      if (!inbox_.empty()) {
        UnixMs lazy = clock_->Now() + kLazyEventMs;
        if (wake == 0 || lazy < wake) wake = lazy;
      }
      if (wake > 0) {
        auto wait = std::chrono::milliseconds(std::max<int64_t>(0, wake - clock_->Now()));
        cv_.wait_until(lock, clock_->Monotonic() + wait, ready);
      } else {
        cv_.wait(lock, ready);
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
