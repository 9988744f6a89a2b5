#!/usr/bin/env bash
# Mutation testing of the rollout engine (orchestrator/engine/) against its unit tests.
#
#   scripts/mutate.sh [--check] [--only ID[,ID...]] [--keep]
#
# Copies the tracked tree (with its working-tree contents) to ${TMPDIR:-/tmp}/lockstep-mutate,
# builds lockstep_engine_tests there (a warm build dir, reused between runs), checks that the
# unmutated tests pass, then applies each mutation of scripts/mutations.txt in turn, builds,
# runs the tests, and restores the file. The working tree is never written.
#
#   --check   only verify that every mutation's old text occurs exactly once (fast, no build)
#   --only    run only the named mutations
#   --keep    leave the last mutation applied in the copy for inspection
#
# Exit: 0 every mutation killed; 3 survivors; 1 stale mutations, build errors or a failing
# baseline; 2 usage. Details and tunables: scripts/mutate.py.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
exec python3 "$here/mutate.py" "$@"
