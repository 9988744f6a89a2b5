// The PostgreSQL schema as an ordered list of migrations, the counterpart of migrations.cc
// for SQLite. Migration N takes a database at schema version N-1 (the row of the
// schema_version table) to N; each runs in its own transaction. Append-only like SQLite's:
// once released, a migration is never edited.
//
// Migration 1 is the whole schema SQLite reaches by its own migrations, in PostgreSQL types:
// BIGINT for millisecond timestamps and ids, INTEGER for small numbers and 0/1 flags (kept as
// integers, as in SQLite, so both backends read and write the same values), DOUBLE PRECISION
// for gate values and TEXT for strings.

#include "orchestrator/store/migrations.h"

namespace lockstep {

const std::vector<Migration>& PostgresMigrations() {
  static const std::vector<Migration> kMigrations = {
      {1, R"sql(
CREATE TABLE releases (
  id BIGSERIAL PRIMARY KEY,
  pipeline TEXT NOT NULL,
  version TEXT NOT NULL,
  artifact_url TEXT NOT NULL,
  sha256 TEXT NOT NULL,
  commit_sha TEXT NOT NULL DEFAULT '',
  author TEXT NOT NULL DEFAULT '',
  state TEXT NOT NULL,
  reason TEXT NOT NULL DEFAULT '',
  current_wave INTEGER NOT NULL DEFAULT -1,
  previous_version TEXT NOT NULL DEFAULT '',
  created_at BIGINT NOT NULL,
  started_at BIGINT NOT NULL DEFAULT 0,
  finished_at BIGINT NOT NULL DEFAULT 0,
  kind TEXT NOT NULL DEFAULT 'rollout',
  previous_release_id BIGINT NOT NULL DEFAULT 0,
  abort_requested_by TEXT NOT NULL DEFAULT '',
  abort_requested_at BIGINT NOT NULL DEFAULT 0,
  commit_at BIGINT NOT NULL DEFAULT 0,
  request_id TEXT NOT NULL DEFAULT ''
);
CREATE INDEX releases_by_pipeline ON releases(pipeline, id);
CREATE INDEX releases_by_state ON releases(state);
CREATE INDEX releases_by_commit ON releases(pipeline, commit_sha);
CREATE INDEX releases_by_pipeline_state ON releases(pipeline, state, id);
CREATE UNIQUE INDEX releases_by_request ON releases(pipeline, request_id) WHERE request_id <> '';

CREATE TABLE release_hosts (
  release_id BIGINT NOT NULL REFERENCES releases(id),
  agent TEXT NOT NULL,
  region TEXT NOT NULL,
  wave INTEGER NOT NULL,
  state TEXT NOT NULL,
  task_id TEXT NOT NULL DEFAULT '',
  detail TEXT NOT NULL DEFAULT '',
  started_at BIGINT NOT NULL DEFAULT 0,
  task_sent_at BIGINT NOT NULL DEFAULT 0,
  finished_at BIGINT NOT NULL DEFAULT 0,
  from_version TEXT NOT NULL DEFAULT '',
  step TEXT NOT NULL DEFAULT '',
  attempt INTEGER NOT NULL DEFAULT 0,
  switch_sent INTEGER NOT NULL DEFAULT 0,
  PRIMARY KEY (release_id, agent)
);

CREATE TABLE agents (
  name TEXT PRIMARY KEY,
  region TEXT NOT NULL,
  pipeline TEXT NOT NULL,
  current_version TEXT NOT NULL DEFAULT '',
  versions_on_disk TEXT NOT NULL DEFAULT '',
  connected INTEGER NOT NULL DEFAULT 0,
  first_seen BIGINT NOT NULL,
  last_seen BIGINT NOT NULL,
  agent_version TEXT NOT NULL DEFAULT ''
);

CREATE TABLE release_waves (
  release_id BIGINT NOT NULL REFERENCES releases(id),
  idx INTEGER NOT NULL,
  name TEXT NOT NULL,
  state TEXT NOT NULL,
  started_at BIGINT NOT NULL DEFAULT 0,
  bake_started_at BIGINT NOT NULL DEFAULT 0,
  finished_at BIGINT NOT NULL DEFAULT 0,
  first_switch_at BIGINT NOT NULL DEFAULT 0,
  last_switch_at BIGINT NOT NULL DEFAULT 0,
  approval_requested_at BIGINT NOT NULL DEFAULT 0,
  approved_by TEXT NOT NULL DEFAULT '',
  approved_at BIGINT NOT NULL DEFAULT 0,
  PRIMARY KEY (release_id, idx)
);

CREATE TABLE audit (
  id BIGSERIAL PRIMARY KEY,
  at BIGINT NOT NULL,
  actor TEXT NOT NULL,
  action TEXT NOT NULL,
  target TEXT NOT NULL,
  detail TEXT NOT NULL DEFAULT '',
  outcome TEXT NOT NULL DEFAULT 'ok'
);

CREATE TABLE gate_results (
  id BIGSERIAL PRIMARY KEY,
  release_id BIGINT NOT NULL REFERENCES releases(id),
  wave INTEGER NOT NULL,
  gate TEXT NOT NULL,
  region TEXT NOT NULL,
  at BIGINT NOT NULL,
  verdict TEXT NOT NULL,
  value DOUBLE PRECISION NOT NULL DEFAULT 0,
  detail TEXT NOT NULL DEFAULT '',
  evaluated_at BIGINT NOT NULL DEFAULT 0
);
CREATE INDEX gate_results_by_release ON gate_results(release_id, wave, gate, region, id);

CREATE TABLE pipeline_state (
  pipeline TEXT PRIMARY KEY,
  paused INTEGER NOT NULL DEFAULT 0,
  paused_by TEXT NOT NULL DEFAULT '',
  paused_at BIGINT NOT NULL DEFAULT 0,
  frozen INTEGER NOT NULL DEFAULT 0,
  frozen_by TEXT NOT NULL DEFAULT '',
  freeze_reason TEXT NOT NULL DEFAULT '',
  frozen_at BIGINT NOT NULL DEFAULT 0
);

CREATE TABLE tokens (
  name TEXT PRIMARY KEY,
  role TEXT NOT NULL,
  region TEXT NOT NULL DEFAULT '',
  hash TEXT NOT NULL UNIQUE,
  created_at BIGINT NOT NULL,
  created_by TEXT NOT NULL,
  expires_at BIGINT NOT NULL DEFAULT 0,
  last_used_at BIGINT NOT NULL DEFAULT 0,
  revoked_at BIGINT NOT NULL DEFAULT 0,
  revoked_by TEXT NOT NULL DEFAULT ''
);

CREATE TABLE host_credentials (
  name TEXT PRIMARY KEY,
  region TEXT NOT NULL,
  hash TEXT NOT NULL UNIQUE,
  created_at BIGINT NOT NULL,
  enrolled_with TEXT NOT NULL DEFAULT ''
);

CREATE TABLE outbox (
  id BIGSERIAL PRIMARY KEY,
  created_at BIGINT NOT NULL,
  pipeline TEXT NOT NULL,
  event TEXT NOT NULL,
  url TEXT NOT NULL,
  payload TEXT NOT NULL,
  attempts INTEGER NOT NULL DEFAULT 0,
  next_attempt_at BIGINT NOT NULL DEFAULT 0,
  done_at BIGINT NOT NULL DEFAULT 0,
  outcome TEXT NOT NULL DEFAULT ''
);
CREATE INDEX outbox_pending ON outbox(done_at, next_attempt_at, id);

-- One row at most. Its expiry is the database's own clock, so lockstepd processes on
-- different machines agree on it without synchronised clocks.
CREATE TABLE leader_lease (
  id INTEGER PRIMARY KEY CHECK (id = 1),
  epoch BIGINT NOT NULL,
  holder TEXT NOT NULL,
  grpc_address TEXT NOT NULL,
  http_url TEXT NOT NULL,
  expires_at TIMESTAMPTZ NOT NULL
);
)sql"},
      // Regions: a failed hook's output tail is kept on its host row (where the region lets
      // it leave), and bring-up regions walk the waves in tracks of their own.
      {2, R"sql(
ALTER TABLE release_hosts ADD COLUMN output_tail TEXT NOT NULL DEFAULT '';
ALTER TABLE release_hosts ADD COLUMN failure TEXT NOT NULL DEFAULT '';
ALTER TABLE releases ADD COLUMN created_by TEXT NOT NULL DEFAULT '';
CREATE TABLE bringup_tracks (
  release_id BIGINT NOT NULL REFERENCES releases(id),
  region TEXT NOT NULL,
  state TEXT NOT NULL,
  wave INTEGER NOT NULL DEFAULT 0,
  started_at BIGINT NOT NULL DEFAULT 0,
  wave_started_at BIGINT NOT NULL DEFAULT 0,
  bake_started_at BIGINT NOT NULL DEFAULT 0,
  finished_at BIGINT NOT NULL DEFAULT 0,
  reason TEXT NOT NULL DEFAULT '',
  PRIMARY KEY (release_id, region)
);
)sql"},
  };
  return kMigrations;
}

}  // namespace lockstep
