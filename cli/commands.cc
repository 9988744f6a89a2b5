#include "cli/commands.h"

#include <grpcpp/grpcpp.h>
#include <unistd.h>

#include <cstdio>
#include <iostream>
#include <nlohmann/json.hpp>
#include <thread>

#include "common/clock.h"
#include "common/duration.h"
#include "proto/lockstep.grpc.pb.h"

namespace lockstep::cli {
namespace {

namespace v1 = lockstep::v1;
using nlohmann::json;

constexpr int kOk = 0;
constexpr int kNotReached = 1;
constexpr int kUsage = 2;
constexpr int kServerError = 3;

int Error(int code, const std::string& msg) {
  std::fprintf(stderr, "lockstep: %s\n", msg.c_str());
  return code;
}

int RpcError(const Context& ctx, const grpc::Status& st) {
  if (st.error_code() == grpc::StatusCode::UNAVAILABLE ||
      st.error_code() == grpc::StatusCode::DEADLINE_EXCEEDED) {
    return Error(kServerError,
                 "cannot reach lockstepd at " + ctx.server + ": " + st.error_message());
  }
  return Error(kServerError, st.error_message());
}

class Client {
 public:
  explicit Client(const Context& ctx)
      : ctx_(ctx),
        stub_(v1::ControlService::NewStub(
            grpc::CreateChannel(ctx.server, grpc::InsecureChannelCredentials()))) {}

  template <typename Req, typename Resp, typename Fn>
  grpc::Status Call(Fn fn, const Req& req, Resp* resp) {
    grpc::ClientContext c;
    c.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(15));
    if (!ctx_.token.empty()) c.AddMetadata("authorization", "Bearer " + ctx_.token);
    return ((*stub_).*fn)(&c, req, resp);
  }

  v1::ControlService::Stub& stub() { return *stub_; }

