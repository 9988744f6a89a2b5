// The engine's entry points: operator requests, observed state, and the reconcile pass that
// picks which release a pipeline works on. How a release advances lives in rollout.cc,
// rollback.cc and convergence.cc.

#include "orchestrator/engine/engine.h"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <regex>

#include "common/duration.h"
#include "common/random.h"
#include "common/sha256.h"
#include "common/untrusted.h"
#include "orchestrator/engine/engine_internal.h"
#include "orchestrator/engine/history.h"

namespace lockstep {

bool HostInFlight(const HostRecord& h) {
  return h.state == host_state::kPreparing || h.state == host_state::kActivating ||
         h.state == host_state::kReverting || h.state == host_state::kConverging;
}

v1::Task::Kind TaskKindOf(const std::string& step) {
  if (step == host_step::kPrepare) return v1::Task::PREPARE;
  if (step == host_step::kActivate) return v1::Task::ACTIVATE;
  return v1::Task::DEPLOY;
}

int64_t TaskBudgetMs(const Pipeline& p, v1::Task::Kind kind) {
  // The agent retries a fetch up to three times, each bounded by timeouts.fetch; activation
  // runs up to three hooks plus the probes.
  constexpr int64_t kSlackMs = 10'000;
  int64_t prepare = 3 * p.timeouts.fetch.count() + kSlackMs;
  int64_t probes = 0;
  for (const auto& pr : p.http_probes) {
    probes += pr.attempts * (pr.timeout.count() + pr.interval.count());
  }
  int64_t activate = 3 * p.timeouts.hook.count() + probes + kSlackMs;
  switch (kind) {
    case v1::Task::PREPARE:
      return prepare;
    case v1::Task::ACTIVATE:
      return activate;
    default:
      return prepare + activate;
  }
}

namespace {

bool ValidVersion(const std::string& v) {
  static const std::regex kVersion(R"([A-Za-z0-9_+-][A-Za-z0-9._+-]{0,127})");
  return std::regex_match(v, kVersion);
}

AuditRecord MakeAudit(UnixMs at, const std::string& actor, const std::string& action,
                      const std::string& target, const std::string& detail) {
  AuditRecord a;
  a.at = at;
  a.actor = actor;
  a.action = action;
  a.target = target;
  a.detail = detail;
  return a;
}

// A release as a request describes it, before the store assigns its id. The digest, if the
// request has one, is the caller's to set (it is lowered first).
ReleaseRecord NewReleaseRecord(const NewRelease& req, const char* state, UnixMs now) {
  ReleaseRecord r;
  r.pipeline = req.pipeline;
  r.version = req.version;
  r.artifact_url = req.artifact_url;
  r.commit = req.commit;
  r.author = req.author;
  r.commit_at = req.commit_at;
  r.request_id = req.request_id;
  r.state = state;
  r.created_at = now;
  return r;
}

// The audit detail of a release's creation: "monolith v2 commit abc123".
std::string CreationDetail(const NewRelease& req) {
  return req.pipeline + " " + req.version + (req.commit.empty() ? "" : " commit " + req.commit);
}

// Minutes since 00:00 UTC and the weekday (0 = Sunday) of a unix ms time.
std::pair<int, int> UtcMinuteAndDay(UnixMs t) {
  int64_t secs = t / 1000;
  int minute = static_cast<int>((secs / 60) % (24 * 60));
  int day = static_cast<int>(((secs / 86400) + 4) % 7);  // 1970-01-01 was a Thursday
  return {minute, day};
}

// Whether a new rollout may start now; if not, the reason and when to look again.
bool InsideWindow(const DeployWindow& w, UnixMs now, UnixMs* next_check) {
  auto [minute, day] = UtcMinuteAndDay(now);
  bool day_ok = w.weekdays.empty() ||
                std::find(w.weekdays.begin(), w.weekdays.end(), day) != w.weekdays.end();
  if (day_ok && minute >= w.start_minute && minute < w.end_minute) return true;
  // Look again at the next minute boundary: cheap, and exact enough for a window.
  *next_check = (now / 60000 + 1) * 60000;
  return false;
}

}  // namespace

Engine::Engine(std::vector<Pipeline> pipelines, Store* store, const Clock* clock, TaskSink* sink)
    : store_(store), clock_(clock), sink_(sink), started_at_(clock->Now()) {
  generations_.push_back(std::make_unique<const std::vector<Pipeline>>(std::move(pipelines)));
  pipelines_.store(generations_.back().get());
}

const Pipeline* Engine::FindPipeline(const std::string& name) const {
  for (const auto& p : pipelines()) {
    if (p.name == name) return &p;
  }
  return nullptr;
}

std::vector<const Pipeline*> Engine::InForce() const {
  std::vector<const Pipeline*> out;
  for (const auto& p : pipelines()) {
    auto pin = pinned_.find(p.name);
    out.push_back(pin != pinned_.end() ? pin->second.second : &p);
  }
  for (const auto& [name, pin] : pinned_) {
    if (!FindPipeline(name)) out.push_back(pin.second);  // removed, but its release goes on
  }
  return out;
}

Status Engine::ReplacePipelines(std::vector<Pipeline> next, const std::string& actor) {
  std::set<std::string> names;
  for (const auto& p : next) {
    if (!names.insert(p.name).second) {
      return InvalidArgument("two pipelines are named \"" + p.name + "\"");
    }
  }
  // Pin each release in flight to the definition it runs with now.
  for (const Pipeline* p : InForce()) {
    if (pinned_.count(p->name)) continue;
    LOCKSTEP_ASSIGN_OR_RETURN(auto open, OpenReleases(*store_, p->name));
    for (const auto& r : open) {
      if (release_state::IsInFlight(r.state)) pinned_[p->name] = {r.id, p};
    }
  }
  // What changed, for the audit entry and the log.
  std::string detail;
  auto note = [&](const std::string& what) { detail += (detail.empty() ? "" : "; ") + what; };
  for (const auto& p : next) {
    const Pipeline* before = FindPipeline(p.name);
    if (!before) {
      note("added " + p.name);
      continue;
    }
    for (const auto& region : p.regions) {
      if (!before->HasRegion(region)) {
        note(p.name + ": region " + region + " added" +
             (p.IsBringup(region) ? " in bring-up" : ""));
      } else if (before->IsBringup(region) && !p.IsBringup(region)) {
        note(p.name + ": region " + region + " promoted to serving (from the next release)");
      } else if (!before->IsBringup(region) && p.IsBringup(region)) {
        note(p.name + ": region " + region + " now in bring-up (from the next release)");
      }
    }
    for (const auto& region : before->regions) {
      if (!p.HasRegion(region)) note(p.name + ": region " + region + " removed");
    }
  }
  for (const auto& p : pipelines()) {
    if (!names.count(p.name)) note("removed " + p.name);
  }
  for (const auto& [name, pin] : pinned_) {
    note(name + ": release " + std::to_string(pin.first) + " keeps its definition until it ends");
  }
  if (detail.empty()) detail = "no pipeline added or removed, no region changed";
  WriteBatch b;
  b.audit.push_back(MakeAudit(clock_->Now(), actor, "pipelines.reload", "pipelines", detail));
  LOCKSTEP_RETURN_IF_ERROR(store_->Write(b));
  generations_.push_back(std::make_unique<const std::vector<Pipeline>>(std::move(next)));
  pipelines_.store(generations_.back().get());
  spdlog::info("pipelines reloaded by {}: {}", actor, detail);
  return Status::Ok();
}

std::string Engine::NewTaskId(int64_t release_id, const std::string& agent, const std::string& step,
                              int attempt) {
  return "r" + std::to_string(release_id) + "/" + agent + "/" + step + "-" +
         std::to_string(attempt) + "." + RandomHex(6);
}

void Engine::SendStep(Pass& pass, const Pipeline& p, const ReleaseRecord& target, HostRecord& h,
                      const char* step, UnixMs now) {
  h.attempt = h.step == step ? h.attempt + 1 : 1;
  h.step = step;
  h.task_id = NewTaskId(h.release_id, h.agent, step, h.attempt);
  h.task_sent_at = now;
  if (h.started_at == 0) h.started_at = now;
  if (h.step != host_step::kPrepare) h.switch_sent = true;
  pass.sends.emplace_back(h.agent, BuildTask(p, target, h));
  pass.WakeAt(now + TaskBudgetMs(p, TaskKindOf(step)));
}

void Engine::Audit(Pass& pass, UnixMs now, const std::string& action, const ReleaseRecord& r,
                   const std::string& detail) const {
  pass.batch.audit.push_back(
      MakeAudit(now, "engine", action, "release/" + std::to_string(r.id), detail));
}

// ------------------------------------------------------------------ operator requests

namespace {

Status ValidateRequestId(const std::string& id) {
  if (id.size() > 128) return InvalidArgument("request id: longer than 128 characters");
  for (unsigned char c : id) {
    if (c < 0x21 || c > 0x7e) {
      return InvalidArgument("request id: only printable ASCII without spaces is allowed");
    }
  }
  return Status::Ok();
}

}  // namespace

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
  {
    // user:pass@host would be stored, shown to every viewer and sent to every agent.
    const size_t host_start = req.artifact_url.find("://") + 3;
    const size_t host_end = req.artifact_url.find_first_of("/?#", host_start);
    if (req.artifact_url.substr(host_start, host_end - host_start).find('@') != std::string::npos) {
      return InvalidArgument(
          "artifact: URLs with credentials (user:password@) are refused; serve the artifact "
          "from a location agents can read without them");
    }
  }
  if (!IsSha256Hex(req.sha256)) {
    return InvalidArgument("sha256: \"" + req.sha256 + "\" is not 64 hex digits");
  }
  if (req.commit.size() > 200 || req.author.size() > 200) {
    return InvalidArgument("commit/author: longer than 200 characters");
  }
  return ValidateRequestId(req.request_id);
}

