#!/usr/bin/env bash
# Installs what the tests need, builds everything, checks formatting, and runs every test:
#   1. unit, integration, browser and benchmark tests in build/ (CTest);
#   2. the unit and integration tests again in build-asan/, built with AddressSanitizer and
#      UndefinedBehaviorSanitizer (and LeakSanitizer), the started lockstepd, agents and CLI
#      included; any sanitizer report fails the run;
#   3. a short fuzz run of each libFuzzer target in build-fuzz/ (clang; scripts/fuzz.sh);
#   4. lock discipline: lockstepd's and the agent's libraries built with clang's
#      -Wthread-safety in build-tsa/ (ABSL_GUARDED_BY and friends are checked, not comments).
# Exit status 0 only if all passed. Arguments are passed to CTest in 1 and 2 (e.g. -R Unpack).
# LOCKSTEP_TEST_PARTS="main asan fuzz tsa" (the default) chooses the parts to run; JOBS the
# parallel build jobs and TEST_JOBS the parallel tests (both default to 2).
set -euo pipefail
cd "$(dirname "$0")/.."
PARTS=" ${LOCKSTEP_TEST_PARTS:-main asan fuzz tsa} "

LOCKSTEP_TEST_DEPS=1 scripts/setup.sh

# Formatting is part of the test: our sources must match .clang-format.
mapfile -t sources < <(git ls-files -- '*.cc' '*.h' 2>/dev/null || true)
if ((${#sources[@]})) && command -v clang-format >/dev/null; then
  if ! clang-format --dry-run --Werror "${sources[@]}" 2>/tmp/lockstep-format.txt; then
    head -40 /tmp/lockstep-format.txt >&2
    echo "test: sources are not formatted; run: clang-format -i \$(git ls-files '*.cc' '*.h')" >&2
    exit 1
  fi
fi

if [[ "$PARTS" == *" main "* ]]; then
  scripts/build.sh
  (cd build && ctest --output-on-failure -j "${TEST_JOBS:-${JOBS:-2}}" --timeout 600 "$@")
fi

if [[ "$PARTS" == *" asan "* ]]; then
  BUILD_DIR=build-asan scripts/build.sh -DLOCKSTEP_SANITIZE=ON
  # Every process of the run (test binaries and the lockstepd, lockstep-agent and lockstep
  # processes they start from build-asan/bin) writes sanitizer reports to log_path, so that a
  # report from a process whose exit status no test looks at (an agent stopped with SIGTERM)
  # still fails the run. A report also makes the process exit non-zero.
  reports=$PWD/build-asan/sanitizer-reports
  rm -rf "$reports"
  mkdir -p "$reports"
  export ASAN_OPTIONS="detect_leaks=1:halt_on_error=1:exitcode=86:log_path=$reports/asan"
  export LSAN_OPTIONS="suppressions=$PWD/tests/sanitizer/lsan.supp:print_suppressions=0"
  export UBSAN_OPTIONS="halt_on_error=1:print_stacktrace=1:log_path=$reports/ubsan"
  # Only the unit and integration tests. Not here: the browser test (it checks the dashboard
  # in Chromium, not our memory safety), the fleet benchmark (a load run, not built in this
  # tree), the fault-injection tests (label integration-faults: long randomized kill runs
  # whose subject is recovery) and the failover tests (label integration-ha: three lockstepd
  # on a real PostgreSQL, with leases of a second, which the sanitizers' slowdown would
  # lapse); all of them run in build/.
  status=0
  (cd build-asan && ctest --output-on-failure -j "${TEST_JOBS:-${JOBS:-2}}" --timeout 900 \
    -L '^(unit|integration)$' "$@") || status=$?
  mapfile -t found < <(grep -lE 'ERROR: [A-Za-z]+Sanitizer|runtime error:' "$reports"/* 2>/dev/null)
  if ((${#found[@]})); then
    for report in "${found[@]}"; do
      echo "==== $report ====" >&2
      cat "$report" >&2
    done
    echo "test: ${#found[@]} sanitizer report(s) above (in $reports)" >&2
    status=1
  fi
  unset ASAN_OPTIONS LSAN_OPTIONS UBSAN_OPTIONS
  if ((status != 0)); then exit "$status"; fi
fi

if [[ "$PARTS" == *" fuzz "* ]]; then
  scripts/fuzz.sh --short
fi

if [[ "$PARTS" == *" tsa "* ]]; then
  BUILD_DIR=build-tsa CC=clang CXX=clang++ TARGETS="lockstep_server lockstep_agent_lib" \
    scripts/build.sh -DLOCKSTEP_THREAD_SAFETY=ON
fi
