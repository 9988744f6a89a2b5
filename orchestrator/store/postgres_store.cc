// PostgreSQL implementation of Store (libpq): one connection, serialised by a mutex, the
// same contract and the same answers as the SQLite store (sqlite_store.cc), so that several
// lockstepd can share one database and hand leadership over through its leader lease.
//
// Where PostgreSQL differs from one SQLite file, and what this file does about it:
//   - Other processes write too. A batch's expectations lock the rows they read (FOR NO KEY
//     UPDATE), so the check and the write are atomic as they are under SQLite's write lock;
//     a fenced write holds the lease row FOR SHARE until it commits, so a takeover waits for
//     it and a write never commits after its epoch ended.
//   - The connection can break. A broken connection is reset before the next call; a read
//     that broke is run once more on the new connection; a write that broke before its
//     COMMIT was sent is answered kUnavailable, not latched, as the server aborts a
//     transaction whose connection is gone. A COMMIT that got no answer has an unknown
//     outcome: the store latches, as SQLite's does after a failed commit.
//   - Text sorts by the database's collation; every ORDER BY on text says COLLATE "C", so
//     names sort bytewise, as in SQLite.

#include <libpq-fe.h>

#include <atomic>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <mutex>
#include <utility>

#include "orchestrator/store/migrations.h"
#include "orchestrator/store/rows.h"
#include "orchestrator/store/store.h"

namespace lockstep {

// Defined in postgres_migrations.cc.
const std::vector<Migration>& PostgresMigrations();

namespace {

// Held while migrating, so that lockstepd processes starting together migrate one at a time.
constexpr int64_t kMigrationLockKey = 7400150;

// The text-format parameters of one statement ($1, $2, ... in the order added).
class Params {
 public:
  Params& Add(const std::string& v) {
    values_.push_back(v);
    return *this;
  }
  Params& Add(int64_t v) {
    values_.push_back(std::to_string(v));
    return *this;
  }
  // Round-trips every double, including the ones printf does not spell as PostgreSQL reads.
  Params& AddDouble(double v) {
    if (std::isnan(v)) {
      values_.push_back("NaN");
    } else if (std::isinf(v)) {
      values_.push_back(v > 0 ? "Infinity" : "-Infinity");
    } else {
      char buf[64];
      std::snprintf(buf, sizeof buf, "%.17g", v);
      values_.push_back(buf);
    }
    return *this;
  }
  // The placeholder of the parameter added last: "$<n>".
  std::string Last() const { return "$" + std::to_string(values_.size()); }
  const std::vector<std::string>& values() const { return values_; }

 private:
  std::vector<std::string> values_;
};

// Owns one PGresult (PQclear on destruction). A null result (libpq could not even send the
// statement) reads as a failed one with no rows.
class PgResult {
 public:
  explicit PgResult(PGresult* res) : res_(res) {}
  ~PgResult() { PQclear(res_); }
  PgResult(PgResult&& other) noexcept : res_(std::exchange(other.res_, nullptr)) {}
  PgResult& operator=(PgResult&& other) noexcept {
    if (this != &other) {
      PQclear(res_);
      res_ = std::exchange(other.res_, nullptr);
    }
    return *this;
  }
  PgResult(const PgResult&) = delete;
  PgResult& operator=(const PgResult&) = delete;

  bool ok() const {
    if (res_ == nullptr) return false;
    ExecStatusType st = PQresultStatus(res_);
    return st == PGRES_COMMAND_OK || st == PGRES_TUPLES_OK;
  }
  int rows() const { return res_ ? PQntuples(res_) : 0; }
  std::string Text(int row, int col) const {
    return std::string(PQgetvalue(res_, row, col),
                       static_cast<size_t>(PQgetlength(res_, row, col)));
  }
  int64_t Int(int row, int col) const {
    return std::strtoll(PQgetvalue(res_, row, col), nullptr, 10);
  }
  double Double(int row, int col) const { return std::strtod(PQgetvalue(res_, row, col), nullptr); }
  // Rows an INSERT, UPDATE or DELETE touched.
  int64_t Affected() const {
    if (res_ == nullptr) return 0;
    return std::strtoll(PQcmdTuples(res_), nullptr, 10);
  }
  // The command tag: "COMMIT", "ROLLBACK", "INSERT 0 1", ...
  std::string Command() const {
    const char* tag = res_ ? PQcmdStatus(res_) : nullptr;
    return tag ? tag : "";
  }
  // The SQLSTATE of a failed statement ("23505": a unique violation); "" if none.
  std::string SqlState() const {
    const char* code = res_ ? PQresultErrorField(res_, PG_DIAG_SQLSTATE) : nullptr;
    return code ? code : "";
  }
  // Why it failed, on one line: the server's message (and detail), else libpq's.
  std::string Error(const PGconn* conn) const {
    std::string msg;
    const char* primary = res_ ? PQresultErrorField(res_, PG_DIAG_MESSAGE_PRIMARY) : nullptr;
    if (primary != nullptr && *primary != '\0') {
      msg = primary;
      const char* detail = PQresultErrorField(res_, PG_DIAG_MESSAGE_DETAIL);
      if (detail != nullptr && *detail != '\0') msg += std::string(" (") + detail + ")";
    } else if (res_ != nullptr && *PQresultErrorMessage(res_) != '\0') {
      msg = PQresultErrorMessage(res_);
    } else {
      msg = PQerrorMessage(conn);
    }
    for (char& c : msg) {
      if (c == '\n' || c == '\r' || c == '\t') c = ' ';
    }
    while (!msg.empty() && msg.back() == ' ') msg.pop_back();
    return msg.empty() ? "unknown error" : msg;
  }

 private:
  PGresult* res_;
};

// libpq prints the server's notices to stderr by default; lockstepd has nothing to learn from
// them ("relation already exists, skipping").
void IgnoreNotice(void*, const char*) {}

// One row of a result, as rows.h reads it.
struct PgRow {
  const PgResult& r;
  int row;
  int64_t Int(int col) const { return r.Int(row, col); }
  std::string Text(int col) const { return r.Text(row, col); }
  double Double(int col) const { return r.Double(row, col); }
};

// The lease columns as ClaimLease and ReadLease return them; the remaining time is measured
// by the database's clock.
constexpr const char* kLeaseColumns =
    "epoch, holder, grpc_address, http_url, "
    "(EXTRACT(EPOCH FROM (expires_at - clock_timestamp())) * 1000)::BIGINT";

LeaseRecord ReadLeaseRow(const PgResult& r) {
  LeaseRecord l;
  l.epoch = r.Int(0, 0);
  l.holder = r.Text(0, 1);
  l.grpc_address = r.Text(0, 2);
  l.http_url = r.Text(0, 3);
  l.remaining_ms = r.Int(0, 4);
  return l;
}

class PostgresStore final : public Store {
 public:
  explicit PostgresStore(PGconn* conn) : conn_(conn) {}
  ~PostgresStore() override { PQfinish(conn_); }

