// Loading pipeline files. yaml-cpp builds a node tree; a hand-written walk over it checks every
// key against the pipeline file contract (INTERFACES.md, "Pipeline file") and fills the structs
// of pipeline.h. The walk never indexes a yaml-cpp map by key: each mapping is read once, in
// document order, into a list of fields, which is where unknown and repeated keys are caught
// (yaml-cpp itself keeps repeated keys and would silently use the first).
//
// Every yaml-cpp exception is caught in ParseDocument and becomes an InvalidArgument status.

#include "orchestrator/pipeline/pipeline.h"

#include <yaml-cpp/depthguard.h>
#include <yaml-cpp/eventhandler.h>
#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <charconv>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <exception>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <limits>
#include <optional>
#include <span>
#include <sstream>
#include <string_view>
#include <system_error>
#include <utility>

#include "common/duration.h"
#include "common/untrusted.h"

namespace lockstep {

int HostSelector::Count(int total) const {
  if (total <= 0 || value <= 0) return 0;
  if (kind == Kind::kCount) return std::min(value, total);
  // Rounds up, so 1% of a small region still deploys to one host.
  int64_t n = (int64_t{total} * value + 99) / 100;
  return static_cast<int>(std::min<int64_t>(n, total));
}

std::string HostSelector::ToString() const {
  return kind == Kind::kCount ? std::to_string(value) : std::to_string(value) + "%";
}

int FailureTolerance::Allowed(int hosts) const {
  if (!percent) return value;
  return static_cast<int>(int64_t{std::max(hosts, 0)} * value / 100);
}

std::string FailureTolerance::ToString() const {
  return std::to_string(value) + (percent ? "%" : "");
}

bool Pipeline::HasRegion(const std::string& region) const {
  return std::find(regions.begin(), regions.end(), region) != regions.end();
}

namespace {

std::string PercentEncode(const std::string& v) {
  static const char* kHex = "0123456789ABCDEF";
  std::string out;
  for (unsigned char ch : v) {
    if (std::isalnum(ch) || ch == '-' || ch == '.' || ch == '_' || ch == '~') {
      out += static_cast<char>(ch);
    } else {
      out += '%';
      out += kHex[ch >> 4];
      out += kHex[ch & 15];
    }
  }
  return out;
}

std::string Fill(std::string t, const std::vector<std::pair<std::string, std::string>>& values) {
  for (const auto& [key, value] : values) {
    const std::string encoded = PercentEncode(value);
    for (size_t pos = 0; (pos = t.find(key, pos)) != std::string::npos; pos += encoded.size()) {
      t.replace(pos, key.size(), encoded);
    }
  }
  return t;
}

}  // namespace

std::string Pipeline::CommitUrl(const std::string& sha) const {
  if (links.commit.empty() || sha.empty()) return "";
  return Fill(links.commit, {{"{sha}", sha}});
}

std::string Pipeline::CompareUrl(const std::string& from, const std::string& to) const {
  if (links.compare.empty() || from.empty() || to.empty()) return "";
  return Fill(links.compare, {{"{from}", from}, {"{to}", to}});
}

RegionSpec Pipeline::Region(const std::string& region) const {
  for (const auto& r : region_specs) {
    if (r.name == region) return r;
  }
  RegionSpec plain;
  plain.name = region;
  return plain;
}

std::vector<std::string> Pipeline::BringupRegions() const {
  std::vector<std::string> out;
  for (const auto& r : region_specs) {
    if (r.bringup()) out.push_back(r.name);
  }
  return out;
}

std::string Pipeline::MirrorUrl(const std::string& region, const std::string& artifact_url) const {
  auto it = mirrors.find(region);
  if (it == mirrors.end()) return "";
  const size_t scheme = artifact_url.find("://");
  if (scheme == std::string::npos) return "";
  const size_t path = artifact_url.find_first_of("/?#", scheme + 3);
  std::string base = it->second;
  while (!base.empty() && base.back() == '/') base.pop_back();
  if (path == std::string::npos) return base + "/";
  std::string rest = artifact_url.substr(path);
  if (rest[0] != '/') rest = "/" + rest;
  return base + rest;
}

namespace {

namespace fs = std::filesystem;
using std::chrono::milliseconds;
using KeyList = std::span<const std::string_view>;

// The keys each map accepts. Every list here is also in PipelineKeyPaths(), which the
// reference (docs/reference.md) is tested against.
constexpr std::string_view kTopKeys[] = {
    "pipeline", "regions", "waves",  "concurrency", "health",    "gates", "timeouts",
    "rollback", "trigger", "notify", "window",      "artifacts", "links"};
constexpr std::string_view kLinksKeys[] = {"commit", "compare"};
constexpr std::string_view kRegionKeys[] = {"name", "stage", "hook_output"};
constexpr std::string_view kArtifactsKeys[] = {"mirrors"};
constexpr std::string_view kWaveKeys[] = {"name", "select", "bake", "approval",
                                          "tolerate_failed_hosts"};
constexpr std::string_view kSelectKeys[] = {"per_region", "regions", "hosts"};
constexpr std::string_view kConcurrencyKeys[] = {"per_region"};
constexpr std::string_view kHealthKeys[] = {"check_hook", "http"};
constexpr std::string_view kProbeKeys[] = {"url", "expect", "timeout", "attempts", "interval"};
constexpr std::string_view kGateKeys[] = {"metric"};
constexpr std::string_view kMetricKeys[] = {"prometheus", "query",
                                            "max",        "min",
                                            "regions",    "consecutive_failures",
                                            "interval",   "inconclusive_deadline",
                                            "name",       "delay",
                                            "passes"};
constexpr std::string_view kTimeoutKeys[] = {"hook", "fetch", "agent_lost", "approval"};
constexpr std::string_view kRollbackKeys[] = {"automatic", "tolerate_failed_hosts", "on_failure"};
constexpr std::string_view kTriggerKeys[] = {"github"};
constexpr std::string_view kGithubKeys[] = {"repository",   "branch",     "artifact",
                                            "secret_file",  "secret_env", "max_artifact_bytes",
                                            "artifact_wait"};
constexpr std::string_view kNotifyKeys[] = {"url", "events"};
constexpr std::string_view kNotifyEvents[] = {
    "release_started",     "wave_passed",      "succeeded", "failed",
    "rolled_back",         "approval_needed",  "aborted",   "bringup_failed",
    "bringup_rolled_back", "bringup_succeeded"};
constexpr std::string_view kWindowKeys[] = {"start", "end", "days"};
// Index = DeployWindow weekday number (0 = Sunday).
constexpr std::string_view kWeekdays[] = {"sun", "mon", "tue", "wed", "thu", "fri", "sat"};

// Suffixes of a byte size, longest first so that "MiB" is not read as "B".
struct ByteUnit {
  std::string_view suffix;
  int64_t factor;
};
constexpr ByteUnit kByteUnits[] = {{"KiB", int64_t{1} << 10},
                                   {"MiB", int64_t{1} << 20},
                                   {"GiB", int64_t{1} << 30},
                                   {"TiB", int64_t{1} << 40},
                                   {"KB", 1000},
                                   {"MB", 1000 * 1000},
                                   {"GB", 1000 * 1000 * 1000},
                                   {"B", 1}};

// A node together with where it is: its field path ("waves[1].bake") and 1-based line.
struct Field {
  YAML::Node node;
  std::string path;
  int line = 1;
};

// The fields of one mapping, in document order, keys already checked.
struct Map {
  Field self;
  std::vector<std::pair<std::string, Field>> fields;

