#include "agents/health/metric_gate.h"

#include <curl/curl.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <charconv>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <ctime>
#include <exception>
#include <limits>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "agents/artifact/fetch.h"
#include "common/curl_options.h"
#include "common/status.h"

namespace lockstep::agent {
namespace {

using json = nlohmann::json;
using lockstep::v1::GateVerdict;
using lockstep::v1::MetricGate;

// A gate without a timeout must still end: a hung Prometheus would otherwise hold up the
// release waiting on the verdict.
constexpr std::chrono::milliseconds kDefaultTimeout{5000};
// A gate's answer is a handful of numbers. A body this large means the query selects far too
// many series; reading on would only spend the agent's memory.
constexpr size_t kMaxBodyBytes = size_t{4} << 20;
// The detail is shown in the UI and travels to lockstepd; a whole Prometheus error page or a
// thousand label pairs would not help anyone there.
constexpr size_t kMaxDetailChars = 400;

struct Body {
  std::string data;
  bool too_large = false;
};

size_t AppendBody(char* ptr, size_t size, size_t nmemb, void* userdata) {
  auto* body = static_cast<Body*>(userdata);
  const size_t n = size * nmemb;
  if (body->data.size() + n > kMaxBodyBytes) {
    body->too_large = true;
    return 0;  // makes curl abort the transfer with CURLE_WRITE_ERROR
  }
  body->data.append(ptr, n);
  return n;
}

struct HttpResponse {
  long status = 0;  // NOLINT(runtime/int): curl writes a long
  std::string body;
};

// GET `base` + `path`. The error's message is already the verdict's detail; `what` names
// the request in it.
StatusOr<HttpResponse> GetPrometheus(const std::string& base, const std::string& path,
                                     const std::string& what, std::chrono::milliseconds timeout) {
  std::unique_ptr<CURL, CurlEasyDeleter> curl(curl_easy_init());
  if (!curl) return Internal("curl_easy_init failed");
  CURL* c = curl.get();
  const std::string url = base + path;
  const std::string& query = what;

  Body body;
  char errbuf[CURL_ERROR_SIZE] = {0};
  // Redirects are not followed: one means the URL in the pipeline is wrong, and the operator
  // should see that rather than have the gate judged by whatever answered at the other end.
  SetCommonCurlOptions(c, url.c_str(), errbuf, timeout, "lockstep-agent-metric-gate");
  curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, &AppendBody);
  curl_easy_setopt(c, CURLOPT_WRITEDATA, &body);

  const CURLcode rc = curl_easy_perform(c);
  if (body.too_large) {
    return DataLoss("prometheus " + base + " sent more than 4 MiB for query \"" + query +
                    "\"; narrow the query");
  }
  if (rc != CURLE_OK) {
    const std::string error = errbuf[0] != '\0' ? errbuf : curl_easy_strerror(rc);
    if (rc == CURLE_OPERATION_TIMEDOUT) {
      return DeadlineExceeded("prometheus " + base + " did not answer within " +
                              std::to_string(timeout.count()) + " ms: " + error);
    }
    return Unavailable("prometheus " + base + " unreachable: " + error);
  }
  HttpResponse response;
  curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &response.status);
  response.body = std::move(body.data);
  return response;
}

// GET `base`/api/v1/query.
StatusOr<HttpResponse> QueryPrometheus(const std::string& base, const std::string& query,
                                       std::chrono::milliseconds timeout) {
  std::unique_ptr<char, CurlFreeDeleter> escaped(
      curl_easy_escape(nullptr, query.data(), static_cast<int>(query.size())));
  if (!escaped) return Internal("cannot URL-encode the query");
  // Passing the timeout on makes Prometheus abandon the evaluation when we stop waiting,
  // instead of computing an expensive query for its own default of two minutes.
  return GetPrometheus(base,
                       std::string("/api/v1/query?query=") + escaped.get() +
                           "&timeout=" + std::to_string(timeout.count()) + "ms",
                       query, timeout);
}

