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
  // Releases of a pipeline that are queued or rolling, oldest first.
  virtual StatusOr<std::vector<ReleaseRecord>> OpenReleases(const std::string& pipeline) = 0;
  // The newest succeeded release of a pipeline, if any.
  virtual StatusOr<std::optional<ReleaseRecord>> LastSucceeded(const std::string& pipeline) = 0;

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