  Status Init() {
    std::lock_guard lock(mu_);
    PQsetNoticeProcessor(conn_, IgnoreNotice, nullptr);
    LOCKSTEP_RETURN_IF_ERROR(SetUpSessionLocked());
    return MigrateLocked();
  }

  StatusOr<ReleaseRecord> CreateRelease(ReleaseRecord r, AuditRecord audit) override {
    std::lock_guard lock(mu_);
    LOCKSTEP_RETURN_IF_ERROR(BeginLocked());
    PgResult ins = RunLocked(
        "INSERT INTO releases (pipeline, version, artifact_url, sha256, commit_sha, author, "
        "state, reason, current_wave, previous_version, created_at, started_at, finished_at, "
        "kind, previous_release_id, commit_at, request_id, created_by) VALUES "
        "($1,$2,$3,$4,$5,$6,$7,$8,$9,$10,$11,$12,$13,$14,$15,$16,$17,$18) RETURNING id",
        Params()
            .Add(r.pipeline)
            .Add(r.version)
            .Add(r.artifact_url)
            .Add(r.sha256)
            .Add(r.commit)
            .Add(r.author)
            .Add(r.state)
            .Add(r.reason)
            .Add(int64_t{r.current_wave})
            .Add(r.previous_version)
            .Add(r.created_at)
            .Add(r.started_at)
            .Add(r.finished_at)
            .Add(r.kind)
            .Add(r.previous_release_id)
            .Add(r.commit_at)
            .Add(r.request_id)
            .Add(r.created_by));
    if (!ins.ok()) {
      if (ins.SqlState() == kUniqueViolation && !r.request_id.empty()) {
        return DuplicateRequestLocked(r.pipeline, r.request_id);
      }
      return RollbackLocked("insert release: " + ins.Error(conn_));
    }
    r.id = ins.Int(0, 0);
    if (audit.target.empty()) audit.target = "release/" + std::to_string(r.id);
    if (Status st = InsertAuditLocked(audit); !st.ok()) return RollbackLocked(st.message());
    LOCKSTEP_RETURN_IF_ERROR(CommitLocked());
    return r;
  }

