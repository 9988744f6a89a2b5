// The records Lockstep keeps: releases, their waves and per-host progress, agents, audit.
//
// These are plain values read from and written to a Store. The rollout engine computes new
// records from old ones; nothing here talks to the database.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "common/clock.h"

namespace lockstep {

// Release states. Final states never change again.
//
//   waiting_for_artifact -> queued      (a webhook push's artifact was published)
//                        -> superseded  (a newer release of the pipeline was created)
//                        -> aborted     (a human aborted it before its artifact arrived)
//                        -> failed      (trigger.github.artifact_wait ran out, or the
//                                        artifact cannot be used)
//   queued -> rolling -> succeeded
//                     -> rolling_back -> rolled_back        (a gate failed; automatic)
//                     -> aborting     -> aborted            (a human aborted it)
//                     -> halted (on_failure: pause; a human decides) -> failed | aborting
//   queued -> superseded (a newer release was queued first)
//   rolling -> aborted (preempted by an on-call rollback, which takes every host itself)
//   rolling_back / aborting -> failed (some host could not be put back)
namespace release_state {
// A webhook push's release before CI published its artifact: no sha256 yet. Neither final nor
// in flight; the engine never starts it (it becomes queued first) and it holds nothing up.
inline constexpr const char* kWaitingForArtifact = "waiting_for_artifact";
inline constexpr const char* kQueued = "queued";
inline constexpr const char* kRolling = "rolling";
inline constexpr const char* kRollingBack = "rolling_back";
inline constexpr const char* kAborting = "aborting";
inline constexpr const char* kHalted = "halted";
inline constexpr const char* kSucceeded = "succeeded";
inline constexpr const char* kFailed = "failed";
inline constexpr const char* kRolledBack = "rolled_back";
inline constexpr const char* kAborted = "aborted";
inline constexpr const char* kSuperseded = "superseded";
bool IsFinal(const std::string& state);
// Rolling, rolling back, aborting or halted: the release owns the pipeline's fleet.
bool IsInFlight(const std::string& state);
// Every release state, in the order of the diagram above.
const std::vector<std::string>& All();
}  // namespace release_state

// What a release does: walk the waves (a rollout), or take every host straight to its
// version at once (an on-call rollback).
namespace release_kind {
inline constexpr const char* kRollout = "rollout";
inline constexpr const char* kRollback = "rollback";
}  // namespace release_kind

// Wave states, in order.
namespace wave_state {
inline constexpr const char* kPending = "pending";
inline constexpr const char* kDeploying = "deploying";
inline constexpr const char* kBaking = "baking";
inline constexpr const char* kAwaitingApproval = "awaiting_approval";
inline constexpr const char* kDone = "done";
inline constexpr const char* kFailed = "failed";
// Shown, never stored: a wave that was done when its release was rolled back or aborted.
inline constexpr const char* kReverted = "reverted";
}  // namespace wave_state

// Per-host states within a release. A host moves pending → preparing → prepared →
// activating → done; any step may end in failed. When the release is rolled back, a host
// that took it moves to reverting → reverted (or revert_failed). A host brought to a
// finished release after the fact (a new or drifted host) is converging → done | failed.
namespace host_state {
inline constexpr const char* kReverting = "reverting";
inline constexpr const char* kReverted = "reverted";
inline constexpr const char* kRevertFailed = "revert_failed";
inline constexpr const char* kConverging = "converging";
inline constexpr const char* kPending = "pending";
inline constexpr const char* kPreparing = "preparing";
inline constexpr const char* kPrepared = "prepared";
inline constexpr const char* kActivating = "activating";
inline constexpr const char* kDone = "done";
inline constexpr const char* kFailed = "failed";
}  // namespace host_state

struct ReleaseRecord {
  int64_t id = 0;
  std::string pipeline;
  std::string version;
  std::string artifact_url;
  std::string sha256;
  std::string commit;
  std::string author;
  UnixMs commit_at = 0;  // when the commit was made, from the code host; 0 if unknown
  std::string state = release_state::kQueued;
  std::string reason;            // why it ended the way it did, or why it waits
  int current_wave = -1;         // index of the wave in progress; -1 before the first
  std::string previous_version;  // what the fleet ran when the release started
  UnixMs created_at = 0;
  UnixMs started_at = 0;
  UnixMs finished_at = 0;
  std::string kind = release_kind::kRollout;
  int64_t previous_release_id = 0;  // the succeeded release it would roll back to
  // Written by the abort request only (never by the engine), so the request cannot be lost
  // to a concurrent engine pass.
  std::string abort_requested_by;
  UnixMs abort_requested_at = 0;
  // Makes creation idempotent: a second CreateRelease with the same pipeline and request id
  // creates nothing (kAlreadyExists naming the first). The CLI sends one per invocation, so a
  // retry across a failover makes one release; the webhook derives one from the commit, so
  // the same push delivered to two lockstepd makes one release. Empty: no such guard.
  std::string request_id;
  // Who made it: the token of the API call or the CLI, "github" for a push. For an on-call
  // rollback this is the person on call, while `author` stays the commit's author.
  std::string created_by;
};

struct WaveRecord {
  int64_t release_id = 0;
  int index = 0;
  std::string name;
  std::string state = wave_state::kPending;
  UnixMs started_at = 0;
  UnixMs bake_started_at = 0;  // stored so that a restart resumes the bake, not restarts it
  UnixMs finished_at = 0;
  UnixMs first_switch_at = 0;  // the mixed-version window: first to last `current` switch
  UnixMs last_switch_at = 0;
  UnixMs approval_requested_at = 0;
  // Written by the approve request only (never by the engine).
  std::string approved_by;
  UnixMs approved_at = 0;
};

// What a host's task is (or was) in a release. Decisions read this, never `detail`.
namespace host_step {
inline constexpr const char* kPrepare = "prepare";    // fetch, verify, unpack; `current` untouched
inline constexpr const char* kActivate = "activate";  // a rollout's switch: stop, switch, start
inline constexpr const char* kDeploy = "deploy";      // prepare and activate in one (rollback)
inline constexpr const char* kRevert = "revert";      // back to the release before
inline constexpr const char* kConverge = "converge";  // brought to the desired release at rest
// An on-call rollback asking a host that reports its version already: a DEPLOY the agent
// answers without running a hook if, when its turn comes, the host still runs it.
inline constexpr const char* kConfirm = "confirm";
}  // namespace host_step

struct HostRecord {
  int64_t release_id = 0;
  std::string agent;
  std::string region;
  int wave = 0;
  std::string state = host_state::kPending;
  std::string task_id;      // the task outstanding or last sent to this host
  std::string detail;       // last step, or the error that failed it
  UnixMs started_at = 0;    // first task sent
  UnixMs task_sent_at = 0;  // current task sent; its deadline counts from here
  UnixMs finished_at = 0;
  std::string from_version;  // what the host ran when the release reached it
  std::string step;          // host_step of the task outstanding or last sent; "" before any
  int attempt = 0;           // tasks sent for `step`; each attempt has its own task id
  // A task that may stop the previous release or switch `current` to this one was sent: a
  // revert must take this host back, whatever became of the task.
  bool switch_sent = false;
  // The last lines a failed hook printed, as the agent sent them (bounded), kept as the
  // evidence of the failure; empty where the region keeps hook output (hook_output: none).
  std::string output_tail;
  // What the host failed with in this release, kept when it is reverted, so the host that
  // caused a rollback stays known; empty if it never failed, or once it finished the release
  // after all (a retry, a convergence).
  std::string failure;
};

// Where a bring-up region stands in a release: it walks the pipeline's per_region waves on
// its own, and only its own hosts go back if it fails.
namespace bringup_state {
inline constexpr const char* kRolling = "rolling";
inline constexpr const char* kSucceeded = "succeeded";
inline constexpr const char* kRollingBack = "rolling_back";  // its hosts going back alone
inline constexpr const char* kRolledBack = "rolled_back";
inline constexpr const char* kFailed = "failed";  // could not go back everywhere, or nowhere to go
// The release ended (preempted, replaced) or a newer release took the region over.
inline constexpr const char* kSuperseded = "superseded";
inline bool IsFinal(const std::string& s) { return s != kRolling && s != kRollingBack; }
}  // namespace bringup_state

struct BringupRecord {
  int64_t release_id = 0;
  std::string region;
  std::string state = bringup_state::kRolling;
  int wave = 0;  // index in the pipeline's waves of the wave the region is in
  UnixMs started_at = 0;
  UnixMs wave_started_at = 0;
  UnixMs bake_started_at = 0;  // when every host of its wave was done; 0 while deploying
  UnixMs finished_at = 0;
  std::string reason;
};

// One evaluation of a metric gate in one region, as reported by an agent of that region.
struct GateResult {
  int64_t release_id = 0;
  int wave = 0;
  std::string gate;
  std::string region;
  UnixMs at = 0;            // when lockstepd received it
  UnixMs evaluated_at = 0;  // the instant Prometheus evaluated the query at (0: unknown)
  std::string verdict;      // "pass", "fail", "inconclusive"
  double value = 0;
  std::string detail;
};

// Operator switches on a pipeline.
struct PipelineState {
  std::string pipeline;
  bool paused = false;
  std::string paused_by;
  UnixMs paused_at = 0;
  bool frozen = false;
  std::string frozen_by;
  std::string freeze_reason;
  UnixMs frozen_at = 0;
};

// An API token (or agent enrollment token). Only the token's sha256 is stored.
struct TokenRecord {
  std::string name;
  std::string role;    // viewer, deployer, release-manager, on-call, admin, or agent
  std::string region;  // agent enrollment tokens: the region they may join
  std::string hash;
  UnixMs created_at = 0;
  std::string created_by;
  UnixMs expires_at = 0;    // 0: never
  UnixMs last_used_at = 0;  // 0: never used (updated at most once a minute)
  UnixMs revoked_at = 0;    // 0: valid; a revoked token is kept so its name stays taken
  std::string revoked_by;
};

// A host's own credential, issued by lockstepd when the host first enrolled with its
// region's enrollment token. Only the sha256 of the secret is stored.
struct HostCredentialRecord {
  std::string name;    // the agent (host) name it belongs to
  std::string region;  // the region it is bound to
  std::string hash;
  UnixMs created_at = 0;
  std::string enrolled_with;  // the name of the enrollment token used
};

struct AgentRecord {
  std::string name;
  std::string region;
  std::string pipeline;
  std::string current_version;
  std::vector<std::string> versions_on_disk;
  bool connected = false;
  UnixMs first_seen = 0;
  UnixMs last_seen = 0;
  std::string agent_version;  // the lockstep-agent build, as its last hello said
};

struct AuditRecord {
  int64_t id = 0;
  UnixMs at = 0;
  std::string actor;   // token name, "engine", "agent:<name>"
  std::string action;  // "release.create", "release.fail", ...
  std::string target;  // "monolith", "release/12"
  std::string detail;
  std::string outcome = "ok";
};

// A notification waiting in the durable outbox: written in the same transaction as the
// change it reports, delivered (at least once) by whichever lockstepd leads, and marked
// delivered or given up on afterwards.
struct OutboxRecord {
  int64_t id = 0;  // assigned when written; ascending in write order
  UnixMs created_at = 0;
  std::string pipeline;
  std::string event;    // release_started, succeeded, ... (for logs and filters)
  std::string url;      // the notify target
  std::string payload;  // the JSON body, as it is to be sent
  int attempts = 0;     // deliveries tried so far
  UnixMs next_attempt_at = 0;
  UnixMs done_at = 0;   // delivered or given up on; 0: still pending
  std::string outcome;  // "delivered", "failed: ..." once done; the last error while pending
};

// The leader lease: which lockstepd may write. Its epoch goes up by one each time a
// different process takes it, and every fenced write checks it in its own transaction.
struct LeaseRecord {
  int64_t epoch = 0;         // 0: never held
  std::string holder;        // the holding process's id (unique per start)
  std::string grpc_address;  // where agents and the CLI reach the holder
  std::string http_url;      // where HTTP callers reach it
  int64_t remaining_ms = 0;  // how long it is still held, by the store's clock; <= 0: expired
};

struct LeaseClaim {
  std::string holder;
  std::string grpc_address;
  std::string http_url;
  int64_t ttl_ms = 3000;
};

// Everything one engine pass (or one API call) changes, written in a single transaction.
struct WriteBatch {
  std::vector<ReleaseRecord> releases;   // upserted by id (id must exist)
  std::vector<WaveRecord> waves;         // upserted by (release_id, index)
  std::vector<HostRecord> hosts;         // upserted by (release_id, agent)
  std::vector<AgentRecord> agents;       // upserted by name
  std::vector<AuditRecord> audit;        // appended
  std::vector<GateResult> gate_results;  // appended
  std::vector<BringupRecord> bringup;    // upserted by (release_id, region)
  // Pipelines the engine holds (pauses): only the paused columns are written, so an
  // operator's freeze made meanwhile is kept.
  struct Hold {
    std::string pipeline;
    std::string by;
    UnixMs at = 0;
  };
  std::vector<Hold> holds;

