// Views: stored records turned into the wire messages the CLI (and later the HTTP API)
// shows. Pure functions of their inputs.
#pragma once

#include <vector>

#include "orchestrator/pipeline/pipeline.h"
#include "orchestrator/store/model.h"
#include "proto/lockstep.pb.h"

namespace lockstep {

// `pipeline` may be null (a release of a pipeline no longer configured): waves are then
// shown from their records alone.
lockstep::v1::Release ReleaseView(const ReleaseRecord& r, const std::vector<WaveRecord>& waves,
                                  const std::vector<HostRecord>& hosts, const Pipeline* pipeline);
// A release without its waves and hosts, for lists.
lockstep::v1::Release ReleaseSummary(const ReleaseRecord& r);
lockstep::v1::Agent AgentView(const AgentRecord& a);

}  // namespace lockstep