  const Field* Find(std::string_view key) const {
    for (const auto& [name, field] : fields) {
      if (name == key) return &field;
    }
    return nullptr;
  }
};

// yaml-cpp marks a null value at the next token, possibly lines further down; the enclosing
// key's line is where the user will look.
int LineOf(const YAML::Node& node, int fallback) {
  if (!node.IsDefined() || node.IsNull() || node.Mark().line < 0) return fallback;
  return node.Mark().line + 1;
}

// `s` in double quotes, on one line and of bounded length, for error messages: a value may be
// a multi-line block scalar or very long.
std::string Quote(std::string_view s) {
  constexpr size_t kMaxShown = 80;
  std::string out = "\"";
  for (size_t i = 0; i < s.size() && i < kMaxShown; ++i) {
    unsigned char c = static_cast<unsigned char>(s[i]);
    if (c == '"' || c == '\\') {
      out += '\\';
      out += static_cast<char>(c);
    } else if (c == '\n') {
      out += "\\n";
    } else if (c < 0x20 || c == 0x7f) {
      static constexpr char kHex[] = "0123456789abcdef";
      out += "\\x";
      out += kHex[c >> 4];
      out += kHex[c & 0xf];
    } else {
      out += static_cast<char>(c);
    }
  }
  if (s.size() > kMaxShown) out += "...";
  return out + "\"";
}

std::string Describe(const YAML::Node& node) {
  switch (node.Type()) {
    case YAML::NodeType::Scalar:
      return Quote(node.Scalar());
    case YAML::NodeType::Sequence:
      return "a list";
    case YAML::NodeType::Map:
      return "a mapping";
    case YAML::NodeType::Null:
    case YAML::NodeType::Undefined:
      break;
  }
  return "nothing";
}

std::string JoinNames(KeyList names) {
  std::string out;
  for (std::string_view n : names) {
    if (!out.empty()) out += ", ";
    out += n;
  }
  return out;
}

std::string JoinNames(const std::vector<std::string>& names) {
  std::vector<std::string_view> views(names.begin(), names.end());
  return JoinNames(KeyList(views));
}

std::string ChildPath(std::string_view parent, std::string_view key) {
  if (parent.empty()) return std::string(key);
  return std::string(parent) + "." + std::string(key);
}

bool Contains(KeyList names, std::string_view name) {
  return std::find(names.begin(), names.end(), name) != names.end();
}

size_t EditDistance(std::string_view a, std::string_view b) {
  std::vector<size_t> row(b.size() + 1);
  for (size_t j = 0; j <= b.size(); ++j) row[j] = j;
  for (size_t i = 1; i <= a.size(); ++i) {
    size_t diagonal = row[0];
    row[0] = i;
    for (size_t j = 1; j <= b.size(); ++j) {
      size_t above = row[j];
      row[j] = std::min({row[j] + 1, row[j - 1] + 1, diagonal + (a[i - 1] == b[j - 1] ? 0 : 1)});
      diagonal = above;
    }
  }
  return row[b.size()];
}

// [a-z0-9][a-z0-9_-]{0,63}: a name that is safe in URLs, file names and metric labels without
// escaping.
bool IsValidPipelineName(std::string_view name) {
  if (name.empty() || name.size() > 64) return false;
  for (size_t i = 0; i < name.size(); ++i) {
    char c = name[i];
    bool ok = (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || (i > 0 && (c == '-' || c == '_'));
    if (!ok) return false;
  }
  return true;
}

// "H:MM" or "HH:MM" in 00:00..23:59, or "24:00" when `allow_midnight_end`.
std::optional<int> ParseClock(std::string_view s, bool allow_midnight_end) {
  size_t colon = s.find(':');
  if (colon == std::string_view::npos || colon == 0 || colon > 2 || s.size() != colon + 3) {
    return std::nullopt;
  }
  int hours = 0;
  int minutes = 0;
  for (size_t i = 0; i < s.size(); ++i) {
    if (i == colon) continue;
    if (s[i] < '0' || s[i] > '9') return std::nullopt;
    int& part = i < colon ? hours : minutes;
    part = part * 10 + (s[i] - '0');
  }
  if (minutes > 59) return std::nullopt;
  if (hours == 24 && minutes == 0 && allow_midnight_end) return 24 * 60;
  if (hours > 23) return std::nullopt;
  return hours * 60 + minutes;
}

// Walks one document and fills a Pipeline. Each Read* checks one value and reports an error
// naming the file, line and field path; each Parse* handles one section of the file.
class PipelineParser {
 public:
  PipelineParser(const std::string& file, Pipeline* out) : file_(file), p_(out) {}

  // `*name_line` receives the line of the `pipeline` key, for messages about the name.
  Status Parse(const YAML::Node& root, int* name_line) {
    Map top;
    LOCKSTEP_RETURN_IF_ERROR(ReadMap(Field{root, "", LineOf(root, 1)}, kTopKeys, &top));

    const Field* name = top.Find("pipeline");
    if (name == nullptr) {
      return Missing(top, "pipeline", "name the pipeline, e.g. \"pipeline: web\"");
    }
    LOCKSTEP_RETURN_IF_ERROR(ReadString(*name, &p_->name));
    if (!IsValidPipelineName(p_->name)) {
      return Error(*name, "invalid name " + Quote(p_->name) +
                              "; use 1 to 64 characters from a-z, 0-9, '-' and '_', starting "
                              "with a letter or digit");
    }
    *name_line = name->line;

    const Field* regions = top.Find("regions");
    if (regions == nullptr) {
      return Missing(top, "regions", "list the regions the pipeline deploys to");
    }
    LOCKSTEP_RETURN_IF_ERROR(ParseRegions(*regions));

    const Field* waves = top.Find("waves");
    if (waves == nullptr) return Missing(top, "waves", "a pipeline needs at least one wave");
    LOCKSTEP_RETURN_IF_ERROR(ParseWaves(*waves));

    if (const Field* f = top.Find("concurrency")) LOCKSTEP_RETURN_IF_ERROR(ParseConcurrency(*f));
    if (const Field* f = top.Find("health")) LOCKSTEP_RETURN_IF_ERROR(ParseHealth(*f));
    if (const Field* f = top.Find("gates")) LOCKSTEP_RETURN_IF_ERROR(ParseGates(*f));
    if (const Field* f = top.Find("timeouts")) LOCKSTEP_RETURN_IF_ERROR(ParseTimeouts(*f));
    if (const Field* f = top.Find("rollback")) LOCKSTEP_RETURN_IF_ERROR(ParseRollback(*f));
    if (const Field* f = top.Find("trigger")) LOCKSTEP_RETURN_IF_ERROR(ParseTrigger(*f));
    if (const Field* f = top.Find("notify")) LOCKSTEP_RETURN_IF_ERROR(ParseNotify(*f));
    if (const Field* f = top.Find("window")) LOCKSTEP_RETURN_IF_ERROR(ParseWindow(*f));
    if (const Field* f = top.Find("artifacts")) LOCKSTEP_RETURN_IF_ERROR(ParseArtifacts(*f));
    if (const Field* f = top.Find("links")) LOCKSTEP_RETURN_IF_ERROR(ParseLinks(*f));
    return Status::Ok();
  }

 private:
  // "<file>:<line>: <path>: <what>"; the document itself is called "(document)".
  Status Error(int line, std::string_view path, std::string_view what) const {
    return InvalidArgument(file_ + ":" + std::to_string(line) + ": " +
                           (path.empty() ? std::string("(document)") : std::string(path)) + ": " +
                           std::string(what));
  }
  Status Error(const Field& at, std::string_view what) const {
    return Error(at.line, at.path, what);
  }
  Status Missing(const Map& map, std::string_view key, std::string_view hint) const {
    return Error(map.self.line, ChildPath(map.self.path, key),
                 "required key is missing; " + std::string(hint));
  }

  Status ReadMap(const Field& f, KeyList allowed, Map* out) const {
    if (!f.node.IsMap()) return Error(f, "expected a mapping, got " + Describe(f.node));
    out->self = f;
    out->fields.clear();
    for (const auto& kv : f.node) {
      int key_line = LineOf(kv.first, f.line);
      if (!kv.first.IsScalar()) {
        return Error(key_line, f.path, "expected a key name, got " + Describe(kv.first));
      }
      std::string key = kv.first.Scalar();
      std::string path = ChildPath(f.path, key);
      if (!Contains(allowed, key)) {
        // The key is the user's text; quote it if it would not read as a plain name.
        if (Quote(key) != "\"" + key + "\"") path = ChildPath(f.path, Quote(key));
        std::string what = "unknown key";
        for (std::string_view candidate : allowed) {
          if (EditDistance(key, candidate) <= 2) {
            what += ", did you mean " + Quote(candidate) + "?";
            break;
          }
        }
        return Error(key_line, path, what + " (allowed: " + JoinNames(allowed) + ")");
      }
      if (out->Find(key) != nullptr) return Error(key_line, path, "duplicate key");
      out->fields.emplace_back(key, Field{kv.second, path, LineOf(kv.second, key_line)});
    }
    return Status::Ok();
  }

  Status ReadList(const Field& f, std::vector<Field>* out) const {
    if (!f.node.IsSequence()) return Error(f, "expected a list, got " + Describe(f.node));
    out->clear();
    for (const auto& item : f.node) {
      out->push_back(
          Field{item, f.path + "[" + std::to_string(out->size()) + "]", LineOf(item, f.line)});
    }
    return Status::Ok();
  }

  // A non-empty scalar.
  Status ReadString(const Field& f, std::string* out) const {
    if (!f.node.IsScalar()) return Error(f, "expected a string, got " + Describe(f.node));
    if (f.node.Scalar().empty()) return Error(f, "must not be empty");
    *out = f.node.Scalar();
    return Status::Ok();
  }

  Status ReadUrl(const Field& f, std::string* out) const {
    LOCKSTEP_RETURN_IF_ERROR(ReadString(f, out));
    if (out->rfind("http://", 0) != 0 && out->rfind("https://", 0) != 0) {
      return Error(f, "expected an http:// or https:// URL, got " + Quote(*out));
    }
    return Status::Ok();
  }

  Status ReadInt(const Field& f, int min, int max, int* out) const {
    if (!f.node.IsScalar()) return Error(f, "expected a whole number, got " + Describe(f.node));
    const std::string& text = f.node.Scalar();
    int64_t v = 0;
    auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), v);
    if (ec == std::errc::result_out_of_range) return Error(f, Quote(text) + " is out of range");
    if (ec != std::errc() || end != text.data() + text.size()) {
      return Error(f, "expected a whole number, got " + Quote(text));
    }
    if (v < min) {
      if (min == 0) return Error(f, "must not be negative, got " + text);
      return Error(f, "must be at least " + std::to_string(min) + ", got " + text);
    }
    if (v > max) return Error(f, "must be at most " + std::to_string(max) + ", got " + text);
    *out = static_cast<int>(v);
    return Status::Ok();
  }

