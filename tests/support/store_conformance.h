// StoreConformance: what every Store backend must do, written once as a GoogleTest
// type-parameterized suite, so that SQLite and any later backend (PostgreSQL) are held to the
// same contract: the one stated in orchestrator/store/store.h and model.h, plus the history
// rules of orchestrator/engine/history.h run over the backend's FindReleases.
//
// The type parameter is a backend factory: a type with
//
//   static std::unique_ptr<lockstep::Store> Make();
//
// Make is called once per test, in SetUp, before the test body. It returns a store that is
//   - empty: no releases, waves, hosts, gate results, agents, pipeline switches, audit
//     entries, tokens or host credentials;
//   - migrated: its schema is the one this build writes, every method usable at once;
//   - private to the test: no other test, thread or process reads or writes it while the test
//     runs, so everything the test reads back is what it wrote;
//   - owned by the caller: destroying the returned object (at the end of the test) releases
//     everything it holds: connections, files, a scratch database or directory.
// If it cannot make one, Make records why (ADD_FAILURE() << ...) and returns nullptr; the test
// then stops in SetUp.
//
// Using it: include this header in the .cc of the test binary that instantiates the suite (it
// defines the tests and registers them with REGISTER_TYPED_TEST_SUITE_P), link gmock and
// lockstep_engine (history.h), and instantiate it inside namespace lockstep::store_conformance,
// where the suite lives:
//
//   namespace lockstep::store_conformance {
//   INSTANTIATE_TYPED_TEST_SUITE_P(Postgres, StoreConformance, ::testing::Types<PgFactory>);
//   }
//
// What the tests rely on: the written contract, and three behaviours lockstepd relies on that
// store.h does not state yet, each marked "Not stated in store.h" where it is tested. Ids are
// compared with each other, never with constants; timestamps are fixed values, never the clock;
// nothing sleeps. Three tests call the store from several threads at once (the contract says any
// thread may call any method). Tests of one backend's own mechanics (migrating old files, WAL, a
// failing disk) do not belong here: they stay with that backend's own tests
// (tests/unit/store_test.cc for SQLite).
#pragma once

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cctype>
#include <cstdint>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "common/status.h"
#include "orchestrator/engine/history.h"
#include "orchestrator/store/model.h"
#include "orchestrator/store/store.h"

namespace lockstep::store_conformance {

// ---------------------------------------------------------------------------- building blocks

// The value of `got`, or a recorded failure naming `what` and a default value.
template <typename T>
T Must(StatusOr<T> got, const std::string& what) {
  if (!got.ok()) {
    ADD_FAILURE() << what << ": " << got.status().ToString();
    return T();
  }
  return std::move(got).value();
}

inline AuditRecord Entry(const std::string& action, UnixMs at) {
  AuditRecord a;
  a.at = at;
  a.actor = "conformance";
  a.action = action;
  return a;
}

// An audit entry with every searched field chosen; the tests give each its own detail.
inline AuditRecord Logged(const std::string& actor, const std::string& action,
                          const std::string& target, const std::string& detail, UnixMs at) {
  AuditRecord a;
  a.at = at;
  a.actor = actor;
  a.action = action;
  a.target = target;
  a.detail = detail;
  return a;
}

inline ReleaseRecord NewRelease(const std::string& pipeline, const std::string& version) {
  ReleaseRecord r;
  r.pipeline = pipeline;
  r.version = version;
  r.artifact_url = "https://artifacts.example/" + pipeline + "/" + version + ".tar.gz";
  r.sha256 = std::string(64, 'a');
  r.created_at = 1000;
  return r;
}

inline WaveRecord NewWave(int64_t release_id, int index, const std::string& name,
                          const std::string& state) {
  WaveRecord w;
  w.release_id = release_id;
  w.index = index;
  w.name = name;
  w.state = state;
  return w;
}

// Wave 0 of a release, baked and waiting for an operator.
inline WaveRecord AwaitingApproval(int64_t release_id) {
  WaveRecord w = NewWave(release_id, 0, "canary", wave_state::kAwaitingApproval);
  w.started_at = 2001;
  w.bake_started_at = 2002;
  w.first_switch_at = 2003;
  w.last_switch_at = 2004;
  w.approval_requested_at = 2005;
  return w;
}

inline HostRecord NewHost(int64_t release_id, const std::string& agent, const std::string& region,
                          int wave) {
  HostRecord h;
  h.release_id = release_id;
  h.agent = agent;
  h.region = region;
  h.wave = wave;
  return h;
}

inline BringupRecord NewTrack(int64_t release_id, const std::string& region,
                              const std::string& state) {
  BringupRecord t;
  t.release_id = release_id;
  t.region = region;
  t.state = state;
  return t;
}

// Exactly `bytes` bytes of valid UTF-8: hook output with accents, CJK, an emoji, quotes,
// backslashes, tabs and newlines, padded with ASCII.
inline std::string Utf8Text(size_t bytes) {
  const std::string line =
      "d\xc3\xa9marrage \xe2\x9c\x93 \xe6\x97\xa5\xe6\x9c\xac\xe8\xaa\x9e \"quoted\" "
      "back\\slash\ttab \xf0\x9f\x99\x82\n";
  std::string out;
  while (out.size() + line.size() <= bytes) out += line;
  out.append(bytes - out.size(), 'x');
  return out;
}

inline AgentRecord NewAgent(const std::string& name, const std::string& region) {
  AgentRecord a;
  a.name = name;
  a.region = region;
  a.pipeline = "web";
  a.current_version = "v1";
  a.versions_on_disk = {"v0", "v1"};
  a.connected = true;
  a.first_seen = 100;
  a.last_seen = 200;
  a.agent_version = "0.9.0 (abc123)";
  return a;
}

inline GateResult NewGate(int64_t release_id, const std::string& gate, const std::string& region,
                          const std::string& verdict, double value) {
  GateResult g;
  g.release_id = release_id;
  g.wave = 0;
  g.gate = gate;
  g.region = region;
  g.at = 3000;
  g.evaluated_at = 2990;
  g.verdict = verdict;
  g.value = value;
  g.detail = gate + " in " + region;
  return g;
}

inline TokenRecord NewToken(const std::string& name, const std::string& hash) {
  TokenRecord t;
  t.name = name;
  t.role = "deployer";
  t.hash = hash;
  t.created_at = 100;
  t.created_by = "admin";
  return t;
}

inline HostCredentialRecord NewCredential(const std::string& name, const std::string& hash) {
  HostCredentialRecord c;
  c.name = name;
  c.region = "eu-west-1";
  c.hash = hash;
  c.created_at = 100;
  c.enrolled_with = "eu-enrollment";
  return c;
}

// That release still holds what `r` says (state, no abort request unless `r` has one).
inline WriteBatch::Expect Unchanged(const ReleaseRecord& r) {
  WriteBatch::Expect e;
  e.release_id = r.id;
  e.state = r.state;
  e.abort_requested_at = r.abort_requested_at;
  return e;
}

// That release and that wave of it still hold what `r` and `w` say.
inline WriteBatch::Expect Unchanged(const ReleaseRecord& r, const WaveRecord& w) {
  WriteBatch::Expect e = Unchanged(r);
  e.wave = w.index;
  e.wave_state = w.state;
  e.wave_approved_at = w.approved_at;
  return e;
}

inline WriteBatch::AbortRequest AbortBy(int64_t release_id, const std::string& by, UnixMs at) {
  WriteBatch::AbortRequest a;
  a.release_id = release_id;
  a.by = by;
  a.at = at;
  return a;
}

inline WriteBatch::Approval ApprovalBy(int64_t release_id, int wave, const std::string& by,
                                       UnixMs at) {
  WriteBatch::Approval a;
  a.release_id = release_id;
  a.wave = wave;
  a.by = by;
  a.at = at;
  return a;
}

inline WriteBatch::Hold HoldBy(const std::string& pipeline, const std::string& by, UnixMs at) {
  WriteBatch::Hold h;
  h.pipeline = pipeline;
  h.by = by;
  h.at = at;
  return h;
}

inline PipelineState Frozen(const std::string& pipeline) {
  PipelineState p;
  p.pipeline = pipeline;
  p.frozen = true;
  p.frozen_by = "dave";
  p.freeze_reason = "incident 42";
  p.frozen_at = 600;
  return p;
}

// One entry of every kind a batch carries, all about release `r` (which has wave 0): what a
// refused batch must not write. Pipelines "held" and "switched" are touched only by it.
inline WriteBatch EverythingAbout(const ReleaseRecord& r) {
  WriteBatch b;
  ReleaseRecord finished = r;
  finished.state = release_state::kSucceeded;
  finished.reason = "every wave done";
  finished.finished_at = 9000;
  b.releases.push_back(finished);
  b.waves.push_back(NewWave(r.id, 1, "everyone", wave_state::kDeploying));
  b.hosts.push_back(NewHost(r.id, "web-9", "eu-west-1", 1));
  b.agents.push_back(NewAgent("web-9", "eu-west-1"));
  b.audit.push_back(Entry("release.note", 9001));
  b.gate_results.push_back(NewGate(r.id, "errors", "eu-west-1", "pass", 0.5));
  b.holds.push_back(HoldBy("held", "engine", 9002));
  b.abort_requests.push_back(AbortBy(r.id, "bob", 9003));
  b.approvals.push_back(ApprovalBy(r.id, 0, "carol", 9004));
  b.pipeline_states.push_back(Frozen("switched"));
  return b;
}

inline std::vector<int64_t> IdsOf(const std::vector<ReleaseRecord>& releases) {
  std::vector<int64_t> ids;
  for (const auto& r : releases) ids.push_back(r.id);
  return ids;
}

inline std::optional<int64_t> IdOf(const std::optional<ReleaseRecord>& r) {
  if (!r.has_value()) return std::nullopt;
  return r->id;
}

// ------------------------------------------------------------------------ field comparisons

inline void ExpectSameRelease(const ReleaseRecord& want, const ReleaseRecord& got) {
  EXPECT_EQ(got.id, want.id);
  EXPECT_EQ(got.pipeline, want.pipeline);
  EXPECT_EQ(got.version, want.version);
  EXPECT_EQ(got.artifact_url, want.artifact_url);
  EXPECT_EQ(got.sha256, want.sha256);
  EXPECT_EQ(got.commit, want.commit);
  EXPECT_EQ(got.author, want.author);
  EXPECT_EQ(got.commit_at, want.commit_at);
  EXPECT_EQ(got.state, want.state);
  EXPECT_EQ(got.reason, want.reason);
  EXPECT_EQ(got.current_wave, want.current_wave);
  EXPECT_EQ(got.previous_version, want.previous_version);
  EXPECT_EQ(got.created_at, want.created_at);
  EXPECT_EQ(got.started_at, want.started_at);
  EXPECT_EQ(got.finished_at, want.finished_at);
  EXPECT_EQ(got.kind, want.kind);
  EXPECT_EQ(got.previous_release_id, want.previous_release_id);
  EXPECT_EQ(got.abort_requested_by, want.abort_requested_by);
  EXPECT_EQ(got.abort_requested_at, want.abort_requested_at);
  EXPECT_EQ(got.created_by, want.created_by);
}

inline void ExpectSameWave(const WaveRecord& want, const WaveRecord& got) {
  EXPECT_EQ(got.release_id, want.release_id);
  EXPECT_EQ(got.index, want.index);
  EXPECT_EQ(got.name, want.name);
  EXPECT_EQ(got.state, want.state);
  EXPECT_EQ(got.started_at, want.started_at);
  EXPECT_EQ(got.bake_started_at, want.bake_started_at);
  EXPECT_EQ(got.finished_at, want.finished_at);
  EXPECT_EQ(got.first_switch_at, want.first_switch_at);
  EXPECT_EQ(got.last_switch_at, want.last_switch_at);
  EXPECT_EQ(got.approval_requested_at, want.approval_requested_at);
  EXPECT_EQ(got.approved_by, want.approved_by);
  EXPECT_EQ(got.approved_at, want.approved_at);
}

inline void ExpectSameHost(const HostRecord& want, const HostRecord& got) {
  EXPECT_EQ(got.release_id, want.release_id);
  EXPECT_EQ(got.agent, want.agent);
  EXPECT_EQ(got.region, want.region);
  EXPECT_EQ(got.wave, want.wave);
  EXPECT_EQ(got.state, want.state);
  EXPECT_EQ(got.task_id, want.task_id);
  EXPECT_EQ(got.detail, want.detail);
  EXPECT_EQ(got.started_at, want.started_at);
  EXPECT_EQ(got.task_sent_at, want.task_sent_at);
  EXPECT_EQ(got.finished_at, want.finished_at);
  EXPECT_EQ(got.from_version, want.from_version);
  EXPECT_EQ(got.step, want.step);
  EXPECT_EQ(got.attempt, want.attempt);
  EXPECT_EQ(got.switch_sent, want.switch_sent);
  EXPECT_EQ(got.output_tail, want.output_tail);
  EXPECT_EQ(got.failure, want.failure);
}

inline void ExpectSameTrack(const BringupRecord& want, const BringupRecord& got) {
  EXPECT_EQ(got.release_id, want.release_id);
  EXPECT_EQ(got.region, want.region);
  EXPECT_EQ(got.state, want.state);
  EXPECT_EQ(got.wave, want.wave);
  EXPECT_EQ(got.started_at, want.started_at);
  EXPECT_EQ(got.wave_started_at, want.wave_started_at);
  EXPECT_EQ(got.bake_started_at, want.bake_started_at);
  EXPECT_EQ(got.finished_at, want.finished_at);
  EXPECT_EQ(got.reason, want.reason);
}

inline void ExpectSameGateResult(const GateResult& want, const GateResult& got) {
  EXPECT_EQ(got.release_id, want.release_id);
  EXPECT_EQ(got.wave, want.wave);
  EXPECT_EQ(got.gate, want.gate);
  EXPECT_EQ(got.region, want.region);
  EXPECT_EQ(got.at, want.at);
  EXPECT_EQ(got.evaluated_at, want.evaluated_at);
  EXPECT_EQ(got.verdict, want.verdict);
  EXPECT_DOUBLE_EQ(got.value, want.value);
  EXPECT_EQ(got.detail, want.detail);
}

inline void ExpectSameAgent(const AgentRecord& want, const AgentRecord& got) {
  EXPECT_EQ(got.name, want.name);
  EXPECT_EQ(got.region, want.region);
  EXPECT_EQ(got.pipeline, want.pipeline);
  EXPECT_EQ(got.current_version, want.current_version);
  EXPECT_EQ(got.versions_on_disk, want.versions_on_disk);
  EXPECT_EQ(got.connected, want.connected);
  EXPECT_EQ(got.first_seen, want.first_seen);
  EXPECT_EQ(got.last_seen, want.last_seen);
  EXPECT_EQ(got.agent_version, want.agent_version);
}

inline void ExpectSamePipelineState(const PipelineState& want, const PipelineState& got) {
  EXPECT_EQ(got.pipeline, want.pipeline);
  EXPECT_EQ(got.paused, want.paused);
  EXPECT_EQ(got.paused_by, want.paused_by);
  EXPECT_EQ(got.paused_at, want.paused_at);
  EXPECT_EQ(got.frozen, want.frozen);
  EXPECT_EQ(got.frozen_by, want.frozen_by);
  EXPECT_EQ(got.freeze_reason, want.freeze_reason);
  EXPECT_EQ(got.frozen_at, want.frozen_at);
}

// The stored audit id is the store's; every other field must come back as written.
inline void ExpectSameAudit(const AuditRecord& want, const AuditRecord& got) {
  EXPECT_EQ(got.at, want.at);
  EXPECT_EQ(got.actor, want.actor);
  EXPECT_EQ(got.action, want.action);
  EXPECT_EQ(got.target, want.target);
  EXPECT_EQ(got.detail, want.detail);
  EXPECT_EQ(got.outcome, want.outcome);
}

inline void ExpectSameToken(const TokenRecord& want, const TokenRecord& got) {
  EXPECT_EQ(got.name, want.name);
  EXPECT_EQ(got.role, want.role);
  EXPECT_EQ(got.region, want.region);
  EXPECT_EQ(got.hash, want.hash);
  EXPECT_EQ(got.created_at, want.created_at);
  EXPECT_EQ(got.created_by, want.created_by);
  EXPECT_EQ(got.expires_at, want.expires_at);
  EXPECT_EQ(got.last_used_at, want.last_used_at);
  EXPECT_EQ(got.revoked_at, want.revoked_at);
  EXPECT_EQ(got.revoked_by, want.revoked_by);
}

inline void ExpectSameCredential(const HostCredentialRecord& want,
                                 const HostCredentialRecord& got) {
  EXPECT_EQ(got.name, want.name);
  EXPECT_EQ(got.region, want.region);
  EXPECT_EQ(got.hash, want.hash);
  EXPECT_EQ(got.created_at, want.created_at);
  EXPECT_EQ(got.enrolled_with, want.enrolled_with);
}

// ----------------------------------------------------------------------------------- fixture

template <typename Factory>
class StoreConformance : public ::testing::Test {
 protected:
  // The six releases the query tests search, in the order they are created.
  struct Catalog {
    ReleaseRecord web_v1;           // web v1, succeeded rollout, commit c1
    ReleaseRecord api_v1;           // api v1, succeeded rollout, commit c1
    ReleaseRecord web_v2_failed;    // web v2, failed rollout, commit c2
    ReleaseRecord web_v1_rollback;  // web v1, succeeded rollback, commit c1
    ReleaseRecord web_v3_queued;    // web v3, queued rollout, commit c3
    ReleaseRecord api_v3_rolling;   // api v3, rolling rollout, commit c3
    std::vector<int64_t> NewestFirst() const {
      return {api_v3_rolling.id, web_v3_queued.id, web_v1_rollback.id,
              web_v2_failed.id,  api_v1.id,        web_v1.id};
    }
  };

