// The rollout engine: a reconcile loop over stored state.
//
// One pass per pipeline reads desired state (releases, operator requests) and observed state
// (agents, per-host progress, gate verdicts) from the Store, takes `now` from the Clock,
// decides the next transitions, writes them in one transaction, and only then sends the
// tasks they imply through the TaskSink. It never sleeps: a pass returns the time at which it
// next needs to run (a bake ending, a gate check due, a deadline), and the caller wakes it
// then or sooner when something is observed. Because all truth is in the store, a restarted
// engine resumes where the last committed pass left off.
//
// A rollout walks its pipeline's waves in order. In a wave, every selected host first
// prepares (fetch, verify, unpack; `current` untouched); only when all are prepared do they
// activate (stop old, switch, start, check, probe). When every host of the wave is healthy
// the wave bakes: its bake time runs and its metric gates are checked, by an agent in each
// region against that region's Prometheus. A manual-approval wave then waits for
// `approve`. More failed hosts than tolerated, a failed gate, a lost agent or any passed
// deadline fails the wave: every host that took the release goes back to the previous
// release, all regions at once (or, with `rollback.on_failure: pause`, the fleet is held for
// a human). An on-call rollback is a release of kind "rollback": it preempts whatever is in
// flight and takes every host straight to its version. When nothing is in flight, hosts
// that run something else than the pipeline's current release (new hosts, drift) converge.
//
// A release made by a GitHub push may exist before CI published its artifact: it is
// `waiting_for_artifact` (no sha256), which a pass never starts and which holds nothing up.
// The webhook trigger downloads the artifact and reports what it found (ArtifactChecked); the
// next pass makes the release `queued` with that sha256, and it goes on like any other. A
// pass also ends a waiting release: `aborted` if someone asked, `superseded` once a newer
// rollout of its pipeline is open, `failed` when trigger.github.artifact_wait has passed since
// it was created (a stored start, like a bake) or the artifact is unusable.
//
// Thread safety: Engine is driven from one thread (the orchestrator's engine thread). The
// operator methods (CreateRelease, Approve, Pause, ..., Rollback) only read immutable
// configuration and write requests through the (thread-safe) store, so they may be called
// from any thread; the engine acts on them in its next pass. So may the webhook's
// (CreateReleaseAwaitingArtifact, ArtifactChecked).
#pragma once

#include <atomic>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <tuple>
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
  // When the commit was made (unix ms, from the code host), 0 if unknown. A webhook push
  // whose commit is older than the pipeline's current release's is ignored (no replays).
  UnixMs commit_at = 0;
  // Makes creation idempotent (ReleaseRecord::request_id): a request repeated with the same id
  // (a retry across a failover, one push delivered to two lockstepd) gets the release the
  // first one made. Empty: none. At most 128 printable ASCII characters.
  std::string request_id = "";
};

// Where a pass reports what happened, for notifications and live views. Called on the
// engine thread after the pass committed; must not block.
class EngineObserver {
 public:
  virtual ~EngineObserver() = default;
  // `event`: release_started, wave_passed, approval_needed, succeeded, failed, rolled_back,
  // aborted, superseded, halted, rolling_back; and for a webhook's release,
  // waiting_for_artifact (the first pass that sees it waiting, again after a restart) and
  // queued (its artifact arrived).
  virtual void OnReleaseEvent(const Pipeline& pipeline, const ReleaseRecord& release,
                              const std::string& event, const std::string& detail) = 0;
  // Something about the release changed (host progress, a wave, a gate verdict).
  virtual void OnReleaseChanged(int64_t release_id) = 0;
};

