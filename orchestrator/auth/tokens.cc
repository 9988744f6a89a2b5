#include "orchestrator/auth/tokens.h"

#include <openssl/rand.h>

#include <array>
#include <cstdio>
#include <cstdlib>
#include <iterator>
#include <string>

#include "common/sha256.h"

namespace lockstep {
namespace {

constexpr size_t kRoleCount = static_cast<size_t>(Role::kAdmin) + 1;
constexpr size_t kActionCount = static_cast<size_t>(Action::kManageTokens) + 1;

constexpr const char* kRoleNames[] = {"viewer", "deployer", "release-manager", "on-call", "admin"};

struct ActionRow {
  Action action;
  const char* name;                     // as written to the audit log
  std::array<bool, kRoleCount> allows;  // indexed by Role
};

// THE permission matrix: one row per Action, one column per Role in declaration order.
// Anything not marked 1 here is denied. Rows must follow the Action enum's order (checked
// below).
// clang-format off
constexpr ActionRow kMatrix[] = {
  //                                          viewer deployer release-manager on-call admin
  {Action::kRead,          "read",              {1,    1,       1,              1,      1}},
  {Action::kCreateRelease, "release.create",    {0,    1,       1,              0,      1}},
  {Action::kApprove,       "release.approve",   {0,    0,       1,              0,      1}},
  {Action::kPause,         "pipeline.pause",    {0,    0,       1,              1,      1}},
  {Action::kResume,        "pipeline.resume",   {0,    0,       1,              1,      1}},
  {Action::kAbort,         "release.abort",     {0,    0,       1,              1,      1}},
  {Action::kRollback,      "pipeline.rollback", {0,    0,       1,              1,      1}},
  {Action::kFreeze,        "pipeline.freeze",   {0,    0,       1,              1,      1}},
  {Action::kManageTokens,  "tokens.manage",     {0,    0,       0,              0,      1}},
};
// clang-format on

constexpr bool RowsAreInActionOrder() {
  for (size_t i = 0; i < std::size(kMatrix); ++i) {
    if (static_cast<size_t>(kMatrix[i].action) != i) return false;
  }
  return true;
}
static_assert(std::size(kMatrix) == kActionCount, "one row per Action");
static_assert(RowsAreInActionOrder(), "kMatrix rows must follow the Action enum's order");
static_assert(std::size(kRoleNames) == kRoleCount, "one name per Role");

bool IsB64TokenChar(char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-' ||
         c == '.' || c == '_' || c == '~' || c == '+' || c == '/';
}

bool IsSpace(char c) { return c == ' ' || c == '\t'; }

char Lower(char c) { return (c >= 'A' && c <= 'Z') ? static_cast<char>(c - 'A' + 'a') : c; }

std::string_view Trim(std::string_view s) {
  while (!s.empty() && IsSpace(s.front())) s.remove_prefix(1);
  while (!s.empty() && IsSpace(s.back())) s.remove_suffix(1);
  return s;
}

// RFC 6750: b64token = 1*( ALPHA / DIGIT / "-" / "." / "_" / "~" / "+" / "/" ) *"="
bool IsB64Token(std::string_view s) {
  size_t i = 0;
  while (i < s.size() && IsB64TokenChar(s[i])) ++i;
  if (i == 0) return false;
  while (i < s.size() && s[i] == '=') ++i;
  return i == s.size();
}

}  // namespace

std::optional<Role> ParseRole(std::string_view name) {
  for (size_t i = 0; i < kRoleCount; ++i) {
    if (name == kRoleNames[i]) return static_cast<Role>(i);
  }
  return std::nullopt;
}

const char* RoleName(Role role) {
  auto i = static_cast<size_t>(role);
  return i < kRoleCount ? kRoleNames[i] : "unknown";
}

const char* ActionName(Action action) {
  auto i = static_cast<size_t>(action);
  return i < kActionCount ? kMatrix[i].name : "unknown";
}

bool RoleAllows(Role role, Action action) {
  auto r = static_cast<size_t>(role);
  auto a = static_cast<size_t>(action);
  return r < kRoleCount && a < kActionCount && kMatrix[a].allows[r];
}

std::string GenerateToken() {
  std::array<unsigned char, 32> bytes;
  if (RAND_bytes(bytes.data(), static_cast<int>(bytes.size())) != 1) {
    std::fputs("lockstep: RAND_bytes failed; refusing to issue a guessable token\n", stderr);
    std::abort();
  }
  static constexpr char kHex[] = "0123456789abcdef";
  std::string token = "lst_";
  token.reserve(4 + 2 * bytes.size());
  for (unsigned char b : bytes) {
    token.push_back(kHex[b >> 4]);
    token.push_back(kHex[b & 0xf]);
  }
  return token;
}

std::string HashToken(std::string_view token) { return Sha256Hex(token); }

std::optional<std::string> BearerToken(std::string_view header_value) {
  std::string_view v = Trim(header_value);
  constexpr std::string_view kScheme = "bearer";
  if (v.size() <= kScheme.size()) return std::nullopt;
  for (size_t i = 0; i < kScheme.size(); ++i) {
    if (Lower(v[i]) != kScheme[i]) return std::nullopt;
  }
  std::string_view rest = v.substr(kScheme.size());
  if (!IsSpace(rest.front())) return std::nullopt;  // "BearerX" is another scheme
  rest = Trim(rest);
  if (!IsB64Token(rest)) return std::nullopt;
  return std::string(rest);
}

}  // namespace lockstep
