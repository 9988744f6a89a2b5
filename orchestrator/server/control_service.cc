// The CLI's control API. Every call is authenticated (bearer token in the "authorization"
// metadata) and authorised by role; reads come from the store, requests go through the
// engine's operator methods, which audit them, and then kick the engine.

#include <grpcpp/grpcpp.h>

#include <algorithm>

#include "common/untrusted.h"
#include "orchestrator/auth/authenticator.h"
#include "orchestrator/engine/engine.h"
#include "orchestrator/server/hub.h"
#include "orchestrator/server/services.h"
#include "orchestrator/server/views.h"
#include "proto/lockstep.grpc.pb.h"

namespace lockstep {
namespace {

namespace v1 = lockstep::v1;

grpc::Status ToGrpc(const Status& st) {
  using grpc::StatusCode;
  StatusCode code = StatusCode::INTERNAL;
  switch (st.code()) {
    case lockstep::StatusCode::kOk:
      return grpc::Status::OK;
    case lockstep::StatusCode::kInvalidArgument:
      code = StatusCode::INVALID_ARGUMENT;
      break;
    case lockstep::StatusCode::kNotFound:
      code = StatusCode::NOT_FOUND;
      break;
    case lockstep::StatusCode::kAlreadyExists:
      code = StatusCode::ALREADY_EXISTS;
      break;
    case lockstep::StatusCode::kFailedPrecondition:
      code = StatusCode::FAILED_PRECONDITION;
      break;
    case lockstep::StatusCode::kPermissionDenied:
      code = StatusCode::PERMISSION_DENIED;
      break;
    case lockstep::StatusCode::kUnauthenticated:
      code = StatusCode::UNAUTHENTICATED;
      break;
    case lockstep::StatusCode::kUnavailable:
      code = StatusCode::UNAVAILABLE;
      break;
    case lockstep::StatusCode::kResourceExhausted:
      code = StatusCode::RESOURCE_EXHAUSTED;
      break;
    case lockstep::StatusCode::kDeadlineExceeded:
      code = StatusCode::DEADLINE_EXCEEDED;
      break;
    case lockstep::StatusCode::kDataLoss:
      code = StatusCode::DATA_LOSS;
      break;
    case lockstep::StatusCode::kInternal:
      code = StatusCode::INTERNAL;
      break;
  }
  return grpc::Status(code, st.message());
}

std::string AuthorizationOf(const grpc::ServerContext* ctx) {
  auto it = ctx->client_metadata().find("authorization");
  if (it == ctx->client_metadata().end()) return "";
  return std::string(it->second.data(), it->second.size());
}

class ControlServiceImpl final : public v1::ControlService::Service {
 public:
  ControlServiceImpl(Engine* engine, Store* store, Hub* hub, const Authenticator* auth)
      : engine_(engine), store_(store), hub_(hub), auth_(auth) {}

  grpc::Status CreateRelease(grpc::ServerContext* ctx, const v1::CreateReleaseRequest* req,
                             v1::Release* out) override {
    auto who = auth_->Check(AuthorizationOf(ctx), Action::kCreateRelease);
    if (!who.ok()) return ToGrpc(who.status());
    NewRelease nr{req->pipeline(), req->version(), req->artifact_url(),
                  req->sha256(),   req->commit(),  req->author()};
    auto created = engine_->CreateRelease(nr, who->name);
    if (!created.ok()) return ToGrpc(created.status());
    hub_->Kick();
    *out = ReleaseSummary(*created);
    return grpc::Status::OK;
  }

  grpc::Status ListReleases(grpc::ServerContext* ctx, const v1::ListReleasesRequest* req,
                            v1::ListReleasesResponse* out) override {
    auto who = auth_->Check(AuthorizationOf(ctx), Action::kRead);
    if (!who.ok()) return ToGrpc(who.status());
    auto list = ListReleasesView(*store_, *engine_, req->pipeline(), req->limit(), req->state(),
                                 req->kind());
    if (!list.ok()) return ToGrpc(list.status());
    for (const auto& r : *list) *out->add_releases() = ReleaseSummary(r);
    return grpc::Status::OK;
  }