  Status Write(const WriteBatch& b) override {
    if (b.empty()) return Status::Ok();
    std::lock_guard lock(mu_);
    LOCKSTEP_RETURN_IF_ERROR(BeginLocked());
    for (const auto& e : b.expect) {
      if (Status st = CheckLocked(e); !st.ok()) {
        return AbandonLocked(st);
      }
    }
    for (const auto& r : b.releases) {
      PgResult res = RunLocked(
          "UPDATE releases SET state=$1, reason=$2, current_wave=$3, previous_version=$4, "
          "started_at=$5, finished_at=$6, previous_release_id=$7, "
          // A release created before its artifact existed (waiting_for_artifact) gets its
          // sha256 once; after that it is identity like the rest.
          "sha256=CASE WHEN sha256='' THEN $8 ELSE sha256 END WHERE id=$9",
          Params()
              .Add(r.state)
              .Add(r.reason)
              .Add(int64_t{r.current_wave})
              .Add(r.previous_version)
              .Add(r.started_at)
              .Add(r.finished_at)
              .Add(r.previous_release_id)
              .Add(r.sha256)
              .Add(r.id));
      if (!res.ok()) return RollbackLocked("update release: " + res.Error(conn_));
    }
    for (const auto& w : b.waves) {
      PgResult res = RunLocked(
          "INSERT INTO release_waves (release_id, idx, name, state, started_at, "
          "bake_started_at, finished_at, first_switch_at, last_switch_at, "
          "approval_requested_at) VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10) "
          "ON CONFLICT (release_id, idx) DO UPDATE SET state=EXCLUDED.state, "
          "started_at=EXCLUDED.started_at, bake_started_at=EXCLUDED.bake_started_at, "
          "finished_at=EXCLUDED.finished_at, first_switch_at=EXCLUDED.first_switch_at, "
          "last_switch_at=EXCLUDED.last_switch_at, "
          "approval_requested_at=EXCLUDED.approval_requested_at",
          Params()
              .Add(w.release_id)
              .Add(int64_t{w.index})
              .Add(w.name)
              .Add(w.state)
              .Add(w.started_at)
              .Add(w.bake_started_at)
              .Add(w.finished_at)
              .Add(w.first_switch_at)
              .Add(w.last_switch_at)
              .Add(w.approval_requested_at));
      if (!res.ok()) return RollbackLocked("write wave: " + res.Error(conn_));
    }
    for (const auto& h : b.hosts) {
      PgResult res = RunLocked(
          "INSERT INTO release_hosts (release_id, agent, region, wave, state, task_id, "
          "detail, started_at, task_sent_at, finished_at, from_version, step, attempt, "
          "switch_sent, output_tail, failure) "
          "VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10,$11,$12,$13,$14,$15,$16) "
          "ON CONFLICT (release_id, agent) DO UPDATE SET region=EXCLUDED.region, "
          "wave=EXCLUDED.wave, state=EXCLUDED.state, task_id=EXCLUDED.task_id, "
          "detail=EXCLUDED.detail, started_at=EXCLUDED.started_at, "
          "task_sent_at=EXCLUDED.task_sent_at, finished_at=EXCLUDED.finished_at, "
          "from_version=EXCLUDED.from_version, step=EXCLUDED.step, "
          "attempt=EXCLUDED.attempt, switch_sent=EXCLUDED.switch_sent, "
          "output_tail=EXCLUDED.output_tail, failure=EXCLUDED.failure",
          Params()
              .Add(h.release_id)
              .Add(h.agent)
              .Add(h.region)
              .Add(int64_t{h.wave})
              .Add(h.state)
              .Add(h.task_id)
              .Add(h.detail)
              .Add(h.started_at)
              .Add(h.task_sent_at)
              .Add(h.finished_at)
              .Add(h.from_version)
              .Add(h.step)
              .Add(int64_t{h.attempt})
              .Add(int64_t{h.switch_sent ? 1 : 0})
              .Add(h.output_tail)
              .Add(h.failure));
      if (!res.ok()) return RollbackLocked("write host: " + res.Error(conn_));
    }
    for (const auto& t : b.bringup) {
      PgResult res = RunLocked(
          "INSERT INTO bringup_tracks (release_id, region, state, wave, started_at, "
          "wave_started_at, bake_started_at, finished_at, reason) "
          "VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9) "
          "ON CONFLICT (release_id, region) DO UPDATE SET state=EXCLUDED.state, "
          "wave=EXCLUDED.wave, started_at=EXCLUDED.started_at, "
          "wave_started_at=EXCLUDED.wave_started_at, "
          "bake_started_at=EXCLUDED.bake_started_at, finished_at=EXCLUDED.finished_at, "
          "reason=EXCLUDED.reason",
          Params()
              .Add(t.release_id)
              .Add(t.region)
              .Add(t.state)
              .Add(int64_t{t.wave})
              .Add(t.started_at)
              .Add(t.wave_started_at)
              .Add(t.bake_started_at)
              .Add(t.finished_at)
              .Add(t.reason));
      if (!res.ok()) return RollbackLocked("write bring-up track: " + res.Error(conn_));
    }
    for (const auto& a : b.agents) {
      PgResult res = RunLocked(
          "INSERT INTO agents (name, region, pipeline, current_version, versions_on_disk, "
          "connected, first_seen, last_seen, agent_version) VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9) "
          "ON CONFLICT (name) DO UPDATE SET region=EXCLUDED.region, "
          "pipeline=EXCLUDED.pipeline, current_version=EXCLUDED.current_version, "
          "versions_on_disk=EXCLUDED.versions_on_disk, connected=EXCLUDED.connected, "
          "last_seen=EXCLUDED.last_seen, agent_version=EXCLUDED.agent_version",
          Params()
              .Add(a.name)
              .Add(a.region)
              .Add(a.pipeline)
              .Add(a.current_version)
              .Add(rows::JoinVersions(a.versions_on_disk))
              .Add(int64_t{a.connected ? 1 : 0})
              .Add(a.first_seen)
              .Add(a.last_seen)
              .Add(a.agent_version));
      if (!res.ok()) return RollbackLocked("write agent: " + res.Error(conn_));
    }
    for (const auto& e : b.audit) {
      if (Status st = InsertAuditLocked(e); !st.ok()) return RollbackLocked(st.message());
    }
    for (const auto& g : b.gate_results) {
      PgResult res = RunLocked(
          "INSERT INTO gate_results (release_id, wave, gate, region, at, verdict, value, "
          "detail, evaluated_at) VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9)",
          Params()
              .Add(g.release_id)
              .Add(int64_t{g.wave})
              .Add(g.gate)
              .Add(g.region)
              .Add(g.at)
              .Add(g.verdict)
              .AddDouble(g.value)
              .Add(g.detail)
              .Add(g.evaluated_at));
      if (!res.ok()) return RollbackLocked("write gate result: " + res.Error(conn_));
    }
    for (const auto& hold : b.holds) {
      PgResult res = RunLocked(
          "INSERT INTO pipeline_state (pipeline, paused, paused_by, paused_at) "
          "VALUES ($1,1,$2,$3) ON CONFLICT (pipeline) DO UPDATE SET paused=1, "
          "paused_by=EXCLUDED.paused_by, paused_at=EXCLUDED.paused_at",
          Params().Add(hold.pipeline).Add(hold.by).Add(hold.at));
      if (!res.ok()) return RollbackLocked("hold pipeline: " + res.Error(conn_));
    }
    for (const auto& a : b.abort_requests) {
      PgResult res =
          RunLocked("UPDATE releases SET abort_requested_by=$1, abort_requested_at=$2 WHERE id=$3",
                    Params().Add(a.by).Add(a.at).Add(a.release_id));
      if (!res.ok()) return RollbackLocked("request abort: " + res.Error(conn_));
    }
    for (const auto& a : b.approvals) {
      PgResult res = RunLocked(
          "UPDATE release_waves SET approved_by=$1, approved_at=$2 "
          "WHERE release_id=$3 AND idx=$4",
          Params().Add(a.by).Add(a.at).Add(a.release_id).Add(int64_t{a.wave}));
      if (!res.ok()) return RollbackLocked("approve: " + res.Error(conn_));
    }
    for (const auto& p : b.pipeline_states) {
      PgResult res = RunLocked(
          "INSERT INTO pipeline_state (pipeline, paused, paused_by, paused_at, frozen, "
          "frozen_by, freeze_reason, frozen_at) VALUES ($1,$2,$3,$4,$5,$6,$7,$8) "
          "ON CONFLICT (pipeline) DO UPDATE SET paused=EXCLUDED.paused, "
          "paused_by=EXCLUDED.paused_by, paused_at=EXCLUDED.paused_at, "
          "frozen=EXCLUDED.frozen, frozen_by=EXCLUDED.frozen_by, "
          "freeze_reason=EXCLUDED.freeze_reason, frozen_at=EXCLUDED.frozen_at",
          Params()
              .Add(p.pipeline)
              .Add(int64_t{p.paused ? 1 : 0})
              .Add(p.paused_by)
              .Add(p.paused_at)
              .Add(int64_t{p.frozen ? 1 : 0})
              .Add(p.frozen_by)
              .Add(p.freeze_reason)
              .Add(p.frozen_at));
      if (!res.ok()) return RollbackLocked("write pipeline state: " + res.Error(conn_));
    }
    for (const auto& o : b.outbox) {
      PgResult res = RunLocked(
          "INSERT INTO outbox (created_at, pipeline, event, url, payload, attempts, "
          "next_attempt_at, done_at, outcome) VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9)",
          Params()
              .Add(o.created_at)
              .Add(o.pipeline)
              .Add(o.event)
              .Add(o.url)
              .Add(o.payload)
              .Add(int64_t{o.attempts})
              .Add(o.next_attempt_at)
              .Add(o.done_at)
              .Add(o.outcome));
      if (!res.ok()) return RollbackLocked("write outbox: " + res.Error(conn_));
    }
    for (const auto& o : b.outbox_updates) {
      PgResult res = RunLocked(
          "UPDATE outbox SET attempts=$1, next_attempt_at=$2, done_at=$3, outcome=$4 "
          "WHERE id=$5",
          Params()
              .Add(int64_t{o.attempts})
              .Add(o.next_attempt_at)
              .Add(o.done_at)
              .Add(o.outcome)
              .Add(o.id));
      if (!res.ok()) return RollbackLocked("update outbox: " + res.Error(conn_));
    }
    return CommitLocked();
  }

  StatusOr<PipelineState> GetPipelineState(const std::string& pipeline) override {
    std::lock_guard lock(mu_);
    LOCKSTEP_ASSIGN_OR_RETURN(
        PgResult r,
        RunRetryingLocked("read pipeline state",
                          "SELECT paused, paused_by, paused_at, frozen, frozen_by, freeze_reason, "
                          "frozen_at FROM pipeline_state WHERE pipeline=$1",
                          Params().Add(pipeline)));
    PipelineState p;
    p.pipeline = pipeline;
    if (r.rows() > 0) {
      p.paused = r.Int(0, 0) != 0;
      p.paused_by = r.Text(0, 1);
      p.paused_at = r.Int(0, 2);
      p.frozen = r.Int(0, 3) != 0;
      p.frozen_by = r.Text(0, 4);
      p.freeze_reason = r.Text(0, 5);
      p.frozen_at = r.Int(0, 6);
    }
    return p;
  }

