#!/usr/bin/env bash
# Installs what the tests need, builds everything, checks formatting, and runs every test
# (unit and integration) with CTest. Exit status 0 only if all passed.
set -euo pipefail
cd "$(dirname "$0")/.."

LOCKSTEP_TEST_DEPS=1 scripts/setup.sh
scripts/build.sh

# Formatting is part of the test: our sources must match .clang-format.
mapfile -t sources < <(git ls-files -- '*.cc' '*.h' 2>/dev/null || true)
if ((${#sources[@]})) && command -v clang-format >/dev/null; then
  if ! clang-format --dry-run --Werror "${sources[@]}" 2>/tmp/lockstep-format.txt; then
    head -40 /tmp/lockstep-format.txt >&2
    echo "test: sources are not formatted; run: clang-format -i \$(git ls-files '*.cc' '*.h')" >&2
    exit 1
  fi
fi

cd build
ctest --output-on-failure -j "${JOBS:-2}" --timeout 600 "$@"