  // A whole number of bytes, optionally with a unit: "1048576", "500MiB", "2 GiB", "1GB".
  Status ReadByteSize(const Field& f, int64_t* out) const {
    static constexpr char kForms[] = "a size in bytes such as 1048576, 500MiB or 2GiB";
    if (!f.node.IsScalar()) {
      return Error(f, std::string("expected ") + kForms + ", got " + Describe(f.node));
    }
    const std::string& text = f.node.Scalar();
    std::string_view number = text;
    int64_t factor = 1;
    for (const ByteUnit& unit : kByteUnits) {
      if (number.ends_with(unit.suffix)) {
        number.remove_suffix(unit.suffix.size());
        factor = unit.factor;
        break;
      }
    }
    if (!number.empty() && number.back() == ' ') number.remove_suffix(1);
    int64_t v = 0;
    auto [end, ec] = std::from_chars(number.data(), number.data() + number.size(), v);
    if (ec == std::errc::result_out_of_range ||
        (ec == std::errc() && v > std::numeric_limits<int64_t>::max() / factor)) {
      return Error(f, Quote(text) + " is out of range");
    }
    if (ec != std::errc() || end != number.data() + number.size() || number.empty()) {
      return Error(f, std::string("expected ") + kForms + ", got " + Quote(text));
    }
    if (v <= 0) return Error(f, "must be at least 1 byte, got " + Quote(text));
    *out = v * factor;
    return Status::Ok();
  }

  // An http(s) URL template that carries no credentials: they would end up in logs, the store
  // and every agent's task. Credentials belong in the artifact server's configuration.
  Status ReadArtifactTemplate(const Field& f, std::string* out) const {
    LOCKSTEP_RETURN_IF_ERROR(ReadUrl(f, out));
    const size_t host_start = out->find("://") + 3;
    const size_t host_end = std::min(out->find_first_of("/?#", host_start), out->size());
    const std::string_view authority =
        std::string_view(*out).substr(host_start, host_end - host_start);
    if (authority.find('@') != std::string_view::npos) {
      return Error(f,
                   "must not contain credentials (user:password@ before the host); they would "
                   "be logged, stored and sent to every agent");
    }
    if (authority.empty() || authority.front() == ':') {
      return Error(f, "has no host: " + Quote(*out));
    }
    return Status::Ok();
  }