 private:
  const Context& ctx_;
  std::unique_ptr<v1::ControlService::Stub> stub_;
};

std::string Time(int64_t ms) { return ms > 0 ? FormatUnixMs(ms) : ""; }

json ReleaseJson(const v1::Release& r) {
  json j = {{"id", r.id()},
            {"pipeline", r.pipeline()},
            {"version", r.version()},
            {"artifact", r.artifact_url()},
            {"sha256", r.sha256()},
            {"commit", r.commit()},
            {"author", r.author()},
            {"state", r.state()},
            {"reason", r.reason()},
            {"current_wave", r.current_wave()},
            {"previous_version", r.previous_version()},
            {"created_at", Time(r.created_at_ms())},
            {"started_at", Time(r.started_at_ms())},
            {"finished_at", Time(r.finished_at_ms())},
            {"created_at_ms", r.created_at_ms()},
            {"started_at_ms", r.started_at_ms()},
            {"finished_at_ms", r.finished_at_ms()}};
  if (r.waves_size() > 0 || r.hosts_size() > 0) {
    j["waves"] = json::array();
    for (const auto& w : r.waves()) {
      json jw = {{"index", w.index()},
                 {"name", w.name()},
                 {"state", w.state()},
                 {"bake_ms", w.bake_ms()},
                 {"started_at_ms", w.started_at_ms()},
                 {"finished_at_ms", w.finished_at_ms()},
                 {"regions", json::array()}};
      for (const auto& rp : w.regions()) {
        jw["regions"].push_back({{"region", rp.region()},
                                 {"selected", rp.selected()},
                                 {"done", rp.done()},
                                 {"failed", rp.failed()}});
      }
      j["waves"].push_back(std::move(jw));
    }
    j["hosts"] = json::array();
    for (const auto& h : r.hosts()) {
      j["hosts"].push_back({{"agent", h.agent()},
                            {"region", h.region()},
                            {"wave", h.wave()},
                            {"state", h.state()},
                            {"detail", h.detail()},
                            {"started_at_ms", h.started_at_ms()},
                            {"finished_at_ms", h.finished_at_ms()}});
    }
  }
  return j;
}

json AgentJson(const v1::Agent& a) {
  json versions = json::array();
  for (const auto& v : a.versions_on_disk()) versions.push_back(v);
  return {{"name", a.name()},
          {"region", a.region()},
          {"pipeline", a.pipeline()},
          {"current_version", a.current_version()},
          {"versions_on_disk", versions},
          {"connected", a.connected()},
          {"last_seen", Time(a.last_seen_ms())}};
}

bool IsFinal(const std::string& state) { return state != "queued" && state != "rolling"; }

// One line summarising where a release stands: its state, current wave and per-region
// counts. Printed whenever it changes while waiting.
std::string ProgressLine(const v1::Release& r) {
  std::string line = "release " + std::to_string(r.id()) + " " + r.state();
  if (r.state() == "rolling" && r.current_wave() >= 0 && r.current_wave() < r.waves_size()) {
    const auto& w = r.waves(r.current_wave());
    line += "  wave " + std::to_string(w.index() + 1) + "/" + std::to_string(r.waves_size()) + " " +
            w.name() + " (" + w.state() + ")";
    for (const auto& rp : w.regions()) {
      line += "  " + rp.region() + " " + std::to_string(rp.done()) + "/" +
              std::to_string(rp.selected());
      if (rp.failed() > 0) line += " (" + std::to_string(rp.failed()) + " failed)";
    }
  }
  return line;
}

void PrintReleaseText(const v1::Release& r) {
  std::printf("release %lld  %s %s  %s\n", static_cast<long long>(r.id()), r.pipeline().c_str(),
              r.version().c_str(), r.state().c_str());
  if (!r.reason().empty()) std::printf("  reason:   %s\n", r.reason().c_str());
  std::printf("  artifact: %s\n  sha256:   %s\n", r.artifact_url().c_str(), r.sha256().c_str());
  if (!r.commit().empty()) {
    std::printf("  commit:   %s %s\n", r.commit().c_str(), r.author().c_str());
  }
  if (!r.previous_version().empty()) {
    std::printf("  previous: %s\n", r.previous_version().c_str());
  }
  std::printf("  created:  %s\n", Time(r.created_at_ms()).c_str());
  if (r.finished_at_ms() > 0) std::printf("  finished: %s\n", Time(r.finished_at_ms()).c_str());
  for (const auto& w : r.waves()) {
    std::printf("  wave %d %-12s %-10s", w.index() + 1, w.name().c_str(), w.state().c_str());
    for (const auto& rp : w.regions()) {
      std::printf("  %s %d/%d", rp.region().c_str(), rp.done(), rp.selected());
    }
    std::printf("\n");
  }
  for (const auto& h : r.hosts()) {
    std::printf("    %-16s %-16s wave %d  %-10s %s\n", h.agent().c_str(), h.region().c_str(),
                h.wave() + 1, h.state().c_str(), h.detail().c_str());
  }
}

int Wait(const Context& ctx, Client& client, int64_t id, std::chrono::milliseconds timeout) {
  auto deadline = std::chrono::steady_clock::now() + timeout;
  std::string last_line;
  v1::Release r;
  for (;;) {
    v1::GetReleaseRequest req;
    req.set_id(id);
    grpc::Status st = client.Call(&v1::ControlService::Stub::GetRelease, req, &r);
    if (!st.ok()) return RpcError(ctx, st);
    std::string line = ProgressLine(r);
    if (line != last_line) {
      // Progress goes to stderr so that --output json keeps stdout machine-readable.
      std::fprintf(stderr, "%s  %s\n", FormatUnixMs(SystemClock::Get()->Now()).c_str(),
                   line.c_str());
      last_line = line;
    }
    if (IsFinal(r.state())) break;
    if (std::chrono::steady_clock::now() > deadline) {
      return Error(kNotReached, "gave up waiting for release " + std::to_string(id) + " after " +
                                    FormatDuration(timeout) + "; it is " + r.state());
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(250));
  }
  if (ctx.json) {
    std::cout << ReleaseJson(r).dump(2) << "\n";
  } else {
    PrintReleaseText(r);
  }
  if (r.state() != "succeeded") {
    return Error(kNotReached, "release " + std::to_string(id) + " " + r.state() +
                                  (r.reason().empty() ? "" : ": " + r.reason()));
  }
  return kOk;
}

}  // namespace

int ReleaseCreate(const Context& ctx, const Flags& flags) {
  for (const char* f : {"pipeline", "version", "artifact", "sha256"}) {
    if (flags.Get(f).empty()) return Error(kUsage, std::string("--") + f + " is required");
  }
  auto timeout = ParseDuration(flags.Get("timeout"));
  if (!timeout.ok()) return Error(kUsage, "--timeout: " + timeout.status().message());
  Client client(ctx);
  v1::CreateReleaseRequest req;
  req.set_pipeline(flags.Get("pipeline"));
  req.set_version(flags.Get("version"));
  req.set_artifact_url(flags.Get("artifact"));
  req.set_sha256(flags.Get("sha256"));
  req.set_commit(flags.Get("commit"));
  req.set_author(flags.Get("author"));
  v1::Release r;
  grpc::Status st = client.Call(&v1::ControlService::Stub::CreateRelease, req, &r);
  if (!st.ok()) return RpcError(ctx, st);
  if (flags.GetBool("wait")) {
    std::fprintf(stderr, "release %lld queued: %s %s\n", static_cast<long long>(r.id()),
                 r.pipeline().c_str(), r.version().c_str());
    return Wait(ctx, client, r.id(), *timeout);
  }
  if (ctx.json) {
    std::cout << ReleaseJson(r).dump(2) << "\n";
  } else {
    std::printf("release %lld queued: %s %s\n", static_cast<long long>(r.id()),
                r.pipeline().c_str(), r.version().c_str());
  }
  return kOk;
}

