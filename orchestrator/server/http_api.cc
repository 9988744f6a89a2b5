#include "orchestrator/server/http_api.h"

#include <httplib.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <atomic>
#include <cctype>
#include <cerrno>
#include <climits>
#include <condition_variable>
#include <cstdlib>
#include <deque>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <mutex>
#include <nlohmann/json.hpp>
#include <set>
#include <sstream>
#include <thread>
#include <vector>

#include "common/duration.h"
#include "common/http_backlog.h"
#include "common/json_views.h"
#include "common/sha256.h"
#include "common/untrusted.h"
#include "orchestrator/auth/authenticator.h"
#include "orchestrator/server/guarded_http_server.h"
#include "orchestrator/server/hub.h"
#include "orchestrator/server/static_files.h"
#include "orchestrator/server/views.h"
#include "orchestrator/store/store.h"
#include "orchestrator/webhook/github.h"
#include "orchestrator/webhook/github_trigger.h"

namespace lockstep {
namespace {

using nlohmann::json;
namespace fs = std::filesystem;

// An event stream that falls this far behind is closed; the browser's EventSource reconnects
// and reloads, which is cheaper than buffering without bound for a stalled client.
constexpr size_t kMaxStreamQueue = 256;
constexpr auto kKeepaliveInterval = std::chrono::seconds(15);
// A body up to this many times the limit is read (and dropped) before the 413; see Listen.
constexpr unsigned long long kDrainFactor = 64;
// Releases counted per pipeline for /metrics.

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

// A successful API answer.
struct Reply {
  int status = 200;
  json body;
};

// The request body as a JSON object with only `allowed` keys. An empty body is {} (for
// endpoints whose body is optional). Malformed JSON, a non-object or an unknown key is
// kInvalidArgument naming what was wrong.
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

// A string field: "" if absent; kInvalidArgument if present but not a string.
StatusOr<std::string> StringField(const json& j, const std::string& key) {
  auto it = j.find(key);
  if (it == j.end() || it->is_null()) return std::string();
  if (!it->is_string()) return InvalidArgument("field \"" + key + "\" must be a string");
  return it->get<std::string>();
}

// ?limit=n; 0 (the store's default) if absent.
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

std::string EscapeLabel(const std::string& v) {
  std::string out;
  for (char c : v) {
    if (c == '\\' || c == '"') out += '\\';
    if (c == '\n') {
      out += "\\n";
      continue;
    }
    out += c;
  }
  return out;
}

// A Prometheus histogram kept in memory.
struct Histogram {
  std::vector<double> bounds = {10, 30, 60, 120, 300, 600, 1200, 1800, 3600, 7200};
  std::vector<uint64_t> buckets = std::vector<uint64_t>(bounds.size(), 0);
  double sum = 0;
  uint64_t count = 0;

  void Observe(double v) {
    for (size_t i = 0; i < bounds.size(); ++i) {
      if (v <= bounds[i]) ++buckets[i];
    }
    sum += v;
    ++count;
  }
  void Write(std::ostringstream& out, const std::string& name) const {
    for (size_t i = 0; i < bounds.size(); ++i) {
      out << name << "_bucket{le=\"" << bounds[i] << "\"} " << buckets[i] << "\n";
    }
    out << name << "_bucket{le=\"+Inf\"} " << count << "\n";
    out << name << "_sum " << sum << "\n";
    out << name << "_count " << count << "\n";
  }
};

// One open /api/v1/events stream. The engine thread only appends release ids; the stream's
// own server thread loads the views, so publishing costs the engine a lock and a push.
struct Subscriber {
  std::mutex mu;
  std::condition_variable cv;
  std::deque<std::pair<std::string, int64_t>> queue;  // guarded by mu: (type, release id)
  bool closed = false;                                // guarded by mu
  std::string principal;  // the token's name; set before the stream is registered
};

class HttpApiImpl final : public HttpApi {
 public:
  HttpApiImpl(const HttpApiOptions& options, Engine* engine, Store* store, Hub* hub,
              const Authenticator* auth, const Clock* clock)
      : options_(options),
        engine_(engine),
        store_(store),
        hub_(hub),
        auth_(auth),
        clock_(clock),
        trigger_(engine->pipelines(), engine, store, clock, [hub] { hub->Kick(); }),
        server_(HttpGuardOptions{options.max_connections_per_client,
                                 std::chrono::milliseconds(options.request_timeout_ms)}) {}
  ~HttpApiImpl() override { Stop(); }

