// Operations: every operator action, written once. The two front doors, the gRPC
// ControlService (the CLI) and the HTTP API (the dashboard, scripts), only translate their
// wire formats and call these; so an action is authenticated, authorized, validated, done
// and answered the same way whichever door it came through.
//
// Each call, in this order:
//   1. authenticates `authorization` (the "Bearer <token>" header value; kUnauthenticated),
//   2. authorizes the operation's Action for the caller's role (kPermissionDenied),
//   3. validates the input (kInvalidArgument naming the field, kNotFound naming the thing),
//   4. acts through the engine or the authenticator, which audit it as the caller,
//   5. wakes the engine loop if desired state changed, and
//   6. builds the answer from the store.
// A refusal at any step changes nothing.
//
// Thread safety: every method may be called from any thread (request threads of both doors).
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "common/status.h"
#include "orchestrator/auth/authenticator.h"
#include "orchestrator/engine/engine.h"
#include "orchestrator/server/views.h"
#include "orchestrator/server/watchers.h"
#include "orchestrator/store/model.h"
#include "proto/lockstep.pb.h"

namespace lockstep {

class Hub;
class Store;

// The operations a caller may be allowed, by the names whoami lists and the dashboard keys
// its buttons on: "release.create", "release.approve", "release.abort", "pipeline.pause",
// "pipeline.resume", "pipeline.freeze", "pipeline.unfreeze", "pipeline.rollback",
// "tokens.manage", "agents.remove".
std::vector<std::string> AllowedOperations(Role role);

struct CreatedToken {
  std::string name;
  std::string role;
  std::string token;  // the secret, shown once
};

class Operations {
 public:
  // Everything must outlive the Operations.
  Operations(Engine* engine, Store* store, Hub* hub, const Authenticator* auth);

  // --- reads (Action::kRead unless noted) ---
  StatusOr<Principal> WhoAmI(const std::string& authorization) const;
  // Every pipeline if `pipeline` is empty; kNotFound for an unknown one.
  StatusOr<lockstep::v1::StatusResponse> Status(const std::string& authorization,
                                                const std::string& pipeline) const;
  StatusOr<std::vector<ReleaseRecord>> ListReleases(const std::string& authorization,
                                                    const std::string& pipeline, int limit,
                                                    const std::string& state,
                                                    const std::string& kind,
                                                    const ReleaseFilter& filter = {}) const;
  StatusOr<lockstep::v1::Release> GetRelease(const std::string& authorization, int64_t id) const;
  // Every agent, or those of `region` (kNotFound if no pipeline lists it). Sorted by name.
  StatusOr<std::vector<AgentRecord>> ListAgents(const std::string& authorization,
                                                const std::string& region) const;
  StatusOr<std::vector<AuditRecord>> ListAudit(const std::string& authorization, int limit) const;
  StatusOr<std::vector<AuditRecord>> FindAudit(const std::string& authorization,
                                               const AuditQuery& query) const;
  // Action::kManageTokens.
  StatusOr<std::vector<TokenRecord>> ListTokens(const std::string& authorization) const;

  // The view of a release for a caller authenticated earlier: an open event stream, whose
  // token was checked when it opened (and which is closed when that token is revoked).
  StatusOr<lockstep::v1::Release> ReleaseView(int64_t id) const;

  // --- actions ---
  StatusOr<ReleaseRecord> CreateRelease(const std::string& authorization,
                                        const NewRelease& release) const;
  StatusOr<lockstep::v1::Release> Approve(const std::string& authorization, int64_t id,
                                          const std::string& comment = "") const;
  StatusOr<lockstep::v1::Release> Abort(const std::string& authorization, int64_t id) const;
  StatusOr<lockstep::v1::PipelineStatus> Pause(const std::string& authorization,
                                               const std::string& pipeline) const;
  StatusOr<lockstep::v1::PipelineStatus> Resume(const std::string& authorization,
                                                const std::string& pipeline) const;
  // `reason` must not be blank.
  StatusOr<lockstep::v1::PipelineStatus> Freeze(const std::string& authorization,
                                                const std::string& pipeline,
                                                const std::string& reason) const;
  StatusOr<lockstep::v1::PipelineStatus> Unfreeze(const std::string& authorization,
                                                  const std::string& pipeline) const;
  // `to_version` empty: the last release that succeeded before the current one.
  StatusOr<ReleaseRecord> Rollback(const std::string& authorization, const std::string& pipeline,
                                   const std::string& to_version) const;
  // `lifetime_ms` 0: never expires.
  StatusOr<CreatedToken> CreateToken(const std::string& authorization, const std::string& name,
                                     const std::string& role, const std::string& region,
                                     int64_t lifetime_ms) const;
  lockstep::Status RevokeToken(const std::string& authorization, const std::string& name) const;
  lockstep::Status RemoveAgent(const std::string& authorization, const std::string& name) const;

  // --- live views: the watches of the gRPC door (watchers.h) ---

  // Wires the live views. REQUIRES: called before any request; `watchers` outlives this.
  // Without it, watches are refused (kUnavailable).
  void set_watchers(Watchers* watchers) { watchers_ = watchers; }
  // Wires leadership: `refusal` returns "" while this lockstepd leads, else why it does not
  // serve (Leadership::Refusal), which every call then fails with (kUnavailable) before
  // authenticating. REQUIRES: called before any request. Unset: always serve.
  void set_standby(std::function<std::string()> refusal) { standby_ = std::move(refusal); }
  // Opens a watch of release `id` for the caller (steps 1-2, Action::kRead); then each view
  // is read with GetRelease(authorization, id), which authenticates again, so a revoked or
  // expired token ends the watch at its next view (a revocation is published at once). An
  // unknown release is refused by the first view. kResourceExhausted when every watch slot
  // is taken, kUnavailable while lockstepd shuts down.
  StatusOr<std::unique_ptr<Watch>> WatchRelease(const std::string& authorization, int64_t id) const;
  // The same for the status, each view read with Status(authorization, pipeline).
  StatusOr<std::unique_ptr<Watch>> WatchStatus(const std::string& authorization) const;
  // Whether a watch of a release ends after showing `view`: the release is final, or halted
  // (it waits for a human, not for time). `lockstep release watch` and `--wait` end there too.
  static bool EndsReleaseWatch(const lockstep::v1::Release& view);

 private:
  // Steps 1-2, after refusing if this lockstepd is a standby.
  StatusOr<Principal> Admit(const std::string& authorization, Action action) const;
  using Change = std::function<lockstep::Status(const std::string& actor)>;
  // Steps 1-2, 4-6 of a pipeline switch.
  StatusOr<lockstep::v1::PipelineStatus> Switch(const std::string& authorization, Action action,
                                                const std::string& pipeline,
                                                const Change& change) const;
  StatusOr<lockstep::v1::PipelineStatus> PipelineView(const std::string& pipeline) const;

  Engine* const engine_;
  Store* const store_;
  Hub* const hub_;
  const Authenticator* const auth_;
  Watchers* watchers_ = nullptr;          // set once, before any request
  std::function<std::string()> standby_;  // set once, before any request
};

}  // namespace lockstep
