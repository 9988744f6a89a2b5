// API tokens and roles: who may call what on the HTTP API and the CLI.
//
// A caller presents `Authorization: Bearer <token>`. Tokens are random ("lst_" + 64 hex
// digits, 256 bits from OpenSSL's CSPRNG) and are never stored: only HashToken(token), the
// SHA-256 hex digest, is kept, so a copy of the database cannot be replayed as credentials.
// Each token has one Role; RoleAllows() is the single authority on which Actions a role may
// perform, and denies anything it does not know. Every function here is pure or uses only
// thread-safe OpenSSL state, so all may be called from any thread.
#pragma once

#include <optional>
#include <string>
#include <string_view>

namespace lockstep {

enum class Role { kViewer, kDeployer, kReleaseManager, kOnCall, kAdmin };

// Reads the name used in the CLI, the API and the store: "viewer", "deployer",
// "release-manager", "on-call", "admin". Exact, case-sensitive match; nullopt otherwise.
std::optional<Role> ParseRole(std::string_view name);

// The inverse of ParseRole; "unknown" for a value outside the enum.
const char* RoleName(Role role);

// Everything a token can be used for. Each mutating API call maps to exactly one action.
enum class Action {
  kRead,           // any GET
  kCreateRelease,  // POST /releases (and the CLI's release create)
  kApprove,        // approve a wave waiting for manual approval
  kPause,          // pause a pipeline
  kResume,         // resume a paused pipeline
  kAbort,          // abort a release and roll back what it changed
  kRollback,       // roll a pipeline back to an earlier version
  kFreeze,         // freeze a pipeline against new releases
  kManageTokens,   // create and revoke tokens
};

// The name written to the audit log: "read", "release.create", "release.approve",
// "pipeline.pause", "pipeline.resume", "release.abort", "pipeline.rollback",
// "pipeline.freeze", "tokens.manage"; "unknown" for a value outside the enum.
const char* ActionName(Action action);

// True if a token with `role` may perform `action`. False for values outside the enums.
bool RoleAllows(Role role, Action action);

// A new random token: "lst_" followed by 64 lower-case hex digits (32 bytes from
// RAND_bytes). Aborts the process if the CSPRNG fails, since issuing a guessable
// credential is worse than not running.
std::string GenerateToken();

// The form in which a token is stored and looked up: lower-case SHA-256 hex of its bytes.
std::string HashToken(std::string_view token);

// The token in an Authorization header value of the form "Bearer <token>". The scheme is
// matched case-insensitively (RFC 7235); spaces or tabs around the value and between scheme
// and token are tolerated. The token must be non-empty RFC 6750 b64token characters
// (letters, digits, "-._~+/", trailing "="). nullopt for any other scheme or shape.
std::optional<std::string> BearerToken(std::string_view header_value);

}  // namespace lockstep