  Status ReadNumber(const Field& f, double* out) const {
    if (!f.node.IsScalar()) return Error(f, "expected a number, got " + Describe(f.node));
    const std::string& text = f.node.Scalar();
    double v = 0;
    auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), v);
    if (ec != std::errc() || end != text.data() + text.size() || !std::isfinite(v)) {
      return Error(f, "expected a number, got " + Quote(text));
    }
    *out = v;
    return Status::Ok();
  }

  Status ReadBool(const Field& f, bool* out) const {
    if (!YAML::convert<bool>::decode(f.node, *out)) {
      return Error(f, "expected true or false, got " + Describe(f.node));
    }
    return Status::Ok();
  }

  Status ReadDuration(const Field& f, bool allow_zero, milliseconds* out) const {
    if (!f.node.IsScalar()) {
      return Error(f, "expected a duration such as 30s, got " + Describe(f.node));
    }
    StatusOr<milliseconds> d = ParseDuration(f.node.Scalar());
    if (!d.ok()) return Error(f, d.status().message());
    if (!allow_zero && d->count() == 0) return Error(f, "must be longer than 0");
    *out = *d;
    return Status::Ok();
  }

  // A count ("2") or a percentage ("10%", at most 100%), not negative; `forms` says which
  // forms are allowed, for the message.
  Status ReadCountOrPercent(const Field& f, const char* forms, bool* percent, int64_t* v) const {
    if (!f.node.IsScalar()) {
      return Error(f, std::string("expected ") + forms + ", got " + Describe(f.node));
    }
    const std::string& text = f.node.Scalar();
    *percent = !text.empty() && text.back() == '%';
    std::string_view digits(text.data(), text.size() - (*percent ? 1 : 0));
    auto [end, ec] = std::from_chars(digits.data(), digits.data() + digits.size(), *v);
    if (ec == std::errc::result_out_of_range ||
        (ec == std::errc() && *v > std::numeric_limits<int>::max())) {
      return Error(f, Quote(text) + " is out of range");
    }
    if (ec != std::errc() || end != digits.data() + digits.size()) {
      return Error(f, std::string("expected ") + forms + ", got " + Quote(text));
    }
    if (*v < 0) return Error(f, "must not be negative, got " + Quote(text));
    if (*percent && *v > 100) return Error(f, Quote(text) + " is more than 100%");
    return Status::Ok();
  }

  // How many failed hosts a wave tolerates: a count or a percentage, zero allowed.
  Status ReadTolerance(const Field& f, FailureTolerance* out) const {
    bool percent = false;
    int64_t v = 0;
    LOCKSTEP_RETURN_IF_ERROR(ReadCountOrPercent(
        f, "a host count (e.g. 2) or a percentage (e.g. \"10%\")", &percent, &v));
    out->percent = percent;
    out->value = static_cast<int>(v);
    return Status::Ok();
  }

  // A host count ("1") or a percentage ("50%") that selects at least one host.
  Status ReadHostSelector(const Field& f, HostSelector* out) const {
    bool percent = false;
    int64_t v = 0;
    LOCKSTEP_RETURN_IF_ERROR(ReadCountOrPercent(
        f, "a host count (e.g. 1) or a percentage (e.g. \"50%\")", &percent, &v));
    const std::string& text = f.node.Scalar();
    if (v == 0) {
      return Error(f, "selects no hosts (" + Quote(text) +
                          "); use a count of at least 1 or a percentage from 1% to 100%");
    }
    out->kind = percent ? HostSelector::Kind::kPercent : HostSelector::Kind::kCount;
    out->value = static_cast<int>(v);
    return Status::Ok();
  }

  // A region declared in the pipeline's `regions`.
  Status ReadRegion(const Field& f, std::string* out) const {
    LOCKSTEP_RETURN_IF_ERROR(ReadString(f, out));
    if (!p_->HasRegion(*out)) {
      return Error(f, "undeclared region " + Quote(*out) +
                          " (declared in regions: " + JoinNames(p_->regions) + ")");
    }
    return Status::Ok();
  }

  // A non-empty list of distinct declared regions.
  Status ReadRegionList(const Field& f, std::string_view if_empty,
                        std::vector<std::string>* out) const {
    std::vector<Field> items;
    LOCKSTEP_RETURN_IF_ERROR(ReadList(f, &items));
    if (items.empty()) return Error(f, "empty list; " + std::string(if_empty));
    out->clear();
    for (const Field& item : items) {
      std::string region;
      LOCKSTEP_RETURN_IF_ERROR(ReadRegion(item, &region));
      if (std::find(out->begin(), out->end(), region) != out->end()) {
        return Error(item, "duplicate region " + Quote(region));
      }
      out->push_back(region);
    }
    return Status::Ok();
  }

  Status ParseRegions(const Field& f) {
    std::vector<Field> items;
    LOCKSTEP_RETURN_IF_ERROR(ReadList(f, &items));
    if (items.empty()) return Error(f, "empty list; a pipeline needs at least one region");
    for (const Field& item : items) {
      RegionSpec spec;
      Field name = item;
      if (item.node.IsMap()) {
        Map m;
        LOCKSTEP_RETURN_IF_ERROR(ReadMap(item, kRegionKeys, &m));
        const Field* n = m.Find("name");
        if (n == nullptr) return Missing(m, "name", "e.g. {name: ap-southeast-2, stage: bringup}");
        name = *n;
        if (const Field* stage = m.Find("stage")) {
          std::string value;
          LOCKSTEP_RETURN_IF_ERROR(ReadString(*stage, &value));
          if (value == "bringup") {
            spec.stage = RegionSpec::Stage::kBringup;
          } else if (value != "serving") {
            return Error(*stage, "unknown value " + Quote(value) +
                                     " (allowed: serving, bringup; a bare name is serving)");
          }
        }
        if (const Field* output = m.Find("hook_output")) {
          std::string value;
          LOCKSTEP_RETURN_IF_ERROR(ReadString(*output, &value));
          if (value == "none") {
            spec.hook_output = RegionSpec::HookOutput::kNone;
          } else if (value != "tail") {
            return Error(*output, "unknown value " + Quote(value) + " (allowed: tail, none)");
          }
        }
      }
      LOCKSTEP_RETURN_IF_ERROR(ReadString(name, &spec.name));
      // Region names travel into log lines, metric labels, file names and URLs.
      if (std::string why = CheckName("region", spec.name); !why.empty()) {
        return Error(name, why);
      }
      if (p_->HasRegion(spec.name)) return Error(name, "duplicate region " + Quote(spec.name));
      p_->regions.push_back(spec.name);
      p_->region_specs.push_back(std::move(spec));
    }
    if (p_->BringupRegions().size() == p_->regions.size()) {
      return Error(f,
                   "every region is in bring-up; a pipeline needs at least one serving region "
                   "(a bare name, or stage: serving)");
    }
    return Status::Ok();
  }

  Status ParseLinks(const Field& f) {
    Map m;
    LOCKSTEP_RETURN_IF_ERROR(ReadMap(f, kLinksKeys, &m));
    if (const Field* commit = m.Find("commit")) {
      LOCKSTEP_RETURN_IF_ERROR(ReadArtifactTemplate(*commit, &p_->links.commit));
      if (p_->links.commit.find("{sha}") == std::string::npos) {
        return Error(*commit, "must contain \"{sha}\" (replaced by the release's commit), got " +
                                  Quote(p_->links.commit));
      }
    }
    if (const Field* compare = m.Find("compare")) {
      LOCKSTEP_RETURN_IF_ERROR(ReadArtifactTemplate(*compare, &p_->links.compare));
      if (p_->links.compare.find("{from}") == std::string::npos ||
          p_->links.compare.find("{to}") == std::string::npos) {
        return Error(*compare,
                     "must contain \"{from}\" and \"{to}\" (the previous release's commit and "
                     "this one's), got " +
                         Quote(p_->links.compare));
      }
    }
    return Status::Ok();
  }

  Status ParseArtifacts(const Field& f) {
    Map m;
    LOCKSTEP_RETURN_IF_ERROR(ReadMap(f, kArtifactsKeys, &m));
    const Field* mirrors = m.Find("mirrors");
    if (mirrors == nullptr) return Status::Ok();
    if (!mirrors->node.IsMap()) {
      return Error(*mirrors,
                   "expected a mapping of region to base URL, got " + Describe(mirrors->node));
    }
    for (const auto& kv : mirrors->node) {
      Field key{kv.first, mirrors->path, LineOf(kv.first, mirrors->line)};
      std::string region;
      LOCKSTEP_RETURN_IF_ERROR(ReadRegion(key, &region));
      Field value{kv.second, ChildPath(mirrors->path, region), LineOf(kv.second, key.line)};
      std::string base;
      LOCKSTEP_RETURN_IF_ERROR(ReadArtifactTemplate(value, &base));
      if (base.find_first_of("?#") != std::string::npos) {
        return Error(value,
                     "a mirror is a base URL (scheme, host, port and an optional path), "
                     "without a query or fragment: " +
                         Quote(base));
      }
      p_->mirrors[region] = base;
    }
    return Status::Ok();
  }

  Status ParseWaves(const Field& f) {
    std::vector<Field> items;
    LOCKSTEP_RETURN_IF_ERROR(ReadList(f, &items));
    if (items.empty()) return Error(f, "empty list; a pipeline needs at least one wave");
    for (const Field& item : items) {
      WaveSpec wave;
      LOCKSTEP_RETURN_IF_ERROR(ParseWave(item, &wave));
      p_->waves.push_back(std::move(wave));
    }
    return Status::Ok();
  }

  Status ParseWave(const Field& f, WaveSpec* out) const {
    Map m;
    LOCKSTEP_RETURN_IF_ERROR(ReadMap(f, kWaveKeys, &m));
    out->line = f.line;

    const Field* name = m.Find("name");
    if (name == nullptr) return Missing(m, "name", "every wave needs a unique name");
    LOCKSTEP_RETURN_IF_ERROR(ReadString(*name, &out->name));
    for (size_t i = 0; i < p_->waves.size(); ++i) {
      if (p_->waves[i].name == out->name) {
        return Error(*name, "duplicate wave name " + Quote(out->name) + " (also waves[" +
                                std::to_string(i) + "])");
      }
    }

    const Field* select = m.Find("select");
    if (select == nullptr) {
      return Missing(
          m, "select",
          "e.g. {per_region: 1} or {regions: [" + p_->regions.front() + "], hosts: \"100%\"}");
    }
    LOCKSTEP_RETURN_IF_ERROR(ParseSelect(*select, out));

    if (const Field* bake = m.Find("bake")) {
      LOCKSTEP_RETURN_IF_ERROR(ReadDuration(*bake, /*allow_zero=*/true, &out->bake));
    }
    if (const Field* v = m.Find("tolerate_failed_hosts")) {
      FailureTolerance t;
      LOCKSTEP_RETURN_IF_ERROR(ReadTolerance(*v, &t));
      out->tolerate_failed_hosts = t;
    }
    if (const Field* approval = m.Find("approval")) {
      std::string value;
      LOCKSTEP_RETURN_IF_ERROR(ReadString(*approval, &value));
      if (value != "manual") {
        return Error(*approval, "unknown value " + Quote(value) +
                                    "; the only value is \"manual\" (omit the key for none)");
      }
      out->manual_approval = true;
    }
    return Status::Ok();
  }

  Status ParseSelect(const Field& f, WaveSpec* out) const {
    Map m;
    LOCKSTEP_RETURN_IF_ERROR(ReadMap(f, kSelectKeys, &m));
    const Field* per_region = m.Find("per_region");
    const Field* regions = m.Find("regions");
    const Field* hosts = m.Find("hosts");
    if (per_region != nullptr && (regions != nullptr || hosts != nullptr)) {
      return Error(f, "use either {per_region: N} or {regions: [...], hosts: N}, not both");
    }
    if (per_region != nullptr) {
      LOCKSTEP_RETURN_IF_ERROR(ReadHostSelector(*per_region, &out->hosts));
      out->per_region = true;
      for (const auto& r : p_->region_specs) {
        if (!r.bringup()) out->regions.push_back(r.name);
      }
      return Status::Ok();
    }
    if (regions == nullptr) {
      return Error(f, "selects no region; use {per_region: N} or {regions: [...], hosts: N}");
    }
    LOCKSTEP_RETURN_IF_ERROR(
        ReadRegionList(*regions, "a wave must select at least one region", &out->regions));
    for (const auto& r : out->regions) {
      if (p_->IsBringup(r)) {
        return Error(*regions, "region " + Quote(r) +
                                   " is in bring-up: it takes every release in waves of its own "
                                   "(list it here once it is promoted with stage: serving)");
      }
    }
    out->hosts = HostSelector{HostSelector::Kind::kPercent, 100};
    if (hosts != nullptr) LOCKSTEP_RETURN_IF_ERROR(ReadHostSelector(*hosts, &out->hosts));
    return Status::Ok();
  }

  Status ParseConcurrency(const Field& f) {
    Map m;
    LOCKSTEP_RETURN_IF_ERROR(ReadMap(f, kConcurrencyKeys, &m));
    if (const Field* n = m.Find("per_region")) {
      LOCKSTEP_RETURN_IF_ERROR(
          ReadInt(*n, 1, std::numeric_limits<int>::max(), &p_->concurrency_per_region));
    }
    return Status::Ok();
  }

  Status ParseHealth(const Field& f) {
    Map m;
    LOCKSTEP_RETURN_IF_ERROR(ReadMap(f, kHealthKeys, &m));
    if (const Field* check = m.Find("check_hook")) {
      LOCKSTEP_RETURN_IF_ERROR(ReadBool(*check, &p_->check_hook));
    }
    if (const Field* http = m.Find("http")) {
      std::vector<Field> items;
      LOCKSTEP_RETURN_IF_ERROR(ReadList(*http, &items));
      for (const Field& item : items) {
        HttpProbeSpec probe;
        LOCKSTEP_RETURN_IF_ERROR(ParseProbe(item, &probe));
        p_->http_probes.push_back(std::move(probe));
      }
    }
    return Status::Ok();
  }

  Status ParseProbe(const Field& f, HttpProbeSpec* out) const {
    Map m;
    LOCKSTEP_RETURN_IF_ERROR(ReadMap(f, kProbeKeys, &m));
    const Field* url = m.Find("url");
    if (url == nullptr) return Missing(m, "url", "the URL the agent polls on its own host");
    LOCKSTEP_RETURN_IF_ERROR(ReadUrl(*url, &out->url));
    if (const Field* v = m.Find("expect")) {
      LOCKSTEP_RETURN_IF_ERROR(ReadInt(*v, 100, 599, &out->expect_status));
    }
    if (const Field* v = m.Find("timeout")) {
      LOCKSTEP_RETURN_IF_ERROR(ReadDuration(*v, /*allow_zero=*/false, &out->timeout));
    }
    if (const Field* v = m.Find("attempts")) {
      LOCKSTEP_RETURN_IF_ERROR(ReadInt(*v, 1, std::numeric_limits<int>::max(), &out->attempts));
    }
    if (const Field* v = m.Find("interval")) {
      LOCKSTEP_RETURN_IF_ERROR(ReadDuration(*v, /*allow_zero=*/true, &out->interval));
    }
    return Status::Ok();
  }

  Status ParseGates(const Field& f) {
    std::vector<Field> items;
    LOCKSTEP_RETURN_IF_ERROR(ReadList(f, &items));
    for (size_t i = 0; i < items.size(); ++i) {
      Map m;
      LOCKSTEP_RETURN_IF_ERROR(ReadMap(items[i], kGateKeys, &m));
      const Field* metric = m.Find("metric");
      if (metric == nullptr) {
        return Missing(m, "metric", "the only kind of gate is metric: {prometheus, query, max}");
      }
      MetricGateSpec gate;
      LOCKSTEP_RETURN_IF_ERROR(ParseMetricGate(*metric, i, &gate));
      p_->metric_gates.push_back(std::move(gate));
    }
    return Status::Ok();
  }

  Status ParseMetricGate(const Field& f, size_t index, MetricGateSpec* out) const {
    Map m;
    LOCKSTEP_RETURN_IF_ERROR(ReadMap(f, kMetricKeys, &m));

    const Field* name = m.Find("name");
    out->name = "metric-" + std::to_string(index);
    if (name != nullptr) LOCKSTEP_RETURN_IF_ERROR(ReadString(*name, &out->name));
    for (size_t i = 0; i < p_->metric_gates.size(); ++i) {
      if (p_->metric_gates[i].name == out->name) {
        return Error(name != nullptr ? *name : f, "duplicate gate name " + Quote(out->name) +
                                                      " (also gates[" + std::to_string(i) + "])");
      }
    }

    const Field* prometheus = m.Find("prometheus");
    if (prometheus == nullptr) {
      return Missing(m, "prometheus", "the base URL of the Prometheus HTTP API");
    }
    LOCKSTEP_RETURN_IF_ERROR(ReadUrl(*prometheus, &out->prometheus));
    const Field* query = m.Find("query");
    if (query == nullptr) return Missing(m, "query", "the PromQL expression to evaluate");
    LOCKSTEP_RETURN_IF_ERROR(ReadString(*query, &out->query));

    const Field* max = m.Find("max");
    const Field* min = m.Find("min");
    if (max == nullptr && min == nullptr) {
      return Error(f, "needs max or min (the bounds the query result must stay within)");
    }
    double value = 0;
    if (max != nullptr) {
      LOCKSTEP_RETURN_IF_ERROR(ReadNumber(*max, &value));
      out->max = value;
    }
    if (min != nullptr) {
      LOCKSTEP_RETURN_IF_ERROR(ReadNumber(*min, &value));
      out->min = value;
    }
    if (out->max && out->min && *out->min > *out->max) {
      return Error(*min, "min " + min->node.Scalar() + " is greater than max " +
                             max->node.Scalar() + "; no value could pass");
    }

    if (const Field* regions = m.Find("regions")) {
      LOCKSTEP_RETURN_IF_ERROR(ReadRegionList(
          *regions, "omit regions to evaluate the gate in every region", &out->regions));
    }
    if (const Field* v = m.Find("consecutive_failures")) {
      LOCKSTEP_RETURN_IF_ERROR(
          ReadInt(*v, 1, std::numeric_limits<int>::max(), &out->consecutive_failures));
    }
    if (const Field* v = m.Find("interval")) {
      LOCKSTEP_RETURN_IF_ERROR(ReadDuration(*v, /*allow_zero=*/false, &out->interval));
    }
    if (const Field* v = m.Find("inconclusive_deadline")) {
      LOCKSTEP_RETURN_IF_ERROR(ReadDuration(*v, /*allow_zero=*/false, &out->inconclusive_deadline));
    }
    if (const Field* v = m.Find("delay")) {
      LOCKSTEP_RETURN_IF_ERROR(ReadDuration(*v, /*allow_zero=*/true, &out->delay));
    }
    if (const Field* v = m.Find("passes")) {
      LOCKSTEP_RETURN_IF_ERROR(ReadInt(*v, 1, 1000, &out->passes));
    }
    return Status::Ok();
  }

  Status ParseTimeouts(const Field& f) {
    Map m;
    LOCKSTEP_RETURN_IF_ERROR(ReadMap(f, kTimeoutKeys, &m));
    if (const Field* v = m.Find("hook")) {
      LOCKSTEP_RETURN_IF_ERROR(ReadDuration(*v, /*allow_zero=*/false, &p_->timeouts.hook));
    }
    if (const Field* v = m.Find("fetch")) {
      LOCKSTEP_RETURN_IF_ERROR(ReadDuration(*v, /*allow_zero=*/false, &p_->timeouts.fetch));
    }
    if (const Field* v = m.Find("agent_lost")) {
      LOCKSTEP_RETURN_IF_ERROR(ReadDuration(*v, /*allow_zero=*/false, &p_->timeouts.agent_lost));
    }
    if (const Field* v = m.Find("approval")) {
      LOCKSTEP_RETURN_IF_ERROR(ReadDuration(*v, /*allow_zero=*/false, &p_->timeouts.approval));
    }
    return Status::Ok();
  }

  Status ParseRollback(const Field& f) {
    Map m;
    LOCKSTEP_RETURN_IF_ERROR(ReadMap(f, kRollbackKeys, &m));
    if (const Field* v = m.Find("automatic")) {
      LOCKSTEP_RETURN_IF_ERROR(ReadBool(*v, &p_->rollback.automatic));
    }
    if (const Field* v = m.Find("tolerate_failed_hosts")) {
      LOCKSTEP_RETURN_IF_ERROR(ReadTolerance(*v, &p_->rollback.tolerate_failed_hosts));
    }
    if (const Field* v = m.Find("on_failure")) {
      std::string value;
      LOCKSTEP_RETURN_IF_ERROR(ReadString(*v, &value));
      if (value == "rollback") {
        p_->rollback.on_failure = RollbackPolicy::OnFailure::kRollback;
      } else if (value == "pause") {
        p_->rollback.on_failure = RollbackPolicy::OnFailure::kPause;
      } else {
        return Error(*v, "unknown value " + Quote(value) + " (allowed: rollback, pause)");
      }
    }
    return Status::Ok();
  }

  Status ParseTrigger(const Field& f) {
    Map m;
    LOCKSTEP_RETURN_IF_ERROR(ReadMap(f, kTriggerKeys, &m));
    const Field* github = m.Find("github");
    if (github == nullptr) {
      return Missing(m, "github", "the only trigger is github: {repository, branch, artifact}");
    }
    Map g;
    LOCKSTEP_RETURN_IF_ERROR(ReadMap(*github, kGithubKeys, &g));
    GithubTrigger trigger;

    const Field* repository = g.Find("repository");
    if (repository == nullptr) return Missing(g, "repository", "e.g. \"repository: org/repo\"");
    LOCKSTEP_RETURN_IF_ERROR(ReadString(*repository, &trigger.repository));
    size_t slash = trigger.repository.find('/');
    if (slash == 0 || slash == std::string::npos || slash + 1 == trigger.repository.size() ||
        trigger.repository.find('/', slash + 1) != std::string::npos) {
      return Error(*repository, "expected \"owner/name\", got " + Quote(trigger.repository));
    }
    if (const Field* v = g.Find("branch"))
      LOCKSTEP_RETURN_IF_ERROR(ReadString(*v, &trigger.branch));

    const Field* artifact = g.Find("artifact");
    if (artifact == nullptr) {
      return Missing(g, "artifact", "the artifact URL, with {sha} standing for the commit");
    }
    LOCKSTEP_RETURN_IF_ERROR(ReadArtifactTemplate(*artifact, &trigger.artifact));
    if (trigger.artifact.find("{sha}") == std::string::npos) {
      return Error(*artifact, "must contain \"{sha}\" (replaced by the commit), got " +
                                  Quote(trigger.artifact));
    }

    const Field* secret_file = g.Find("secret_file");
    const Field* secret_env = g.Find("secret_env");
    if (secret_file != nullptr && secret_env != nullptr) {
      return Error(*secret_env, "set only one of secret_file and secret_env");
    }
    if (secret_file != nullptr) {
      LOCKSTEP_RETURN_IF_ERROR(ReadString(*secret_file, &trigger.secret_file));
    }
    if (secret_env != nullptr) {
      LOCKSTEP_RETURN_IF_ERROR(ReadString(*secret_env, &trigger.secret_env));
    }
    if (const Field* v = g.Find("max_artifact_bytes")) {
      LOCKSTEP_RETURN_IF_ERROR(ReadByteSize(*v, &trigger.max_artifact_bytes));
    }
    if (const Field* v = g.Find("artifact_wait")) {
      LOCKSTEP_RETURN_IF_ERROR(ReadDuration(*v, /*allow_zero=*/false, &trigger.artifact_wait));
    }
    p_->github = std::move(trigger);
    return Status::Ok();
  }

  Status ParseNotify(const Field& f) {
    std::vector<Field> items;
    LOCKSTEP_RETURN_IF_ERROR(ReadList(f, &items));
    for (const Field& item : items) {
      Map m;
      LOCKSTEP_RETURN_IF_ERROR(ReadMap(item, kNotifyKeys, &m));
      NotifySpec spec;
      const Field* url = m.Find("url");
      if (url == nullptr) return Missing(m, "url", "the URL that receives the events");
      LOCKSTEP_RETURN_IF_ERROR(ReadUrl(*url, &spec.url));
      if (const Field* events = m.Find("events")) {
        std::vector<Field> names;
        LOCKSTEP_RETURN_IF_ERROR(ReadList(*events, &names));
        if (names.empty()) return Error(*events, "empty list; omit events to receive every event");
        for (const Field& name : names) {
          std::string event;
          LOCKSTEP_RETURN_IF_ERROR(ReadString(name, &event));
          if (!Contains(kNotifyEvents, event)) {
            return Error(name, "unknown event " + Quote(event) +
                                   " (allowed: " + JoinNames(kNotifyEvents) + ")");
          }
          if (std::find(spec.events.begin(), spec.events.end(), event) != spec.events.end()) {
            return Error(name, "duplicate event " + Quote(event));
          }
          spec.events.push_back(event);
        }
      }
      p_->notify.push_back(std::move(spec));
    }
    return Status::Ok();
  }

  Status ReadClock(const Field& f, bool allow_midnight_end, int* out) const {
    std::string text;
    LOCKSTEP_RETURN_IF_ERROR(ReadString(f, &text));
    std::optional<int> minute = ParseClock(text, allow_midnight_end);
    if (!minute) {
      return Error(f, "expected a UTC time of day as \"HH:MM\"" +
                          std::string(allow_midnight_end ? " (up to 24:00)" : "") + ", got " +
                          Quote(text));
    }
    *out = *minute;
    return Status::Ok();
  }

  Status ParseWindow(const Field& f) {
    Map m;
    LOCKSTEP_RETURN_IF_ERROR(ReadMap(f, kWindowKeys, &m));
    DeployWindow window;
    const Field* start = m.Find("start");
    if (start == nullptr) return Missing(m, "start", "e.g. start: \"09:00\" (UTC)");
    LOCKSTEP_RETURN_IF_ERROR(ReadClock(*start, /*allow_midnight_end=*/false, &window.start_minute));
    const Field* end = m.Find("end");
    if (end == nullptr) return Missing(m, "end", "e.g. end: \"17:00\" (UTC)");
    LOCKSTEP_RETURN_IF_ERROR(ReadClock(*end, /*allow_midnight_end=*/true, &window.end_minute));
    // A window does not wrap past midnight; keeping start < end makes "is now inside" a
    // plain comparison and leaves room to add wrapping later without changing old files.
    if (window.end_minute <= window.start_minute) {
      return Error(*end, "must be later than start " + Quote(start->node.Scalar()) +
                             " (a window ends the same UTC day; use \"24:00\" for midnight)");
    }
    if (const Field* days = m.Find("days")) {
      std::vector<Field> items;
      LOCKSTEP_RETURN_IF_ERROR(ReadList(*days, &items));
      if (items.empty()) return Error(*days, "empty list; omit days to allow every day");
      for (const Field& item : items) {
        std::string day;
        LOCKSTEP_RETURN_IF_ERROR(ReadString(item, &day));
        auto it = std::find(std::begin(kWeekdays), std::end(kWeekdays), day);
        if (it == std::end(kWeekdays)) {
          return Error(item,
                       "unknown day " + Quote(day) + " (allowed: " + JoinNames(kWeekdays) + ")");
        }
        int weekday = static_cast<int>(it - std::begin(kWeekdays));
        if (std::find(window.weekdays.begin(), window.weekdays.end(), weekday) !=
            window.weekdays.end()) {
          return Error(item, "duplicate day " + Quote(day));
        }
        window.weekdays.push_back(weekday);
      }
      std::sort(window.weekdays.begin(), window.weekdays.end());
    }
    p_->window = std::move(window);
    return Status::Ok();
  }

  const std::string& file_;
  Pipeline* p_;
};