  Status Listen() {
    // Event streams hold a thread each for as long as they are open, so they get a budget of
    // their own on top of the request threads: viewers holding streams can never take the
    // threads that /healthz, the API and the webhook need.
    server_.new_task_queue = [n = options_.threads + options_.max_event_streams] {
      return new httplib::ThreadPool(static_cast<size_t>(n));
    };
    // A client must keep sending: each read waits at most 5 s, the whole request must arrive
    // within request_timeout_ms (GuardedHttpServer), a client that stops reading loses its
    // connection after 10 s, and an idle keep-alive connection is closed after 5 s.
    server_.set_read_timeout(5, 0);
    server_.set_write_timeout(10, 0);
    server_.set_keep_alive_timeout(5);
    server_.set_keep_alive_max_count(100);
    // Security headers on every response, errors included. The dashboard loads only its own
    // files; nothing may frame it; no answer is cached (API answers carry fleet state and the
    // dashboard is small).
    server_.set_default_headers({
        {"Content-Security-Policy",
         "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
         "connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; "
         "frame-ancestors 'none'"},
        {"X-Content-Type-Options", "nosniff"},
        {"X-Frame-Options", "DENY"},
        {"Referrer-Policy", "no-referrer"},
        {"Cache-Control", "no-store"},
    });
    // httplib answers 413 itself for a larger Content-Length (or chunked body), before any
    // handler runs.
    server_.set_payload_max_length(options_.max_body_bytes);
    server_.set_error_handler([this](const httplib::Request&, httplib::Response& res) {
      if (!res.body.empty()) return;
      if (res.status == 413) {
        SendError(
            res, 413,
            "request body too large (limit " + std::to_string(options_.max_body_bytes) + " bytes)");
      } else {
        SendError(res, res.status, res.status == 404 ? "not found" : "request failed");
      }
    });
    // httplib reads and discards a body over the limit, then answers 413: clients that write
    // the whole body before reading see the answer. A Content-Length far beyond the limit is
    // refused before a byte of it is read, so a client cannot tie up a thread with it.
    server_.set_pre_routing_handler([this](const httplib::Request& req, httplib::Response& res) {
      // DNS rebinding: a page on another site whose name was made to resolve to this address
      // would send its own name as Host. Only the names lockstepd is known by are answered.
      if (!HostAllowed(req.get_header_value("Host"))) {
        SendError(res, 421,
                  "Host \"" + LogSafe(req.get_header_value("Host"), 64) +
                      "\" is not a name of this lockstepd (see --http-allowed-hosts)");
        res.set_header("Connection", "close");
        return httplib::Server::HandlerResponse::Handled;
      }
      if (!req.has_header("Content-Length")) return httplib::Server::HandlerResponse::Unhandled;
      const std::string v = req.get_header_value("Content-Length");
      errno = 0;
      char* end = nullptr;
      unsigned long long n = std::strtoull(v.c_str(), &end, 10);
      if (errno == 0 && *end == '\0' && n <= kDrainFactor * options_.max_body_bytes) {
        return httplib::Server::HandlerResponse::Unhandled;
      }
      SendError(
          res, 413,
          "request body too large (limit " + std::to_string(options_.max_body_bytes) + " bytes)");
      res.set_header("Connection", "close");
      return httplib::Server::HandlerResponse::Handled;
    });
    server_.set_logger([this](const httplib::Request&, const httplib::Response& res) {
      std::lock_guard lock(metrics_mu_);
      ++requests_by_code_[res.status];
    });
    server_.set_exception_handler(
        [](const httplib::Request& req, httplib::Response& res, std::exception_ptr ep) {
          std::string what = "unknown exception";
          try {
            std::rethrow_exception(ep);
          } catch (const std::exception& e) {
            what = e.what();
          } catch (...) {
          }
          spdlog::error("HTTP {} {}: {}", req.method, req.path, what);
          SendError(res, 500, "internal error");
        });

    // Unauthenticated by design: liveness probes and Prometheus scrapers carry no token,
    // and neither endpoint reveals more than counts.
    server_.Get("/healthz", [this](const httplib::Request&, httplib::Response& res) {
      Status health = options_.health ? options_.health() : Status::Ok();
      if (!health.ok()) {
        return SendJson(res, 503, json{{"status", "unhealthy"}, {"error", health.message()}});
      }
      res.set_content("{\"status\": \"ok\"}\n", "application/json");
    });
    server_.Get("/metrics", [this](const httplib::Request&, httplib::Response& res) {
      auto text = Metrics();
      if (!text.ok()) return SendStatus(res, text.status());
      res.set_content(*text, "text/plain; version=0.0.4");
    });
    RegisterApi();
    // A revoked token stops working at once, open event streams included.
    auth_->OnRevoke([this](const std::string& token_name) {
      std::lock_guard lock(subs_mu_);
      for (auto it = subs_.begin(); it != subs_.end();) {
        if ((*it)->principal == token_name) {
          Close(**it);
          it = subs_.erase(it);
        } else {
          ++it;
        }
      }
    });
    server_.Get("/api/v1/events",
                [this](const httplib::Request& req, httplib::Response& res) { Events(req, res); });
    server_.Post("/hooks/github", [this](const httplib::Request& req, httplib::Response& res) {
      WebhookReply reply = trigger_.Handle(req.get_header_value("X-GitHub-Event"),
                                           req.get_header_value("X-Hub-Signature-256"),
                                           req.get_header_value("X-GitHub-Delivery"), req.body);
      SendJson(res, reply.http_status, reply.body);
    });
    // Registered last: handlers match in order, so no /api path can be shadowed by a file.
    server_.Get("/.*", [this](const httplib::Request& req, httplib::Response& res) {
      StaticFile(req, res);
    });
    if (!options_.web_dir.empty()) {
      char real[PATH_MAX];
      if (::realpath(options_.web_dir.c_str(), real) != nullptr && fs::is_directory(real)) {
        web_dir_real_ = real;
      } else {
        spdlog::warn("dashboard directory {} not found; / is not served", options_.web_dir);
      }
    }

    auto colon = options_.listen.rfind(':');
    if (colon == std::string::npos) {
      return InvalidArgument("--http-listen must be HOST:PORT, got " + options_.listen);
    }
    std::string host = options_.listen.substr(0, colon);
    int port = std::atoi(options_.listen.c_str() + colon + 1);
    allowed_hosts_ = options_.allowed_hosts;
    if (allowed_hosts_.empty()) allowed_hosts_ = DefaultAllowedHosts(host);
    ListenBacklog backlog(server_);
    if (port == 0) {
      port = server_.bind_to_any_port(host);
    } else if (!server_.bind_to_port(host, port)) {
      port = -1;
    }
    if (port <= 0) {
      return Unavailable("cannot listen on " + options_.listen +
                         " for HTTP (address in use or invalid)");
    }
    backlog.Widen();
    port_ = port;
    thread_ = std::thread([this] { server_.listen_after_bind(); });
    return Status::Ok();
  }

