// The records Lockstep keeps: releases, their waves and per-host progress, agents, audit.
//
// These are plain values read from and written to a Store. The rollout engine computes new
// records from old ones; nothing here talks to the database.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "common/clock.h"

namespace lockstep {

// Release states. Final states never change again.
namespace release_state {
inline constexpr const char* kQueued = "queued";
inline constexpr const char* kRolling = "rolling";
inline constexpr const char* kSucceeded = "succeeded";
inline constexpr const char* kFailed = "failed";
inline constexpr const char* kSuperseded = "superseded";
bool IsFinal(const std::string& state);
}  // namespace release_state

// Wave states, in order.
namespace wave_state {
inline constexpr const char* kPending = "pending";
inline constexpr const char* kDeploying = "deploying";
inline constexpr const char* kBaking = "baking";
inline constexpr const char* kDone = "done";
inline constexpr const char* kFailed = "failed";
}  // namespace wave_state

// Per-host states within a release. A host moves pending → preparing → prepared →
// activating → done; any step may end in failed.
namespace host_state {
inline constexpr const char* kPending = "pending";
inline constexpr const char* kPreparing = "preparing";
inline constexpr const char* kPrepared = "prepared";
inline constexpr const char* kActivating = "activating";
inline constexpr const char* kDone = "done";
inline constexpr const char* kFailed = "failed";
}  // namespace host_state

struct ReleaseRecord {
  int64_t id = 0;
  std::string pipeline;
  std::string version;
  std::string artifact_url;
  std::string sha256;
  std::string commit;
  std::string author;
  std::string state = release_state::kQueued;
  std::string reason;            // why it ended the way it did, or why it waits
  int current_wave = -1;         // index of the wave in progress; -1 before the first
  std::string previous_version;  // what the fleet ran when the release started
  UnixMs created_at = 0;
  UnixMs started_at = 0;
  UnixMs finished_at = 0;
};

struct WaveRecord {
  int64_t release_id = 0;
  int index = 0;
  std::string name;
  std::string state = wave_state::kPending;
  UnixMs started_at = 0;
  UnixMs bake_started_at = 0;  // stored so that a restart resumes the bake, not restarts it
  UnixMs finished_at = 0;
};

struct HostRecord {
  int64_t release_id = 0;
  std::string agent;
  std::string region;
  int wave = 0;
  std::string state = host_state::kPending;
  std::string task_id;      // the task outstanding or last sent to this host
  std::string detail;       // last step, or the error that failed it
  UnixMs started_at = 0;    // first task sent
  UnixMs task_sent_at = 0;  // current task sent; its deadline counts from here
  UnixMs finished_at = 0;
};

struct AgentRecord {
  std::string name;
  std::string region;
  std::string pipeline;
  std::string current_version;
  std::vector<std::string> versions_on_disk;
  bool connected = false;
  UnixMs first_seen = 0;
  UnixMs last_seen = 0;
};

struct AuditRecord {
  int64_t id = 0;
  UnixMs at = 0;
  std::string actor;   // token name, "engine", "agent:<name>"
  std::string action;  // "release.create", "release.fail", ...
  std::string target;  // "monolith", "release/12"
  std::string detail;
  std::string outcome = "ok";
};

// Everything one engine pass (or one API call) changes, written in a single transaction.
struct WriteBatch {
  std::vector<ReleaseRecord> releases;  // upserted by id (id must exist)
  std::vector<WaveRecord> waves;        // upserted by (release_id, index)
  std::vector<HostRecord> hosts;        // upserted by (release_id, agent)
  std::vector<AgentRecord> agents;      // upserted by name
  std::vector<AuditRecord> audit;       // appended

  bool empty() const {
    return releases.empty() && waves.empty() && hosts.empty() && agents.empty() && audit.empty();
  }
};

}  // namespace lockstep