  StatusOr<std::vector<BringupRecord>> BringupTracks(int64_t release_id) override {
    std::lock_guard lock(mu_);
    LOCKSTEP_ASSIGN_OR_RETURN(
        PgResult r,
        RunRetryingLocked("read bring-up tracks",
                          std::string("SELECT ") + rows::kBringup +
                              " FROM bringup_tracks WHERE release_id=$1 ORDER BY region",
                          Params().Add(release_id)));
    std::vector<BringupRecord> out;
    for (int i = 0; i < r.rows(); ++i) out.push_back(rows::Bringup(PgRow{r, i}));
    return out;
  }

  StatusOr<std::vector<GateResult>> GateResults(int64_t release_id) override {
    std::lock_guard lock(mu_);
    LOCKSTEP_ASSIGN_OR_RETURN(
        PgResult r, RunRetryingLocked("read gate results",
                                      std::string("SELECT ") + rows::kGateResult +
                                          " FROM gate_results WHERE release_id=$1 ORDER BY id",
                                      Params().Add(release_id)));
    std::vector<GateResult> out;
    for (int i = 0; i < r.rows(); ++i) {
      out.push_back(rows::Gate(PgRow{r, i}));
    }
    return out;
  }

  StatusOr<std::vector<OutboxRecord>> PendingOutbox(UnixMs due_by, int limit) override {
    std::lock_guard lock(mu_);
    LOCKSTEP_ASSIGN_OR_RETURN(
        PgResult r,
        RunRetryingLocked("read outbox",
                          std::string("SELECT ") + rows::kOutbox +
                              " FROM outbox WHERE done_at = 0 AND next_attempt_at <= $1 "
                              "ORDER BY id LIMIT $2",
                          Params().Add(due_by).Add(int64_t{limit > 0 ? limit : 100})));
    std::vector<OutboxRecord> out;
    for (int i = 0; i < r.rows(); ++i) {
      out.push_back(rows::Outbox(PgRow{r, i}));
    }
    return out;
  }

  Status CreateToken(const TokenRecord& t, const AuditRecord& audit) override {
    std::lock_guard lock(mu_);
    LOCKSTEP_RETURN_IF_ERROR(BeginLocked());
    PgResult res = RunLocked(
        "INSERT INTO tokens (name, role, region, hash, created_at, created_by, expires_at) "
        "VALUES ($1,$2,$3,$4,$5,$6,$7)",
        Params()
            .Add(t.name)
            .Add(t.role)
            .Add(t.region)
            .Add(t.hash)
            .Add(t.created_at)
            .Add(t.created_by)
            .Add(t.expires_at));
    if (!res.ok()) {
      if (res.SqlState() == kUniqueViolation) {
        return AbandonLocked(
            Status(StatusCode::kAlreadyExists, "a token named \"" + t.name + "\" exists"));
      }
      return RollbackLocked("create token: " + res.Error(conn_));
    }
    if (Status st = InsertAuditLocked(audit); !st.ok()) return RollbackLocked(st.message());
    return CommitLocked();
  }

  StatusOr<std::optional<TokenRecord>> FindTokenByHash(const std::string& hash) override {
    std::lock_guard lock(mu_);
    LOCKSTEP_ASSIGN_OR_RETURN(PgResult r, RunRetryingLocked("read token",
                                                            std::string("SELECT ") + rows::kToken +
                                                                " FROM tokens WHERE hash=$1",
                                                            Params().Add(hash)));
    if (r.rows() == 0) return std::optional<TokenRecord>();
    return std::optional<TokenRecord>(rows::Token(PgRow{r, 0}));
  }

  StatusOr<std::vector<TokenRecord>> ListTokens() override {
    std::lock_guard lock(mu_);
    LOCKSTEP_ASSIGN_OR_RETURN(PgResult r,
                              RunRetryingLocked("list tokens",
                                                std::string("SELECT ") + rows::kToken +
                                                    " FROM tokens ORDER BY name COLLATE \"C\"",
                                                Params()));
    std::vector<TokenRecord> out;
    for (int i = 0; i < r.rows(); ++i) out.push_back(rows::Token(PgRow{r, i}));
    return out;
  }

  Status RevokeToken(const std::string& name, UnixMs at, const std::string& by,
                     const AuditRecord& audit) override {
    std::lock_guard lock(mu_);
    LOCKSTEP_RETURN_IF_ERROR(BeginLocked());
    PgResult q =
        RunLocked("SELECT revoked_at FROM tokens WHERE name=$1 FOR UPDATE", Params().Add(name));
    if (!q.ok()) return RollbackLocked("read token: " + q.Error(conn_));
    if (q.rows() == 0) return AbandonLocked(NotFound("no token named \"" + name + "\""));
    if (q.Int(0, 0) != 0) {
      return AbandonLocked(FailedPrecondition("token \"" + name + "\" is already revoked"));
    }
    PgResult s = RunLocked("UPDATE tokens SET revoked_at=$1, revoked_by=$2 WHERE name=$3",
                           Params().Add(at).Add(by).Add(name));
    if (!s.ok()) return RollbackLocked("revoke token: " + s.Error(conn_));
    if (Status st = InsertAuditLocked(audit); !st.ok()) return RollbackLocked(st.message());
    return CommitLocked();
  }

  Status TouchToken(const std::string& name, UnixMs at) override {
    std::lock_guard lock(mu_);
    // A transaction of its own, unlike SQLite's single statement, so that a fenced store
    // checks the lease before this write as before any other.
    LOCKSTEP_RETURN_IF_ERROR(BeginLocked());
    PgResult s = RunLocked("UPDATE tokens SET last_used_at=$1 WHERE name=$2 AND last_used_at<$3",
                           Params().Add(at).Add(name).Add(at));
    if (!s.ok()) return RollbackLocked("record token use: " + s.Error(conn_));
    return CommitLocked();
  }

  Status IssueHostCredential(const HostCredentialRecord& c, const AuditRecord& audit) override {
    std::lock_guard lock(mu_);
    LOCKSTEP_RETURN_IF_ERROR(BeginLocked());
    PgResult s = RunLocked(
        "INSERT INTO host_credentials (name, region, hash, created_at, enrolled_with) "
        "VALUES ($1,$2,$3,$4,$5)",
        Params().Add(c.name).Add(c.region).Add(c.hash).Add(c.created_at).Add(c.enrolled_with));
    if (!s.ok()) {
      if (s.SqlState() == kUniqueViolation) {
        return AbandonLocked(
            Status(StatusCode::kAlreadyExists, "host \"" + c.name + "\" is already enrolled"));
      }
      return RollbackLocked("issue host credential: " + s.Error(conn_));
    }
    if (Status st = InsertAuditLocked(audit); !st.ok()) return RollbackLocked(st.message());
    return CommitLocked();
  }

