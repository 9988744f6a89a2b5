// SQLite implementation of Store: one connection, serialised by a mutex, WAL journal,
// synchronous=FULL so a committed transition survives power loss, not only a crash.

#include <sqlite3.h>

#include <mutex>

#include "orchestrator/store/migrations.h"
#include "orchestrator/store/rows.h"
#include "orchestrator/store/store.h"

namespace lockstep {
namespace release_state {
bool IsFinal(const std::string& state) {
  return state == kSucceeded || state == kFailed || state == kRolledBack || state == kAborted ||
         state == kSuperseded;
}
bool IsInFlight(const std::string& state) {
  return !IsFinal(state) && state != kQueued && state != kWaitingForArtifact;
}
const std::vector<std::string>& All() {
  static const std::vector<std::string> kAll = {
      kWaitingForArtifact, kQueued, kRolling,    kRollingBack, kAborting,  kHalted,
      kSucceeded,          kFailed, kRolledBack, kAborted,     kSuperseded};
  return kAll;
}
}  // namespace release_state

namespace {

// SQLite's clock in unix milliseconds, for the lease.
#define LOCKSTEP_SQLITE_NOW_MS "CAST((julianday('now') - 2440587.5) * 86400000 AS INTEGER)"

// A prepared statement bound positionally (1-based) and stepped once or row by row.
class Stmt {
 public:
  Stmt(sqlite3* db, const char* sql) : db_(db) {
    rc_ = sqlite3_prepare_v2(db, sql, -1, &stmt_, nullptr);
  }
  ~Stmt() { sqlite3_finalize(stmt_); }
  Stmt(const Stmt&) = delete;
  Stmt& operator=(const Stmt&) = delete;

  bool prepared() const { return rc_ == SQLITE_OK; }
  Stmt& Bind(int i, int64_t v) {
    sqlite3_bind_int64(stmt_, i, v);
    return *this;
  }
  Stmt& Bind(int i, const std::string& v) {
    sqlite3_bind_text(stmt_, i, v.data(), static_cast<int>(v.size()), SQLITE_TRANSIENT);
    return *this;
  }
  Stmt& BindDouble(int i, double v) {
    sqlite3_bind_double(stmt_, i, v);
    return *this;
  }
  // SQLITE_ROW, SQLITE_DONE or an error code.
  int Step() { return sqlite3_step(stmt_); }
  // Makes the statement ready to be bound and stepped again: one prepare for many rows.
  void Reset() {
    sqlite3_reset(stmt_);
    sqlite3_clear_bindings(stmt_);
  }
  double Double(int col) const { return sqlite3_column_double(stmt_, col); }
  int64_t Int(int col) const { return sqlite3_column_int64(stmt_, col); }
  std::string Text(int col) const {
    const unsigned char* p = sqlite3_column_text(stmt_, col);
    return p ? std::string(reinterpret_cast<const char*>(p),
                           static_cast<size_t>(sqlite3_column_bytes(stmt_, col)))
             : std::string();
  }
  std::string Error() const { return sqlite3_errmsg(db_); }

 private:
  sqlite3* db_;
  sqlite3_stmt* stmt_ = nullptr;
  int rc_;
};

class SqliteStore final : public Store {
 public:
  explicit SqliteStore(sqlite3* db) : db_(db) {}
  ~SqliteStore() override { sqlite3_close(db_); }

  Status Init() {
    std::lock_guard lock(mu_);
    LOCKSTEP_RETURN_IF_ERROR(ExecLocked("PRAGMA journal_mode=WAL"));
    LOCKSTEP_RETURN_IF_ERROR(ExecLocked("PRAGMA synchronous=FULL"));
    LOCKSTEP_RETURN_IF_ERROR(ExecLocked("PRAGMA foreign_keys=ON"));
    sqlite3_busy_timeout(db_, 5000);
    return MigrateLocked();
  }

  StatusOr<ReleaseRecord> CreateRelease(ReleaseRecord r, AuditRecord audit) override {
    std::lock_guard lock(mu_);
    LOCKSTEP_RETURN_IF_ERROR(BeginWriteLocked());
    Stmt s(db_,
           "INSERT INTO releases (pipeline, version, artifact_url, sha256, commit_sha, author, "
           "state, reason, current_wave, previous_version, created_at, started_at, "
           "finished_at, kind, previous_release_id, commit_at, request_id, created_by) VALUES "
           "(?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)");
    s.Bind(1, r.pipeline).Bind(2, r.version).Bind(3, r.artifact_url).Bind(4, r.sha256);
    s.Bind(5, r.commit).Bind(6, r.author).Bind(7, r.state).Bind(8, r.reason);
    s.Bind(9, int64_t{r.current_wave}).Bind(10, r.previous_version).Bind(11, r.created_at);
    s.Bind(12, r.started_at).Bind(13, r.finished_at).Bind(14, r.kind);
    s.Bind(15, r.previous_release_id).Bind(16, r.commit_at).Bind(17, r.request_id);
    s.Bind(18, r.created_by);
    if (int rc = s.Step(); rc != SQLITE_DONE) {
      if (rc == SQLITE_CONSTRAINT && !r.request_id.empty()) {
        Stmt q(db_, "SELECT id FROM releases WHERE pipeline=? AND request_id=?");
        q.Bind(1, r.pipeline).Bind(2, r.request_id);
        if (q.Step() == SQLITE_ROW) {
          return AbandonLocked(Status(
              StatusCode::kAlreadyExists,
              "release " + std::to_string(q.Int(0)) + " already has request id " + r.request_id));
        }
      }
      return RollbackLocked("insert release: " + s.Error());
    }
    r.id = sqlite3_last_insert_rowid(db_);
    if (audit.target.empty()) audit.target = "release/" + std::to_string(r.id);
    if (Status st = InsertAuditLocked(audit); !st.ok()) return RollbackLocked(st.message());
    LOCKSTEP_RETURN_IF_ERROR(CommitLocked());
    return r;
  }

