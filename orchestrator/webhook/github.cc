#include "orchestrator/webhook/github.h"

#include <openssl/evp.h>
#include <openssl/hmac.h>

#include <climits>
#include <cstdint>
#include <exception>
#include <nlohmann/json.hpp>
#include <optional>
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

// Reads `n` decimal digits at s[*pos] into *out; false if any is not a digit.
bool ReadDigits(std::string_view s, size_t* pos, size_t n, int* out) {
  if (s.size() - *pos < n) return false;
  int v = 0;
  for (size_t i = 0; i < n; ++i) {
    char c = s[*pos + i];
    if (c < '0' || c > '9') return false;
    v = v * 10 + (c - '0');
  }
  *pos += n;
  *out = v;
  return true;
}

bool ReadChar(std::string_view s, size_t* pos, char c) {
  if (*pos >= s.size() || s[*pos] != c) return false;
  ++*pos;
  return true;
}

// Days from 1970-01-01 to year-month-day of the proleptic Gregorian calendar (H. Hinnant's
// days_from_civil).
int64_t DaysFromCivil(int64_t year, int month, int day) {
  year -= month <= 2 ? 1 : 0;
  const int64_t era = (year >= 0 ? year : year - 399) / 400;
  const int64_t year_of_era = year - era * 400;
  const int64_t day_of_year = (153 * (month + (month > 2 ? -3 : 9)) + 2) / 5 + day - 1;
  const int64_t day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
  return era * 146097 + day_of_era - 719468;
}

int DaysInMonth(int year, int month) {
  static constexpr int kDays[] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
  bool leap = (year % 4 == 0 && year % 100 != 0) || year % 400 == 0;
  return month == 2 && leap ? 29 : kDays[month - 1];
}

// "YYYY-MM-DDTHH:MM:SS[.fraction](Z|+HH:MM|-HH:MM)" as unix milliseconds; nullopt if the text
// is anything else or names no real time (February 30th, hour 24, offset beyond 23:59). A
// leap second (:60) is accepted as the second after :59. Digits past milliseconds are dropped.
std::optional<int64_t> ParseRfc3339Ms(std::string_view s) {
  size_t pos = 0;
  int year = 0, month = 0, day = 0, hour = 0, minute = 0, second = 0;
  if (!ReadDigits(s, &pos, 4, &year) || !ReadChar(s, &pos, '-') ||
      !ReadDigits(s, &pos, 2, &month) || !ReadChar(s, &pos, '-') || !ReadDigits(s, &pos, 2, &day) ||
      !ReadChar(s, &pos, 'T') || !ReadDigits(s, &pos, 2, &hour) || !ReadChar(s, &pos, ':') ||
      !ReadDigits(s, &pos, 2, &minute) || !ReadChar(s, &pos, ':') ||
      !ReadDigits(s, &pos, 2, &second)) {
    return std::nullopt;
  }
  if (month < 1 || month > 12 || day < 1 || day > DaysInMonth(year, month) || hour > 23 ||
      minute > 59 || second > 60) {
    return std::nullopt;
  }
  int millis = 0;
  if (ReadChar(s, &pos, '.')) {
    size_t digits = 0;
    while (pos < s.size() && s[pos] >= '0' && s[pos] <= '9') {
      if (digits < 3) millis = millis * 10 + (s[pos] - '0');
      ++digits;
      ++pos;
    }
    if (digits == 0 || digits > 9) return std::nullopt;
    for (size_t i = digits; i < 3; ++i) millis *= 10;
  }
  int offset_minutes = 0;
  if (!ReadChar(s, &pos, 'Z')) {
    if (pos >= s.size() || (s[pos] != '+' && s[pos] != '-')) return std::nullopt;
    int sign = s[pos] == '-' ? -1 : 1;
    ++pos;
    int offset_hours = 0;
    int offset_mins = 0;
    if (!ReadDigits(s, &pos, 2, &offset_hours) || !ReadChar(s, &pos, ':') ||
        !ReadDigits(s, &pos, 2, &offset_mins) || offset_hours > 23 || offset_mins > 59) {
      return std::nullopt;
    }
    offset_minutes = sign * (offset_hours * 60 + offset_mins);
  }
  if (pos != s.size()) return std::nullopt;
  int64_t seconds = DaysFromCivil(year, month, day) * 86400 + int64_t{hour} * 3600 +
                    int64_t{minute} * 60 + second - int64_t{offset_minutes} * 60;
  return seconds * 1000 + millis;
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
  std::string timestamp;
  LOCKSTEP_RETURN_IF_ERROR(ReadString(head_commit, "timestamp", "head_commit.timestamp",
                                      /*required=*/false, &timestamp));
  if (Member(head_commit, "timestamp") != nullptr) {  // present: an empty one is malformed too
    std::optional<int64_t> committed_at = ParseRfc3339Ms(timestamp);
    if (!committed_at) {
      return InvalidArgument("field head_commit.timestamp is not an ISO 8601 time with offset: " +
                             Quoted(timestamp));
    }
    event.committed_at_ms = *committed_at;
  }

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