  grpc::Status GetRelease(grpc::ServerContext* ctx, const v1::GetReleaseRequest* req,
                          v1::Release* out) override {
    auto who = auth_->Check(AuthorizationOf(ctx), Action::kRead);
    if (!who.ok()) return ToGrpc(who.status());
    return Respond(LoadReleaseView(*store_, *engine_, req->id()), out);
  }

  grpc::Status ListAgents(grpc::ServerContext* ctx, const v1::ListAgentsRequest* req,
                          v1::ListAgentsResponse* out) override {
    auto who = auth_->Check(AuthorizationOf(ctx), Action::kRead);
    if (!who.ok()) return ToGrpc(who.status());
    if (!req->region().empty()) {
      bool listed = false;
      for (const auto& p : engine_->pipelines()) listed |= p.HasRegion(req->region());
      if (!listed) {
        return ToGrpc(NotFound("no pipeline lists region \"" + LogSafe(req->region(), 64) + "\""));
      }
    }
    auto agents = store_->Agents();
    if (!agents.ok()) return ToGrpc(agents.status());
    for (const auto& a : *agents) {
      if (req->region().empty() || a.region == req->region()) *out->add_agents() = AgentView(a);
    }
    return grpc::Status::OK;
  }

  grpc::Status GetStatus(grpc::ServerContext* ctx, const v1::StatusRequest* req,
                         v1::StatusResponse* out) override {
    auto who = auth_->Check(AuthorizationOf(ctx), Action::kRead);
    if (!who.ok()) return ToGrpc(who.status());
    return Respond(LoadStatusView(*store_, *engine_, req->pipeline()), out);
  }

  grpc::Status Approve(grpc::ServerContext* ctx, const v1::ReleaseRef* req,
                       v1::Release* out) override {
    auto who = auth_->Check(AuthorizationOf(ctx), Action::kApprove);
    if (!who.ok()) return ToGrpc(who.status());
    if (Status st = engine_->Approve(req->id(), who->name); !st.ok()) return ToGrpc(st);
    hub_->Kick();
    return Respond(LoadReleaseView(*store_, *engine_, req->id()), out);
  }

  grpc::Status Abort(grpc::ServerContext* ctx, const v1::ReleaseRef* req,
                     v1::Release* out) override {
    auto who = auth_->Check(AuthorizationOf(ctx), Action::kAbort);
    if (!who.ok()) return ToGrpc(who.status());
    if (Status st = engine_->Abort(req->id(), who->name); !st.ok()) return ToGrpc(st);
    hub_->Kick();
    return Respond(LoadReleaseView(*store_, *engine_, req->id()), out);
  }

  grpc::Status Pause(grpc::ServerContext* ctx, const v1::PipelineRef* req,
                     v1::Empty* /*out*/) override {
    return PipelineSwitch(ctx, Action::kPause, [&](const std::string& who) {
      return engine_->Pause(req->pipeline(), who);
    });
  }
  grpc::Status Resume(grpc::ServerContext* ctx, const v1::PipelineRef* req,
                      v1::Empty* /*out*/) override {
    return PipelineSwitch(ctx, Action::kResume, [&](const std::string& who) {
      return engine_->Resume(req->pipeline(), who);
    });
  }
  grpc::Status Freeze(grpc::ServerContext* ctx, const v1::PipelineRef* req,
                      v1::Empty* /*out*/) override {
    return PipelineSwitch(ctx, Action::kFreeze, [&](const std::string& who) {
      return engine_->Freeze(req->pipeline(), req->reason(), who);
    });
  }
  grpc::Status Unfreeze(grpc::ServerContext* ctx, const v1::PipelineRef* req,
                        v1::Empty* /*out*/) override {
    return PipelineSwitch(ctx, Action::kFreeze, [&](const std::string& who) {
      return engine_->Unfreeze(req->pipeline(), who);
    });
  }

