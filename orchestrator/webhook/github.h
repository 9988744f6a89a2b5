// GitHub push webhooks: authenticating a delivery and reading the push it describes.
//
// POST /hooks/github is reachable by anyone who can reach the orchestrator, so nothing in a
// body is trusted until VerifyGithubSignature() has accepted its X-Hub-Signature-256 header
// against the shared secret. Only then is the body given to ParsePushEvent(), which reads the
// few fields the trigger needs and rejects anything malformed with a kInvalidArgument Status
// naming the field; it never throws, whatever the bytes. Deciding whether the push matches a
// pipeline's trigger (repository, branch) is the caller's job. All functions are pure and
// may be called from any thread.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

#include "common/status.h"

namespace lockstep {

// True if `signature_header` is exactly "sha256=" followed by the 64 lower-case hex digits of
// HMAC-SHA256(secret, body), as GitHub sends it. The digests are compared in constant time.
// False for an empty secret (an unconfigured secret must not accept unsigned deliveries), an
// empty or malformed header, upper-case hex, or any mismatch.
bool VerifyGithubSignature(std::string_view secret, std::string_view body,
                           std::string_view signature_header);

// The X-Hub-Signature-256 value GitHub would send for `body`: "sha256=" and 64 lower-case hex
// digits. Empty if the secret is empty or HMAC fails.
std::string GithubSignature(std::string_view secret, std::string_view body);

// What a push event says, reduced to what a trigger needs.
struct PushEvent {
  std::string repository;  // "org/repo", from repository.full_name
  std::string ref;         // "refs/heads/main"
  std::string branch;      // "main"; empty if ref is not a branch (a tag, for example)
  std::string after;       // the new head commit: 40 (SHA-1) or 64 (SHA-256) lower-case hex
  std::string author;      // head_commit.author.name, or pusher.name if absent; may be empty
  std::string message;     // head_commit.message; empty if there is no head commit
  bool deleted = false;    // the ref was deleted; `after` is then all zeros
  // head_commit.timestamp as unix milliseconds (UTC), 0 if the push has no head commit or the
  // head commit no timestamp. Replay protection compares it with the current release's.
  int64_t committed_at_ms = 0;
  // One line for logs and the audit trail: "<repository> <ref> <first 12 of after>". The
  // HTTP layer may replace it with the X-GitHub-Delivery id it received.
  std::string delivery_hint;
};

// Parses the body of a GitHub "push" event. Required: repository.full_name (non-empty
// string), ref (non-empty string), after (40- or 64-hex string, either case). Optional, but
// the wrong type if present is an error: deleted (bool), head_commit (object or null) with
// message and author.name (strings) and timestamp (an ISO 8601 / RFC 3339 time with an offset,
// "2026-12-05T10:00:00Z", "2026-12-05T12:00:00+02:00", optional fraction of a second, year
// 0000-9999), pusher.name (string). Errors are kInvalidArgument with
// messages such as "not JSON: ...", "JSON body is not an object", "missing field
// repository.full_name", "field ref is not a string", "field after is not a 40- or 64-hex
// commit: \"xyz\"", "field head_commit.timestamp is not an ISO 8601 time with offset:
// \"...\"". Bodies nested deeper than 64 levels are rejected before parsing.
StatusOr<PushEvent> ParsePushEvent(std::string_view body);

// Replaces every "{sha}" in `tmpl` with `sha` and every "{short_sha}" with its first 12
// characters (all of it if shorter). Other text, including other braces, is kept as is.
// Substituted text is not rescanned.
std::string ExpandArtifactTemplate(std::string_view tmpl, std::string_view sha);

}  // namespace lockstep
