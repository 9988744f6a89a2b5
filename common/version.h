// What build this is: the project version and the commit it was built from, for --version on
// every binary and for agents to report to lockstepd.
#pragma once

namespace lockstep {

// "0.1.0".
const char* LockstepVersion();
// The commit's short hash, "-modified" appended if the tree had changes; "unknown" outside
// a git checkout.
const char* LockstepCommit();

}  // namespace lockstep
