// Process-wide settings for the gRPC runtime, applied once at start by lockstepd, the agent
// and the fleet benchmark.

#pragma once

namespace lockstep {

// gRPC locks absl::Mutex on every message. Debian's absl is built with lock-order cycle
// detection on, which records every acquisition in a global graph: a measurable share of
// lockstepd's CPU with thousands of streams. This turns the check off for the process (gRPC's
// locks and Lockstep's own absl::Mutex alike; Lockstep's lock order is checked at compile
// time instead, by clang's -Wthread-safety in build-tsa/). It also sends gRPC's own log lines
// through the process's logger (InitLogging first), as "grpc: <message> (<file>:<line>)".
void TuneGrpcRuntime();

}  // namespace lockstep
