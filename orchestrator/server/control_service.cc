// The CLI's control API. Reads come straight from the store; creating a release validates
// and stores it, then kicks the engine, which takes it from there.

#include <grpcpp/grpcpp.h>

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

class ControlServiceImpl final : public v1::ControlService::Service {
 public:
  ControlServiceImpl(Engine* engine, Store* store, Hub* hub)
      : engine_(engine), store_(store), hub_(hub) {}

  grpc::Status CreateRelease(grpc::ServerContext* /*ctx*/, const v1::CreateReleaseRequest* req,
                             v1::Release* out) override {
    NewRelease nr{req->pipeline(), req->version(), req->artifact_url(),
                  req->sha256(),   req->commit(),  req->author()};
    auto created = engine_->CreateRelease(nr, "cli");
    if (!created.ok()) return ToGrpc(created.status());
    hub_->Kick();
    *out = ReleaseSummary(*created);
    return grpc::Status::OK;
  }

  grpc::Status ListReleases(grpc::ServerContext* /*ctx*/, const v1::ListReleasesRequest* req,
                            v1::ListReleasesResponse* out) override {
    if (!req->pipeline().empty() && !engine_->FindPipeline(req->pipeline())) {
      return ToGrpc(NotFound("unknown pipeline \"" + req->pipeline() + "\""));
    }
    auto list = store_->ListReleases(req->pipeline(), req->limit());
    if (!list.ok()) return ToGrpc(list.status());
    for (const auto& r : *list) *out->add_releases() = ReleaseSummary(r);
    return grpc::Status::OK;
  }

  grpc::Status GetRelease(grpc::ServerContext* /*ctx*/, const v1::GetReleaseRequest* req,
                          v1::Release* out) override {
    auto view = FullRelease(req->id());
    if (!view.ok()) return ToGrpc(view.status());
    *out = std::move(*view);
    return grpc::Status::OK;
  }

  grpc::Status ListAgents(grpc::ServerContext* /*ctx*/, const v1::ListAgentsRequest* /*req*/,
                          v1::ListAgentsResponse* out) override {
    auto agents = store_->Agents();
    if (!agents.ok()) return ToGrpc(agents.status());
    for (const auto& a : *agents) *out->add_agents() = AgentView(a);
    return grpc::Status::OK;
  }

  grpc::Status GetStatus(grpc::ServerContext* /*ctx*/, const v1::StatusRequest* req,
                         v1::StatusResponse* out) override {
    if (!req->pipeline().empty() && !engine_->FindPipeline(req->pipeline())) {
      return ToGrpc(NotFound("unknown pipeline \"" + req->pipeline() + "\""));
    }
    auto agents = store_->Agents();
    if (!agents.ok()) return ToGrpc(agents.status());
    for (const auto& p : engine_->pipelines()) {
      if (!req->pipeline().empty() && p.name != req->pipeline()) continue;
      auto* ps = out->add_pipelines();
      ps->set_pipeline(p.name);
      auto last = store_->DesiredRelease(p.name);
      if (!last.ok()) return ToGrpc(last.status());
      if (last->has_value()) ps->set_desired_version((*last)->version);
      auto open = store_->OpenReleases(p.name);
      if (!open.ok()) return ToGrpc(open.status());
      for (const auto& r : *open) {
        if (r.state != release_state::kRolling) continue;
        auto view = FullRelease(r.id);
        if (!view.ok()) return ToGrpc(view.status());
        *ps->mutable_active() = std::move(*view);
      }
      for (const auto& region : p.regions) {
        auto* rs = ps->add_regions();
        rs->set_region(region);
        for (const auto& a : *agents) {
          if (a.pipeline == p.name && a.region == region) *rs->add_hosts() = AgentView(a);
        }
      }
    }
    return grpc::Status::OK;
  }

 private:
  StatusOr<v1::Release> FullRelease(int64_t id) {
    auto r = store_->GetRelease(id);
    if (!r.ok()) return r.status();
    auto waves = store_->Waves(id);
    if (!waves.ok()) return waves.status();
    auto hosts = store_->Hosts(id);
    if (!hosts.ok()) return hosts.status();
    return ReleaseView(*r, *waves, *hosts, engine_->FindPipeline(r->pipeline));
  }

  Engine* const engine_;
  Store* const store_;
  Hub* const hub_;
};

}  // namespace

std::unique_ptr<grpc::Service> MakeControlService(Engine* engine, Store* store, Hub* hub) {
  return std::make_unique<ControlServiceImpl>(engine, store, hub);
}

}  // namespace lockstep
