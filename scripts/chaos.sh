#!/usr/bin/env bash
# Runs the engine's randomized histories over many seeds and prints the seed of any failure.
#
#   scripts/chaos.sh [SEEDS=300] [FIRST_SEED=1]
#
# Each seed is a history of releases, failing and slow hooks, on-call rollbacks, aborts,
# approvals, pauses, freezes, agents killed (some back with an empty root) or stopped, and
# lockstepd restarts, against the real engine and store with simulated agents on a manual
# clock, followed by quiescence and the invariants in tests/unit/engine_chaos_test.cc. Re-run
# one failing seed with: scripts/chaos.sh 1 SEED
set -euo pipefail
cd "$(dirname "$0")/.."
seeds="${1:-300}"
first="${2:-1}"
[[ "$seeds" =~ ^[0-9]+$ && "$first" =~ ^[0-9]+$ ]] || {
  echo "usage: scripts/chaos.sh [SEEDS] [FIRST_SEED]" >&2
  exit 2
}
scripts/build.sh >/dev/null
log="$(mktemp -t lockstep-chaos.XXXXXX)"
status=0
LOCKSTEP_CHAOS_SEEDS="$seeds" LOCKSTEP_CHAOS_FIRST_SEED="$first" \
  timeout 3600 build/bin/lockstep_engine_chaos_tests --gtest_brief=1 >"$log" 2>&1 || status=$?
grep -E '^(CHAOS FAILED seed|chaos:)' "$log" || true
if [[ $status -ne 0 ]]; then
  echo "failures in detail: $log" >&2
  exit 1
fi
rm -f "$log"