// "2026-12-05T23:30:01.123456789Z" or "...+02:00" as unix ms; nullopt if malformed.
std::optional<int64_t> ParseRfc3339Ms(std::string_view t) {
  int y, mo, d, h, mi, sec;
  if (t.size() < 20 || std::sscanf(std::string(t.substr(0, 19)).c_str(), "%4d-%2d-%2dT%2d:%2d:%2d",
                                   &y, &mo, &d, &h, &mi, &sec) != 6) {
    return std::nullopt;
  }
  std::tm tm{};
  tm.tm_year = y - 1900;
  tm.tm_mon = mo - 1;
  tm.tm_mday = d;
  tm.tm_hour = h;
  tm.tm_min = mi;
  tm.tm_sec = sec;
  int64_t ms = static_cast<int64_t>(::timegm(&tm)) * 1000;
  size_t i = 19;
  if (i < t.size() && t[i] == '.') {
    int64_t frac = 0, scale = 100;
    for (++i; i < t.size() && t[i] >= '0' && t[i] <= '9'; ++i) {
      frac += (t[i] - '0') * scale;
      scale /= 10;
    }
    ms += frac;
  }
  if (i >= t.size()) return std::nullopt;
  if (t[i] == 'Z') return ms;
  int oh, om;
  if ((t[i] != '+' && t[i] != '-') ||
      std::sscanf(std::string(t.substr(i + 1)).c_str(), "%2d:%2d", &oh, &om) != 2) {
    return std::nullopt;
  }
  const int64_t offset = (int64_t{oh} * 60 + om) * 60'000;
  return t[i] == '+' ? ms - offset : ms + offset;
}

// Whether Prometheus has scraped every active target at or after `since_ms`: only then is
// every series a query can read backed by a sample taken after that moment. The error says
// why it cannot tell.
StatusOr<bool> ScrapedEverythingSince(const std::string& base, int64_t since_ms,
                                      std::chrono::milliseconds timeout) {
  LOCKSTEP_ASSIGN_OR_RETURN(auto response, GetPrometheus(base, "/api/v1/targets?state=active",
                                                         "active targets", timeout));
  if (response.status != 200) {
    return Unavailable("prometheus " + base + " answered HTTP " + std::to_string(response.status) +
                       " for its targets, so the age of its samples is unknown");
  }
  const json body = json::parse(response.body, nullptr, /*allow_exceptions=*/false);
  if (!body.is_object() || !body.contains("data") || !body["data"].is_object() ||
      !body["data"].contains("activeTargets") || !body["data"]["activeTargets"].is_array()) {
    return Unavailable("prometheus " + base + " sent no list of active targets");
  }
  const json& targets = body["data"]["activeTargets"];
  if (targets.empty()) return Unavailable("prometheus " + base + " scrapes no target");
  for (const json& target : targets) {
    if (!target.is_object() || !target.contains("lastScrape") ||
        !target["lastScrape"].is_string()) {
      return Unavailable("prometheus " + base + " did not say when it last scraped a target");
    }
    auto at = ParseRfc3339Ms(target["lastScrape"].get<std::string>());
    if (!at) return Unavailable("prometheus " + base + " sent a malformed lastScrape");
    if (*at < since_ms) return false;
  }
  return true;
}

// Length of the well-formed UTF-8 sequence starting at s[i], or 0 if there is none (stray
// continuation bytes, overlong forms, surrogates, code points past U+10FFFF).
size_t Utf8Length(std::string_view s, size_t i) {
  const auto byte = [&s](size_t k) { return static_cast<unsigned char>(s[k]); };
  const unsigned char c = byte(i);
  if (c < 0x80) return 1;
  size_t n = 0;
  unsigned char lo = 0x80;  // allowed range of the second byte
  unsigned char hi = 0xBF;
  if (c >= 0xC2 && c <= 0xDF) {
    n = 2;
  } else if (c >= 0xE0 && c <= 0xEF) {
    n = 3;
    if (c == 0xE0) lo = 0xA0;
    if (c == 0xED) hi = 0x9F;
  } else if (c >= 0xF0 && c <= 0xF4) {
    n = 4;
    if (c == 0xF0) lo = 0x90;
    if (c == 0xF4) hi = 0x8F;
  } else {
    return 0;
  }
  if (i + n > s.size() || byte(i + 1) < lo || byte(i + 1) > hi) return 0;
  for (size_t k = 2; k < n; ++k) {
    if ((byte(i + k) & 0xC0) != 0x80) return 0;
  }
  return n;
}

