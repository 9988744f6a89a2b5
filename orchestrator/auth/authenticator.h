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

#include <functional>
#include <map>
#include <mutex>
#include <string>
#include <string_view>
#include <vector>

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

  // An agent's hello. A host is its own identity: its first hello carries its region's
  // enrollment token, and lockstepd then issues it a credential of its own (random, stored
  // as a hash, bound to the name and region); every later hello must present that
  // credential. So:
  //  - a valid credential for `name` admits the host (its region must match);
  //  - otherwise the enrollment token must be a valid (unrevoked, unexpired) agent token of
  //    `region`, and `name` must have no credential yet: then the result says to enroll;
  //  - a name that has a credential cannot be taken with an enrollment token
  //    (kPermissionDenied), and a caller with neither learns only "invalid credentials".
  // REQUIRES: name and region are valid names (common/untrusted.h).
  struct AgentCheck {
    bool enroll = false;     // admitted by enrollment token: call Enroll before welcoming
    std::string token_name;  // the enrollment token's name, when enroll
  };
  StatusOr<AgentCheck> CheckAgent(const std::string& name, const std::string& region,
                                  std::string_view enrollment_token,
                                  std::string_view credential) const;
  // Issues `name` its credential (audited as agents.enroll) and returns it in plain text,
  // the only time it exists outside the host. kPermissionDenied if the name was enrolled
  // meanwhile.
  StatusOr<std::string> Enroll(const std::string& name, const std::string& region,
                               const std::string& token_name) const;

  // Creates a token and returns it in plain text (the only time it exists outside the
  // caller's hands). role: an API role, or "agent" with a region.
  // expires_in_ms > 0: the token stops working that long from now.
  StatusOr<std::string> CreateToken(const std::string& name, const std::string& role,
                                    const std::string& region, const std::string& actor,
                                    int64_t expires_in_ms = 0) const;
  // Audits a refused agent hello ("agents.refused"), e.g. an attempt to take an enrolled
  // host's name. Best effort: a store error is ignored (the refusal stands either way).
  void RecordAgentRefusal(const std::string& name, const std::string& region,
                          const std::string& why) const;
  // Revokes a token at once (audited). kNotFound, or kFailedPrecondition if already revoked.
  // Then calls every OnRevoke listener with the token's name.
  Status RevokeToken(const std::string& name, const std::string& actor) const;
  // `listener` is called (on the revoking thread) after each revocation, so holders of open
  // streams can close those of the revoked token. Must not call back into the authenticator.
  void OnRevoke(std::function<void(const std::string& token_name)> listener) const;

  // If the store has no token at all, creates an admin token named "bootstrap-admin" and
  // writes it to `path`. Returns true if it did.
  StatusOr<bool> Bootstrap(const std::string& path) const;

 private:
  // kUnauthenticated if the token was revoked or has expired.
  Status CheckUsable(const TokenRecord& t) const;
  // Records use of a token, at most once a minute per token.
  void Touch(const TokenRecord& t) const;

  Store* const store_;
  const Clock* const clock_;
  mutable std::mutex listeners_mu_;
  mutable std::vector<std::function<void(const std::string&)>> revoke_listeners_;  // guarded
  mutable std::mutex touch_mu_;
  mutable std::map<std::string, UnixMs> last_touch_;  // guarded by touch_mu_
};

}  // namespace lockstep
