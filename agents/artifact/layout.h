// The layout of a release artifact, checked when a host prepares it, before anything could
// switch to it (docs/artifacts.md):
//
//   deploy/          at the top of the archive, a directory
//   deploy/start     optional; run after the switch
//   deploy/check     optional; the health check
//   deploy/stop      optional; run before switching away from this release
//
// At least one of deploy/start and deploy/check must exist (otherwise nothing would start or
// verify the release), and every hook that exists must be a regular file its owner may
// execute. Errors are kFailedPrecondition naming the release and what is wrong, and what was
// found instead where that helps (an archive packed one directory too deep: "found
// app/deploy/").
//
// Pure apart from reading the directory; any thread.
#pragma once

#include <string>

#include "common/status.h"

namespace lockstep::agent {

// `dir`: the unpacked release; `version` is only used in messages.
Status CheckArtifactLayout(const std::string& dir, const std::string& version);

}  // namespace lockstep::agent
