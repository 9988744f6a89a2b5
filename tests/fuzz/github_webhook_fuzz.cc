// Fuzzes the GitHub push webhook: the body parser (ParsePushEvent), the signature check and
// the artifact URL template, with arbitrary bytes as the request body.
//
// Properties beyond "no crash, no leak, no undefined behaviour, no hang": ParsePushEvent never
// throws and refuses with kInvalidArgument; an accepted event carries what github.h promises
// (a repository, a ref, a 40- or 64-digit lower-case hex commit, the branch of a
// refs/heads/ ref); no signature made from the body itself is accepted.

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "orchestrator/webhook/github.h"
#include "tests/fuzz/fuzz_check.h"

namespace lockstep {
namespace {

bool IsLowerHex(std::string_view s) {
  return s.find_first_not_of("0123456789abcdef") == std::string_view::npos;
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