int ReleaseList(const Context& ctx, const Flags& flags) {
  Client client(ctx);
  v1::ListReleasesRequest req;
  req.set_pipeline(flags.Get("pipeline"));
  req.set_limit(std::atoi(flags.Get("limit").c_str()));
  v1::ListReleasesResponse resp;
  grpc::Status st = client.Call(&v1::ControlService::Stub::ListReleases, req, &resp);
  if (!st.ok()) return RpcError(ctx, st);
  if (ctx.json) {
    json j = json::array();
    for (const auto& r : resp.releases()) j.push_back(ReleaseJson(r));
    std::cout << j.dump(2) << "\n";
    return kOk;
  }
  std::printf("%-6s %-14s %-20s %-11s %s\n", "ID", "PIPELINE", "VERSION", "STATE", "CREATED");
  for (const auto& r : resp.releases()) {
    std::printf("%-6lld %-14s %-20s %-11s %s\n", static_cast<long long>(r.id()),
                r.pipeline().c_str(), r.version().c_str(), r.state().c_str(),
                Time(r.created_at_ms()).c_str());
  }
  return kOk;
}

int ReleaseShow(const Context& ctx, const std::vector<std::string>& args) {
  if (args.size() != 1) return Error(kUsage, "usage: lockstep release show ID");
  char* end = nullptr;
  long long id = std::strtoll(args[0].c_str(), &end, 10);
  if (!end || *end != '\0' || id <= 0) {
    return Error(kUsage, "release id must be a positive number, got \"" + args[0] + "\"");
  }
  Client client(ctx);
  v1::GetReleaseRequest req;
  req.set_id(id);
  v1::Release r;
  grpc::Status st = client.Call(&v1::ControlService::Stub::GetRelease, req, &r);
  if (!st.ok()) return RpcError(ctx, st);
  if (ctx.json) {
    std::cout << ReleaseJson(r).dump(2) << "\n";
  } else {
    PrintReleaseText(r);
  }
  return kOk;
}

int Status(const Context& ctx, const std::vector<std::string>& args) {
  if (args.size() > 1) return Error(kUsage, "usage: lockstep status [PIPELINE]");
  Client client(ctx);
  v1::StatusRequest req;
  if (!args.empty()) req.set_pipeline(args[0]);
  v1::StatusResponse resp;
  grpc::Status st = client.Call(&v1::ControlService::Stub::GetStatus, req, &resp);
  if (!st.ok()) return RpcError(ctx, st);
  if (ctx.json) {
    json out = json::array();
    for (const auto& p : resp.pipelines()) {
      json jp = {{"pipeline", p.pipeline()},
                 {"desired_version", p.desired_version()},
                 {"regions", json::array()}};
      if (p.has_active()) jp["active"] = ReleaseJson(p.active());
      for (const auto& rs : p.regions()) {
        json jr = {{"region", rs.region()}, {"hosts", json::array()}};
        for (const auto& h : rs.hosts()) jr["hosts"].push_back(AgentJson(h));
        jp["regions"].push_back(std::move(jr));
      }
      out.push_back(std::move(jp));
    }
    std::cout << out.dump(2) << "\n";
    return kOk;
  }
  for (const auto& p : resp.pipelines()) {
    std::printf("pipeline %s  desired %s\n", p.pipeline().c_str(),
                p.desired_version().empty() ? "(none yet)" : p.desired_version().c_str());
    if (p.has_active()) std::printf("  in flight: %s\n", ProgressLine(p.active()).c_str());
    for (const auto& rs : p.regions()) {
      std::printf("  %s: %d host(s)\n", rs.region().c_str(), rs.hosts_size());
      for (const auto& h : rs.hosts()) {
        bool drift = !p.desired_version().empty() && h.current_version() != p.desired_version();
        std::printf("    %-16s %-20s %s%s\n", h.name().c_str(),
                    h.current_version().empty() ? "-" : h.current_version().c_str(),
                    h.connected() ? "connected" : "disconnected", drift ? "  (differs)" : "");
      }
    }
  }
  return kOk;
}

int Agents(const Context& ctx) {
  Client client(ctx);
  v1::ListAgentsRequest req;
  v1::ListAgentsResponse resp;
  grpc::Status st = client.Call(&v1::ControlService::Stub::ListAgents, req, &resp);
  if (!st.ok()) return RpcError(ctx, st);
  if (ctx.json) {
    json j = json::array();
    for (const auto& a : resp.agents()) j.push_back(AgentJson(a));
    std::cout << j.dump(2) << "\n";
    return kOk;
  }
  std::printf("%-16s %-16s %-12s %-20s %s\n", "NAME", "REGION", "PIPELINE", "VERSION", "STATE");
  for (const auto& a : resp.agents()) {
    std::printf("%-16s %-16s %-12s %-20s %s\n", a.name().c_str(), a.region().c_str(),
                a.pipeline().c_str(),
                a.current_version().empty() ? "-" : a.current_version().c_str(),
                a.connected() ? "connected" : "disconnected");
  }
  return kOk;
}

}  // namespace lockstep::cli
