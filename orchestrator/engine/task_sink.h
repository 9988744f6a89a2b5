// TaskSink: how the engine hands tasks to agents. The engine calls Send only after the
// transition that implies the task is committed to the store; a task that cannot be
// delivered now (agent not connected) is re-sent when the agent connects, and agents run
// each task id at most once, so sending twice is harmless.
#pragma once

#include <string>

#include "proto/lockstep.pb.h"

namespace lockstep {

class TaskSink {
 public:
  virtual ~TaskSink() = default;
  // Returns false if `agent` has no open stream right now. Must not block on the network.
  virtual bool Send(const std::string& agent, const lockstep::v1::Task& task) = 0;
  // Asks an agent to evaluate a metric gate in its region. Same delivery rules as Send.
  virtual bool SendGateCheck(const std::string& agent, const lockstep::v1::GateCheck& check) = 0;
};

}  // namespace lockstep