// The detail goes into a proto3 string, whose receiver rejects the whole message if the bytes
// are not valid UTF-8, and a proxy's error page may be in any encoding: invalid bytes become
// '?'. Control characters (newlines in errors, in label values) become spaces so that the
// detail stays one line, and it is capped at a character boundary.
std::string OneLine(std::string_view text) {
  std::string out;
  for (size_t i = 0; i < text.size();) {
    const size_t n = Utf8Length(text, i);
    if (out.size() + std::max<size_t>(n, 1) > kMaxDetailChars - 3) {
      out += "...";
      break;
    }
    if (n == 0) {
      out += '?';
      ++i;
    } else if (n == 1 && (static_cast<unsigned char>(text[i]) < 0x20 || text[i] == 0x7f)) {
      out += ' ';
      ++i;
    } else {
      out.append(text.substr(i, n));
      i += n;
    }
  }
  return out;
}

// The shortest text that reads back as the same double: "0.031", not "0.031000".
std::string FormatNumber(double v) {
  char buf[64];
  const auto result = std::to_chars(buf, buf + sizeof(buf), v);
  return std::string(buf, result.ptr);
}

// nlohmann's what() starts with "[json.exception.type_error.302] "; users need the rest.
std::string JsonError(const json::exception& e) {
  std::string_view what = e.what();
  const auto close = what.find("] ");
  if (!what.empty() && what.front() == '[' && close != std::string_view::npos) {
    what.remove_prefix(close + 2);
  }
  return std::string(what);
}

// Prometheus sends sample values as strings ("0.5", "NaN", "+Inf", "1e-05") so that the
// non-finite ones survive JSON. std::from_chars is locale-independent (strtod is not) but
// does not accept a leading '+', hence the strip.
bool ParseSampleValue(std::string_view text, double* value) {
  if (!text.empty() && text.front() == '+') text.remove_prefix(1);
  if (text.empty()) return false;
  const auto result = std::from_chars(text.data(), text.data() + text.size(), *value);
  return result.ec == std::errc() && result.ptr == text.data() + text.size();
}

// A series as Prometheus prints it: name{label="value", ...}; empty for a scalar or for an
// aggregation that dropped every label.
std::string SeriesName(const json& metric) {
  std::string name;
  std::string labels;
  for (const auto& [key, value] : metric.items()) {
    if (key == "__name__") {
      name = value.get<std::string>();
      continue;
    }
    if (!labels.empty()) labels += ", ";
    labels += key + "=\"" + value.get<std::string>() + "\"";
  }
  return labels.empty() ? name : name + "{" + labels + "}";
}

struct Sample {
  std::string series;  // empty for a scalar
  std::string text;    // as Prometheus sent it, for the detail
  double value = 0;
  double at = 0;  // the evaluation instant, unix seconds
};

// The samples of an instant vector or a scalar. Throws json::exception when the body does
// not have the shape Prometheus documents; returns an error for a result type a threshold
// cannot be applied to.
StatusOr<std::vector<Sample>> ReadSamples(const json& data) {
  const std::string& type = data.at("resultType").get_ref<const std::string&>();
  const json& result = data.at("result");
  std::vector<Sample> samples;
  auto add = [&samples](std::string series, const json& pair) -> Status {
    Sample sample{std::move(series), pair.at(1).get<std::string>(), 0, pair.at(0).get<double>()};
    if (!ParseSampleValue(sample.text, &sample.value)) {
      return InvalidArgument("prometheus returned a value that is not a number: \"" + sample.text +
                             "\"");
    }
    samples.push_back(std::move(sample));
    return Status::Ok();
  };
  if (type == "scalar") {
    LOCKSTEP_RETURN_IF_ERROR(add("", result));
  } else if (type == "vector") {
    for (const json& element : result) {
      LOCKSTEP_RETURN_IF_ERROR(add(SeriesName(element.at("metric")), element.at("value")));
    }
  } else {
    // A matrix (from `metric[5m]`) holds many samples per series; which one to compare would
    // be a guess. The user should aggregate it, e.g. with max_over_time().
    return InvalidArgument("query returned a " + type +
                           "; a gate needs an instant vector or a scalar");
  }
  return samples;
}

