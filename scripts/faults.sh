#!/usr/bin/env bash
# The long fault-injection run: every test of tests/integration/faults_test.cc with 50
# rollouts under random kill -9 of lockstepd (and, with it, 6 rounds of agent kills in every
# phase of a deployment), then the high-availability tests (tests/integration/ha_test.cc:
# three lockstepd on PostgreSQL, the leader killed, frozen or its database restarted) for 50
# rounds each. Takes about ten minutes on two cores, plus the rounds of the second part.
#
#   LOCKSTEP_FAULT_ITERATIONS=N   rollouts (default 50)
#   LOCKSTEP_FAULT_SEED=S         replay the random choices of an earlier run (each test
#                                 prints the seed it used)
#   LOCKSTEP_HA_ROUNDS=N          rounds of each failover scenario (default 50)
#   LOCKSTEP_HA_SEED=S            replay the failover tests' random choices
#   BUILD_DIR=DIR                 the build tree (default build)
#
# Arguments are passed to the test binary (e.g. --gtest_filter='*Lockstepd*').
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD_DIR=${BUILD_DIR:-build}
export LOCKSTEP_FAULT_ITERATIONS=${LOCKSTEP_FAULT_ITERATIONS:-50}

LOCKSTEP_TEST_DEPS=1 scripts/setup.sh
BUILD_DIR="$BUILD_DIR" TARGETS="lockstep_fault_tests lockstep_ha_tests" scripts/build.sh
"$BUILD_DIR/bin/lockstep_fault_tests" "$@"
LOCKSTEP_HA_ROUNDS=${LOCKSTEP_HA_ROUNDS:-50} "$BUILD_DIR/bin/lockstep_ha_tests" "$@"
