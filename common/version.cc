#include "common/version.h"

#include "lockstep_commit.h"  // generated at build time (cmake/version_header.cmake)

namespace lockstep {

const char* LockstepVersion() { return LOCKSTEP_VERSION; }
const char* LockstepCommit() { return LOCKSTEP_COMMIT; }

}  // namespace lockstep
