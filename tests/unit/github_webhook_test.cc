// GitHub push webhooks: which X-Hub-Signature-256 headers authenticate a body, what a push
// payload parses to, the error each kind of bad payload gets, and how the artifact URL
// template is filled in from the pushed commit.

#include <gtest/gtest.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>

#include <cctype>
#include <string>

#include "orchestrator/webhook/github.h"

namespace lockstep {
namespace {

constexpr char kSha1[] = "4f2c8e1a9b3d5f7e0c2a4b6d8f1e3c5a7b9d0e2f";

// HMAC-SHA256 computed here, independently of the code under test.
std::string SignatureFor(const std::string& secret, const std::string& body) {
  unsigned char mac[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  HMAC(EVP_sha256(), secret.data(), static_cast<int>(secret.size()),
       reinterpret_cast<const unsigned char*>(body.data()), body.size(), mac, &len);
  static constexpr char kHex[] = "0123456789abcdef";
  std::string header = "sha256=";
  for (unsigned int i = 0; i < len; ++i) {
    header.push_back(kHex[mac[i] >> 4]);
    header.push_back(kHex[mac[i] & 0xf]);
  }
  return header;
}

// A push to main, shaped like the payload GitHub delivers (trimmed to the usual fields).
const std::string kPushToMain = R"({
  "ref": "refs/heads/main",
  "before": "0d1a26e67d8f5eaf1f6ba5c57fc3c7d91ac0fd1c",
  "after": "4F2C8E1A9B3D5F7E0C2A4B6D8F1E3C5A7B9D0E2F",
  "repository": {
    "id": 186853002,
    "node_id": "MDEwOlJlcG9zaXRvcnkxODY4NTMwMDI=",
    "name": "shop",
    "full_name": "acme/shop",
    "private": true,
    "owner": {"name": "acme", "login": "acme", "id": 21031067},
    "default_branch": "main"
  },
  "pusher": {"name": "octocat", "email": "octocat@github.com"},
  "sender": {"login": "octocat", "id": 583231, "type": "User"},
  "created": false,
  "deleted": false,
  "forced": false,
  "base_ref": null,
  "compare": "https://github.com/acme/shop/compare/0d1a26e67d8f...4f2c8e1a9b3d",
  "commits": [{
    "id": "4f2c8e1a9b3d5f7e0c2a4b6d8f1e3c5a7b9d0e2f",
    "tree_id": "f9d2a07e0984f00bdbb3d6a5e0c2f1b0e1e3d9a1",
    "distinct": true,
    "message": "Fix checkout rounding\n\nTotals were off by a cent for some currencies.",
    "timestamp": "2024-05-06T10:11:12+02:00",
    "author": {"name": "Mona Lisa", "email": "mona@acme.example", "username": "mona"},
    "committer": {"name": "GitHub", "email": "noreply@github.com", "username": "web-flow"},
    "added": [], "removed": [], "modified": ["checkout/total.cc"]
  }],
  "head_commit": {
    "id": "4f2c8e1a9b3d5f7e0c2a4b6d8f1e3c5a7b9d0e2f",
    "tree_id": "f9d2a07e0984f00bdbb3d6a5e0c2f1b0e1e3d9a1",
    "distinct": true,
    "message": "Fix checkout rounding\n\nTotals were off by a cent for some currencies.",
    "timestamp": "2024-05-06T10:11:12+02:00",
    "url": "https://github.com/acme/shop/commit/4f2c8e1a9b3d5f7e0c2a4b6d8f1e3c5a7b9d0e2f",
    "author": {"name": "Mona Lisa", "email": "mona@acme.example", "username": "mona"},
    "committer": {"name": "GitHub", "email": "noreply@github.com", "username": "web-flow"},
    "added": [], "removed": [], "modified": ["checkout/total.cc"]
  }
})";

// A minimal payload with the given ref, after, and extra members appended verbatim.
std::string Push(const std::string& ref, const std::string& after, const std::string& extra = "") {
  return R"({"repository": {"full_name": "acme/shop"}, "ref": ")" + ref + R"(", "after": ")" +
         after + R"(")" + extra + "}";
}

PushEvent Parsed(const std::string& body) {
  StatusOr<PushEvent> event = ParsePushEvent(body);
  EXPECT_TRUE(event.ok()) << event.status().ToString();
  return event.ok() ? *event : PushEvent{};
}

