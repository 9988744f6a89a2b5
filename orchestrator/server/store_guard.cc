#include "orchestrator/server/store_guard.h"

#include <spdlog/spdlog.h>

namespace lockstep {

StoreGuard::StoreGuard(std::unique_ptr<Store> inner)
    : ForwardingStore(inner.get()), owned_(std::move(inner)) {}

Status StoreGuard::WriteHealth() const {
  absl::MutexLock lock(&mu_);
  return write_error_;
}

Status StoreGuard::Observe(const Status& st) {
  absl::MutexLock lock(&mu_);
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

Status StoreGuard::Leading() const {
  if (!leading_ || leading_()) return Status::Ok();
  return Unavailable("this lockstepd is a standby and does not write; the leader does");
}

StatusOr<ReleaseRecord> StoreGuard::CreateRelease(ReleaseRecord release, AuditRecord audit) {
  LOCKSTEP_RETURN_IF_ERROR(Leading());
  auto created = inner()->CreateRelease(std::move(release), std::move(audit));
  Status st = Observe(created.ok() ? Status::Ok() : created.status());
  if (!st.ok()) return st;
  return created;
}

Status StoreGuard::Write(const WriteBatch& batch) {
  LOCKSTEP_RETURN_IF_ERROR(Leading());
  return Observe(inner()->Write(batch));
}

Status StoreGuard::CreateToken(const TokenRecord& token, const AuditRecord& audit) {
  LOCKSTEP_RETURN_IF_ERROR(Leading());
  return Observe(inner()->CreateToken(token, audit));
}

Status StoreGuard::RevokeToken(const std::string& name, UnixMs at, const std::string& by,
                               const AuditRecord& audit) {
  LOCKSTEP_RETURN_IF_ERROR(Leading());
  return Observe(inner()->RevokeToken(name, at, by, audit));
}

Status StoreGuard::TouchToken(const std::string& name, UnixMs at) {
  LOCKSTEP_RETURN_IF_ERROR(Leading());
  return Observe(inner()->TouchToken(name, at));
}

Status StoreGuard::IssueHostCredential(const HostCredentialRecord& credential,
                                       const AuditRecord& audit) {
  LOCKSTEP_RETURN_IF_ERROR(Leading());
  return Observe(inner()->IssueHostCredential(credential, audit));
}

Status StoreGuard::RemoveAgent(const std::string& name, const AuditRecord& audit) {
  LOCKSTEP_RETURN_IF_ERROR(Leading());
  return Observe(inner()->RemoveAgent(name, audit));
}

}  // namespace lockstep
