#!/usr/bin/env bash
# The local three-region demo: builds Lockstep, starts lockstepd on SQLite, nine agents
# (three hosts in each of us-east-1, eu-west-1 and ap-southeast-2), and an artifact server
# with the sample app; ships v1.0.0 and then v1.1.0 through the canary waves; shows where
# every region stands; stops everything it started.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD

scripts/setup.sh
TARGETS="lockstepd lockstep-agent lockstep lockstep-artifact-server" scripts/build.sh

BIN=$ROOT/build/bin
WORK=$(mktemp -d /tmp/lockstep-demo.XXXXXX)
PIDS=()
cleanup() {
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
  echo "demo stopped; logs and state kept in $WORK"
}
trap cleanup EXIT

wait_for_file() {  # FILE SECONDS
  for _ in $(seq 1 $(($2 * 10))); do [[ -s $1 ]] && return 0; sleep 0.1; done
  echo "demo: timed out waiting for $1" >&2
  return 1
}

# 1. Artifacts: the sample app at two versions, as a CI system would publish them.
mkdir -p "$WORK/artifacts" "$WORK/logs"
for v in v1.0.0 v1.1.0; do
  staging=$WORK/staging/$v
  mkdir -p "$staging"
  cp -a examples/sample-app/. "$staging/"
  echo "$v" > "$staging/VERSION"
  tar -C "$staging" -czf "$WORK/artifacts/app-$v.tar.gz" .
done
"$BIN/lockstep-artifact-server" --dir "$WORK/artifacts" --port-file "$WORK/artifacts.port" \
  2> "$WORK/logs/artifact-server.log" &
PIDS+=($!)
wait_for_file "$WORK/artifacts.port" 10
ARTIFACTS="http://127.0.0.1:$(cat "$WORK/artifacts.port")"

# 2. The orchestrator, on a free port, with its SQLite store in the work directory.
"$BIN/lockstepd" --data-dir "$WORK/data" --pipelines pipelines --grpc-listen 127.0.0.1:0 \
  --http-listen "127.0.0.1:${LOCKSTEP_DEMO_HTTP_PORT:-0}" \
  --port-file "$WORK/lockstepd.ports" 2> "$WORK/logs/lockstepd.log" &
PIDS+=($!)
wait_for_file "$WORK/lockstepd.ports" 20
export LOCKSTEP_SERVER="127.0.0.1:$(sed -E 's/.*"grpc": ([0-9]+).*/\1/' "$WORK/lockstepd.ports")"
HTTP_PORT=$(sed -E 's/.*"http": ([0-9]+).*/\1/' "$WORK/lockstepd.ports")
# The first start wrote an admin token; everything else uses tokens made from it.
export LOCKSTEP_TOKEN=$(cat "$WORK/data/admin-token")
echo "lockstepd listening on $LOCKSTEP_SERVER (gRPC) and http://127.0.0.1:$HTTP_PORT/ (dashboard)"
echo "store: $WORK/data/lockstep.db; admin token in $WORK/data/admin-token"

# 3. Three hosts per region, each region with its own enrollment token.
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
for _ in $(seq 1 100); do
  # Each line: NAME REGION PIPELINE VERSION STATE AGENT (the agent's build follows STATE).
  n=$("$BIN/lockstep" agents | grep -c ' connected ' || true)
  [[ $n -ge 9 ]] && break
  sleep 0.1
done
"$BIN/lockstep" agents

release() {  # VERSION
  local v=$1 sha
  sha=$(sha256sum "$WORK/artifacts/app-$v.tar.gz" | cut -d' ' -f1)
  echo
  echo "== releasing $v to monolith"
  "$BIN/lockstep" release create --pipeline monolith --version "$v" \
    --artifact "$ARTIFACTS/app-$v.tar.gz" --sha256 "$sha" --wait --timeout 5m
}

# 4. Ship two releases; each moves canary -> half -> all in every region at once.
release v1.0.0
release v1.1.0

echo
echo "== where every region stands"
"$BIN/lockstep" status monolith
for region in us-east-1 eu-west-1 ap-southeast-2; do
  printf '%-16s current -> %s\n' "$region-1" "$(readlink "$WORK/hosts/$region-1/current")"
done