  Status Write(const WriteBatch& b) override {
    if (b.empty()) return Status::Ok();
    std::lock_guard lock(mu_);
    LOCKSTEP_RETURN_IF_ERROR(BeginWriteLocked());
    for (const auto& e : b.expect) {
      if (Status st = CheckLocked(e); !st.ok()) {
        return AbandonLocked(st);
      }
    }
    if (!b.releases.empty()) {
      Stmt s(db_,
             "UPDATE releases SET state=?, reason=?, current_wave=?, previous_version=?, "
             "started_at=?, finished_at=?, previous_release_id=?, "
             // A release created before its artifact existed (waiting_for_artifact) gets its
             // sha256 once; after that it is identity like the rest.
             "sha256=CASE WHEN sha256='' THEN ? ELSE sha256 END WHERE id=?");
      for (const auto& r : b.releases) {
        s.Reset();
        s.Bind(1, r.state).Bind(2, r.reason).Bind(3, int64_t{r.current_wave});
        s.Bind(4, r.previous_version).Bind(5, r.started_at).Bind(6, r.finished_at);
        s.Bind(7, r.previous_release_id).Bind(8, r.sha256).Bind(9, r.id);
        if (s.Step() != SQLITE_DONE) return RollbackLocked("update release: " + s.Error());
      }
    }
    if (!b.waves.empty()) {
      Stmt s(db_,
             "INSERT INTO release_waves (release_id, idx, name, state, started_at, "
             "bake_started_at, finished_at, first_switch_at, last_switch_at, "
             "approval_requested_at) VALUES (?,?,?,?,?,?,?,?,?,?) "
             "ON CONFLICT(release_id, idx) DO UPDATE SET state=excluded.state, "
             "started_at=excluded.started_at, bake_started_at=excluded.bake_started_at, "
             "finished_at=excluded.finished_at, first_switch_at=excluded.first_switch_at, "
             "last_switch_at=excluded.last_switch_at, "
             "approval_requested_at=excluded.approval_requested_at");
      for (const auto& w : b.waves) {
        s.Reset();
        s.Bind(1, w.release_id).Bind(2, int64_t{w.index}).Bind(3, w.name).Bind(4, w.state);
        s.Bind(5, w.started_at).Bind(6, w.bake_started_at).Bind(7, w.finished_at);
        s.Bind(8, w.first_switch_at).Bind(9, w.last_switch_at).Bind(10, w.approval_requested_at);
        if (s.Step() != SQLITE_DONE) return RollbackLocked("write wave: " + s.Error());
      }
    }
    if (!b.hosts.empty()) {
      Stmt s(db_,
             "INSERT INTO release_hosts (release_id, agent, region, wave, state, task_id, "
             "detail, started_at, task_sent_at, finished_at, from_version, step, attempt, "
             "switch_sent, output_tail, failure) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?) "
             "ON CONFLICT(release_id, agent) DO UPDATE SET region=excluded.region, "
             "wave=excluded.wave, state=excluded.state, task_id=excluded.task_id, "
             "detail=excluded.detail, started_at=excluded.started_at, "
             "task_sent_at=excluded.task_sent_at, finished_at=excluded.finished_at, "
             "from_version=excluded.from_version, step=excluded.step, "
             "attempt=excluded.attempt, switch_sent=excluded.switch_sent, "
             "output_tail=excluded.output_tail, failure=excluded.failure");
      for (const auto& h : b.hosts) {
        s.Reset();
        s.Bind(1, h.release_id).Bind(2, h.agent).Bind(3, h.region).Bind(4, int64_t{h.wave});
        s.Bind(5, h.state).Bind(6, h.task_id).Bind(7, h.detail).Bind(8, h.started_at);
        s.Bind(9, h.task_sent_at).Bind(10, h.finished_at).Bind(11, h.from_version);
        s.Bind(12, h.step).Bind(13, int64_t{h.attempt}).Bind(14, int64_t{h.switch_sent ? 1 : 0});
        s.Bind(15, h.output_tail).Bind(16, h.failure);
        if (s.Step() != SQLITE_DONE) return RollbackLocked("write host: " + s.Error());
      }
    }
    if (!b.bringup.empty()) {
      Stmt s(db_,
             "INSERT INTO bringup_tracks (release_id, region, state, wave, started_at, "
             "wave_started_at, bake_started_at, finished_at, reason) VALUES (?,?,?,?,?,?,?,?,?) "
             "ON CONFLICT(release_id, region) DO UPDATE SET state=excluded.state, "
             "wave=excluded.wave, started_at=excluded.started_at, "
             "wave_started_at=excluded.wave_started_at, "
             "bake_started_at=excluded.bake_started_at, finished_at=excluded.finished_at, "
             "reason=excluded.reason");
      for (const auto& t : b.bringup) {
        s.Reset();
        s.Bind(1, t.release_id).Bind(2, t.region).Bind(3, t.state).Bind(4, int64_t{t.wave});
        s.Bind(5, t.started_at).Bind(6, t.wave_started_at).Bind(7, t.bake_started_at);
        s.Bind(8, t.finished_at).Bind(9, t.reason);
        if (s.Step() != SQLITE_DONE) return RollbackLocked("write bring-up track: " + s.Error());
      }
    }
    if (!b.agents.empty()) {
      Stmt s(db_,
             "INSERT INTO agents (name, region, pipeline, current_version, versions_on_disk, "
             "connected, first_seen, last_seen, agent_version) VALUES (?,?,?,?,?,?,?,?,?) "
             "ON CONFLICT(name) DO UPDATE SET region=excluded.region, "
             "pipeline=excluded.pipeline, current_version=excluded.current_version, "
             "versions_on_disk=excluded.versions_on_disk, connected=excluded.connected, "
             "last_seen=excluded.last_seen, agent_version=excluded.agent_version");
      for (const auto& a : b.agents) {
        s.Reset();
        s.Bind(1, a.name).Bind(2, a.region).Bind(3, a.pipeline).Bind(4, a.current_version);
        s.Bind(5, rows::JoinVersions(a.versions_on_disk)).Bind(6, int64_t{a.connected ? 1 : 0});
        s.Bind(7, a.first_seen).Bind(8, a.last_seen).Bind(9, a.agent_version);
        if (s.Step() != SQLITE_DONE) return RollbackLocked("write agent: " + s.Error());
      }
    }
    for (const auto& e : b.audit) {
      if (Status st = InsertAuditLocked(e); !st.ok()) return RollbackLocked(st.message());
    }
    if (!b.gate_results.empty()) {
      Stmt s(db_,
             "INSERT INTO gate_results (release_id, wave, gate, region, at, verdict, value, "
             "detail, evaluated_at) VALUES (?,?,?,?,?,?,?,?,?)");
      for (const auto& g : b.gate_results) {
        s.Reset();
        s.Bind(1, g.release_id).Bind(2, int64_t{g.wave}).Bind(3, g.gate).Bind(4, g.region);
        s.Bind(5, g.at).Bind(6, g.verdict).BindDouble(7, g.value).Bind(8, g.detail);
        s.Bind(9, g.evaluated_at);
        if (s.Step() != SQLITE_DONE) return RollbackLocked("write gate result: " + s.Error());
      }
    }
    for (const auto& hold : b.holds) {
      Stmt s(db_,
             "INSERT INTO pipeline_state (pipeline, paused, paused_by, paused_at) "
             "VALUES (?,1,?,?) ON CONFLICT(pipeline) DO UPDATE SET paused=1, "
             "paused_by=excluded.paused_by, paused_at=excluded.paused_at");
      s.Bind(1, hold.pipeline).Bind(2, hold.by).Bind(3, hold.at);
      if (s.Step() != SQLITE_DONE) return RollbackLocked("hold pipeline: " + s.Error());
    }
    for (const auto& a : b.abort_requests) {
      Stmt s(db_, "UPDATE releases SET abort_requested_by=?, abort_requested_at=? WHERE id=?");
      s.Bind(1, a.by).Bind(2, a.at).Bind(3, a.release_id);
      if (s.Step() != SQLITE_DONE) return RollbackLocked("request abort: " + s.Error());
    }
    for (const auto& a : b.approvals) {
      Stmt s(db_,
             "UPDATE release_waves SET approved_by=?, approved_at=? WHERE release_id=? AND idx=?");
      s.Bind(1, a.by).Bind(2, a.at).Bind(3, a.release_id).Bind(4, int64_t{a.wave});
      if (s.Step() != SQLITE_DONE) return RollbackLocked("approve: " + s.Error());
    }
    if (!b.outbox.empty()) {
      Stmt s(db_,
             "INSERT INTO outbox (created_at, pipeline, event, url, payload, attempts, "
             "next_attempt_at, done_at, outcome) VALUES (?,?,?,?,?,?,?,?,?)");
      for (const auto& o : b.outbox) {
        s.Reset();
        s.Bind(1, o.created_at).Bind(2, o.pipeline).Bind(3, o.event).Bind(4, o.url);
        s.Bind(5, o.payload).Bind(6, int64_t{o.attempts}).Bind(7, o.next_attempt_at);
        s.Bind(8, o.done_at).Bind(9, o.outcome);
        if (s.Step() != SQLITE_DONE) return RollbackLocked("write outbox: " + s.Error());
      }
    }
    if (!b.outbox_updates.empty()) {
      Stmt s(db_,
             "UPDATE outbox SET attempts=?, next_attempt_at=?, done_at=?, outcome=? WHERE id=?");
      for (const auto& o : b.outbox_updates) {
        s.Reset();
        s.Bind(1, int64_t{o.attempts}).Bind(2, o.next_attempt_at).Bind(3, o.done_at);
        s.Bind(4, o.outcome).Bind(5, o.id);
        if (s.Step() != SQLITE_DONE) return RollbackLocked("update outbox: " + s.Error());
      }
    }
    for (const auto& p : b.pipeline_states) {
      Stmt s(db_,
             "INSERT INTO pipeline_state (pipeline, paused, paused_by, paused_at, frozen, "
             "frozen_by, freeze_reason, frozen_at) VALUES (?,?,?,?,?,?,?,?) "
             "ON CONFLICT(pipeline) DO UPDATE SET paused=excluded.paused, "
             "paused_by=excluded.paused_by, paused_at=excluded.paused_at, "
             "frozen=excluded.frozen, frozen_by=excluded.frozen_by, "
             "freeze_reason=excluded.freeze_reason, frozen_at=excluded.frozen_at");
      s.Bind(1, p.pipeline).Bind(2, int64_t{p.paused}).Bind(3, p.paused_by).Bind(4, p.paused_at);
      s.Bind(5, int64_t{p.frozen}).Bind(6, p.frozen_by).Bind(7, p.freeze_reason);
      s.Bind(8, p.frozen_at);
      if (s.Step() != SQLITE_DONE) return RollbackLocked("write pipeline state: " + s.Error());
    }
    return CommitLocked();
  }