  int port() const override { return port_; }

  void Stop() override {
    stopping_ = true;
    {
      std::lock_guard lock(subs_mu_);
      for (auto& s : subs_) Close(*s);
      subs_.clear();
    }
    trigger_.Stop();
    server_.stop();
    if (thread_.joinable()) thread_.join();
  }

  void OnReleaseEvent(const Pipeline& /*pipeline*/, const ReleaseRecord& release,
                      const std::string& event, const std::string& /*detail*/) override {
    RecordDuration(release, event);
    Publish(event, release.id);
  }
  void OnReleaseChanged(int64_t release_id) override { Publish("changed", release_id); }

 private:
  using ApiHandler = std::function<StatusOr<Reply>(const httplib::Request&, const Principal& who)>;

  // Authenticates and authorises before the handler runs, so a 401 or 403 changes nothing.
  httplib::Server::Handler Api(Action action, ApiHandler handler) {
    return [this, action, handler](const httplib::Request& req, httplib::Response& res) {
      auto who = auth_->Check(req.get_header_value("Authorization"), action);
      if (!who.ok()) return SendStatus(res, who.status());
      StatusOr<Reply> reply = Internal("no reply");
      try {
        reply = handler(req, *who);
      } catch (const json::exception& e) {
        reply = InvalidArgument(std::string("bad JSON value: ") + e.what());
      }
      if (!reply.ok()) return SendStatus(res, reply.status());
      SendJson(res, reply->status, reply->body);
    };
  }

  StatusOr<Reply> ReleaseReply(int64_t id, int status = 200) {
    LOCKSTEP_ASSIGN_OR_RETURN(auto view, LoadReleaseView(*store_, *engine_, id));
    return Reply{status, ReleaseJson(view)};
  }

  StatusOr<Reply> PipelineReply(const std::string& pipeline) {
    LOCKSTEP_ASSIGN_OR_RETURN(auto view, LoadStatusView(*store_, *engine_, pipeline));
    if (view.pipelines_size() == 0) return NotFound("unknown pipeline \"" + pipeline + "\"");
    return Reply{200, PipelineStatusJson(view.pipelines(0))};
  }

  static int64_t IdOf(const httplib::Request& req) {
    return std::strtoll(req.matches[1].str().c_str(), nullptr, 10);
  }

