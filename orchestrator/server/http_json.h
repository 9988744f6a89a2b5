// The HTTP API's JSON plumbing, shared by its files (routes, event streams, metrics): how an
// answer or an error is written, and how a request body and query parameters are read.
//
// Errors are always JSON {"error": "<message>"} with the status HttpStatusOf gives the
// Status code. Bodies are read strictly: malformed JSON, a non-object, an unknown key or a
// field of the wrong type is kInvalidArgument naming what was wrong.
//
// Pure functions; any thread. Only the HTTP server's own files include this (it pulls in
// httplib).
#pragma once

#include <httplib.h>

#include <nlohmann/json.hpp>
#include <set>
#include <string>

#include "common/status.h"

namespace lockstep {

// A successful API answer.
struct Reply {
  int status = 200;
  nlohmann::json body;
};

void SendJson(httplib::Response& res, int status, const nlohmann::json& body);
void SendError(httplib::Response& res, int status, const std::string& message);
void SendStatus(httplib::Response& res, const Status& st);

// The request body as a JSON object with only `allowed` keys. An empty body is {} (for
// endpoints whose body is optional).
StatusOr<nlohmann::json> ParseObject(const std::string& body, const std::set<std::string>& allowed);

// A string field: "" if absent or null; kInvalidArgument if present but not a string.
StatusOr<std::string> StringField(const nlohmann::json& j, const std::string& key);

// ?limit=n in 0..100000; 0 (the store's default) if absent.
StatusOr<int> LimitParam(const httplib::Request& req);
// The query parameter `name` as a whole number in [min, max]; 0 when absent. A bad value is
// kInvalidArgument naming the parameter.
StatusOr<int64_t> IntParam(const httplib::Request& req, const std::string& name, int64_t min,
                           int64_t max);

}  // namespace lockstep