  grpc::Status Rollback(grpc::ServerContext* ctx, const v1::RollbackRequest* req,
                        v1::Release* out) override {
    auto who = auth_->Check(AuthorizationOf(ctx), Action::kRollback);
    if (!who.ok()) return ToGrpc(who.status());
    auto created = engine_->Rollback(req->pipeline(), req->to_version(), who->name);
    if (!created.ok()) return ToGrpc(created.status());
    hub_->Kick();
    *out = ReleaseSummary(*created);
    return grpc::Status::OK;
  }

  grpc::Status ListAudit(grpc::ServerContext* ctx, const v1::AuditRequest* req,
                         v1::AuditResponse* out) override {
    auto who = auth_->Check(AuthorizationOf(ctx), Action::kRead);
    if (!who.ok()) return ToGrpc(who.status());
    auto entries = store_->Audit(req->limit());
    if (!entries.ok()) return ToGrpc(entries.status());
    for (const auto& e : *entries) *out->add_entries() = AuditView(e);
    return grpc::Status::OK;
  }

  grpc::Status CreateToken(grpc::ServerContext* ctx, const v1::CreateTokenRequest* req,
                           v1::CreateTokenResponse* out) override {
    auto who = auth_->Check(AuthorizationOf(ctx), Action::kManageTokens);
    if (!who.ok()) return ToGrpc(who.status());
    auto token = auth_->CreateToken(req->name(), req->role(), req->region(), who->name,
                                    req->expires_in_ms());
    if (!token.ok()) return ToGrpc(token.status());
    out->set_name(req->name());
    out->set_role(req->role());
    out->set_token(*token);
    return grpc::Status::OK;
  }

  grpc::Status ListTokens(grpc::ServerContext* ctx, const v1::Empty* /*req*/,
                          v1::ListTokensResponse* out) override {
    auto who = auth_->Check(AuthorizationOf(ctx), Action::kManageTokens);
    if (!who.ok()) return ToGrpc(who.status());
    auto tokens = store_->ListTokens();
    if (!tokens.ok()) return ToGrpc(tokens.status());
    for (const auto& t : *tokens) *out->add_tokens() = TokenView(t);
    return grpc::Status::OK;
  }

  grpc::Status RevokeToken(grpc::ServerContext* ctx, const v1::TokenRef* req,
                           v1::Empty* /*out*/) override {
    auto who = auth_->Check(AuthorizationOf(ctx), Action::kManageTokens);
    if (!who.ok()) return ToGrpc(who.status());
    return ToGrpc(auth_->RevokeToken(req->name(), who->name));
  }

  grpc::Status RemoveAgent(grpc::ServerContext* ctx, const v1::AgentRef* req,
                           v1::Empty* /*out*/) override {
    auto who = auth_->Check(AuthorizationOf(ctx), Action::kManageTokens);
    if (!who.ok()) return ToGrpc(who.status());
    return ToGrpc(hub_->RemoveAgent(req->name(), who->name));
  }

 private:
  template <typename T>
  grpc::Status Respond(StatusOr<T> result, T* out) {
    if (!result.ok()) return ToGrpc(result.status());
    *out = std::move(*result);
    return grpc::Status::OK;
  }

  grpc::Status PipelineSwitch(grpc::ServerContext* ctx, Action action,
                              const std::function<Status(const std::string&)>& change) {
    auto who = auth_->Check(AuthorizationOf(ctx), action);
    if (!who.ok()) return ToGrpc(who.status());
    if (Status st = change(who->name); !st.ok()) return ToGrpc(st);
    hub_->Kick();
    return grpc::Status::OK;
  }

  Engine* const engine_;
  Store* const store_;
  Hub* const hub_;
  const Authenticator* const auth_;
};

}  // namespace

std::unique_ptr<grpc::Service> MakeControlService(Engine* engine, Store* store, Hub* hub,
                                                  const Authenticator* auth) {
  return std::make_unique<ControlServiceImpl>(engine, store, hub, auth);
}

}  // namespace lockstep