std::string ErrorOf(const std::string& body) {
  StatusOr<PushEvent> event = ParsePushEvent(body);
  EXPECT_FALSE(event.ok()) << "parsed: " << body;
  if (event.ok()) return "";
  EXPECT_EQ(event.status().code(), StatusCode::kInvalidArgument);
  return event.status().message();
}

// --- GithubSignature ---

TEST(GithubSignatureTest, MatchesGithubsDocumentedExample) {
  EXPECT_EQ(GithubSignature("It's a Secret to Everybody", "Hello, World!"),
            "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17");
}

TEST(GithubSignatureTest, IsEmptyWithoutASecret) { EXPECT_EQ(GithubSignature("", "body"), ""); }

// --- VerifyGithubSignature ---

TEST(VerifyGithubSignatureTest, AcceptsGithubsDocumentedExample) {
  EXPECT_TRUE(VerifyGithubSignature(
      "It's a Secret to Everybody", "Hello, World!",
      "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17"));
}

TEST(VerifyGithubSignatureTest, AcceptsAnIndependentlyComputedSignatureOfAPushPayload) {
  EXPECT_TRUE(VerifyGithubSignature("s3cret", kPushToMain, SignatureFor("s3cret", kPushToMain)));
}

TEST(VerifyGithubSignatureTest, AcceptsASignedEmptyBody) {
  EXPECT_TRUE(VerifyGithubSignature("s3cret", "", SignatureFor("s3cret", "")));
}

TEST(VerifyGithubSignatureTest, RejectsTheWrongSecret) {
  EXPECT_FALSE(VerifyGithubSignature("other", kPushToMain, SignatureFor("s3cret", kPushToMain)));
}

TEST(VerifyGithubSignatureTest, RejectsATamperedBody) {
  std::string tampered = kPushToMain;
  tampered.replace(tampered.find("acme/shop"), 9, "evil/shop");
  EXPECT_FALSE(VerifyGithubSignature("s3cret", tampered, SignatureFor("s3cret", kPushToMain)));
}

TEST(VerifyGithubSignatureTest, RejectsASignatureWithoutTheSha256Prefix) {
  std::string header = SignatureFor("s3cret", kPushToMain);
  EXPECT_FALSE(VerifyGithubSignature("s3cret", kPushToMain, header.substr(7)));
  EXPECT_FALSE(VerifyGithubSignature("s3cret", kPushToMain, "sha1=" + header.substr(7)));
  EXPECT_FALSE(VerifyGithubSignature("s3cret", kPushToMain, "SHA256=" + header.substr(7)));
}

TEST(VerifyGithubSignatureTest, RejectsUpperCaseHex) {
  std::string header = SignatureFor("s3cret", kPushToMain);
  for (size_t i = 7; i < header.size(); ++i) header[i] = static_cast<char>(std::toupper(header[i]));
  EXPECT_FALSE(VerifyGithubSignature("s3cret", kPushToMain, header));
}

TEST(VerifyGithubSignatureTest, RejectsGarbageHex) {
  EXPECT_FALSE(VerifyGithubSignature("s3cret", kPushToMain, "sha256=" + std::string(64, 'z')));
  EXPECT_FALSE(VerifyGithubSignature("s3cret", kPushToMain, "sha256=abc"));
  std::string header = SignatureFor("s3cret", kPushToMain);
  EXPECT_FALSE(VerifyGithubSignature("s3cret", kPushToMain, header + "00"));
  EXPECT_FALSE(VerifyGithubSignature("s3cret", kPushToMain, header + " "));
}

TEST(VerifyGithubSignatureTest, RejectsAnEmptyHeader) {
  EXPECT_FALSE(VerifyGithubSignature("s3cret", kPushToMain, ""));
  EXPECT_FALSE(VerifyGithubSignature("s3cret", kPushToMain, "sha256="));
}

TEST(VerifyGithubSignatureTest, RejectsEverythingWhenTheSecretIsEmpty) {
  EXPECT_FALSE(VerifyGithubSignature("", kPushToMain, SignatureFor("", kPushToMain)));
}

// --- ParsePushEvent ---

