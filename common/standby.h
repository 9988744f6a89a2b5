// Several lockstepd, one leading: how a standby names the leader in its refusals (gRPC
// UNAVAILABLE), written once for the side that says it (orchestrator/server/leadership.cc) and
// the sides that follow it (the agent and the CLI), and how those read their server list.
#pragma once

#include <sstream>
#include <string>
#include <vector>

namespace lockstep {

inline constexpr char kLeaderIsAt[] = "the leader is at ";

// "this lockstepd is a standby; the leader is at ADDR".
inline std::string StandbyNamingLeader(const std::string& address) {
  return std::string("this lockstepd is a standby; ") + kLeaderIsAt + address;
}

// The leader a standby named in `message`, or "" if it named none.
inline std::string LeaderNamedIn(const std::string& message) {
  auto at = message.find(kLeaderIsAt);
  if (at == std::string::npos) return "";
  std::string rest = message.substr(at + sizeof(kLeaderIsAt) - 1);
  return rest.substr(0, rest.find_first_of(" \t;,)"));
}

// --server "a:1, b:2" -> {"a:1", "b:2"}: every lockstepd, one of which leads.
inline std::vector<std::string> SplitServerList(const std::string& list) {
  std::vector<std::string> out;
  std::stringstream ss(list);
  std::string item;
  while (std::getline(ss, item, ',')) {
    item.erase(0, item.find_first_not_of(" \t"));
    item.erase(item.find_last_not_of(" \t") + 1);
    if (!item.empty()) out.push_back(item);
  }
  return out;
}

}  // namespace lockstep
