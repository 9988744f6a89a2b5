#include "orchestrator/server/store_guard.h"

#include <spdlog/spdlog.h>

namespace lockstep {

StoreGuard::StoreGuard(std::unique_ptr<Store> inner) : inner_(std::move(inner)) {}

Status StoreGuard::WriteHealth() const {
  std::lock_guard lock(mu_);
  return write_error_;
}

Status StoreGuard::Observe(const Status& st) {
  std::lock_guard lock(mu_);
  if (st.ok()) {
    write_error_ = Status::Ok();
    return st;
  }
  if (st.code() != StatusCode::kInternal) return st;
  Status refused = Unavailable("lockstepd cannot write its store: " + st.message());
  if (write_error_.ok()) spdlog::error("{}", refused.message());
  write_error_ = refused;
  return refused;
}

StatusOr<ReleaseRecord> StoreGuard::CreateRelease(ReleaseRecord release, AuditRecord audit) {
  auto created = inner_->CreateRelease(std::move(release), std::move(audit));
  Status st = Observe(created.ok() ? Status::Ok() : created.status());
  if (!st.ok()) return st;
  return created;
}

Status StoreGuard::Write(const WriteBatch& batch) { return Observe(inner_->Write(batch)); }

StatusOr<ReleaseRecord> StoreGuard::GetRelease(int64_t id) { return inner_->GetRelease(id); }

StatusOr<std::vector<ReleaseRecord>> StoreGuard::ListReleases(const std::string& pipeline,
                                                              int limit) {
  return inner_->ListReleases(pipeline, limit);
}

StatusOr<std::vector<ReleaseRecord>> StoreGuard::OpenReleases(const std::string& pipeline) {
  return inner_->OpenReleases(pipeline);
}

StatusOr<std::optional<ReleaseRecord>> StoreGuard::DesiredRelease(const std::string& pipeline) {
  return inner_->DesiredRelease(pipeline);
}

StatusOr<std::optional<ReleaseRecord>> StoreGuard::FirstWithVersion(const std::string& pipeline,
                                                                    const std::string& version) {
  return inner_->FirstWithVersion(pipeline, version);
}

StatusOr<std::optional<ReleaseRecord>> StoreGuard::SucceededWithVersion(
    const std::string& pipeline, const std::string& version) {
  return inner_->SucceededWithVersion(pipeline, version);
}

StatusOr<std::optional<ReleaseRecord>> StoreGuard::SucceededBefore(const std::string& pipeline,
                                                                   int64_t before_id) {
  return inner_->SucceededBefore(pipeline, before_id);
}

Status StoreGuard::RequestAbort(int64_t release_id, const AuditRecord& audit) {
  return Observe(inner_->RequestAbort(release_id, audit));
}

Status StoreGuard::ApproveWave(int64_t release_id, const AuditRecord& audit) {
  return Observe(inner_->ApproveWave(release_id, audit));
}

Status StoreGuard::SetPipelineState(const PipelineState& state, const AuditRecord& audit) {
  return Observe(inner_->SetPipelineState(state, audit));
}

StatusOr<PipelineState> StoreGuard::GetPipelineState(const std::string& pipeline) {
  return inner_->GetPipelineState(pipeline);
}

StatusOr<std::vector<GateResult>> StoreGuard::GateResults(int64_t release_id) {
  return inner_->GateResults(release_id);
}

Status StoreGuard::CreateToken(const TokenRecord& token, const AuditRecord& audit) {
  return Observe(inner_->CreateToken(token, audit));
}

StatusOr<std::optional<TokenRecord>> StoreGuard::FindTokenByHash(const std::string& hash) {
  return inner_->FindTokenByHash(hash);
}

StatusOr<int64_t> StoreGuard::CountTokens() { return inner_->CountTokens(); }

StatusOr<std::vector<TokenRecord>> StoreGuard::ListTokens() { return inner_->ListTokens(); }

Status StoreGuard::RevokeToken(const std::string& name, UnixMs at, const std::string& by,
                               const AuditRecord& audit) {
  return Observe(inner_->RevokeToken(name, at, by, audit));
}

Status StoreGuard::TouchToken(const std::string& name, UnixMs at) {
  return Observe(inner_->TouchToken(name, at));
}

Status StoreGuard::IssueHostCredential(const HostCredentialRecord& credential,
                                       const AuditRecord& audit) {
  return Observe(inner_->IssueHostCredential(credential, audit));
}

StatusOr<std::optional<HostCredentialRecord>> StoreGuard::FindHostCredential(
    const std::string& name) {
  return inner_->FindHostCredential(name);
}

Status StoreGuard::RemoveAgent(const std::string& name, const AuditRecord& audit) {
  return Observe(inner_->RemoveAgent(name, audit));
}

StatusOr<std::vector<WaveRecord>> StoreGuard::Waves(int64_t release_id) {
  return inner_->Waves(release_id);
}

StatusOr<std::vector<HostRecord>> StoreGuard::Hosts(int64_t release_id) {
  return inner_->Hosts(release_id);
}

StatusOr<std::vector<AgentRecord>> StoreGuard::Agents() { return inner_->Agents(); }

StatusOr<std::optional<AgentRecord>> StoreGuard::GetAgent(const std::string& name) {
  return inner_->GetAgent(name);
}

StatusOr<std::vector<AuditRecord>> StoreGuard::Audit(int limit) { return inner_->Audit(limit); }

}  // namespace lockstep