class Engine {
 public:
  // `store`, `clock` and `sink` must outlive the engine.
  Engine(std::vector<Pipeline> pipelines, Store* store, const Clock* clock, TaskSink* sink);
  // The notification outbox: for each release event of a pass, the rows `compose` returns are
  // written in the same transaction as the transition (so a crash right after loses none).
  // REQUIRES: called before the first pass. Unset: no rows.
  using OutboxComposer = std::function<std::vector<OutboxRecord>(
      const Pipeline& pipeline, const ReleaseRecord& release, const std::string& event,
      const std::string& detail, UnixMs now)>;
  void set_outbox(OutboxComposer compose) { compose_outbox_ = std::move(compose); }
  void set_observer(EngineObserver* observer) { observer_ = observer; }
  // Agent liveness comes from the transport: an agent whose stream is open is heard from now
  // (lockstepd's keepalive pings close a silent one), and AgentDisconnected says how long a
  // broken one may already have been silent. Unset (the default): an agent is heard only
  // through its messages, so a connected agent that stops sending is lost after agent_lost.
  void set_liveness_by_transport(bool on) { liveness_by_transport_ = on; }

  // The pipelines in force. Any thread. A reference stays valid for the engine's life (every
  // set ever in force is kept), so a request thread may hold one across a reload.
  const std::vector<Pipeline>& pipelines() const { return *pipelines_.load(); }
  const Pipeline* FindPipeline(const std::string& name) const;

  // Engine thread: puts `next` in force from the next pass (a reload of the pipeline files).
  // A release in flight keeps the definition it started with until it ends, even if its
  // pipeline changed or is gone from `next`; hellos, new releases and convergence use `next`
  // at once (so a region added to a pipeline takes agents without a restart). Audited as
  // "pipelines.reload" by `actor`, with what changed. kInvalidArgument if two pipelines of
  // `next` share a name.
  Status ReplacePipelines(std::vector<Pipeline> next, const std::string& actor);

  // --- operator requests; thread-safe; each is audited as `actor` ---

  // Checks a release request: known pipeline, version usable as a directory name, http(s)
  // URL, 64-hex sha256. The error names the field.
  Status ValidateRelease(const NewRelease& req) const;
  StatusOr<ReleaseRecord> CreateRelease(const NewRelease& req, const std::string& actor) const;
  // `comment` (optional, one line, at most 500 characters) goes into the audit entry.
  Status Approve(int64_t release_id, const std::string& actor,
                 const std::string& comment = "") const;
  Status Abort(int64_t release_id, const std::string& actor) const;
  Status Pause(const std::string& pipeline, const std::string& actor) const;
  Status Resume(const std::string& pipeline, const std::string& actor) const;
  Status Freeze(const std::string& pipeline, const std::string& reason,
                const std::string& actor) const;
  Status Unfreeze(const std::string& pipeline, const std::string& actor) const;
  // Queues an on-call rollback of `pipeline` to `to_version`, or, if empty, to the last
  // release that succeeded before the current one. Always allowed (paused, frozen, outside
  // the window). kNotFound if there is no such release.
  StatusOr<ReleaseRecord> Rollback(const std::string& pipeline, const std::string& to_version,
                                   const std::string& actor) const;

  // --- the GitHub trigger's releases; thread-safe ---

  // Creates a release of `req` whose artifact is not known yet: `waiting_for_artifact`,
  // without a sha256 (`req.sha256` is ignored), its reason naming the artifact URL and how
  // long it may wait. Checked as CreateRelease checks a request, except for the sha256.
  // Audited as "release.create" by `actor`.
  StatusOr<ReleaseRecord> CreateReleaseAwaitingArtifact(const NewRelease& req,
                                                        const std::string& actor) const;
  // What the webhook found at the artifact URL of release `release_id`: its sha256, or, with
  // `sha256` empty, why it can never be used (`error`). Kept in memory for the next pass,
  // which makes the release, if it still waits, `queued` with that sha256 (or `failed`).
  // Lost in a crash at no cost: the trigger downloads again when it starts.
  void ArtifactChecked(int64_t release_id, const std::string& sha256, const std::string& error);

  // --- observed state; call from the engine thread ---

