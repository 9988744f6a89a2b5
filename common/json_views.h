// JSON renderings of the API's messages, shared by the CLI (--output json) and the HTTP API,
// so both speak the same shapes. Times appear twice: as unix milliseconds (`*_ms`) for
// programs and as ISO-8601 UTC strings for people.
#pragma once

#include <nlohmann/json.hpp>

#include "proto/lockstep.pb.h"

namespace lockstep {

nlohmann::json ReleaseJson(const lockstep::v1::Release& r);
nlohmann::json AgentJson(const lockstep::v1::Agent& a);
nlohmann::json PipelineStatusJson(const lockstep::v1::PipelineStatus& p);
nlohmann::json AuditJson(const lockstep::v1::AuditEntry& e);
nlohmann::json TokenJson(const lockstep::v1::TokenInfo& t);

}  // namespace lockstep