  StatusOr<PipelineState> GetPipelineState(const std::string& pipeline) override {
    std::lock_guard lock(mu_);
    Stmt s(db_,
           "SELECT paused, paused_by, paused_at, frozen, frozen_by, freeze_reason, frozen_at "
           "FROM pipeline_state WHERE pipeline=?");
    s.Bind(1, pipeline);
    PipelineState p;
    p.pipeline = pipeline;
    int rc = s.Step();
    if (rc == SQLITE_ROW) {
      p.paused = s.Int(0) != 0;
      p.paused_by = s.Text(1);
      p.paused_at = s.Int(2);
      p.frozen = s.Int(3) != 0;
      p.frozen_by = s.Text(4);
      p.freeze_reason = s.Text(5);
      p.frozen_at = s.Int(6);
    } else if (rc != SQLITE_DONE) {
      return Internal("read pipeline state: " + s.Error());
    }
    return p;
  }

  StatusOr<std::vector<BringupRecord>> BringupTracks(int64_t release_id) override {
    std::lock_guard lock(mu_);
    Stmt s(db_, (std::string("SELECT ") + rows::kBringup +
                 " FROM bringup_tracks WHERE release_id=? ORDER BY region")
                    .c_str());
    s.Bind(1, release_id);
    std::vector<BringupRecord> out;
    int rc;
    while ((rc = s.Step()) == SQLITE_ROW) out.push_back(rows::Bringup(s));
    if (rc != SQLITE_DONE) return Internal("read bring-up tracks: " + s.Error());
    return out;
  }

