// Rows: what the SQL backends (sqlite_store.cc, postgres_store.cc) select and how they turn a
// result row into a record, written once. Both schemas name and order these columns alike.
//
// A Row is anything with Int(col), Text(col) and Double(col), columns counted from 0: SQLite's
// statement, or PostgreSQL's result at one row.
#pragma once

#include <sstream>
#include <string>
#include <vector>

#include "orchestrator/store/model.h"

namespace lockstep::rows {

// versions_on_disk is stored as one comma-separated column.
inline std::string JoinVersions(const std::vector<std::string>& v) {
  std::string out;
  for (const auto& s : v) {
    if (!out.empty()) out += ',';
    out += s;
  }
  return out;
}

inline std::vector<std::string> SplitVersions(const std::string& s) {
  std::vector<std::string> out;
  std::stringstream ss(s);
  std::string item;
  while (std::getline(ss, item, ',')) {
    if (!item.empty()) out.push_back(item);
  }
  return out;
}

inline constexpr const char* kRelease =
    "id, pipeline, version, artifact_url, sha256, commit_sha, author, state, reason, "
    "current_wave, previous_version, created_at, started_at, finished_at, kind, "
    "previous_release_id, abort_requested_by, abort_requested_at, commit_at, request_id, "
    "created_by";

template <typename Row>
ReleaseRecord Release(const Row& s) {
  ReleaseRecord r;
  r.id = s.Int(0);
  r.pipeline = s.Text(1);
  r.version = s.Text(2);
  r.artifact_url = s.Text(3);
  r.sha256 = s.Text(4);
  r.commit = s.Text(5);
  r.author = s.Text(6);
  r.state = s.Text(7);
  r.reason = s.Text(8);
  r.current_wave = static_cast<int>(s.Int(9));
  r.previous_version = s.Text(10);
  r.created_at = s.Int(11);
  r.started_at = s.Int(12);
  r.finished_at = s.Int(13);
  r.kind = s.Text(14);
  r.previous_release_id = s.Int(15);
  r.abort_requested_by = s.Text(16);
  r.abort_requested_at = s.Int(17);
  r.commit_at = s.Int(18);
  r.request_id = s.Text(19);
  r.created_by = s.Text(20);
  return r;
}

inline constexpr const char* kToken =
    "name, role, region, hash, created_at, created_by, expires_at, last_used_at, revoked_at, "
    "revoked_by";

template <typename Row>
TokenRecord Token(const Row& s) {
  TokenRecord t;
  t.name = s.Text(0);
  t.role = s.Text(1);
  t.region = s.Text(2);
  t.hash = s.Text(3);
  t.created_at = s.Int(4);
  t.created_by = s.Text(5);
  t.expires_at = s.Int(6);
  t.last_used_at = s.Int(7);
  t.revoked_at = s.Int(8);
  t.revoked_by = s.Text(9);
  return t;
}

inline constexpr const char* kAgent =
    "name, region, pipeline, current_version, versions_on_disk, connected, first_seen, "
    "last_seen, agent_version";

template <typename Row>
AgentRecord Agent(const Row& s) {
  AgentRecord a;
  a.name = s.Text(0);
  a.region = s.Text(1);
  a.pipeline = s.Text(2);
  a.current_version = s.Text(3);
  a.versions_on_disk = SplitVersions(s.Text(4));
  a.connected = s.Int(5) != 0;
  a.first_seen = s.Int(6);
  a.last_seen = s.Int(7);
  a.agent_version = s.Text(8);
  return a;
}

inline constexpr const char* kWave =
    "release_id, idx, name, state, started_at, bake_started_at, finished_at, first_switch_at, "
    "last_switch_at, approval_requested_at, approved_by, approved_at";

template <typename Row>
WaveRecord Wave(const Row& s) {
  WaveRecord w;
  w.release_id = s.Int(0);
  w.index = static_cast<int>(s.Int(1));
  w.name = s.Text(2);
  w.state = s.Text(3);
  w.started_at = s.Int(4);
  w.bake_started_at = s.Int(5);
  w.finished_at = s.Int(6);
  w.first_switch_at = s.Int(7);
  w.last_switch_at = s.Int(8);
  w.approval_requested_at = s.Int(9);
  w.approved_by = s.Text(10);
  w.approved_at = s.Int(11);
  return w;
}

inline constexpr const char* kHost =
    "release_id, agent, region, wave, state, task_id, detail, started_at, task_sent_at, "
    "finished_at, from_version, step, attempt, switch_sent, output_tail, failure";

template <typename Row>
HostRecord Host(const Row& s) {
  HostRecord h;
  h.release_id = s.Int(0);
  h.agent = s.Text(1);
  h.region = s.Text(2);
  h.wave = static_cast<int>(s.Int(3));
  h.state = s.Text(4);
  h.task_id = s.Text(5);
  h.detail = s.Text(6);
  h.started_at = s.Int(7);
  h.task_sent_at = s.Int(8);
  h.finished_at = s.Int(9);
  h.from_version = s.Text(10);
  h.step = s.Text(11);
  h.attempt = static_cast<int>(s.Int(12));
  h.switch_sent = s.Int(13) != 0;
  h.output_tail = s.Text(14);
  h.failure = s.Text(15);
  return h;
}

inline constexpr const char* kBringup =
    "release_id, region, state, wave, started_at, wave_started_at, bake_started_at, "
    "finished_at, reason";

template <typename Row>
BringupRecord Bringup(const Row& s) {
  BringupRecord b;
  b.release_id = s.Int(0);
  b.region = s.Text(1);
  b.state = s.Text(2);
  b.wave = static_cast<int>(s.Int(3));
  b.started_at = s.Int(4);
  b.wave_started_at = s.Int(5);
  b.bake_started_at = s.Int(6);
  b.finished_at = s.Int(7);
  b.reason = s.Text(8);
  return b;
}

inline constexpr const char* kGateResult =
    "release_id, wave, gate, region, at, verdict, value, detail, evaluated_at";

template <typename Row>
GateResult Gate(const Row& s) {
  GateResult g;
  g.release_id = s.Int(0);
  g.wave = static_cast<int>(s.Int(1));
  g.gate = s.Text(2);
  g.region = s.Text(3);
  g.at = s.Int(4);
  g.verdict = s.Text(5);
  g.value = s.Double(6);
  g.detail = s.Text(7);
  g.evaluated_at = s.Int(8);
  return g;
}

inline constexpr const char* kAudit = "id, at, actor, action, target, detail, outcome";

template <typename Row>
AuditRecord Audit(const Row& s) {
  AuditRecord a;
  a.id = s.Int(0);
  a.at = s.Int(1);
  a.actor = s.Text(2);
  a.action = s.Text(3);
  a.target = s.Text(4);
  a.detail = s.Text(5);
  a.outcome = s.Text(6);
  return a;
}

inline constexpr const char* kOutbox =
    "id, created_at, pipeline, event, url, payload, attempts, next_attempt_at, done_at, outcome";

template <typename Row>
OutboxRecord Outbox(const Row& s) {
  OutboxRecord o;
  o.id = s.Int(0);
  o.created_at = s.Int(1);
  o.pipeline = s.Text(2);
  o.event = s.Text(3);
  o.url = s.Text(4);
  o.payload = s.Text(5);
  o.attempts = static_cast<int>(s.Int(6));
  o.next_attempt_at = s.Int(7);
  o.done_at = s.Int(8);
  o.outcome = s.Text(9);
  return o;
}

}  // namespace lockstep::rows