StatusOr<std::optional<ReleaseRecord>> Engine::EarlierRequest(const NewRelease& req) const {
  if (req.request_id.empty()) return std::optional<ReleaseRecord>();
  ReleaseQuery q;
  q.pipeline = req.pipeline;
  q.request_id = req.request_id;
  q.limit = 1;
  LOCKSTEP_ASSIGN_OR_RETURN(auto found, store_->FindReleases(q));
  if (found.empty()) return std::optional<ReleaseRecord>();
  if (found.front().version != req.version) {
    return FailedPrecondition("request id " + req.request_id + " already made release " +
                              std::to_string(found.front().id) + " of version " +
                              found.front().version + "; a new request needs a new id");
  }
  return std::optional<ReleaseRecord>(found.front());
}

StatusOr<ReleaseRecord> Engine::InsertRelease(const NewRelease& req, ReleaseRecord r,
                                              AuditRecord audit) const {
  StatusOr<ReleaseRecord> created = store_->CreateRelease(std::move(r), std::move(audit));
  if (created.ok() || created.status().code() != StatusCode::kAlreadyExists ||
      req.request_id.empty()) {
    return created;
  }
  // Another lockstepd made it between our look and our insert: theirs is the answer.
  LOCKSTEP_ASSIGN_OR_RETURN(auto earlier, EarlierRequest(req));
  if (earlier.has_value()) return *earlier;
  return created;
}

StatusOr<ReleaseRecord> Engine::CreateRelease(const NewRelease& req,
                                              const std::string& actor) const {
  LOCKSTEP_RETURN_IF_ERROR(ValidateRelease(req));
  LOCKSTEP_ASSIGN_OR_RETURN(auto earlier, EarlierRequest(req));
  if (earlier.has_value()) return *earlier;
  // A version names one artifact forever: hosts keep releases on disk by version, and a
  // rollback to a version means what was first released under it.
  std::string sha = req.sha256;
  std::transform(sha.begin(), sha.end(), sha.begin(),
                 [](unsigned char ch) { return static_cast<char>(std::tolower(ch)); });
  LOCKSTEP_ASSIGN_OR_RETURN(auto first, FirstWithArtifact(*store_, req.pipeline, req.version));
  if (first.has_value()) {
    if (first->sha256 != sha) {
      return FailedPrecondition("version: " + req.version + " of pipeline " + req.pipeline +
                                " is release " + std::to_string(first->id) + " with sha256 " +
                                first->sha256 +
                                "; a version names one artifact forever: release this build "
                                "under a new version");
    }
  }
  const UnixMs now = clock_->Now();
  ReleaseRecord r = NewReleaseRecord(req, release_state::kQueued, now);
  r.sha256 = sha;
  r.created_by = actor;
  return InsertRelease(req, std::move(r),
                       MakeAudit(now, actor, "release.create", "", CreationDetail(req)));
}

namespace {
// Operator requests decide from what they read and write with the batch's expectation that it
// still holds; a pass that changed the release meanwhile makes the store refuse the batch,
// and the request is decided again on the new state (a few times at most: passes are rare
// next to this).
constexpr int kRequestAttempts = 3;
}  // namespace

Status Engine::Approve(int64_t release_id, const std::string& actor,
                       const std::string& comment) const {
  size_t characters = 0;
  for (unsigned char ch : comment) characters += (ch & 0xC0) != 0x80;  // UTF-8 lead bytes
  if (characters > 500) return InvalidArgument("comment: longer than 500 characters");
  for (unsigned char ch : comment) {
    if (ch < 0x20 || ch == 0x7f) return InvalidArgument("comment: must be one line of text");
  }
  const std::string target = "release/" + std::to_string(release_id);
  Status last;
  for (int attempt = 0; attempt < kRequestAttempts; ++attempt) {
    LOCKSTEP_ASSIGN_OR_RETURN(auto r, store_->GetRelease(release_id));
    LOCKSTEP_ASSIGN_OR_RETURN(auto waves, store_->Waves(release_id));
    const WaveRecord* awaiting = nullptr;
    for (const auto& w : waves) {
      if (w.state == wave_state::kAwaitingApproval && w.approved_at == 0) awaiting = &w;
    }
    if (r.state != release_state::kRolling || awaiting == nullptr) {
      return FailedPrecondition("cannot approve release " + std::to_string(release_id) +
                                ": it is " + r.state + " and no wave of it awaits approval");
    }
    WriteBatch b;
    WriteBatch::Expect unchanged;
    unchanged.release_id = r.id;
    unchanged.state = r.state;
    unchanged.abort_requested_at = r.abort_requested_at;
    unchanged.wave = awaiting->index;
    unchanged.wave_state = awaiting->state;
    unchanged.wave_approved_at = awaiting->approved_at;
    b.expect.push_back(unchanged);
    const UnixMs now = clock_->Now();
    b.approvals.push_back({r.id, awaiting->index, actor, now});
    b.audit.push_back(MakeAudit(now, actor, "release.approve", target,
                                awaiting->name + (comment.empty() ? "" : "; comment: " + comment)));
    last = store_->Write(b);
    if (last.code() != StatusCode::kFailedPrecondition) return last;
  }
  return last;
}

