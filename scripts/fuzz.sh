#!/usr/bin/env bash
# Fuzzes the parsers that read untrusted bytes (tests/fuzz: pipeline files, GitHub push
# webhooks, release artifacts) with libFuzzer, in the clang tree build-fuzz/.
#
#   scripts/fuzz.sh [RUNS]   the long run: RUNS executions per target (default 10,000,000),
#                            one target at a time, each bounded by FUZZ_MAX_TIME seconds
#                            (default 3600) and FUZZ_RSS_MB of memory (default 2048)
#   scripts/fuzz.sh --short  the short run of the test command: each target for
#                            LOCKSTEP_FUZZ_SECONDS (20 s) as CTest tests of build-fuzz/
#
# FUZZ_TARGETS="pipeline unpack" limits the long run to some targets. New corpus entries go to
# build-fuzz/corpus/<target>/ (the checked-in seeds in tests/fuzz/corpus/ are only read), and
# every crashing, leaking, hanging or property-breaking input of the last run to
# build-fuzz/findings/<target>/, with the log in build-fuzz/logs/<target>.log. Exit status 0
# only if no target found anything. Idempotent: run it again to continue from the corpus.
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD_DIR=build-fuzz

# The fuzz tree builds only the fuzz targets and the small libraries they link.
CC=clang CXX=clang++ BUILD_DIR=$BUILD_DIR TARGETS=lockstep_fuzz BUILD_TYPE=RelWithDebInfo \
  scripts/build.sh -DLOCKSTEP_FUZZ=ON

# The unpack target writes every input to disk and unpacks it: memory is faster than a disk.
if [[ -z "${TMPDIR:-}" && -d /dev/shm && -w /dev/shm ]]; then export TMPDIR=/dev/shm; fi

if [[ "${1:-}" == --short ]]; then
  cd "$BUILD_DIR"
  ctest --output-on-failure -j "${TEST_JOBS:-${JOBS:-2}}" -L fuzz
  exit 0
fi

RUNS=${1:-10000000}
MAX_TIME=${FUZZ_MAX_TIME:-3600}
RSS_MB=${FUZZ_RSS_MB:-2048}
read -r -a TARGETS_TO_RUN <<< "${FUZZ_TARGETS:-pipeline github_webhook unpack static_path agent_hello}"

mkdir -p "$BUILD_DIR/logs"
failed=0
summary=()
for target in "${TARGETS_TO_RUN[@]}"; do
  corpus=$BUILD_DIR/corpus/$target
  findings=$BUILD_DIR/findings/$target
  log=$BUILD_DIR/logs/$target.log
  rm -rf "$findings"  # the findings of the previous run of this target
  mkdir -p "$corpus" "$findings"
  mapfile -t target_args < "$BUILD_DIR/fuzz-args/$target"
  echo "fuzz: $target: up to $RUNS executions or ${MAX_TIME}s (log: $log)"
  start=$SECONDS
  status=0
  nice -n 10 "$BUILD_DIR/bin/lockstep-fuzz-$target" -runs="$RUNS" -max_total_time="$MAX_TIME" \
    -rss_limit_mb="$RSS_MB" -print_final_stats=1 "${target_args[@]}" \
    "$corpus" "tests/fuzz/corpus/$target" > "$log" 2>&1 || status=$?
  executions=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
  found=$(find "$findings" -type f | wc -l)
  line="$target: ${executions:-?} executions in $((SECONDS - start))s, exit status $status, $found finding(s)"
  if ((status != 0 || found > 0)); then
    failed=1
    line+=" in $findings"
    grep -E 'ERROR: |runtime error:|property broken|SUMMARY: ' "$log" | head -20 >&2 || true
  fi
  echo "fuzz: $line"
  summary+=("$line")
done

echo "fuzz: summary"
printf '  %s\n' "${summary[@]}"
exit "$failed"
