// Factories for lockstepd's gRPC services. grpcpp stays out of this header; callers that
// register services include it themselves.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>

namespace grpc {
class Service;
}

namespace lockstep {

class Authenticator;
class Engine;
class Hub;
class Operations;
class Store;

// The agent port before authentication (agent_service.cc).
struct AgentServiceLimits {
  int64_t hello_timeout_ms = 10'000;  // a stream not accepted by then is ended
  int max_pending_streams_per_peer = 256;
  int max_pending_streams = 2048;
};

// The agent-facing bidirectional stream service. `standby` (if set) returns "" while this
// lockstepd leads, else why it does not (naming the leader): a stream opened then is ended at
// once with UNAVAILABLE and that message, which agents follow to the leader.
std::unique_ptr<grpc::Service> MakeAgentService(Hub* hub, const AgentServiceLimits& limits,
                                                std::function<std::string()> standby = {});
// The CLI-facing control service: the gRPC front door of `ops`, which must outlive it.
std::unique_ptr<grpc::Service> MakeControlService(const Operations* ops);

}  // namespace lockstep