  // Operators' requests. Each writes only its own columns, so the engine's rows written by a
  // concurrent pass do not undo it, nor it them.
  struct AbortRequest {  // sets the release's abort_requested_by/at
    int64_t release_id = 0;
    std::string by;
    UnixMs at = 0;
  };
  std::vector<AbortRequest> abort_requests;
  struct Approval {  // sets the wave's approved_by/at
    int64_t release_id = 0;
    int wave = 0;
    std::string by;
    UnixMs at = 0;
  };
  std::vector<Approval> approvals;
  std::vector<PipelineState> pipeline_states;  // upserted by pipeline, every column

  // Checked before anything is written, in the same transaction: each release (and, if
  // `wave` >= 0, that wave of it) must still hold exactly these values, else the whole batch
  // is refused. How a caller that decided from what it read makes sure it still holds.
  struct Expect {
    int64_t release_id = 0;
    std::string state;              // the release's state
    UnixMs abort_requested_at = 0;  // the release's
    int wave = -1;
    std::string wave_state;
    UnixMs wave_approved_at = 0;
  };
  std::vector<Expect> expect;

  std::vector<OutboxRecord> outbox;  // appended (ids assigned)
  // Delivery progress of outbox rows: attempts, next_attempt_at, done_at and outcome are
  // written; an unknown id is ignored (another leader may have finished it).
  std::vector<OutboxRecord> outbox_updates;

  bool empty() const {
    return releases.empty() && waves.empty() && hosts.empty() && agents.empty() && audit.empty() &&
           gate_results.empty() && holds.empty() && abort_requests.empty() && approvals.empty() &&
           pipeline_states.empty() && outbox.empty() && outbox_updates.empty() && bringup.empty();
  }
};

}  // namespace lockstep