// Sees where each document of a stream starts and whether it holds anything, without
// building nodes.
class DocumentScan : public YAML::EventHandler {
 public:
  struct Document {
    YAML::Mark start;
    bool has_content = false;
  };

  const std::vector<Document>& documents() const { return documents_; }

  void OnDocumentStart(const YAML::Mark& mark) override { documents_.push_back({mark, false}); }
  void OnDocumentEnd() override {}
  void OnNull(const YAML::Mark&, YAML::anchor_t) override {}
  void OnAlias(const YAML::Mark&, YAML::anchor_t) override { SawContent(); }
  void OnScalar(const YAML::Mark&, const std::string&, YAML::anchor_t,
                const std::string&) override {
    SawContent();
  }
  void OnSequenceStart(const YAML::Mark&, const std::string&, YAML::anchor_t,
                       YAML::EmitterStyle::value) override {
    SawContent();
  }
  void OnSequenceEnd() override {}
  void OnMapStart(const YAML::Mark&, const std::string&, YAML::anchor_t,
                  YAML::EmitterStyle::value) override {
    SawContent();
  }
  void OnMapEnd() override {}

 private:
  void SawContent() {
    if (!documents_.empty()) documents_.back().has_content = true;
  }

  std::vector<Document> documents_;
};

// Checks the whole stream before the first document is loaded: a second document with content
// is an error rather than silently ignored, and so is a syntax error anywhere in the file.
// Also guards against a yaml-cpp 0.7 bug (jbeder/yaml-cpp#1040, fixed upstream in #1318/#1319):
// a stray flow indicator such as "," at the top level makes its parser return empty documents
// at the same position forever, and YAML::LoadAll then grows until the process runs out of
// memory. Here a document that starts where the previous one started stops the scan.
Status ScanDocuments(const std::string& yaml_text, const std::string& file) {
  // Far more than any real file; bounds the loop even if the parser misbehaves another way.
  constexpr size_t kMaxDocuments = 1000;
  std::istringstream in(yaml_text);
  YAML::Parser parser(in);
  DocumentScan scan;
  while (parser.HandleNextDocument(scan)) {
    const std::vector<DocumentScan::Document>& docs = scan.documents();
    if (docs.size() < 2) continue;
    const YAML::Mark& start = docs.back().start;
    if (start.pos == docs[docs.size() - 2].start.pos || docs.size() > kMaxDocuments) {
      std::string what = "unexpected content";
      if (start.pos >= 0 && static_cast<size_t>(start.pos) < yaml_text.size()) {
        what = "unexpected " + Quote(yaml_text.substr(static_cast<size_t>(start.pos), 1));
      }
      return InvalidArgument(file + ":" + std::to_string(start.line + 1) +
                             ": syntax error: " + what);
    }
    if (docs.back().has_content) {
      return InvalidArgument(file + ":" + std::to_string(start.line + 1) +
                             ": (document): a pipeline file holds one YAML document; another "
                             "one starts here");
    }
  }
  return Status::Ok();
}

