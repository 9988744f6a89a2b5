#!/usr/bin/env bash
# Runs lockstep-fleet-bench against a PostgreSQL store: starts a PostgreSQL 15 of its own in a
# temporary directory (as an unprivileged user, unix socket only), makes an empty database,
# runs the benchmark with --store pointing at it, and removes everything afterwards.
# Arguments go to the benchmark, e.g.:  scripts/bench-postgres.sh --hosts 1000 --rollbacks 20
set -euo pipefail
cd "$(dirname "$0")/.."
LOCKSTEP_TEST_DEPS=1 scripts/setup.sh
TARGETS="lockstepd lockstep lockstep-fleet-bench" scripts/build.sh >/dev/null

PG=/usr/lib/postgresql/15/bin
dir=$(mktemp -d /tmp/lockstep-pgbench-XXXXXX)
as_pg=()
if [[ $(id -u) == 0 ]]; then
  chown nobody:nogroup "$dir"
  as_pg=(setpriv --reuid=nobody --regid=nogroup --clear-groups --)
fi
pg_pid=""
cleanup() {
  if [[ -n "$pg_pid" ]]; then
    kill -INT "$pg_pid" 2>/dev/null || true
    for _ in $(seq 100); do kill -0 "$pg_pid" 2>/dev/null || break; sleep 0.1; done
  fi
  rm -rf "$dir"
}
trap cleanup EXIT
(cd / && LC_ALL=C "${as_pg[@]}" "$PG/initdb" -D "$dir/data" -A trust -U lockstep --no-sync \
  -E UTF8 --locale=C >"$dir/initdb.log" 2>&1)
# Durable as a production database would be (fsync on), so the figures include commits.
(cd / && LC_ALL=C exec "${as_pg[@]}" "$PG/postgres" -D "$dir/data" -p 5432 \
  -c listen_addresses= -c unix_socket_directories="$dir" -c max_connections=50 \
  >>"$dir/postgres.log" 2>&1) &
pg_pid=$!
conn="host=$dir port=5432 user=lockstep"
for _ in $(seq 300); do
  "$PG/pg_isready" -q -d "$conn dbname=postgres" && break
  sleep 0.1
done
"$PG/psql" -q -d "$conn dbname=postgres" -c 'CREATE DATABASE lockstep'
build/bin/lockstep-fleet-bench --store "$conn dbname=lockstep" "$@"