  void RegisterApi() {
    server_.Get(
        "/api/v1/pipelines",
        Api(Action::kRead, [this](const httplib::Request&, const Principal&) -> StatusOr<Reply> {
          LOCKSTEP_ASSIGN_OR_RETURN(auto view, LoadStatusView(*store_, *engine_, ""));
          json out = json::array();
          for (const auto& p : view.pipelines()) out.push_back(PipelineStatusJson(p));
          return Reply{200, out};
        }));
    server_.Get(R"(/api/v1/pipelines/([^/]+))",
                Api(Action::kRead, [this](const httplib::Request& req, const Principal&) {
                  return PipelineReply(req.matches[1].str());
                }));
    server_.Get(
        "/api/v1/releases",
        Api(Action::kRead,
            [this](const httplib::Request& req, const Principal&) -> StatusOr<Reply> {
              LOCKSTEP_ASSIGN_OR_RETURN(auto limit, LimitParam(req));
              LOCKSTEP_ASSIGN_OR_RETURN(
                  auto list,
                  ListReleasesView(*store_, *engine_, req.get_param_value("pipeline"), limit,
                                   req.get_param_value("state"), req.get_param_value("kind")));
              json out = json::array();
              for (const auto& r : list) out.push_back(ReleaseJson(ReleaseSummary(r)));
              return Reply{200, out};
            }));
    server_.Get(R"(/api/v1/releases/(\d{1,18}))",
                Api(Action::kRead, [this](const httplib::Request& req, const Principal&) {
                  return ReleaseReply(IdOf(req));
                }));
    server_.Post(
        "/api/v1/releases",
        Api(Action::kCreateRelease,
            [this](const httplib::Request& req, const Principal& who) -> StatusOr<Reply> {
              LOCKSTEP_ASSIGN_OR_RETURN(
                  auto body, ParseObject(req.body, {"pipeline", "version", "artifact", "sha256",
                                                    "commit", "author"}));
              NewRelease nr;
              for (auto [key, field] : std::initializer_list<std::pair<const char*, std::string*>>{
                       {"pipeline", &nr.pipeline},
                       {"version", &nr.version},
                       {"artifact", &nr.artifact_url},
                       {"sha256", &nr.sha256},
                       {"commit", &nr.commit},
                       {"author", &nr.author}}) {
                LOCKSTEP_ASSIGN_OR_RETURN(auto v, StringField(body, key));
                *field = v;
              }
              LOCKSTEP_ASSIGN_OR_RETURN(auto created, engine_->CreateRelease(nr, who.name));
              hub_->Kick();
              return Reply{201, ReleaseJson(ReleaseSummary(created))};
            }));
    server_.Post(R"(/api/v1/releases/(\d{1,18})/approve)",
                 Api(Action::kApprove,
                     [this](const httplib::Request& req, const Principal& who) -> StatusOr<Reply> {
                       LOCKSTEP_RETURN_IF_ERROR(engine_->Approve(IdOf(req), who.name));
                       hub_->Kick();
                       return ReleaseReply(IdOf(req));
                     }));
    server_.Post(R"(/api/v1/releases/(\d{1,18})/abort)",
                 Api(Action::kAbort,
                     [this](const httplib::Request& req, const Principal& who) -> StatusOr<Reply> {
                       LOCKSTEP_RETURN_IF_ERROR(engine_->Abort(IdOf(req), who.name));
                       hub_->Kick();
                       return ReleaseReply(IdOf(req));
                     }));
    PipelineSwitch("pause", Action::kPause, {},
                   [this](const std::string& p, const json&, const std::string& who) {
                     return engine_->Pause(p, who);
                   });
    PipelineSwitch("resume", Action::kResume, {},
                   [this](const std::string& p, const json&, const std::string& who) {
                     return engine_->Resume(p, who);
                   });
    PipelineSwitch("freeze", Action::kFreeze, {"reason"},
                   [this](const std::string& p, const json& body, const std::string& who) {
                     LOCKSTEP_ASSIGN_OR_RETURN(auto reason, StringField(body, "reason"));
                     if (TrimSpace(reason).empty()) {
                       return InvalidArgument("freeze needs a \"reason\"");
                     }
                     return engine_->Freeze(p, reason, who);
                   });
    // Unfreezing is the same permission as freezing, as in the gRPC API.
    PipelineSwitch("unfreeze", Action::kFreeze, {},
                   [this](const std::string& p, const json&, const std::string& who) {
                     return engine_->Unfreeze(p, who);
                   });
    server_.Post(R"(/api/v1/pipelines/([^/]+)/rollback)",
                 Api(Action::kRollback,
                     [this](const httplib::Request& req, const Principal& who) -> StatusOr<Reply> {
                       LOCKSTEP_ASSIGN_OR_RETURN(auto body, ParseObject(req.body, {"to"}));
                       LOCKSTEP_ASSIGN_OR_RETURN(auto to, StringField(body, "to"));
                       LOCKSTEP_ASSIGN_OR_RETURN(
                           auto created, engine_->Rollback(req.matches[1].str(), to, who.name));
                       hub_->Kick();
                       return Reply{202, ReleaseJson(ReleaseSummary(created))};
                     }));
    // Who the token belongs to and what it may do, so the dashboard can disable actions the
    // role may not use (the server enforces them anyway).
    server_.Get(
        "/api/v1/whoami",
        Api(Action::kRead, [](const httplib::Request&, const Principal& who) -> StatusOr<Reply> {
          json allowed = json::array();
          for (Action a :
               {Action::kCreateRelease, Action::kApprove, Action::kPause, Action::kResume,
                Action::kAbort, Action::kRollback, Action::kFreeze, Action::kManageTokens}) {
            if (RoleAllows(who.role, a)) allowed.push_back(ActionName(a));
          }
          return Reply{
              200, json{{"name", who.name}, {"role", RoleName(who.role)}, {"allowed", allowed}}};
        }));
    server_.Get(
        "/api/v1/agents",
        Api(Action::kRead, [this](const httplib::Request&, const Principal&) -> StatusOr<Reply> {
          LOCKSTEP_ASSIGN_OR_RETURN(auto agents, store_->Agents());
          json out = json::array();
          for (const auto& a : agents) out.push_back(AgentJson(AgentView(a)));
          return Reply{200, out};
        }));
    server_.Get("/api/v1/audit",
                Api(Action::kRead,
                    [this](const httplib::Request& req, const Principal&) -> StatusOr<Reply> {
                      LOCKSTEP_ASSIGN_OR_RETURN(auto limit, LimitParam(req));
                      LOCKSTEP_ASSIGN_OR_RETURN(auto entries, store_->Audit(limit));
                      json out = json::array();
                      for (const auto& e : entries) out.push_back(AuditJson(AuditView(e)));
                      return Reply{200, out};
                    }));
    server_.Post(
        "/api/v1/tokens",
        Api(Action::kManageTokens,
            [this](const httplib::Request& req, const Principal& who) -> StatusOr<Reply> {
              LOCKSTEP_ASSIGN_OR_RETURN(
                  auto body, ParseObject(req.body, {"role", "name", "region", "expires_in"}));
              LOCKSTEP_ASSIGN_OR_RETURN(auto role, StringField(body, "role"));
              LOCKSTEP_ASSIGN_OR_RETURN(auto name, StringField(body, "name"));
              LOCKSTEP_ASSIGN_OR_RETURN(auto region, StringField(body, "region"));
              LOCKSTEP_ASSIGN_OR_RETURN(auto expires_in, StringField(body, "expires_in"));
              int64_t lifetime_ms = 0;
              if (!expires_in.empty()) {
                auto lifetime = ParseLifetime(expires_in);
                if (!lifetime.ok()) {
                  return InvalidArgument("expires_in: " + lifetime.status().message());
                }
                lifetime_ms = lifetime->count();
              }
              LOCKSTEP_ASSIGN_OR_RETURN(
                  auto token, auth_->CreateToken(name, role, region, who.name, lifetime_ms));
              return Reply{201, json{{"name", name}, {"role", role}, {"token", token}}};
            }));
    server_.Get("/api/v1/tokens",
                Api(Action::kManageTokens,
                    [this](const httplib::Request&, const Principal&) -> StatusOr<Reply> {
                      LOCKSTEP_ASSIGN_OR_RETURN(auto tokens, store_->ListTokens());
                      json out = json::array();
                      for (const auto& t : tokens) out.push_back(TokenJson(TokenView(t)));
                      return Reply{200, out};
                    }));
    auto revoke = Api(Action::kManageTokens,
                      [this](const httplib::Request& req, const Principal& who) -> StatusOr<Reply> {
                        std::string name = req.matches[1].str();
                        LOCKSTEP_RETURN_IF_ERROR(auth_->RevokeToken(name, who.name));
                        return Reply{200, json{{"revoked", name}}};
                      });
    server_.Post(R"(/api/v1/tokens/([^/]+)/revoke)", revoke);
    server_.Delete(R"(/api/v1/tokens/([^/]+))", revoke);
    auto remove = Api(Action::kManageTokens,
                      [this](const httplib::Request& req, const Principal& who) -> StatusOr<Reply> {
                        std::string name = req.matches[1].str();
                        LOCKSTEP_RETURN_IF_ERROR(hub_->RemoveAgent(name, who.name));
                        return Reply{200, json{{"removed", name}}};
                      });
    server_.Post(R"(/api/v1/agents/([^/]+)/remove)", remove);
    server_.Delete(R"(/api/v1/agents/([^/]+))", remove);
  }