  StatusOr<std::optional<HostCredentialRecord>> FindHostCredential(
      const std::string& name) override {
    std::lock_guard lock(mu_);
    LOCKSTEP_ASSIGN_OR_RETURN(
        PgResult r, RunRetryingLocked("read host credential",
                                      "SELECT name, region, hash, created_at, enrolled_with "
                                      "FROM host_credentials WHERE name=$1",
                                      Params().Add(name)));
    if (r.rows() == 0) return std::optional<HostCredentialRecord>();
    HostCredentialRecord c;
    c.name = r.Text(0, 0);
    c.region = r.Text(0, 1);
    c.hash = r.Text(0, 2);
    c.created_at = r.Int(0, 3);
    c.enrolled_with = r.Text(0, 4);
    return std::optional<HostCredentialRecord>(std::move(c));
  }

  Status RemoveAgent(const std::string& name, const AuditRecord& audit) override {
    std::lock_guard lock(mu_);
    LOCKSTEP_RETURN_IF_ERROR(BeginLocked());
    int64_t removed = 0;
    for (const char* sql :
         {"DELETE FROM host_credentials WHERE name=$1", "DELETE FROM agents WHERE name=$1"}) {
      PgResult s = RunLocked(sql, Params().Add(name));
      if (!s.ok()) return RollbackLocked("remove agent: " + s.Error(conn_));
      removed += s.Affected();
    }
    if (removed == 0) {
      return AbandonLocked(NotFound("no agent named \"" + name + "\""));
    }
    if (Status st = InsertAuditLocked(audit); !st.ok()) return RollbackLocked(st.message());
    return CommitLocked();
  }

  StatusOr<int64_t> CountTokens() override {
    std::lock_guard lock(mu_);
    LOCKSTEP_ASSIGN_OR_RETURN(
        PgResult r, RunRetryingLocked("count tokens", "SELECT COUNT(*) FROM tokens", Params()));
    if (r.rows() == 0) return Internal("count tokens: no answer");
    return r.Int(0, 0);
  }

  StatusOr<std::vector<ReleaseRecord>> FindReleases(const ReleaseQuery& q) override {
    std::string sql = std::string("SELECT ") + rows::kRelease + " FROM releases WHERE 1=1";
    Params params;
    auto equals = [&sql, &params](const char* column, const std::string& value) {
      if (value.empty()) return;
      params.Add(value);
      sql += std::string(" AND ") + column + "=" + params.Last();
    };
    auto in = [&sql, &params](const char* column, const std::vector<std::string>& values) {
      if (values.empty()) return;
      sql += std::string(" AND ") + column + " IN (";
      for (size_t i = 0; i < values.size(); ++i) {
        params.Add(values[i]);
        sql += (i ? "," : "") + params.Last();
      }
      sql += ")";
    };
    equals("pipeline", q.pipeline);
    equals("version", q.version);
    equals("commit_sha", q.commit);
    equals("request_id", q.request_id);
    in("state", q.states);
    in("kind", q.kinds);
    if (!q.actor.empty()) {
      params.Add(q.actor);
      sql += " AND (author=" + params.Last() + " OR created_by=" + params.Last() + ")";
    }
    if (q.created_from > 0) {
      params.Add(q.created_from);
      sql += " AND created_at>=" + params.Last();
    }
    if (q.created_to > 0) {
      params.Add(q.created_to);
      sql += " AND created_at<=" + params.Last();
    }
    if (q.before_id > 0) {
      params.Add(q.before_id);
      sql += " AND id<" + params.Last();
    }
    sql += q.oldest_first ? " ORDER BY id" : " ORDER BY id DESC";
    if (q.limit > 0) sql += " LIMIT " + std::to_string(q.limit);
    std::lock_guard lock(mu_);
    LOCKSTEP_ASSIGN_OR_RETURN(PgResult r, RunRetryingLocked("read releases", sql, params));
    std::vector<ReleaseRecord> out;
    for (int i = 0; i < r.rows(); ++i) out.push_back(rows::Release(PgRow{r, i}));
    return out;
  }

  StatusOr<ReleaseRecord> GetRelease(int64_t id) override {
    std::lock_guard lock(mu_);
    LOCKSTEP_ASSIGN_OR_RETURN(
        PgResult r,
        RunRetryingLocked("read release",
                          std::string("SELECT ") + rows::kRelease + " FROM releases WHERE id=$1",
                          Params().Add(id)));
    if (r.rows() == 0) return NotFound("no release with id " + std::to_string(id));
    return rows::Release(PgRow{r, 0});
  }

  StatusOr<std::vector<WaveRecord>> Waves(int64_t release_id) override {
    std::lock_guard lock(mu_);
    LOCKSTEP_ASSIGN_OR_RETURN(
        PgResult r, RunRetryingLocked("read waves",
                                      std::string("SELECT ") + rows::kWave +
                                          " FROM release_waves WHERE release_id=$1 ORDER BY idx",
                                      Params().Add(release_id)));
    std::vector<WaveRecord> out;
    for (int i = 0; i < r.rows(); ++i) {
      out.push_back(rows::Wave(PgRow{r, i}));
    }
    return out;
  }

  StatusOr<std::vector<HostRecord>> Hosts(int64_t release_id) override {
    std::lock_guard lock(mu_);
    LOCKSTEP_ASSIGN_OR_RETURN(
        PgResult r,
        RunRetryingLocked("read hosts",
                          std::string("SELECT ") + rows::kHost +
                              " FROM release_hosts WHERE release_id=$1 "
                              "ORDER BY wave, region COLLATE \"C\", agent COLLATE \"C\"",
                          Params().Add(release_id)));
    std::vector<HostRecord> out;
    for (int i = 0; i < r.rows(); ++i) {
      out.push_back(rows::Host(PgRow{r, i}));
    }
    return out;
  }

  StatusOr<std::vector<AgentRecord>> Agents() override {
    std::lock_guard lock(mu_);
    LOCKSTEP_ASSIGN_OR_RETURN(PgResult r,
                              RunRetryingLocked("read agents",
                                                std::string("SELECT ") + rows::kAgent +
                                                    " FROM agents ORDER BY name COLLATE \"C\"",
                                                Params()));
    std::vector<AgentRecord> out;
    for (int i = 0; i < r.rows(); ++i) out.push_back(rows::Agent(PgRow{r, i}));
    return out;
  }

