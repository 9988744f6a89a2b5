// Factories for lockstepd's gRPC services. grpcpp stays out of this header; callers that
// register services include it themselves.
#pragma once

#include <memory>

namespace grpc {
class Service;
}

namespace lockstep {

class Authenticator;
class Engine;
class Hub;
class Store;

// The agent-facing bidirectional stream service.
std::unique_ptr<grpc::Service> MakeAgentService(Hub* hub);
// The CLI-facing control service.
std::unique_ptr<grpc::Service> MakeControlService(Engine* engine, Store* store, Hub* hub,
                                                  const Authenticator* auth);

}  // namespace lockstep