  StatusOr<std::vector<GateResult>> GateResults(int64_t release_id) override {
    std::lock_guard lock(mu_);
    Stmt s(db_, (std::string("SELECT ") + rows::kGateResult +
                 " FROM gate_results WHERE release_id=? ORDER BY id")
                    .c_str());
    s.Bind(1, release_id);
    std::vector<GateResult> out;
    int rc;
    while ((rc = s.Step()) == SQLITE_ROW) {
      out.push_back(rows::Gate(s));
    }
    if (rc != SQLITE_DONE) return Internal("read gate results: " + s.Error());
    return out;
  }

  Status CreateToken(const TokenRecord& t, const AuditRecord& audit) override {
    std::lock_guard lock(mu_);
    LOCKSTEP_RETURN_IF_ERROR(BeginWriteLocked());
    Stmt s(db_,
           "INSERT INTO tokens (name, role, region, hash, created_at, created_by, expires_at) "
           "VALUES (?,?,?,?,?,?,?)");
    s.Bind(1, t.name).Bind(2, t.role).Bind(3, t.region).Bind(4, t.hash).Bind(5, t.created_at);
    s.Bind(6, t.created_by).Bind(7, t.expires_at);
    int rc = s.Step();
    if (rc == SQLITE_CONSTRAINT) {
      return AbandonLocked(
          Status(StatusCode::kAlreadyExists, "a token named \"" + t.name + "\" exists"));
    }
    if (rc != SQLITE_DONE) return RollbackLocked("create token: " + s.Error());
    if (Status st = InsertAuditLocked(audit); !st.ok()) return RollbackLocked(st.message());
    return CommitLocked();
  }

  StatusOr<std::optional<TokenRecord>> FindTokenByHash(const std::string& hash) override {
    std::lock_guard lock(mu_);
    Stmt s(db_, (std::string("SELECT ") + rows::kToken + " FROM tokens WHERE hash=?").c_str());
    s.Bind(1, hash);
    int rc = s.Step();
    if (rc == SQLITE_DONE) return std::optional<TokenRecord>();
    if (rc != SQLITE_ROW) return Internal("read token: " + s.Error());
    return std::optional<TokenRecord>(rows::Token(s));
  }

  StatusOr<std::vector<TokenRecord>> ListTokens() override {
    std::lock_guard lock(mu_);
    Stmt s(db_, (std::string("SELECT ") + rows::kToken + " FROM tokens ORDER BY name").c_str());
    std::vector<TokenRecord> out;
    int rc;
    while ((rc = s.Step()) == SQLITE_ROW) out.push_back(rows::Token(s));
    if (rc != SQLITE_DONE) return Internal("list tokens: " + s.Error());
    return out;
  }

  Status RevokeToken(const std::string& name, UnixMs at, const std::string& by,
                     const AuditRecord& audit) override {
    std::lock_guard lock(mu_);
    LOCKSTEP_RETURN_IF_ERROR(BeginWriteLocked());
    Stmt q(db_, "SELECT revoked_at FROM tokens WHERE name=?");
    q.Bind(1, name);
    int rc = q.Step();
    if (rc != SQLITE_ROW) {
      if (rc == SQLITE_DONE) return AbandonLocked(NotFound("no token named \"" + name + "\""));
      return RollbackLocked("read token: " + q.Error());
    }
    if (q.Int(0) != 0) {
      return AbandonLocked(FailedPrecondition("token \"" + name + "\" is already revoked"));
    }
    Stmt s(db_, "UPDATE tokens SET revoked_at=?, revoked_by=? WHERE name=?");
    s.Bind(1, at).Bind(2, by).Bind(3, name);
    if (s.Step() != SQLITE_DONE) return RollbackLocked("revoke token: " + s.Error());
    if (Status st = InsertAuditLocked(audit); !st.ok()) return RollbackLocked(st.message());
    return CommitLocked();
  }