Status Engine::Abort(int64_t release_id, const std::string& actor) const {
  const std::string target = "release/" + std::to_string(release_id);
  Status last;
  for (int attempt = 0; attempt < kRequestAttempts; ++attempt) {
    LOCKSTEP_ASSIGN_OR_RETURN(auto r, store_->GetRelease(release_id));
    if (release_state::IsFinal(r.state)) {
      return FailedPrecondition("cannot abort release " + std::to_string(release_id) + ": it is " +
                                r.state);
    }
    if (r.abort_requested_at != 0) {
      return FailedPrecondition("cannot abort release " + std::to_string(release_id) + ": " +
                                r.abort_requested_by + " already asked to abort it");
    }
    WriteBatch b;
    WriteBatch::Expect unchanged;
    unchanged.release_id = r.id;
    unchanged.state = r.state;
    unchanged.abort_requested_at = r.abort_requested_at;
    b.expect.push_back(unchanged);
    const UnixMs now = clock_->Now();
    b.abort_requests.push_back({r.id, actor, now});
    b.audit.push_back(MakeAudit(now, actor, "release.abort", target, ""));
    last = store_->Write(b);
    if (last.code() != StatusCode::kFailedPrecondition) return last;
  }
  return last;
}

namespace {
Status UpdatePipelineState(Store* store, const Engine& engine, const Clock* clock,
                           const std::string& pipeline, const std::string& actor,
                           const std::string& action, const std::string& detail,
                           const std::function<void(PipelineState&, UnixMs)>& change) {
  if (!engine.FindPipeline(pipeline)) {
    return NotFound("unknown pipeline \"" + pipeline + "\"");
  }
  LOCKSTEP_ASSIGN_OR_RETURN(auto st, store->GetPipelineState(pipeline));
  UnixMs now = clock->Now();
  change(st, now);
  WriteBatch b;
  b.pipeline_states.push_back(st);
  b.audit.push_back(MakeAudit(now, actor, action, pipeline, detail));
  return store->Write(b);
}
}  // namespace

Status Engine::Pause(const std::string& pipeline, const std::string& actor) const {
  return UpdatePipelineState(store_, *this, clock_, pipeline, actor, "pipeline.pause", "",
                             [&](PipelineState& s, UnixMs now) {
                               s.paused = true;
                               s.paused_by = actor;
                               s.paused_at = now;
                             });
}

Status Engine::Resume(const std::string& pipeline, const std::string& actor) const {
  return UpdatePipelineState(store_, *this, clock_, pipeline, actor, "pipeline.resume", "",
                             [](PipelineState& s, UnixMs) {
                               s.paused = false;
                               s.paused_by.clear();
                               s.paused_at = 0;
                             });
}

Status Engine::Freeze(const std::string& pipeline, const std::string& reason,
                      const std::string& actor) const {
  if (TrimSpace(reason).empty()) return InvalidArgument("reason: a freeze needs a reason");
  return UpdatePipelineState(store_, *this, clock_, pipeline, actor, "pipeline.freeze", reason,
                             [&](PipelineState& s, UnixMs now) {
                               s.frozen = true;
                               s.frozen_by = actor;
                               s.freeze_reason = reason;
                               s.frozen_at = now;
                             });
}

Status Engine::Unfreeze(const std::string& pipeline, const std::string& actor) const {
  return UpdatePipelineState(store_, *this, clock_, pipeline, actor, "pipeline.unfreeze", "",
                             [](PipelineState& s, UnixMs) {
                               s.frozen = false;
                               s.frozen_by.clear();
                               s.freeze_reason.clear();
                               s.frozen_at = 0;
                             });
}

StatusOr<ReleaseRecord> Engine::Rollback(const std::string& pipeline, const std::string& to_version,
                                         const std::string& actor) const {
  const Pipeline* p = FindPipeline(pipeline);
  if (!p) return NotFound("unknown pipeline \"" + pipeline + "\"");
  LOCKSTEP_ASSIGN_OR_RETURN(auto target, RollbackTarget(*p, to_version));
  if (!target.has_value()) {
    return NotFound(to_version.empty()
                        ? "pipeline " + pipeline + " has no earlier release that succeeded"
                        : "no succeeded release " + to_version + " of pipeline " + pipeline);
  }
  const ReleaseRecord& t = *target;
  ReleaseRecord r;
  r.pipeline = pipeline;
  r.version = t.version;
  r.artifact_url = t.artifact_url;
  r.sha256 = t.sha256;
  r.commit = t.commit;
  r.author = t.author;
  r.created_by = actor;  // who rolled back, not who wrote the commit
  r.commit_at = t.commit_at;
  r.kind = release_kind::kRollback;
  r.state = release_state::kQueued;
  r.previous_release_id = t.id;
  r.created_at = clock_->Now();
  return store_->CreateRelease(
      std::move(r),
      MakeAudit(clock_->Now(), actor, "pipeline.rollback", "",
                pipeline + " to " + t.version + " (release " + std::to_string(t.id) + ")"));
}

StatusOr<std::optional<ReleaseRecord>> Engine::RollbackTarget(const Pipeline& p,
                                                              const std::string& to_version) const {
  if (!to_version.empty()) return SucceededWithVersion(*store_, p.name, to_version);
  // The release the fleet is on or moving to: the newest in flight, else the newest
  // succeeded. "Before" it means: the newest succeeded rollout older than the rollout that
  // introduced that version, so that rolling back twice keeps going back.
  ReleaseQuery q;
  q.pipeline = p.name;
  for (const auto& state : release_state::All()) {
    if (release_state::IsInFlight(state) || state == release_state::kSucceeded) {
      q.states.push_back(state);
    }
  }
  q.limit = 1;
  LOCKSTEP_ASSIGN_OR_RETURN(auto newest, store_->FindReleases(q));
  if (newest.empty()) return std::optional<ReleaseRecord>();
  const ReleaseRecord current = newest.front();
  int64_t before = current.id;
  if (current.kind == release_kind::kRollback) before = current.previous_release_id;
  if (current.state == release_state::kSucceeded && current.kind == release_kind::kRollout) {
    before = current.id;
  }
  // Older succeeded rollouts, a page at a time, until one has another version.
  q.states = {release_state::kSucceeded};
  q.kinds = {release_kind::kRollout};
  q.limit = 50;
  while (before > 0) {
    q.before_id = before;
    LOCKSTEP_ASSIGN_OR_RETURN(auto page, store_->FindReleases(q));
    for (auto& r : page) {
      if (r.version != current.version) return std::optional<ReleaseRecord>(std::move(r));
    }
    if (static_cast<int>(page.size()) < q.limit) break;
    before = page.back().id;
  }
  return std::optional<ReleaseRecord>();
}

// ------------------------------------------------------------------ observed state

