// Views: stored records turned into the wire messages both front doors (the CLI's gRPC and
// the HTTP API) show. Pure functions of their inputs.
#pragma once

#include <vector>

#include "common/status.h"
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
lockstep::v1::AuditEntry AuditView(const AuditRecord& a);
// Never carries the token or its hash.
lockstep::v1::TokenInfo TokenView(const TokenRecord& t);

class StoreReader;
class Engine;
// Reads a release with its waves, hosts and gate verdicts and builds its view.
StatusOr<lockstep::v1::Release> LoadReleaseView(StoreReader& store, const Engine& engine,
                                                int64_t id);

// The newest releases, for both front doors (gRPC and HTTP): of `pipeline` ("" for all),
// at most `limit` (<= 0: 50), only in `state` and of `kind` when those are given. Unknown
// pipeline: kNotFound; unknown state or kind: kInvalidArgument naming the allowed ones.
// Narrower lists for the dashboard's history: every field narrows; the defaults match all.
struct ReleaseFilter {
  std::string version;
  std::string actor;      // the author or created_by, exactly
  UnixMs since = 0;       // created at or after
  UnixMs until = 0;       // created at or before
  int64_t before_id = 0;  // the next page: releases older than this id
};

StatusOr<std::vector<ReleaseRecord>> ListReleasesView(StoreReader& store, const Engine& engine,
                                                      const std::string& pipeline, int limit,
                                                      const std::string& state,
                                                      const std::string& kind,
                                                      const ReleaseFilter& filter = {});
// The status of every pipeline (or one), as `lockstep status` shows it.
StatusOr<lockstep::v1::StatusResponse> LoadStatusView(StoreReader& store, const Engine& engine,
                                                      const std::string& pipeline);

}  // namespace lockstep
