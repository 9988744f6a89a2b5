#include "orchestrator/webhook/github.h"

#include <openssl/evp.h>
#include <openssl/hmac.h>

#include <climits>
#include <exception>
#include <nlohmann/json.hpp>
#include <string>

#include "common/sha256.h"

namespace lockstep {
namespace {

using json = nlohmann::json;

constexpr std::string_view kSignaturePrefix = "sha256=";
constexpr int kMaxJsonDepth = 64;  // a real push payload nests about 4 levels
constexpr size_t kShortShaLength = 12;

bool IsLowerHex(std::string_view s) {
  for (char c : s) {
    if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'))) return false;
  }
  return true;
}

std::string ToLowerHex(const unsigned char* data, size_t len) {
  static constexpr char kHex[] = "0123456789abcdef";
  std::string out;
  out.reserve(2 * len);
  for (size_t i = 0; i < len; ++i) {
    out.push_back(kHex[data[i] >> 4]);
    out.push_back(kHex[data[i] & 0xf]);
  }
  return out;
}

// True if brackets in `body`, outside string literals, nest deeper than `limit`. Malformed
// text is left for the parser to report.
bool NestsDeeperThan(std::string_view body, int limit) {
  int depth = 0;
  bool in_string = false;
  bool escaped = false;
  for (char c : body) {
    if (in_string) {
      if (escaped) {
        escaped = false;
      } else if (c == '\\') {
        escaped = true;
      } else if (c == '"') {
        in_string = false;
      }
    } else if (c == '"') {
      in_string = true;
    } else if (c == '{' || c == '[') {
      if (++depth > limit) return true;
    } else if (c == '}' || c == ']') {
      --depth;
    }
  }
  return false;
}

// `value` for an error message: at most 80 characters, control characters as '?'.
std::string Quoted(std::string_view value) {
  constexpr size_t kMax = 80;
  std::string out = "\"";
  for (size_t i = 0; i < value.size() && i < kMax; ++i) {
    unsigned char c = static_cast<unsigned char>(value[i]);
    out.push_back(c < 0x20 || c == 0x7f ? '?' : value[i]);
  }
  if (value.size() > kMax) out += "...";
  out += "\"";
  return out;
}

// nlohmann's what() starts with "[json.exception.parse_error.101] "; users need the rest.
std::string WithoutExceptionId(const char* what) {
  std::string_view s = what;
  if (!s.empty() && s.front() == '[') {
    size_t end = s.find("] ");
    if (end != std::string_view::npos) s.remove_prefix(end + 2);
  }
  return std::string(s);
}

// The member `key` of `object`, or nullptr if it is absent or JSON null.
const json* Member(const json* object, const char* key) {
  if (object == nullptr) return nullptr;
  auto it = object->find(key);
  if (it == object->end() || it->is_null()) return nullptr;
  return &*it;
}

// Reads the object at `object[key]` (named `path` in errors) into *out; nullptr if absent.
Status ReadObject(const json* object, const char* key, const std::string& path, const json** out) {
  *out = Member(object, key);
  if (*out != nullptr && !(*out)->is_object()) {
    *out = nullptr;
    return InvalidArgument("field " + path + " is not an object");
  }
  return Status::Ok();
}

// Reads the string at `object[key]` (named `path` in errors) into *out. An absent field is
// an error only if `required`; a present one of another type always is.
Status ReadString(const json* object, const char* key, const std::string& path, bool required,
                  std::string* out) {
  const json* value = Member(object, key);
  if (value == nullptr) {
    return required ? InvalidArgument("missing field " + path) : Status::Ok();
  }
  if (!value->is_string()) return InvalidArgument("field " + path + " is not a string");
  *out = value->get_ref<const std::string&>();
  if (required && out->empty()) return InvalidArgument("field " + path + " is empty");
  return Status::Ok();
}

StatusOr<PushEvent> ParsePushEventJson(const json& doc) {
  if (!doc.is_object()) return InvalidArgument("JSON body is not an object");
  PushEvent event;

  const json* repository = nullptr;
  LOCKSTEP_RETURN_IF_ERROR(ReadObject(&doc, "repository", "repository", &repository));
  if (repository == nullptr) return InvalidArgument("missing field repository.full_name");
  LOCKSTEP_RETURN_IF_ERROR(ReadString(repository, "full_name", "repository.full_name",
                                      /*required=*/true, &event.repository));

  LOCKSTEP_RETURN_IF_ERROR(ReadString(&doc, "ref", "ref", /*required=*/true, &event.ref));
  constexpr std::string_view kBranchPrefix = "refs/heads/";
  if (event.ref.starts_with(kBranchPrefix)) event.branch = event.ref.substr(kBranchPrefix.size());

  LOCKSTEP_RETURN_IF_ERROR(ReadString(&doc, "after", "after", /*required=*/true, &event.after));
  bool hex_length = event.after.size() == 40 || event.after.size() == 64;
  for (char& c : event.after) {
    if (c >= 'A' && c <= 'F') c = static_cast<char>(c - 'A' + 'a');
  }
  if (!hex_length || !IsLowerHex(event.after)) {
    return InvalidArgument("field after is not a 40- or 64-hex commit: " + Quoted(event.after));
  }

  if (const json* deleted = Member(&doc, "deleted")) {
    if (!deleted->is_boolean()) return InvalidArgument("field deleted is not a boolean");
    event.deleted = deleted->get<bool>();
  }

  const json* head_commit = nullptr;
  LOCKSTEP_RETURN_IF_ERROR(ReadObject(&doc, "head_commit", "head_commit", &head_commit));
  LOCKSTEP_RETURN_IF_ERROR(ReadString(head_commit, "message", "head_commit.message",
                                      /*required=*/false, &event.message));
  const json* commit_author = nullptr;
  LOCKSTEP_RETURN_IF_ERROR(ReadObject(head_commit, "author", "head_commit.author", &commit_author));
  LOCKSTEP_RETURN_IF_ERROR(ReadString(commit_author, "name", "head_commit.author.name",
                                      /*required=*/false, &event.author));

  const json* pusher = nullptr;
  LOCKSTEP_RETURN_IF_ERROR(ReadObject(&doc, "pusher", "pusher", &pusher));
  std::string pusher_name;
  LOCKSTEP_RETURN_IF_ERROR(
      ReadString(pusher, "name", "pusher.name", /*required=*/false, &pusher_name));
  if (event.author.empty()) event.author = std::move(pusher_name);

  event.delivery_hint =
      event.repository + " " + event.ref + " " + event.after.substr(0, kShortShaLength);
  return event;
}

}  // namespace

std::string GithubSignature(std::string_view secret, std::string_view body) {
  if (secret.empty() || secret.size() > static_cast<size_t>(INT_MAX)) return "";
  static const unsigned char kEmpty = 0;  // OpenSSL wants a valid pointer even for no data
  const auto* data = body.empty() ? &kEmpty : reinterpret_cast<const unsigned char*>(body.data());
  unsigned char mac[EVP_MAX_MD_SIZE];
  unsigned int mac_len = 0;
  if (HMAC(EVP_sha256(), secret.data(), static_cast<int>(secret.size()), data, body.size(), mac,
           &mac_len) == nullptr ||
      mac_len != 32) {
    return "";
  }
  return std::string(kSignaturePrefix) + ToLowerHex(mac, mac_len);
}

bool VerifyGithubSignature(std::string_view secret, std::string_view body,
                           std::string_view signature_header) {
  if (!signature_header.starts_with(kSignaturePrefix)) return false;
  std::string_view given = signature_header.substr(kSignaturePrefix.size());
  if (given.size() != 2 * 32 || !IsLowerHex(given)) return false;
  std::string expected = GithubSignature(secret, body);
  if (expected.empty()) return false;
  return ConstantTimeEquals(std::string_view(expected).substr(kSignaturePrefix.size()), given);
}

StatusOr<PushEvent> ParsePushEvent(std::string_view body) {
  if (NestsDeeperThan(body, kMaxJsonDepth)) {
    return InvalidArgument("not JSON: nested deeper than " + std::to_string(kMaxJsonDepth) +
                           " levels");
  }
  try {
    json doc = json::parse(body.begin(), body.end());
    return ParsePushEventJson(doc);
  } catch (const json::parse_error& e) {
    return InvalidArgument("not JSON: " + WithoutExceptionId(e.what()));
  } catch (const json::exception& e) {
    return InvalidArgument("malformed push event: " + WithoutExceptionId(e.what()));
  } catch (const std::exception& e) {
    return Internal(std::string("parsing push event: ") + e.what());
  }
}

std::string ExpandArtifactTemplate(std::string_view tmpl, std::string_view sha) {
  constexpr std::string_view kSha = "{sha}";
  constexpr std::string_view kShortSha = "{short_sha}";
  std::string_view short_sha = sha.substr(0, kShortShaLength);
  std::string out;
  out.reserve(tmpl.size() + sha.size());
  size_t i = 0;
  while (i < tmpl.size()) {
    std::string_view rest = tmpl.substr(i);
    if (rest.starts_with(kSha)) {
      out += sha;
      i += kSha.size();
    } else if (rest.starts_with(kShortSha)) {
      out += short_sha;
      i += kShortSha.size();
    } else {
      out.push_back(tmpl[i]);
      ++i;
    }
  }
  return out;
}

}  // namespace lockstep