StatusOr<std::string> Engine::AgentPipeline(const v1::AgentHello& hello) const {
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
    for (const auto& p : pipelines()) {
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
  return pipeline->name;
}

Status Engine::RemoveAgent(const std::string& name, const std::string& actor) {
  LOCKSTEP_RETURN_IF_ERROR(LoadAgents());
  LOCKSTEP_RETURN_IF_ERROR(
      store_->RemoveAgent(name, MakeAudit(clock_->Now(), actor, "agents.remove", "agent/" + name,
                                          "host and its credential retired")));
  agents_.erase(name);
  dirty_agents_.erase(name);
  last_contact_.erase(name);
  reported_version_.erase(name);
  resend_to_.erase(name);
  return Status::Ok();
}

StatusOr<std::string> Engine::AgentConnected(const v1::AgentHello& hello) {
  LOCKSTEP_ASSIGN_OR_RETURN(auto pipeline_name, AgentPipeline(hello));
  const Pipeline* pipeline = FindPipeline(pipeline_name);
  UnixMs now = clock_->Now();
  LOCKSTEP_RETURN_IF_ERROR(LoadAgents());
  AgentRecord& a = agents_[hello.name()];
  if (a.first_seen == 0) a.first_seen = now;
  a.name = hello.name();
  a.region = hello.region();
  a.pipeline = pipeline->name;
  a.current_version = hello.current_version();
  a.versions_on_disk.assign(hello.versions_on_disk().begin(), hello.versions_on_disk().end());
  a.connected = true;
  a.last_seen = now;
  a.agent_version = hello.agent_version();
  dirty_agents_.insert(a.name);
  last_contact_[a.name] = now;
  reported_version_[a.name] = a.current_version;
  resend_to_.insert(a.name);
  return pipeline->name;
}

Status Engine::AgentDisconnected(const std::string& name, int64_t silent_ms) {
  LOCKSTEP_RETURN_IF_ERROR(LoadAgents());
  const UnixMs now = clock_->Now();
  UnixMs heard = now - silent_ms;
  if (auto c = last_contact_.find(name); c != last_contact_.end()) {
    heard = std::max(heard, c->second);
  }
  last_contact_.erase(name);
  reported_version_.erase(name);
  resend_to_.erase(name);
  auto it = agents_.find(name);
  if (it == agents_.end()) return Status::Ok();
  it->second.connected = false;
  // The stream was alive until now (or, broken, until `heard`); agent_lost counts from there.
  it->second.last_seen = heard;
  dirty_agents_.insert(name);
  return Status::Ok();
}

Status Engine::MarkAllDisconnected() {
  UnixMs now = clock_->Now();
  started_at_ = std::max(started_at_.load(), now);
  // Whatever a previous leader had loaded is stale.
  DropCopies();
  LOCKSTEP_RETURN_IF_ERROR(LoadAgents());
  WriteBatch b;
  for (auto& [name, a] : agents_) {
    if (!a.connected) continue;
    a.connected = false;
    a.last_seen = now;
    b.agents.push_back(a);
  }
  Status st = store_->Write(b);
  if (!st.ok()) DropCopies();
  return st;
}

StatusOr<bool> Engine::AgentHeartbeat(const std::string& name, const std::string& current_version) {
  last_contact_[name] = clock_->Now();
  auto it = reported_version_.find(name);
  if (it == reported_version_.end() || it->second == current_version) return false;
  it->second = current_version;
  LOCKSTEP_RETURN_IF_ERROR(LoadAgents());
  auto a = agents_.find(name);
  if (a == agents_.end()) return false;
  a->second.current_version = current_version;
  a->second.last_seen = clock_->Now();
  dirty_agents_.insert(name);
  return true;
}

Status Engine::LoadAgents() {
  if (agents_loaded_) return Status::Ok();
  LOCKSTEP_ASSIGN_OR_RETURN(auto agents, store_->Agents());
  agents_.clear();
  for (auto& a : agents) {
    std::string name = a.name;
    agents_.emplace(std::move(name), std::move(a));
  }
  agents_loaded_ = true;
  return Status::Ok();
}

const AgentRecord* Engine::FindAgent(const std::string& name) const {
  auto it = agents_.find(name);
  return it == agents_.end() ? nullptr : &it->second;
}

StatusOr<Engine::HostMap*> Engine::HostsOf(int64_t release_id) {
  auto it = hosts_.find(release_id);
  if (it != hosts_.end()) return &it->second;
  LOCKSTEP_ASSIGN_OR_RETURN(auto list, store_->Hosts(release_id));
  HostMap& hosts = hosts_[release_id];
  for (auto& h : list) {
    std::string agent = h.agent;
    hosts.emplace(std::move(agent), std::move(h));
  }
  return &hosts;
}

StatusOr<ReleaseRecord> Engine::ReleaseById(int64_t id) {
  auto it = releases_seen_.find(id);
  if (it != releases_seen_.end()) return it->second;
  return store_->GetRelease(id);
}

void Engine::DropCopies() {
  agents_.clear();
  agents_loaded_ = false;
  hosts_.clear();
  dirty_agents_.clear();
  dirty_hosts_.clear();
  pending_switches_.clear();
  releases_seen_.clear();
  for (const auto& [name, at] : last_contact_) resend_to_.insert(name);
}

UnixMs Engine::LastContact(const AgentRecord& a) const {
  // An open stream is one the transport's keepalive vouches for.
  if (liveness_by_transport_ && a.connected) return clock_->Now();
  auto it = last_contact_.find(a.name);
  UnixMs seen = it != last_contact_.end() ? std::max(it->second, a.last_seen) : a.last_seen;
  // While this process was not running nobody watched the agent: its silence counts from
  // our start, so every agent gets agent_lost to reconnect after a restart.
  return std::max(seen, started_at_.load());
}

bool Engine::AgentAlive(const AgentRecord& a, UnixMs now, const Pipeline& p) const {
  // A connected agent that stopped sending (e.g. SIGSTOP, a half-open connection) is as lost
  // as one whose stream closed.
  return now - LastContact(a) < p.timeouts.agent_lost.count();
}

Status Engine::TaskFinished(const std::string& agent, const v1::TaskResult& result) {
  UnixMs now = clock_->Now();
  last_contact_[agent] = now;
  LOCKSTEP_RETURN_IF_ERROR(LoadAgents());
  if (auto it = agents_.find(agent); it != agents_.end()) {
    AgentRecord& a = it->second;
    a.current_version = result.current_version();
    a.versions_on_disk.assign(result.versions_on_disk().begin(), result.versions_on_disk().end());
    a.last_seen = now;
    reported_version_[agent] = a.current_version;
    dirty_agents_.insert(agent);
  }

  // Task ids are "r<release>/<agent>/<kind>".
  const std::string& id = result.task_id();
  int64_t release_id = 0;
  if (id.size() > 1 && id[0] == 'r') release_id = std::atoll(id.c_str() + 1);
  auto release = release_id > 0 ? ReleaseById(release_id)
                                : StatusOr<ReleaseRecord>(NotFound("malformed task id"));
  if (!release.ok()) {
    spdlog::debug("result for task {} from {} ignored: unknown release", id, agent);
    return Status::Ok();
  }
  // A result is recorded wherever its task is still outstanding: in a release in flight,
  // on a convergence row of a finished release, or late for a release that ended (then it
  // only makes the record accurate).
  LOCKSTEP_ASSIGN_OR_RETURN(auto hosts, HostsOf(release_id));
  auto it = hosts->find(agent);
  if (it == hosts->end()) return Status::Ok();
  HostRecord& h = it->second;
  if (h.task_id != id || !HostInFlight(h)) return Status::Ok();
  const std::string before = h.state;
  const Pipeline* pipeline = FindPipeline(release->pipeline);
  if (result.ok()) {
    if (before == host_state::kPreparing) {
      h.state = host_state::kPrepared;
      h.detail = "prepared";
    } else if (before == host_state::kReverting) {
      h.state = host_state::kReverted;
      h.detail = "back on " + result.current_version();
    } else {
      h.state = host_state::kDone;
      h.detail = "running " + release->version;
    }
    // What went wrong on the way without stopping it (e.g. the left release's deploy/stop).
    if (!result.warning().empty()) h.detail += " (" + result.warning().substr(0, 500) + ")";
    // A host that now runs its release is no longer explained by an earlier failure's output.
    if (h.state == host_state::kDone) {
      h.output_tail.clear();
      h.failure.clear();
    }
    if (h.state != host_state::kPrepared) h.finished_at = now;
  } else {
    h.state = before == host_state::kReverting ? host_state::kRevertFailed : host_state::kFailed;
    // Every step that switches reads "activate failed" to the user, as the agent's own
    // steps (stop, switch, start, check) name what failed within it.
    std::string step = h.step == host_step::kPrepare || h.step == host_step::kRevert
                           ? h.step
                           : std::string(host_step::kActivate);
    h.detail = step + " failed" +
               (result.failed_step().empty() ? "" : " at " + result.failed_step()) + ": " +
               result.error();
    h.finished_at = now;
    // The hook's own words are the evidence, where the region lets them leave. An agent that
    // sends them anyway (an old one, or one told otherwise) is not believed: they are dropped.
    const bool withheld = pipeline == nullptr || pipeline->WithholdsHookOutput(h.region);
    h.output_tail = withheld ? "" : result.output_tail();
    RecordFailure(h);
  }
  CountFetch(h.region, result);
  dirty_hosts_.emplace(release_id, agent);
  // The mixed-version window of the wave: first to last switch of `current`, merged into
  // the wave's record by the next pass.
  if (result.switched_at_ms() > 0 && release_state::IsInFlight(release->state) &&
      before == host_state::kActivating && !(pipeline && pipeline->IsBringup(h.region))) {
    UnixMs t = result.switched_at_ms();
    auto [slot, fresh] = pending_switches_.try_emplace({release_id, h.wave}, t, t);
    if (!fresh) {
      slot->second.first = std::min(slot->second.first, t);
      slot->second.second = std::max(slot->second.second, t);
    }
  }
  if (observer_) observer_->OnReleaseChanged(release_id);
  return Status::Ok();
}

void Engine::CountFetch(const std::string& region, const v1::TaskResult& result) {
  if (result.fetched_from().empty() && result.mirror_error().empty()) return;
  if (!result.mirror_error().empty()) {
    spdlog::warn("region {} mirror failed for task {}: {}", region, LogSafe(result.task_id()),
                 LogSafe(result.mirror_error(), 300));
  }
  std::lock_guard lock(fetch_counts_mu_);
  FetchCounts& c = fetch_counts_[region];
  if (!result.mirror_error().empty()) ++c.mirror_failures;
  if (result.fetched_from() == "mirror") {
    ++c.mirror_fetches;
    c.mirror_bytes += std::max<int64_t>(0, result.fetched_bytes());
  } else if (result.fetched_from() == "origin") {
    ++c.origin_fetches;
    c.origin_bytes += std::max<int64_t>(0, result.fetched_bytes());
  }
}

bool Engine::WithholdsHookOutputOf(const std::string& agent) const {
  const AgentRecord* a = FindAgent(agent);
  const Pipeline* p = a ? FindPipeline(a->pipeline) : nullptr;
  return p == nullptr || p->WithholdsHookOutput(a->region);
}

std::map<std::string, Engine::FetchCounts> Engine::ArtifactFetchCounts() const {
  std::lock_guard lock(fetch_counts_mu_);
  return fetch_counts_;
}

Status Engine::GateVerdictReceived(const std::string& agent, const v1::GateVerdict& verdict) {
  UnixMs now = clock_->Now();
  last_contact_[agent] = now;
  auto it = gate_checks_.find(verdict.check_id());
  if (it == gate_checks_.end()) {
    // Asked by an earlier process, answered twice, or never asked at all.
    ++gate_verdicts_dropped_;
    return Status::Ok();
  }
  if (it->second.agent != agent) {
    // Only the agent that was asked may answer: another region's agent must not be able to
    // make a failing gate pass.
    ++gate_verdicts_dropped_;
    return PermissionDenied("gate check " + LogSafe(verdict.check_id(), 40) + " was sent to " +
                            it->second.agent + ", not to " + agent);
  }
  auto [release_id, wave, gate, region] = it->second.key;
  gate_checks_.erase(it);
  GateResult g;
  g.release_id = release_id;
  g.wave = wave;
  g.gate = gate;
  g.region = region;
  g.at = now;
  g.evaluated_at = verdict.evaluated_at_ms();
  switch (verdict.verdict()) {
    case v1::GateVerdict::PASS:
      g.verdict = "pass";
      break;
    case v1::GateVerdict::FAIL:
      g.verdict = "fail";
      break;
    default:
      g.verdict = "inconclusive";
  }
  g.value = verdict.value();
  g.detail = verdict.detail();
  WriteBatch b;
  b.gate_results.push_back(g);
  LOCKSTEP_RETURN_IF_ERROR(store_->Write(b));
  if (observer_) observer_->OnReleaseChanged(release_id);
  return Status::Ok();
}

// ------------------------------------------------------------------ the pass

StatusOr<UnixMs> Engine::Reconcile() {
  UnixMs now = clock_->Now();
  Pass pass;
  releases_seen_.clear();
  {
    std::lock_guard lock(artifact_checks_mu_);
    pass.artifact_check_seq = artifact_check_seq_;
  }
  // Results applied since the last pass are written with this one.
  pass.changed_hosts.swap(dirty_hosts_);
  for (const Pipeline* p : InForce()) {
    if (Status st = ReconcilePipeline(*p, now, pass); !st.ok()) {
      DropCopies();
      return st.WithContext("pipeline " + p->name);
    }
  }
  // A pinned definition is let go once its release is no longer in flight.
  std::erase_if(pinned_, [&](const auto& entry) {
    auto seen = releases_seen_.find(entry.second.first);
    return seen == releases_seen_.end() || !release_state::IsInFlight(seen->second.state);
  });
  // A release that ended frees its pipeline: the next pass, which starts the queued release
  // or converges what the ended one left behind, is due at once, not at an unrelated wake-up.
  for (const auto& e : pass.events) {
    if (release_state::IsFinal(e.release.state)) pass.WakeAt(now);
  }
  pending_switches_.clear();  // merged into in-flight waves; others need no window
  for (const auto& [release_id, agent] : pass.changed_hosts) {
    auto rel = hosts_.find(release_id);
    if (rel == hosts_.end()) continue;
    auto h = rel->second.find(agent);
    if (h != rel->second.end()) pass.batch.hosts.push_back(h->second);
  }
  for (const auto& name : dirty_agents_) {
    if (const AgentRecord* a = FindAgent(name)) pass.batch.agents.push_back(*a);
  }
  if (compose_outbox_) {
    for (const auto& e : pass.events) {
      for (auto& row : compose_outbox_(*e.pipeline, e.release, e.event, e.detail, now)) {
        pass.batch.outbox.push_back(std::move(row));
      }
    }
  }
  // Written before anything is sent: a crash between the two re-sends on restart.
  if (Status st = store_->Write(pass.batch); !st.ok()) {
    DropCopies();
    return st;
  }
  dirty_agents_.clear();
  ForgetSettledArtifacts(pass);
  // Host rows of releases no longer in flight nor desired are read again if ever needed.
  std::erase_if(hosts_, [&](const auto& entry) { return !pass.live_releases.count(entry.first); });
  for (const auto& [agent, task] : pass.sends) sink_->Send(agent, task);
  for (const auto& [agent, check] : pass.checks) sink_->SendGateCheck(agent, check);
  ResendOutstanding(pass);
  if (observer_) {
    for (const auto& e : pass.events) {
      observer_->OnReleaseEvent(*e.pipeline, e.release, e.event, e.detail);
    }
    for (int64_t id : pass.changed_releases) observer_->OnReleaseChanged(id);
  }
  return pass.next_wake;
}

void Engine::ResendOutstanding(Pass& pass) {
  if (resend_to_.empty()) return;
  std::set<std::string> agents;
  agents.swap(resend_to_);
  std::set<std::string> already_sent;
  for (const auto& [agent, task] : pass.sends) already_sent.insert(task.task_id());
  // A read that fails leaves these agents' tasks unsent: they are kept for the next pass
  // (which a store failure schedules soon), rather than waiting for their deadlines.
  Status unread;
  for (const Pipeline* pipeline : InForce()) {
    const Pipeline& p = *pipeline;
    std::vector<ReleaseRecord> releases;
    auto open = OpenReleases(*store_, p.name);
    if (open.ok()) {
      releases = std::move(*open);
    } else {
      unread = open.status();
    }
    // Convergence tasks hang off the last succeeded release.
    auto last = DesiredRelease(*store_, p.name);
    if (!last.ok()) {
      unread = last.status();
    } else if (last->has_value()) {
      releases.push_back(**last);
    }
    for (const auto& r : releases) {
      auto hosts = HostsOf(r.id);
      if (!hosts.ok()) {
        unread = hosts.status();
        continue;
      }
      for (const auto& [name, h] : **hosts) {
        if (!HostInFlight(h) || !agents.count(h.agent) || already_sent.count(h.task_id)) {
          continue;
        }
        if (h.step == host_step::kRevert) {
          auto target = r.previous_release_id > 0 ? ReleaseById(r.previous_release_id)
                                                  : StatusOr<ReleaseRecord>(NotFound(""));
          if (!target.ok()) {
            // The row stays in flight; its deadline fails it (revert_failed) and says so.
            spdlog::warn("cannot re-send {} to {}: release {} unreadable: {}", h.task_id, h.agent,
                         r.previous_release_id, target.status().ToString());
            continue;
          }
          sink_->Send(h.agent, BuildTask(p, *target, h));
        } else {
          sink_->Send(h.agent, BuildTask(p, r, h));
        }
      }
    }
  }
  if (!unread.ok()) {
    spdlog::warn("re-sending outstanding tasks: {}; trying again next pass", unread.ToString());
    resend_to_.insert(agents.begin(), agents.end());
  }
}

Status Engine::ReconcilePipeline(const Pipeline& p, UnixMs now, Pass& pass) {
  LOCKSTEP_ASSIGN_OR_RETURN(auto open, OpenReleases(*store_, p.name));
  LOCKSTEP_ASSIGN_OR_RETURN(auto pstate, store_->GetPipelineState(p.name));
  // Results that arrive before the next pass look their release up here, as this pass
  // leaves it.
  struct Remember {
    std::map<int64_t, ReleaseRecord>& seen;
    const std::vector<ReleaseRecord>& open;
    ~Remember() {
      for (const auto& r : open) seen[r.id] = r;
    }
  } remember{releases_seen_, open};

  // Releases waiting for their artifact end or become queued first, so that one whose
  // artifact arrived is queued like any other below.
  LOCKSTEP_RETURN_IF_ERROR(SettleWaitingReleases(p, open, now, pass));

  ReleaseRecord* inflight = nullptr;
  std::vector<ReleaseRecord*> queued_rollouts, queued_rollbacks;
  for (auto& r : open) {
    if (release_state::IsInFlight(r.state)) inflight = &r;
    if (r.state != release_state::kQueued) continue;
    (r.kind == release_kind::kRollback ? queued_rollbacks : queued_rollouts).push_back(&r);
  }
  auto finish = [&](ReleaseRecord& r, const char* state, const std::string& reason) {
    Finish(pass, p, r, state, reason, now);
  };

  // A release aborted before it started simply ends.
  for (auto* list : {&queued_rollouts, &queued_rollbacks}) {
    std::erase_if(*list, [&](ReleaseRecord* r) {
      if (r->abort_requested_at == 0) return false;
      finish(*r, release_state::kAborted,
             "aborted by " + r->abort_requested_by + " before it started");
      return true;
    });
  }

  // An on-call rollback preempts whatever is in flight and holds the pipeline (pauses it):
  // on-call wants the fleet back, not the next release right after. Queued rollouts are
  // kept; they wait for `resume`.
  if (!queued_rollbacks.empty()) {
    ReleaseRecord* next = queued_rollbacks.back();
    for (ReleaseRecord* r : queued_rollbacks) {
      if (r != next) {
        finish(*r, release_state::kSuperseded,
               "superseded by rollback " + std::to_string(next->id));
      }
    }
    if (inflight) {
      finish(*inflight, release_state::kAborted,
             "preempted by on-call rollback " + std::to_string(next->id) + " to " + next->version);
    }
    const std::string held_by = "on-call rollback " + std::to_string(next->id);
    pass.batch.holds.push_back({p.name, held_by, now});
    pass.batch.audit.push_back(MakeAudit(
        now, "engine", "pipeline.pause", p.name,
        "held by " + held_by + "; queued releases wait for `lockstep resume " + p.name + "`"));
    pstate.paused = true;
    pstate.paused_by = held_by;
    pstate.paused_at = now;
    LOCKSTEP_RETURN_IF_ERROR(StartRelease(p, *next, now, pass));
    inflight = next;
  } else if (!queued_rollouts.empty() && (!inflight || inflight->state == release_state::kHalted)) {
    ReleaseRecord* next = queued_rollouts.back();
    std::string wait_reason;
    UnixMs next_check = 0;
    if (pstate.frozen) {
      wait_reason =
          "waiting: pipeline frozen by " + pstate.frozen_by + " (" + pstate.freeze_reason + ")";
    } else if (pstate.paused) {
      wait_reason = "waiting: pipeline paused by " + pstate.paused_by;
    } else if (p.window && !InsideWindow(*p.window, now, &next_check)) {
      wait_reason = "waiting: outside the deploy window";
      pass.WakeAt(next_check);
    }
    if (!wait_reason.empty()) {
      if (next->reason != wait_reason) {
        next->reason = wait_reason;
        pass.batch.releases.push_back(*next);
        pass.changed_releases.insert(next->id);
      }
    } else {
      for (ReleaseRecord* r : queued_rollouts) {
        if (r != next) {
          finish(*r, release_state::kSuperseded,
                 "superseded by release " + std::to_string(next->id));
        }
      }
      if (inflight) {  // halted: a fix-forward release replaces it
        finish(*inflight, release_state::kFailed,
               inflight->reason + "; replaced by release " + std::to_string(next->id));
      }
      next->reason.clear();
      LOCKSTEP_RETURN_IF_ERROR(StartRelease(p, *next, now, pass));
      inflight = next;
    }
  }

  if (!inflight) {
    // A paused or frozen pipeline moves no host, not even to converge: people are looking.
    if (pstate.paused || pstate.frozen) return Status::Ok();
    // Both act on the release every host should run at rest: read it once.
    LOCKSTEP_ASSIGN_OR_RETURN(auto desired, DesiredRelease(*store_, p.name));
    if (!desired.has_value()) return Status::Ok();
    LOCKSTEP_RETURN_IF_ERROR(AdvanceTrailingBringup(p, *desired, pstate, now, pass));
    return Converge(p, *desired, now, pass);
  }

  LOCKSTEP_RETURN_IF_ERROR(LoadAgents());
  LOCKSTEP_ASSIGN_OR_RETURN(auto host_rows, HostsOf(inflight->id));
  pass.live_releases.insert(inflight->id);
  ReleaseCtx c(p, *inflight, *host_rows, agents_, now, pass);
  c.pstate = pstate;
  // One record per wave of the pipeline; only waves that have started are stored.
  LOCKSTEP_ASSIGN_OR_RETURN(auto stored_waves, store_->Waves(inflight->id));
  size_t wave_count = inflight->kind == release_kind::kRollback ? 1 : p.waves.size();
  c.waves.resize(wave_count);
  for (size_t i = 0; i < wave_count; ++i) {
    c.waves[i].release_id = inflight->id;
    c.waves[i].index = static_cast<int>(i);
    c.waves[i].name = inflight->kind == release_kind::kRollback ? "rollback" : p.waves[i].name;
  }
  for (auto& w : stored_waves) {
    if (w.index >= 0 && static_cast<size_t>(w.index) < c.waves.size()) {
      c.waves[static_cast<size_t>(w.index)] = std::move(w);
    }
  }
  for (auto& w : c.waves) {
    auto sw = pending_switches_.find({inflight->id, w.index});
    if (sw == pending_switches_.end()) continue;
    auto [first, last] = sw->second;
    if (w.first_switch_at == 0 || first < w.first_switch_at) w.first_switch_at = first;
    if (last > w.last_switch_at) w.last_switch_at = last;
    c.MarkWave(w.index);
  }
  if (inflight->previous_release_id > 0) {
    auto prev = ReleaseById(inflight->previous_release_id);
    if (prev.ok()) c.previous = *prev;
  }
  if (inflight->kind == release_kind::kRollout) {
    LOCKSTEP_ASSIGN_OR_RETURN(auto tracks, store_->BringupTracks(inflight->id));
    for (auto& t : tracks) {
      std::string region = t.region;
      c.bringup.emplace(std::move(region), std::move(t));
    }
    // A rollout about to begin its first wave gives each bring-up region its track.
    if (c.bringup.empty() && inflight->state == release_state::kRolling &&
        inflight->current_wave == 0 && !c.waves.empty() &&
        c.waves[0].state == wave_state::kPending) {
      for (const auto& region : p.BringupRegions()) {
        BringupRecord t;
        t.release_id = inflight->id;
        t.region = region;
        t.started_at = now;
        c.bringup.emplace(region, std::move(t));
        c.MarkTrack(region);
      }
    }
  }

  // An abort request turns a rollout into a revert that ends "aborted".
  if (inflight->abort_requested_at > 0 &&
      (inflight->state == release_state::kRolling || inflight->state == release_state::kHalted)) {
    if (inflight->kind == release_kind::kRollback) {
      finish(*inflight, release_state::kAborted, "aborted by " + inflight->abort_requested_by);
      return Status::Ok();
    }
    BeginRevert(c, release_state::kAborting, "aborted by " + inflight->abort_requested_by);
  }

  // The pipeline lost the wave this rollout is in: its file was edited and lockstepd restarted
  // mid-release (a reload keeps the definition a release started with, a restart cannot).
  // Nothing says how to go on, so what the release changed is put back.
  if (inflight->kind == release_kind::kRollout &&
      (inflight->state == release_state::kRolling || inflight->state == release_state::kHalted) &&
      static_cast<size_t>(std::max(0, inflight->current_wave)) >= p.waves.size()) {
    BeginRevert(c, release_state::kRollingBack,
                "pipeline " + p.name + " no longer has wave " +
                    std::to_string(inflight->current_wave + 1) +
                    " (its file changed while the release was in flight)");
  }

  if (inflight->state == release_state::kRolling) {
    if (inflight->kind == release_kind::kRollback) {
      AdvanceRollbackRelease(c);
    } else {
      LOCKSTEP_ASSIGN_OR_RETURN(auto gates, store_->GateResults(inflight->id));
      c.gate_results = std::move(gates);
      AdvanceRollout(c);
    }
  }
  // Bring-up regions go on while the serving regions roll, hold (halted) or have finished.
  if (inflight->kind == release_kind::kRollout &&
      (inflight->state == release_state::kRolling || inflight->state == release_state::kHalted ||
       inflight->state == release_state::kSucceeded)) {
    if (c.gate_results.empty() && !c.p.metric_gates.empty()) {
      LOCKSTEP_ASSIGN_OR_RETURN(auto gates, store_->GateResults(inflight->id));
      c.gate_results = std::move(gates);
    }
    AdvanceBringup(c);
  }
  if (inflight->state == release_state::kRollingBack ||
      inflight->state == release_state::kAborting) {
    AdvanceRevert(c);
  }
  c.Flush();
  return Status::Ok();
}

Status Engine::StartRelease(const Pipeline& p, ReleaseRecord& r, UnixMs now, Pass& pass) {
  r.state = release_state::kRolling;
  r.started_at = now;
  r.current_wave = 0;
  if (r.kind == release_kind::kRollout) {
    LOCKSTEP_ASSIGN_OR_RETURN(auto last, DesiredRelease(*store_, p.name));
    r.previous_version = last.has_value() ? last->version : "";
    r.previous_release_id = last.has_value() ? last->id : 0;
  } else {
    LOCKSTEP_ASSIGN_OR_RETURN(auto last, DesiredRelease(*store_, p.name));
    r.previous_version = last.has_value() ? last->version : "";
  }
  // Bring-up regions still walking the release before take this one instead.
  LOCKSTEP_ASSIGN_OR_RETURN(auto before, DesiredRelease(*store_, p.name));
  if (before.has_value()) {
    SupersedeTracks(pass, before->id, "release " + std::to_string(r.id) + " took the region over",
                    now);
  }
  pass.batch.releases.push_back(r);
  pass.changed_releases.insert(r.id);
  Audit(pass, now, "release.start", r, p.name + " " + r.version);
  pass.events.push_back({&p, r, "release_started", ""});
  spdlog::info("release {} ({} {}, {}) started", r.id, p.name, r.version, r.kind);
  return Status::Ok();
}

v1::Task Engine::BuildTask(const Pipeline& p, const ReleaseRecord& target,
                           const HostRecord& h) const {
  v1::Task t;
  t.set_task_id(h.task_id);
  t.set_kind(TaskKindOf(h.step));
  t.set_skip_if_current(h.step == host_step::kConfirm);
  t.set_pipeline(p.name);
  t.set_release_id(h.release_id);
  t.set_version(target.version);
  t.set_artifact_url(target.artifact_url);
  t.set_sha256(target.sha256);
  t.set_mirror_url(p.MirrorUrl(h.region, target.artifact_url));
  t.set_withhold_hook_output(p.WithholdsHookOutput(h.region));
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

// ------------------------------------------------------------------ releases awaiting artifacts

namespace {
// How long a webhook's release may wait for its artifact: the pipeline's
// trigger.github.artifact_wait, or the default if its trigger was removed meanwhile.
std::chrono::milliseconds ArtifactWait(const Pipeline& p) {
  if (p.github.has_value()) return p.github->artifact_wait;
  GithubTrigger defaults;
  return defaults.artifact_wait;
}
}  // namespace

StatusOr<ReleaseRecord> Engine::CreateReleaseAwaitingArtifact(const NewRelease& req,
                                                              const std::string& actor) const {
  // Everything but the digest, which nobody knows yet.
  NewRelease checked = req;
  checked.sha256 = std::string(64, '0');
  LOCKSTEP_RETURN_IF_ERROR(ValidateRelease(checked));
  const Pipeline* p = FindPipeline(req.pipeline);
  if (p == nullptr) return NotFound("pipeline: unknown pipeline \"" + req.pipeline + "\"");
  const UnixMs now = clock_->Now();
  ReleaseRecord r = NewReleaseRecord(req, release_state::kWaitingForArtifact, now);
  r.created_by = actor;
  r.reason = "waiting for its artifact " + req.artifact_url + " (at most " +
             FormatDuration(ArtifactWait(*p)) + ", trigger.github.artifact_wait)";
  return InsertRelease(req, std::move(r),
                       MakeAudit(now, actor, "release.create", "",
                                 CreationDetail(req) + ", waiting for its artifact"));
}

void Engine::ArtifactChecked(int64_t release_id, const std::string& sha256,
                             const std::string& error) {
  std::lock_guard lock(artifact_checks_mu_);
  ArtifactCheck& check = artifact_checks_[release_id];
  check.seq = artifact_check_seq_++;
  check.sha256 = sha256;
  check.error = sha256.empty() && error.empty() ? "the artifact could not be read" : error;
}

void Engine::Finish(Pass& pass, const Pipeline& p, ReleaseRecord& r, const char* state,
                    const std::string& reason, UnixMs now) const {
  r.state = state;
  r.reason = reason;
  r.finished_at = now;
  pass.batch.releases.push_back(r);
  Audit(pass, now, std::string("release.") + state, r, reason);
  pass.events.push_back({&p, r, state, reason});
  pass.changed_releases.insert(r.id);
  SupersedeTracks(pass, r.id, std::string("the release ended ") + state, now);
}

Status Engine::SettleWaitingReleases(const Pipeline& p, std::vector<ReleaseRecord>& open,
                                     UnixMs now, Pass& pass) {
  const std::chrono::milliseconds allowed = ArtifactWait(p);
  for (ReleaseRecord& r : open) {
    if (r.state != release_state::kWaitingForArtifact) continue;
    if (!waiting_seen_.count(r.id)) {
      pass.events.push_back({&p, r, release_state::kWaitingForArtifact, r.reason});
    }
    if (r.abort_requested_at != 0) {
      Finish(pass, p, r, release_state::kAborted,
             "aborted by " + r.abort_requested_by + " before its artifact arrived", now);
      continue;
    }
    // A newer rollout replaces it, as a newer queued release replaces an older queued one; a
    // release waiting for its artifact never replaces one that is queued (open is oldest
    // first, so `newer` ends as the newest).
    const ReleaseRecord* newer = nullptr;
    for (const ReleaseRecord& o : open) {
      if (o.id > r.id && o.kind == release_kind::kRollout && o.abort_requested_at == 0 &&
          !release_state::IsFinal(o.state)) {
        newer = &o;
      }
    }
    if (newer != nullptr) {
      Finish(pass, p, r, release_state::kSuperseded,
             "superseded by release " + std::to_string(newer->id), now);
      continue;
    }
    std::optional<ArtifactCheck> check;
    {
      std::lock_guard lock(artifact_checks_mu_);
      auto it = artifact_checks_.find(r.id);
      if (it != artifact_checks_.end()) check = it->second;
    }
    if (check.has_value()) {
      std::string sha = check->sha256;
      std::transform(sha.begin(), sha.end(), sha.begin(),
                     [](unsigned char ch) { return static_cast<char>(std::tolower(ch)); });
      std::string why = check->error;
      if (why.empty() && !IsSha256Hex(sha)) {
        why = "the digest of " + r.artifact_url + " (\"" + LogSafe(sha, 80) + "\") is not a sha256";
      }
      if (why.empty()) {
        // A version names one artifact forever (see CreateRelease).
        LOCKSTEP_ASSIGN_OR_RETURN(auto first, FirstWithArtifact(*store_, p.name, r.version));
        if (first.has_value() && first->sha256 != sha) {
          why = "version " + r.version + " of pipeline " + p.name + " is release " +
                std::to_string(first->id) + " with sha256 " + first->sha256 + ", but " +
                r.artifact_url + " has sha256 " + sha + "; a version names one artifact forever";
        }
      }
      if (!why.empty()) {
        Finish(pass, p, r, release_state::kFailed, why, now);
        continue;
      }
      r.sha256 = sha;
      r.state = release_state::kQueued;
      r.reason.clear();
      pass.batch.releases.push_back(r);
      pass.changed_releases.insert(r.id);
      const std::string detail = "artifact " + r.artifact_url + " has sha256 " + sha;
      Audit(pass, now, "release.queued", r, detail);
      pass.events.push_back({&p, r, release_state::kQueued, detail});
      spdlog::info("release {} ({} {}): artifact arrived, queued", r.id, p.name, r.version);
      continue;
    }
    const UnixMs deadline = r.created_at + allowed.count();
    if (now >= deadline) {
      Finish(pass, p, r, release_state::kFailed,
             "artifact " + r.artifact_url + " did not appear within " + FormatDuration(allowed) +
                 " (trigger.github.artifact_wait)",
             now);
      continue;
    }
    pass.WakeAt(deadline);
  }
  return Status::Ok();
}

void Engine::ForgetSettledArtifacts(const Pass& pass) {
  {
    std::lock_guard lock(artifact_checks_mu_);
    std::erase_if(artifact_checks_, [&](const auto& entry) {
      if (entry.second.seq >= pass.artifact_check_seq) return false;  // made during the pass
      auto seen = releases_seen_.find(entry.first);
      return seen == releases_seen_.end() ||
             seen->second.state != release_state::kWaitingForArtifact;
    });
  }
  waiting_seen_.clear();
  for (const auto& [id, r] : releases_seen_) {
    if (r.state == release_state::kWaitingForArtifact) waiting_seen_.insert(id);
  }
}

}  // namespace lockstep