  using SwitchFn =
      std::function<Status(const std::string& pipeline, const json& body, const std::string&)>;
  void PipelineSwitch(const std::string& verb, Action action, std::set<std::string> keys,
                      SwitchFn change) {
    server_.Post("/api/v1/pipelines/([^/]+)/" + verb,
                 Api(action,
                     [this, keys, change](const httplib::Request& req,
                                          const Principal& who) -> StatusOr<Reply> {
                       LOCKSTEP_ASSIGN_OR_RETURN(auto body, ParseObject(req.body, keys));
                       std::string pipeline = req.matches[1].str();
                       LOCKSTEP_RETURN_IF_ERROR(change(pipeline, body, who.name));
                       hub_->Kick();
                       return PipelineReply(pipeline);
                     }));
  }

  // --- /api/v1/events ---

  static void Close(Subscriber& s) {
    std::lock_guard lock(s.mu);
    s.closed = true;
    s.cv.notify_all();
  }

  // Engine thread: a lock and a push per stream, never a store read. A "changed" for a
  // release that already waits in the queue adds nothing: the stream loads the newest view
  // when it gets there.
  void Publish(const std::string& type, int64_t id) {
    std::lock_guard lock(subs_mu_);
    for (auto it = subs_.begin(); it != subs_.end();) {
      Subscriber& s = **it;
      std::unique_lock slock(s.mu);
      bool redundant = false;
      if (type == "changed") {
        for (const auto& q : s.queue) redundant = redundant || q.second == id;
      }
      if (!redundant) {
        if (s.queue.size() >= kMaxStreamQueue) {
          s.closed = true;
        } else {
          s.queue.emplace_back(type, id);
        }
        s.cv.notify_all();
      }
      bool closed = s.closed;
      slock.unlock();
      it = closed ? subs_.erase(it) : std::next(it);
    }
  }