  Status TouchToken(const std::string& name, UnixMs at) override {
    std::lock_guard lock(mu_);
    LOCKSTEP_RETURN_IF_ERROR(BeginWriteLocked());
    Stmt s(db_, "UPDATE tokens SET last_used_at=? WHERE name=? AND last_used_at<?");
    s.Bind(1, at).Bind(2, name).Bind(3, at);
    if (s.Step() != SQLITE_DONE) return RollbackLocked("record token use: " + s.Error());
    return CommitLocked();
  }

  Status IssueHostCredential(const HostCredentialRecord& c, const AuditRecord& audit) override {
    std::lock_guard lock(mu_);
    LOCKSTEP_RETURN_IF_ERROR(BeginWriteLocked());
    Stmt s(db_,
           "INSERT INTO host_credentials (name, region, hash, created_at, enrolled_with) "
           "VALUES (?,?,?,?,?)");
    s.Bind(1, c.name).Bind(2, c.region).Bind(3, c.hash).Bind(4, c.created_at);
    s.Bind(5, c.enrolled_with);
    int rc = s.Step();
    if (rc == SQLITE_CONSTRAINT) {
      return AbandonLocked(
          Status(StatusCode::kAlreadyExists, "host \"" + c.name + "\" is already enrolled"));
    }
    if (rc != SQLITE_DONE) return RollbackLocked("issue host credential: " + s.Error());
    if (Status st = InsertAuditLocked(audit); !st.ok()) return RollbackLocked(st.message());
    return CommitLocked();
  }

  StatusOr<std::optional<HostCredentialRecord>> FindHostCredential(
      const std::string& name) override {
    std::lock_guard lock(mu_);
    Stmt s(db_,
           "SELECT name, region, hash, created_at, enrolled_with FROM host_credentials "
           "WHERE name=?");
    s.Bind(1, name);
    int rc = s.Step();
    if (rc == SQLITE_DONE) return std::optional<HostCredentialRecord>();
    if (rc != SQLITE_ROW) return Internal("read host credential: " + s.Error());
    HostCredentialRecord c;
    c.name = s.Text(0);
    c.region = s.Text(1);
    c.hash = s.Text(2);
    c.created_at = s.Int(3);
    c.enrolled_with = s.Text(4);
    return std::optional<HostCredentialRecord>(std::move(c));
  }

  Status RemoveAgent(const std::string& name, const AuditRecord& audit) override {
    std::lock_guard lock(mu_);
    LOCKSTEP_RETURN_IF_ERROR(BeginWriteLocked());
    int removed = 0;
    for (const char* sql :
         {"DELETE FROM host_credentials WHERE name=?", "DELETE FROM agents WHERE name=?"}) {
      Stmt s(db_, sql);
      s.Bind(1, name);
      if (s.Step() != SQLITE_DONE) return RollbackLocked("remove agent: " + s.Error());
      removed += sqlite3_changes(db_);
    }
    if (removed == 0) {
      return AbandonLocked(NotFound("no agent named \"" + name + "\""));
    }
    if (Status st = InsertAuditLocked(audit); !st.ok()) return RollbackLocked(st.message());
    return CommitLocked();
  }

  StatusOr<int64_t> CountTokens() override {
    std::lock_guard lock(mu_);
    Stmt s(db_, "SELECT COUNT(*) FROM tokens");
    if (s.Step() != SQLITE_ROW) return Internal("count tokens: " + s.Error());
    return s.Int(0);
  }

  StatusOr<std::vector<ReleaseRecord>> FindReleases(const ReleaseQuery& q) override {
    std::string sql = std::string("SELECT ") + rows::kRelease + " FROM releases WHERE 1=1";
    std::vector<std::string> texts;  // bound in order, after the integers below
    auto in = [&](const char* column, const std::vector<std::string>& values) {
      if (values.empty()) return;
      sql += std::string(" AND ") + column + " IN (";
      for (size_t i = 0; i < values.size(); ++i) {
        sql += i ? ",?" : "?";
        texts.push_back(values[i]);
      }
      sql += ")";
    };
    if (!q.pipeline.empty()) {
      sql += " AND pipeline=?";
      texts.push_back(q.pipeline);
    }
    if (!q.version.empty()) {
      sql += " AND version=?";
      texts.push_back(q.version);
    }
    if (!q.commit.empty()) {
      sql += " AND commit_sha=?";
      texts.push_back(q.commit);
    }
    if (!q.request_id.empty()) {
      sql += " AND request_id=?";
      texts.push_back(q.request_id);
    }
    in("state", q.states);
    in("kind", q.kinds);
    if (!q.actor.empty()) {
      sql += " AND (author=? OR created_by=?)";
      texts.push_back(q.actor);
      texts.push_back(q.actor);
    }
    if (q.created_from > 0) sql += " AND created_at>=" + std::to_string(q.created_from);
    if (q.created_to > 0) sql += " AND created_at<=" + std::to_string(q.created_to);
    if (q.before_id > 0) sql += " AND id<" + std::to_string(q.before_id);
    sql += q.oldest_first ? " ORDER BY id" : " ORDER BY id DESC";
    if (q.limit > 0) sql += " LIMIT " + std::to_string(q.limit);
    std::lock_guard lock(mu_);
    Stmt s(db_, sql.c_str());
    for (size_t i = 0; i < texts.size(); ++i) s.Bind(static_cast<int>(i + 1), texts[i]);
    return CollectReleases(s);
  }

