#include "orchestrator/server/hello_limits.h"

#include "common/untrusted.h"

namespace lockstep {

std::string CheckHelloFields(const lockstep::v1::AgentHello& h) {
  if (auto bad = CheckName("agent name", h.name()); !bad.empty()) return bad;
  if (auto bad = CheckName("region", h.region()); !bad.empty()) return bad;
  if (!h.pipeline().empty()) {
    if (auto bad = CheckName("pipeline", h.pipeline()); !bad.empty()) return bad;
  }
  if (h.token().size() > 256 || h.credential().size() > 256) return "token too long";
  if (h.current_version().size() > 128) return "current_version longer than 128 characters";
  if (h.versions_on_disk_size() > 64) return "more than 64 versions_on_disk";
  for (const auto& v : h.versions_on_disk()) {
    if (v.size() > 128) return "a version on disk is longer than 128 characters";
  }
  if (h.agent_version().size() > 64) return "agent_version longer than 64 characters";
  return "";
}

}  // namespace lockstep