  void Events(const httplib::Request& req, httplib::Response& res) {
    // EventSource cannot send headers, so this route alone also takes ?token=.
    std::string authorization = req.get_header_value("Authorization");
    if (authorization.empty() && req.has_param("token")) {
      authorization = "Bearer " + req.get_param_value("token");
    }
    auto who = auth_->Check(authorization, Action::kRead);
    if (!who.ok()) return SendStatus(res, who.status());
    auto sub = std::make_shared<Subscriber>();
    sub->principal = who->name;
    {
      std::lock_guard lock(subs_mu_);
      if (stopping_) return SendError(res, 503, "shutting down");
      size_t mine = 0;
      for (const auto& s : subs_) mine += s->principal == who->name ? 1 : 0;
      if (subs_.size() >= static_cast<size_t>(options_.max_event_streams)) {
        res.set_header("Retry-After", "5");
        return SendError(res, 503,
                         "too many open event streams (limit " +
                             std::to_string(options_.max_event_streams) + ")");
      }
      if (mine >= static_cast<size_t>(options_.max_event_streams_per_token)) {
        res.set_header("Retry-After", "5");
        return SendError(res, 429,
                         "token \"" + who->name + "\" already holds " + std::to_string(mine) +
                             " event streams (limit " +
                             std::to_string(options_.max_event_streams_per_token) + ")");
      }
      subs_.push_back(sub);
    }
    res.set_header("X-Accel-Buffering", "no");
    auto hello_sent = std::make_shared<bool>(false);
    res.set_chunked_content_provider(
        "text/event-stream",
        [this, sub, hello_sent](size_t, httplib::DataSink& sink) -> bool {
          auto write = [&sink](const std::string& s) { return sink.write(s.data(), s.size()); };
          if (!*hello_sent) {
            *hello_sent = true;
            return write(": connected\n\n");
          }
          std::unique_lock lock(sub->mu);
          bool ready = sub->cv.wait_for(lock, kKeepaliveInterval,
                                        [&] { return sub->closed || !sub->queue.empty(); });
          if (sub->closed) {
            lock.unlock();
            sink.done();
            return true;
          }
          if (!ready) {
            lock.unlock();
            return write(": keepalive\n\n");
          }
          auto [type, id] = sub->queue.front();
          sub->queue.pop_front();
          lock.unlock();
          auto view = LoadReleaseView(*store_, *engine_, id);
          if (!view.ok()) return true;  // nothing to show; keep the stream
          json event = {{"type", type}, {"release", ReleaseJson(*view)}};
          return write("event: release\ndata: " + event.dump() + "\n\n");
        },
        [this, sub](bool) {
          Close(*sub);
          std::lock_guard lock(subs_mu_);
          std::erase(subs_, sub);
        });
  }

  // --- static files ---