  StatusOr<ReleaseRecord> GetRelease(int64_t id) override {
    std::lock_guard lock(mu_);
    Stmt s(db_, (std::string("SELECT ") + rows::kRelease + " FROM releases WHERE id=?").c_str());
    s.Bind(1, id);
    int rc = s.Step();
    if (rc == SQLITE_ROW) return rows::Release(s);
    if (rc == SQLITE_DONE) return NotFound("no release with id " + std::to_string(id));
    return Internal("read release: " + s.Error());
  }

  StatusOr<std::vector<WaveRecord>> Waves(int64_t release_id) override {
    std::lock_guard lock(mu_);
    Stmt s(db_, (std::string("SELECT ") + rows::kWave +
                 " FROM release_waves WHERE release_id = ? ORDER BY idx")
                    .c_str());
    s.Bind(1, release_id);
    std::vector<WaveRecord> out;
    int rc;
    while ((rc = s.Step()) == SQLITE_ROW) {
      out.push_back(rows::Wave(s));
    }
    if (rc != SQLITE_DONE) return Internal("read waves: " + s.Error());
    return out;
  }

  StatusOr<std::vector<HostRecord>> Hosts(int64_t release_id) override {
    std::lock_guard lock(mu_);
    Stmt s(db_, (std::string("SELECT ") + rows::kHost +
                 " FROM release_hosts WHERE release_id = ? ORDER BY wave, region, agent")
                    .c_str());
    s.Bind(1, release_id);
    std::vector<HostRecord> out;
    int rc;
    while ((rc = s.Step()) == SQLITE_ROW) {
      out.push_back(rows::Host(s));
    }
    if (rc != SQLITE_DONE) return Internal("read hosts: " + s.Error());
    return out;
  }

  StatusOr<std::vector<AgentRecord>> Agents() override {
    std::lock_guard lock(mu_);
    Stmt s(db_, (std::string("SELECT ") + rows::kAgent + " FROM agents ORDER BY name").c_str());
    std::vector<AgentRecord> out;
    int rc;
    while ((rc = s.Step()) == SQLITE_ROW) out.push_back(rows::Agent(s));
    if (rc != SQLITE_DONE) return Internal("read agents: " + s.Error());
    return out;
  }

  StatusOr<std::optional<AgentRecord>> GetAgent(const std::string& name) override {
    std::lock_guard lock(mu_);
    Stmt s(db_, (std::string("SELECT ") + rows::kAgent + " FROM agents WHERE name=?").c_str());
    s.Bind(1, name);
    int rc = s.Step();
    if (rc == SQLITE_ROW) return std::optional<AgentRecord>(rows::Agent(s));
    if (rc == SQLITE_DONE) return std::optional<AgentRecord>();
    return Internal("read agent: " + s.Error());
  }

  StatusOr<std::vector<AuditRecord>> Audit(int limit) override {
    std::lock_guard lock(mu_);
    Stmt s(
        db_,
        (std::string("SELECT ") + rows::kAudit + " FROM audit ORDER BY id DESC LIMIT ?").c_str());
    s.Bind(1, int64_t{limit > 0 ? limit : 100});
    std::vector<AuditRecord> out;
    int rc;
    while ((rc = s.Step()) == SQLITE_ROW) {
      out.push_back(rows::Audit(s));
    }
    if (rc != SQLITE_DONE) return Internal("read audit: " + s.Error());
    return out;
  }

  StatusOr<std::vector<AuditRecord>> FindAudit(const AuditQuery& q) override {
    std::string sql = std::string("SELECT ") + rows::kAudit + " FROM audit WHERE 1=1";
    std::vector<std::string> texts;  // bound in order
    if (!q.pipeline.empty()) {
      sql +=
          " AND (target=? OR target IN (SELECT 'release/' || id FROM releases WHERE pipeline=?))";
      texts.push_back(q.pipeline);
      texts.push_back(q.pipeline);
    }
    if (!q.actor.empty()) {
      sql += " AND actor=?";
      texts.push_back(q.actor);
    }
    if (!q.action_prefix.empty()) {
      sql += " AND substr(action, 1, length(?))=?";
      texts.push_back(q.action_prefix);
      texts.push_back(q.action_prefix);
    }
    if (!q.text.empty()) {
      sql +=
          " AND (instr(lower(actor), lower(?))>0 OR instr(lower(action), lower(?))>0 OR "
          "instr(lower(target), lower(?))>0 OR instr(lower(detail), lower(?))>0)";
      for (int i = 0; i < 4; ++i) texts.push_back(q.text);
    }
    if (q.since > 0) sql += " AND at>=" + std::to_string(q.since);
    if (q.until > 0) sql += " AND at<=" + std::to_string(q.until);
    if (q.before_id > 0) sql += " AND id<" + std::to_string(q.before_id);
    sql += " ORDER BY id DESC LIMIT " + std::to_string(q.limit > 0 ? q.limit : 100);
    std::lock_guard lock(mu_);
    Stmt s(db_, sql.c_str());
    for (size_t i = 0; i < texts.size(); ++i) s.Bind(static_cast<int>(i + 1), texts[i]);
    std::vector<AuditRecord> out;
    int rc;
    while ((rc = s.Step()) == SQLITE_ROW) out.push_back(rows::Audit(s));
    if (rc != SQLITE_DONE) return Internal("read audit: " + s.Error());
    return out;
  }

  StatusOr<std::vector<OutboxRecord>> PendingOutbox(UnixMs due_by, int limit) override {
    std::lock_guard lock(mu_);
    Stmt s(db_, (std::string("SELECT ") + rows::kOutbox +
                 " FROM outbox WHERE done_at=0 AND next_attempt_at<=? ORDER BY id LIMIT ?")
                    .c_str());
    s.Bind(1, due_by).Bind(2, int64_t{limit > 0 ? limit : 100});
    std::vector<OutboxRecord> out;
    int rc;
    while ((rc = s.Step()) == SQLITE_ROW) {
      out.push_back(rows::Outbox(s));
    }
    if (rc != SQLITE_DONE) return Internal("read outbox: " + s.Error());
    return out;
  }

