// The CLI's control API: the gRPC front door of Operations (operations.h), which
// authenticates (the bearer token in the "authorization" metadata), authorizes, validates,
// acts and answers. This file only translates messages and statuses. The two watches
// (WatchRelease, WatchStatus) are a Watch (watchers.h) each, run on the call's own
// sync-server thread: Operations opens it, and each view it sends is read through Operations
// with the caller's authorization, so a revoked token ends the stream.

#include <grpcpp/grpcpp.h>

#include <algorithm>

#include "common/untrusted.h"
#include "orchestrator/server/operations.h"
#include "orchestrator/server/services.h"
#include "orchestrator/server/views.h"
#include "orchestrator/server/watchers.h"
#include "proto/lockstep.grpc.pb.h"

namespace lockstep {
namespace {

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
  explicit ControlServiceImpl(const Operations* ops) : ops_(ops) {}

  grpc::Status CreateRelease(grpc::ServerContext* ctx, const v1::CreateReleaseRequest* req,
                             v1::Release* out) override {
    NewRelease nr;
    nr.pipeline = req->pipeline();
    nr.version = req->version();
    nr.artifact_url = req->artifact_url();
    nr.sha256 = req->sha256();
    nr.commit = req->commit();
    nr.author = req->author();
    nr.request_id = req->request_id();
    auto created = ops_->CreateRelease(AuthorizationOf(ctx), nr);
    if (!created.ok()) return ToGrpc(created.status());
    *out = ReleaseSummary(*created);
    return grpc::Status::OK;
  }

  grpc::Status ListReleases(grpc::ServerContext* ctx, const v1::ListReleasesRequest* req,
                            v1::ListReleasesResponse* out) override {
    auto list = ops_->ListReleases(AuthorizationOf(ctx), req->pipeline(), req->limit(),
                                   req->state(), req->kind());
    if (!list.ok()) return ToGrpc(list.status());
    for (const auto& r : *list) *out->add_releases() = ReleaseSummary(r);
    return grpc::Status::OK;
  }

  grpc::Status GetRelease(grpc::ServerContext* ctx, const v1::GetReleaseRequest* req,
                          v1::Release* out) override {
    return Respond(ops_->GetRelease(AuthorizationOf(ctx), req->id()), out);
  }

  grpc::Status ListAgents(grpc::ServerContext* ctx, const v1::ListAgentsRequest* req,
                          v1::ListAgentsResponse* out) override {
    auto agents = ops_->ListAgents(AuthorizationOf(ctx), req->region());
    if (!agents.ok()) return ToGrpc(agents.status());
    for (const auto& a : *agents) *out->add_agents() = AgentView(a);
    return grpc::Status::OK;
  }

  grpc::Status GetStatus(grpc::ServerContext* ctx, const v1::StatusRequest* req,
                         v1::StatusResponse* out) override {
    return Respond(ops_->Status(AuthorizationOf(ctx), req->pipeline()), out);
  }

  grpc::Status Approve(grpc::ServerContext* ctx, const v1::ReleaseRef* req,
                       v1::Release* out) override {
    return Respond(ops_->Approve(AuthorizationOf(ctx), req->id(), req->comment()), out);
  }

  grpc::Status Abort(grpc::ServerContext* ctx, const v1::ReleaseRef* req,
                     v1::Release* out) override {
    return Respond(ops_->Abort(AuthorizationOf(ctx), req->id()), out);
  }

  grpc::Status Pause(grpc::ServerContext* ctx, const v1::PipelineRef* req,
                     v1::Empty* /*out*/) override {
    return ToGrpc(ops_->Pause(AuthorizationOf(ctx), req->pipeline()).status());
  }
  grpc::Status Resume(grpc::ServerContext* ctx, const v1::PipelineRef* req,
                      v1::Empty* /*out*/) override {
    return ToGrpc(ops_->Resume(AuthorizationOf(ctx), req->pipeline()).status());
  }
  grpc::Status Freeze(grpc::ServerContext* ctx, const v1::PipelineRef* req,
                      v1::Empty* /*out*/) override {
    return ToGrpc(ops_->Freeze(AuthorizationOf(ctx), req->pipeline(), req->reason()).status());
  }
  grpc::Status Unfreeze(grpc::ServerContext* ctx, const v1::PipelineRef* req,
                        v1::Empty* /*out*/) override {
    return ToGrpc(ops_->Unfreeze(AuthorizationOf(ctx), req->pipeline()).status());
  }

  grpc::Status Rollback(grpc::ServerContext* ctx, const v1::RollbackRequest* req,
                        v1::Release* out) override {
    auto created = ops_->Rollback(AuthorizationOf(ctx), req->pipeline(), req->to_version());
    if (!created.ok()) return ToGrpc(created.status());
    *out = ReleaseSummary(*created);
    return grpc::Status::OK;
  }

