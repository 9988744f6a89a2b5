// Hub: where agent streams meet the engine.
//
// gRPC threads hand every agent message to the Hub (OnMessage/OnClosed); the Hub queues them
// for the engine thread, which applies them to the store through the Engine, runs a reconcile
// pass, and sleeps until the next wake-up the pass asked for or the next message. Only the
// engine thread touches the Engine's observed-state methods, so passes never race. The engine
// thread sleeps on an Alarm of the hub's Clock, so under a ManualClock it wakes for a deadline
// only when the test advances time to it, and ManualClock::AwaitSleepers tells the test that
// everything handed to the hub so far has been dealt with.
//
// The Hub is also the engine's TaskSink: it keeps the registry of accepted agent streams by
// agent name and queues tasks on them.
//
// Thread safety: OnMessage, OnClosed, Kick and Stop may be called from any thread. Run is
// called once, on the engine thread. Send is called by the engine (engine thread).
#pragma once

#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "common/clock.h"
#include "orchestrator/engine/engine.h"
#include "orchestrator/engine/task_sink.h"
#include "proto/lockstep.pb.h"

namespace lockstep {

class Authenticator;

// One agent's open stream, as seen from outside the gRPC reactor that owns it. Safe to use
// after the stream ended: calls then do nothing.
class StreamHandle {
 public:
  virtual ~StreamHandle() = default;
  // Queues a message; messages go out in the order queued.
  virtual void Deliver(const lockstep::v1::ServerMessage& msg) = 0;
  // Sends `msg` (if any), then ends the stream with an error naming `reason`.
  virtual void Close(const std::string& reason) = 0;
  // The hello was accepted: from now on the stream's further messages are read. Until
  // then nothing past the hello is read, so an unauthenticated peer cannot make lockstepd
  // buffer or process anything else.
  virtual void Accept() = 0;
};

// How often agents send heartbeats. Each heartbeat costs lockstepd a wake-up of a gRPC
// thread; with ten thousand agents at 10 s that is a thousand a second and most of an idle
// lockstepd's CPU. So the interval grows with the number of connected agents to keep the
// total near kPerSecond, from base_ms up to ceiling_ms (a third of the smallest agent_lost,
// so every agent still has three chances before it counts as lost).
struct HeartbeatPolicy {
  static constexpr int64_t kPerSecond = 100;
  int64_t base_ms = 10'000;
  int64_t ceiling_ms = 10'000;
  // Told to agents in their welcome: how soon they must notice that lockstepd stopped
  // answering (4/5 of the smallest agent_lost), so a frozen leader does not cost its agents.
  int64_t liveness_timeout_ms = 20'000;
  // > 0: lockstepd's transport pings every agent connection that has been silent for a while
  // and closes it when a ping goes unanswered, so an open stream is an agent heard from within
  // this long (its keepalive time plus timeout). Agents then beat only when their version
  // changes (Welcome.heartbeat_on_change); a stream that broke is counted silent since this
  // long before; and a second connection of a host is refused while its first is open (the
  // transport closes a dead one within this bound). 0: liveness by heartbeats every interval.
  int64_t transport_silence_ms = 0;
  // The interval for `connected` agents.
  int64_t IntervalFor(size_t connected) const;
};

class Hub final : public TaskSink {
 public:
  // Heartbeats and progress lines wake nobody: they are taken with the next event, or within
  // this long when they were waiting as the engine thread went to sleep.
  static constexpr int64_t kLazyEventMs = 1000;

  // `clock` and `auth` (which checks each agent's enrollment token) must outlive the hub.
  Hub(const Clock* clock, HeartbeatPolicy heartbeats, const Authenticator* auth);

  void OnMessage(const std::shared_ptr<StreamHandle>& stream, lockstep::v1::AgentMessage msg);
  // `clean`: the agent ended the stream itself (a stop, a restart), rather than the connection
  // breaking or going unanswered.
  void OnClosed(const std::shared_ptr<StreamHandle>& stream, bool clean = true);
  // Asks for a reconcile pass soon (after desired state changed).
  void Kick();

  // Runs the engine loop until Stop(), driving `engine` (which sends through this hub).
  // REQUIRES: called once.
  void Run(Engine* engine);
  void Stop();

  // Retires a host on the engine thread: closes its stream if connected, then forgets it
  // and its credential (Engine::RemoveAgent). Any thread; waits for the engine thread.
  Status RemoveAgent(const std::string& name, const std::string& actor);
  // Puts a reloaded set of pipelines in force on the engine thread (Engine::ReplacePipelines)
  // and asks for a pass. Any thread; waits for the engine thread.
  Status ReplacePipelines(std::vector<Pipeline> pipelines, const std::string& actor);