  // The lease on SQLite: the same rules as on a shared database, timed by this machine's
  // clock (one file has one owner; see DataDirLock).
  StatusOr<LeaseRecord> ClaimLease(const LeaseClaim& claim) override {
    std::lock_guard lock(mu_);
    LOCKSTEP_RETURN_IF_ERROR(ExecLocked("BEGIN IMMEDIATE"));
    Stmt s(db_,
           "INSERT INTO leader_lease (id, epoch, holder, grpc_address, http_url, expires_at) "
           "VALUES (1, 1, ?1, ?2, ?3, " LOCKSTEP_SQLITE_NOW_MS
           " + ?4) ON CONFLICT(id) DO UPDATE SET "
           "epoch = CASE WHEN holder = excluded.holder THEN epoch ELSE epoch + 1 END, "
           "holder = excluded.holder, grpc_address = excluded.grpc_address, "
           "http_url = excluded.http_url, expires_at = excluded.expires_at "
           "WHERE holder = excluded.holder OR expires_at <= " LOCKSTEP_SQLITE_NOW_MS);
    s.Bind(1, claim.holder).Bind(2, claim.grpc_address).Bind(3, claim.http_url);
    s.Bind(4, claim.ttl_ms);
    if (s.Step() != SQLITE_DONE) {
      std::string why = s.Error();
      (void)ExecLocked("ROLLBACK");
      return Internal("claim lease: " + why);
    }
    auto lease = ReadLeaseLocked();
    if (!lease.ok()) {
      (void)ExecLocked("ROLLBACK");
      return lease.status();
    }
    LOCKSTEP_RETURN_IF_ERROR(ExecLocked("COMMIT"));
    return lease;
  }

  StatusOr<LeaseRecord> ReadLease() override {
    std::lock_guard lock(mu_);
    return ReadLeaseLocked();
  }

  Status ReleaseLease(const std::string& holder, int64_t epoch) override {
    std::lock_guard lock(mu_);
    Stmt s(db_, "UPDATE leader_lease SET expires_at = " LOCKSTEP_SQLITE_NOW_MS
                " - 1 WHERE holder=? AND epoch=?");
    s.Bind(1, holder).Bind(2, epoch);
    if (s.Step() != SQLITE_DONE) return Internal("release lease: " + s.Error());
    return Status::Ok();
  }

  void FenceWrites(int64_t epoch) override {
    std::lock_guard lock(mu_);
    fence_epoch_ = epoch;
  }

 private:
  StatusOr<LeaseRecord> ReadLeaseLocked() {
    Stmt s(db_, "SELECT epoch, holder, grpc_address, http_url, expires_at - " LOCKSTEP_SQLITE_NOW_MS
                " FROM leader_lease WHERE id=1");
    LeaseRecord l;
    int rc = s.Step();
    if (rc == SQLITE_ROW) {
      l.epoch = s.Int(0);
      l.holder = s.Text(1);
      l.grpc_address = s.Text(2);
      l.http_url = s.Text(3);
      l.remaining_ms = s.Int(4);
    } else if (rc != SQLITE_DONE) {
      return Internal("read lease: " + s.Error());
    }
    return l;
  }

  // Opens a write transaction, refusing if the store latched an error, and checks the fence
  // inside it: a process that lost the lease writes nothing more, ever.
  Status BeginWriteLocked() {
    LOCKSTEP_RETURN_IF_ERROR(WritableLocked());
    LOCKSTEP_RETURN_IF_ERROR(ExecLocked("BEGIN IMMEDIATE"));
    if (fence_epoch_ == 0) return Status::Ok();
    auto lease = ReadLeaseLocked();
    if (!lease.ok()) return AbandonLocked(lease.status());
    if (lease->epoch == fence_epoch_) return Status::Ok();
    Status lost = FailedPrecondition(
        "lost the leader lease: it is at epoch " + std::to_string(lease->epoch) + " (held by " +
        (lease->holder.empty() ? std::string("nobody") : lease->holder) +
        "), this process held epoch " + std::to_string(fence_epoch_) + "; refusing writes");
    Status refused = AbandonLocked(lost);
    if (sticky_error_.ok()) sticky_error_ = lost;
    return refused;
  }

  // Why a guarded update touched no row: no such release, or its state forbids it.
  // Whether an expectation of a batch still holds: kNotFound if its release (or wave) does not
  // exist, kFailedPrecondition naming what differs.
  Status CheckLocked(const WriteBatch::Expect& e) {
    const std::string what = "release " + std::to_string(e.release_id);
    Stmt r(db_, "SELECT state, abort_requested_at FROM releases WHERE id=?");
    r.Bind(1, e.release_id);
    int rc = r.Step();
    if (rc == SQLITE_DONE) return NotFound("no release with id " + std::to_string(e.release_id));
    if (rc != SQLITE_ROW) return Internal("read release: " + r.Error());
    if (r.Text(0) != e.state) {
      return FailedPrecondition(what + " changed meanwhile: it is now " + r.Text(0));
    }
    if (r.Int(1) != e.abort_requested_at) {
      return FailedPrecondition(what + " changed meanwhile: an abort was requested");
    }
    if (e.wave < 0) return Status::Ok();
    Stmt w(db_, "SELECT state, approved_at FROM release_waves WHERE release_id=? AND idx=?");
    w.Bind(1, e.release_id).Bind(2, int64_t{e.wave});
    rc = w.Step();
    if (rc == SQLITE_DONE) {
      return NotFound("no wave " + std::to_string(e.wave) + " of " + what);
    }
    if (rc != SQLITE_ROW) return Internal("read wave: " + w.Error());
    if (w.Text(0) != e.wave_state || w.Int(1) != e.wave_approved_at) {
      return FailedPrecondition(what + " changed meanwhile: wave " + std::to_string(e.wave) +
                                " is now " + w.Text(0) + (w.Int(1) ? " (approved)" : ""));
    }
    return Status::Ok();
  }