  StatusOr<std::optional<AgentRecord>> GetAgent(const std::string& name) override {
    std::lock_guard lock(mu_);
    LOCKSTEP_ASSIGN_OR_RETURN(PgResult r, RunRetryingLocked("read agent",
                                                            std::string("SELECT ") + rows::kAgent +
                                                                " FROM agents WHERE name=$1",
                                                            Params().Add(name)));
    if (r.rows() == 0) return std::optional<AgentRecord>();
    return std::optional<AgentRecord>(rows::Agent(PgRow{r, 0}));
  }

  StatusOr<std::vector<AuditRecord>> Audit(int limit) override {
    std::lock_guard lock(mu_);
    LOCKSTEP_ASSIGN_OR_RETURN(PgResult r,
                              RunRetryingLocked("read audit",
                                                std::string("SELECT ") + rows::kAudit +
                                                    " FROM audit ORDER BY id DESC LIMIT $1",
                                                Params().Add(int64_t{limit > 0 ? limit : 100})));
    std::vector<AuditRecord> out;
    for (int i = 0; i < r.rows(); ++i) {
      out.push_back(rows::Audit(PgRow{r, i}));
    }
    return out;
  }

  StatusOr<std::vector<AuditRecord>> FindAudit(const AuditQuery& q) override {
    std::string sql = std::string("SELECT ") + rows::kAudit + " FROM audit WHERE 1=1";
    Params params;
    if (!q.pipeline.empty()) {
      params.Add(q.pipeline);
      sql += " AND (target=" + params.Last() +
             " OR target IN (SELECT 'release/' || id::text FROM releases WHERE pipeline=" +
             params.Last() + "))";
    }
    if (!q.actor.empty()) {
      params.Add(q.actor);
      sql += " AND actor=" + params.Last();
    }
    if (!q.action_prefix.empty()) {
      params.Add(q.action_prefix);
      sql += " AND starts_with(action, " + params.Last() + ")";
    }
    if (!q.text.empty()) {
      params.Add(q.text);
      const std::string t = "lower(" + params.Last() + "::text)";
      sql += " AND (strpos(lower(actor), " + t + ")>0 OR strpos(lower(action), " + t +
             ")>0 OR strpos(lower(target), " + t + ")>0 OR strpos(lower(detail), " + t + ")>0)";
    }
    if (q.since > 0) {
      params.Add(q.since);
      sql += " AND at>=" + params.Last();
    }
    if (q.until > 0) {
      params.Add(q.until);
      sql += " AND at<=" + params.Last();
    }
    if (q.before_id > 0) {
      params.Add(q.before_id);
      sql += " AND id<" + params.Last();
    }
    sql += " ORDER BY id DESC LIMIT " + std::to_string(q.limit > 0 ? q.limit : 100);
    std::lock_guard lock(mu_);
    LOCKSTEP_ASSIGN_OR_RETURN(PgResult r, RunRetryingLocked("read audit", sql, params));
    std::vector<AuditRecord> out;
    for (int i = 0; i < r.rows(); ++i) out.push_back(rows::Audit(PgRow{r, i}));
    return out;
  }

  // The lease is neither fenced nor refused by a latched write error: a process that lost it
  // must still be able to read who holds it now, and a latched one to hand it over.
  // ClaimLease and ReleaseLease are single statements that give the same result when run
  // twice, so, like reads, they are run once more if the connection broke under them.
  StatusOr<LeaseRecord> ClaimLease(const LeaseClaim& claim) override {
    std::lock_guard lock(mu_);
    LOCKSTEP_ASSIGN_OR_RETURN(
        PgResult r,
        RunRetryingLocked(
            "claim the leader lease",
            std::string("INSERT INTO leader_lease (id, epoch, holder, grpc_address, http_url, "
                        "expires_at) VALUES (1, 1, $1, $2, $3, "
                        "clock_timestamp() + $4::DOUBLE PRECISION * interval '1 millisecond') "
                        "ON CONFLICT (id) DO UPDATE SET epoch = CASE "
                        "WHEN leader_lease.holder = EXCLUDED.holder THEN leader_lease.epoch "
                        "ELSE leader_lease.epoch + 1 END, "
                        "holder = EXCLUDED.holder, grpc_address = EXCLUDED.grpc_address, "
                        "http_url = EXCLUDED.http_url, expires_at = EXCLUDED.expires_at "
                        "WHERE leader_lease.holder = EXCLUDED.holder "
                        "OR leader_lease.expires_at <= clock_timestamp() RETURNING ") +
                kLeaseColumns,
            Params()
                .Add(claim.holder)
                .Add(claim.grpc_address)
                .Add(claim.http_url)
                .Add(claim.ttl_ms)));
    if (r.rows() > 0) return ReadLeaseRow(r);
    // Held by another process and not expired: the claim changed nothing.
    return ReadLeaseLocked();
  }

  StatusOr<LeaseRecord> ReadLease() override {
    std::lock_guard lock(mu_);
    return ReadLeaseLocked();
  }

  Status ReleaseLease(const std::string& holder, int64_t epoch) override {
    std::lock_guard lock(mu_);
    StatusOr<PgResult> r = RunRetryingLocked(
        "release the leader lease",
        "UPDATE leader_lease SET expires_at = clock_timestamp() - interval '1 millisecond' "
        "WHERE id = 1 AND holder=$1 AND epoch=$2",
        Params().Add(holder).Add(epoch));
    return r.ok() ? Status::Ok() : r.status();
  }

  void FenceWrites(int64_t epoch) override { fence_epoch_.store(epoch); }

 private:
  static constexpr const char* kUniqueViolation = "23505";

  StatusOr<LeaseRecord> ReadLeaseLocked() {
    LOCKSTEP_ASSIGN_OR_RETURN(PgResult r, RunRetryingLocked("read the leader lease",
                                                            std::string("SELECT ") + kLeaseColumns +
                                                                " FROM leader_lease WHERE id = 1",
                                                            Params()));
    if (r.rows() == 0) return LeaseRecord();  // never held: epoch 0
    return ReadLeaseRow(r);
  }

  // After a CreateRelease refused by the (pipeline, request_id) index: ends the transaction
  // and names the release that has the request id.
  Status DuplicateRequestLocked(const std::string& pipeline, const std::string& request_id) {
    Status duplicate(
        StatusCode::kAlreadyExists,
        "pipeline " + pipeline + " already has a release with request id " + request_id);
    if (Status st = AbandonLocked(duplicate); st.code() != StatusCode::kAlreadyExists) {
      return st;
    }
    StatusOr<PgResult> existing = RunRetryingLocked(
        "read release", "SELECT id FROM releases WHERE pipeline=$1 AND request_id=$2",
        Params().Add(pipeline).Add(request_id));
    if (!existing.ok() || existing->rows() == 0) return duplicate;
    return Status(StatusCode::kAlreadyExists, "release " + std::to_string(existing->Int(0, 0)) +
                                                  " already has request id " + request_id);
  }