  // Hellos refused since start, by reason ("unauthenticated", "permission_denied",
  // "already_connected", "malformed", "refused"). Any thread.
  std::map<std::string, uint64_t> RefusalCounts() const;

  // Leadership: `epoch` is stamped on every task, gate check and welcome from now on, and
  // `may_send` (if set) is asked before each delivery; a false answer drops the message (a
  // leader whose lease may have passed to another process sends nothing more). REQUIRES:
  // called before Run.
  void SetLeadership(int64_t epoch, std::function<bool()> may_send);

  bool Send(const std::string& agent, const lockstep::v1::Task& task) override;
  bool SendGateCheck(const std::string& agent, const lockstep::v1::GateCheck& check) override;

 private:
  struct Event {
    std::shared_ptr<StreamHandle> stream;
    std::optional<lockstep::v1::AgentMessage> msg;  // nullopt: the stream closed
    std::function<void()> task;                     // set: run on the engine thread instead
    bool clean = true;                              // a close the agent made itself (see OnClosed)
  };
  // Runs `task` on the engine thread and waits (at most 30 s) for its status. `what` names it
  // in the error if the engine does not answer.
  Status RunOnEngine(const std::string& what, std::function<Status()> task);
  // Engine thread: the hello of a stream not yet accepted. Returns whether it was accepted.
  bool Hello(const std::shared_ptr<StreamHandle>& stream, const lockstep::v1::AgentHello& hello);
  // Engine thread: refuses a hello, counted by `reason`; the log line is escaped and
  // rate-limited (a flood of bad hellos must not flood the log).
  void Refuse(const std::shared_ptr<StreamHandle>& stream, const std::string& reason,
              const lockstep::v1::AgentHello& hello, const std::string& why);
  // Engine thread. Returns whether the event may call for a pass (a plain heartbeat does not).
  bool Apply(Event& ev);
  bool Deliver(const std::string& agent, const lockstep::v1::ServerMessage& msg);
  // Engine thread, after the number of streams changed: when the policy's interval for the
  // new count differs from the one in force by half or more, every agent is told the new one.
  // The factor keeps a fleet that connects one by one from being told thousands of times.
  void RetuneHeartbeats();

  Engine* engine_ = nullptr;        // set by Run; engine thread only
  int64_t epoch_ = 0;               // set before Run
  std::function<bool()> may_send_;  // set before Run
  const Clock* const clock_;
  const HeartbeatPolicy heartbeats_;
  int64_t heartbeat_interval_ms_;  // engine thread: what the connected agents were told
  const Authenticator* const auth_;

  // The engine thread sleeps here; whoever sets kicked_, urgent_ or stopping_ wakes it
  // (after releasing mu_; a Wake is never lost, see Alarm).
  const std::unique_ptr<Alarm> alarm_;

  mutable absl::Mutex mu_;
  std::deque<Event> inbox_ ABSL_GUARDED_BY(mu_);
  bool kicked_ ABSL_GUARDED_BY(mu_) = false;
  // The inbox holds more than heartbeats/progress.
  bool urgent_ ABSL_GUARDED_BY(mu_) = false;
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  // Whether the engine thread has something to do now.
  bool ReadyLocked() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    return stopping_ || kicked_ || urgent_;
  }
  // Accepted streams by agent name, and the reverse.
  std::map<std::string, std::shared_ptr<StreamHandle>> streams_ ABSL_GUARDED_BY(mu_);
  std::map<const StreamHandle*, std::string> names_ ABSL_GUARDED_BY(mu_);
  std::map<std::string, uint64_t> refusals_ ABSL_GUARDED_BY(mu_);
  // Engine thread: when each accepted stream was last heard from. Without transport liveness
  // (transport_silence_ms 0; lockstepd always sets it, the hub's tests need not), a stream
  // silent for several heartbeat intervals is presumed dead (its peer vanished without a FIN),
  // so a new connection of its agent replaces it instead of being refused as a duplicate.
  std::map<const StreamHandle*, UnixMs> last_heard_;
  // Engine thread: whether another refusal may be logged (and audited) this second; at most
  // 20 a second, the rest counted and summarised.
  bool LogAllowed();
  // Engine thread: refusal log lines allowed in the current second, and those suppressed.
  UnixMs refusal_log_second_ = 0;
  int refusal_log_count_ = 0;
  uint64_t refusal_log_suppressed_ = 0;
};

}  // namespace lockstep
