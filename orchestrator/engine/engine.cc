#include "orchestrator/engine/engine.h"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <regex>

#include "common/duration.h"
#include "common/sha256.h"
#include "orchestrator/engine/selection.h"

namespace lockstep {

namespace {

constexpr const char* kPrepare = "prepare";
constexpr const char* kActivate = "activate";

bool InFlight(const HostRecord& h) {
  return h.state == host_state::kPreparing || h.state == host_state::kActivating;
}

// How long a host may take on a task before the engine gives up on it. The agent retries a
// fetch up to three times, each bounded by timeouts.fetch; activation runs up to three hooks
// plus the probes.
int64_t TaskBudgetMs(const Pipeline& p, bool activate) {
  constexpr int64_t kSlackMs = 10'000;
  if (!activate) return 3 * p.timeouts.fetch.count() + kSlackMs;
  int64_t probes = 0;
  for (const auto& pr : p.http_probes) {
    probes += pr.attempts * (pr.timeout.count() + pr.interval.count());
  }
  return 3 * p.timeouts.hook.count() + probes + kSlackMs;
}

bool ValidVersion(const std::string& v) {
  static const std::regex kVersion(R"([A-Za-z0-9_+-][A-Za-z0-9._+-]{0,127})");
  return std::regex_match(v, kVersion);
}

}  // namespace

// What one pass decides: records to write, tasks to send after the write, next wake-up.
struct Engine::Pass {
  WriteBatch batch;
  std::vector<std::pair<std::string, lockstep::v1::Task>> sends;
  UnixMs next_wake = 0;

