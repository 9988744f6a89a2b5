#include "orchestrator/auth/authenticator.h"

#include <fcntl.h>
#include <unistd.h>

#include <regex>

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
  auto found = store_->FindTokenByHash(HashToken(*token));
  if (!found.ok()) return found.status();
  if (!found->has_value()) return Status(StatusCode::kUnauthenticated, "invalid token");
  const TokenRecord& t = **found;
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
  auto who = Authenticate(authorization);
  if (!who.ok()) return who.status();
  LOCKSTEP_RETURN_IF_ERROR(Authorize(*who, action));
  return who;
}

Status Authenticator::AuthenticateAgent(std::string_view token, const std::string& region) const {
  if (token.empty()) {
    return Status(StatusCode::kUnauthenticated, "missing enrollment token");
  }
  auto found = store_->FindTokenByHash(HashToken(token));
  if (!found.ok()) return found.status();
  if (!found->has_value() || (*found)->role != "agent") {
    return Status(StatusCode::kUnauthenticated, "invalid enrollment token");
  }
  if ((*found)->region != region) {
    return Status(StatusCode::kPermissionDenied, "enrollment token \"" + (*found)->name +
                                                     "\" is for region " + (*found)->region +
                                                     ", not " + region);
  }
  return Status::Ok();
}

StatusOr<std::string> Authenticator::CreateToken(const std::string& name, const std::string& role,
                                                 const std::string& region,
                                                 const std::string& actor) const {
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
  std::string token = GenerateToken();
  TokenRecord t{name, role, region, HashToken(token), clock_->Now(), actor};
  AuditRecord a;
  a.at = t.created_at;
  a.actor = actor;
  a.action = "tokens.create";
  a.target = "token/" + name;
  a.detail = role + (region.empty() ? "" : " " + region);
  LOCKSTEP_RETURN_IF_ERROR(store_->CreateToken(t, a));
  return token;
}

StatusOr<bool> Authenticator::Bootstrap(const std::string& path) const {
  auto count = store_->CountTokens();
  if (!count.ok()) return count.status();
  if (*count > 0) return false;
  // Write the file first: a token nobody can read would lock everyone out.
  std::string token = GenerateToken();
  std::string tmp = path + ".tmp";
  int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  if (fd < 0) return Unavailable("cannot write bootstrap token file " + path);
  std::string line = token + "\n";
  bool ok = ::write(fd, line.data(), line.size()) == static_cast<ssize_t>(line.size());
  ok = ::fsync(fd) == 0 && ok;
  ::close(fd);
  if (!ok || std::rename(tmp.c_str(), path.c_str()) != 0) {
    return Unavailable("cannot write bootstrap token file " + path);
  }
  TokenRecord t{"bootstrap-admin", "admin", "", HashToken(token), clock_->Now(), "lockstepd"};
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