  // What a refused batch must leave as it was.
  struct Snapshot {
    ReleaseRecord release;
    std::vector<WaveRecord> waves;
    size_t hosts = 0;
    size_t gate_results = 0;
    size_t agents = 0;
    size_t audit = 0;
    size_t releases = 0;
    std::vector<PipelineState> switches;
  };

  void SetUp() override {
    store_ = Factory::Make();
    ASSERT_TRUE(store_ != nullptr) << "the backend factory made no store";
  }

  Store& store() { return *store_; }

  // Creates a release as the engine does (queued, target left to the store), then, if
  // `state` is another, moves it there with an engine upsert. Returns it as stored.
  ReleaseRecord Create(const std::string& pipeline, const std::string& version,
                       const std::string& state = release_state::kQueued,
                       const std::string& kind = release_kind::kRollout,
                       const std::string& commit = "") {
    ReleaseRecord wanted = NewRelease(pipeline, version);
    wanted.kind = kind;
    wanted.commit = commit;
    return CreateAs(wanted, state);
  }

  // The same for a release whose every field the caller chose (`audit` is its entry).
  ReleaseRecord CreateAs(const ReleaseRecord& wanted, const std::string& state,
                         const AuditRecord& audit = Entry("release.create", 1)) {
    auto created = store_->CreateRelease(wanted, audit);
    if (!created.ok()) {
      ADD_FAILURE() << "CreateRelease " << wanted.pipeline << " " << wanted.version << ": "
                    << created.status().ToString();
      return wanted;
    }
    ReleaseRecord r = *created;
    if (r.state != state) {
      r.state = state;
      WriteBatch b;
      b.releases.push_back(r);
      Status st = store_->Write(b);
      EXPECT_TRUE(st.ok()) << "moving release " << r.id << " to " << state << ": " << st.ToString();
    }
    return r;
  }

  Catalog MakeCatalog() {
    Catalog c;
    c.web_v1 = Create("web", "v1", release_state::kSucceeded, release_kind::kRollout, "c1");
    c.api_v1 = Create("api", "v1", release_state::kSucceeded, release_kind::kRollout, "c1");
    c.web_v2_failed = Create("web", "v2", release_state::kFailed, release_kind::kRollout, "c2");
    c.web_v1_rollback =
        Create("web", "v1", release_state::kSucceeded, release_kind::kRollback, "c1");
    c.web_v3_queued = Create("web", "v3", release_state::kQueued, release_kind::kRollout, "c3");
    c.api_v3_rolling = Create("api", "v3", release_state::kRolling, release_kind::kRollout, "c3");
    return c;
  }

  // A release of "web" rolling in wave 0, which awaits approval.
  ReleaseRecord RollingAwaitingApproval() {
    ReleaseRecord r = Create("web", "v1");
    r.state = release_state::kRolling;
    r.current_wave = 0;
    r.started_at = 2000;
    r.previous_version = "v0";
    WriteBatch b;
    b.releases.push_back(r);
    b.waves.push_back(AwaitingApproval(r.id));
    Commit(b);
    return r;
  }

  void Commit(const WriteBatch& b) {
    Status st = store_->Write(b);
    EXPECT_TRUE(st.ok()) << st.ToString();
  }

  ReleaseRecord Reread(int64_t id) {
    return Must(store_->GetRelease(id), "GetRelease(" + std::to_string(id) + ")");
  }

  std::vector<int64_t> Ids(const ReleaseQuery& q) {
    return IdsOf(Must(store_->FindReleases(q), "FindReleases"));
  }

  std::vector<AuditRecord> AuditLog() { return Must(store_->Audit(1000), "Audit(1000)"); }

  std::vector<AuditRecord> FindAudit(const AuditQuery& q) {
    return Must(store_->FindAudit(q), "FindAudit");
  }

  // The details of the entries `q` finds, in the order found.
  std::vector<std::string> Found(const AuditQuery& q) {
    std::vector<std::string> details;
    for (const auto& e : FindAudit(q)) details.push_back(e.detail);
    return details;
  }

  // Appends `entries` in one batch.
  void Append(const std::vector<AuditRecord>& entries) {
    WriteBatch b;
    b.audit = entries;
    Commit(b);
  }

  // The id the store gave the entry with `detail` (0 and a failure if there is none).
  int64_t AuditIdOf(const std::string& detail) {
    for (const auto& e : AuditLog()) {
      if (e.detail == detail) return e.id;
    }
    ADD_FAILURE() << "no audit entry with detail " << detail;
    return 0;
  }

  Snapshot Take(int64_t release_id) {
    Snapshot s;
    s.release = Reread(release_id);
    s.waves = Must(store_->Waves(release_id), "Waves");
    s.hosts = Must(store_->Hosts(release_id), "Hosts").size();
    s.gate_results = Must(store_->GateResults(release_id), "GateResults").size();
    s.agents = Must(store_->Agents(), "Agents").size();
    s.audit = AuditLog().size();
    ReleaseQuery all;
    all.limit = 0;
    s.releases = Ids(all).size();
    for (const char* pipeline : {"web", "held", "switched"}) {
      s.switches.push_back(Must(store_->GetPipelineState(pipeline), "GetPipelineState"));
    }
    return s;
  }

  void ExpectSameSnapshot(const Snapshot& want, const Snapshot& got) {
    ExpectSameRelease(want.release, got.release);
    ASSERT_EQ(got.waves.size(), want.waves.size());
    for (size_t i = 0; i < want.waves.size(); ++i) ExpectSameWave(want.waves[i], got.waves[i]);
    EXPECT_EQ(got.hosts, want.hosts);
    EXPECT_EQ(got.gate_results, want.gate_results);
    EXPECT_EQ(got.agents, want.agents);
    EXPECT_EQ(got.audit, want.audit);
    EXPECT_EQ(got.releases, want.releases);
    ASSERT_EQ(got.switches.size(), want.switches.size());
    for (size_t i = 0; i < want.switches.size(); ++i) {
      ExpectSamePipelineState(want.switches[i], got.switches[i]);
    }
  }

  // After a refusal the store carries on: it accepts a batch and a new release.
  void ExpectWritable() {
    WriteBatch b;
    b.audit.push_back(Entry("conformance.still-writable", 424242));
    Status st = store_->Write(b);
    EXPECT_TRUE(st.ok()) << "a good write after a refused one: " << st.ToString();
    auto last = Must(store_->Audit(1), "Audit(1)");
    ASSERT_EQ(last.size(), 1u);
    EXPECT_EQ(last[0].action, "conformance.still-writable");
    auto created =
        store_->CreateRelease(NewRelease("still-writable", "v1"), Entry("release.create", 424243));
    EXPECT_TRUE(created.ok()) << "a release after a refused write: " << created.status().ToString();
  }

  // Writes `b`, which must be refused with `code` by a message naming `named`, leaving
  // release `subject` and everything around it as it was; then the store still writes.
  void ExpectRefused(const WriteBatch& b, StatusCode code, int64_t subject, int64_t named) {
    const Snapshot before = Take(subject);
    Status st = store_->Write(b);
    EXPECT_EQ(st.code(), code) << st.ToString();
    EXPECT_NE(st.message().find(std::to_string(named)), std::string::npos)
        << "the refusal should name release " << named << ": " << st.ToString();
    ExpectSameSnapshot(before, Take(subject));
    ExpectWritable();
  }

