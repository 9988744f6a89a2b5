// Authenticator: who is calling, and may they do this.
//
// API callers present "Authorization: Bearer <token>" (HTTP) or the same in the gRPC
// "authorization" metadata; the token's sha256 is looked up in the store. Agents present a
// per-region enrollment token in their hello. The first start of an empty store creates an
// admin token and writes it (mode 0600) to the bootstrap file.
//
// Errors: kUnauthenticated (no token, unknown token), kPermissionDenied (the role may not do
// this), naming what was wrong but never echoing the token.
//
// Thread safety: every method may be called from any thread (the store serialises).
#pragma once

#include <string>
#include <string_view>

#include "common/clock.h"
#include "common/status.h"
#include "orchestrator/auth/tokens.h"
#include "orchestrator/store/store.h"

namespace lockstep {

struct Principal {
  std::string name;
  Role role = Role::kViewer;
};

class Authenticator {
 public:
  Authenticator(Store* store, const Clock* clock) : store_(store), clock_(clock) {}

  // `authorization`: the header value ("Bearer lst_..."), empty if absent.
  StatusOr<Principal> Authenticate(std::string_view authorization) const;
  static Status Authorize(const Principal& who, Action action);
  // Both: the principal, or why not.
  StatusOr<Principal> Check(std::string_view authorization, Action action) const;

  // An agent's enrollment token must be an agent token for its region.
  Status AuthenticateAgent(std::string_view token, const std::string& region) const;

  // Creates a token and returns it in plain text (the only time it exists outside the
  // caller's hands). role: an API role, or "agent" with a region.
  StatusOr<std::string> CreateToken(const std::string& name, const std::string& role,
                                    const std::string& region, const std::string& actor) const;

  // If the store has no token at all, creates an admin token named "bootstrap-admin" and
  // writes it to `path`. Returns true if it did.
  StatusOr<bool> Bootstrap(const std::string& path) const;

 private:
  Store* const store_;
  const Clock* const clock_;
};

}  // namespace lockstep
