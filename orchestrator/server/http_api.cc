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
#include <limits>
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
#include "orchestrator/server/event_streams.h"
#include "orchestrator/server/guarded_http_server.h"
#include "orchestrator/server/http_json.h"
#include "orchestrator/server/http_metrics.h"
#include "orchestrator/server/hub.h"
#include "orchestrator/server/operations.h"
#include "orchestrator/server/static_files.h"
#include "orchestrator/server/views.h"
#include "orchestrator/store/store.h"
#include "orchestrator/webhook/github.h"
#include "orchestrator/webhook/github_trigger.h"

namespace lockstep {
namespace {

using nlohmann::json;
namespace fs = std::filesystem;

// A body up to this many times the limit is read (and dropped) before the 413; see Listen.
constexpr unsigned long long kDrainFactor = 64;

GithubPushTriggerOptions TriggerOptions(const HttpApiOptions& options) {
  GithubPushTriggerOptions t;
  t.resume_now = !options.leadership;  // with leadership: when this process starts to lead
  return t;
}

class HttpApiImpl final : public HttpApi {
 public:
  HttpApiImpl(const HttpApiOptions& options, const Operations* ops, Engine* engine, Store* store,
              Hub* hub, const Authenticator* auth, const Clock* clock)
      : options_(options),
        ops_(ops),
        auth_(auth),
        trigger_(
            engine, store, clock, [hub] { hub->Kick(); }, TriggerOptions(options)),
        streams_(
            EventStreams::Limits{options.max_event_streams, options.max_event_streams_per_token},
            [ops](int64_t id) -> StatusOr<json> {
              // The stream was opened with a token; a view is read on its behalf as the
              // engine's reader, so a revoked token's stream is closed, not refused here.
              LOCKSTEP_ASSIGN_OR_RETURN(auto view, ops->ReleaseView(id));
              return ReleaseJson(view);
            }),
        metrics_(engine, store, hub, clock),
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
      if (options_.leadership && req.path != "/healthz" && req.path != "/metrics") {
        LeaderInfo leader = options_.leadership();
        if (!leader.self) {
          // The leader serves everything else; a standby only points at it.
          if (leader.http_url.empty()) {
            SendError(res, 503,
                      "this lockstepd is a standby and no leader is known yet; try again");
          } else {
            res.status = 307;
            res.set_header("Location", leader.http_url + req.target);
            SendError(res, 307, "this lockstepd is a standby; the leader is at " + leader.http_url);
          }
          return httplib::Server::HandlerResponse::Handled;
        }
      }
      if (!req.has_header("Content-Length")) {
        // A POST or DELETE with neither Content-Length nor chunked encoding has no body
        // (curl -X POST sends none). httplib would read such a body until the client closed
        // the connection and then answer 400 itself; saying "no body" lets the request reach
        // its route, whose role check comes first.
        if (!req.has_header("Transfer-Encoding")) {
          const_cast<httplib::Request&>(req).headers.emplace("Content-Length", "0");
        }
        return httplib::Server::HandlerResponse::Unhandled;
      }
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
      metrics_.CountResponse(res.status);
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
      if (!options_.leadership) {
        res.set_content("{\"status\": \"ok\"}\n", "application/json");
        return;
      }
      // Both roles are healthy (200); a load balancer that should reach only the leader
      // routes on "role".
      LeaderInfo leader = options_.leadership();
      SendJson(res, 200,
               json{{"status", "ok"},
                    {"role", leader.self ? "leader" : "standby"},
                    {"epoch", leader.epoch},
                    {"leader", leader.http_url}});
    });
    server_.Get("/metrics", [this](const httplib::Request&, httplib::Response& res) {
      auto text = metrics_.Render(
          HttpMetrics::ServerCounters{server_.refused_connections(), server_.slow_requests()});
      if (!text.ok()) return SendStatus(res, text.status());
      if (options_.leadership) {
        LeaderInfo leader = options_.leadership();
        *text +=
            "# HELP lockstep_leader 1 if this lockstepd leads, 0 if it stands by.\n"
            "# TYPE lockstep_leader gauge\n"
            "lockstep_leader " +
            std::string(leader.self ? "1" : "0") +
            "\n# HELP lockstep_lease_epoch The leader lease's epoch as last seen.\n"
            "# TYPE lockstep_lease_epoch gauge\n"
            "lockstep_lease_epoch " +
            std::to_string(leader.epoch) + "\n";
      }
      res.set_content(*text, "text/plain; version=0.0.4");
    });
    RegisterApi();
    // A revoked token stops working at once, open event streams included.
    auth_->OnRevoke([this](const std::string& token_name) { streams_.CloseFor(token_name); });
    server_.Get("/api/v1/events", [this](const httplib::Request& req, httplib::Response& res) {
      // EventSource cannot send headers, so this route alone also takes ?token=.
      std::string authorization = req.get_header_value("Authorization");
      if (authorization.empty() && req.has_param("token")) {
        authorization = "Bearer " + req.get_param_value("token");
      }
      auto who = ops_->WhoAmI(authorization);
      if (!who.ok()) return SendStatus(res, who.status());
      streams_.Open(who->name, res);
    });
    server_.Post("/hooks/github", [this](const httplib::Request& req, httplib::Response& res) {
      WebhookReply reply = trigger_.Handle(req.get_header_value("X-GitHub-Event"),
                                           req.get_header_value("X-Hub-Signature-256"),
                                           req.get_header_value("X-GitHub-Delivery"), req.body);
      SendJson(res, reply.http_status, reply.body);
    });
    // Registered last: handlers match in order, so no /api path can be shadowed by a file.
    server_.Get("/.*", [this](const httplib::Request& req, httplib::Response& res) {
      auto file = LoadStaticFile(web_dir_real_, req.path);
      if (!file) return SendError(res, 404, "not found");
      res.set_content(std::move(file->body), file->content_type);
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

  void StartLeading() override { trigger_.ResumeWaiting(); }

  void Stop() override {
    streams_.CloseAll();
    trigger_.Stop();
    server_.stop();
    if (thread_.joinable()) thread_.join();
  }

  void OnReleaseEvent(const Pipeline& /*pipeline*/, const ReleaseRecord& release,
                      const std::string& event, const std::string& /*detail*/) override {
    metrics_.RecordRelease(release, event);
    streams_.Publish(event, release.id);
  }
  void OnReleaseChanged(int64_t release_id) override { streams_.Publish("changed", release_id); }

 private:
  // A route's handler: the request and its Authorization header value, which the handler
  // hands to Operations (which authenticates and authorizes before anything else).
  using ApiHandler =
      std::function<StatusOr<Reply>(const httplib::Request&, const std::string& authorization)>;

  httplib::Server::Handler Api(ApiHandler handler) {
    return [handler](const httplib::Request& req, httplib::Response& res) {
      StatusOr<Reply> reply = Internal("no reply");
      try {
        reply = handler(req, req.get_header_value("Authorization"));
      } catch (const json::exception& e) {
        reply = InvalidArgument(std::string("bad JSON value: ") + e.what());
      }
      if (!reply.ok()) return SendStatus(res, reply.status());
      SendJson(res, reply->status, reply->body);
    };
  }

  static int64_t IdOf(const httplib::Request& req) {
    return std::strtoll(req.matches[1].str().c_str(), nullptr, 10);
  }

  // The request body, parsed only once the caller may make the request: a caller without the
  // role learns nothing from a malformed body, and nothing is parsed on its behalf.
  StatusOr<json> Body(const httplib::Request& req, const std::string& authorization, Action action,
                      const std::set<std::string>& keys) const {
    LOCKSTEP_RETURN_IF_ERROR(auth_->Check(authorization, action).status());
    return ParseObject(req.body, keys);
  }

  // Bounds of time and id query parameters (year 9999 in unix ms; SQLite's integer ids).
  static constexpr int64_t kMaxMs = 253402300799999;
  static constexpr int64_t kMaxId = std::numeric_limits<int64_t>::max();

  void RegisterApi() {
    server_.Get("/api/v1/pipelines",
                Api([this](const httplib::Request&, const std::string& a) -> StatusOr<Reply> {
                  LOCKSTEP_ASSIGN_OR_RETURN(auto view, ops_->Status(a, ""));
                  json out = json::array();
                  for (const auto& p : view.pipelines()) out.push_back(PipelineStatusJson(p));
                  return Reply{200, out};
                }));
    server_.Get(R"(/api/v1/pipelines/([^/]+))",
                Api([this](const httplib::Request& req, const std::string& a) -> StatusOr<Reply> {
                  const std::string pipeline = req.matches[1].str();
                  LOCKSTEP_ASSIGN_OR_RETURN(auto view, ops_->Status(a, pipeline));
                  if (view.pipelines_size() == 0) {
                    return NotFound("unknown pipeline \"" + pipeline + "\"");
                  }
                  return Reply{200, PipelineStatusJson(view.pipelines(0))};
                }));
    server_.Get("/api/v1/releases",
                Api([this](const httplib::Request& req, const std::string& a) -> StatusOr<Reply> {
                  LOCKSTEP_ASSIGN_OR_RETURN(auto limit, LimitParam(req));
                  ReleaseFilter filter;
                  filter.version = req.get_param_value("version");
                  filter.actor = req.get_param_value("actor");
                  LOCKSTEP_ASSIGN_OR_RETURN(filter.since, IntParam(req, "since_ms", 0, kMaxMs));
                  LOCKSTEP_ASSIGN_OR_RETURN(filter.until, IntParam(req, "until_ms", 0, kMaxMs));
                  LOCKSTEP_ASSIGN_OR_RETURN(filter.before_id,
                                            IntParam(req, "before_id", 0, kMaxId));
                  LOCKSTEP_ASSIGN_OR_RETURN(
                      auto list, ops_->ListReleases(a, req.get_param_value("pipeline"), limit,
                                                    req.get_param_value("state"),
                                                    req.get_param_value("kind"), filter));
                  json out = json::array();
                  for (const auto& r : list) out.push_back(ReleaseJson(ReleaseSummary(r)));
                  return Reply{200, out};
                }));
    server_.Get(R"(/api/v1/releases/(\d{1,18}))",
                Api([this](const httplib::Request& req, const std::string& a) -> StatusOr<Reply> {
                  LOCKSTEP_ASSIGN_OR_RETURN(auto view, ops_->GetRelease(a, IdOf(req)));
                  return Reply{200, ReleaseJson(view)};
                }));
    server_.Post(
        "/api/v1/releases",
        Api([this](const httplib::Request& req, const std::string& a) -> StatusOr<Reply> {
          LOCKSTEP_ASSIGN_OR_RETURN(auto body, Body(req, a, Action::kCreateRelease,
                                                    {"pipeline", "version", "artifact", "sha256",
                                                     "commit", "author", "request_id"}));
          NewRelease nr;
          for (auto [key, field] : std::initializer_list<std::pair<const char*, std::string*>>{
                   {"pipeline", &nr.pipeline},
                   {"version", &nr.version},
                   {"artifact", &nr.artifact_url},
                   {"sha256", &nr.sha256},
                   {"commit", &nr.commit},
                   {"author", &nr.author},
                   // Idempotent creation: the same id again answers with the same release.
                   {"request_id", &nr.request_id}}) {
            LOCKSTEP_ASSIGN_OR_RETURN(auto v, StringField(body, key));
            *field = v;
          }
          LOCKSTEP_ASSIGN_OR_RETURN(auto created, ops_->CreateRelease(a, nr));
          return Reply{201, ReleaseJson(ReleaseSummary(created))};
        }));
    server_.Post(R"(/api/v1/releases/(\d{1,18})/approve)",
                 Api([this](const httplib::Request& req, const std::string& a) -> StatusOr<Reply> {
                   LOCKSTEP_ASSIGN_OR_RETURN(auto body,
                                             Body(req, a, Action::kApprove, {"comment"}));
                   LOCKSTEP_ASSIGN_OR_RETURN(auto comment, StringField(body, "comment"));
                   LOCKSTEP_ASSIGN_OR_RETURN(auto view, ops_->Approve(a, IdOf(req), comment));
                   return Reply{200, ReleaseJson(view)};
                 }));
    server_.Post(R"(/api/v1/releases/(\d{1,18})/abort)",
                 Api([this](const httplib::Request& req, const std::string& a) -> StatusOr<Reply> {
                   LOCKSTEP_ASSIGN_OR_RETURN(auto view, ops_->Abort(a, IdOf(req)));
                   return Reply{200, ReleaseJson(view)};
                 }));
    PipelineSwitch("pause", Action::kPause, {},
                   [this](const std::string& a, const std::string& p, const json&) {
                     return ops_->Pause(a, p);
                   });
    PipelineSwitch("resume", Action::kResume, {},
                   [this](const std::string& a, const std::string& p, const json&) {
                     return ops_->Resume(a, p);
                   });
    PipelineSwitch("freeze", Action::kFreeze, {"reason"},
                   [this](const std::string& a, const std::string& p,
                          const json& body) -> StatusOr<lockstep::v1::PipelineStatus> {
                     LOCKSTEP_ASSIGN_OR_RETURN(auto reason, StringField(body, "reason"));
                     return ops_->Freeze(a, p, reason);
                   });
    PipelineSwitch("unfreeze", Action::kFreeze, {},
                   [this](const std::string& a, const std::string& p, const json&) {
                     return ops_->Unfreeze(a, p);
                   });
    server_.Post(R"(/api/v1/pipelines/([^/]+)/rollback)",
                 Api([this](const httplib::Request& req, const std::string& a) -> StatusOr<Reply> {
                   LOCKSTEP_ASSIGN_OR_RETURN(auto body, Body(req, a, Action::kRollback, {"to"}));
                   LOCKSTEP_ASSIGN_OR_RETURN(auto to, StringField(body, "to"));
                   LOCKSTEP_ASSIGN_OR_RETURN(auto created,
                                             ops_->Rollback(a, req.matches[1].str(), to));
                   return Reply{202, ReleaseJson(ReleaseSummary(created))};
                 }));
    // Who the token belongs to and what it may do, so the dashboard can disable what the
    // caller may not do (the server enforces it anyway).
    server_.Get("/api/v1/whoami",
                Api([this](const httplib::Request&, const std::string& a) -> StatusOr<Reply> {
                  LOCKSTEP_ASSIGN_OR_RETURN(auto who, ops_->WhoAmI(a));
                  return Reply{200, json{{"name", who.name},
                                         {"role", RoleName(who.role)},
                                         {"allowed", AllowedOperations(who.role)}}};
                }));
    server_.Get("/api/v1/agents",
                Api([this](const httplib::Request& req, const std::string& a) -> StatusOr<Reply> {
                  LOCKSTEP_ASSIGN_OR_RETURN(auto agents,
                                            ops_->ListAgents(a, req.get_param_value("region")));
                  json out = json::array();
                  for (const auto& agent : agents) out.push_back(AgentJson(AgentView(agent)));
                  return Reply{200, out};
                }));
    server_.Get("/api/v1/audit",
                Api([this](const httplib::Request& req, const std::string& a) -> StatusOr<Reply> {
                  AuditQuery q;
                  LOCKSTEP_ASSIGN_OR_RETURN(q.limit, LimitParam(req));
                  q.pipeline = req.get_param_value("pipeline");
                  q.actor = req.get_param_value("actor");
                  q.action_prefix = req.get_param_value("action");
                  q.text = req.get_param_value("q");
                  LOCKSTEP_ASSIGN_OR_RETURN(q.since, IntParam(req, "since_ms", 0, kMaxMs));
                  LOCKSTEP_ASSIGN_OR_RETURN(q.until, IntParam(req, "until_ms", 0, kMaxMs));
                  LOCKSTEP_ASSIGN_OR_RETURN(q.before_id, IntParam(req, "before_id", 0, kMaxId));
                  if (q.text.size() > 200) return InvalidArgument("q: longer than 200 characters");
                  LOCKSTEP_ASSIGN_OR_RETURN(auto entries, ops_->FindAudit(a, q));
                  json out = json::array();
                  for (const auto& e : entries) out.push_back(AuditJson(AuditView(e)));
                  return Reply{200, out};
                }));
    server_.Post(
        "/api/v1/tokens",
        Api([this](const httplib::Request& req, const std::string& a) -> StatusOr<Reply> {
          LOCKSTEP_ASSIGN_OR_RETURN(auto body, Body(req, a, Action::kManageTokens,
                                                    {"role", "name", "region", "expires_in"}));
          LOCKSTEP_ASSIGN_OR_RETURN(auto role, StringField(body, "role"));
          LOCKSTEP_ASSIGN_OR_RETURN(auto name, StringField(body, "name"));
          LOCKSTEP_ASSIGN_OR_RETURN(auto region, StringField(body, "region"));
          LOCKSTEP_ASSIGN_OR_RETURN(auto expires_in, StringField(body, "expires_in"));
          int64_t lifetime_ms = 0;
          if (!expires_in.empty()) {
            auto lifetime = ParseLifetime(expires_in);
            if (!lifetime.ok())
              return InvalidArgument("expires_in: " + lifetime.status().message());
            lifetime_ms = lifetime->count();
          }
          LOCKSTEP_ASSIGN_OR_RETURN(auto created,
                                    ops_->CreateToken(a, name, role, region, lifetime_ms));
          return Reply{
              201, json{{"name", created.name}, {"role", created.role}, {"token", created.token}}};
        }));
    server_.Get("/api/v1/tokens",
                Api([this](const httplib::Request&, const std::string& a) -> StatusOr<Reply> {
                  LOCKSTEP_ASSIGN_OR_RETURN(auto tokens, ops_->ListTokens(a));
                  json out = json::array();
                  for (const auto& t : tokens) out.push_back(TokenJson(TokenView(t)));
                  return Reply{200, out};
                }));
    auto revoke = Api([this](const httplib::Request& req, const std::string& a) -> StatusOr<Reply> {
      std::string name = req.matches[1].str();
      LOCKSTEP_RETURN_IF_ERROR(ops_->RevokeToken(a, name));
      return Reply{200, json{{"revoked", name}}};
    });
    server_.Post(R"(/api/v1/tokens/([^/]+)/revoke)", revoke);
    server_.Delete(R"(/api/v1/tokens/([^/]+))", revoke);
    auto remove = Api([this](const httplib::Request& req, const std::string& a) -> StatusOr<Reply> {
      std::string name = req.matches[1].str();
      LOCKSTEP_RETURN_IF_ERROR(ops_->RemoveAgent(a, name));
      return Reply{200, json{{"removed", name}}};
    });
    server_.Post(R"(/api/v1/agents/([^/]+)/remove)", remove);
    server_.Delete(R"(/api/v1/agents/([^/]+))", remove);
  }

  using SwitchFn = std::function<StatusOr<lockstep::v1::PipelineStatus>(
      const std::string& authorization, const std::string& pipeline, const json& body)>;
  void PipelineSwitch(const std::string& verb, Action action, std::set<std::string> keys,
                      SwitchFn change) {
    server_.Post("/api/v1/pipelines/([^/]+)/" + verb,
                 Api([this, action, keys, change](const httplib::Request& req,
                                                  const std::string& a) -> StatusOr<Reply> {
                   LOCKSTEP_ASSIGN_OR_RETURN(auto body, Body(req, a, action, keys));
                   LOCKSTEP_ASSIGN_OR_RETURN(auto view, change(a, req.matches[1].str(), body));
                   return Reply{200, PipelineStatusJson(view)};
                 }));
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
  const Operations* const ops_;
  const Authenticator* const auth_;
  GithubPushTrigger trigger_;
  EventStreams streams_;
  HttpMetrics metrics_;
  GuardedHttpServer server_;
  std::thread thread_;
  int port_ = 0;
};

}  // namespace

HttpApi::~HttpApi() = default;

StatusOr<std::unique_ptr<HttpApi>> HttpApi::Start(const HttpApiOptions& options,
                                                  const Operations* ops, Engine* engine,
                                                  Store* store, Hub* hub, const Authenticator* auth,
                                                  const Clock* clock) {
  auto api = std::make_unique<HttpApiImpl>(options, ops, engine, store, hub, auth, clock);
  LOCKSTEP_RETURN_IF_ERROR(api->Listen());
  return std::unique_ptr<HttpApi>(std::move(api));
}

}  // namespace lockstep