  void StaticFile(const httplib::Request& req, httplib::Response& res) {
    const std::string& path = req.path;
    if (path.rfind("/api/", 0) == 0 || path.rfind("/hooks/", 0) == 0 || web_dir_real_.empty()) {
      return SendError(res, 404, "not found");
    }
    auto file = ResolveStaticPath(web_dir_real_, path);
    if (!file) return SendError(res, 404, "not found");
    std::ifstream in(*file, std::ios::binary);
    std::stringstream ss;
    ss << in.rdbuf();
    if (!in) return SendError(res, 404, "not found");
    res.set_content(ss.str(), StaticContentType(*file));
  }

  // --- /metrics ---

  void RecordDuration(const ReleaseRecord& r, const std::string& event) {
    bool rollback_kind = r.kind == release_kind::kRollback;
    Histogram* h = nullptr;
    if (event == "succeeded") {
      h = rollback_kind ? &rollback_seconds_ : &rollout_seconds_;
    } else if (event == "rolled_back" || event == "aborted") {
      h = &rollback_seconds_;
    }
    if (!h || r.started_at <= 0) return;
    UnixMs end = r.finished_at > 0 ? r.finished_at : clock_->Now();
    std::lock_guard lock(metrics_mu_);
    h->Observe(static_cast<double>(std::max<UnixMs>(0, end - r.started_at)) / 1000.0);
  }

  StatusOr<std::string> Metrics() {
    std::ostringstream out;
    out << "# HELP lockstep_releases Releases in the store by pipeline and state.\n"
        << "# TYPE lockstep_releases gauge\n";
    std::map<std::string, uint64_t> verdicts = {{"pass", 0}, {"fail", 0}, {"inconclusive", 0}};
    for (const auto& p : engine_->pipelines()) {
      ReleaseQuery every;
      every.pipeline = p.name;
      every.limit = 0;
      LOCKSTEP_ASSIGN_OR_RETURN(auto list, store_->FindReleases(every));
      std::map<std::string, int> by_state;
      for (const auto& r : list) {
        ++by_state[r.state];
        LOCKSTEP_ASSIGN_OR_RETURN(auto counts, GateCounts(r));
        for (const auto& [v, n] : counts) verdicts[v] += n;
      }
      for (const auto& [state, n] : by_state) {
        out << "lockstep_releases{pipeline=\"" << EscapeLabel(p.name) << "\",state=\""
            << EscapeLabel(state) << "\"} " << n << "\n";
      }
    }
    LOCKSTEP_ASSIGN_OR_RETURN(auto agents, store_->Agents());
    std::map<std::string, int> connected;
    for (const auto& p : engine_->pipelines()) {
      for (const auto& region : p.regions) connected[region];
    }
    for (const auto& a : agents) connected[a.region] += a.connected ? 1 : 0;
    out << "# HELP lockstep_agents_connected Agents connected now, by region.\n"
        << "# TYPE lockstep_agents_connected gauge\n";
    for (const auto& [region, n] : connected) {
      out << "lockstep_agents_connected{region=\"" << EscapeLabel(region) << "\"} " << n << "\n";
    }
    out << "# HELP lockstep_agent_refusals_total Agent hellos refused, by reason.\n"
        << "# TYPE lockstep_agent_refusals_total counter\n";
    for (const auto& [reason, n] : hub_->RefusalCounts()) {
      out << "lockstep_agent_refusals_total{reason=\"" << EscapeLabel(reason) << "\"} " << n
          << "\n";
    }
    out << "# HELP lockstep_http_connections_refused_total HTTP connections refused because "
           "their client address had too many open.\n"
        << "# TYPE lockstep_http_connections_refused_total counter\n"
        << "lockstep_http_connections_refused_total " << server_.refused_connections() << "\n"
        << "# HELP lockstep_http_slow_requests_total HTTP requests dropped because they did not "
           "arrive within the request timeout.\n"
        << "# TYPE lockstep_http_slow_requests_total counter\n"
        << "lockstep_http_slow_requests_total " << server_.slow_requests() << "\n";
    out << "# HELP lockstep_gate_verdicts_dropped_total Gate verdicts dropped: unknown check "
           "ids or answers from an agent that was not asked.\n"
        << "# TYPE lockstep_gate_verdicts_dropped_total counter\n"
        << "lockstep_gate_verdicts_dropped_total " << engine_->gate_verdicts_dropped() << "\n";
    out << "# HELP lockstep_gate_results_total Metric gate evaluations by verdict.\n"
        << "# TYPE lockstep_gate_results_total counter\n";
    for (const auto& [v, n] : verdicts) {
      out << "lockstep_gate_results_total{verdict=\"" << EscapeLabel(v) << "\"} " << n << "\n";
    }
    std::lock_guard lock(metrics_mu_);
    out << "# HELP lockstep_rollout_duration_seconds Time from start to success of rollouts "
           "finished since this process started.\n"
        << "# TYPE lockstep_rollout_duration_seconds histogram\n";
    rollout_seconds_.Write(out, "lockstep_rollout_duration_seconds");
    out << "# HELP lockstep_rollback_duration_seconds Time from start to the end of releases "
           "rolled back or aborted, and of on-call rollbacks, since this process started.\n"
        << "# TYPE lockstep_rollback_duration_seconds histogram\n";
    rollback_seconds_.Write(out, "lockstep_rollback_duration_seconds");
    out << "# HELP lockstep_http_requests_total HTTP requests answered, by status code.\n"
        << "# TYPE lockstep_http_requests_total counter\n";
    for (const auto& [code, n] : requests_by_code_) {
      out << "lockstep_http_requests_total{code=\"" << code << "\"} " << n << "\n";
    }
    return out.str();
  }

