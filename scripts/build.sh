#!/usr/bin/env bash
# Configures and builds Lockstep into build/ (binaries in build/bin/). Idempotent and incremental.
#
#   BUILD_DIR=build-asan scripts/build.sh -DLOCKSTEP_SANITIZE=ON
#
# builds another tree; arguments are CMake options, applied whenever they are given (CC and
# CXX only count when a tree is first configured).
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD_DIR=${BUILD_DIR:-build}
BUILD_TYPE=${BUILD_TYPE:-RelWithDebInfo}
JOBS=${JOBS:-2}

launcher=()
if command -v ccache >/dev/null; then
  export CCACHE_BASEDIR="$PWD" CCACHE_NOHASHDIR=true
  launcher=(-DCMAKE_CXX_COMPILER_LAUNCHER=ccache -DCMAKE_C_COMPILER_LAUNCHER=ccache)
fi
if [[ ! -f "$BUILD_DIR/CMakeCache.txt" || $# -gt 0 ]]; then
  cmake -S . -B "$BUILD_DIR" -DCMAKE_BUILD_TYPE="$BUILD_TYPE" "${launcher[@]}" "$@" >/dev/null
fi
# TARGETS="a b" builds only those targets (the demo does not need the tests).
if [[ -n "${TARGETS:-}" ]]; then
  cmake --build "$BUILD_DIR" -j "$JOBS" --target $TARGETS
else
  cmake --build "$BUILD_DIR" -j "$JOBS"
fi
