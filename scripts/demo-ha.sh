#!/usr/bin/env bash
# The high-availability demo: builds Lockstep, starts a PostgreSQL 15 of its own (a temporary
# directory, a unix socket, no TCP port), two lockstepd sharing it (one leads, one stands by),
# nine agents that know both (three hosts in each of us-east-1, eu-west-1 and ap-southeast-2)
# and an artifact server. It ships a release whose hooks are slow, kills the leader with
# SIGKILL in the middle of it, shows the standby taking over and the release finishing, and
# prints the version every host runs. It stops everything it started and removes its
# temporary directories (if the demo fails, it keeps the logs and says where). See docs/ha.md.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
PGBIN=/usr/lib/postgresql/15/bin

scripts/setup.sh
# Beyond the build's packages: a PostgreSQL 15 server, and curl to read /healthz.
missing=()
[[ -x $PGBIN/postgres ]] || missing+=(postgresql-15)
command -v curl >/dev/null || missing+=(curl)
if ((${#missing[@]})); then
  echo "demo-ha: installing ${missing[*]}"
  SUDO=""
  if [[ $(id -u) -ne 0 ]]; then SUDO=sudo; fi
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
TARGETS="lockstepd lockstep-agent lockstep lockstep-artifact-server" scripts/build.sh

BIN=$ROOT/build/bin
WORK=$(mktemp -d /tmp/lockstep-demo-ha.XXXXXX)
PG=$(mktemp -d /tmp/lockstep-demo-pg.XXXXXX)  # short: the socket path must fit in 108 bytes
mkdir -p "$WORK/logs"
PIDS=()    # everything but PostgreSQL, stopped first
PG_PID=""

alive() {  # PID: running, and not a zombie waiting to be reaped
  local state
  state=$(sed -E 's/.*\) (.).*/\1/' "/proc/$1/stat" 2>/dev/null) && [[ -n $state && $state != Z ]]
}

stop() {  # SIGNAL PID...: signal them, allow 10 s, then SIGKILL; reap them
  local sig=$1 pid left
  shift
  (($#)) || return 0
  kill -s "$sig" "$@" 2>/dev/null || true
  for _ in $(seq 1 100); do
    left=0
    for pid in "$@"; do if alive "$pid"; then left=1; fi; done
    ((left)) || break
    sleep 0.1
  done
  kill -KILL "$@" 2>/dev/null || true
  wait "$@" 2>/dev/null || true
}

forget() {  # PID: no longer ours to stop (it was killed and reaped)
  local kept=() pid
  for pid in "${PIDS[@]}"; do [[ $pid == "$1" ]] || kept+=("$pid"); done
  PIDS=("${kept[@]}")
}

cleanup() {
  local status=$?
  stop TERM "${PIDS[@]}"
  if [[ -n $PG_PID ]]; then stop INT "$PG_PID"; fi  # SIGINT: PostgreSQL's fast shutdown
  if ((status == 0)); then
    rm -rf "$WORK" "$PG"
    echo "demo stopped; temporary directories removed"
  else
    rm -rf "$PG"
    echo "demo failed (exit $status); logs kept in $WORK/logs" >&2
  fi
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

wait_for_file() {  # FILE SECONDS
  for _ in $(seq 1 $(($2 * 10))); do [[ -s $1 ]] && return 0; sleep 0.1; done
  echo "demo-ha: timed out waiting for $1" >&2
  return 1
}

port_of() {  # PORT_FILE KEY: a port from lockstepd's --port-file ({"grpc": N, "http": N})
  sed -E "s/.*\"$2\": ([0-9]+).*/\1/" "$1"
}

role_of() {  # HTTP_PORT: "leader", "standby", or nothing if that lockstepd does not answer
  curl -s --max-time 1 "http://127.0.0.1:$1/healthz" | sed -nE 's/.*"role": ?"([a-z]+)".*/\1/p' || true
}

now_ms() { date +%s%3N; }

# 1. PostgreSQL 15 on a unix socket in $PG. It refuses to run as root, so as root it runs as
#    nobody (uid and gid 65534), in a directory that belongs to nobody.
AS_PG=()
if [[ $(id -u) -eq 0 ]]; then
  chown 65534:65534 "$PG"
  AS_PG=(setpriv --reuid=65534 --regid=65534 --clear-groups --)
fi
(cd "$PG" && "${AS_PG[@]}" "$PGBIN/initdb" -D "$PG/data" -A trust -U lockstep --no-sync \
  -E UTF8 --locale=C) > "$WORK/logs/initdb.log" 2>&1
(cd "$PG" && exec "${AS_PG[@]}" "$PGBIN/postgres" -D "$PG/data" -p 5432 \
  -c listen_addresses= -c unix_socket_directories="$PG" -c fsync=off) \
  > "$WORK/logs/postgres.log" 2>&1 &
PG_PID=$!
for i in $(seq 1 300); do
  "$PGBIN/pg_isready" -q -d "host=$PG port=5432 user=lockstep dbname=postgres" && break
  if ((i == 300)); then echo "demo-ha: PostgreSQL did not start; see $WORK/logs/postgres.log" >&2; exit 1; fi
  sleep 0.1
done
"$PGBIN/psql" -X -q -d "host=$PG port=5432 user=lockstep dbname=postgres" -c 'CREATE DATABASE lockstep'
STORE="host=$PG port=5432 user=lockstep dbname=lockstep"
echo "PostgreSQL 15 (pid $PG_PID) on $PG/.s.PGSQL.5432; store: $STORE"

# 2. The artifact: the sample app, with a deploy/start slow enough (2 s per host) that the
#    release lasts about ten seconds.
mkdir -p "$WORK/artifacts" "$WORK/staging"
cp -a examples/sample-app/. "$WORK/staging/"
echo v1.0.0 > "$WORK/staging/VERSION"
cat > "$WORK/staging/deploy/start" <<'EOF'
#!/bin/sh
# The sample app's start hook, made slow so that the leader can be killed mid-release.
set -eu
echo "starting $LOCKSTEP_VERSION on $LOCKSTEP_AGENT ($LOCKSTEP_REGION)"
sleep 2
echo "$LOCKSTEP_VERSION" > "$LOCKSTEP_ROOT/running"
EOF
chmod 0755 "$WORK/staging/deploy/start"
tar -C "$WORK/staging" -czf "$WORK/artifacts/app-v1.0.0.tar.gz" .
"$BIN/lockstep-artifact-server" --dir "$WORK/artifacts" --port-file "$WORK/artifacts.port" \
  2> "$WORK/logs/artifact-server.log" &
PIDS+=($!)
wait_for_file "$WORK/artifacts.port" 10
ARTIFACTS="http://127.0.0.1:$(cat "$WORK/artifacts.port")"

# 3. Two lockstepd on the same store, started together (migrations take an advisory lock).
#    Each advertises its own loopback address and bound port; the lease lasts 2 s.
declare -A PID GRPC HTTP
for n in a b; do
  "$BIN/lockstepd" --store "$STORE" --lease-ttl 2s --data-dir "$WORK/lockstepd-$n" \
    --pipelines pipelines --grpc-listen 127.0.0.1:0 --http-listen 127.0.0.1:0 \
    --bootstrap-token-file "$WORK/admin-token" --port-file "$WORK/lockstepd-$n.ports" \
    2> "$WORK/logs/lockstepd-$n.log" &
  PID[$n]=$!
  PIDS+=($!)
done
for n in a b; do
  wait_for_file "$WORK/lockstepd-$n.ports" 20
  GRPC[$n]=127.0.0.1:$(port_of "$WORK/lockstepd-$n.ports" grpc)
  HTTP[$n]=$(port_of "$WORK/lockstepd-$n.ports" http)
done
leader=""
for _ in $(seq 1 100); do
  for n in a b; do [[ $(role_of "${HTTP[$n]}") == leader ]] && leader=$n; done
  [[ -n $leader ]] && break
  sleep 0.1
done
[[ -n $leader ]] || { echo "demo-ha: no lockstepd became the leader" >&2; exit 1; }
standby=$([[ $leader == a ]] && echo b || echo a)
for n in a b; do
  echo "lockstepd $n (pid ${PID[$n]}): gRPC ${GRPC[$n]}, HTTP http://127.0.0.1:${HTTP[$n]}/ -> $(curl -s "http://127.0.0.1:${HTTP[$n]}/healthz")"
done
echo "the standby redirects HTTP: GET /api/v1/pipelines on $standby -> $(curl -s -o /dev/null \
  -w '%{http_code} %{redirect_url}' "http://127.0.0.1:${HTTP[$standby]}/api/v1/pipelines")"

# The CLI and the agents are given both; they find the leader by themselves.
export LOCKSTEP_SERVER="${GRPC[a]},${GRPC[b]}"
wait_for_file "$WORK/admin-token" 10  # written by the first leader, once
LOCKSTEP_TOKEN=$(cat "$WORK/admin-token")
export LOCKSTEP_TOKEN

# 4. Three hosts per region, each region with its own enrollment token.
for region in us-east-1 eu-west-1 ap-southeast-2; do
  "$BIN/lockstep" tokens create --role agent --region "$region" --name "enroll-$region" \
    > "$WORK/enroll-$region.token" 2>/dev/null
  for i in 1 2 3; do
    name="$region-$i"
    "$BIN/lockstep-agent" --server "$LOCKSTEP_SERVER" --region "$region" --name "$name" \
      --token-file "$WORK/enroll-$region.token" \
      --root "$WORK/hosts/$name" 2> "$WORK/logs/agent-$name.log" &
    PIDS+=($!)
  done
done
for i in $(seq 1 200); do
  n=$("$BIN/lockstep" agents --output json | grep -c '"connected": true' || true)
  [[ $n -ge 9 ]] && break
  if ((i == 200)); then echo "demo-ha: only $n of 9 agents connected" >&2; exit 1; fi
  sleep 0.1
done
echo "9 agents connected, each told --server $LOCKSTEP_SERVER"

# 5. A release, and the leader killed when its second wave starts.
sha=$(sha256sum "$WORK/artifacts/app-v1.0.0.tar.gz" | cut -d' ' -f1)
echo
echo "== releasing v1.0.0 to monolith"
id=$("$BIN/lockstep" release create --pipeline monolith --version v1.0.0 \
  --artifact "$ARTIFACTS/app-v1.0.0.tar.gz" --sha256 "$sha" | sed -nE 's/^release ([0-9]+) queued.*/\1/p')
[[ -n $id ]] || { echo "demo-ha: the release was not created" >&2; exit 1; }
for i in $(seq 1 600); do
  shown=$("$BIN/lockstep" release show "$id" --output json)
  grep -qE '"current_wave": [1-9]' <<< "$shown" && break
  if ((i == 600)); then echo "demo-ha: release $id never reached its second wave" >&2; exit 1; fi
  sleep 0.1
done
"$BIN/lockstep" release show "$id" | sed -n 1p

echo
echo "== kill -9 of the leader, lockstepd $leader (pid ${PID[$leader]})"
killed_at=$(now_ms)
kill -KILL "${PID[$leader]}"
wait "${PID[$leader]}" 2>/dev/null || true
forget "${PID[$leader]}"
for i in $(seq 1 200); do
  [[ $(role_of "${HTTP[$standby]}") == leader ]] && break
  if ((i == 200)); then echo "demo-ha: lockstepd $standby did not take over" >&2; exit 1; fi
  sleep 0.05
done
echo "lockstepd $standby leads $(($(now_ms) - killed_at)) ms after the kill (lease ttl 2 s):"
echo "  $(curl -s "http://127.0.0.1:${HTTP[$standby]}/healthz")"

# 6. The release finishes under the new leader; `release watch` follows it there.
echo
echo "== release $id, followed across the failover"
"$BIN/lockstep" release watch "$id" --timeout 2m

echo
echo "== every host"
"$BIN/lockstep" agents
for region in us-east-1 eu-west-1 ap-southeast-2; do
  for i in 1 2 3; do
    printf '%-18s current -> %s\n' "$region-$i" "$(readlink "$WORK/hosts/$region-$i/current")"
  done
done
echo
echo "us-east-1-1's connections (its log):"
grep -hE 'connected to|following it to the leader' "$WORK/logs/agent-us-east-1-1.log" | sed 's/^/  /' || true