bool Violates(const MetricGate& gate, double v) {
  return (gate.has_max() && v > gate.max()) || (gate.has_min() && v < gate.min());
}

// How far inside the thresholds `v` is (negative: outside). The worst sample is the one with
// the smallest margin: furthest past a threshold, or, when all pass, closest to one.
double Margin(const MetricGate& gate, double v) {
  double margin = std::numeric_limits<double>::infinity();
  if (gate.has_max()) margin = std::min(margin, gate.max() - v);
  if (gate.has_min()) margin = std::min(margin, v - gate.min());
  return margin;
}

// "0.031 > max 0.01", "0.95 >= min 0.9", "0.5 >= min 0.1 and <= max 0.9".
std::string Comparison(const MetricGate& gate, double v) {
  const std::string max = FormatNumber(gate.max());
  const std::string min = FormatNumber(gate.min());
  if (gate.has_max() && v > gate.max()) return "> max " + max;
  if (gate.has_min() && v < gate.min()) return "< min " + min;
  if (gate.has_max() && gate.has_min()) return ">= min " + min + " and <= max " + max;
  return gate.has_max() ? "<= max " + max : ">= min " + min;
}

}  // namespace

std::string ExpandWindow(std::string query, int64_t since_ms, int64_t min_window_ms,
                         int64_t now_ms) {
  if (since_ms <= 0) return query;
  const int64_t window_ms = std::max<int64_t>(now_ms - since_ms, min_window_ms);
  const std::string window = std::to_string(std::max<int64_t>(1, window_ms / 1000)) + "s";
  for (size_t pos; (pos = query.find("{window}")) != std::string::npos;) {
    query.replace(pos, 8, window);
  }
  return query;
}

namespace {

class Evaluation {
 public:
  explicit Evaluation(const MetricGate& gate) : gate_(gate) { verdict_.set_gate(gate.name()); }

  GateVerdict Run() {
    const Status valid = Validate();
    if (!valid.ok()) return Inconclusive(valid.message());
    const auto timeout =
        gate_.timeout_ms() > 0 ? std::chrono::milliseconds(gate_.timeout_ms()) : kDefaultTimeout;
    CurlGlobalInit();
    const int64_t since = gate_.evidence_since_ms();
    const std::string query = ExpandWindow(gate_.query(), since, gate_.min_window_ms(),
                                           std::chrono::duration_cast<std::chrono::milliseconds>(
                                               std::chrono::system_clock::now().time_since_epoch())
                                               .count());
    StatusOr<HttpResponse> response = QueryPrometheus(BaseUrl(), query, timeout);
    if (!response.ok()) return Inconclusive(response.status().message());
    try {
      GateVerdict verdict = Judge(*response);
      if (since > 0 && verdict.verdict() != GateVerdict::INCONCLUSIVE) {
        // A verdict from samples older than the switch judges the previous release.
        auto fresh = ScrapedEverythingSince(BaseUrl(), since, timeout);
        if (!fresh.ok()) return Inconclusive(fresh.status().message());
        if (!*fresh) {
          return Inconclusive(
              "no sample scraped since the wave switched yet (would be: " + verdict.detail() + ")");
        }
      }
      return verdict;
    } catch (const json::exception& e) {
      return Inconclusive(
          "prometheus " + BaseUrl() +
          " answered with something other than its query API's JSON: " + JsonError(e));
    }
  }

 private:
  Status Validate() const {
    const std::string& url = gate_.prometheus();
    if (url.rfind("http://", 0) != 0 && url.rfind("https://", 0) != 0) {
      return InvalidArgument("prometheus URL must start with http:// or https://: '" + url + "'");
    }
    if (gate_.query().empty()) return InvalidArgument("gate has an empty query");
    // Without a threshold nothing can fail, and a gate that cannot fail must not pass.
    if (!gate_.has_max() && !gate_.has_min()) {
      return InvalidArgument("gate has neither a max nor a min");
    }
    // Every comparison with NaN is false, so a NaN threshold would pass every value.
    if ((gate_.has_max() && !std::isfinite(gate_.max())) ||
        (gate_.has_min() && !std::isfinite(gate_.min()))) {
      return InvalidArgument("gate threshold is not a finite number");
    }
    return Status::Ok();
  }

