#include "orchestrator/store/migrations.h"

namespace lockstep {

const std::vector<Migration>& SqliteMigrations() {
  static const std::vector<Migration> kMigrations = {
      {1, R"sql(
CREATE TABLE releases (
  id INTEGER PRIMARY KEY AUTOINCREMENT,
  pipeline TEXT NOT NULL,
  version TEXT NOT NULL,
  artifact_url TEXT NOT NULL,
  sha256 TEXT NOT NULL,
  commit_sha TEXT NOT NULL DEFAULT '',
  state TEXT NOT NULL,
  reason TEXT NOT NULL DEFAULT '',
  current_wave INTEGER NOT NULL DEFAULT -1,
  previous_version TEXT NOT NULL DEFAULT '',
  created_at INTEGER NOT NULL,
  started_at INTEGER NOT NULL DEFAULT 0,
  finished_at INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX releases_by_pipeline ON releases(pipeline, id);
CREATE INDEX releases_by_state ON releases(state);
CREATE TABLE release_hosts (
  release_id INTEGER NOT NULL REFERENCES releases(id),
  agent TEXT NOT NULL,
  region TEXT NOT NULL,
  wave INTEGER NOT NULL,
  state TEXT NOT NULL,
  task_id TEXT NOT NULL DEFAULT '',
  detail TEXT NOT NULL DEFAULT '',
  started_at INTEGER NOT NULL DEFAULT 0,
  task_sent_at INTEGER NOT NULL DEFAULT 0,
  finished_at INTEGER NOT NULL DEFAULT 0,
  PRIMARY KEY (release_id, agent)
);
CREATE TABLE agents (
  name TEXT PRIMARY KEY,
  region TEXT NOT NULL,
  pipeline TEXT NOT NULL,
  current_version TEXT NOT NULL DEFAULT '',
  versions_on_disk TEXT NOT NULL DEFAULT '',
  connected INTEGER NOT NULL DEFAULT 0,
  first_seen INTEGER NOT NULL,
  last_seen INTEGER NOT NULL
);
)sql"},
      // Waves get their own rows (bake start times survive restarts), releases record who
      // made the commit, and mutating actions are audited.
      {2, R"sql(
ALTER TABLE releases ADD COLUMN author TEXT NOT NULL DEFAULT '';
CREATE TABLE release_waves (
  release_id INTEGER NOT NULL REFERENCES releases(id),
  idx INTEGER NOT NULL,
  name TEXT NOT NULL,
  state TEXT NOT NULL,
  started_at INTEGER NOT NULL DEFAULT 0,
  bake_started_at INTEGER NOT NULL DEFAULT 0,
  finished_at INTEGER NOT NULL DEFAULT 0,
  PRIMARY KEY (release_id, idx)
);
CREATE TABLE audit (
  id INTEGER PRIMARY KEY AUTOINCREMENT,
  at INTEGER NOT NULL,
  actor TEXT NOT NULL,
  action TEXT NOT NULL,
  target TEXT NOT NULL,
  detail TEXT NOT NULL DEFAULT '',
  outcome TEXT NOT NULL DEFAULT 'ok'
);
)sql"},
      // Rollback, approvals, gates and operator switches (pause, freeze).
      {3, R"sql(
ALTER TABLE releases ADD COLUMN kind TEXT NOT NULL DEFAULT 'rollout';
ALTER TABLE releases ADD COLUMN previous_release_id INTEGER NOT NULL DEFAULT 0;
ALTER TABLE releases ADD COLUMN abort_requested_by TEXT NOT NULL DEFAULT '';
ALTER TABLE releases ADD COLUMN abort_requested_at INTEGER NOT NULL DEFAULT 0;
ALTER TABLE release_waves ADD COLUMN first_switch_at INTEGER NOT NULL DEFAULT 0;
ALTER TABLE release_waves ADD COLUMN last_switch_at INTEGER NOT NULL DEFAULT 0;
ALTER TABLE release_waves ADD COLUMN approval_requested_at INTEGER NOT NULL DEFAULT 0;
ALTER TABLE release_waves ADD COLUMN approved_by TEXT NOT NULL DEFAULT '';
ALTER TABLE release_waves ADD COLUMN approved_at INTEGER NOT NULL DEFAULT 0;
ALTER TABLE release_hosts ADD COLUMN from_version TEXT NOT NULL DEFAULT '';
CREATE TABLE gate_results (
  id INTEGER PRIMARY KEY AUTOINCREMENT,
  release_id INTEGER NOT NULL REFERENCES releases(id),
  wave INTEGER NOT NULL,
  gate TEXT NOT NULL,
  region TEXT NOT NULL,
  at INTEGER NOT NULL,
  verdict TEXT NOT NULL,
  value REAL NOT NULL DEFAULT 0,
  detail TEXT NOT NULL DEFAULT ''
);
CREATE INDEX gate_results_by_release ON gate_results(release_id, wave, gate, region, id);
CREATE TABLE pipeline_state (
  pipeline TEXT PRIMARY KEY,
  paused INTEGER NOT NULL DEFAULT 0,
  paused_by TEXT NOT NULL DEFAULT '',
  paused_at INTEGER NOT NULL DEFAULT 0,
  frozen INTEGER NOT NULL DEFAULT 0,
  frozen_by TEXT NOT NULL DEFAULT '',
  freeze_reason TEXT NOT NULL DEFAULT '',
  frozen_at INTEGER NOT NULL DEFAULT 0
);
)sql"},
      // API tokens and agent enrollment tokens, stored as sha256 hashes only.
      {4, R"sql(
CREATE TABLE tokens (
  name TEXT PRIMARY KEY,
  role TEXT NOT NULL,
  region TEXT NOT NULL DEFAULT '',
  hash TEXT NOT NULL UNIQUE,
  created_at INTEGER NOT NULL,
  created_by TEXT NOT NULL
);
)sql"},
      // The trust boundary: hosts' own credentials, token lifecycle, and commit times (so a
      // replayed webhook cannot take a pipeline back to an older commit).
      {5, R"sql(
ALTER TABLE releases ADD COLUMN commit_at INTEGER NOT NULL DEFAULT 0;
ALTER TABLE tokens ADD COLUMN expires_at INTEGER NOT NULL DEFAULT 0;
ALTER TABLE tokens ADD COLUMN last_used_at INTEGER NOT NULL DEFAULT 0;
ALTER TABLE tokens ADD COLUMN revoked_at INTEGER NOT NULL DEFAULT 0;
ALTER TABLE tokens ADD COLUMN revoked_by TEXT NOT NULL DEFAULT '';
CREATE TABLE host_credentials (
  name TEXT PRIMARY KEY,
  region TEXT NOT NULL,
  hash TEXT NOT NULL UNIQUE,
  created_at INTEGER NOT NULL,
  enrolled_with TEXT NOT NULL DEFAULT ''
);
)sql"},
      // Typed host progress: the engine decides on the step, attempt and whether a switch
      // was sent, never on the text of `detail` or the shape of task ids. Rows written by
      // earlier versions are given the values their task ids and states imply.
      {6, R"sql(
ALTER TABLE release_hosts ADD COLUMN step TEXT NOT NULL DEFAULT '';
ALTER TABLE release_hosts ADD COLUMN attempt INTEGER NOT NULL DEFAULT 0;
ALTER TABLE release_hosts ADD COLUMN switch_sent INTEGER NOT NULL DEFAULT 0;
UPDATE release_hosts SET
  step = CASE
    WHEN task_id LIKE '%/prepare' THEN 'prepare'
    WHEN task_id LIKE '%/activate' THEN 'activate'
    WHEN task_id LIKE '%/revert' THEN 'revert'
    WHEN task_id LIKE '%/deploy' THEN 'deploy'
    WHEN task_id LIKE '%/converge-%' THEN 'converge'
    ELSE '' END,
  attempt = CASE WHEN task_id = '' THEN 0 ELSE 1 END;
UPDATE release_hosts SET switch_sent = 1
  WHERE step IN ('activate', 'deploy', 'revert', 'converge')
     OR state IN ('activating', 'done', 'reverting', 'reverted', 'revert_failed');
ALTER TABLE gate_results ADD COLUMN evaluated_at INTEGER NOT NULL DEFAULT 0;
)sql"},
      // Which lockstep-agent build each host runs, from its hello: shown to operators.
      {7, R"sql(
ALTER TABLE agents ADD COLUMN agent_version TEXT NOT NULL DEFAULT '';
)sql"},
      // Releases are found by query (ReleaseQuery): a pushed commit is looked up directly,
      // not by scanning a pipeline's history.
      {8, R"sql(
CREATE INDEX releases_by_commit ON releases(pipeline, commit_sha);
CREATE INDEX releases_by_pipeline_state ON releases(pipeline, state, id);
)sql"},
      // Exactly once: release request ids, the durable notification outbox, and the leader
      // lease (one SQLite file has one owner, but the epoch still fences a restarted
      // process's predecessor and tells agents which lockstepd is newest).
      {9, R"sql(
ALTER TABLE releases ADD COLUMN request_id TEXT NOT NULL DEFAULT '';
CREATE UNIQUE INDEX releases_by_request ON releases(pipeline, request_id) WHERE request_id <> '';
CREATE TABLE outbox (
  id INTEGER PRIMARY KEY AUTOINCREMENT,
  created_at INTEGER NOT NULL,
  pipeline TEXT NOT NULL,
  event TEXT NOT NULL,
  url TEXT NOT NULL,
  payload TEXT NOT NULL,
  attempts INTEGER NOT NULL DEFAULT 0,
  next_attempt_at INTEGER NOT NULL DEFAULT 0,
  done_at INTEGER NOT NULL DEFAULT 0,
  outcome TEXT NOT NULL DEFAULT ''
);
CREATE INDEX outbox_pending ON outbox(done_at, next_attempt_at, id);
CREATE TABLE leader_lease (
  id INTEGER PRIMARY KEY CHECK (id = 1),
  epoch INTEGER NOT NULL,
  holder TEXT NOT NULL,
  grpc_address TEXT NOT NULL,
  http_url TEXT NOT NULL,
  expires_at INTEGER NOT NULL
);
)sql"},
      // Regions: a failed hook's output tail is kept on its host row (where the region lets
      // it leave), and bring-up regions walk the waves in tracks of their own.
      {10, R"sql(
ALTER TABLE release_hosts ADD COLUMN output_tail TEXT NOT NULL DEFAULT '';
ALTER TABLE release_hosts ADD COLUMN failure TEXT NOT NULL DEFAULT '';
ALTER TABLE releases ADD COLUMN created_by TEXT NOT NULL DEFAULT '';
CREATE TABLE bringup_tracks (
  release_id INTEGER NOT NULL REFERENCES releases(id),
  region TEXT NOT NULL,
  state TEXT NOT NULL,
  wave INTEGER NOT NULL DEFAULT 0,
  started_at INTEGER NOT NULL DEFAULT 0,
  wave_started_at INTEGER NOT NULL DEFAULT 0,
  bake_started_at INTEGER NOT NULL DEFAULT 0,
  finished_at INTEGER NOT NULL DEFAULT 0,
  reason TEXT NOT NULL DEFAULT '',
  PRIMARY KEY (release_id, region)
);
)sql"},
  };
  return kMigrations;
}

}  // namespace lockstep