  // Gate verdicts of a release. A final release's verdicts never change, so they are read
  // once and remembered; that keeps a scrape from rereading the whole history.
  StatusOr<std::map<std::string, uint64_t>> GateCounts(const ReleaseRecord& r) {
    {
      std::lock_guard lock(metrics_mu_);
      auto it = final_gate_counts_.find(r.id);
      if (it != final_gate_counts_.end()) return it->second;
    }
    LOCKSTEP_ASSIGN_OR_RETURN(auto results, store_->GateResults(r.id));
    std::map<std::string, uint64_t> counts;
    for (const auto& g : results) ++counts[g.verdict];
    if (release_state::IsFinal(r.state)) {
      std::lock_guard lock(metrics_mu_);
      final_gate_counts_[r.id] = counts;
    }
    return counts;
  }

  // The Host header (name or address, optional port) is one lockstepd answers to.
  bool HostAllowed(const std::string& host_header) const {
    if (allowed_hosts_.empty()) return true;
    std::string host = host_header;
    if (!host.empty() && host.front() == '[') {  // [::1]:7480
      auto close = host.find(']');
      host = close == std::string::npos ? "" : host.substr(1, close - 1);
    } else if (auto colon = host.rfind(':'); colon != std::string::npos) {
      host = host.substr(0, colon);
    }
    std::transform(host.begin(), host.end(), host.begin(),
                   [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
    for (const auto& allowed : allowed_hosts_) {
      if (allowed == "*" || allowed == host) return true;
    }
    return false;
  }

  // Without --http-allowed-hosts: a loopback listener answers only to loopback names, a
  // listener on one address to that address and loopback names, and a wildcard listener to
  // any name (it is meant to sit behind a proxy; docs/security.md).
  static std::vector<std::string> DefaultAllowedHosts(std::string listen_host) {
    if (listen_host.size() > 1 && listen_host.front() == '[') {
      listen_host = listen_host.substr(1, listen_host.size() - 2);
    }
    if (listen_host.empty() || listen_host == "0.0.0.0" || listen_host == "::") return {"*"};
    std::vector<std::string> names = {"localhost", "127.0.0.1", "::1"};
    if (std::find(names.begin(), names.end(), listen_host) == names.end()) {
      names.push_back(listen_host);
    }
    return names;
  }

  const HttpApiOptions options_;
  std::vector<std::string> allowed_hosts_;  // set by Listen; "*": any
  std::string web_dir_real_;                // realpath of options_.web_dir; empty: no dashboard
  Engine* const engine_;
  Store* const store_;
  Hub* const hub_;
  const Authenticator* const auth_;
  const Clock* const clock_;
  GithubPushTrigger trigger_;
  GuardedHttpServer server_;
  std::thread thread_;
  int port_ = 0;
  std::atomic<bool> stopping_{false};

  std::mutex subs_mu_;
  std::vector<std::shared_ptr<Subscriber>> subs_;  // guarded by subs_mu_

  std::mutex metrics_mu_;
  Histogram rollout_seconds_;                                             // guarded by metrics_mu_
  Histogram rollback_seconds_;                                            // guarded by metrics_mu_
  std::map<int, uint64_t> requests_by_code_;                              // guarded by metrics_mu_
  std::map<int64_t, std::map<std::string, uint64_t>> final_gate_counts_;  // guarded by metrics_mu_
};

}  // namespace

HttpApi::~HttpApi() = default;

StatusOr<std::unique_ptr<HttpApi>> HttpApi::Start(const HttpApiOptions& options, Engine* engine,
                                                  Store* store, Hub* hub, const Authenticator* auth,
                                                  const Clock* clock) {
  auto api = std::make_unique<HttpApiImpl>(options, engine, store, hub, auth, clock);
  LOCKSTEP_RETURN_IF_ERROR(api->Listen());
  return std::unique_ptr<HttpApi>(std::move(api));
}

}  // namespace lockstep
