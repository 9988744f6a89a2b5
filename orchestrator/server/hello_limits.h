// The field limits of an agent's hello, checked before anything else looks at it: every
// string in a hello is stored, shown and logged, and it arrives before the sender has proved
// who it is. Names (agent, region, pipeline) must be valid names (common/untrusted.h);
// tokens at most 256 bytes; versions at most 128 characters, at most 64 of them on disk.
//
// Pure; any thread.
#pragma once

#include <string>

#include "proto/lockstep.pb.h"

namespace lockstep {

// "" if `hello` is within its limits; otherwise why not, safe to log and to send back.
std::string CheckHelloFields(const lockstep::v1::AgentHello& hello);

}  // namespace lockstep