  // Trailing slashes are dropped so that "http://prom:9090/" works like "http://prom:9090".
  std::string BaseUrl() const {
    std::string base = gate_.prometheus();
    while (base.size() > 1 && base.back() == '/') base.pop_back();
    return base;
  }

  GateVerdict Judge(const HttpResponse& response) {
    if (response.status < 200 || response.status > 299) {
      // Prometheus explains 400 (bad query), 422 (evaluation failed) and 503 (timed out) in
      // its JSON error field; a proxy in front of it may answer with anything.
      std::string why;
      const json error = json::parse(response.body, nullptr, /*allow_exceptions=*/false);
      // Prometheus's own error (about the query) is passed on; any other body (a proxy's
      // page) is not: it could say anything, and only verdicts cross the region's border.
      if (error.is_object() && error.contains("error") && error["error"].is_string()) {
        why = error["error"].get<std::string>();
      }
      return Inconclusive("prometheus returned HTTP " + std::to_string(response.status) +
                          (why.empty() ? "" : ": " + why));
    }
    const json body = json::parse(response.body);
    if (body.at("status").get_ref<const std::string&>() != "success") {
      return Inconclusive("prometheus query failed: " + body.value("errorType", "") + ": " +
                          body.value("error", ""));
    }
    StatusOr<std::vector<Sample>> samples = ReadSamples(body.at("data"));
    if (!samples.ok()) return Inconclusive(samples.status().message());
    return Compare(*samples);
  }

  GateVerdict Compare(const std::vector<Sample>& samples) {
    if (samples.empty()) return Inconclusive("no data for query \"" + gate_.query() + "\"");
    // Every sample of an instant query carries the same evaluation instant.
    verdict_.set_evaluated_at_ms(std::llround(samples.front().at * 1000));
    const Sample* worst = nullptr;
    const Sample* not_finite = nullptr;
    for (const Sample& sample : samples) {
      if (!std::isfinite(sample.value)) {
        if (not_finite == nullptr) not_finite = &sample;
        continue;
      }
      if (worst == nullptr || Margin(gate_, sample.value) < Margin(gate_, worst->value)) {
        worst = &sample;
      }
    }
    // A finite violation is reported even when other series are NaN: it is certain, and it
    // names the series to look at.
    const bool violated = worst != nullptr && Violates(gate_, worst->value);
    if (not_finite != nullptr && !violated) {
      if (!not_finite->series.empty()) {
        spdlog::info("gate {}: {} for {}", gate_.name(), not_finite->text, not_finite->series);
      }
      return Inconclusive("query \"" + gate_.query() + "\" returned " + not_finite->text);
    }
    // The verdict and its number cross the region's border; the series' labels (hosts,
    // instances, whatever the metrics carry) stay in this host's log.
    if (!worst->series.empty()) {
      spdlog::info("gate {}: worst series {} = {}", gate_.name(), worst->series,
                   FormatNumber(worst->value));
    }
    std::string detail = FormatNumber(worst->value) + " " + Comparison(gate_, worst->value);
    if (samples.size() > 1) {
      detail += " (worst of " + std::to_string(samples.size()) + " series)";
    }
    return Finish(violated ? GateVerdict::FAIL : GateVerdict::PASS, worst->value, detail);
  }

  GateVerdict Inconclusive(const std::string& detail) {
    return Finish(GateVerdict::INCONCLUSIVE, 0, detail);
  }

  GateVerdict Finish(GateVerdict::Verdict verdict, double value, const std::string& detail) {
    verdict_.set_verdict(verdict);
    verdict_.set_value(value);
    verdict_.set_detail(OneLine(detail));
    return verdict_;
  }

  const MetricGate& gate_;
  GateVerdict verdict_;
};

}  // namespace

GateVerdict EvaluateMetricGate(const MetricGate& gate) {
  try {
    return Evaluation(gate).Run();
  } catch (const std::exception& e) {
    // Only std::bad_alloc and its kin can get here; the contract is still "never throws".
    GateVerdict verdict;
    verdict.set_gate(gate.name());
    verdict.set_verdict(GateVerdict::INCONCLUSIVE);
    verdict.set_detail(OneLine(std::string("evaluating the gate failed: ") + e.what()));
    return verdict;
  }
}

}  // namespace lockstep::agent
