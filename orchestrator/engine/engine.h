// The rollout engine: a reconcile loop over stored state.
//
// One pass per pipeline reads desired state (releases) and observed state (agents, per-host
// progress) from the Store, takes `now` from the Clock, decides the next transitions, writes
// them in one transaction, and only then sends the tasks they imply through the TaskSink. It
// never sleeps: a pass returns the time at which it next needs to run (a bake ending, a task
// deadline), and the caller wakes it then or sooner when something is observed. Because all
// truth is in the store, a restarted engine resumes where the last committed pass left off.
//
// A release walks its pipeline's waves in order. In a wave, every selected host first
// prepares (fetch, verify, unpack; `current` untouched); only when all are prepared do they
// activate (stop old, switch, start, check). When every host of the wave is done the wave
// bakes for its bake time, then the next wave starts. More failed hosts than the pipeline
// tolerates fail the release.
//
// Thread safety: Engine is driven from one thread (the orchestrator's engine thread), except
// ValidateRelease/CreateRelease, which only read immutable configuration and the
// (thread-safe) store and may be called from any thread.
#pragma once

#include <map>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include "common/clock.h"
#include "common/status.h"
#include "orchestrator/engine/task_sink.h"
#include "orchestrator/pipeline/pipeline.h"
#include "orchestrator/store/store.h"
#include "proto/lockstep.pb.h"

namespace lockstep {

struct NewRelease {
  std::string pipeline;
  std::string version;
  std::string artifact_url;
  std::string sha256;
  std::string commit;
  std::string author;
};

class Engine {
 public:
  // `store`, `clock` and `sink` must outlive the engine.
  Engine(std::vector<Pipeline> pipelines, Store* store, const Clock* clock, TaskSink* sink);

  const std::vector<Pipeline>& pipelines() const { return pipelines_; }
  const Pipeline* FindPipeline(const std::string& name) const;

  // Checks a release request: known pipeline, version usable as a directory name, http(s)
  // URL, 64-hex sha256. The error names the field.
  Status ValidateRelease(const NewRelease& req) const;
  // Validates and queues a release, audited as `actor`. Thread-safe.
  StatusOr<ReleaseRecord> CreateRelease(const NewRelease& req, const std::string& actor) const;

  // --- observed state; call from the engine thread ---

  // An agent said hello. Returns the pipeline it is assigned to, or an error that says why
  // it is refused (unknown region or pipeline). Outstanding tasks for it are re-sent on the
  // next pass.
  StatusOr<std::string> AgentConnected(const lockstep::v1::AgentHello& hello);
  Status AgentDisconnected(const std::string& name);
  // Heartbeats are kept in memory only: they refresh liveness and the reported version.
  void AgentHeartbeat(const std::string& name, const std::string& current_version);
  Status TaskFinished(const std::string& agent, const lockstep::v1::TaskResult& result);

  // --- one reconcile pass over every pipeline ---

  // Returns the wall time at which a pass is next needed, or 0 if nothing is waiting on time.
  StatusOr<UnixMs> Reconcile();

  // The id used for a host's task; results are matched against it.
  static std::string TaskId(int64_t release_id, const std::string& agent, const char* kind);

 private:
  struct Pass;
  Status ReconcilePipeline(const Pipeline& p, UnixMs now, Pass& pass);
  // `started`: the release began in this pass, so its row must be written.
  void AdvanceRelease(const Pipeline& p, ReleaseRecord& r, bool started,
                      std::vector<WaveRecord>& waves, std::map<std::string, HostRecord>& hosts,
                      const std::vector<AgentRecord>& agents, UnixMs now, Pass& pass);
  lockstep::v1::Task BuildTask(const Pipeline& p, const ReleaseRecord& r, const HostRecord& h,
                               bool activate) const;
  void ResendOutstanding(Pass& pass);

  const std::vector<Pipeline> pipelines_;
  Store* const store_;
  const Clock* const clock_;
  TaskSink* const sink_;

  // Agents that connected since the last pass: their outstanding tasks are re-sent.
  std::set<std::string> resend_to_;
  // Last heartbeat per agent (wall ms); liveness is judged from it.
  std::map<std::string, UnixMs> last_heartbeat_;
};

}  // namespace lockstep