  StatusOr<std::vector<ReleaseRecord>> CollectReleases(Stmt& s) {
    std::vector<ReleaseRecord> out;
    int rc;
    while ((rc = s.Step()) == SQLITE_ROW) out.push_back(rows::Release(s));
    if (rc != SQLITE_DONE) return Internal("read releases: " + s.Error());
    return out;
  }

  Status ExecLocked(const char* sql) {
    char* err = nullptr;
    if (sqlite3_exec(db_, sql, nullptr, nullptr, &err) != SQLITE_OK) {
      std::string msg = err ? err : sqlite3_errmsg(db_);
      sqlite3_free(err);
      return Internal(std::string("sqlite: ") + msg);
    }
    return Status::Ok();
  }

  Status InsertAuditLocked(const AuditRecord& e) {
    Stmt s(db_,
           "INSERT INTO audit (at, actor, action, target, detail, outcome) "
           "VALUES (?,?,?,?,?,?)");
    s.Bind(1, e.at).Bind(2, e.actor).Bind(3, e.action).Bind(4, e.target).Bind(5, e.detail);
    s.Bind(6, e.outcome);
    if (s.Step() != SQLITE_DONE) return Internal("insert audit: " + s.Error());
    return Status::Ok();
  }

  // Ends a transaction that must not commit and returns `why` as a storage failure.
  Status RollbackLocked(const std::string& why) {
    return AbandonLocked(Internal("store write failed, nothing changed: " + why));
  }

  // Rolls back the open transaction and returns `refusal`. If the ROLLBACK itself fails the
  // transaction's state is unknown, so the store latches that failure instead (the same as a
  // failed commit) rather than carry on inside a half-open transaction.
  Status AbandonLocked(Status refusal) {
    if (Status rb = ExecLocked("ROLLBACK"); !rb.ok()) {
      sticky_error_ = rb.WithContext("store rollback failed after \"" + refusal.message() +
                                     "\"; refusing writes until restart");
      return sticky_error_;
    }
    return refusal;
  }

  Status CommitLocked() {
    if (Status st = ExecLocked("COMMIT"); !st.ok()) {
      // The commit may or may not have reached the disk: latch, do not guess. The ROLLBACK
      // only closes the transaction if it is still open; its own failure changes nothing,
      // the store is latched either way.
      sqlite3_exec(db_, "ROLLBACK", nullptr, nullptr, nullptr);
      sticky_error_ = st.WithContext("store commit failed; refusing writes until restart");
      return sticky_error_;
    }
    return Status::Ok();
  }

  Status WritableLocked() const { return sticky_error_; }

  Status MigrateLocked() {
    Stmt v(db_, "PRAGMA user_version");
    if (v.Step() != SQLITE_ROW) return Internal("read schema version: " + v.Error());
    int current = static_cast<int>(v.Int(0));
    int latest = SqliteSchemaVersion();
    if (current > latest) {
      return FailedPrecondition("store schema version " + std::to_string(current) +
                                " is newer than this lockstepd understands (" +
                                std::to_string(latest) + "); upgrade lockstepd");
    }
    for (const auto& m : SqliteMigrations()) {
      if (m.version <= current) continue;
      LOCKSTEP_RETURN_IF_ERROR(ExecLocked("BEGIN IMMEDIATE"));
      if (Status st = ExecLocked(m.sql); !st.ok()) {
        // Migrations run before the store serves anything; a failed one ends the open.
        if (Status rb = ExecLocked("ROLLBACK"); !rb.ok()) st = rb.WithContext(st.message());
        return st.WithContext("migration " + std::to_string(m.version));
      }
      std::string bump = "PRAGMA user_version=" + std::to_string(m.version);
      LOCKSTEP_RETURN_IF_ERROR(ExecLocked(bump.c_str()));
      LOCKSTEP_RETURN_IF_ERROR(ExecLocked("COMMIT"));
    }
    return Status::Ok();
  }

  std::mutex mu_;
  sqlite3* db_;              // guarded by mu_
  Status sticky_error_;      // guarded by mu_
  int64_t fence_epoch_ = 0;  // guarded by mu_; 0: writes are not fenced
};

}  // namespace

int SqliteSchemaVersion() { return SqliteMigrations().back().version; }

StatusOr<std::unique_ptr<Store>> OpenSqliteStore(const std::string& path) {
  sqlite3* db = nullptr;
  int rc =
      sqlite3_open_v2(path.c_str(), &db,
                      SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_FULLMUTEX, nullptr);
  if (rc != SQLITE_OK) {
    std::string msg = db ? sqlite3_errmsg(db) : "out of memory";
    sqlite3_close(db);
    return Unavailable("cannot open store " + path + ": " + msg);
  }
  auto store = std::make_unique<SqliteStore>(db);
  if (Status st = store->Init(); !st.ok()) return st.WithContext("store " + path);
  return std::unique_ptr<Store>(std::move(store));
}

}  // namespace lockstep