  // An agent said hello. Returns the pipeline it is assigned to, or an error that says why
  // it is refused (unknown region or pipeline). Outstanding tasks for it are re-sent on the
  // next pass.
  StatusOr<std::string> AgentConnected(const lockstep::v1::AgentHello& hello);
  // The pipeline a hello would be assigned to, or why it would be refused; changes nothing.
  StatusOr<std::string> AgentPipeline(const lockstep::v1::AgentHello& hello) const;
  // Retires a host: forgets its agent row and credential (audited). A host of an in-flight
  // release then counts as lost. kNotFound if lockstepd never knew it.
  Status RemoveAgent(const std::string& name, const std::string& actor);
  // `silent_ms`: how long before now the agent may already have gone quiet (a connection that
  // broke rather than ended; see set_liveness_by_transport); its agent_lost counts from then,
  // or from its last message if that is later.
  Status AgentDisconnected(const std::string& name, int64_t silent_ms = 0);
  // When this process starts to lead (at start-up, or on taking over from another lockstepd):
  // agents recorded as connected by a previous leader are not (they will reconnect), and
  // every agent's silence counts from now.
  Status MarkAllDisconnected();
  // Heartbeats refresh liveness (in memory). A heartbeat reporting another version than the
  // one recorded (someone switched the host by hand) is recorded, so drift is seen at once.
  // Returns whether the heartbeat changed anything a pass must act on (drift); a plain
  // heartbeat needs no pass.
  StatusOr<bool> AgentHeartbeat(const std::string& name, const std::string& current_version);
  Status TaskFinished(const std::string& agent, const lockstep::v1::TaskResult& result);
  // A verdict counts only for a check this process sent, and only from the agent it was
  // sent to (kPermissionDenied otherwise); anything else is dropped and counted.
  Status GateVerdictReceived(const std::string& agent, const lockstep::v1::GateVerdict& verdict);
  // Verdicts dropped since start: unknown check ids and answers from the wrong agent. Any
  // thread.
  uint64_t gate_verdicts_dropped() const { return gate_verdicts_dropped_.load(); }
  // Artifact fetches agents reported since start, per region: from the region's mirror or
  // from the origin, and the mirror's failures. Any thread.
  struct FetchCounts {
    uint64_t mirror_fetches = 0;
    uint64_t origin_fetches = 0;
    uint64_t mirror_bytes = 0;
    uint64_t origin_bytes = 0;
    uint64_t mirror_failures = 0;
  };
  std::map<std::string, FetchCounts> ArtifactFetchCounts() const;
  // Whether the agent's region keeps hook output (hook_output: none); true for an agent or
  // pipeline this process does not know.
  bool WithholdsHookOutputOf(const std::string& agent) const;

  // Observed state (agents, host results, switch times) is applied in memory at once and
  // written with the next pass, in its transaction: a pass per burst of results, not a
  // commit per result. Results lost in a crash before that commit are not lost for good:
  // every agent reconnects to the next process, which re-sends outstanding tasks, and the
  // agent answers a task it already ran from its journal.

  // --- one reconcile pass over every pipeline ---

  // Returns the wall time at which a pass is next needed, or 0 if nothing is waiting on time.
  StatusOr<UnixMs> Reconcile();

  // A new id for attempt `attempt` of a host's `step` in a release: "r<release>/<agent>/
  // <step>-<attempt>.<random>". The release number only finds the row a result belongs to;
  // a result counts only if its id equals the row's exactly, and the random part keeps ids
  // unique across stores, restored backups and attempts (agents answer a repeated id from
  // their journal without running it again).
  static std::string NewTaskId(int64_t release_id, const std::string& agent,
                               const std::string& step, int attempt);

