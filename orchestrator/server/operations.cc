#include "orchestrator/server/operations.h"

#include "common/untrusted.h"
#include "orchestrator/server/hub.h"
#include "orchestrator/server/views.h"
#include "orchestrator/store/store.h"

namespace lockstep {

std::vector<std::string> AllowedOperations(Role role) {
  // Operation name -> the permission it needs. Unfreezing needs the freeze permission, and
  // removing a host the token permission (both retire credentials).
  static const std::vector<std::pair<const char*, Action>> kOperations = {
      {"release.create", Action::kCreateRelease}, {"release.approve", Action::kApprove},
      {"release.abort", Action::kAbort},          {"pipeline.pause", Action::kPause},
      {"pipeline.resume", Action::kResume},       {"pipeline.freeze", Action::kFreeze},
      {"pipeline.unfreeze", Action::kFreeze},     {"pipeline.rollback", Action::kRollback},
      {"tokens.manage", Action::kManageTokens},   {"agents.remove", Action::kManageTokens},
  };
  std::vector<std::string> out;
  for (const auto& [name, action] : kOperations) {
    if (RoleAllows(role, action)) out.emplace_back(name);
  }
  return out;
}

Operations::Operations(Engine* engine, Store* store, Hub* hub, const Authenticator* auth)
    : engine_(engine), store_(store), hub_(hub), auth_(auth) {}

StatusOr<Principal> Operations::Admit(const std::string& authorization, Action action) const {
  if (standby_) {
    if (std::string refusal = standby_(); !refusal.empty()) return Unavailable(refusal);
  }
  return auth_->Check(authorization, action);
}

StatusOr<Principal> Operations::WhoAmI(const std::string& authorization) const {
  return Admit(authorization, Action::kRead);
}

StatusOr<v1::StatusResponse> Operations::Status(const std::string& authorization,
                                                const std::string& pipeline) const {
  LOCKSTEP_RETURN_IF_ERROR(Admit(authorization, Action::kRead).status());
  return LoadStatusView(*store_, *engine_, pipeline);
}

StatusOr<std::vector<ReleaseRecord>> Operations::ListReleases(const std::string& authorization,
                                                              const std::string& pipeline,
                                                              int limit, const std::string& state,
                                                              const std::string& kind,
                                                              const ReleaseFilter& filter) const {
  LOCKSTEP_RETURN_IF_ERROR(Admit(authorization, Action::kRead).status());
  return ListReleasesView(*store_, *engine_, pipeline, limit, state, kind, filter);
}

StatusOr<v1::Release> Operations::GetRelease(const std::string& authorization, int64_t id) const {
  LOCKSTEP_RETURN_IF_ERROR(Admit(authorization, Action::kRead).status());
  return LoadReleaseView(*store_, *engine_, id);
}

StatusOr<v1::Release> Operations::ReleaseView(int64_t id) const {
  return LoadReleaseView(*store_, *engine_, id);
}

StatusOr<std::vector<AgentRecord>> Operations::ListAgents(const std::string& authorization,
                                                          const std::string& region) const {
  LOCKSTEP_RETURN_IF_ERROR(Admit(authorization, Action::kRead).status());
  if (!region.empty()) {
    bool listed = false;
    for (const auto& p : engine_->pipelines()) listed |= p.HasRegion(region);
    if (!listed) return NotFound("no pipeline lists region \"" + LogSafe(region, 64) + "\"");
  }
  LOCKSTEP_ASSIGN_OR_RETURN(auto agents, store_->Agents());
  if (region.empty()) return agents;
  std::vector<AgentRecord> out;
  for (auto& a : agents) {
    if (a.region == region) out.push_back(std::move(a));
  }
  return out;
}

StatusOr<std::vector<AuditRecord>> Operations::ListAudit(const std::string& authorization,
                                                         int limit) const {
  LOCKSTEP_RETURN_IF_ERROR(Admit(authorization, Action::kRead).status());
  return store_->Audit(limit);
}

StatusOr<std::vector<AuditRecord>> Operations::FindAudit(const std::string& authorization,
                                                         const AuditQuery& query) const {
  LOCKSTEP_RETURN_IF_ERROR(Admit(authorization, Action::kRead).status());
  if (!query.pipeline.empty() && !engine_->FindPipeline(query.pipeline)) {
    return NotFound("pipeline: unknown pipeline \"" + LogSafe(query.pipeline, 64) + "\"");
  }
  return store_->FindAudit(query);
}

StatusOr<std::vector<TokenRecord>> Operations::ListTokens(const std::string& authorization) const {
  LOCKSTEP_RETURN_IF_ERROR(Admit(authorization, Action::kManageTokens).status());
  return store_->ListTokens();
}

StatusOr<ReleaseRecord> Operations::CreateRelease(const std::string& authorization,
                                                  const NewRelease& release) const {
  LOCKSTEP_ASSIGN_OR_RETURN(auto who, Admit(authorization, Action::kCreateRelease));
  LOCKSTEP_ASSIGN_OR_RETURN(auto created, engine_->CreateRelease(release, who.name));
  hub_->Kick();
  return created;
}

StatusOr<v1::Release> Operations::Approve(const std::string& authorization, int64_t id,
                                          const std::string& comment) const {
  LOCKSTEP_ASSIGN_OR_RETURN(auto who, Admit(authorization, Action::kApprove));
  LOCKSTEP_RETURN_IF_ERROR(engine_->Approve(id, who.name, comment));
  hub_->Kick();
  return LoadReleaseView(*store_, *engine_, id);
}

StatusOr<v1::Release> Operations::Abort(const std::string& authorization, int64_t id) const {
  LOCKSTEP_ASSIGN_OR_RETURN(auto who, Admit(authorization, Action::kAbort));
  LOCKSTEP_RETURN_IF_ERROR(engine_->Abort(id, who.name));
  hub_->Kick();
  return LoadReleaseView(*store_, *engine_, id);
}

StatusOr<v1::PipelineStatus> Operations::Pause(const std::string& authorization,
                                               const std::string& pipeline) const {
  return Switch(authorization, Action::kPause, pipeline,
                [&](const std::string& actor) { return engine_->Pause(pipeline, actor); });
}

StatusOr<v1::PipelineStatus> Operations::Resume(const std::string& authorization,
                                                const std::string& pipeline) const {
  return Switch(authorization, Action::kResume, pipeline,
                [&](const std::string& actor) { return engine_->Resume(pipeline, actor); });
}

StatusOr<v1::PipelineStatus> Operations::Freeze(const std::string& authorization,
                                                const std::string& pipeline,
                                                const std::string& reason) const {
  return Switch(authorization, Action::kFreeze, pipeline,
                [&](const std::string& actor) { return engine_->Freeze(pipeline, reason, actor); });
}

StatusOr<v1::PipelineStatus> Operations::Unfreeze(const std::string& authorization,
                                                  const std::string& pipeline) const {
  return Switch(authorization, Action::kFreeze, pipeline,
                [&](const std::string& actor) { return engine_->Unfreeze(pipeline, actor); });
}

StatusOr<ReleaseRecord> Operations::Rollback(const std::string& authorization,
                                             const std::string& pipeline,
                                             const std::string& to_version) const {
  LOCKSTEP_ASSIGN_OR_RETURN(auto who, Admit(authorization, Action::kRollback));
  LOCKSTEP_ASSIGN_OR_RETURN(auto created, engine_->Rollback(pipeline, to_version, who.name));
  hub_->Kick();
  return created;
}

StatusOr<CreatedToken> Operations::CreateToken(const std::string& authorization,
                                               const std::string& name, const std::string& role,
                                               const std::string& region,
                                               int64_t lifetime_ms) const {
  LOCKSTEP_ASSIGN_OR_RETURN(auto who, Admit(authorization, Action::kManageTokens));
  LOCKSTEP_ASSIGN_OR_RETURN(auto token,
                            auth_->CreateToken(name, role, region, who.name, lifetime_ms));
  return CreatedToken{name, role, std::move(token)};
}

lockstep::Status Operations::RevokeToken(const std::string& authorization,
                                         const std::string& name) const {
  LOCKSTEP_ASSIGN_OR_RETURN(auto who, Admit(authorization, Action::kManageTokens));
  return auth_->RevokeToken(name, who.name);
}

lockstep::Status Operations::RemoveAgent(const std::string& authorization,
                                         const std::string& name) const {
  LOCKSTEP_ASSIGN_OR_RETURN(auto who, Admit(authorization, Action::kManageTokens));
  return hub_->RemoveAgent(name, who.name);
}

StatusOr<std::unique_ptr<Watch>> Operations::WatchRelease(const std::string& authorization,
                                                          int64_t id) const {
  LOCKSTEP_RETURN_IF_ERROR(Admit(authorization, Action::kRead).status());
  if (!watchers_) return Unavailable("live views are not served by this lockstepd");
  return watchers_->OpenRelease(id);
}

StatusOr<std::unique_ptr<Watch>> Operations::WatchStatus(const std::string& authorization) const {
  LOCKSTEP_RETURN_IF_ERROR(Admit(authorization, Action::kRead).status());
  if (!watchers_) return Unavailable("live views are not served by this lockstepd");
  return watchers_->OpenStatus();
}

bool Operations::EndsReleaseWatch(const v1::Release& view) {
  return view.final() || view.state() == release_state::kHalted;
}

StatusOr<v1::PipelineStatus> Operations::Switch(const std::string& authorization, Action action,
                                                const std::string& pipeline,
                                                const Change& change) const {
  LOCKSTEP_ASSIGN_OR_RETURN(auto who, Admit(authorization, action));
  LOCKSTEP_RETURN_IF_ERROR(change(who.name));
  hub_->Kick();
  return PipelineView(pipeline);
}

StatusOr<v1::PipelineStatus> Operations::PipelineView(const std::string& pipeline) const {
  LOCKSTEP_ASSIGN_OR_RETURN(auto view, LoadStatusView(*store_, *engine_, pipeline));
  if (view.pipelines_size() == 0) return NotFound("unknown pipeline \"" + pipeline + "\"");
  return view.pipelines(0);
}

}  // namespace lockstep
