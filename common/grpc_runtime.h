// Process-wide settings for the gRPC runtime, applied once at start by lockstepd, the agent
// and the fleet benchmark.

#pragma once

namespace lockstep {

// gRPC locks absl::Mutex on every message. Debian's absl is built with lock-order cycle
// detection on, which records every acquisition in a global graph: a measurable share of
// lockstepd's CPU with thousands of streams. Lockstep's own locks are std::mutex; this turns
// the check off for gRPC's.
void TuneGrpcRuntime();

}  // namespace lockstep