TEST(ParsePushEventTest, ReadsARealisticPushToMain) {
  PushEvent event = Parsed(kPushToMain);
  EXPECT_EQ(event.repository, "acme/shop");
  EXPECT_EQ(event.ref, "refs/heads/main");
  EXPECT_EQ(event.branch, "main");
  EXPECT_EQ(event.after, kSha1);
  EXPECT_EQ(event.author, "Mona Lisa");
  EXPECT_EQ(event.message,
            "Fix checkout rounding\n\nTotals were off by a cent for some currencies.");
  EXPECT_FALSE(event.deleted);
  EXPECT_EQ(event.committed_at_ms, 1714983072000);  // 2024-05-06T08:11:12Z
  EXPECT_EQ(event.delivery_hint, "acme/shop refs/heads/main 4f2c8e1a9b3d");
}

TEST(ParsePushEventTest, LowerCasesTheCommitSha) {
  EXPECT_EQ(Parsed(Push("refs/heads/main", "ABCDEF0123456789ABCDEF0123456789ABCDEF01")).after,
            "abcdef0123456789abcdef0123456789abcdef01");
}

TEST(ParsePushEventTest, AcceptsSha256CommitIds) {
  std::string sha(64, 'a');
  EXPECT_EQ(Parsed(Push("refs/heads/main", sha)).after, sha);
}

TEST(ParsePushEventTest, KeepsSlashesInBranchNames) {
  EXPECT_EQ(Parsed(Push("refs/heads/feature/x", kSha1)).branch, "feature/x");
}

TEST(ParsePushEventTest, GivesNoBranchForATag) {
  PushEvent event = Parsed(Push("refs/tags/v1", kSha1));
  EXPECT_EQ(event.ref, "refs/tags/v1");
  EXPECT_EQ(event.branch, "");
}

TEST(ParsePushEventTest, ReportsADeletedBranch) {
  PushEvent event = Parsed(Push("refs/heads/old", std::string(40, '0'),
                                R"(, "deleted": true, "head_commit": null, )"
                                R"("pusher": {"name": "octocat"})"));
  EXPECT_TRUE(event.deleted);
  EXPECT_EQ(event.branch, "old");
  EXPECT_EQ(event.after, std::string(40, '0'));
  EXPECT_EQ(event.message, "");
}

TEST(ParsePushEventTest, FallsBackToThePusherWhenTheHeadCommitHasNoAuthor) {
  EXPECT_EQ(Parsed(Push("refs/heads/main", kSha1, R"(, "pusher": {"name": "octocat"})")).author,
            "octocat");
}

// A push whose head commit has `timestamp` (a JSON value, verbatim).
std::string PushAt(const std::string& timestamp) {
  return Push("refs/heads/main", kSha1, R"(, "head_commit": {"timestamp": )" + timestamp + "}");
}

TEST(ParsePushEventTest, ReadsTheCommitTimeInUtc) {
  EXPECT_EQ(Parsed(PushAt(R"("2026-12-05T10:00:00Z")")).committed_at_ms, 1796464800000);
}

TEST(ParsePushEventTest, AppliesTheCommitTimesOffset) {
  EXPECT_EQ(Parsed(PushAt(R"("2026-12-05T12:00:00+02:00")")).committed_at_ms, 1796464800000);
  EXPECT_EQ(Parsed(PushAt(R"("2024-02-29T23:59:59.123-05:30")")).committed_at_ms, 1709270999123);
}

TEST(ParsePushEventTest, KeepsMillisecondsOfAFractionalSecond) {
  EXPECT_EQ(Parsed(PushAt(R"("1999-12-31T23:59:59.5Z")")).committed_at_ms, 946684799500);
  EXPECT_EQ(Parsed(PushAt(R"("1999-12-31T23:59:59.123456789Z")")).committed_at_ms, 946684799123);
}

TEST(ParsePushEventTest, GivesNoCommitTimeWithoutAHeadCommitTimestamp) {
  EXPECT_EQ(Parsed(Push("refs/heads/main", kSha1)).committed_at_ms, 0);
  EXPECT_EQ(Parsed(Push("refs/heads/main", kSha1, R"(, "head_commit": null)")).committed_at_ms, 0);
  EXPECT_EQ(Parsed(PushAt("null")).committed_at_ms, 0);
}