  std::unique_ptr<Store> store_;
};

TYPED_TEST_SUITE_P(StoreConformance);

using ::testing::ElementsAre;
using ::testing::IsEmpty;

// ---------------------------------------------------------------------------------- releases

TYPED_TEST_P(StoreConformance, AFreshStoreIsEmpty) {
  ReleaseQuery all;
  all.limit = 0;
  EXPECT_THAT(this->Ids(all), IsEmpty());
  EXPECT_THAT(Must(this->store().Agents(), "Agents"), IsEmpty());
  EXPECT_THAT(this->AuditLog(), IsEmpty());
  EXPECT_EQ(Must(this->store().CountTokens(), "CountTokens"), 0);
  EXPECT_THAT(Must(this->store().ListTokens(), "ListTokens"), IsEmpty());
}

TYPED_TEST_P(StoreConformance, CreateReleaseAssignsIncreasingIdsAndStoresEveryField) {
  ReleaseRecord wanted = NewRelease("web", "v7");
  wanted.commit = "0123abcd";
  wanted.author = "ada";
  wanted.commit_at = 900;
  wanted.created_at = 1001;
  wanted.kind = release_kind::kRollback;
  wanted.previous_release_id = 5;
  auto first = this->store().CreateRelease(wanted, Entry("release.create", 1));
  ASSERT_TRUE(first.ok()) << first.status().ToString();
  auto second = this->store().CreateRelease(NewRelease("web", "v8"), Entry("release.create", 2));
  ASSERT_TRUE(second.ok()) << second.status().ToString();
  auto third = this->store().CreateRelease(NewRelease("api", "v1"), Entry("release.create", 3));
  ASSERT_TRUE(third.ok()) << third.status().ToString();

  EXPECT_GT(first->id, 0);
  EXPECT_GT(second->id, first->id);
  EXPECT_GT(third->id, second->id);
  wanted.id = first->id;
  ExpectSameRelease(wanted, *first);
  ExpectSameRelease(wanted, this->Reread(first->id));
  ReleaseQuery by_commit;
  by_commit.commit = "0123abcd";
  auto found = Must(this->store().FindReleases(by_commit), "FindReleases");
  ASSERT_EQ(found.size(), 1u);
  ExpectSameRelease(wanted, found[0]);
}

// Not stated in store.h: the engine leaves the target empty, as only the store knows the id.
TYPED_TEST_P(StoreConformance, CreateReleaseWritesItsAuditEntryTargetingTheReleaseByDefault) {
  AuditRecord entry;
  entry.at = 77;
  entry.actor = "alice";
  entry.action = "release.create";
  entry.detail = "web v1 commit c1";
  entry.outcome = "ok";
  auto created = this->store().CreateRelease(NewRelease("web", "v1"), entry);
  ASSERT_TRUE(created.ok()) << created.status().ToString();
  AuditRecord targeted = entry;
  targeted.actor = "bob";
  targeted.action = "pipeline.rollback";
  targeted.target = "pipeline/web";
  auto rollback = this->store().CreateRelease(NewRelease("web", "v0"), targeted);
  ASSERT_TRUE(rollback.ok()) << rollback.status().ToString();

  auto entries = this->AuditLog();
  ASSERT_EQ(entries.size(), 2u);
  ExpectSameAudit(targeted, entries[0]);
  entry.target = "release/" + std::to_string(created->id);
  ExpectSameAudit(entry, entries[1]);
}

TYPED_TEST_P(StoreConformance, GetReleaseOfAnUnknownIdIsNotFoundNamingTheId) {
  auto none = this->store().GetRelease(4242);
  ASSERT_FALSE(none.ok());
  EXPECT_EQ(none.status().code(), StatusCode::kNotFound) << none.status().ToString();
  EXPECT_NE(none.status().message().find("4242"), std::string::npos) << none.status().message();

  const ReleaseRecord r = this->Create("web", "v1");
  auto after = this->store().GetRelease(r.id + 1000);
  ASSERT_FALSE(after.ok());
  EXPECT_EQ(after.status().code(), StatusCode::kNotFound) << after.status().ToString();
  EXPECT_NE(after.status().message().find(std::to_string(r.id + 1000)), std::string::npos)
      << after.status().message();
}

TYPED_TEST_P(StoreConformance, FindReleasesIsNewestFirstByDefaultAndOldestFirstOnRequest) {
  ReleaseQuery none;
  EXPECT_THAT(this->Ids(none), IsEmpty());

  const auto c = this->MakeCatalog();
  ReleaseQuery newest;
  EXPECT_EQ(this->Ids(newest), c.NewestFirst());
  ReleaseQuery oldest;
  oldest.oldest_first = true;
  auto want = c.NewestFirst();
  std::reverse(want.begin(), want.end());
  EXPECT_EQ(this->Ids(oldest), want);
}

TYPED_TEST_P(StoreConformance, FindReleasesReturnsAtMostLimitAndEverythingForALimitOfZeroOrLess) {
  const auto c = this->MakeCatalog();
  ReleaseQuery two;
  two.limit = 2;
  EXPECT_THAT(this->Ids(two), ElementsAre(c.api_v3_rolling.id, c.web_v3_queued.id));
  two.oldest_first = true;
  EXPECT_THAT(this->Ids(two), ElementsAre(c.web_v1.id, c.api_v1.id));
  ReleaseQuery zero;
  zero.limit = 0;
  EXPECT_EQ(this->Ids(zero), c.NewestFirst());
  ReleaseQuery negative;
  negative.limit = -1;
  EXPECT_EQ(this->Ids(negative), c.NewestFirst());
  EXPECT_THAT(this->Ids(ReleaseQuery::Newest("web", 2)),
              ElementsAre(c.web_v3_queued.id, c.web_v1_rollback.id));
  EXPECT_THAT(this->Ids(ReleaseQuery::Newest("", 3)),
              ElementsAre(c.api_v3_rolling.id, c.web_v3_queued.id, c.web_v1_rollback.id));
  EXPECT_THAT(
      this->Ids(ReleaseQuery::Newest("web", 0)),
      ElementsAre(c.web_v3_queued.id, c.web_v1_rollback.id, c.web_v2_failed.id, c.web_v1.id));
}

TYPED_TEST_P(StoreConformance, TheDefaultQueryReturnsTheNewestFifty) {
  std::vector<int64_t> created;
  for (int i = 0; i < 52; ++i) created.push_back(this->Create("web", "v" + std::to_string(i)).id);
  std::vector<int64_t> want(created.rbegin(), created.rbegin() + 50);
  EXPECT_EQ(this->Ids(ReleaseQuery()), want);
}

TYPED_TEST_P(StoreConformance, FindReleasesByPipeline) {
  const auto c = this->MakeCatalog();
  ReleaseQuery q;
  q.pipeline = "web";
  EXPECT_THAT(this->Ids(q), ElementsAre(c.web_v3_queued.id, c.web_v1_rollback.id,
                                        c.web_v2_failed.id, c.web_v1.id));
  q.pipeline = "api";
  EXPECT_THAT(this->Ids(q), ElementsAre(c.api_v3_rolling.id, c.api_v1.id));
  q.pipeline = "nope";
  EXPECT_THAT(this->Ids(q), IsEmpty());
}

TYPED_TEST_P(StoreConformance, FindReleasesByStates) {
  const auto c = this->MakeCatalog();
  ReleaseQuery q;
  q.states = {release_state::kSucceeded};
  EXPECT_THAT(this->Ids(q), ElementsAre(c.web_v1_rollback.id, c.api_v1.id, c.web_v1.id));
  q.states = {release_state::kQueued, release_state::kRolling, release_state::kFailed};
  EXPECT_THAT(this->Ids(q),
              ElementsAre(c.api_v3_rolling.id, c.web_v3_queued.id, c.web_v2_failed.id));
  q.states = {release_state::kAborted};
  EXPECT_THAT(this->Ids(q), IsEmpty());
}

TYPED_TEST_P(StoreConformance, FindReleasesByKinds) {
  const auto c = this->MakeCatalog();
  ReleaseQuery q;
  q.kinds = {release_kind::kRollback};
  EXPECT_THAT(this->Ids(q), ElementsAre(c.web_v1_rollback.id));
  q.kinds = {release_kind::kRollout};
  EXPECT_THAT(this->Ids(q), ElementsAre(c.api_v3_rolling.id, c.web_v3_queued.id, c.web_v2_failed.id,
                                        c.api_v1.id, c.web_v1.id));
  q.kinds = {release_kind::kRollout, release_kind::kRollback};
  EXPECT_EQ(this->Ids(q), c.NewestFirst());
}

TYPED_TEST_P(StoreConformance, FindReleasesByVersion) {
  const auto c = this->MakeCatalog();
  ReleaseQuery q;
  q.version = "v1";
  EXPECT_THAT(this->Ids(q), ElementsAre(c.web_v1_rollback.id, c.api_v1.id, c.web_v1.id));
  q.version = "v3";
  EXPECT_THAT(this->Ids(q), ElementsAre(c.api_v3_rolling.id, c.web_v3_queued.id));
  q.version = "v9";
  EXPECT_THAT(this->Ids(q), IsEmpty());
}

TYPED_TEST_P(StoreConformance, FindReleasesByCommit) {
  const auto c = this->MakeCatalog();
  ReleaseQuery q;
  q.commit = "c1";
  EXPECT_THAT(this->Ids(q), ElementsAre(c.web_v1_rollback.id, c.api_v1.id, c.web_v1.id));
  q.commit = "c2";
  EXPECT_THAT(this->Ids(q), ElementsAre(c.web_v2_failed.id));
  q.commit = "c9";
  EXPECT_THAT(this->Ids(q), IsEmpty());
}

TYPED_TEST_P(StoreConformance, FindReleasesBeforeAnIdPagesThroughHistory) {
  const auto c = this->MakeCatalog();
  ReleaseQuery q;
  q.limit = 2;
  EXPECT_THAT(this->Ids(q), ElementsAre(c.api_v3_rolling.id, c.web_v3_queued.id));
  q.before_id = c.web_v3_queued.id;
  EXPECT_THAT(this->Ids(q), ElementsAre(c.web_v1_rollback.id, c.web_v2_failed.id));
  q.before_id = c.web_v2_failed.id;
  EXPECT_THAT(this->Ids(q), ElementsAre(c.api_v1.id, c.web_v1.id));
  q.before_id = c.web_v1.id;
  EXPECT_THAT(this->Ids(q), IsEmpty());

  ReleaseQuery past_the_end;
  past_the_end.before_id = c.api_v3_rolling.id + 1;
  EXPECT_EQ(this->Ids(past_the_end), c.NewestFirst());
  ReleaseQuery oldest;
  oldest.oldest_first = true;
  oldest.before_id = c.web_v2_failed.id;
  EXPECT_THAT(this->Ids(oldest), ElementsAre(c.web_v1.id, c.api_v1.id));
}

TYPED_TEST_P(StoreConformance, FindReleasesCombinesEveryFilter) {
  // Each release but the matching ones differs from them in exactly one filtered field.
  auto make = [this](const std::string& pipeline, const std::string& version,
                     const std::string& state, const std::string& kind, const std::string& commit) {
    return this->Create(pipeline, version, state, kind, commit).id;
  };
  const std::string failed = release_state::kFailed;
  const std::string rollback = release_kind::kRollback;
  const int64_t match1 = make("web", "v2", failed, rollback, "c2");
  make("api", "v2", failed, rollback, "c2");                     // pipeline
  make("web", "v2", release_state::kSucceeded, rollback, "c2");  // state
  make("web", "v2", failed, release_kind::kRollout, "c2");       // kind
  make("web", "v3", failed, rollback, "c2");                     // version
  make("web", "v2", failed, rollback, "c3");                     // commit
  const int64_t match2 = make("web", "v2", release_state::kRolledBack, rollback, "c2");
  const int64_t match3 = make("web", "v2", failed, rollback, "c2");
  const int64_t too_new = make("web", "v2", failed, rollback, "c2");  // before_id

  ReleaseQuery q;
  q.pipeline = "web";
  q.states = {release_state::kFailed, release_state::kRolledBack};
  q.kinds = {release_kind::kRollback};
  q.version = "v2";
  q.commit = "c2";
  q.before_id = too_new;
  q.limit = 0;
  EXPECT_THAT(this->Ids(q), ElementsAre(match3, match2, match1));
  q.oldest_first = true;
  EXPECT_THAT(this->Ids(q), ElementsAre(match1, match2, match3));
  q.limit = 2;
  EXPECT_THAT(this->Ids(q), ElementsAre(match1, match2));
}

TYPED_TEST_P(StoreConformance, AReleaseUpsertWritesTheEngineColumns) {
  const ReleaseRecord r = this->Create("web", "v2");
  ReleaseRecord moved = r;
  moved.state = release_state::kRollingBack;
  moved.reason = "gate errors failed in eu-west-1";
  moved.current_wave = 2;
  moved.previous_version = "v1";
  moved.started_at = 3001;
  moved.finished_at = 3002;
  moved.previous_release_id = 41;
  WriteBatch b;
  b.releases.push_back(moved);
  this->Commit(b);
  ExpectSameRelease(moved, this->Reread(r.id));
}

// ------------------------------------------------------------------- waves, hosts, gates, agents

TYPED_TEST_P(StoreConformance, WavesAreUpsertedByReleaseAndIndexAndOrderedByIndex) {
  const ReleaseRecord r = this->Create("web", "v1");
  const ReleaseRecord other = this->Create("web", "v2");
  const ReleaseRecord without = this->Create("web", "v3");
  const WaveRecord canary = AwaitingApproval(r.id);
  WaveRecord rest = NewWave(r.id, 1, "rest", wave_state::kDeploying);
  rest.started_at = 4001;
  rest.first_switch_at = 4002;
  WriteBatch b;
  b.waves = {rest, NewWave(other.id, 0, "canary", wave_state::kDone), canary};
  this->Commit(b);

  auto waves = Must(this->store().Waves(r.id), "Waves");
  ASSERT_EQ(waves.size(), 2u);
  ExpectSameWave(canary, waves[0]);
  ExpectSameWave(rest, waves[1]);

  rest.state = wave_state::kBaking;
  rest.bake_started_at = 4003;
  rest.last_switch_at = 4004;
  rest.finished_at = 4005;
  rest.approval_requested_at = 4006;
  WriteBatch again;
  again.waves.push_back(rest);
  this->Commit(again);
  waves = Must(this->store().Waves(r.id), "Waves");
  ASSERT_EQ(waves.size(), 2u);
  ExpectSameWave(canary, waves[0]);
  ExpectSameWave(rest, waves[1]);
  EXPECT_EQ(Must(this->store().Waves(other.id), "Waves").size(), 1u);
  EXPECT_THAT(Must(this->store().Waves(without.id), "Waves"), IsEmpty());
}

TYPED_TEST_P(StoreConformance, HostsAreUpsertedByReleaseAndAgentWithEveryColumn) {
  const ReleaseRecord r = this->Create("web", "v2");
  const ReleaseRecord other = this->Create("web", "v3");
  HostRecord h = NewHost(r.id, "web-1", "eu-west-1", 0);
  h.state = host_state::kPreparing;
  h.task_id = "task-1";
  h.detail = "fetching";
  h.started_at = 5001;
  h.task_sent_at = 5002;
  h.from_version = "v1";
  h.step = host_step::kPrepare;
  h.attempt = 1;
  WriteBatch b;
  b.hosts = {h, NewHost(other.id, "web-1", "eu-west-1", 0)};
  this->Commit(b);
  auto hosts = Must(this->store().Hosts(r.id), "Hosts");
  ASSERT_EQ(hosts.size(), 1u);
  ExpectSameHost(h, hosts[0]);

  h.region = "eu-central-1";
  h.wave = 1;
  h.state = host_state::kDone;
  h.task_id = "task-2";
  h.detail = "switched";
  h.task_sent_at = 5003;
  h.finished_at = 5004;
  h.step = host_step::kActivate;
  h.attempt = 2;
  h.switch_sent = true;
  h.output_tail = "starting web\nport 8080 in use\n";
  WriteBatch again;
  again.hosts.push_back(h);
  this->Commit(again);
  hosts = Must(this->store().Hosts(r.id), "Hosts");
  ASSERT_EQ(hosts.size(), 1u);
  ExpectSameHost(h, hosts[0]);
  EXPECT_EQ(Must(this->store().Hosts(other.id), "Hosts").size(), 1u);
}

TYPED_TEST_P(StoreConformance, HostsAreOrderedByWaveRegionAndName) {
  const ReleaseRecord r = this->Create("web", "v2");
  WriteBatch b;
  // Written in none of the orders; read by wave, then region, then name.
  b.hosts = {NewHost(r.id, "c-host", "us-east-1", 0), NewHost(r.id, "a-host", "eu-west-1", 1),
             NewHost(r.id, "d-host", "us-east-1", 0), NewHost(r.id, "b-host", "ap-southeast-2", 0)};
  this->Commit(b);
  std::vector<std::string> names;
  for (const auto& h : Must(this->store().Hosts(r.id), "Hosts")) names.push_back(h.agent);
  EXPECT_THAT(names, ElementsAre("b-host", "c-host", "d-host", "a-host"));
}

TYPED_TEST_P(StoreConformance, GateResultsComeBackInTheOrderReceived) {
  const ReleaseRecord r = this->Create("web", "v2");
  const ReleaseRecord other = this->Create("web", "v3");
  GateResult latency = NewGate(r.id, "latency", "us-east-1", "pass", 0.25);
  GateResult errors = NewGate(r.id, "errors", "eu-west-1", "fail", 3.5);
  errors.evaluated_at = 0;  // unknown
  GateResult later = NewGate(r.id, "errors", "ap-southeast-2", "inconclusive", -1.5);
  later.wave = 1;
  later.at = 3100;
  later.evaluated_at = 3099;
  WriteBatch first;
  first.gate_results = {latency, NewGate(other.id, "apdex", "eu-west-1", "pass", 1), errors};
  this->Commit(first);
  WriteBatch second;
  second.gate_results.push_back(later);
  this->Commit(second);

  auto got = Must(this->store().GateResults(r.id), "GateResults");
  ASSERT_EQ(got.size(), 3u);
  ExpectSameGateResult(latency, got[0]);
  ExpectSameGateResult(errors, got[1]);
  ExpectSameGateResult(later, got[2]);
  EXPECT_EQ(Must(this->store().GateResults(other.id), "GateResults").size(), 1u);
}

TYPED_TEST_P(StoreConformance, AgentsAreUpsertedByNameAndSortedByName) {
  AgentRecord c = NewAgent("web-3", "us-east-1");
  AgentRecord a = NewAgent("web-1", "eu-west-1");
  a.versions_on_disk = {};
  a.agent_version = "";
  a.connected = false;
  AgentRecord b = NewAgent("web-2", "ap-southeast-2");
  b.versions_on_disk = {"v1"};
  WriteBatch batch;
  batch.agents = {c, a, b};
  this->Commit(batch);

  auto agents = Must(this->store().Agents(), "Agents");
  ASSERT_EQ(agents.size(), 3u);
  ExpectSameAgent(a, agents[0]);
  ExpectSameAgent(b, agents[1]);
  ExpectSameAgent(c, agents[2]);

  a.pipeline = "api";
  a.region = "eu-central-1";
  a.current_version = "v3";
  a.versions_on_disk = {"v1", "v2", "v3"};
  a.connected = true;
  a.last_seen = 900;
  a.agent_version = "1.0.0 (def456)";
  WriteBatch again;
  again.agents.push_back(a);
  this->Commit(again);
  auto got = Must(this->store().GetAgent("web-1"), "GetAgent");
  ASSERT_TRUE(got.has_value());
  ExpectSameAgent(a, *got);
  EXPECT_EQ(Must(this->store().Agents(), "Agents").size(), 3u);
  EXPECT_FALSE(Must(this->store().GetAgent("nobody"), "GetAgent").has_value());
}

TYPED_TEST_P(StoreConformance, AuditIsNewestFirstAndLimited) {
  WriteBatch b;
  for (int i = 0; i < 120; ++i) {
    AuditRecord e = Entry("action-" + std::to_string(i), 10 + i);
    e.actor = "actor-" + std::to_string(i);
    e.target = "release/" + std::to_string(i);
    e.detail = "detail " + std::to_string(i);
    e.outcome = i % 2 ? "ok" : "denied";
    b.audit.push_back(e);
  }
  this->Commit(b);

  auto five = Must(this->store().Audit(5), "Audit(5)");
  ASSERT_EQ(five.size(), 5u);
  for (size_t i = 0; i < five.size(); ++i) ExpectSameAudit(b.audit[119 - i], five[i]);
  auto by_default = Must(this->store().Audit(0), "Audit(0)");
  ASSERT_EQ(by_default.size(), 100u);
  EXPECT_EQ(by_default.front().action, "action-119");
  EXPECT_EQ(by_default.back().action, "action-20");
  EXPECT_EQ(Must(this->store().Audit(-1), "Audit(-1)").size(), 100u);
  EXPECT_EQ(Must(this->store().Audit(1000), "Audit(1000)").size(), 120u);
}

// ----------------------------------------------------------- bring-up tracks, hook output

TYPED_TEST_P(StoreConformance, BringupTracksAreUpsertedByReleaseAndRegionAndOrderedByRegion) {
  const ReleaseRecord r = this->Create("web", "v2");
  const ReleaseRecord other = this->Create("web", "v3");
  const ReleaseRecord without = this->Create("web", "v4");
  BringupRecord ap = NewTrack(r.id, "ap-southeast-2", bringup_state::kRolling);
  ap.started_at = 6001;
  ap.wave_started_at = 6002;
  BringupRecord af = NewTrack(r.id, "af-south-1", bringup_state::kRollingBack);
  af.wave = 1;
  af.started_at = 6003;
  af.wave_started_at = 6004;
  af.bake_started_at = 6005;
  af.reason =
      "wave canary: 1 host(s) failed (web-7: activate failed at start: exit 1; 0 tolerated)";
  BringupRecord sa = NewTrack(r.id, "sa-east-1", bringup_state::kSucceeded);
  sa.finished_at = 6006;
  const BringupRecord elsewhere = NewTrack(other.id, "ap-southeast-2", bringup_state::kSuperseded);
  // The pass that starts a release gives it its tracks.
  ReleaseRecord rolling = r;
  rolling.state = release_state::kRolling;
  rolling.started_at = 6000;
  WriteBatch b;
  b.releases.push_back(rolling);
  b.bringup = {sa, ap, elsewhere, af};
  this->Commit(b);

  auto tracks = Must(this->store().BringupTracks(r.id), "BringupTracks");
  ASSERT_EQ(tracks.size(), 3u);
  ExpectSameTrack(af, tracks[0]);
  ExpectSameTrack(ap, tracks[1]);
  ExpectSameTrack(sa, tracks[2]);

  ap.state = bringup_state::kRolledBack;
  ap.wave = 1;
  ap.wave_started_at = 6010;
  ap.bake_started_at = 6011;
  ap.finished_at = 6012;
  ap.reason = "wave all: 1 host(s) failed; every host back on v1";
  WriteBatch again;
  again.bringup.push_back(ap);
  again.audit.push_back(Entry("release.bringup_rolled_back", 6012));
  this->Commit(again);
  tracks = Must(this->store().BringupTracks(r.id), "BringupTracks");
  ASSERT_EQ(tracks.size(), 3u);
  ExpectSameTrack(af, tracks[0]);
  ExpectSameTrack(ap, tracks[1]);
  ExpectSameTrack(sa, tracks[2]);

  auto theirs = Must(this->store().BringupTracks(other.id), "BringupTracks");
  ASSERT_EQ(theirs.size(), 1u);
  ExpectSameTrack(elsewhere, theirs[0]);
  EXPECT_THAT(Must(this->store().BringupTracks(without.id), "BringupTracks"), IsEmpty());
}

TYPED_TEST_P(StoreConformance, ABatchOfOnlyBringupTracksIsWritten) {
  // A pass in which only a bring-up region's track moved (its bake began, and its next wave
  // added no host) writes its tracks and nothing else.
  const ReleaseRecord r = this->Create("web", "v2");
  BringupRecord t = NewTrack(r.id, "ap-southeast-2", bringup_state::kRolling);
  t.wave = 1;
  t.wave_started_at = 7001;
  t.bake_started_at = 7001;
  WriteBatch b;
  b.bringup.push_back(t);
  this->Commit(b);
  auto tracks = Must(this->store().BringupTracks(r.id), "BringupTracks");
  ASSERT_EQ(tracks.size(), 1u);
  ExpectSameTrack(t, tracks[0]);

  t.state = bringup_state::kSucceeded;
  t.finished_at = 7002;
  WriteBatch again;
  again.bringup.push_back(t);
  this->Commit(again);
  tracks = Must(this->store().BringupTracks(r.id), "BringupTracks");
  ASSERT_EQ(tracks.size(), 1u);
  ExpectSameTrack(t, tracks[0]);
}

TYPED_TEST_P(StoreConformance, ATrackOfAnUnknownReleaseRefusesTheWholeBatch) {
  const ReleaseRecord r = this->RollingAwaitingApproval();
  const BringupRecord mine = NewTrack(r.id, "ap-southeast-2", bringup_state::kRolling);
  WriteBatch setup;
  setup.bringup.push_back(mine);
  setup.audit.push_back(Entry("release.start", 8000));
  this->Commit(setup);

  // Every kind of row about `r`, a change to its track, then a track of a release that does
  // not exist.
  WriteBatch b = EverythingAbout(r);
  BringupRecord moved = mine;
  moved.state = bringup_state::kRolledBack;
  moved.finished_at = 8001;
  const BringupRecord ghost = NewTrack(r.id + 1000, "ap-southeast-2", bringup_state::kRolling);
  b.bringup = {moved, ghost};
  const auto before = this->Take(r.id);
  Status st = this->store().Write(b);
  EXPECT_EQ(st.code(), StatusCode::kInternal) << st.ToString();
  this->ExpectSameSnapshot(before, this->Take(r.id));
  auto tracks = Must(this->store().BringupTracks(r.id), "BringupTracks");
  ASSERT_EQ(tracks.size(), 1u);
  ExpectSameTrack(mine, tracks[0]);
  EXPECT_THAT(Must(this->store().BringupTracks(ghost.release_id), "BringupTracks"), IsEmpty());
  this->ExpectWritable();
}

TYPED_TEST_P(StoreConformance, AHostsOutputTailRoundTripsWhateverItsSizeAndCharacters) {
  const ReleaseRecord r = this->Create("web", "v2");
  HostRecord h = NewHost(r.id, "web-1", "eu-west-1", 0);
  h.state = host_state::kFailed;
  h.detail = "activate failed at start: deploy/start exited with status 1";
  h.output_tail = "starting web\nport 8080 in use\n";
  WriteBatch b;
  b.hosts.push_back(h);
  this->Commit(b);
  auto hosts = Must(this->store().Hosts(r.id), "Hosts");
  ASSERT_EQ(hosts.size(), 1u);
  ExpectSameHost(h, hosts[0]);

  h.output_tail = Utf8Text(16 * 1024);
  ASSERT_EQ(h.output_tail.size(), 16384u);
  WriteBatch big;
  big.hosts.push_back(h);
  this->Commit(big);
  hosts = Must(this->store().Hosts(r.id), "Hosts");
  ASSERT_EQ(hosts.size(), 1u);
  EXPECT_EQ(hosts[0].output_tail.size(), 16384u);
  EXPECT_TRUE(hosts[0].output_tail == h.output_tail) << "the 16 KiB tail came back changed";

  // The host ran its release after all: its tail is cleared.
  h.state = host_state::kDone;
  h.detail = "running v2";
  h.output_tail.clear();
  WriteBatch cleared;
  cleared.hosts.push_back(h);
  this->Commit(cleared);
  hosts = Must(this->store().Hosts(r.id), "Hosts");
  ASSERT_EQ(hosts.size(), 1u);
  ExpectSameHost(h, hosts[0]);
}

// ------------------------------------------------------------------- all or nothing, expectations

TYPED_TEST_P(StoreConformance, AnEmptyBatchIsAccepted) {
  EXPECT_TRUE(this->store().Write(WriteBatch()).ok());
  EXPECT_THAT(this->AuditLog(), IsEmpty());
}

TYPED_TEST_P(StoreConformance, ABatchWhoseExpectationsHoldIsWrittenWhole) {
  const ReleaseRecord r = this->RollingAwaitingApproval();
  WriteBatch b = EverythingAbout(r);
  b.expect.push_back(Unchanged(r, AwaitingApproval(r.id)));
  ASSERT_TRUE(this->store().Write(b).ok());

  const ReleaseRecord got = this->Reread(r.id);
  EXPECT_EQ(got.state, release_state::kSucceeded);
  EXPECT_EQ(got.abort_requested_by, "bob");
  auto waves = Must(this->store().Waves(r.id), "Waves");
  ASSERT_EQ(waves.size(), 2u);
  EXPECT_EQ(waves[0].approved_by, "carol");
  EXPECT_EQ(waves[1].name, "everyone");
  EXPECT_EQ(Must(this->store().Hosts(r.id), "Hosts").size(), 1u);
  EXPECT_TRUE(Must(this->store().GetAgent("web-9"), "GetAgent").has_value());
  auto entries = this->AuditLog();
  ASSERT_FALSE(entries.empty());
  EXPECT_EQ(entries.front().action, "release.note");
  EXPECT_EQ(Must(this->store().GateResults(r.id), "GateResults").size(), 1u);
  EXPECT_TRUE(Must(this->store().GetPipelineState("held"), "GetPipelineState").paused);
  EXPECT_TRUE(Must(this->store().GetPipelineState("switched"), "GetPipelineState").frozen);
}

TYPED_TEST_P(StoreConformance, AnExpectedStateThatChangedRefusesTheWholeBatch) {
  const ReleaseRecord r = this->RollingAwaitingApproval();
  WriteBatch b = EverythingAbout(r);
  ReleaseRecord stale = r;
  stale.state = release_state::kQueued;
  b.expect.push_back(Unchanged(stale));
  this->ExpectRefused(b, StatusCode::kFailedPrecondition, r.id, r.id);
}

TYPED_TEST_P(StoreConformance, AnAbortRequestedMeanwhileRefusesTheWholeBatch) {
  const ReleaseRecord r = this->RollingAwaitingApproval();
  WriteBatch request;
  request.abort_requests.push_back(AbortBy(r.id, "alice", 7000));
  this->Commit(request);
  WriteBatch b = EverythingAbout(r);
  b.expect.push_back(Unchanged(r));  // read before the abort: abort_requested_at 0
  this->ExpectRefused(b, StatusCode::kFailedPrecondition, r.id, r.id);
}

TYPED_TEST_P(StoreConformance, AnExpectationOnAnUnknownReleaseIsNotFound) {
  const ReleaseRecord r = this->RollingAwaitingApproval();
  ReleaseRecord ghost = r;
  ghost.id = r.id + 1000;
  WriteBatch b = EverythingAbout(r);
  b.expect.push_back(Unchanged(r));
  b.expect.push_back(Unchanged(ghost));
  this->ExpectRefused(b, StatusCode::kNotFound, r.id, ghost.id);
}

TYPED_TEST_P(StoreConformance, AnExpectedWaveStateThatChangedRefusesTheWholeBatch) {
  const ReleaseRecord r = this->RollingAwaitingApproval();
  WaveRecord stale = AwaitingApproval(r.id);
  stale.state = wave_state::kBaking;
  WriteBatch b = EverythingAbout(r);
  b.expect.push_back(Unchanged(r, stale));
  this->ExpectRefused(b, StatusCode::kFailedPrecondition, r.id, r.id);
}

TYPED_TEST_P(StoreConformance, AnApprovalGivenMeanwhileRefusesTheWholeBatch) {
  const ReleaseRecord r = this->RollingAwaitingApproval();
  WriteBatch approve;
  approve.approvals.push_back(ApprovalBy(r.id, 0, "alice", 7000));
  this->Commit(approve);
  WriteBatch b = EverythingAbout(r);
  b.expect.push_back(Unchanged(r, AwaitingApproval(r.id)));  // read before: approved_at 0
  this->ExpectRefused(b, StatusCode::kFailedPrecondition, r.id, r.id);
}

TYPED_TEST_P(StoreConformance, AnExpectationOnAnUnknownWaveIsNotFound) {
  const ReleaseRecord r = this->RollingAwaitingApproval();
  WaveRecord missing = AwaitingApproval(r.id);
  missing.index = 5;
  WriteBatch b = EverythingAbout(r);
  b.expect.push_back(Unchanged(r, missing));
  this->ExpectRefused(b, StatusCode::kNotFound, r.id, r.id);
}

TYPED_TEST_P(StoreConformance, TheFirstExpectationThatFailsDecidesTheRefusal) {
  const ReleaseRecord r = this->RollingAwaitingApproval();
  const ReleaseRecord moved = this->Create("web", "v2", release_state::kRolling);
  ReleaseRecord stale = moved;
  stale.state = release_state::kQueued;
  ReleaseRecord ghost = r;
  ghost.id = moved.id + 1000;

  WriteBatch changed_first = EverythingAbout(r);
  changed_first.expect = {Unchanged(r), Unchanged(stale), Unchanged(ghost)};
  this->ExpectRefused(changed_first, StatusCode::kFailedPrecondition, r.id, moved.id);
  WriteBatch unknown_first = EverythingAbout(r);
  unknown_first.expect = {Unchanged(r), Unchanged(ghost), Unchanged(stale)};
  this->ExpectRefused(unknown_first, StatusCode::kNotFound, r.id, ghost.id);
}

TYPED_TEST_P(StoreConformance, OfConcurrentRequestsExpectingTheSameReleaseOnlyOneIsWritten) {
  const ReleaseRecord r = this->RollingAwaitingApproval();
  const size_t audit_before = this->AuditLog().size();
  constexpr size_t kRequests = 8;
  std::vector<Status> outcomes(kRequests);
  std::vector<std::thread> threads;
  Store* shared = &this->store();
  for (size_t i = 0; i < kRequests; ++i) {
    threads.emplace_back([shared, &outcomes, &r, i] {
      const UnixMs at = 7000 + static_cast<UnixMs>(i);
      WriteBatch b;
      b.expect.push_back(Unchanged(r));
      b.abort_requests.push_back(AbortBy(r.id, "op-" + std::to_string(i), at));
      b.audit.push_back(Entry("release.abort", at));
      outcomes[i] = shared->Write(b);
    });
  }
  for (auto& thread : threads) thread.join();

  size_t written = 0;
  size_t winner = kRequests;
  for (size_t i = 0; i < kRequests; ++i) {
    if (outcomes[i].ok()) {
      ++written;
      winner = i;
    } else {
      EXPECT_EQ(outcomes[i].code(), StatusCode::kFailedPrecondition) << outcomes[i].ToString();
    }
  }
  ASSERT_EQ(written, 1u);
  const ReleaseRecord got = this->Reread(r.id);
  EXPECT_EQ(got.abort_requested_by, "op-" + std::to_string(winner));
  EXPECT_EQ(got.abort_requested_at, 7000 + static_cast<UnixMs>(winner));
  EXPECT_EQ(this->AuditLog().size(), audit_before + 1);
}

TYPED_TEST_P(StoreConformance, ConcurrentCreatesGetDistinctIncreasingIds) {
  constexpr size_t kThreads = 4;
  constexpr size_t kEach = 10;
  std::vector<std::vector<int64_t>> ids(kThreads);
  std::vector<std::thread> threads;
  Store* shared = &this->store();
  for (size_t t = 0; t < kThreads; ++t) {
    threads.emplace_back([shared, &ids, t] {
      for (size_t n = 0; n < kEach; ++n) {
        auto created = shared->CreateRelease(
            NewRelease("web", "v" + std::to_string(t) + "." + std::to_string(n)),
            Entry("release.create", 1));
        if (created.ok()) ids[t].push_back(created->id);
      }
    });
  }
  for (auto& thread : threads) thread.join();

  std::set<int64_t> distinct;
  size_t total = 0;
  for (const auto& mine : ids) {
    EXPECT_TRUE(std::is_sorted(mine.begin(), mine.end()));
    total += mine.size();
    distinct.insert(mine.begin(), mine.end());
  }
  EXPECT_EQ(total, kThreads * kEach);
  EXPECT_EQ(distinct.size(), total);
  EXPECT_EQ(this->Ids(ReleaseQuery::Newest("web", 0)).size(), total);
  EXPECT_EQ(this->AuditLog().size(), total);
}

// ----------------------------------------------------------------------------- operator requests

TYPED_TEST_P(StoreConformance, AnAbortRequestSetsOnlyItsOwnColumns) {
  const ReleaseRecord r = this->RollingAwaitingApproval();
  WriteBatch b;
  b.abort_requests.push_back(AbortBy(r.id, "alice", 7001));
  this->Commit(b);
  ReleaseRecord want = r;
  want.abort_requested_by = "alice";
  want.abort_requested_at = 7001;
  ExpectSameRelease(want, this->Reread(r.id));
}

TYPED_TEST_P(StoreConformance, AnEngineUpsertOfTheReleaseKeepsARequestedAbort) {
  const ReleaseRecord r = this->RollingAwaitingApproval();  // the engine's copy, read before
  WriteBatch request;
  request.abort_requests.push_back(AbortBy(r.id, "alice", 7001));
  this->Commit(request);
  ReleaseRecord pass = r;
  pass.current_wave = 1;
  pass.reason = "wave 1 started";
  WriteBatch b;
  b.releases.push_back(pass);
  this->Commit(b);
  ReleaseRecord want = pass;
  want.abort_requested_by = "alice";
  want.abort_requested_at = 7001;
  ExpectSameRelease(want, this->Reread(r.id));
}

TYPED_TEST_P(StoreConformance, AReleaseUpsertNeverWritesTheAbortColumns) {
  const ReleaseRecord r = this->Create("web", "v1");
  ReleaseRecord pass = r;
  pass.state = release_state::kRolling;
  pass.abort_requested_by = "mallory";
  pass.abort_requested_at = 6666;
  WriteBatch b;
  b.releases.push_back(pass);
  this->Commit(b);
  const ReleaseRecord got = this->Reread(r.id);
  EXPECT_EQ(got.state, release_state::kRolling);
  EXPECT_EQ(got.abort_requested_by, "");
  EXPECT_EQ(got.abort_requested_at, 0);
}

TYPED_TEST_P(StoreConformance, AnApprovalSetsOnlyItsOwnColumns) {
  const ReleaseRecord r = this->RollingAwaitingApproval();
  WriteBatch b;
  b.approvals.push_back(ApprovalBy(r.id, 0, "carol", 7002));
  this->Commit(b);
  WaveRecord want = AwaitingApproval(r.id);
  want.approved_by = "carol";
  want.approved_at = 7002;
  auto waves = Must(this->store().Waves(r.id), "Waves");
  ASSERT_EQ(waves.size(), 1u);
  ExpectSameWave(want, waves[0]);
  ExpectSameRelease(r, this->Reread(r.id));
}

TYPED_TEST_P(StoreConformance, AnEngineUpsertOfTheWaveKeepsAnApproval) {
  const ReleaseRecord r = this->RollingAwaitingApproval();
  WriteBatch approve;
  approve.approvals.push_back(ApprovalBy(r.id, 0, "carol", 7002));
  this->Commit(approve);
  WaveRecord pass = AwaitingApproval(r.id);  // the engine's copy, read before the approval
  pass.last_switch_at = 7003;
  WriteBatch b;
  b.waves.push_back(pass);
  this->Commit(b);
  WaveRecord want = pass;
  want.approved_by = "carol";
  want.approved_at = 7002;
  auto waves = Must(this->store().Waves(r.id), "Waves");
  ASSERT_EQ(waves.size(), 1u);
  ExpectSameWave(want, waves[0]);
}

TYPED_TEST_P(StoreConformance, AWaveUpsertNeverWritesTheApprovalColumns) {
  const ReleaseRecord r = this->Create("web", "v1");
  WaveRecord w = AwaitingApproval(r.id);
  w.approved_by = "mallory";
  w.approved_at = 6666;
  WriteBatch b;
  b.waves.push_back(w);
  this->Commit(b);
  this->Commit(b);  // once inserting the row, once updating it
  auto waves = Must(this->store().Waves(r.id), "Waves");
  ASSERT_EQ(waves.size(), 1u);
  EXPECT_EQ(waves[0].approved_by, "");
  EXPECT_EQ(waves[0].approved_at, 0);
}

TYPED_TEST_P(StoreConformance, PipelineStatesAreUpsertedWithEveryColumn) {
  PipelineState both = Frozen("web");
  both.paused = true;
  both.paused_by = "alice";
  both.paused_at = 500;
  WriteBatch b;
  b.pipeline_states.push_back(both);
  this->Commit(b);
  ExpectSamePipelineState(both, Must(this->store().GetPipelineState("web"), "GetPipelineState"));

  PipelineState cleared;
  cleared.pipeline = "web";
  WriteBatch clear;
  clear.pipeline_states.push_back(cleared);
  this->Commit(clear);
  ExpectSamePipelineState(cleared, Must(this->store().GetPipelineState("web"), "GetPipelineState"));
}

TYPED_TEST_P(StoreConformance, APipelineNeverSwitchedHasTheDefaultState) {
  WriteBatch b;
  b.pipeline_states.push_back(Frozen("web"));
  b.holds.push_back(HoldBy("api", "engine", 10));
  this->Commit(b);
  PipelineState want;
  // Not stated in store.h: the name is filled in, as the engine reads this value, changes it
  // and writes it back whole (pipeline_states).
  want.pipeline = "never";
  ExpectSamePipelineState(want, Must(this->store().GetPipelineState("never"), "GetPipelineState"));
}

TYPED_TEST_P(StoreConformance, AHoldPausesAndKeepsAnOperatorsFreeze) {
  WriteBatch freeze;
  freeze.pipeline_states.push_back(Frozen("web"));
  this->Commit(freeze);
  WriteBatch hold;
  hold.holds.push_back(HoldBy("web", "engine: rollback release 9", 800));
  this->Commit(hold);
  PipelineState want = Frozen("web");
  want.paused = true;
  want.paused_by = "engine: rollback release 9";
  want.paused_at = 800;
  ExpectSamePipelineState(want, Must(this->store().GetPipelineState("web"), "GetPipelineState"));
}

TYPED_TEST_P(StoreConformance, AHoldPausesAPipelineNeverSwitched) {
  WriteBatch hold;
  hold.holds.push_back(HoldBy("web", "engine", 800));
  this->Commit(hold);
  PipelineState want;
  want.pipeline = "web";
  want.paused = true;
  want.paused_by = "engine";
  want.paused_at = 800;
  ExpectSamePipelineState(want, Must(this->store().GetPipelineState("web"), "GetPipelineState"));
}

// ----------------------------------------------------------------------------------- credentials

TYPED_TEST_P(StoreConformance, ACreatedTokenIsFoundByItsHashAndAudited) {
  TokenRecord t = NewToken("eu-enrollment", "hash-1");
  t.role = "agent";
  t.region = "eu-west-1";
  t.expires_at = 5000;
  ASSERT_TRUE(this->store().CreateToken(t, Entry("token.create", 10)).ok());
  auto found = Must(this->store().FindTokenByHash("hash-1"), "FindTokenByHash");
  ASSERT_TRUE(found.has_value());
  ExpectSameToken(t, *found);
  EXPECT_FALSE(Must(this->store().FindTokenByHash("hash-2"), "FindTokenByHash").has_value());
  auto entries = this->AuditLog();
  ASSERT_EQ(entries.size(), 1u);
  EXPECT_EQ(entries[0].action, "token.create");
}

TYPED_TEST_P(StoreConformance, ATokenNameIsTakenOnce) {
  ASSERT_TRUE(this->store().CreateToken(NewToken("ci", "hash-1"), Entry("token.create", 1)).ok());
  TokenRecord again = NewToken("ci", "hash-2");
  again.role = "admin";
  Status st = this->store().CreateToken(again, Entry("token.create", 2));
  EXPECT_EQ(st.code(), StatusCode::kAlreadyExists) << st.ToString();

  auto kept = Must(this->store().FindTokenByHash("hash-1"), "FindTokenByHash");
  ASSERT_TRUE(kept.has_value());
  ExpectSameToken(NewToken("ci", "hash-1"), *kept);
  EXPECT_FALSE(Must(this->store().FindTokenByHash("hash-2"), "FindTokenByHash").has_value());
  EXPECT_EQ(Must(this->store().CountTokens(), "CountTokens"), 1);
  EXPECT_EQ(this->AuditLog().size(), 1u);
  EXPECT_TRUE(this->store().CreateToken(NewToken("cd", "hash-3"), Entry("token.create", 3)).ok());
  this->ExpectWritable();
}

// Not stated in store.h for CountTokens: revoked tokens count, as the bootstrap admin token is
// minted only into a store with none (Authenticator::Bootstrap); revoking every token must not
// open that door again.
TYPED_TEST_P(StoreConformance, TokensAreCountedAndListedByNameRevokedOnesIncluded) {
  for (const char* name : {"zeta", "alpha", "mid"}) {
    ASSERT_TRUE(
        this->store()
            .CreateToken(NewToken(name, std::string("hash-") + name), Entry("token.create", 1))
            .ok());
  }
  ASSERT_TRUE(this->store().RevokeToken("mid", 700, "admin", Entry("token.revoke", 2)).ok());
  EXPECT_EQ(Must(this->store().CountTokens(), "CountTokens"), 3);
  auto list = Must(this->store().ListTokens(), "ListTokens");
  ASSERT_EQ(list.size(), 3u);
  ExpectSameToken(NewToken("alpha", "hash-alpha"), list[0]);
  TokenRecord revoked = NewToken("mid", "hash-mid");
  revoked.revoked_at = 700;
  revoked.revoked_by = "admin";
  ExpectSameToken(revoked, list[1]);
  ExpectSameToken(NewToken("zeta", "hash-zeta"), list[2]);
}

TYPED_TEST_P(StoreConformance, RevokingATokenRecordsWhoAndWhenAndIsAudited) {
  ASSERT_TRUE(this->store().CreateToken(NewToken("ci", "hash-1"), Entry("token.create", 1)).ok());
  ASSERT_TRUE(this->store().RevokeToken("ci", 700, "admin", Entry("token.revoke", 2)).ok());
  auto found = Must(this->store().FindTokenByHash("hash-1"), "FindTokenByHash");
  ASSERT_TRUE(found.has_value());
  EXPECT_EQ(found->revoked_at, 700);
  EXPECT_EQ(found->revoked_by, "admin");
  auto entries = this->AuditLog();
  ASSERT_EQ(entries.size(), 2u);
  EXPECT_EQ(entries[0].action, "token.revoke");
}

TYPED_TEST_P(StoreConformance, RevokingAnUnknownTokenIsNotFound) {
  ASSERT_TRUE(this->store().CreateToken(NewToken("ci", "hash-1"), Entry("token.create", 1)).ok());
  Status st = this->store().RevokeToken("cd", 700, "admin", Entry("token.revoke", 2));
  EXPECT_EQ(st.code(), StatusCode::kNotFound) << st.ToString();
  EXPECT_EQ(this->AuditLog().size(), 1u);
  auto kept = Must(this->store().FindTokenByHash("hash-1"), "FindTokenByHash");
  ASSERT_TRUE(kept.has_value());
  EXPECT_EQ(kept->revoked_at, 0);
  this->ExpectWritable();
}

TYPED_TEST_P(StoreConformance, RevokingATokenTwiceIsFailedPrecondition) {
  ASSERT_TRUE(this->store().CreateToken(NewToken("ci", "hash-1"), Entry("token.create", 1)).ok());
  ASSERT_TRUE(this->store().RevokeToken("ci", 700, "admin", Entry("token.revoke", 2)).ok());
  Status st = this->store().RevokeToken("ci", 800, "eve", Entry("token.revoke", 3));
  EXPECT_EQ(st.code(), StatusCode::kFailedPrecondition) << st.ToString();
  auto found = Must(this->store().FindTokenByHash("hash-1"), "FindTokenByHash");
  ASSERT_TRUE(found.has_value());
  EXPECT_EQ(found->revoked_at, 700);
  EXPECT_EQ(found->revoked_by, "admin");
  EXPECT_EQ(this->AuditLog().size(), 2u);
  this->ExpectWritable();
}

TYPED_TEST_P(StoreConformance, TouchingATokenRecordsItsLastUseUnaudited) {
  ASSERT_TRUE(this->store().CreateToken(NewToken("ci", "hash-1"), Entry("token.create", 1)).ok());
  ASSERT_TRUE(this->store().TouchToken("ci", 600).ok());
  auto found = Must(this->store().FindTokenByHash("hash-1"), "FindTokenByHash");
  ASSERT_TRUE(found.has_value());
  EXPECT_EQ(found->last_used_at, 600);
  ASSERT_TRUE(this->store().TouchToken("ci", 660).ok());
  found = Must(this->store().FindTokenByHash("hash-1"), "FindTokenByHash");
  ASSERT_TRUE(found.has_value());
  EXPECT_EQ(found->last_used_at, 660);
  EXPECT_EQ(this->AuditLog().size(), 1u);
}

TYPED_TEST_P(StoreConformance, AHostCredentialIsFoundByNameAndAudited) {
  const HostCredentialRecord c = NewCredential("web-1", "secret-hash-1");
  ASSERT_TRUE(this->store().IssueHostCredential(c, Entry("agent.enroll", 1)).ok());
  auto found = Must(this->store().FindHostCredential("web-1"), "FindHostCredential");
  ASSERT_TRUE(found.has_value());
  ExpectSameCredential(c, *found);
  EXPECT_FALSE(Must(this->store().FindHostCredential("web-2"), "FindHostCredential").has_value());
  auto entries = this->AuditLog();
  ASSERT_EQ(entries.size(), 1u);
  EXPECT_EQ(entries[0].action, "agent.enroll");
}

TYPED_TEST_P(StoreConformance, AHostIsEnrolledOnce) {
  const HostCredentialRecord c = NewCredential("web-1", "secret-hash-1");
  ASSERT_TRUE(this->store().IssueHostCredential(c, Entry("agent.enroll", 1)).ok());
  HostCredentialRecord again = NewCredential("web-1", "secret-hash-2");
  again.region = "us-east-1";
  Status st = this->store().IssueHostCredential(again, Entry("agent.enroll", 2));
  EXPECT_EQ(st.code(), StatusCode::kAlreadyExists) << st.ToString();
  auto found = Must(this->store().FindHostCredential("web-1"), "FindHostCredential");
  ASSERT_TRUE(found.has_value());
  ExpectSameCredential(c, *found);
  EXPECT_EQ(this->AuditLog().size(), 1u);
  this->ExpectWritable();
}

TYPED_TEST_P(StoreConformance, RemovingAnAgentForgetsItsRowAndItsCredential) {
  WriteBatch b;
  b.agents = {NewAgent("web-1", "eu-west-1"), NewAgent("web-2", "eu-west-1")};
  this->Commit(b);
  for (const char* name : {"web-1", "web-2"}) {
    ASSERT_TRUE(this->store()
                    .IssueHostCredential(NewCredential(name, std::string("hash-") + name),
                                         Entry("agent.enroll", 1))
                    .ok());
  }
  ASSERT_TRUE(this->store().RemoveAgent("web-1", Entry("agent.remove", 2)).ok());

  EXPECT_FALSE(Must(this->store().GetAgent("web-1"), "GetAgent").has_value());
  EXPECT_FALSE(Must(this->store().FindHostCredential("web-1"), "FindHostCredential").has_value());
  auto agents = Must(this->store().Agents(), "Agents");
  ASSERT_EQ(agents.size(), 1u);
  EXPECT_EQ(agents[0].name, "web-2");
  EXPECT_TRUE(Must(this->store().FindHostCredential("web-2"), "FindHostCredential").has_value());
  auto entries = this->AuditLog();
  ASSERT_FALSE(entries.empty());
  EXPECT_EQ(entries.front().action, "agent.remove");
  // Forgotten: the name may enroll again.
  EXPECT_TRUE(
      this->store()
          .IssueHostCredential(NewCredential("web-1", "hash-web-1-again"), Entry("agent.enroll", 3))
          .ok());
}

TYPED_TEST_P(StoreConformance, RemovingAnAgentWithOnlyARowOrOnlyACredentialSucceeds) {
  WriteBatch b;
  b.agents.push_back(NewAgent("row-only", "eu-west-1"));
  this->Commit(b);
  ASSERT_TRUE(
      this->store()
          .IssueHostCredential(NewCredential("credential-only", "hash-1"), Entry("agent.enroll", 1))
          .ok());
  Status row = this->store().RemoveAgent("row-only", Entry("agent.remove", 2));
  EXPECT_TRUE(row.ok()) << row.ToString();
  Status credential = this->store().RemoveAgent("credential-only", Entry("agent.remove", 3));
  EXPECT_TRUE(credential.ok()) << credential.ToString();
  EXPECT_THAT(Must(this->store().Agents(), "Agents"), IsEmpty());
  EXPECT_FALSE(
      Must(this->store().FindHostCredential("credential-only"), "FindHostCredential").has_value());
}

TYPED_TEST_P(StoreConformance, RemovingAnUnknownAgentIsNotFound) {
  WriteBatch b;
  b.agents.push_back(NewAgent("web-1", "eu-west-1"));
  this->Commit(b);
  const size_t audit_before = this->AuditLog().size();
  Status st = this->store().RemoveAgent("ghost", Entry("agent.remove", 2));
  EXPECT_EQ(st.code(), StatusCode::kNotFound) << st.ToString();
  EXPECT_EQ(this->AuditLog().size(), audit_before);
  EXPECT_EQ(Must(this->store().Agents(), "Agents").size(), 1u);
  this->ExpectWritable();
}

// ------------------------------------------------------------------ history rules over the store

TYPED_TEST_P(StoreConformance, OpenReleasesAreTheNonFinalOnesOldestFirst) {
  std::vector<int64_t> open_ids;
  for (const char* state :
       {release_state::kSucceeded, release_state::kRolling, release_state::kQueued,
        release_state::kFailed, release_state::kHalted, release_state::kRolledBack,
        release_state::kAborting, release_state::kAborted, release_state::kRollingBack,
        release_state::kSuperseded, release_state::kQueued}) {
    const ReleaseRecord r = this->Create("web", "v1", state);
    if (!release_state::IsFinal(state)) open_ids.push_back(r.id);
  }
  this->Create("api", "v1", release_state::kRolling);
  EXPECT_EQ(IdsOf(Must(OpenReleases(this->store(), "web"), "OpenReleases")), open_ids);
}

TYPED_TEST_P(StoreConformance, TheDesiredReleaseIsTheNewestSucceeded) {
  EXPECT_FALSE(Must(DesiredRelease(this->store(), "web"), "DesiredRelease").has_value());
  this->Create("web", "v0", release_state::kQueued);
  EXPECT_FALSE(Must(DesiredRelease(this->store(), "web"), "DesiredRelease").has_value());

  this->Create("web", "v1", release_state::kSucceeded);
  this->Create("web", "v0", release_state::kFailed, release_kind::kRollback);  // older than v2
  const ReleaseRecord v2 = this->Create("web", "v2", release_state::kSucceeded);
  this->Create("web", "v3", release_state::kFailed);
  this->Create("web", "v4", release_state::kRolledBack);
  this->Create("web", "v5", release_state::kAborted, release_kind::kRollback);
  this->Create("web", "v6", release_state::kRolling);
  this->Create("api", "v7", release_state::kSucceeded);
  this->Create("api", "v8", release_state::kFailed, release_kind::kRollback);
  EXPECT_EQ(IdOf(Must(DesiredRelease(this->store(), "web"), "DesiredRelease")), v2.id);
}

TYPED_TEST_P(StoreConformance, TheDesiredReleaseIsANewerOnCallRollbackEvenIfItFailed) {
  this->Create("web", "v1", release_state::kSucceeded);
  this->Create("web", "v2", release_state::kSucceeded);
  const ReleaseRecord rollback =
      this->Create("web", "v1", release_state::kFailed, release_kind::kRollback);
  EXPECT_EQ(IdOf(Must(DesiredRelease(this->store(), "web"), "DesiredRelease")), rollback.id);

  const ReleaseRecord v3 = this->Create("web", "v3", release_state::kSucceeded);
  EXPECT_EQ(IdOf(Must(DesiredRelease(this->store(), "web"), "DesiredRelease")), v3.id);

  const ReleaseRecord only =
      this->Create("api", "v1", release_state::kFailed, release_kind::kRollback);
  EXPECT_EQ(IdOf(Must(DesiredRelease(this->store(), "api"), "DesiredRelease")), only.id);
}

TYPED_TEST_P(StoreConformance, SucceededWithVersionIsTheNewestSucceededOfThatVersion) {
  this->Create("web", "v1", release_state::kSucceeded);
  const ReleaseRecord v2 = this->Create("web", "v2", release_state::kSucceeded);
  const ReleaseRecord v1_again =
      this->Create("web", "v1", release_state::kSucceeded, release_kind::kRollback);
  this->Create("web", "v1", release_state::kFailed);
  this->Create("web", "v1", release_state::kRolling);
  this->Create("api", "v1", release_state::kSucceeded);
  this->Create("web", "v3", release_state::kFailed);

  auto newest_succeeded = [this](const std::string& version) {
    return IdOf(Must(SucceededWithVersion(this->store(), "web", version), "SucceededWithVersion"));
  };
  EXPECT_EQ(newest_succeeded("v1"), v1_again.id);
  EXPECT_EQ(newest_succeeded("v2"), v2.id);
  EXPECT_FALSE(newest_succeeded("v3").has_value()) << "v3 never succeeded";
  EXPECT_FALSE(newest_succeeded("v9").has_value());
}

TYPED_TEST_P(StoreConformance, FirstWithArtifactIsTheOldestOfThatVersionThatHasADigest) {
  this->Create("api", "v1", release_state::kSucceeded);
  // A push's release still waiting for its artifact has no digest yet: it names nothing.
  ReleaseRecord waiting = NewRelease("web", "v1");
  waiting.sha256.clear();
  waiting.state = release_state::kWaitingForArtifact;
  ASSERT_TRUE(this->store().CreateRelease(waiting, Entry("release.create", 1)).ok());
  const ReleaseRecord first = this->Create("web", "v1", release_state::kFailed);
  this->Create("web", "v1", release_state::kSucceeded);
  const ReleaseRecord v2 = this->Create("web", "v2", release_state::kQueued);

  auto first_of = [this](const std::string& version) {
    return IdOf(Must(FirstWithArtifact(this->store(), "web", version), "FirstWithArtifact"));
  };
  EXPECT_EQ(first_of("v1"), first.id);
  EXPECT_EQ(first_of("v2"), v2.id);
  EXPECT_FALSE(first_of("v9").has_value());
}

// --------------------------------------------------------------------------------- request ids

inline ReleaseRecord Requested(const std::string& pipeline, const std::string& version,
                               const std::string& request_id) {
  ReleaseRecord r = NewRelease(pipeline, version);
  r.request_id = request_id;
  return r;
}

// Whether `message` names release `id` as "release <id>" (and not "release <id>7").
inline bool NamesRelease(const std::string& message, int64_t id) {
  const std::string named = "release " + std::to_string(id);
  for (size_t at = message.find(named); at != std::string::npos; at = message.find(named, at + 1)) {
    const size_t after = at + named.size();
    if (after == message.size() || !std::isdigit(static_cast<unsigned char>(message[after]))) {
      return true;
    }
  }
  return false;
}

TYPED_TEST_P(StoreConformance, ASecondReleaseWithTheSameRequestIdIsRefusedNamingTheFirst) {
  auto first =
      this->store().CreateRelease(Requested("web", "v1", "req-1"), Entry("release.create", 1));
  ASSERT_TRUE(first.ok()) << first.status().ToString();
  EXPECT_EQ(first->request_id, "req-1");

  auto again =
      this->store().CreateRelease(Requested("web", "v2", "req-1"), Entry("release.create", 2));
  ASSERT_FALSE(again.ok()) << "a second release " << again->id << " with request id req-1";
  EXPECT_EQ(again.status().code(), StatusCode::kAlreadyExists) << again.status().ToString();
  EXPECT_TRUE(NamesRelease(again.status().message(), first->id))
      << "the refusal should name release " << first->id << ": " << again.status().ToString();

  ReleaseQuery all;
  all.limit = 0;
  EXPECT_THAT(this->Ids(all), ElementsAre(first->id));
  const ReleaseRecord stored = this->Reread(first->id);
  EXPECT_EQ(stored.version, "v1");
  EXPECT_EQ(stored.request_id, "req-1");
  auto entries = this->AuditLog();
  ASSERT_EQ(entries.size(), 1u) << "the refused creation wrote an audit entry";
  EXPECT_EQ(entries[0].at, 1);
  this->ExpectWritable();
}

TYPED_TEST_P(StoreConformance, ARequestIdIsPerPipelineAndAnEmptyOneNeverCollides) {
  const ReleaseRecord web =
      Must(this->store().CreateRelease(Requested("web", "v1", "req-1"), Entry("release.create", 1)),
           "CreateRelease web req-1");
  const ReleaseRecord api =
      Must(this->store().CreateRelease(Requested("api", "v1", "req-1"), Entry("release.create", 2)),
           "CreateRelease api req-1");
  const ReleaseRecord plain =
      Must(this->store().CreateRelease(NewRelease("web", "v2"), Entry("release.create", 3)),
           "CreateRelease without a request id");
  const ReleaseRecord plain_again =
      Must(this->store().CreateRelease(NewRelease("web", "v2"), Entry("release.create", 4)),
           "CreateRelease without a request id, again");

  EXPECT_GT(api.id, web.id);
  EXPECT_GT(plain.id, api.id);
  EXPECT_GT(plain_again.id, plain.id);
  EXPECT_EQ(this->Reread(web.id).request_id, "req-1");
  EXPECT_EQ(this->Reread(api.id).request_id, "req-1");
  EXPECT_EQ(this->Reread(plain.id).request_id, "");
  EXPECT_EQ(this->Reread(plain_again.id).request_id, "");
  ReleaseQuery all;
  all.limit = 0;
  EXPECT_THAT(this->Ids(all), ElementsAre(plain_again.id, plain.id, api.id, web.id));
  EXPECT_EQ(this->AuditLog().size(), 4u);
}

TYPED_TEST_P(StoreConformance, FindReleasesByRequestId) {
  const ReleaseRecord web =
      Must(this->store().CreateRelease(Requested("web", "v1", "req-1"), Entry("release.create", 1)),
           "CreateRelease web req-1");
  const ReleaseRecord api =
      Must(this->store().CreateRelease(Requested("api", "v1", "req-1"), Entry("release.create", 2)),
           "CreateRelease api req-1");
  const ReleaseRecord other =
      Must(this->store().CreateRelease(Requested("web", "v2", "req-2"), Entry("release.create", 3)),
           "CreateRelease web req-2");
  const ReleaseRecord without = this->Create("web", "v3");
  // The engine's upserts carry the record as read; the request id stays.
  ReleaseRecord moved = web;
  moved.state = release_state::kSucceeded;
  WriteBatch b;
  b.releases.push_back(moved);
  this->Commit(b);

  ReleaseQuery q;
  q.request_id = "req-1";
  auto found = Must(this->store().FindReleases(q), "FindReleases");
  ASSERT_EQ(found.size(), 2u);
  ReleaseRecord want_api = Requested("api", "v1", "req-1");
  want_api.id = api.id;
  ExpectSameRelease(want_api, found[0]);
  EXPECT_EQ(found[0].request_id, "req-1");
  ReleaseRecord want_web = Requested("web", "v1", "req-1");
  want_web.id = web.id;
  want_web.state = release_state::kSucceeded;
  ExpectSameRelease(want_web, found[1]);
  EXPECT_EQ(found[1].request_id, "req-1");
  ExpectSameRelease(want_web, this->Reread(web.id));
  EXPECT_EQ(this->Reread(web.id).request_id, "req-1");

  q.pipeline = "web";
  EXPECT_THAT(this->Ids(q), ElementsAre(web.id));
  q.request_id = "req-2";
  EXPECT_THAT(this->Ids(q), ElementsAre(other.id));
  q.pipeline = "api";
  EXPECT_THAT(this->Ids(q), IsEmpty());
  q.pipeline = "";
  q.request_id = "req-9";
  EXPECT_THAT(this->Ids(q), IsEmpty());
  ReleaseQuery any;  // an empty request id matches every release, with one or without
  any.limit = 0;
  EXPECT_THAT(this->Ids(any), ElementsAre(without.id, other.id, api.id, web.id));
}

// The same push delivered to two lockstepd at once makes one release.
TYPED_TEST_P(StoreConformance, OfConcurrentCreatesWithOneRequestIdOnlyOneIsMade) {
  constexpr size_t kCreates = 8;
  std::vector<int64_t> made(kCreates, 0);
  std::vector<Status> refusals(kCreates);
  std::vector<std::thread> threads;
  Store* shared = &this->store();
  for (size_t i = 0; i < kCreates; ++i) {
    threads.emplace_back([shared, &made, &refusals, i] {
      auto created = shared->CreateRelease(Requested("web", "v" + std::to_string(i), "push-c0ffee"),
                                           Entry("release.create", 10 + static_cast<UnixMs>(i)));
      if (created.ok()) {
        made[i] = created->id;
      } else {
        refusals[i] = created.status();
      }
    });
  }
  for (auto& thread : threads) thread.join();

  size_t winners = 0;
  int64_t winner = 0;
  for (size_t i = 0; i < kCreates; ++i) {
    if (made[i] != 0) {
      ++winners;
      winner = made[i];
    }
  }
  ASSERT_EQ(winners, 1u);
  for (size_t i = 0; i < kCreates; ++i) {
    if (made[i] != 0) continue;
    EXPECT_EQ(refusals[i].code(), StatusCode::kAlreadyExists) << refusals[i].ToString();
    EXPECT_TRUE(NamesRelease(refusals[i].message(), winner))
        << "the refusal should name release " << winner << ": " << refusals[i].ToString();
  }
  ReleaseQuery all;
  all.limit = 0;
  EXPECT_THAT(this->Ids(all), ElementsAre(winner));
  EXPECT_EQ(this->AuditLog().size(), 1u);
  this->ExpectWritable();
}

// -------------------------------------------------------------------------------------- outbox

inline OutboxRecord NewOutboxRow(const std::string& event, UnixMs next_attempt_at) {
  OutboxRecord o;
  o.created_at = 100;
  o.pipeline = "web";
  o.event = event;
  o.url = "https://hooks.example/" + event;
  o.payload = "{\"event\":\"" + event + "\"}";
  o.next_attempt_at = next_attempt_at;
  return o;
}

// Delivery progress of row `id`: the columns an outbox update writes, nothing else set.
inline OutboxRecord Progress(int64_t id, int attempts, UnixMs next_attempt_at, UnixMs done_at,
                             const std::string& outcome) {
  OutboxRecord o;
  o.id = id;
  o.attempts = attempts;
  o.next_attempt_at = next_attempt_at;
  o.done_at = done_at;
  o.outcome = outcome;
  return o;
}

// The id is the store's; every other field must come back as written.
inline void ExpectSameOutboxRow(const OutboxRecord& want, const OutboxRecord& got) {
  EXPECT_EQ(got.created_at, want.created_at);
  EXPECT_EQ(got.pipeline, want.pipeline);
  EXPECT_EQ(got.event, want.event);
  EXPECT_EQ(got.url, want.url);
  EXPECT_EQ(got.payload, want.payload);
  EXPECT_EQ(got.attempts, want.attempts);
  EXPECT_EQ(got.next_attempt_at, want.next_attempt_at);
  EXPECT_EQ(got.done_at, want.done_at);
  EXPECT_EQ(got.outcome, want.outcome);
}

inline std::vector<int64_t> PendingOutboxIds(StoreReader& reader, UnixMs due_by, int limit) {
  std::vector<int64_t> ids;
  for (const auto& o : Must(reader.PendingOutbox(due_by, limit), "PendingOutbox")) {
    ids.push_back(o.id);
  }
  return ids;
}

TYPED_TEST_P(StoreConformance, OutboxRowsArePendingInWriteOrderWithEveryField) {
  EXPECT_THAT(Must(this->store().PendingOutbox(1000, 10), "PendingOutbox"), IsEmpty());
  OutboxRecord started = NewOutboxRow("release_started", 300);
  started.created_at = 90;
  OutboxRecord retried = NewOutboxRow("wave_done", 100);
  retried.pipeline = "api";
  retried.attempts = 2;
  retried.outcome = "HTTP 503 from hooks.example";
  retried.payload = "{\"text\":\"wave \\\"canary\\\" done\\n caf\xc3\xa9 \\u2713\"}";
  const OutboxRecord succeeded = NewOutboxRow("succeeded", 200);
  WriteBatch first;
  first.outbox = {started, retried, succeeded};
  this->Commit(first);
  const OutboxRecord failed = NewOutboxRow("release_failed", 50);
  WriteBatch second;
  second.outbox.push_back(failed);
  second.audit.push_back(Entry("release.fail", 5));
  this->Commit(second);

  // Oldest first: in write order, whatever their next attempt.
  auto pending = Must(this->store().PendingOutbox(1000, 10), "PendingOutbox");
  ASSERT_EQ(pending.size(), 4u);
  ExpectSameOutboxRow(started, pending[0]);
  ExpectSameOutboxRow(retried, pending[1]);
  ExpectSameOutboxRow(succeeded, pending[2]);
  ExpectSameOutboxRow(failed, pending[3]);
  EXPECT_GT(pending[0].id, 0);
  EXPECT_GT(pending[1].id, pending[0].id);
  EXPECT_GT(pending[2].id, pending[1].id);
  EXPECT_GT(pending[3].id, pending[2].id);
}

TYPED_TEST_P(StoreConformance, OnlyOutboxRowsDueArePendingAtMostLimit) {
  WriteBatch b;
  b.outbox = {NewOutboxRow("release_started", 100), NewOutboxRow("wave_done", 300),
              NewOutboxRow("succeeded", 200), NewOutboxRow("release_failed", 201)};
  this->Commit(b);
  const std::vector<int64_t> ids = PendingOutboxIds(this->store(), 1000, 10);
  ASSERT_EQ(ids.size(), 4u);

  EXPECT_THAT(PendingOutboxIds(this->store(), 200, 10), ElementsAre(ids[0], ids[2]));
  EXPECT_THAT(PendingOutboxIds(this->store(), 99, 10), IsEmpty());
  EXPECT_THAT(PendingOutboxIds(this->store(), 100, 10), ElementsAre(ids[0]));
  EXPECT_THAT(PendingOutboxIds(this->store(), 300, 10),
              ElementsAre(ids[0], ids[1], ids[2], ids[3]));
  EXPECT_THAT(PendingOutboxIds(this->store(), 1000, 2), ElementsAre(ids[0], ids[1]));
  EXPECT_THAT(PendingOutboxIds(this->store(), 1000, 1), ElementsAre(ids[0]));
  EXPECT_THAT(PendingOutboxIds(this->store(), 201, 2), ElementsAre(ids[0], ids[2]));
}

TYPED_TEST_P(StoreConformance, OutboxUpdatesRecordDeliveryProgress) {
  WriteBatch b;
  b.outbox = {NewOutboxRow("release_started", 100), NewOutboxRow("wave_done", 100),
              NewOutboxRow("succeeded", 100)};
  this->Commit(b);
  const auto rows = Must(this->store().PendingOutbox(1000, 10), "PendingOutbox");
  ASSERT_EQ(rows.size(), 3u);

  // The first is delivered, the second failed and waits for its retry, and another leader
  // already finished a row this store no longer has: that update is ignored.
  WriteBatch progress;
  progress.outbox_updates = {Progress(rows[0].id, 1, 100, 500, "delivered"),
                             Progress(rows[1].id, 1, 600, 0, "HTTP 502 Bad Gateway"),
                             Progress(rows[2].id + 1000, 3, 0, 500, "delivered")};
  this->Commit(progress);

  auto pending = Must(this->store().PendingOutbox(1000, 10), "PendingOutbox");
  ASSERT_EQ(pending.size(), 2u);
  OutboxRecord retrying = rows[1];
  retrying.attempts = 1;
  retrying.next_attempt_at = 600;
  retrying.outcome = "HTTP 502 Bad Gateway";
  EXPECT_EQ(pending[0].id, rows[1].id);
  ExpectSameOutboxRow(retrying, pending[0]);
  EXPECT_EQ(pending[1].id, rows[2].id);
  ExpectSameOutboxRow(rows[2], pending[1]);
  EXPECT_THAT(PendingOutboxIds(this->store(), 599, 10), ElementsAre(rows[2].id));

  // A batch of nothing but an unknown row's progress is accepted too.
  WriteBatch stray;
  stray.outbox_updates.push_back(Progress(rows[2].id + 2000, 1, 0, 700, "delivered"));
  this->Commit(stray);
  // Given up on: done, with the failure as its outcome.
  WriteBatch give_up;
  give_up.outbox_updates.push_back(
      Progress(rows[1].id, 5, 600, 700, "failed: HTTP 502 Bad Gateway"));
  this->Commit(give_up);
  EXPECT_THAT(PendingOutboxIds(this->store(), 1000, 10), ElementsAre(rows[2].id));
}

TYPED_TEST_P(StoreConformance, ARefusedBatchWritesNoOutboxRowAndNoProgress) {
  WriteBatch seed;
  seed.outbox.push_back(NewOutboxRow("release_started", 100));
  this->Commit(seed);
  const auto before = Must(this->store().PendingOutbox(1000, 10), "PendingOutbox");
  ASSERT_EQ(before.size(), 1u);

  const ReleaseRecord r = this->RollingAwaitingApproval();
  WriteBatch b = EverythingAbout(r);
  b.outbox.push_back(NewOutboxRow("succeeded", 100));
  b.outbox_updates.push_back(Progress(before[0].id, 1, 100, 900, "delivered"));
  ReleaseRecord stale = r;
  stale.state = release_state::kQueued;
  b.expect.push_back(Unchanged(stale));
  this->ExpectRefused(b, StatusCode::kFailedPrecondition, r.id, r.id);

  const auto after = Must(this->store().PendingOutbox(1000, 10), "PendingOutbox");
  ASSERT_EQ(after.size(), 1u);
  EXPECT_EQ(after[0].id, before[0].id);
  ExpectSameOutboxRow(before[0], after[0]);
}

// --------------------------------------------------------------------------------------- lease

// A claim by `holder` whose ttl outlasts any test: the lease never expires by itself here.
inline LeaseClaim ClaimBy(const std::string& holder) {
  LeaseClaim c;
  c.holder = holder;
  c.grpc_address = holder + ".internal:9443";
  c.http_url = "https://" + holder + ".internal:8443";
  c.ttl_ms = 60000;
  return c;
}

// `lease` is held by `claim`'s holder at `epoch`, with `claim`'s addresses, and not expired.
inline void ExpectHeld(const LeaseRecord& lease, const LeaseClaim& claim, int64_t epoch) {
  EXPECT_EQ(lease.holder, claim.holder);
  EXPECT_EQ(lease.epoch, epoch);
  EXPECT_EQ(lease.grpc_address, claim.grpc_address);
  EXPECT_EQ(lease.http_url, claim.http_url);
  EXPECT_GT(lease.remaining_ms, 0);
  EXPECT_LE(lease.remaining_ms, claim.ttl_ms);
}

TYPED_TEST_P(StoreConformance, ALeaseNeverClaimedIsAtEpochZeroAndHeldByNobody) {
  const LeaseRecord lease = Must(this->store().ReadLease(), "ReadLease");
  EXPECT_EQ(lease.epoch, 0);
  EXPECT_EQ(lease.holder, "");
  EXPECT_LE(lease.remaining_ms, 0);
}

TYPED_TEST_P(StoreConformance, TheFirstClaimTakesTheLeaseAtEpochOneAndRenewingKeepsTheEpoch) {
  const LeaseClaim a = ClaimBy("lockstepd-a");
  const LeaseRecord taken = Must(this->store().ClaimLease(a), "ClaimLease");
  ExpectHeld(taken, a, 1);
  ExpectHeld(Must(this->store().ReadLease(), "ReadLease"), a, 1);

  // Renewed from other addresses (the holder's listeners moved): same epoch, new addresses.
  LeaseClaim moved = a;
  moved.grpc_address = "10.0.0.7:9443";
  moved.http_url = "https://10.0.0.7:8443";
  ExpectHeld(Must(this->store().ClaimLease(moved), "ClaimLease (renewal)"), moved, taken.epoch);
  ExpectHeld(Must(this->store().ReadLease(), "ReadLease"), moved, taken.epoch);
  ExpectHeld(Must(this->store().ClaimLease(moved), "ClaimLease (renewal)"), moved, taken.epoch);
}

TYPED_TEST_P(StoreConformance, AClaimWhileAnotherHoldsTheLeaseReturnsTheHoldersLease) {
  const LeaseClaim a = ClaimBy("lockstepd-a");
  const LeaseClaim other = ClaimBy("lockstepd-b");
  const LeaseRecord taken = Must(this->store().ClaimLease(a), "ClaimLease a");
  ExpectHeld(taken, a, 1);
  ExpectHeld(Must(this->store().ClaimLease(other), "ClaimLease b"), a, taken.epoch);
  ExpectHeld(Must(this->store().ReadLease(), "ReadLease"), a, taken.epoch);
  ExpectHeld(Must(this->store().ClaimLease(a), "ClaimLease a (renewal)"), a, taken.epoch);
}

TYPED_TEST_P(StoreConformance, ReleasingWithAnotherHolderOrEpochDoesNothing) {
  const LeaseClaim a = ClaimBy("lockstepd-a");
  const LeaseClaim other = ClaimBy("lockstepd-b");
  const LeaseRecord taken = Must(this->store().ClaimLease(a), "ClaimLease a");
  ExpectHeld(taken, a, 1);

  Status wrong_holder = this->store().ReleaseLease(other.holder, taken.epoch);
  EXPECT_TRUE(wrong_holder.ok()) << wrong_holder.ToString();
  Status wrong_epoch = this->store().ReleaseLease(a.holder, taken.epoch + 1);
  EXPECT_TRUE(wrong_epoch.ok()) << wrong_epoch.ToString();
  Status old_epoch = this->store().ReleaseLease(a.holder, taken.epoch - 1);
  EXPECT_TRUE(old_epoch.ok()) << old_epoch.ToString();

  ExpectHeld(Must(this->store().ReadLease(), "ReadLease"), a, taken.epoch);
  ExpectHeld(Must(this->store().ClaimLease(other), "ClaimLease b"), a, taken.epoch);
}

TYPED_TEST_P(StoreConformance, AReleasedLeaseIsTakenByAnotherAtTheNextEpoch) {
  const LeaseClaim a = ClaimBy("lockstepd-a");
  const LeaseClaim other = ClaimBy("lockstepd-b");
  const LeaseRecord taken = Must(this->store().ClaimLease(a), "ClaimLease a");
  ExpectHeld(taken, a, 1);

  ASSERT_TRUE(this->store().ReleaseLease(a.holder, taken.epoch).ok());
  const LeaseRecord released = Must(this->store().ReadLease(), "ReadLease");
  EXPECT_EQ(released.epoch, taken.epoch);
  EXPECT_LE(released.remaining_ms, 0) << "a released lease is expired at once";

  const LeaseRecord took = Must(this->store().ClaimLease(other), "ClaimLease b");
  ExpectHeld(took, other, taken.epoch + 1);
  ExpectHeld(Must(this->store().ReadLease(), "ReadLease"), other, taken.epoch + 1);
}

// A holder that missed its hand-over (a paused process) keeps renewing: it must learn it lost
// the lease, and change nothing.
TYPED_TEST_P(StoreConformance, RenewalsByAFormerHolderReturnTheNewHoldersLeaseUnchanged) {
  const LeaseClaim a = ClaimBy("lockstepd-a");
  const LeaseClaim other = ClaimBy("lockstepd-b");
  const LeaseRecord taken = Must(this->store().ClaimLease(a), "ClaimLease a");
  ASSERT_TRUE(this->store().ReleaseLease(a.holder, taken.epoch).ok());
  const LeaseRecord took = Must(this->store().ClaimLease(other), "ClaimLease b");
  ExpectHeld(took, other, taken.epoch + 1);

  LeaseClaim late = a;
  late.grpc_address = "10.0.0.9:9443";
  ExpectHeld(Must(this->store().ClaimLease(late), "ClaimLease a (late renewal)"), other,
             took.epoch);
  ExpectHeld(Must(this->store().ClaimLease(a), "ClaimLease a (late renewal)"), other, took.epoch);
  // Nor does its late release hand the new holder's lease over.
  ASSERT_TRUE(this->store().ReleaseLease(a.holder, taken.epoch).ok());
  ASSERT_TRUE(this->store().ReleaseLease(a.holder, took.epoch).ok());
  ExpectHeld(Must(this->store().ReadLease(), "ReadLease"), other, took.epoch);
}

// ------------------------------------------------------------------------------------ fencing

TYPED_TEST_P(StoreConformance, AfterTheLeaseMovedOnAFencedStoreRefusesEveryWrite) {
  const LeaseClaim a = ClaimBy("lockstepd-a");
  const LeaseRecord mine = Must(this->store().ClaimLease(a), "ClaimLease a");
  ASSERT_EQ(mine.holder, a.holder);
  this->store().FenceWrites(mine.epoch);
  WriteBatch leading;
  leading.audit.push_back(Entry("conformance.while-leading", 10));
  Status st = this->store().Write(leading);
  ASSERT_TRUE(st.ok()) << "a fenced write while holding the lease: " << st.ToString();
  const ReleaseRecord r = this->Create("web", "v1");

  // Another process takes over (here through the same store object, as the lease is the
  // database's, not the process's).
  ASSERT_TRUE(this->store().ReleaseLease(a.holder, mine.epoch).ok());
  const LeaseRecord theirs = Must(this->store().ClaimLease(ClaimBy("lockstepd-b")), "ClaimLease b");
  ASSERT_EQ(theirs.holder, "lockstepd-b");
  ASSERT_EQ(theirs.epoch, mine.epoch + 1);
  const std::vector<AuditRecord> audit_before = this->AuditLog();

  WriteBatch late;
  late.audit.push_back(Entry("conformance.after-losing-the-lease", 20));
  st = this->store().Write(late);
  EXPECT_EQ(st.code(), StatusCode::kFailedPrecondition) << st.ToString();
  EXPECT_NE(st.message().find("lost the leader lease"), std::string::npos) << st.ToString();

  // Every later write is refused too, though FenceWrites is not called again.
  auto created = this->store().CreateRelease(NewRelease("web", "v2"), Entry("release.create", 30));
  EXPECT_FALSE(created.ok()) << "release " << created->id
                             << " was created by a store that lost the lease";
  ReleaseRecord moved = r;
  moved.state = release_state::kRolling;
  WriteBatch upsert;
  upsert.releases.push_back(moved);
  Status upserted = this->store().Write(upsert);
  EXPECT_FALSE(upserted.ok()) << "a release upsert by a store that lost the lease";
  Status again = this->store().Write(late);
  EXPECT_FALSE(again.ok()) << "an audit entry by a store that lost the lease";

  // Reads still work, and show none of it.
  const std::vector<AuditRecord> audit_after = this->AuditLog();
  ASSERT_EQ(audit_after.size(), audit_before.size());
  for (size_t i = 0; i < audit_before.size(); ++i) {
    ExpectSameAudit(audit_before[i], audit_after[i]);
  }
  ReleaseQuery all;
  all.limit = 0;
  EXPECT_THAT(this->Ids(all), ElementsAre(r.id));
  EXPECT_EQ(this->Reread(r.id).state, release_state::kQueued);
  ExpectHeld(Must(this->store().ReadLease(), "ReadLease"), ClaimBy("lockstepd-b"), theirs.epoch);
}

TYPED_TEST_P(StoreConformance, WritesAreNotFencedByDefault) {
  const LeaseClaim a = ClaimBy("lockstepd-a");
  const LeaseRecord mine = Must(this->store().ClaimLease(a), "ClaimLease a");
  ASSERT_TRUE(this->store().ReleaseLease(a.holder, mine.epoch).ok());
  const LeaseRecord theirs = Must(this->store().ClaimLease(ClaimBy("lockstepd-b")), "ClaimLease b");
  ASSERT_EQ(theirs.epoch, mine.epoch + 1);

  // FenceWrites was never called: the lease moving on does not concern this store's writes.
  WriteBatch b;
  b.audit.push_back(Entry("conformance.unfenced", 10));
  b.outbox.push_back(NewOutboxRow("release_started", 100));
  this->Commit(b);
  const ReleaseRecord r = this->Create("web", "v1", release_state::kRolling);
  EXPECT_EQ(this->Reread(r.id).state, release_state::kRolling);
  EXPECT_EQ(PendingOutboxIds(this->store(), 1000, 10).size(), 1u);
  this->ExpectWritable();
}

// ------------------------------------------------ creators, host failures, filtered history

TYPED_TEST_P(StoreConformance, TheCreatorRoundTripsAndAnUpsertKeepsIt) {
  ReleaseRecord wanted = NewRelease("web", "v1");
  wanted.commit = "c1";
  wanted.author = "ada";
  wanted.created_by = "otto-on-call";
  wanted.kind = release_kind::kRollback;
  auto created = this->store().CreateRelease(wanted, Entry("pipeline.rollback", 1));
  ASSERT_TRUE(created.ok()) << created.status().ToString();
  wanted.id = created->id;
  ExpectSameRelease(wanted, *created);
  ExpectSameRelease(wanted, this->Reread(created->id));
  ReleaseQuery by_commit;
  by_commit.commit = "c1";
  auto found = Must(this->store().FindReleases(by_commit), "FindReleases");
  ASSERT_EQ(found.size(), 1u);
  ExpectSameRelease(wanted, found[0]);

  // Any text, and none at all (a release made before its creator was kept).
  ReleaseRecord unusual = NewRelease("web", "v2");
  unusual.created_by = "d\xc3\xa9ploy \"bot\" 100%_done";
  const ReleaseRecord stored = this->CreateAs(unusual, release_state::kQueued);
  EXPECT_EQ(this->Reread(stored.id).created_by, unusual.created_by);
  const ReleaseRecord nobody = this->Create("web", "v3");
  EXPECT_EQ(this->Reread(nobody.id).created_by, "");

  // Who made it is identity: the engine's upsert never writes it.
  ReleaseRecord moved = *created;
  moved.state = release_state::kSucceeded;
  moved.finished_at = 3000;
  moved.created_by = "someone-else";
  WriteBatch b;
  b.releases.push_back(moved);
  this->Commit(b);
  moved.created_by = "otto-on-call";
  ExpectSameRelease(moved, this->Reread(created->id));
}

TYPED_TEST_P(StoreConformance, AHostsFailureRoundTripsThroughItsRevertAndIsClearedOnlyWhenWritten) {
  const ReleaseRecord r = this->Create("web", "v2");
  HostRecord failed = NewHost(r.id, "web-1", "eu-west-1", 0);
  failed.state = host_state::kFailed;
  failed.detail = "activate failed at check: deploy/check of v2 exited with status 1";
  failed.failure = failed.detail;
  failed.step = host_step::kActivate;
  failed.switch_sent = true;
  HostRecord healthy = NewHost(r.id, "web-2", "eu-west-1", 0);
  healthy.state = host_state::kDone;
  healthy.detail = "running v2";
  WriteBatch b;
  b.hosts = {failed, healthy};
  this->Commit(b);
  auto hosts = Must(this->store().Hosts(r.id), "Hosts");
  ASSERT_EQ(hosts.size(), 2u);
  ExpectSameHost(failed, hosts[0]);
  ExpectSameHost(healthy, hosts[1]);

  // Reverted, the host tells what it does now and still what it failed with.
  failed.state = host_state::kReverted;
  failed.detail = "reverted to v1";
  failed.step = host_step::kRevert;
  healthy.state = host_state::kReverted;
  healthy.detail = "reverted to v1";
  WriteBatch reverted;
  reverted.hosts = {failed, healthy};
  this->Commit(reverted);
  hosts = Must(this->store().Hosts(r.id), "Hosts");
  ASSERT_EQ(hosts.size(), 2u);
  ExpectSameHost(failed, hosts[0]);
  ExpectSameHost(healthy, hosts[1]);
  EXPECT_EQ(hosts[0].failure, "activate failed at check: deploy/check of v2 exited with status 1");
  EXPECT_EQ(hosts[1].failure, "");

  // Any text, of any length the engine writes.
  failed.failure = Utf8Text(4096);
  WriteBatch big;
  big.hosts.push_back(failed);
  this->Commit(big);
  hosts = Must(this->store().Hosts(r.id), "Hosts");
  ASSERT_EQ(hosts.size(), 2u);
  EXPECT_TRUE(hosts[0].failure == failed.failure) << "the 4 KiB failure came back changed";

  failed.state = host_state::kDone;
  failed.detail = "running v2";
  failed.failure.clear();
  WriteBatch cleared;
  cleared.hosts.push_back(failed);
  this->Commit(cleared);
  hosts = Must(this->store().Hosts(r.id), "Hosts");
  ASSERT_EQ(hosts.size(), 2u);
  ExpectSameHost(failed, hosts[0]);
}

TYPED_TEST_P(StoreConformance, FindReleasesByActorMatchesTheAuthorOrTheCreatorExactly) {
  auto make = [this](const std::string& author, const std::string& created_by) {
    ReleaseRecord r = NewRelease("web", "v-" + author + "-" + created_by);
    r.author = author;
    r.created_by = created_by;
    return this->CreateAs(r, release_state::kSucceeded).id;
  };
  const int64_t pushed = make("ada", "github");
  const int64_t for_bob = make("bob", "ada");
  const int64_t both = make("ada", "ada");
  const int64_t capital = make("Ada", "");
  const int64_t longer = make("ada-l", "adam");
  const int64_t only_creator = make("", "carol");
  const int64_t neither = make("", "");

  ReleaseQuery q;
  q.limit = 0;
  q.actor = "ada";
  EXPECT_THAT(this->Ids(q), ElementsAre(both, for_bob, pushed));
  q.actor = "github";
  EXPECT_THAT(this->Ids(q), ElementsAre(pushed));
  q.actor = "Ada";
  EXPECT_THAT(this->Ids(q), ElementsAre(capital));
  q.actor = "carol";
  EXPECT_THAT(this->Ids(q), ElementsAre(only_creator));
  q.actor = "adam";
  EXPECT_THAT(this->Ids(q), ElementsAre(longer));
  for (const char* none : {"ad", "a%", "ad_", "ADA", "nobody"}) {
    q.actor = none;
    EXPECT_THAT(this->Ids(q), IsEmpty()) << "actor " << none;
  }
  q.actor = "";
  EXPECT_THAT(this->Ids(q),
              ElementsAre(neither, only_creator, longer, capital, both, for_bob, pushed));
}

TYPED_TEST_P(StoreConformance, FindReleasesByCreationTimeIncludesBothBounds) {
  auto at = [this](UnixMs created_at) {
    ReleaseRecord r = NewRelease("web", "v" + std::to_string(created_at));
    r.created_at = created_at;
    return this->CreateAs(r, release_state::kSucceeded).id;
  };
  const int64_t t1000 = at(1000);
  const int64_t t2000 = at(2000);
  const int64_t t2000b = at(2000);
  const int64_t t3000 = at(3000);
  const int64_t t4000 = at(4000);
  const int64_t t1500 = at(1500);  // a later id with an earlier time: still ordered by id

  ReleaseQuery q;
  q.limit = 0;
  q.created_from = 2000;
  EXPECT_THAT(this->Ids(q), ElementsAre(t4000, t3000, t2000b, t2000));
  q.created_from = 0;
  q.created_to = 2000;
  EXPECT_THAT(this->Ids(q), ElementsAre(t1500, t2000b, t2000, t1000));
  q.created_from = 1500;
  q.created_to = 3000;
  EXPECT_THAT(this->Ids(q), ElementsAre(t1500, t3000, t2000b, t2000));
  q.created_from = 3000;
  q.created_to = 3000;
  EXPECT_THAT(this->Ids(q), ElementsAre(t3000));
  q.created_from = 2001;
  q.created_to = 2999;
  EXPECT_THAT(this->Ids(q), IsEmpty());
  q.created_from = 4001;
  q.created_to = 0;
  EXPECT_THAT(this->Ids(q), IsEmpty());
  q.created_from = 0;
  q.created_to = 999;
  EXPECT_THAT(this->Ids(q), IsEmpty());
}

TYPED_TEST_P(StoreConformance, FindReleasesCombinesActorAndCreationTimeWithEveryOtherFilter) {
  // Each release but the matching ones differs from them in exactly one filtered field.
  auto make = [this](const std::string& pipeline, const std::string& state,
                     const std::string& author, const std::string& created_by, UnixMs created_at) {
    ReleaseRecord r = NewRelease(pipeline, "v2");
    r.author = author;
    r.created_by = created_by;
    r.created_at = created_at;
    return this->CreateAs(r, state).id;
  };
  const std::string failed = release_state::kFailed;
  const int64_t match1 = make("web", failed, "ada", "github", 2000);
  make("api", failed, "ada", "github", 2500);                     // pipeline
  make("web", release_state::kSucceeded, "ada", "github", 2500);  // state
  make("web", failed, "bob", "carol", 2500);                      // actor
  make("web", failed, "ada", "github", 1999);                     // created too early
  make("web", failed, "ada", "github", 3001);                     // created too late
  const int64_t match2 = make("web", release_state::kRolledBack, "bob", "ada", 3000);
  const int64_t match3 = make("web", failed, "", "ada", 2500);
  const int64_t too_new = make("web", failed, "ada", "github", 2500);  // before_id

  ReleaseQuery q;
  q.pipeline = "web";
  q.states = {release_state::kFailed, release_state::kRolledBack};
  q.version = "v2";
  q.actor = "ada";
  q.created_from = 2000;
  q.created_to = 3000;
  q.before_id = too_new;
  q.limit = 0;
  EXPECT_THAT(this->Ids(q), ElementsAre(match3, match2, match1));
  // Paging: the next page starts below the smallest id of this one.
  q.limit = 2;
  EXPECT_THAT(this->Ids(q), ElementsAre(match3, match2));
  q.before_id = match2;
  EXPECT_THAT(this->Ids(q), ElementsAre(match1));
  q.before_id = match1;
  EXPECT_THAT(this->Ids(q), IsEmpty());
}

TYPED_TEST_P(StoreConformance, FindAuditWithoutFiltersIsEveryEntryNewestFirstAtMostLimit) {
  EXPECT_THAT(this->FindAudit(AuditQuery()), IsEmpty());
  std::vector<AuditRecord> entries;
  for (int i = 0; i < 120; ++i) {
    AuditRecord e = Logged("actor-" + std::to_string(i), "action-" + std::to_string(i),
                           "release/" + std::to_string(i), "e" + std::to_string(i), 10 + i);
    e.outcome = i % 2 ? "ok" : "denied";
    entries.push_back(e);
  }
  this->Append(entries);

  auto by_default = this->FindAudit(AuditQuery());
  ASSERT_EQ(by_default.size(), 100u);
  for (size_t i = 0; i < by_default.size(); ++i) {
    ExpectSameAudit(entries[119 - i], by_default[i]);
    if (i > 0) {
      EXPECT_LT(by_default[i].id, by_default[i - 1].id);
    }
  }
  AuditQuery q;
  q.limit = 5;
  EXPECT_THAT(this->Found(q), ElementsAre("e119", "e118", "e117", "e116", "e115"));
  q.limit = 0;
  EXPECT_EQ(this->FindAudit(q).size(), 100u);
  q.limit = -1;
  EXPECT_EQ(this->FindAudit(q).size(), 100u);
  q.limit = 1000;
  EXPECT_EQ(this->FindAudit(q).size(), 120u);
}

TYPED_TEST_P(StoreConformance, FindAuditByPipelineIsItsEntriesAndThoseOfItsReleases) {
  const ReleaseRecord web1 = this->CreateAs(NewRelease("web", "v1"), release_state::kSucceeded,
                                            Logged("ada", "release.create", "", "web1 made", 10));
  const ReleaseRecord api1 = this->CreateAs(NewRelease("api", "v1"), release_state::kSucceeded,
                                            Logged("ada", "release.create", "", "api1 made", 11));
  const ReleaseRecord web2 = this->CreateAs(NewRelease("web", "v2"), release_state::kRolling,
                                            Logged("ada", "release.create", "", "web2 made", 12));
  const std::string of_web1 = "release/" + std::to_string(web1.id);
  const std::string of_web2 = "release/" + std::to_string(web2.id);
  const std::string of_api1 = "release/" + std::to_string(api1.id);
  this->Append({
      Logged("ada", "pipeline.pause", "web", "web paused", 20),
      Logged("ada", "pipeline.pause", "api", "api paused", 21),
      Logged("engine", "release.start", of_web2, "web2 started", 22),
      Logged("engine", "release.start", of_api1, "api1 started", 23),
      Logged("ada", "pipeline.pause", "webshop", "webshop paused", 24),
      Logged("ada", "pipeline.pause", "WEB", "WEB paused", 25),
      Logged("ada", "agents.remove", "agent/web-1", "agent removed", 26),
      Logged("ada", "pipelines.reload", "pipelines", "reloaded", 27),
      Logged("ada", "release.note", of_web1 + "0", "a longer id", 28),
      Logged("ada", "release.note", "release/" + std::to_string(web2.id + 1000), "no release", 29),
      Logged("ada", "release.note", "web/" + of_web1, "not a target of web", 30),
  });

  AuditQuery q;
  q.pipeline = "web";
  EXPECT_THAT(this->Found(q), ElementsAre("web2 started", "web paused", "web2 made", "web1 made"));
  q.pipeline = "api";
  EXPECT_THAT(this->Found(q), ElementsAre("api1 started", "api paused", "api1 made"));
  for (const char* none : {"we", "web%", "web_", "nope"}) {
    q.pipeline = none;
    EXPECT_THAT(this->Found(q), IsEmpty()) << "pipeline " << none;
  }
}

TYPED_TEST_P(StoreConformance, FindAuditByActorIsExact) {
  this->Append({Logged("ada", "release.create", "", "by ada", 10),
                Logged("Ada", "release.create", "", "by Ada", 11),
                Logged("adam", "release.create", "", "by adam", 12),
                Logged("ad", "release.create", "", "by ad", 13),
                Logged("a_a", "release.create", "", "by a_a", 14),
                Logged("ada", "pipeline.pause", "web", "by ada again", 15)});
  AuditQuery q;
  q.actor = "ada";
  EXPECT_THAT(this->Found(q), ElementsAre("by ada again", "by ada"));
  q.actor = "a_a";
  EXPECT_THAT(this->Found(q), ElementsAre("by a_a"));
  for (const char* none : {"a", "a%", "ad_", "ADA", "nobody"}) {
    q.actor = none;
    EXPECT_THAT(this->Found(q), IsEmpty()) << "actor " << none;
  }
}

TYPED_TEST_P(StoreConformance, FindAuditByActionIsAPrefixMatchedLiterally) {
  this->Append({Logged("ada", "release.create", "", "release.create", 10),
                Logged("ada", "release.approve", "", "release.approve", 11),
                Logged("ada", "pipeline.pause", "", "pipeline.pause", 12),
                Logged("ada", "release", "", "release", 13),
                Logged("ada", "releases.sync", "", "releases.sync", 14),
                Logged("ada", "a_b.x", "", "a_b.x", 15), Logged("ada", "axb.x", "", "axb.x", 16),
                Logged("ada", "a%b.x", "", "a%b.x", 17), Logged("ada", "abcb.x", "", "abcb.x", 18),
                Logged("ada", "xa_b.x", "", "xa_b.x", 19)});
  AuditQuery q;
  q.action_prefix = "release.";
  EXPECT_THAT(this->Found(q), ElementsAre("release.approve", "release.create"));
  q.action_prefix = "release";
  EXPECT_THAT(this->Found(q),
              ElementsAre("releases.sync", "release", "release.approve", "release.create"));
  q.action_prefix = "release.create";
  EXPECT_THAT(this->Found(q), ElementsAre("release.create"));
  q.action_prefix = "pipeline.";
  EXPECT_THAT(this->Found(q), ElementsAre("pipeline.pause"));
  // '_' and '%' are characters like any other, not patterns.
  q.action_prefix = "a_b";
  EXPECT_THAT(this->Found(q), ElementsAre("a_b.x"));
  q.action_prefix = "a%";
  EXPECT_THAT(this->Found(q), ElementsAre("a%b.x"));
  q.action_prefix = "a%b.";
  EXPECT_THAT(this->Found(q), ElementsAre("a%b.x"));
  for (const char* none : {"_", "%", "%.x", "release.created", "elease.", "x.", "b.x"}) {
    q.action_prefix = none;
    EXPECT_THAT(this->Found(q), IsEmpty()) << "action prefix " << none;
  }
}

TYPED_TEST_P(StoreConformance, FindAuditByTextIsACaseInsensitiveSubstringOfFourFields) {
  this->Append(
      {Logged("Canary-Bot", "x.a", "t1", "in the actor", 10),
       Logged("ada", "CANARY.check", "t2", "in the action", 11),
       Logged("ada", "x.b", "release/canary", "in the target", 12),
       Logged("ada", "x.c", "t3", "the Canary looks clean", 13),
       Logged("ada", "x.d", "t4", "nowhere", 14), Logged("ada", "x.e", "t5", "50% done", 15),
       Logged("ada", "x.f", "t6", "50 done", 16), Logged("ada", "x.g", "t7", "a_b ready", 17),
       Logged("ada", "x.h", "t8", "axb ready", 18)});
  AuditQuery q;
  for (const char* needle : {"canary", "CANARY", "cAnArY", "anar"}) {
    q.text = needle;
    EXPECT_THAT(this->Found(q), ElementsAre("the Canary looks clean", "in the target",
                                            "in the action", "in the actor"))
        << "text " << needle;
  }
  q.text = "canary looks";
  EXPECT_THAT(this->Found(q), ElementsAre("the Canary looks clean"));
  // '%' and '_' are characters like any other, not patterns.
  q.text = "50%";
  EXPECT_THAT(this->Found(q), ElementsAre("50% done"));
  q.text = "%";
  EXPECT_THAT(this->Found(q), ElementsAre("50% done"));
  q.text = "a_b";
  EXPECT_THAT(this->Found(q), ElementsAre("a_b ready"));
  q.text = "_";
  EXPECT_THAT(this->Found(q), ElementsAre("a_b ready"));
  for (const char* none : {"canary!", "50%d", "a%b", "%done", "nothing"}) {
    q.text = none;
    EXPECT_THAT(this->Found(q), IsEmpty()) << "text " << none;
  }
}

TYPED_TEST_P(StoreConformance, FindAuditBetweenTimesIncludesBothBounds) {
  this->Append({Logged("ada", "x.a", "", "at 100", 100), Logged("ada", "x.a", "", "at 200", 200),
                Logged("ada", "x.a", "", "at 200 again", 200),
                Logged("ada", "x.a", "", "at 300", 300), Logged("ada", "x.a", "", "at 400", 400),
                Logged("ada", "x.a", "", "at 150", 150)});
  AuditQuery q;
  q.since = 200;
  EXPECT_THAT(this->Found(q), ElementsAre("at 400", "at 300", "at 200 again", "at 200"));
  q.since = 0;
  q.until = 200;
  EXPECT_THAT(this->Found(q), ElementsAre("at 150", "at 200 again", "at 200", "at 100"));
  q.since = 150;
  q.until = 300;
  EXPECT_THAT(this->Found(q), ElementsAre("at 150", "at 300", "at 200 again", "at 200"));
  q.since = 300;
  q.until = 300;
  EXPECT_THAT(this->Found(q), ElementsAre("at 300"));
  q.since = 201;
  q.until = 299;
  EXPECT_THAT(this->Found(q), IsEmpty());
  q.since = 401;
  q.until = 0;
  EXPECT_THAT(this->Found(q), IsEmpty());
}

TYPED_TEST_P(StoreConformance, FindAuditBeforeAnIdPagesNewestFirst) {
  std::vector<AuditRecord> entries;
  for (int i = 0; i < 7; ++i) {
    entries.push_back(
        Logged("ada", i % 2 ? "release.x" : "pipeline.x", "", "e" + std::to_string(i), 100 + i));
  }
  this->Append(entries);
  AuditQuery q;
  q.limit = 3;
  auto page = this->FindAudit(q);
  ASSERT_EQ(page.size(), 3u);
  EXPECT_EQ(page[0].detail, "e6");
  EXPECT_EQ(page[2].detail, "e4");
  q.before_id = page[2].id;
  EXPECT_THAT(this->Found(q), ElementsAre("e3", "e2", "e1"));
  q.before_id = this->AuditIdOf("e1");
  EXPECT_THAT(this->Found(q), ElementsAre("e0"));
  q.before_id = this->AuditIdOf("e0");
  EXPECT_THAT(this->Found(q), IsEmpty());
  q.before_id = this->AuditIdOf("e6") + 1;
  q.limit = 0;
  EXPECT_THAT(this->Found(q), ElementsAre("e6", "e5", "e4", "e3", "e2", "e1", "e0"));

  // With a filter, a page is of the matching entries only.
  AuditQuery releases;
  releases.action_prefix = "release.";
  releases.limit = 2;
  EXPECT_THAT(this->Found(releases), ElementsAre("e5", "e3"));
  releases.before_id = this->AuditIdOf("e3");
  EXPECT_THAT(this->Found(releases), ElementsAre("e1"));
}

TYPED_TEST_P(StoreConformance, FindAuditCombinesEveryFilter) {
  const ReleaseRecord web = this->Create("web", "v1");
  const ReleaseRecord api = this->Create("api", "v1");
  const std::string of_web = "release/" + std::to_string(web.id);
  const std::string of_api = "release/" + std::to_string(api.id);
  // Each entry but the matching ones differs from them in exactly one filtered field.
  this->Append({
      Logged("ada", "release.approve", of_web, "match1: canary clean", 2000),
      Logged("ada", "release.approve", of_api, "pipeline: canary clean", 2500),
      Logged("bob", "release.approve", of_web, "actor: canary clean", 2500),
      Logged("ada", "pipeline.pause", "web", "action: canary clean", 2500),
      Logged("ada", "release.approve", of_web, "text: dashboards green", 2500),
      Logged("ada", "release.approve", of_web, "since: canary clean", 1999),
      Logged("ada", "release.approve", of_web, "until: canary clean", 3001),
      Logged("ada", "release.abort", "web", "match2: CANARY", 3000),
      Logged("ada", "release.approve", of_web, "match3: canary clean", 2500),
      Logged("ada", "release.approve", of_web, "before: canary clean", 2500),
  });
  AuditQuery q;
  q.pipeline = "web";
  q.actor = "ada";
  q.action_prefix = "release.";
  q.text = "canary";
  q.since = 2000;
  q.until = 3000;
  q.before_id = this->AuditIdOf("before: canary clean");
  EXPECT_THAT(this->Found(q),
              ElementsAre("match3: canary clean", "match2: CANARY", "match1: canary clean"));
  q.limit = 2;
  EXPECT_THAT(this->Found(q), ElementsAre("match3: canary clean", "match2: CANARY"));
  q.before_id = this->AuditIdOf("match2: CANARY");
  EXPECT_THAT(this->Found(q), ElementsAre("match1: canary clean"));
}

REGISTER_TYPED_TEST_SUITE_P(
    StoreConformance, AFreshStoreIsEmpty, CreateReleaseAssignsIncreasingIdsAndStoresEveryField,
    CreateReleaseWritesItsAuditEntryTargetingTheReleaseByDefault,
    GetReleaseOfAnUnknownIdIsNotFoundNamingTheId,
    FindReleasesIsNewestFirstByDefaultAndOldestFirstOnRequest,
    FindReleasesReturnsAtMostLimitAndEverythingForALimitOfZeroOrLess,
    TheDefaultQueryReturnsTheNewestFifty, FindReleasesByPipeline, FindReleasesByStates,
    FindReleasesByKinds, FindReleasesByVersion, FindReleasesByCommit,
    FindReleasesBeforeAnIdPagesThroughHistory, FindReleasesCombinesEveryFilter,
    AReleaseUpsertWritesTheEngineColumns, WavesAreUpsertedByReleaseAndIndexAndOrderedByIndex,
    HostsAreUpsertedByReleaseAndAgentWithEveryColumn, HostsAreOrderedByWaveRegionAndName,
    GateResultsComeBackInTheOrderReceived, AgentsAreUpsertedByNameAndSortedByName,
    AuditIsNewestFirstAndLimited, AnEmptyBatchIsAccepted, ABatchWhoseExpectationsHoldIsWrittenWhole,
    AnExpectedStateThatChangedRefusesTheWholeBatch, AnAbortRequestedMeanwhileRefusesTheWholeBatch,
    AnExpectationOnAnUnknownReleaseIsNotFound, AnExpectedWaveStateThatChangedRefusesTheWholeBatch,
    AnApprovalGivenMeanwhileRefusesTheWholeBatch, AnExpectationOnAnUnknownWaveIsNotFound,
    TheFirstExpectationThatFailsDecidesTheRefusal,
    OfConcurrentRequestsExpectingTheSameReleaseOnlyOneIsWritten,
    ConcurrentCreatesGetDistinctIncreasingIds, AnAbortRequestSetsOnlyItsOwnColumns,
    AnEngineUpsertOfTheReleaseKeepsARequestedAbort, AReleaseUpsertNeverWritesTheAbortColumns,
    AnApprovalSetsOnlyItsOwnColumns, AnEngineUpsertOfTheWaveKeepsAnApproval,
    AWaveUpsertNeverWritesTheApprovalColumns, PipelineStatesAreUpsertedWithEveryColumn,
    APipelineNeverSwitchedHasTheDefaultState, AHoldPausesAndKeepsAnOperatorsFreeze,
    AHoldPausesAPipelineNeverSwitched, ACreatedTokenIsFoundByItsHashAndAudited,
    ATokenNameIsTakenOnce, TokensAreCountedAndListedByNameRevokedOnesIncluded,
    RevokingATokenRecordsWhoAndWhenAndIsAudited, RevokingAnUnknownTokenIsNotFound,
    RevokingATokenTwiceIsFailedPrecondition, TouchingATokenRecordsItsLastUseUnaudited,
    AHostCredentialIsFoundByNameAndAudited, AHostIsEnrolledOnce,
    RemovingAnAgentForgetsItsRowAndItsCredential,
    RemovingAnAgentWithOnlyARowOrOnlyACredentialSucceeds, RemovingAnUnknownAgentIsNotFound,
    OpenReleasesAreTheNonFinalOnesOldestFirst, TheDesiredReleaseIsTheNewestSucceeded,
    TheDesiredReleaseIsANewerOnCallRollbackEvenIfItFailed,
    SucceededWithVersionIsTheNewestSucceededOfThatVersion,
    FirstWithArtifactIsTheOldestOfThatVersionThatHasADigest,
    ASecondReleaseWithTheSameRequestIdIsRefusedNamingTheFirst,
    ARequestIdIsPerPipelineAndAnEmptyOneNeverCollides, FindReleasesByRequestId,
    OfConcurrentCreatesWithOneRequestIdOnlyOneIsMade,
    OutboxRowsArePendingInWriteOrderWithEveryField, OnlyOutboxRowsDueArePendingAtMostLimit,
    OutboxUpdatesRecordDeliveryProgress, ARefusedBatchWritesNoOutboxRowAndNoProgress,
    ALeaseNeverClaimedIsAtEpochZeroAndHeldByNobody,
    TheFirstClaimTakesTheLeaseAtEpochOneAndRenewingKeepsTheEpoch,
    AClaimWhileAnotherHoldsTheLeaseReturnsTheHoldersLease,
    ReleasingWithAnotherHolderOrEpochDoesNothing, AReleasedLeaseIsTakenByAnotherAtTheNextEpoch,
    RenewalsByAFormerHolderReturnTheNewHoldersLeaseUnchanged,
    AfterTheLeaseMovedOnAFencedStoreRefusesEveryWrite, WritesAreNotFencedByDefault,
    BringupTracksAreUpsertedByReleaseAndRegionAndOrderedByRegion,
    ABatchOfOnlyBringupTracksIsWritten, ATrackOfAnUnknownReleaseRefusesTheWholeBatch,
    AHostsOutputTailRoundTripsWhateverItsSizeAndCharacters, TheCreatorRoundTripsAndAnUpsertKeepsIt,
    AHostsFailureRoundTripsThroughItsRevertAndIsClearedOnlyWhenWritten,
    FindReleasesByActorMatchesTheAuthorOrTheCreatorExactly,
    FindReleasesByCreationTimeIncludesBothBounds,
    FindReleasesCombinesActorAndCreationTimeWithEveryOtherFilter,
    FindAuditWithoutFiltersIsEveryEntryNewestFirstAtMostLimit,
    FindAuditByPipelineIsItsEntriesAndThoseOfItsReleases, FindAuditByActorIsExact,
    FindAuditByActionIsAPrefixMatchedLiterally,
    FindAuditByTextIsACaseInsensitiveSubstringOfFourFields, FindAuditBetweenTimesIncludesBothBounds,
    FindAuditBeforeAnIdPagesNewestFirst, FindAuditCombinesEveryFilter);

}  // namespace lockstep::store_conformance
