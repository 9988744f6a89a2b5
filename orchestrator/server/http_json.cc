#include "orchestrator/server/http_json.h"

#include <charconv>
#include <cstdlib>

#include "common/untrusted.h"

namespace lockstep {

using nlohmann::json;

void SendJson(httplib::Response& res, int status, const json& body) {
  res.status = status;
  res.set_content(body.dump() + "\n", "application/json");
}

void SendError(httplib::Response& res, int status, const std::string& message) {
  SendJson(res, status, json{{"error", message}});
}

void SendStatus(httplib::Response& res, const Status& st) {
  SendError(res, HttpStatusOf(st.code()), st.message());
}

StatusOr<json> ParseObject(const std::string& body, const std::set<std::string>& allowed) {
  if (body.find_first_not_of(" \t\r\n") == std::string::npos) return json::object();
  json j;
  try {
    j = json::parse(body);
  } catch (const json::exception& e) {
    return InvalidArgument(std::string("malformed JSON: ") + e.what());
  }
  if (!j.is_object()) return InvalidArgument("the JSON body must be an object");
  for (const auto& [key, value] : j.items()) {
    if (!allowed.count(key)) return InvalidArgument("unknown key \"" + key + "\"");
  }
  return j;
}

StatusOr<std::string> StringField(const json& j, const std::string& key) {
  auto it = j.find(key);
  if (it == j.end() || it->is_null()) return std::string();
  if (!it->is_string()) return InvalidArgument("field \"" + key + "\" must be a string");
  return it->get<std::string>();
}

StatusOr<int> LimitParam(const httplib::Request& req) {
  if (!req.has_param("limit")) return 0;
  const std::string v = req.get_param_value("limit");
  char* end = nullptr;
  long n = std::strtol(v.c_str(), &end, 10);
  if (v.empty() || *end != '\0' || n < 0 || n > 100000) {
    return InvalidArgument("limit must be an integer in 0..100000, got \"" + v + "\"");
  }
  return static_cast<int>(n);
}

StatusOr<int64_t> IntParam(const httplib::Request& req, const std::string& name, int64_t min,
                           int64_t max) {
  if (!req.has_param(name)) return int64_t{0};
  const std::string v = req.get_param_value(name);
  int64_t n = 0;
  auto [end, ec] = std::from_chars(v.data(), v.data() + v.size(), n);
  if (v.empty() || ec != std::errc() || end != v.data() + v.size() || n < min || n > max) {
    return InvalidArgument(name + " must be a whole number in " + std::to_string(min) + ".." +
                           std::to_string(max) + ", got \"" + LogSafe(v, 40) + "\"");
  }
  return n;
}

}  // namespace lockstep