TEST(ParsePushEventTest, RejectsAMalformedCommitTimeNamingTheField) {
  for (const char* bad :
       {"", "2026-12-05", "2026-12-05T10:00:00", "2026-12-05 10:00:00Z", "2026-13-05T10:00:00Z",
        "2026-02-29T10:00:00Z", "2026-12-05T24:00:00Z", "2026-12-05T10:00:00+24:00",
        "2026-12-05T10:00:00+0200", "2026-12-05T10:00:00.Z", "2026-12-05T10:00:00Zjunk",
        "yesterday", "+2026-12-05T10:00:00Z", "2026-1-05T10:00:00Z"}) {
    EXPECT_EQ(ErrorOf(PushAt("\"" + std::string(bad) + "\"")),
              "field head_commit.timestamp is not an ISO 8601 time with offset: \"" +
                  std::string(bad) + "\"")
        << bad;
  }
}

TEST(ParsePushEventTest, RejectsACommitTimeThatIsNotAString) {
  EXPECT_EQ(ErrorOf(PushAt("1796464800")), "field head_commit.timestamp is not a string");
}

TEST(ParsePushEventTest, RejectsMalformedJson) {
  EXPECT_EQ(ErrorOf(R"({"ref": "refs/heads/main",)").rfind("not JSON: ", 0), 0u);
  EXPECT_EQ(ErrorOf("").rfind("not JSON: ", 0), 0u);
  EXPECT_EQ(ErrorOf(kPushToMain + "}").rfind("not JSON: ", 0), 0u);
}

TEST(ParsePushEventTest, RejectsInvalidUtf8) {
  EXPECT_EQ(ErrorOf(Push("refs/heads/m\xff", kSha1)).rfind("not JSON: ", 0), 0u);
}

TEST(ParsePushEventTest, RejectsAbsurdNestingWithoutCrashing) {
  std::string deep = std::string(100000, '[') + std::string(100000, ']');
  EXPECT_EQ(ErrorOf(deep), "not JSON: nested deeper than 64 levels");
  std::string deep_member = Push("refs/heads/main", kSha1, R"(, "x": )" + deep);
  EXPECT_EQ(ErrorOf(deep_member), "not JSON: nested deeper than 64 levels");
}

TEST(ParsePushEventTest, IgnoresBracketsInsideStringsWhenMeasuringNesting) {
  std::string brackets(1000, '[');
  EXPECT_EQ(
      Parsed(Push("refs/heads/main", kSha1, R"(, "x": ")" + brackets + "\\\"" + R"(")")).branch,
      "main");
}

TEST(ParsePushEventTest, RejectsATopLevelThatIsNotAnObject) {
  EXPECT_EQ(ErrorOf("[]"), "JSON body is not an object");
  EXPECT_EQ(ErrorOf("\"push\""), "JSON body is not an object");
  EXPECT_EQ(ErrorOf("null"), "JSON body is not an object");
}

TEST(ParsePushEventTest, RejectsAMissingRepository) {
  EXPECT_EQ(
      ErrorOf(R"({"ref": "refs/heads/main", "after": "4f2c8e1a9b3d5f7e0c2a4b6d8f1e3c5a7b9d0e2f"})"),
      "missing field repository.full_name");
}

TEST(ParsePushEventTest, RejectsARepositoryWithoutFullName) {
  EXPECT_EQ(ErrorOf(R"({"repository": {"name": "shop"}, "ref": "refs/heads/main", )"
                    R"("after": "4f2c8e1a9b3d5f7e0c2a4b6d8f1e3c5a7b9d0e2f"})"),
            "missing field repository.full_name");
}

TEST(ParsePushEventTest, RejectsAMissingRef) {
  EXPECT_EQ(ErrorOf(R"({"repository": {"full_name": "acme/shop"}, )"
                    R"("after": "4f2c8e1a9b3d5f7e0c2a4b6d8f1e3c5a7b9d0e2f"})"),
            "missing field ref");
}

TEST(ParsePushEventTest, RejectsAMissingAfter) {
  EXPECT_EQ(ErrorOf(R"({"repository": {"full_name": "acme/shop"}, "ref": "refs/heads/main"})"),
            "missing field after");
}

TEST(ParsePushEventTest, RejectsAnEmptyRef) {
  EXPECT_EQ(ErrorOf(Push("", kSha1)), "field ref is empty");
}

TEST(ParsePushEventTest, RejectsARepositoryThatIsNotAnObject) {
  EXPECT_EQ(ErrorOf(R"({"repository": "acme/shop", "ref": "refs/heads/main", )"
                    R"("after": "4f2c8e1a9b3d5f7e0c2a4b6d8f1e3c5a7b9d0e2f"})"),
            "field repository is not an object");
}

