// Tokens and roles: every cell of the role × action matrix against a table written out
// independently here, role and action names, the shape of generated tokens, how they are
// hashed for storage, and which Authorization header values yield a bearer token.

#include "orchestrator/auth/tokens.h"

#include <gtest/gtest.h>

#include <iterator>
#include <optional>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "common/sha256.h"

namespace lockstep {
namespace {

constexpr Role kAllRoles[] = {Role::kViewer, Role::kDeployer, Role::kReleaseManager, Role::kOnCall,
                              Role::kAdmin};
constexpr Action kAllActions[] = {Action::kRead,     Action::kCreateRelease, Action::kApprove,
                                  Action::kPause,    Action::kResume,        Action::kAbort,
                                  Action::kRollback, Action::kFreeze,        Action::kManageTokens};

struct Cell {
  Role role;
  Action action;
  bool allowed;
};

// The product's permission matrix, spelled out cell by cell.
const std::vector<Cell>& ExpectedMatrix() {
  static const std::vector<Cell> cells = {
      {Role::kViewer, Action::kRead, true},
      {Role::kViewer, Action::kCreateRelease, false},
      {Role::kViewer, Action::kApprove, false},
      {Role::kViewer, Action::kPause, false},
      {Role::kViewer, Action::kResume, false},
      {Role::kViewer, Action::kAbort, false},
      {Role::kViewer, Action::kRollback, false},
      {Role::kViewer, Action::kFreeze, false},
      {Role::kViewer, Action::kManageTokens, false},

      {Role::kDeployer, Action::kRead, true},
      {Role::kDeployer, Action::kCreateRelease, true},
      {Role::kDeployer, Action::kApprove, false},
      {Role::kDeployer, Action::kPause, false},
      {Role::kDeployer, Action::kResume, false},
      {Role::kDeployer, Action::kAbort, false},
      {Role::kDeployer, Action::kRollback, false},
      {Role::kDeployer, Action::kFreeze, false},
      {Role::kDeployer, Action::kManageTokens, false},

      {Role::kReleaseManager, Action::kRead, true},
      {Role::kReleaseManager, Action::kCreateRelease, true},
      {Role::kReleaseManager, Action::kApprove, true},
      {Role::kReleaseManager, Action::kPause, true},
      {Role::kReleaseManager, Action::kResume, true},
      {Role::kReleaseManager, Action::kAbort, true},
      {Role::kReleaseManager, Action::kRollback, true},
      {Role::kReleaseManager, Action::kFreeze, true},
      {Role::kReleaseManager, Action::kManageTokens, false},

      {Role::kOnCall, Action::kRead, true},
      {Role::kOnCall, Action::kCreateRelease, false},
      {Role::kOnCall, Action::kApprove, false},
      {Role::kOnCall, Action::kPause, true},
      {Role::kOnCall, Action::kResume, true},
      {Role::kOnCall, Action::kAbort, true},
      {Role::kOnCall, Action::kRollback, true},
      {Role::kOnCall, Action::kFreeze, true},
      {Role::kOnCall, Action::kManageTokens, false},

      {Role::kAdmin, Action::kRead, true},
      {Role::kAdmin, Action::kCreateRelease, true},
      {Role::kAdmin, Action::kApprove, true},
      {Role::kAdmin, Action::kPause, true},
      {Role::kAdmin, Action::kResume, true},
      {Role::kAdmin, Action::kAbort, true},
      {Role::kAdmin, Action::kRollback, true},
      {Role::kAdmin, Action::kFreeze, true},
      {Role::kAdmin, Action::kManageTokens, true},
  };
  return cells;
}

bool IsLowerHex(const std::string& s) {
  return s.find_first_not_of("0123456789abcdef") == std::string::npos;
}

TEST(RoleAllowsTest, ExpectedTableCoversEveryRoleAndAction) {
  std::set<std::pair<Role, Action>> covered;
  for (const Cell& cell : ExpectedMatrix()) covered.insert({cell.role, cell.action});
  EXPECT_EQ(covered.size(), std::size(kAllRoles) * std::size(kAllActions));
  EXPECT_EQ(ExpectedMatrix().size(), covered.size()) << "a cell is listed twice";
}

TEST(RoleAllowsTest, MatchesTheProductMatrixInEveryCell) {
  for (const Cell& cell : ExpectedMatrix()) {
    EXPECT_EQ(RoleAllows(cell.role, cell.action), cell.allowed)
        << RoleName(cell.role) << " × " << ActionName(cell.action);
  }
}

TEST(RoleAllowsTest, DeniesRoleValuesOutsideTheEnum) {
  EXPECT_FALSE(RoleAllows(static_cast<Role>(99), Action::kRead));
}

TEST(RoleAllowsTest, DeniesActionValuesOutsideTheEnum) {
  EXPECT_FALSE(RoleAllows(Role::kAdmin, static_cast<Action>(99)));
}

TEST(ParseRoleTest, ReadsEveryDocumentedName) {
  EXPECT_EQ(ParseRole("viewer"), Role::kViewer);
  EXPECT_EQ(ParseRole("deployer"), Role::kDeployer);
  EXPECT_EQ(ParseRole("release-manager"), Role::kReleaseManager);
  EXPECT_EQ(ParseRole("on-call"), Role::kOnCall);
  EXPECT_EQ(ParseRole("admin"), Role::kAdmin);
}

TEST(ParseRoleTest, RoundTripsEveryRoleThroughItsName) {
  for (Role role : kAllRoles) EXPECT_EQ(ParseRole(RoleName(role)), role) << RoleName(role);
}

TEST(ParseRoleTest, RejectsUnknownNames) {
  EXPECT_EQ(ParseRole("root"), std::nullopt);
  EXPECT_EQ(ParseRole(""), std::nullopt);
  EXPECT_EQ(ParseRole("Admin"), std::nullopt);
  EXPECT_EQ(ParseRole("release_manager"), std::nullopt);
  EXPECT_EQ(ParseRole("admin "), std::nullopt);
}

TEST(RoleNameTest, NamesValuesOutsideTheEnumUnknown) {
  EXPECT_STREQ(RoleName(static_cast<Role>(99)), "unknown");
}

TEST(ActionNameTest, UsesTheAuditLogNames) {
  EXPECT_STREQ(ActionName(Action::kRead), "read");
  EXPECT_STREQ(ActionName(Action::kCreateRelease), "release.create");
  EXPECT_STREQ(ActionName(Action::kApprove), "release.approve");
  EXPECT_STREQ(ActionName(Action::kPause), "pipeline.pause");
  EXPECT_STREQ(ActionName(Action::kResume), "pipeline.resume");
  EXPECT_STREQ(ActionName(Action::kAbort), "release.abort");
  EXPECT_STREQ(ActionName(Action::kRollback), "pipeline.rollback");
  EXPECT_STREQ(ActionName(Action::kFreeze), "pipeline.freeze");
  EXPECT_STREQ(ActionName(Action::kManageTokens), "tokens.manage");
  EXPECT_STREQ(ActionName(static_cast<Action>(99)), "unknown");
}

TEST(GenerateTokenTest, IsLstPrefixFollowedBy64LowerHexDigits) {
  std::string token = GenerateToken();
  ASSERT_EQ(token.size(), 4u + 64u) << token;
  EXPECT_EQ(token.substr(0, 4), "lst_");
  EXPECT_TRUE(IsLowerHex(token.substr(4))) << token;
}

TEST(GenerateTokenTest, GivesADifferentTokenEveryTime) {
  std::set<std::string> tokens;
  for (int i = 0; i < 100; ++i) tokens.insert(GenerateToken());
  EXPECT_EQ(tokens.size(), 100u);
}

TEST(HashTokenTest, IsTheSha256HexOfTheToken) {
  // sha256("abc"), FIPS 180-2 appendix B.1.
  EXPECT_EQ(HashToken("abc"), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
  std::string token = GenerateToken();
  EXPECT_EQ(HashToken(token), Sha256Hex(token));
}

TEST(HashTokenTest, DiffersFromTheTokenAndDoesNotContainIt) {
  std::string token = GenerateToken();
  std::string hash = HashToken(token);
  EXPECT_NE(hash, token);
  EXPECT_EQ(hash.find(token.substr(4)), std::string::npos);
  EXPECT_TRUE(IsSha256Hex(hash));
}

TEST(HashTokenTest, IsDeterministicSoStoredHashesCanBeLookedUp) {
  std::string token = GenerateToken();
  EXPECT_EQ(HashToken(token), HashToken(token));
  EXPECT_NE(HashToken(token), HashToken(GenerateToken()));
}

TEST(BearerTokenTest, ReadsTheTokenAfterBearer) {
  EXPECT_EQ(BearerToken("Bearer x"), "x");
  std::string token = GenerateToken();
  EXPECT_EQ(BearerToken("Bearer " + token), token);
}

TEST(BearerTokenTest, MatchesTheSchemeCaseInsensitively) {
  EXPECT_EQ(BearerToken("bearer abc"), "abc");
  EXPECT_EQ(BearerToken("BEARER abc"), "abc");
}

TEST(BearerTokenTest, ToleratesExtraSpacesAndTabsAroundTheToken) {
  EXPECT_EQ(BearerToken("Bearer   abc"), "abc");
  EXPECT_EQ(BearerToken("  Bearer abc  "), "abc");
  EXPECT_EQ(BearerToken("Bearer\tabc"), "abc");
}

TEST(BearerTokenTest, AcceptsBase64StyleTokens) {
  EXPECT_EQ(BearerToken("Bearer a-b.c_d~e+f/g=="), "a-b.c_d~e+f/g==");
}

TEST(BearerTokenTest, RejectsOtherSchemes) {
  EXPECT_EQ(BearerToken("Basic x"), std::nullopt);
  EXPECT_EQ(BearerToken("Token x"), std::nullopt);
  EXPECT_EQ(BearerToken("Bearerx"), std::nullopt);
}

TEST(BearerTokenTest, RejectsAMissingToken) {
  EXPECT_EQ(BearerToken(""), std::nullopt);
  EXPECT_EQ(BearerToken("Bearer"), std::nullopt);
  EXPECT_EQ(BearerToken("Bearer "), std::nullopt);
  EXPECT_EQ(BearerToken("   "), std::nullopt);
}

TEST(BearerTokenTest, RejectsATokenWithoutTheScheme) {
  EXPECT_EQ(BearerToken("lst_0123"), std::nullopt);
}

TEST(BearerTokenTest, RejectsTwoWordsAfterTheScheme) {
  EXPECT_EQ(BearerToken("Bearer abc def"), std::nullopt);
}

TEST(BearerTokenTest, RejectsCharactersOutsideTheTokenAlphabet) {
  EXPECT_EQ(BearerToken("Bearer abc,def"), std::nullopt);
  EXPECT_EQ(BearerToken("Bearer ab\"c"), std::nullopt);
  EXPECT_EQ(BearerToken(std::string("Bearer ab\0c", 11)), std::nullopt);
  EXPECT_EQ(BearerToken("Bearer =abc"), std::nullopt);
  EXPECT_EQ(BearerToken("Bearer ab=c"), std::nullopt);
}

}  // namespace
}  // namespace lockstep
