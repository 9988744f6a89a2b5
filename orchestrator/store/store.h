// Store: where Lockstep's state lives. Every engine transition is written here before the
// command it implies is sent, so the store alone is enough to resume after a crash.
//
// The interface is split by who uses it (StoreReader, StoreWriter, CredentialStore) and holds
// no domain rule, so it can be served by SQLite (one file, WAL; the default) and by other
// backends; tests/support/store_conformance.h is the suite every backend must pass. Writes are
// batched: one WriteBatch is one transaction, all or nothing.
//
// Errors: every method returns a Status; a failed write leaves the store as it was. After a
// write error whose outcome is unknown (e.g. the disk refused the commit), the store latches
// the error and refuses further writes until reopened, rather than carrying on from an
// uncertain state.
//
// Thread safety: every method may be called from any thread; calls are serialised.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "common/status.h"
#include "orchestrator/store/model.h"

namespace lockstep {

// Which releases to read. Every field narrows the answer; the defaults match everything.
struct ReleaseQuery {
  std::string pipeline;             // empty: every pipeline
  std::vector<std::string> states;  // empty: any state
  std::vector<std::string> kinds;   // empty: any kind
  std::string version;              // empty: any version
  std::string commit;               // empty: any commit
  std::string request_id;           // empty: any (ReleaseRecord::request_id)
  std::string actor;                // empty: any; else the author or created_by, exactly
  UnixMs created_from = 0;          // > 0: created at or after
  UnixMs created_to = 0;            // > 0: created at or before
  int64_t before_id = 0;            // > 0: only releases with a smaller id
  bool oldest_first = false;        // default: newest (highest id) first
  int limit = 50;                   // at most this many; <= 0: no limit

  // The newest `limit` releases of `pipeline` (every pipeline if empty; <= 0: all of them).
  static ReleaseQuery Newest(std::string pipeline, int limit) {
    ReleaseQuery q;
    q.pipeline = std::move(pipeline);
    q.limit = limit;
    return q;
  }
};

// Which audit entries to read, newest first. Every field narrows the answer.
struct AuditQuery {
  std::string pipeline;       // entries whose target is the pipeline or one of its releases
  std::string actor;          // exactly
  std::string action_prefix;  // "release." matches every release action
  std::string text;           // a case-insensitive substring of actor, action, target or detail
  UnixMs since = 0;           // > 0: at or after
  UnixMs until = 0;           // > 0: at or before
  int64_t before_id = 0;      // > 0: only entries with a smaller id (the next page)
  int limit = 100;            // <= 0: 100
};

// What every part of lockstepd reads: releases and their waves, hosts and gate verdicts,
// agents, pipeline switches, the audit log. Nothing here knows what a state means; the
// rules (which release the fleet should run, which are open) live with the engine
// (orchestrator/engine/history.h) and are written once for every backend.
class StoreReader {
 public:
  virtual ~StoreReader() = default;

  // kNotFound naming the id if there is none.
  virtual StatusOr<ReleaseRecord> GetRelease(int64_t id) = 0;
  virtual StatusOr<std::vector<ReleaseRecord>> FindReleases(const ReleaseQuery& query) = 0;
  // Ordered by index; only waves that have started are stored.
  virtual StatusOr<std::vector<WaveRecord>> Waves(int64_t release_id) = 0;
  // Ordered by wave, then region, then agent name (the order views show them in).
  virtual StatusOr<std::vector<HostRecord>> Hosts(int64_t release_id) = 0;
  // In the order received.
  virtual StatusOr<std::vector<GateResult>> GateResults(int64_t release_id) = 0;
  // The release's bring-up regions, by region name.
  virtual StatusOr<std::vector<BringupRecord>> BringupTracks(int64_t release_id) = 0;
  // Sorted by name.
  virtual StatusOr<std::vector<AgentRecord>> Agents() = 0;
  virtual StatusOr<std::optional<AgentRecord>> GetAgent(const std::string& name) = 0;
  // A pipeline never switched has the default (not paused, not frozen) state; `pipeline` is
  // filled in either way.
  virtual StatusOr<PipelineState> GetPipelineState(const std::string& pipeline) = 0;
  // Newest first. limit <= 0: 100.
  virtual StatusOr<std::vector<AuditRecord>> Audit(int limit) = 0;
  virtual StatusOr<std::vector<AuditRecord>> FindAudit(const AuditQuery& query) = 0;
  // Outbox rows not yet done whose next_attempt_at <= `due_by`, oldest first, at most `limit`.
  virtual StatusOr<std::vector<OutboxRecord>> PendingOutbox(UnixMs due_by, int limit) = 0;
};

// What changes releases: the engine's passes and operators' requests. Every change is one
// WriteBatch, one transaction, all or nothing; a batch's expectations are checked inside
// that transaction, which is how an operator's request stays correct against a concurrent
// pass without the store knowing any rule, and where a replicated backend fences a writer
// that is no longer the leader.
class StoreWriter {
 public:
  virtual ~StoreWriter() = default;

