// StoreGuard: the store as the rest of lockstepd sees it. It forwards every call to the real
// store and watches the writes, so that a store that cannot write is reported as such:
//
//  - A write that fails for a storage reason (the store's kInternal: the disk refused the
//    transaction, or the store latched an earlier commit failure and refuses writes until
//    restart) comes back as kUnavailable, "lockstepd cannot write its store: <cause>", which
//    the HTTP API answers with 503 and the gRPC API with UNAVAILABLE. Refusals that are about
//    the request (not found, precondition, already exists) pass through unchanged.
//  - WriteHealth() is the last write's failure until a later write succeeds, so /healthz
//    turns unhealthy as soon as a write fails and stays so while the store refuses writes (a
//    latched store never succeeds again before a restart).
//
// Thread safety: every method may be called from any thread; the wrapped store serialises its
// own calls, and the guard's state has its own lock.
#pragma once

#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "orchestrator/store/store.h"

namespace lockstep {

class StoreGuard final : public ForwardingStore {
 public:
  explicit StoreGuard(std::unique_ptr<Store> inner);

  // OK, or the cause of the last failed write (kUnavailable) if no write succeeded since.
  Status WriteHealth() const;
  // Writes are refused (kUnavailable, nothing written, not counted as a store failure) while
  // `leading` returns false: a standby lockstepd writes nothing. REQUIRES: called before any
  // write. Unset: every write goes through.
  void set_leading(std::function<bool()> leading) { leading_ = std::move(leading); }

  // The writes; every read is forwarded unchanged.
  StatusOr<ReleaseRecord> CreateRelease(ReleaseRecord release, AuditRecord audit) override;
  Status Write(const WriteBatch& batch) override;
  Status CreateToken(const TokenRecord& token, const AuditRecord& audit) override;
  Status RevokeToken(const std::string& name, UnixMs at, const std::string& by,
                     const AuditRecord& audit) override;
  Status TouchToken(const std::string& name, UnixMs at) override;
  Status IssueHostCredential(const HostCredentialRecord& credential,
                             const AuditRecord& audit) override;
  Status RemoveAgent(const std::string& name, const AuditRecord& audit) override;

 private:
  // Records the outcome of a write and returns what the caller should see.
  Status Observe(const Status& st);

  // kUnavailable while this lockstepd does not lead.
  Status Leading() const;

  const std::unique_ptr<Store> owned_;
  std::function<bool()> leading_;  // set before any write
  mutable absl::Mutex mu_;
  Status write_error_ ABSL_GUARDED_BY(mu_);
};

}  // namespace lockstep
