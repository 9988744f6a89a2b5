// Fuzzes the GitHub push webhook: the body parser (ParsePushEvent), the signature check and
// the artifact URL template, with arbitrary bytes as the request body.
//
// Properties beyond "no crash, no leak, no undefined behaviour, no hang": ParsePushEvent never
// throws and refuses with kInvalidArgument; an accepted event carries what github.h promises
// (a repository, a ref, a 40- or 64-digit lower-case hex commit, the branch of a
// refs/heads/ ref, a commit time within years 0000-9999); no signature made from the body
// itself is accepted. The body is also fed to the commit time parser as head_commit.timestamp:
// it is accepted as a time that round-trips through FormatUnixMs, or refused naming the field.

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "common/clock.h"
#include "orchestrator/webhook/github.h"
#include "tests/fuzz/fuzz_check.h"

namespace lockstep {
namespace {

bool IsLowerHex(std::string_view s) {
  return s.find_first_not_of("0123456789abcdef") == std::string_view::npos;
}

// 0000-01-01T00:00:00+23:59 and 9999-12-31T23:59:60.999-23:59, in unix ms.
constexpr int64_t kEarliestCommitMs = -62167219200000 - 86400000;
constexpr int64_t kLatestCommitMs = 253402300800000 + 86400000;
constexpr int64_t kYear10000Ms = 253402300800000;

// `bytes` as the contents of a JSON string: every byte outside printable ASCII, and every
// quote and backslash, as a \u00XX escape (bytes >= 0x80 become U+0080..U+00FF).
std::string JsonStringContents(std::string_view bytes) {
  static constexpr char kHex[] = "0123456789abcdef";
  std::string out;
  for (char ch : bytes) {
    const unsigned char c = static_cast<unsigned char>(ch);
    if (c < 0x20 || c >= 0x7f || c == '"' || c == '\\') {
      out += "\\u00";
      out += kHex[c >> 4];
      out += kHex[c & 0xf];
    } else {
      out += static_cast<char>(c);
    }
  }
  return out;
}

// The body as head_commit.timestamp of an otherwise valid push.
void CheckTimestamp(std::string_view bytes) {
  const std::string push =
      R"({"repository": {"full_name": "a/b"}, "ref": "refs/heads/main", )"
      R"("after": "0123456789abcdef0123456789abcdef01234567", "head_commit": {"timestamp": ")" +
      JsonStringContents(bytes) + R"("}})";
  StatusOr<PushEvent> event = ParsePushEvent(push);
  if (!event.ok()) {
    LOCKSTEP_FUZZ_CHECK(event.status().code() == StatusCode::kInvalidArgument &&
                            event.status().message().starts_with(
                                "field head_commit.timestamp is not an ISO 8601 time"),
                        "%s", event.status().ToString().c_str());
    return;
  }
  const int64_t t = event->committed_at_ms;
  LOCKSTEP_FUZZ_CHECK(t >= kEarliestCommitMs && t <= kLatestCommitMs, "commit time %lld",
                      static_cast<long long>(t));
  // Any accepted time from 1970 to 9999 (in UTC) reads back from its own UTC rendering.
  if (t > 0 && t < kYear10000Ms) {
    const std::string again = R"({"repository": {"full_name": "a/b"}, "ref": "refs/heads/main", )"
                              R"("after": "0123456789abcdef0123456789abcdef01234567", )"
                              R"("head_commit": {"timestamp": ")" +
                              FormatUnixMs(t) + R"("}})";
    StatusOr<PushEvent> reread = ParsePushEvent(again);
    LOCKSTEP_FUZZ_CHECK(reread.ok() && reread->committed_at_ms == t,
                        "%lld does not round-trip through \"%s\"", static_cast<long long>(t),
                        FormatUnixMs(t).c_str());
  }
}

void CheckEvent(const PushEvent& e) {
  LOCKSTEP_FUZZ_CHECK(!e.repository.empty(), "empty repository");
  LOCKSTEP_FUZZ_CHECK(!e.ref.empty(), "empty ref");
  LOCKSTEP_FUZZ_CHECK((e.after.size() == 40 || e.after.size() == 64) && IsLowerHex(e.after),
                      "after \"%s\"", e.after.c_str());
  constexpr std::string_view kHeads = "refs/heads/";
  if (e.ref.starts_with(kHeads)) {
    LOCKSTEP_FUZZ_CHECK(e.branch == e.ref.substr(kHeads.size()), "branch \"%s\" of ref \"%s\"",
                        e.branch.c_str(), e.ref.c_str());
  } else {
    LOCKSTEP_FUZZ_CHECK(e.branch.empty(), "branch \"%s\" of ref \"%s\"", e.branch.c_str(),
                        e.ref.c_str());
  }
  LOCKSTEP_FUZZ_CHECK(
      e.committed_at_ms >= kEarliestCommitMs && e.committed_at_ms <= kLatestCommitMs,
      "commit time %lld", static_cast<long long>(e.committed_at_ms));
  LOCKSTEP_FUZZ_CHECK(e.delivery_hint == e.repository + " " + e.ref + " " + e.after.substr(0, 12),
                      "delivery hint \"%s\"", e.delivery_hint.c_str());

  const std::string url =
      ExpandArtifactTemplate("https://ci.example/{sha}/{short_sha}.tgz", e.after);
  LOCKSTEP_FUZZ_CHECK(url == "https://ci.example/" + e.after + "/" + e.after.substr(0, 12) + ".tgz",
                      "artifact url \"%s\"", url.c_str());
}

}  // namespace
}  // namespace lockstep

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace lockstep;
  const std::string_view body(reinterpret_cast<const char*>(data), size);

  StatusOr<PushEvent> event = ParsePushEvent(body);
  if (event.ok()) {
    CheckEvent(*event);
  } else {
    LOCKSTEP_FUZZ_CHECK(event.status().code() == StatusCode::kInvalidArgument, "%s",
                        event.status().ToString().c_str());
  }
  CheckTimestamp(body.substr(0, 64));  // a timestamp is short; longer inputs add nothing

  // Forging a signature would take an HMAC-SHA256 preimage: whatever header the bytes make up,
  // it must not verify.
  LOCKSTEP_FUZZ_CHECK(!VerifyGithubSignature("webhook-secret", body, body), "body verified itself");
  const std::string header = "sha256=" + std::string(body.substr(0, 64));
  LOCKSTEP_FUZZ_CHECK(!VerifyGithubSignature("webhook-secret", body, header),
                      "forged signature accepted");
  LOCKSTEP_FUZZ_CHECK(!VerifyGithubSignature("", body, header), "empty secret accepted");

  // The body as a template: placeholders only grow ("{sha}" 5 -> 40, "{short_sha}" 11 -> 12),
  // and text without a placeholder is kept as is.
  const std::string expanded =
      ExpandArtifactTemplate(body, "0123456789abcdef0123456789abcdef01234567");
  LOCKSTEP_FUZZ_CHECK(expanded.size() >= body.size(), "expansion lost bytes");
  if (body.find('{') == std::string_view::npos) {
    LOCKSTEP_FUZZ_CHECK(expanded == body, "text without a placeholder changed");
  }
  return 0;
}