 private:
  // The release an earlier request with req.request_id made, if any (kFailedPrecondition if
  // it was for another version).
  StatusOr<std::optional<ReleaseRecord>> EarlierRequest(const NewRelease& req) const;
  // store_->CreateRelease, answering a lost race on the request id with the winner.
  StatusOr<ReleaseRecord> InsertRelease(const NewRelease& req, ReleaseRecord r,
                                        AuditRecord audit) const;
  struct Pass;
  struct ReleaseCtx;
  using HostMap = std::map<std::string, HostRecord>;  // by agent name
  Status ReconcilePipeline(const Pipeline& p, UnixMs now, Pass& pass);
  // The engine's copy of every agent record, loaded from the store once.
  Status LoadAgents();
  // The engine's copy of a release's host rows, loaded from the store on first use.
  StatusOr<HostMap*> HostsOf(int64_t release_id);
  const AgentRecord* FindAgent(const std::string& name) const;
  // A release record by id: as read by the last pass, else from the store.
  StatusOr<ReleaseRecord> ReleaseById(int64_t id);
  // After a failed write the copies may be ahead of the store: drop them (they are read
  // again) and have every connected agent's outstanding tasks re-sent, so results that were
  // not written are reported again.
  void DropCopies();
  Status StartRelease(const Pipeline& p, ReleaseRecord& r, UnixMs now, Pass& pass);
  void AdvanceRollout(ReleaseCtx& c);
  void AdvanceRollbackRelease(ReleaseCtx& c);
  void AdvanceRevert(ReleaseCtx& c);
  // Fails the release's current wave: reverts, or holds, per the pipeline's policy.
  void FailRollout(ReleaseCtx& c, const std::string& reason);
  void BeginRevert(ReleaseCtx& c, const char* state, const std::string& reason);
  // Evaluates the wave's metric gates: sends checks that are due, returns "" while they are
  // passing or pending, or the reason a gate failed. Sets *all_passing.
  // `wi` is the wave, `regions` where to evaluate, `switched` when its hosts were all seen
  // switched and healthy.
  std::string EvaluateGates(ReleaseCtx& c, int wi, const std::vector<std::string>& regions,
                            UnixMs switched, bool* all_passing);
  // Adds the `selected` hosts not yet in the release to wave `wi` and moves the wave's hosts
  // (those `belongs` accepts) on: every host prepares, then, once all have, they switch.
  // Returns whether every host of the wave is done or failed.
  bool DeployWave(ReleaseCtx& c, int wi, const std::vector<const AgentRecord*>& selected,
                  const std::function<bool(const HostRecord&)>& belongs);
  // Bring-up regions (bringup.cc): each walks the pipeline's per_region waves in a track of
  // its own; its failure sends only its own hosts back.
  void AdvanceBringup(ReleaseCtx& c);
  void FailBringup(ReleaseCtx& c, BringupRecord& t, const std::string& reason);
  // A release that ended after its serving regions succeeded, whose bring-up tracks go on.
  Status AdvanceTrailingBringup(const Pipeline& p, const ReleaseRecord& desired,
                                const PipelineState& pstate, UnixMs now, Pass& pass);
  // Ends the release's unfinished bring-up tracks as superseded (its release ended, or a
  // newer release takes the regions over).
  void SupersedeTracks(Pass& pass, int64_t release_id, const std::string& reason, UnixMs now) const;
  // `desired` is the pipeline's DesiredRelease.
  Status Converge(const Pipeline& p, const ReleaseRecord& desired, UnixMs now, Pass& pass);
  // Sends `h` (a host row of release h.release_id) its next task: `step` of `target`.
  // Records the step, a new attempt and task id, when it was sent, and whether it may
  // switch the host.
  void SendStep(Pass& pass, const Pipeline& p, const ReleaseRecord& target, HostRecord& h,
                const char* step, UnixMs now);
  // A host whose row says `done` but whose agent reports another version (or none: a host
  // rebuilt empty) is not done: it is sent the release again.
  void ReopenDrifted(ReleaseCtx& c);
  // Only hosts of `only_regions`, if given.
  void FailLostOrLateHosts(ReleaseCtx& c, const std::set<std::string>* only_regions = nullptr);
  lockstep::v1::Task BuildTask(const Pipeline& p, const ReleaseRecord& target,
                               const HostRecord& h) const;
  void ResendOutstanding(Pass& pass);
  bool AgentAlive(const AgentRecord& a, UnixMs now, const Pipeline& p) const;
  UnixMs LastContact(const AgentRecord& a) const;
  StatusOr<std::optional<ReleaseRecord>> RollbackTarget(const Pipeline& p,
                                                        const std::string& to_version) const;
  void Audit(Pass& pass, UnixMs now, const std::string& action, const ReleaseRecord& r,
             const std::string& detail) const;
  // Ends `r` in final `state` (written, audited, reported) in `pass`.
  void Finish(Pass& pass, const Pipeline& p, ReleaseRecord& r, const char* state,
              const std::string& reason, UnixMs now) const;
  // Decides the releases of `p` that wait for their artifact (see the header comment).
  Status SettleWaitingReleases(const Pipeline& p, std::vector<ReleaseRecord>& open, UnixMs now,
                               Pass& pass);
  // After `pass` committed: drops the artifact reports it settled or that are stale, and
  // remembers which releases it saw waiting.
  void ForgetSettledArtifacts(const Pass& pass);

