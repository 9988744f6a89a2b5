#include "orchestrator/auth/authenticator.h"

#include <fcntl.h>
#include <openssl/crypto.h>
#include <unistd.h>

#include <regex>

#include "common/random.h"

namespace lockstep {

StatusOr<Principal> Authenticator::Authenticate(std::string_view authorization) const {
  if (authorization.empty()) {
    return Status(StatusCode::kUnauthenticated, "missing bearer token");
  }
  auto token = BearerToken(authorization);
  if (!token) {
    return Status(StatusCode::kUnauthenticated,
                  "malformed authorization: expected \"Bearer <token>\"");
  }
  LOCKSTEP_ASSIGN_OR_RETURN(auto found, store_->FindTokenByHash(HashToken(*token)));
  if (!found.has_value()) return Status(StatusCode::kUnauthenticated, "invalid token");
  const TokenRecord& t = *found;
  LOCKSTEP_RETURN_IF_ERROR(CheckUsable(t));
  Touch(t);
  auto role = ParseRole(t.role);
  if (!role) {
    return Status(StatusCode::kPermissionDenied,
                  "token \"" + t.name + "\" is an agent enrollment token, not an API token");
  }
  return Principal{t.name, *role};
}

Status Authenticator::Authorize(const Principal& who, Action action) {
  if (RoleAllows(who.role, action)) return Status::Ok();
  return Status(StatusCode::kPermissionDenied, std::string("role ") + RoleName(who.role) +
                                                   " of token \"" + who.name + "\" may not " +
                                                   ActionName(action));
}

StatusOr<Principal> Authenticator::Check(std::string_view authorization, Action action) const {
  LOCKSTEP_ASSIGN_OR_RETURN(auto who, Authenticate(authorization));
  LOCKSTEP_RETURN_IF_ERROR(Authorize(who, action));
  return who;
}

Status Authenticator::CheckUsable(const TokenRecord& t) const {
  if (t.revoked_at != 0) {
    return Status(StatusCode::kUnauthenticated, "token \"" + t.name + "\" was revoked");
  }
  if (t.expires_at != 0 && clock_->Now() >= t.expires_at) {
    return Status(StatusCode::kUnauthenticated, "token \"" + t.name + "\" has expired");
  }
  return Status::Ok();
}

void Authenticator::Touch(const TokenRecord& t) const {
  const UnixMs now = clock_->Now();
  {
    std::lock_guard lock(touch_mu_);
    UnixMs& last = last_touch_[t.name];
    if (now - last < 60'000) return;
    last = now;
  }
  (void)store_->TouchToken(t.name, now);  // best effort: a read must not fail on it
}

StatusOr<Authenticator::AgentCheck> Authenticator::CheckAgent(const std::string& name,
                                                              const std::string& region,
                                                              std::string_view enrollment_token,
                                                              std::string_view credential) const {
  LOCKSTEP_ASSIGN_OR_RETURN(auto enrolled, store_->FindHostCredential(name));
  if (enrolled.has_value() && !credential.empty()) {
    const std::string presented = HashToken(credential);
    const std::string& stored = enrolled->hash;
    if (presented.size() == stored.size() &&
        CRYPTO_memcmp(presented.data(), stored.data(), stored.size()) == 0) {
      if (enrolled->region != region) {
        return PermissionDenied("host \"" + name + "\" is enrolled in region " + enrolled->region +
                                ", not " + region);
      }
      return AgentCheck{};
    }
  }
  // No valid credential: only an enrollment token of the region, for a name not yet
  // enrolled. One message for every unauthenticated case, so a caller without a token
  // learns nothing about which names are enrolled.
  const Status invalid(StatusCode::kUnauthenticated, "invalid enrollment token or host credential");
  if (enrollment_token.empty()) return invalid;
  LOCKSTEP_ASSIGN_OR_RETURN(auto found, store_->FindTokenByHash(HashToken(enrollment_token)));
  if (!found.has_value() || found->role != "agent") return invalid;
  LOCKSTEP_RETURN_IF_ERROR(CheckUsable(*found));
  if (found->region != region) {
    return PermissionDenied("enrollment token \"" + found->name + "\" is for region " +
                            found->region + ", not " + region);
  }
  Touch(*found);
  if (enrolled.has_value()) {
    return PermissionDenied("host \"" + name +
                            "\" is already enrolled and must present its own credential; to "
                            "replace the host, first run: lockstep agents remove " +
                            name);
  }
  return AgentCheck{true, found->name};
}

StatusOr<std::string> Authenticator::Enroll(const std::string& name, const std::string& region,
                                            const std::string& token_name) const {
  std::string credential = "lsh_" + RandomHex(32);
  HostCredentialRecord c{name, region, HashToken(credential), clock_->Now(), token_name};
  AuditRecord a;
  a.at = c.created_at;
  a.actor = "agent:" + name;
  a.action = "agents.enroll";
  a.target = "agent/" + name;
  a.detail = region + " with enrollment token " + token_name;
  Status st = store_->IssueHostCredential(c, a);
  if (st.code() == StatusCode::kAlreadyExists) {
    return PermissionDenied("host \"" + name + "\" is already enrolled");
  }
  LOCKSTEP_RETURN_IF_ERROR(st);
  return credential;
}

void Authenticator::RecordAgentRefusal(const std::string& name, const std::string& region,
                                       const std::string& why) const {
  AuditRecord a;
  a.at = clock_->Now();
  a.actor = "agent:" + name;
  a.action = "agents.refused";
  a.target = "agent/" + name;
  a.detail = region + ": " + why;
  a.outcome = "refused";
  WriteBatch b;
  b.audit.push_back(std::move(a));
  // Best effort, on purpose: the refusal itself is already decided, counted and logged by the
  // hub (lockstep_agent_refusals_total); a store that cannot write is reported by /healthz.
  // Failing here must not change the answer to a peer that was refused.
  (void)store_->Write(b);
}

Status Authenticator::RevokeToken(const std::string& name, const std::string& actor) const {
  AuditRecord a;
  a.at = clock_->Now();
  a.actor = actor;
  a.action = "tokens.revoke";
  a.target = "token/" + name;
  LOCKSTEP_RETURN_IF_ERROR(store_->RevokeToken(name, a.at, actor, a));
  std::vector<std::function<void(const std::string&)>> listeners;
  {
    std::lock_guard lock(listeners_mu_);
    listeners = revoke_listeners_;
  }
  for (const auto& l : listeners) l(name);
  return Status::Ok();
}

void Authenticator::OnRevoke(std::function<void(const std::string&)> listener) const {
  std::lock_guard lock(listeners_mu_);
  revoke_listeners_.push_back(std::move(listener));
}

StatusOr<std::string> Authenticator::CreateToken(const std::string& name, const std::string& role,
                                                 const std::string& region,
                                                 const std::string& actor,
                                                 int64_t expires_in_ms) const {
  static const std::regex kName(R"([A-Za-z0-9][A-Za-z0-9._@-]{0,63})");
  if (!std::regex_match(name, kName)) {
    return InvalidArgument("name: \"" + name +
                           "\" must be 1-64 letters, digits, '.', '_', '@' or '-'");
  }
  if (role == "agent") {
    if (region.empty()) return InvalidArgument("region: an agent token needs --region");
  } else if (!ParseRole(role)) {
    return InvalidArgument("role: unknown role \"" + role +
                           "\" (viewer, deployer, release-manager, on-call, admin, agent)");
  } else if (!region.empty()) {
    return InvalidArgument("region: only agent tokens have a region");
  }
  if (expires_in_ms < 0) return InvalidArgument("expires_in: must not be negative");
  std::string token = GenerateToken();
  TokenRecord t{name, role, region, HashToken(token), clock_->Now(), actor, 0, 0, 0, ""};
  if (expires_in_ms > 0) t.expires_at = t.created_at + expires_in_ms;
  AuditRecord a;
  a.at = t.created_at;
  a.actor = actor;
  a.action = "tokens.create";
  a.target = "token/" + name;
  a.detail = role + (region.empty() ? "" : " " + region) +
             (expires_in_ms > 0 ? " expires in " + std::to_string(expires_in_ms / 1000) + "s" : "");
  LOCKSTEP_RETURN_IF_ERROR(store_->CreateToken(t, a));
  return token;
}

StatusOr<bool> Authenticator::Bootstrap(const std::string& path) const {
  LOCKSTEP_ASSIGN_OR_RETURN(auto count, store_->CountTokens());
  if (count > 0) return false;
  // Write the file first: a token nobody can read would lock everyone out.
  std::string token = GenerateToken();
  // A fresh file that is ours alone: a leftover temporary name is removed (unlink removes a
  // symbolic link itself, never its target), and O_EXCL|O_NOFOLLOW refuse anything planted
  // there between the two calls. rename() then replaces `path` itself, even if it is a link.
  std::string tmp = path + ".tmp";
  ::unlink(tmp.c_str());
  int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
  if (fd < 0) return Unavailable("cannot write bootstrap token file " + path);
  std::string line = token + "\n";
  bool ok = ::write(fd, line.data(), line.size()) == static_cast<ssize_t>(line.size());
  ok = ::fsync(fd) == 0 && ok;
  ::close(fd);
  if (!ok || std::rename(tmp.c_str(), path.c_str()) != 0) {
    return Unavailable("cannot write bootstrap token file " + path);
  }
  TokenRecord t{
      "bootstrap-admin", "admin", "", HashToken(token), clock_->Now(), "lockstepd", 0, 0, 0, ""};
  AuditRecord a;
  a.at = t.created_at;
  a.actor = "lockstepd";
  a.action = "tokens.create";
  a.target = "token/bootstrap-admin";
  a.detail = "admin (first start)";
  LOCKSTEP_RETURN_IF_ERROR(store_->CreateToken(t, a));
  return true;
}

}  // namespace lockstep