  void WakeAt(UnixMs t) {
    if (t > 0 && (next_wake == 0 || t < next_wake)) next_wake = t;
  }
};

Engine::Engine(std::vector<Pipeline> pipelines, Store* store, const Clock* clock, TaskSink* sink)
    : pipelines_(std::move(pipelines)), store_(store), clock_(clock), sink_(sink) {}

const Pipeline* Engine::FindPipeline(const std::string& name) const {
  for (const auto& p : pipelines_) {
    if (p.name == name) return &p;
  }
  return nullptr;
}

std::string Engine::TaskId(int64_t release_id, const std::string& agent, const char* kind) {
  return "r" + std::to_string(release_id) + "/" + agent + "/" + kind;
}

Status Engine::ValidateRelease(const NewRelease& req) const {
  if (req.pipeline.empty()) return InvalidArgument("pipeline: required");
  if (!FindPipeline(req.pipeline)) {
    return NotFound("pipeline: unknown pipeline \"" + req.pipeline + "\"");
  }
  if (!ValidVersion(req.version)) {
    return InvalidArgument("version: \"" + req.version +
                           "\" is not a valid version (letters, digits, '.', '_', '+', '-'; "
                           "at most 128; not starting with '.')");
  }
  if (req.artifact_url.rfind("http://", 0) != 0 && req.artifact_url.rfind("https://", 0) != 0) {
    return InvalidArgument("artifact: \"" + req.artifact_url + "\" is not an http(s) URL");
  }
  if (!IsSha256Hex(req.sha256)) {
    return InvalidArgument("sha256: \"" + req.sha256 + "\" is not 64 hex digits");
  }
  return Status::Ok();
}

StatusOr<ReleaseRecord> Engine::CreateRelease(const NewRelease& req,
                                              const std::string& actor) const {
  LOCKSTEP_RETURN_IF_ERROR(ValidateRelease(req));
  ReleaseRecord r;
  r.pipeline = req.pipeline;
  r.version = req.version;
  r.artifact_url = req.artifact_url;
  r.sha256 = req.sha256;
  std::transform(r.sha256.begin(), r.sha256.end(), r.sha256.begin(),
                 [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  r.commit = req.commit;
  r.author = req.author;
  r.state = release_state::kQueued;
  r.created_at = clock_->Now();
  AuditRecord a;
  a.at = r.created_at;
  a.actor = actor;
  a.action = "release.create";
  a.detail = req.pipeline + " " + req.version;
  return store_->CreateRelease(std::move(r), std::move(a));
}

StatusOr<std::string> Engine::AgentConnected(const lockstep::v1::AgentHello& hello) {
  if (hello.name().empty()) return InvalidArgument("agent name is empty");
  if (hello.region().empty()) return InvalidArgument("agent region is empty");
  const Pipeline* pipeline = nullptr;
  if (!hello.pipeline().empty()) {
    pipeline = FindPipeline(hello.pipeline());
    if (!pipeline) return NotFound("unknown pipeline \"" + hello.pipeline() + "\"");
    if (!pipeline->HasRegion(hello.region())) {
      return InvalidArgument("pipeline \"" + hello.pipeline() + "\" does not list region \"" +
                             hello.region() + "\"");
    }
  } else {
    std::vector<const Pipeline*> candidates;
    for (const auto& p : pipelines_) {
      if (p.HasRegion(hello.region())) candidates.push_back(&p);
    }
    if (candidates.empty()) {
      return NotFound("no pipeline lists region \"" + hello.region() + "\"");
    }
    if (candidates.size() > 1) {
      return InvalidArgument("several pipelines list region \"" + hello.region() +
                             "\"; start the agent with --pipeline");
    }
    pipeline = candidates.front();
  }

  UnixMs now = clock_->Now();
  auto existing = store_->GetAgent(hello.name());
  if (!existing.ok()) return existing.status();
  AgentRecord a;
  if (existing->has_value()) a = **existing;
  if (a.first_seen == 0) a.first_seen = now;
  a.name = hello.name();
  a.region = hello.region();
  a.pipeline = pipeline->name;
  a.current_version = hello.current_version();
  a.versions_on_disk.assign(hello.versions_on_disk().begin(), hello.versions_on_disk().end());
  a.connected = true;
  a.last_seen = now;
  WriteBatch b;
  b.agents.push_back(a);
  LOCKSTEP_RETURN_IF_ERROR(store_->Write(b));
  last_heartbeat_[a.name] = now;
  resend_to_.insert(a.name);
  return pipeline->name;
}

Status Engine::AgentDisconnected(const std::string& name) {
  auto existing = store_->GetAgent(name);
  if (!existing.ok()) return existing.status();
  if (!existing->has_value()) return Status::Ok();
  AgentRecord a = **existing;
  a.connected = false;
  // The stream was alive until now; agent_lost counts from here.
  a.last_seen = clock_->Now();
  last_heartbeat_.erase(name);
  resend_to_.erase(name);
  WriteBatch b;
  b.agents.push_back(std::move(a));
  return store_->Write(b);
}

void Engine::AgentHeartbeat(const std::string& name, const std::string& /*current_version*/) {
  last_heartbeat_[name] = clock_->Now();
}

Status Engine::TaskFinished(const std::string& agent, const lockstep::v1::TaskResult& result) {
  UnixMs now = clock_->Now();
  WriteBatch b;
  auto existing = store_->GetAgent(agent);
  if (!existing.ok()) return existing.status();
  if (existing->has_value()) {
    AgentRecord a = **existing;
    a.current_version = result.current_version();
    a.versions_on_disk.assign(result.versions_on_disk().begin(), result.versions_on_disk().end());
    a.last_seen = now;
    b.agents.push_back(std::move(a));
  }
  last_heartbeat_[agent] = now;

  // Task ids are "r<release>/<agent>/<kind>".
  const std::string& id = result.task_id();
  int64_t release_id = 0;
  if (id.size() > 1 && id[0] == 'r') release_id = std::atoll(id.c_str() + 1);
  auto release = release_id > 0 ? store_->GetRelease(release_id)
                                : StatusOr<ReleaseRecord>(NotFound("malformed task id"));
  if (release.ok() && release->state == release_state::kRolling) {
    auto hosts = store_->Hosts(release_id);
    if (!hosts.ok()) return hosts.status();
    for (auto& h : *hosts) {
      if (h.agent != agent || h.task_id != id || !InFlight(h)) continue;
      bool activate = h.state == host_state::kActivating;
      if (result.ok()) {
        h.state = activate ? host_state::kDone : host_state::kPrepared;
        h.detail = activate ? "running " + release->version : "prepared";
        if (activate) h.finished_at = now;
      } else {
        h.state = host_state::kFailed;
        h.detail = std::string(activate ? "activate" : "prepare") + " failed" +
                   (result.failed_step().empty() ? "" : " at " + result.failed_step()) + ": " +
                   result.error();
        h.finished_at = now;
      }
      b.hosts.push_back(h);
    }
  } else {
    spdlog::debug("result for task {} from {} ignored: release not rolling", id, agent);
  }
  return store_->Write(b);
}

StatusOr<UnixMs> Engine::Reconcile() {
  UnixMs now = clock_->Now();
  Pass pass;
  for (const auto& p : pipelines_) {
    LOCKSTEP_RETURN_IF_ERROR(ReconcilePipeline(p, now, pass).WithContext("pipeline " + p.name));
  }
  // Written before anything is sent: a crash between the two re-sends on restart.
  LOCKSTEP_RETURN_IF_ERROR(store_->Write(pass.batch));
  for (const auto& [agent, task] : pass.sends) sink_->Send(agent, task);
  ResendOutstanding(pass);
  return pass.next_wake;
}

void Engine::ResendOutstanding(Pass& pass) {
  if (resend_to_.empty()) return;
  std::set<std::string> agents;
  agents.swap(resend_to_);
  std::set<std::string> already_sent;
  for (const auto& [agent, task] : pass.sends) already_sent.insert(task.task_id());
  for (const auto& p : pipelines_) {
    auto open = store_->OpenReleases(p.name);
    if (!open.ok()) continue;
    for (const auto& r : *open) {
      if (r.state != release_state::kRolling) continue;
      auto hosts = store_->Hosts(r.id);
      if (!hosts.ok()) continue;
      for (const auto& h : *hosts) {
        if (!InFlight(h) || !agents.count(h.agent) || already_sent.count(h.task_id)) continue;
        sink_->Send(h.agent, BuildTask(p, r, h, h.state == host_state::kActivating));
      }
    }
  }
}

Status Engine::ReconcilePipeline(const Pipeline& p, UnixMs now, Pass& pass) {
  auto open = store_->OpenReleases(p.name);
  if (!open.ok()) return open.status();
  if (open->empty()) return Status::Ok();

  ReleaseRecord* rolling = nullptr;
  bool started = false;
  for (auto& r : *open) {
    if (r.state == release_state::kRolling) rolling = &r;
  }
  if (!rolling) {
    // One release in flight per pipeline; the newest queued one wins, older ones are
    // superseded rather than rolled out one after another.
    ReleaseRecord& next = open->back();
    for (auto& r : *open) {
      if (&r == &next) continue;
      r.state = release_state::kSuperseded;
      r.reason = "superseded by release " + std::to_string(next.id);
      r.finished_at = now;
      pass.batch.releases.push_back(r);
      pass.batch.audit.push_back({0, now, "engine", "release.supersede",
                                  "release/" + std::to_string(r.id), r.reason, "ok"});
    }
    auto last = store_->LastSucceeded(p.name);
    if (!last.ok()) return last.status();
    next.state = release_state::kRolling;
    next.started_at = now;
    next.current_wave = 0;
    next.previous_version = last->has_value() ? (*last)->version : "";
    pass.batch.audit.push_back({0, now, "engine", "release.start",
                                "release/" + std::to_string(next.id), p.name + " " + next.version,
                                "ok"});
    spdlog::info("release {} ({} {}) started", next.id, p.name, next.version);
    rolling = &next;
    started = true;
  }

  // One record per wave of the pipeline; only waves that have started are stored.
  auto stored_waves = store_->Waves(rolling->id);
  if (!stored_waves.ok()) return stored_waves.status();
  std::vector<WaveRecord> waves(p.waves.size());
  for (size_t i = 0; i < p.waves.size(); ++i) {
    waves[i].release_id = rolling->id;
    waves[i].index = static_cast<int>(i);
    waves[i].name = p.waves[i].name;
  }
  for (auto& w : *stored_waves) {
    if (w.index >= 0 && static_cast<size_t>(w.index) < waves.size()) {
      waves[static_cast<size_t>(w.index)] = std::move(w);
    }
  }
  auto host_list = store_->Hosts(rolling->id);
  if (!host_list.ok()) return host_list.status();
  std::map<std::string, HostRecord> hosts;
  for (auto& h : *host_list) hosts.emplace(h.agent, std::move(h));
  auto agents = store_->Agents();
  if (!agents.ok()) return agents.status();

  AdvanceRelease(p, *rolling, started, waves, hosts, *agents, now, pass);
  return Status::Ok();
}

void Engine::AdvanceRelease(const Pipeline& p, ReleaseRecord& r, bool started,
                            std::vector<WaveRecord>& waves,
                            std::map<std::string, HostRecord>& hosts,
                            const std::vector<AgentRecord>& agents, UnixMs now, Pass& pass) {
  std::set<std::string> changed_hosts;
  std::set<int> changed_waves;
  bool release_changed = false;
  std::map<std::string, const AgentRecord*> agent_by_name;
  for (const auto& a : agents) agent_by_name[a.name] = &a;

  auto finish_release = [&](const char* state, std::string reason) {
    r.state = state;
    r.reason = std::move(reason);
    r.finished_at = now;
    release_changed = true;
    pass.batch.audit.push_back({0, now, "engine", std::string("release.") + state,
                                "release/" + std::to_string(r.id), r.reason, "ok"});
    spdlog::info("release {} ({} {}) {}{}{}", r.id, p.name, r.version, state,
                 r.reason.empty() ? "" : ": ", r.reason);
  };

  // Each iteration handles the current wave; it moves on only when a wave completes with no
  // wait left, so the loop runs at most once per wave plus once.
  for (size_t guard = 0; guard <= p.waves.size() && r.state == release_state::kRolling; ++guard) {
    const int wi = r.current_wave;
    const WaveSpec& spec = p.waves[static_cast<size_t>(wi)];
    WaveRecord& wave = waves[static_cast<size_t>(wi)];
    if (wave.state == wave_state::kPending) {
      wave.state = wave_state::kDeploying;
      wave.started_at = now;
      changed_waves.insert(wi);
    }

    if (wave.state == wave_state::kDeploying) {
      for (const AgentRecord* a : SelectWaveHosts(p.name, spec, agents)) {
        if (hosts.count(a->name)) continue;
        HostRecord h;
        h.release_id = r.id;
        h.agent = a->name;
        h.region = a->region;
        h.wave = wi;
        hosts.emplace(a->name, std::move(h));
        changed_hosts.insert(a->name);
      }

      // Deadlines: a task that takes too long, or an agent gone for longer than
      // timeouts.agent_lost while it holds a task, fails its host.
      for (auto& [name, h] : hosts) {
        if (!InFlight(h)) continue;
        bool activate = h.state == host_state::kActivating;
        UnixMs deadline = h.task_sent_at + TaskBudgetMs(p, activate);
        auto ag = agent_by_name.find(name);
        bool connected = ag != agent_by_name.end() && ag->second->connected;
        UnixMs seen = ag != agent_by_name.end() ? ag->second->last_seen : h.task_sent_at;
        auto hb = last_heartbeat_.find(name);
        if (hb != last_heartbeat_.end()) seen = std::max(seen, hb->second);
        UnixMs lost_at = std::max(seen, h.task_sent_at) + p.timeouts.agent_lost.count();
        if (now >= deadline) {
          h.state = host_state::kFailed;
          h.detail = std::string(activate ? "activate" : "prepare") + " timed out after " +
                     FormatDuration(std::chrono::milliseconds(now - h.task_sent_at));
          h.finished_at = now;
          changed_hosts.insert(name);
        } else if (!connected && now >= lost_at) {
          h.state = host_state::kFailed;
          h.detail =
              "agent lost: no contact for " + FormatDuration(std::chrono::milliseconds(now - seen));
          h.finished_at = now;
          changed_hosts.insert(name);
        } else {
          pass.WakeAt(connected ? deadline : std::min(deadline, lost_at));
        }
      }

      int failed = 0;
      std::string first_failure;
      for (const auto& [name, h] : hosts) {
        if (h.state != host_state::kFailed) continue;
        ++failed;
        if (first_failure.empty()) first_failure = name + ": " + h.detail;
      }
      if (failed > p.rollback.tolerate_failed_hosts) {
        wave.state = wave_state::kFailed;
        wave.finished_at = now;
        changed_waves.insert(wi);
        finish_release(release_state::kFailed, "wave " + spec.name + ": " + std::to_string(failed) +
                                                   " host(s) failed (" + first_failure + ")");
        break;
      }

      // Per-region concurrency counts hosts with a task in flight.
      std::map<std::string, int> busy;
      for (const auto& [name, h] : hosts) {
        if (InFlight(h)) ++busy[h.region];
      }
      auto start_task = [&](HostRecord& h, bool activate) {
        if (busy[h.region] >= p.concurrency_per_region) return;
        ++busy[h.region];
        h.state = activate ? host_state::kActivating : host_state::kPreparing;
        h.task_id = TaskId(r.id, h.agent, activate ? kActivate : kPrepare);
        h.detail = activate ? "activating" : "preparing";
        h.task_sent_at = now;
        if (h.started_at == 0) h.started_at = now;
        changed_hosts.insert(h.agent);
        pass.sends.emplace_back(h.agent, BuildTask(p, r, h, activate));
        pass.WakeAt(now + TaskBudgetMs(p, activate));
      };

      // Phase one: every host of the wave prepares.
      bool all_prepared = true;
      bool all_done = true;
      for (auto& [name, h] : hosts) {
        if (h.wave != wi) continue;
        if (h.state == host_state::kPending) start_task(h, false);
        if (h.state == host_state::kPending || h.state == host_state::kPreparing) {
          all_prepared = false;
        }
        if (h.state != host_state::kDone && h.state != host_state::kFailed) all_done = false;
      }
      // Phase two: only once all are prepared, they switch. This keeps the window in which
      // a wave runs mixed versions as short as a link switch, not a download.
      if (all_prepared) {
        for (auto& [name, h] : hosts) {
          if (h.wave == wi && h.state == host_state::kPrepared) start_task(h, true);
        }
      }
      if (!all_done) break;

      if (spec.bake.count() > 0) {
        wave.state = wave_state::kBaking;
        wave.bake_started_at = now;
        changed_waves.insert(wi);
      } else {
        wave.state = wave_state::kDone;
        wave.finished_at = now;
        changed_waves.insert(wi);
      }
    }

    if (wave.state == wave_state::kBaking) {
      UnixMs bake_end = wave.bake_started_at + spec.bake.count();
      if (now < bake_end) {
        pass.WakeAt(bake_end);
        break;
      }
      wave.state = wave_state::kDone;
      wave.finished_at = now;
      changed_waves.insert(wi);
    }

    if (wave.state == wave_state::kDone) {
      if (static_cast<size_t>(wi) + 1 < p.waves.size()) {
        r.current_wave = wi + 1;
        release_changed = true;
        spdlog::info("release {} wave {} done; wave {} starts", r.id, spec.name,
                     p.waves[static_cast<size_t>(wi) + 1].name);
      } else {
        finish_release(release_state::kSucceeded, "");
      }
    }
  }

  if (release_changed || started) pass.batch.releases.push_back(r);
  for (int wi : changed_waves) pass.batch.waves.push_back(waves[static_cast<size_t>(wi)]);
  for (const auto& name : changed_hosts) pass.batch.hosts.push_back(hosts.at(name));
}

lockstep::v1::Task Engine::BuildTask(const Pipeline& p, const ReleaseRecord& r, const HostRecord& h,
                                     bool activate) const {
  lockstep::v1::Task t;
  t.set_task_id(h.task_id);
  t.set_kind(activate ? lockstep::v1::Task::ACTIVATE : lockstep::v1::Task::PREPARE);
  t.set_pipeline(p.name);
  t.set_release_id(r.id);
  t.set_version(r.version);
  t.set_artifact_url(r.artifact_url);
  t.set_sha256(r.sha256);
  t.set_fetch_timeout_ms(p.timeouts.fetch.count());
  t.set_hook_timeout_ms(p.timeouts.hook.count());
  t.set_run_check_hook(p.check_hook);
  for (const auto& probe : p.http_probes) {
    auto* pr = t.add_probes();
    pr->set_url(probe.url);
    pr->set_expect_status(probe.expect_status);
    pr->set_timeout_ms(probe.timeout.count());
    pr->set_attempts(probe.attempts);
    pr->set_interval_ms(probe.interval.count());
  }
  return t;
}

}  // namespace lockstep