  // Inserts a release (its id is assigned) and its audit entry in one transaction; an empty
  // audit target becomes "release/<id>". Returns the record with its id. kAlreadyExists, and
  // nothing written, if the pipeline has a release with the same non-empty request_id; the
  // message names that release as "release <id>".
  virtual StatusOr<ReleaseRecord> CreateRelease(ReleaseRecord release, AuditRecord audit) = 0;
  // kFailedPrecondition (naming the first expectation that does not hold) or kNotFound (its
  // release or wave does not exist), and nothing written, if an expectation fails. Upserts
  // write only the columns the engine owns (a release's identity, a wave's name and an
  // agent's first_seen never change after the first write; a release created without a
  // sha256, waiting for its artifact, is given one once); rows of an unknown release are
  // refused (kInternal) and nothing is written.
  virtual Status Write(const WriteBatch& batch) = 0;
};

// Who may call: API tokens, agent enrollment tokens and hosts' own credentials.
class CredentialStore {
 public:
  virtual ~CredentialStore() = default;

  // kAlreadyExists if a token of that name exists.
  virtual Status CreateToken(const TokenRecord& token, const AuditRecord& audit) = 0;
  virtual StatusOr<std::optional<TokenRecord>> FindTokenByHash(const std::string& hash) = 0;
  // Revoked and expired tokens included (lockstepd makes its first admin token only when no
  // token was ever made).
  virtual StatusOr<int64_t> CountTokens() = 0;
  // Every token, revoked and expired ones included (their names stay taken), by name.
  virtual StatusOr<std::vector<TokenRecord>> ListTokens() = 0;
  // kNotFound if no token has that name; kFailedPrecondition if it is already revoked.
  virtual Status RevokeToken(const std::string& name, UnixMs at, const std::string& by,
                             const AuditRecord& audit) = 0;
  // Records that a token was used (not audited; callers throttle it).
  virtual Status TouchToken(const std::string& name, UnixMs at) = 0;

  // kAlreadyExists if the host name already has a credential.
  virtual Status IssueHostCredential(const HostCredentialRecord& credential,
                                     const AuditRecord& audit) = 0;
  virtual StatusOr<std::optional<HostCredentialRecord>> FindHostCredential(
      const std::string& name) = 0;
  // Forgets a host: its agent row and its credential. kNotFound if it has neither.
  virtual Status RemoveAgent(const std::string& name, const AuditRecord& audit) = 0;
};

// Leadership among lockstepd processes sharing one store. The lease is one row; time is the
// store's own clock, so processes on different machines agree on expiry without synchronised
// clocks.
class LeaseStore {
 public:
  virtual ~LeaseStore() = default;

  // Renews the lease if `claim.holder` holds it (same epoch; its addresses and ttl are
  // rewritten), else takes it if it was never held or has expired, raising the epoch by one.
  // Returns the lease as it stands after the call: the claimant holds it iff the returned
  // holder is claim.holder and remaining_ms > 0.
  virtual StatusOr<LeaseRecord> ClaimLease(const LeaseClaim& claim) = 0;
  virtual StatusOr<LeaseRecord> ReadLease() = 0;
  // Expires the lease at once if `holder` holds it at `epoch` (a clean shutdown hands over
  // without making the others wait out the ttl); otherwise does nothing.
  virtual Status ReleaseLease(const std::string& holder, int64_t epoch) = 0;
  // From now on, every write through this store object commits only if the lease's epoch is
  // still `epoch`, checked inside the write's own transaction. A write that finds another
  // epoch fails with kFailedPrecondition ("lost the leader lease: ...") and writes nothing,
  // and the store refuses every later write. 0 (the default): writes are not fenced.
  virtual void FenceWrites(int64_t epoch) = 0;
};

// A whole backend. Callers take the narrowest part they use: views a StoreReader, the
// authenticator a CredentialStore, the engine the Store.
class Store : public StoreReader, public StoreWriter, public CredentialStore, public LeaseStore {};

// Forwards every call to another store, so a wrapper (StoreGuard, a test's failing store)
// overrides only what it changes.
class ForwardingStore : public Store {
 public:
  explicit ForwardingStore(Store* inner) : inner_(inner) {}