// Parses one document; `*name_line` receives the line of the `pipeline` key.
StatusOr<Pipeline> ParseDocument(const std::string& yaml_text, const std::string& file,
                                 int* name_line) {
  try {
    LOCKSTEP_RETURN_IF_ERROR(ScanDocuments(yaml_text, file));
    YAML::Node root = YAML::Load(yaml_text);
    Pipeline pipeline;
    pipeline.file = file;
    PipelineParser parser(file, &pipeline);
    LOCKSTEP_RETURN_IF_ERROR(parser.Parse(root, name_line));
    return pipeline;
  } catch (const YAML::DeepRecursion& e) {
    // yaml-cpp says "bad file"; say what is actually wrong.
    int line = e.mark.line >= 0 ? e.mark.line + 1 : 1;
    return InvalidArgument(file + ":" + std::to_string(line) + ": syntax error: nested too deeply");
  } catch (const YAML::Exception& e) {
    int line = e.mark.line >= 0 ? e.mark.line + 1 : 1;
    return InvalidArgument(file + ":" + std::to_string(line) + ": syntax error: " + e.msg);
  } catch (const std::exception& e) {
    return InvalidArgument(file + ":1: (document): cannot parse: " + e.what());
  }
}

StatusOr<std::string> ReadFile(const std::string& path) {
  std::error_code ec;
  fs::file_status st = fs::status(path, ec);
  if (ec && ec != std::errc::no_such_file_or_directory) {
    return InvalidArgument(path + ": cannot read: " + ec.message());
  }
  if (!fs::exists(st)) return NotFound(path + ": no such file");
  if (fs::is_directory(st)) return InvalidArgument(path + ": is a directory, not a pipeline file");
  std::ifstream in(path, std::ios::binary);
  if (!in) return InvalidArgument(path + ": cannot open: " + std::strerror(errno));
  std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  if (in.bad()) return InvalidArgument(path + ": cannot read: " + std::strerror(errno));
  return text;
}