  // Whether an expectation of a batch still holds: kNotFound if its release (or wave) does not
  // exist, kFailedPrecondition naming what differs. The rows read stay locked until the
  // transaction ends, so no other process changes them between this check and the commit.
  Status CheckLocked(const WriteBatch::Expect& e) {
    const std::string what = "release " + std::to_string(e.release_id);
    PgResult r =
        RunLocked("SELECT state, abort_requested_at FROM releases WHERE id=$1 FOR NO KEY UPDATE",
                  Params().Add(e.release_id));
    if (!r.ok()) return SqlErrorLocked(r, "read release");
    if (r.rows() == 0) return NotFound("no release with id " + std::to_string(e.release_id));
    if (r.Text(0, 0) != e.state) {
      return FailedPrecondition(what + " changed meanwhile: it is now " + r.Text(0, 0));
    }
    if (r.Int(0, 1) != e.abort_requested_at) {
      return FailedPrecondition(what + " changed meanwhile: an abort was requested");
    }
    if (e.wave < 0) return Status::Ok();
    PgResult w = RunLocked(
        "SELECT state, approved_at FROM release_waves WHERE release_id=$1 AND idx=$2 "
        "FOR NO KEY UPDATE",
        Params().Add(e.release_id).Add(int64_t{e.wave}));
    if (!w.ok()) return SqlErrorLocked(w, "read wave");
    if (w.rows() == 0) {
      return NotFound("no wave " + std::to_string(e.wave) + " of " + what);
    }
    if (w.Text(0, 0) != e.wave_state || w.Int(0, 1) != e.wave_approved_at) {
      return FailedPrecondition(what + " changed meanwhile: wave " + std::to_string(e.wave) +
                                " is now " + w.Text(0, 0) + (w.Int(0, 1) ? " (approved)" : ""));
    }
    return Status::Ok();
  }

  Status InsertAuditLocked(const AuditRecord& e) {
    PgResult s = RunLocked(
        "INSERT INTO audit (at, actor, action, target, detail, outcome) "
        "VALUES ($1,$2,$3,$4,$5,$6)",
        Params().Add(e.at).Add(e.actor).Add(e.action).Add(e.target).Add(e.detail).Add(e.outcome));
    if (!s.ok()) return Internal("insert audit: " + s.Error(conn_));
    return Status::Ok();
  }

  // ---------------------------------------------------------------- connection and statements

  // One statement, parameters sent as text.
  PgResult RunLocked(const std::string& sql, const Params& params) {
    std::vector<const char*> values;
    values.reserve(params.values().size());
    for (const auto& v : params.values()) values.push_back(v.c_str());
    return PgResult(PQexecParams(conn_, sql.c_str(), static_cast<int>(values.size()), nullptr,
                                 values.empty() ? nullptr : values.data(), nullptr, nullptr, 0));
  }
  PgResult RunLocked(const std::string& sql) { return RunLocked(sql, Params()); }

  // A script of several statements (a migration), no parameters.
  PgResult RunScriptLocked(const char* sql) { return PgResult(PQexec(conn_, sql)); }

  bool ConnectionLostLocked() const { return PQstatus(conn_) != CONNECTION_OK; }

  // The settings every session needs; run again after each reconnect.
  Status SetUpSessionLocked() {
    // A lockstepd frozen (SIGSTOP, a stalled VM) inside a write transaction would hold the
    // lease row's lock, and with it every standby's claim, for as long as it stays frozen:
    // PostgreSQL ends such a session instead. Lockstep's transactions never sit idle.
    for (const char* sql : {"SET client_min_messages = warning", "SET client_encoding = 'UTF8'",
                            "SET idle_in_transaction_session_timeout = '2s'"}) {
      PgResult r = RunLocked(sql);
      if (!r.ok()) return SqlErrorLocked(r, "set up the session");
    }
    return Status::Ok();
  }

  // Reconnects with the same parameters. False if the database is still out of reach.
  bool ResetLocked() {
    PQreset(conn_);
    return !ConnectionLostLocked() && SetUpSessionLocked().ok();
  }

  // Makes the connection usable at the start of a call: reconnects once if it broke, and
  // closes a transaction a failed rollback left open (the store is latched by then).
  Status ConnectLocked() {
    if (!ConnectionLostLocked()) {
      if (PQtransactionStatus(conn_) == PQTRANS_IDLE) return Status::Ok();
      RunLocked("ROLLBACK");
      if (!ConnectionLostLocked() && PQtransactionStatus(conn_) == PQTRANS_IDLE) {
        return Status::Ok();
      }
    }
    if (!ResetLocked()) {
      return Unavailable("store unavailable: " + PgResult(nullptr).Error(conn_));
    }
    return Status::Ok();
  }

  // A failed statement as a Status naming `what`: kUnavailable if the connection broke,
  // kInternal otherwise.
  Status SqlErrorLocked(const PgResult& r, const std::string& what) {
    if (ConnectionLostLocked()) {
      return Unavailable("store unavailable: " + what + ": " + r.Error(conn_));
    }
    return Internal(what + ": " + r.Error(conn_));
  }

  // Runs a statement that may safely run twice (a read, or an idempotent lease statement)
  // outside any transaction: if the connection broke under it, reconnects once and runs it
  // again.
  StatusOr<PgResult> RunRetryingLocked(const std::string& what, const std::string& sql,
                                       const Params& params) {
    LOCKSTEP_RETURN_IF_ERROR(ConnectLocked());
    PgResult r = RunLocked(sql, params);
    if (!r.ok() && ConnectionLostLocked() && ResetLocked()) r = RunLocked(sql, params);
    if (!r.ok()) return SqlErrorLocked(r, what);
    return StatusOr<PgResult>(std::move(r));
  }

  // -------------------------------------------------------------------------- transactions