  StatusOr<ReleaseRecord> GetRelease(int64_t id) override { return inner_->GetRelease(id); }
  StatusOr<std::vector<ReleaseRecord>> FindReleases(const ReleaseQuery& q) override {
    return inner_->FindReleases(q);
  }
  StatusOr<std::vector<WaveRecord>> Waves(int64_t id) override { return inner_->Waves(id); }
  StatusOr<std::vector<HostRecord>> Hosts(int64_t id) override { return inner_->Hosts(id); }
  StatusOr<std::vector<GateResult>> GateResults(int64_t id) override {
    return inner_->GateResults(id);
  }
  StatusOr<std::vector<BringupRecord>> BringupTracks(int64_t id) override {
    return inner_->BringupTracks(id);
  }
  StatusOr<std::vector<AgentRecord>> Agents() override { return inner_->Agents(); }
  StatusOr<std::optional<AgentRecord>> GetAgent(const std::string& name) override {
    return inner_->GetAgent(name);
  }
  StatusOr<PipelineState> GetPipelineState(const std::string& pipeline) override {
    return inner_->GetPipelineState(pipeline);
  }
  StatusOr<std::vector<AuditRecord>> Audit(int limit) override { return inner_->Audit(limit); }
  StatusOr<std::vector<AuditRecord>> FindAudit(const AuditQuery& q) override {
    return inner_->FindAudit(q);
  }
  StatusOr<std::vector<OutboxRecord>> PendingOutbox(UnixMs due_by, int limit) override {
    return inner_->PendingOutbox(due_by, limit);
  }

  StatusOr<ReleaseRecord> CreateRelease(ReleaseRecord r, AuditRecord a) override {
    return inner_->CreateRelease(std::move(r), std::move(a));
  }
  Status Write(const WriteBatch& batch) override { return inner_->Write(batch); }

  Status CreateToken(const TokenRecord& t, const AuditRecord& a) override {
    return inner_->CreateToken(t, a);
  }
  StatusOr<std::optional<TokenRecord>> FindTokenByHash(const std::string& hash) override {
    return inner_->FindTokenByHash(hash);
  }
  StatusOr<int64_t> CountTokens() override { return inner_->CountTokens(); }
  StatusOr<std::vector<TokenRecord>> ListTokens() override { return inner_->ListTokens(); }
  Status RevokeToken(const std::string& name, UnixMs at, const std::string& by,
                     const AuditRecord& a) override {
    return inner_->RevokeToken(name, at, by, a);
  }
  Status TouchToken(const std::string& name, UnixMs at) override {
    return inner_->TouchToken(name, at);
  }
  Status IssueHostCredential(const HostCredentialRecord& c, const AuditRecord& a) override {
    return inner_->IssueHostCredential(c, a);
  }
  StatusOr<std::optional<HostCredentialRecord>> FindHostCredential(
      const std::string& name) override {
    return inner_->FindHostCredential(name);
  }
  Status RemoveAgent(const std::string& name, const AuditRecord& a) override {
    return inner_->RemoveAgent(name, a);
  }

  StatusOr<LeaseRecord> ClaimLease(const LeaseClaim& claim) override {
    return inner_->ClaimLease(claim);
  }
  StatusOr<LeaseRecord> ReadLease() override { return inner_->ReadLease(); }
  Status ReleaseLease(const std::string& holder, int64_t epoch) override {
    return inner_->ReleaseLease(holder, epoch);
  }
  void FenceWrites(int64_t epoch) override { inner_->FenceWrites(epoch); }

 protected:
  Store* inner() const { return inner_; }

 private:
  Store* const inner_;
};

// Opens (creating if needed) the SQLite store at `path` in WAL mode and applies pending
// schema migrations. ":memory:" gives a private in-memory store for tests.
StatusOr<std::unique_ptr<Store>> OpenSqliteStore(const std::string& path);

// The schema version this build writes; OpenSqliteStore migrates older files up to it and
// refuses newer ones.
int SqliteSchemaVersion();

// Connects to PostgreSQL with a libpq connection string or URI ("postgresql://...", or
// "host=/run/postgresql dbname=lockstep") and applies pending schema migrations (serialised
// across processes by an advisory lock, so several lockstepd may start at once).
StatusOr<std::unique_ptr<Store>> OpenPostgresStore(const std::string& conninfo);
int PostgresSchemaVersion();

}  // namespace lockstep