  grpc::Status ListAudit(grpc::ServerContext* ctx, const v1::AuditRequest* req,
                         v1::AuditResponse* out) override {
    auto entries = ops_->ListAudit(AuthorizationOf(ctx), req->limit());
    if (!entries.ok()) return ToGrpc(entries.status());
    for (const auto& e : *entries) *out->add_entries() = AuditView(e);
    return grpc::Status::OK;
  }

  grpc::Status CreateToken(grpc::ServerContext* ctx, const v1::CreateTokenRequest* req,
                           v1::CreateTokenResponse* out) override {
    auto created = ops_->CreateToken(AuthorizationOf(ctx), req->name(), req->role(), req->region(),
                                     req->expires_in_ms());
    if (!created.ok()) return ToGrpc(created.status());
    out->set_name(created->name);
    out->set_role(created->role);
    out->set_token(created->token);
    return grpc::Status::OK;
  }

  grpc::Status ListTokens(grpc::ServerContext* ctx, const v1::Empty* /*req*/,
                          v1::ListTokensResponse* out) override {
    auto tokens = ops_->ListTokens(AuthorizationOf(ctx));
    if (!tokens.ok()) return ToGrpc(tokens.status());
    for (const auto& t : *tokens) *out->add_tokens() = TokenView(t);
    return grpc::Status::OK;
  }

  grpc::Status RevokeToken(grpc::ServerContext* ctx, const v1::TokenRef* req,
                           v1::Empty* /*out*/) override {
    return ToGrpc(ops_->RevokeToken(AuthorizationOf(ctx), req->name()));
  }

  grpc::Status RemoveAgent(grpc::ServerContext* ctx, const v1::AgentRef* req,
                           v1::Empty* /*out*/) override {
    return ToGrpc(ops_->RemoveAgent(AuthorizationOf(ctx), req->name()));
  }

  grpc::Status WatchRelease(grpc::ServerContext* ctx, const v1::ReleaseRef* req,
                            grpc::ServerWriter<v1::Release>* writer) override {
    const std::string authorization = AuthorizationOf(ctx);
    const int64_t id = req->id();
    auto watch = ops_->WatchRelease(authorization, id);
    if (!watch.ok()) return ToGrpc(watch.status());
    v1::Release view;
    Watch::Hooks hooks;
    hooks.load = [&]() -> StatusOr<Watch::Look> {
      LOCKSTEP_ASSIGN_OR_RETURN(view, ops_->GetRelease(authorization, id));
      Watch::Look look;
      look.bytes = view.SerializeAsString();
      look.last = Operations::EndsReleaseWatch(view);
      return look;
    };
    hooks.send = [&] { return writer->Write(view); };
    return Follow(ctx, **watch, hooks);
  }

  grpc::Status WatchStatus(grpc::ServerContext* ctx, const v1::StatusRequest* req,
                           grpc::ServerWriter<v1::StatusResponse>* writer) override {
    const std::string authorization = AuthorizationOf(ctx);
    const std::string pipeline = req->pipeline();
    auto watch = ops_->WatchStatus(authorization);
    if (!watch.ok()) return ToGrpc(watch.status());
    v1::StatusResponse view;
    Watch::Hooks hooks;
    hooks.load = [&]() -> StatusOr<Watch::Look> {
      LOCKSTEP_ASSIGN_OR_RETURN(view, ops_->Status(authorization, pipeline));
      Watch::Look look;
      look.bytes = view.SerializeAsString();
      return look;
    };
    hooks.send = [&] { return writer->Write(view); };
    return Follow(ctx, **watch, hooks);
  }

 private:
  // Runs `watch` on this thread until it ends; a client that went away gets CANCELLED (it
  // is not listening), anything else the watch's status.
  static grpc::Status Follow(grpc::ServerContext* ctx, Watch& watch, Watch::Hooks& hooks) {
    hooks.gone = [ctx] { return ctx->IsCancelled(); };
    lockstep::Status ended = watch.Run(hooks);
    if (ctx->IsCancelled()) return grpc::Status::CANCELLED;
    return ToGrpc(ended);
  }

  template <typename T>
  static grpc::Status Respond(StatusOr<T> result, T* out) {
    if (!result.ok()) return ToGrpc(result.status());
    *out = std::move(*result);
    return grpc::Status::OK;
  }

  const Operations* const ops_;
};

}  // namespace

std::unique_ptr<grpc::Service> MakeControlService(const Operations* ops) {
  return std::make_unique<ControlServiceImpl>(ops);
}

}  // namespace lockstep