StatusOr<Pipeline> LoadFile(const std::string& path, int* name_line) {
  LOCKSTEP_ASSIGN_OR_RETURN(auto text, ReadFile(path));
  return ParseDocument(text, path, name_line);
}

}  // namespace

StatusOr<Pipeline> ParsePipeline(const std::string& yaml_text, const std::string& file) {
  int name_line = 0;
  return ParseDocument(yaml_text, file, &name_line);
}

StatusOr<Pipeline> LoadPipelineFile(const std::string& path) {
  int name_line = 0;
  return LoadFile(path, &name_line);
}

StatusOr<std::vector<Pipeline>> LoadPipelineDir(const std::string& dir) {
  std::error_code ec;
  fs::file_status st = fs::status(dir, ec);
  if (ec && ec != std::errc::no_such_file_or_directory) {
    return InvalidArgument(dir + ": cannot read pipeline directory: " + ec.message());
  }
  if (!fs::exists(st)) return NotFound(dir + ": no such pipeline directory");
  if (!fs::is_directory(st)) return InvalidArgument(dir + ": not a directory");

  std::vector<fs::path> files;
  for (fs::directory_iterator it(dir, ec), end; !ec && it != end; it.increment(ec)) {
    const fs::path& path = it->path();
    std::string name = path.filename().string();
    // Hidden files are editor swap and lock files (".#web.yaml"), not pipelines.
    if (name.empty() || name.front() == '.') continue;
    if (path.extension() != ".yaml" && path.extension() != ".yml") continue;
    std::error_code type_ec;
    if (it->is_directory(type_ec)) continue;
    files.push_back(path);
  }
  if (ec) return InvalidArgument(dir + ": cannot list pipeline directory: " + ec.message());
  std::sort(files.begin(), files.end(), [](const fs::path& a, const fs::path& b) {
    return a.filename().string() < b.filename().string();
  });

  std::vector<Pipeline> pipelines;
  std::vector<int> name_lines;
  for (const fs::path& path : files) {
    int name_line = 0;
    LOCKSTEP_ASSIGN_OR_RETURN(auto pipeline, LoadFile(path.string(), &name_line));
    for (size_t i = 0; i < pipelines.size(); ++i) {
      if (pipelines[i].name == pipeline.name) {
        return InvalidArgument(path.string() + ":" + std::to_string(name_line) +
                               ": pipeline: duplicate pipeline name " + Quote(pipeline.name) +
                               ", already defined in " + pipelines[i].file + ":" +
                               std::to_string(name_lines[i]));
      }
    }
    pipelines.push_back(std::move(pipeline));
    name_lines.push_back(name_line);
  }
  return pipelines;
}

std::vector<std::string> PipelineKeyPaths() {
  std::vector<std::string> out;
  auto add = [&out](const std::string& prefix, KeyList keys) {
    for (std::string_view k : keys) out.push_back(prefix + std::string(k));
  };
  add("", kTopKeys);
  add("regions[].", kRegionKeys);
  add("artifacts.", kArtifactsKeys);
  add("links.", kLinksKeys);
  add("waves[].", kWaveKeys);
  add("waves[].select.", kSelectKeys);
  add("concurrency.", kConcurrencyKeys);
  add("health.", kHealthKeys);
  add("health.http[].", kProbeKeys);
  add("gates[].", kGateKeys);
  add("gates[].metric.", kMetricKeys);
  add("timeouts.", kTimeoutKeys);
  add("rollback.", kRollbackKeys);
  add("trigger.", kTriggerKeys);
  add("trigger.github.", kGithubKeys);
  add("notify[].", kNotifyKeys);
  add("window.", kWindowKeys);
  return out;
}

}  // namespace lockstep