TEST(ParsePushEventTest, RejectsAFullNameThatIsNotAString) {
  EXPECT_EQ(ErrorOf(R"({"repository": {"full_name": 7}, "ref": "refs/heads/main", )"
                    R"("after": "4f2c8e1a9b3d5f7e0c2a4b6d8f1e3c5a7b9d0e2f"})"),
            "field repository.full_name is not a string");
}

TEST(ParsePushEventTest, RejectsARefThatIsNotAString) {
  EXPECT_EQ(ErrorOf(R"({"repository": {"full_name": "acme/shop"}, "ref": ["main"], )"
                    R"("after": "4f2c8e1a9b3d5f7e0c2a4b6d8f1e3c5a7b9d0e2f"})"),
            "field ref is not a string");
}

TEST(ParsePushEventTest, RejectsDeletedThatIsNotABoolean) {
  EXPECT_EQ(ErrorOf(Push("refs/heads/main", kSha1, R"(, "deleted": "yes")")),
            "field deleted is not a boolean");
}

TEST(ParsePushEventTest, RejectsAHeadCommitThatIsNotAnObject) {
  EXPECT_EQ(ErrorOf(Push("refs/heads/main", kSha1, R"(, "head_commit": "abc")")),
            "field head_commit is not an object");
}

TEST(ParsePushEventTest, RejectsAHeadCommitMessageThatIsNotAString) {
  EXPECT_EQ(ErrorOf(Push("refs/heads/main", kSha1, R"(, "head_commit": {"message": 1})")),
            "field head_commit.message is not a string");
}

TEST(ParsePushEventTest, RejectsAnAuthorNameThatIsNotAString) {
  EXPECT_EQ(
      ErrorOf(Push("refs/heads/main", kSha1, R"(, "head_commit": {"author": {"name": false}})")),
      "field head_commit.author.name is not a string");
}

TEST(ParsePushEventTest, RejectsAPusherThatIsNotAnObject) {
  EXPECT_EQ(ErrorOf(Push("refs/heads/main", kSha1, R"(, "pusher": "octocat")")),
            "field pusher is not an object");
}

TEST(ParsePushEventTest, RejectsAnAfterThatIsNotACommitSha) {
  EXPECT_EQ(ErrorOf(Push("refs/heads/main", "4f2c8e1")),
            "field after is not a 40- or 64-hex commit: \"4f2c8e1\"");
  EXPECT_EQ(ErrorOf(Push("refs/heads/main", std::string(40, 'g'))),
            "field after is not a 40- or 64-hex commit: \"" + std::string(40, 'g') + "\"");
  EXPECT_EQ(ErrorOf(Push("refs/heads/main", std::string(41, 'a'))),
            "field after is not a 40- or 64-hex commit: \"" + std::string(41, 'a') + "\"");
}

TEST(ParsePushEventTest, RejectsAnAfterThatIsNotAString) {
  EXPECT_EQ(ErrorOf(R"({"repository": {"full_name": "acme/shop"}, "ref": "refs/heads/main", )"
                    R"("after": 42})"),
            "field after is not a string");
}

// --- ExpandArtifactTemplate ---

TEST(ExpandArtifactTemplateTest, ReplacesEveryShaPlaceholder) {
  EXPECT_EQ(ExpandArtifactTemplate("https://ci.example/{sha}/shop-{sha}.tar.gz", kSha1),
            std::string("https://ci.example/") + kSha1 + "/shop-" + kSha1 + ".tar.gz");
}

TEST(ExpandArtifactTemplateTest, ReplacesShortShaWithTheFirst12Characters) {
  EXPECT_EQ(ExpandArtifactTemplate("https://ci.example/shop-{short_sha}.tar.gz", kSha1),
            "https://ci.example/shop-4f2c8e1a9b3d.tar.gz");
}

TEST(ExpandArtifactTemplateTest, LeavesTextWithoutPlaceholdersAlone) {
  EXPECT_EQ(ExpandArtifactTemplate("https://ci.example/{shas}/{}/latest.tar.gz", kSha1),
            "https://ci.example/{shas}/{}/latest.tar.gz");
}

TEST(ExpandArtifactTemplateTest, UsesAllOfAShaShorterThan12) {
  EXPECT_EQ(ExpandArtifactTemplate("{short_sha}", "abc"), "abc");
}

}  // namespace
}  // namespace lockstep