  // Opens a write transaction: refuses if a write error is latched, and, if writes are
  // fenced, checks the lease and holds its row (FOR SHARE) until the transaction ends, so a
  // takeover waits for this write and this write never commits under another epoch.
  Status BeginLocked() {
    LOCKSTEP_RETURN_IF_ERROR(sticky_error_);
    LOCKSTEP_RETURN_IF_ERROR(ConnectLocked());
    PgResult begin = RunLocked("BEGIN");
    if (!begin.ok()) {
      if (ConnectionLostLocked()) return Unavailable("store unavailable: " + begin.Error(conn_));
      return Internal("store write failed, nothing changed: begin: " + begin.Error(conn_));
    }
    const int64_t fence = fence_epoch_.load();
    if (fence == 0) return Status::Ok();
    PgResult lease = RunLocked("SELECT epoch, holder FROM leader_lease WHERE id = 1 FOR SHARE");
    if (!lease.ok()) return RollbackLocked("read the leader lease: " + lease.Error(conn_));
    const int64_t epoch = lease.rows() > 0 ? lease.Int(0, 0) : 0;
    if (epoch == fence) return Status::Ok();
    const std::string holder = lease.rows() > 0 ? lease.Text(0, 1) : "";
    Status lost = FailedPrecondition(
        "lost the leader lease: it is at epoch " + std::to_string(epoch) + " (held by " +
        (holder.empty() ? std::string("no one") : holder) + "), this process held epoch " +
        std::to_string(fence) + "; refusing writes");
    Status st = AbandonLocked(lost);
    if (sticky_error_.ok()) sticky_error_ = st;
    return sticky_error_;
  }

  // Ends a transaction that must not commit after statement `why` failed: kUnavailable if the
  // connection broke (the server aborts the transaction: nothing changed), else a storage
  // failure.
  Status RollbackLocked(const std::string& why) {
    if (ConnectionLostLocked()) return AbandonLocked(Unavailable("store unavailable: " + why));
    return AbandonLocked(Internal("store write failed, nothing changed: " + why));
  }

  // Rolls back the open transaction and returns `refusal`. If the ROLLBACK itself fails on a
  // live connection the transaction's state is unknown, so the store latches that failure
  // instead (the same as a failed commit) rather than carry on inside a half-open
  // transaction. A connection that is gone needs no rollback: the server has aborted it.
  Status AbandonLocked(Status refusal) {
    if (ConnectionLostLocked()) return refusal;
    PgResult rb = RunLocked("ROLLBACK");
    if (!rb.ok() && !ConnectionLostLocked()) {
      sticky_error_ = Internal("postgres: " + rb.Error(conn_))
                          .WithContext("store rollback failed after \"" + refusal.message() +
                                       "\"; refusing writes until restart");
      return sticky_error_;
    }
    return refusal;
  }

  Status CommitLocked() {
    PgResult r = RunLocked("COMMIT");
    if (r.ok()) {
      if (r.Command() == "COMMIT") return Status::Ok();
      // The server ended the transaction with a rollback (it had failed): nothing changed.
      return Internal("store write failed, nothing changed: the transaction was rolled back");
    }
    if (!ConnectionLostLocked() && PQtransactionStatus(conn_) == PQTRANS_IDLE) {
      // The server answered: a COMMIT that fails rolls the transaction back.
      return Internal("store write failed, nothing changed: commit: " + r.Error(conn_));
    }
    // No answer: the commit may or may not have happened. Latch, do not guess.
    sticky_error_ = Internal("postgres: " + r.Error(conn_))
                        .WithContext("store commit failed; refusing writes until restart");
    return sticky_error_;
  }

  // -------------------------------------------------------------------------------- schema

  Status MigrateLocked() {
    const std::string key = std::to_string(kMigrationLockKey);
    PgResult lock = RunLocked("SELECT pg_advisory_lock(" + key + ")");
    if (!lock.ok()) return SqlErrorLocked(lock, "lock the schema for migration");
    Status st = MigrateHoldingLockLocked();
    PgResult unlock = RunLocked("SELECT pg_advisory_unlock(" + key + ")");
    if (st.ok() && !unlock.ok()) return SqlErrorLocked(unlock, "unlock the schema");
    return st;
  }

  Status MigrateHoldingLockLocked() {
    PgResult create =
        RunLocked("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)");
    if (!create.ok()) return SqlErrorLocked(create, "create schema_version");
    PgResult v = RunLocked("SELECT COALESCE(MAX(version), 0) FROM schema_version");
    if (!v.ok() || v.rows() == 0) return SqlErrorLocked(v, "read schema version");
    const int current = static_cast<int>(v.Int(0, 0));
    const int latest = PostgresSchemaVersion();
    if (current > latest) {
      return FailedPrecondition("store schema version " + std::to_string(current) +
                                " is newer than this lockstepd understands (" +
                                std::to_string(latest) + "); upgrade lockstepd");
    }
    for (const auto& m : PostgresMigrations()) {
      if (m.version <= current) continue;
      if (Status st = ApplyMigrationLocked(m); !st.ok()) {
        // Migrations run before the store serves anything; a failed one ends the open.
        if (!ConnectionLostLocked() && PQtransactionStatus(conn_) != PQTRANS_IDLE) {
          PgResult rb = RunLocked("ROLLBACK");
          if (!rb.ok()) st = SqlErrorLocked(rb, "rollback").WithContext(st.message());
        }
        return st.WithContext("migration " + std::to_string(m.version));
      }
    }
    return Status::Ok();
  }

  Status ApplyMigrationLocked(const Migration& m) {
    PgResult begin = RunLocked("BEGIN");
    if (!begin.ok()) return SqlErrorLocked(begin, "begin");
    PgResult script = RunScriptLocked(m.sql);
    if (!script.ok()) return SqlErrorLocked(script, "apply");
    PgResult clear = RunLocked("DELETE FROM schema_version");
    if (!clear.ok()) return SqlErrorLocked(clear, "record schema version");
    PgResult bump = RunLocked("INSERT INTO schema_version (version) VALUES ($1)",
                              Params().Add(int64_t{m.version}));
    if (!bump.ok()) return SqlErrorLocked(bump, "record schema version");
    PgResult commit = RunLocked("COMMIT");
    if (!commit.ok() || commit.Command() != "COMMIT") return SqlErrorLocked(commit, "commit");
    return Status::Ok();
  }

  std::mutex mu_;
  PGconn* conn_;                         // guarded by mu_
  Status sticky_error_;                  // guarded by mu_
  std::atomic<int64_t> fence_epoch_{0};  // FenceWrites; 0: not fenced
};

}  // namespace

int PostgresSchemaVersion() { return PostgresMigrations().back().version; }

StatusOr<std::unique_ptr<Store>> OpenPostgresStore(const std::string& conninfo) {
  // The connection string may hold a password: no message here repeats it.
  PGconn* conn = PQconnectdb(conninfo.c_str());
  if (conn == nullptr) return Unavailable("cannot connect to the PostgreSQL store: out of memory");
  if (PQstatus(conn) != CONNECTION_OK) {
    std::string msg = PgResult(nullptr).Error(conn);
    PQfinish(conn);
    return Unavailable("cannot connect to the PostgreSQL store: " + msg);
  }
  auto store = std::make_unique<PostgresStore>(conn);
  if (Status st = store->Init(); !st.ok()) return st.WithContext("PostgreSQL store");
  return std::unique_ptr<Store>(std::move(store));
}

}  // namespace lockstep
