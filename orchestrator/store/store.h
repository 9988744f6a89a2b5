// Store: where Lockstep's state lives. Every engine transition is written here before the
// command it implies is sent, so the store alone is enough to resume after a crash.
//
// The interface is small so it can be served by SQLite (one file, WAL; the default) and later
// by PostgreSQL for high availability. Writes are batched: one WriteBatch is one transaction,
// all or nothing.
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

class Store {
 public:
  virtual ~Store() = default;

  // Inserts a release (its id is assigned) and its audit entry in one transaction. Returns
  // the stored record.
  virtual StatusOr<ReleaseRecord> CreateRelease(ReleaseRecord release, AuditRecord audit) = 0;
  virtual Status Write(const WriteBatch& batch) = 0;

  virtual StatusOr<ReleaseRecord> GetRelease(int64_t id) = 0;
  // Newest first. Empty pipeline: every pipeline. limit <= 0: 50.
  virtual StatusOr<std::vector<ReleaseRecord>> ListReleases(const std::string& pipeline,
                                                            int limit) = 0;
  // Releases of a pipeline that are not final (queued or in flight), oldest first.
  virtual StatusOr<std::vector<ReleaseRecord>> OpenReleases(const std::string& pipeline) = 0;
  // The release every host of the pipeline should run at rest: the newest that succeeded, or
  // the newest on-call rollback even if some host could not confirm it (that host converges
  // when it returns; the fleet must never be taken back to what was rolled back from).
  virtual StatusOr<std::optional<ReleaseRecord>> DesiredRelease(const std::string& pipeline) = 0;
  // The newest succeeded release of a pipeline with this version, if any.
  virtual StatusOr<std::optional<ReleaseRecord>> SucceededWithVersion(
      const std::string& pipeline, const std::string& version) = 0;
  // The first release of a pipeline with this version, in any state: the one that named the
  // version's artifact.
  virtual StatusOr<std::optional<ReleaseRecord>> FirstWithVersion(const std::string& pipeline,
                                                                  const std::string& version) = 0;
  // The newest succeeded release older than `before_id`, if any.
  virtual StatusOr<std::optional<ReleaseRecord>> SucceededBefore(const std::string& pipeline,
                                                                 int64_t before_id) = 0;

  // --- operator requests: checked and written in one transaction with their audit entry ---

  // Asks the engine to abort a release. kFailedPrecondition if it is already final.
  virtual Status RequestAbort(int64_t release_id, const AuditRecord& audit) = 0;
  // Approves the wave of a release that awaits approval. kFailedPrecondition if none does.
  virtual Status ApproveWave(int64_t release_id, const AuditRecord& audit) = 0;
  virtual Status SetPipelineState(const PipelineState& state, const AuditRecord& audit) = 0;
  // A pipeline never switched has the default (not paused, not frozen) state.
  virtual StatusOr<PipelineState> GetPipelineState(const std::string& pipeline) = 0;

  virtual StatusOr<std::vector<GateResult>> GateResults(int64_t release_id) = 0;

  // kAlreadyExists if a token of that name exists.
  virtual Status CreateToken(const TokenRecord& token, const AuditRecord& audit) = 0;
  virtual StatusOr<std::optional<TokenRecord>> FindTokenByHash(const std::string& hash) = 0;
  virtual StatusOr<int64_t> CountTokens() = 0;
  // Every token, revoked and expired ones included (their names stay taken), by name.
  virtual StatusOr<std::vector<TokenRecord>> ListTokens() = 0;
  // kNotFound if no token has that name; kFailedPrecondition if it is already revoked.
  virtual Status RevokeToken(const std::string& name, UnixMs at, const std::string& by,
                             const AuditRecord& audit) = 0;
  // Records that a token was used (not audited; callers throttle it).
  virtual Status TouchToken(const std::string& name, UnixMs at) = 0;

  // --- hosts' own credentials ---

  // kAlreadyExists if the host name already has a credential.
  virtual Status IssueHostCredential(const HostCredentialRecord& credential,
                                     const AuditRecord& audit) = 0;
  virtual StatusOr<std::optional<HostCredentialRecord>> FindHostCredential(
      const std::string& name) = 0;
  // Forgets a host: its agent row and its credential. kNotFound if it has neither.
  virtual Status RemoveAgent(const std::string& name, const AuditRecord& audit) = 0;

  virtual StatusOr<std::vector<WaveRecord>> Waves(int64_t release_id) = 0;
  virtual StatusOr<std::vector<HostRecord>> Hosts(int64_t release_id) = 0;

  // Sorted by name.
  virtual StatusOr<std::vector<AgentRecord>> Agents() = 0;
  virtual StatusOr<std::optional<AgentRecord>> GetAgent(const std::string& name) = 0;

  // Newest first. limit <= 0: 100.
  virtual StatusOr<std::vector<AuditRecord>> Audit(int limit) = 0;
};

// Opens (creating if needed) the SQLite store at `path` in WAL mode and applies pending
// schema migrations. ":memory:" gives a private in-memory store for tests.
StatusOr<std::unique_ptr<Store>> OpenSqliteStore(const std::string& path);

// The schema version this build writes; OpenSqliteStore migrates older files up to it and
// refuses newer ones.
int SqliteSchemaVersion();

}  // namespace lockstep