  // The pipeline definitions a pass works with: those in force, except that a pipeline whose
  // release was in flight at a reload keeps its earlier definition until that release ends.
  std::vector<const Pipeline*> InForce() const;

  std::atomic<const std::vector<Pipeline>*> pipelines_;
  // Every set of pipelines ever in force, so references handed out stay valid. Engine thread.
  std::vector<std::unique_ptr<const std::vector<Pipeline>>> generations_;
  // Engine thread: pipeline name -> the release in flight at a reload and the definition it
  // started with.
  std::map<std::string, std::pair<int64_t, const Pipeline*>> pinned_;
  Store* const store_;
  const Clock* const clock_;
  TaskSink* const sink_;
  EngineObserver* observer_ = nullptr;
  // When this process began to watch the fleet (construction, then BeginLeadership): an
  // agent's silence counts from here at the earliest.
  std::atomic<UnixMs> started_at_;
  OutboxComposer compose_outbox_;  // set before the first pass

  // Copies of the rows only the engine writes (operator requests write other columns, read
  // from the store on each pass). Changed rows are marked and written with the next pass.
  std::map<std::string, AgentRecord> agents_;  // by name
  bool agents_loaded_ = false;
  std::map<int64_t, HostMap> hosts_;  // by release id; releases in flight or desired
  std::set<std::string> dirty_agents_;
  std::set<std::pair<int64_t, std::string>> dirty_hosts_;
  // Switches of `current` reported since the last pass: (release, wave) -> first, last.
  std::map<std::pair<int64_t, int>, std::pair<UnixMs, UnixMs>> pending_switches_;
  // Releases read by the last pass (open ones and each pipeline's desired release).
  std::map<int64_t, ReleaseRecord> releases_seen_;

  // Agents that connected since the last pass: their outstanding tasks are re-sent.
  std::set<std::string> resend_to_;
  // Last contact per agent (wall ms), from hellos, heartbeats and results.
  std::map<std::string, UnixMs> last_contact_;
  bool liveness_by_transport_ = false;
  // The version each connected agent last reported, to notice drift from heartbeats.
  std::map<std::string, std::string> reported_version_;
  // Metric gate checks in flight: check id -> (release, wave, gate, region); and when each
  // (release, wave, gate, region) was last asked. Losing these on restart only means the
  // next check is sent at once.
  struct PendingGateCheck {
    std::tuple<int64_t, int, std::string, std::string> key;
    std::string agent;  // the only agent whose verdict counts
  };
  std::map<std::string, PendingGateCheck> gate_checks_;
  std::map<std::tuple<int64_t, int, std::string, std::string>, UnixMs> gate_last_sent_;
  std::atomic<uint64_t> gate_verdicts_dropped_{0};
  void CountFetch(const std::string& region, const lockstep::v1::TaskResult& result);
  mutable std::mutex fetch_counts_mu_;
  std::map<std::string, FetchCounts> fetch_counts_;  // guarded by fetch_counts_mu_

  // What the webhook found for releases waiting for their artifact (ArtifactChecked), until
  // a pass that committed no longer sees them waiting. `seq` orders reports against passes:
  // a pass drops only reports made before it began.
  struct ArtifactCheck {
    uint64_t seq = 0;
    std::string sha256;
    std::string error;
  };
  std::mutex artifact_checks_mu_;
  std::map<int64_t, ArtifactCheck> artifact_checks_;  // guarded by artifact_checks_mu_
  uint64_t artifact_check_seq_ = 0;                   // guarded by artifact_checks_mu_
  // Engine thread: releases the last committed pass saw waiting for their artifact (so the
  // next one reports only new ones).
  std::set<int64_t> waiting_seen_;
};

}  // namespace lockstep
