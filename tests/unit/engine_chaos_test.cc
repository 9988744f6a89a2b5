// Randomized histories against the engine: seeded sequences of releases (good and bad),
// slow and failing hooks, on-call rollbacks, aborts, approvals, pauses, freezes, kills and
// stops of agents (some coming back with an empty root) and restarts of lockstepd, each
// followed by quiescence and checks of what must always hold:
//
//   - nothing is stuck: once people stop interfering, every release ends;
//   - one version everywhere: at rest every host runs the pipeline's desired release, and
//     has it on disk;
//   - nothing past a failed wave: no wave after a failed one started, no host of it was
//     touched;
//   - a rollback that reports success means every host it counted is on its version and
//     will stay there (no task of the preempted release still queued on it);
//   - every operator action is audited.
//
// Agents are simulated the way lockstep-agent behaves (tasks run one at a time in order, a
// repeated task id is answered from the journal, a killed agent loses its queue, a stopped
// one answers nothing), on a manual clock: no sleeps, no network, the real engine and a real
// SQLite store. LOCKSTEP_CHAOS_SEEDS (default 12) and LOCKSTEP_CHAOS_FIRST_SEED (default 1)
// choose the seeds; scripts/chaos.sh runs hundreds and prints the seed of any failure.

#include <gtest/gtest.h>

#include <cstdlib>
#include <deque>
#include <map>
#include <memory>
#include <random>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include "orchestrator/engine/engine.h"
#include "orchestrator/engine/history.h"

namespace lockstep {
namespace {

namespace v1 = lockstep::v1;
using std::chrono::milliseconds;
using std::chrono::seconds;

const std::vector<std::string> kRegions = {"us-east-1", "eu-west-1", "ap-southeast-2"};

struct SimTask {
  v1::Task task;
  UnixMs done_at = 0;  // when it finishes, once started
};

// One host running lockstep-agent.
struct SimAgent {
  std::string name;
  std::string region;
  std::string current;
  std::set<std::string> disk;
  std::map<std::string, v1::TaskResult> journal;
  std::deque<SimTask> queue;  // the first is running once started
  bool up = true;             // process running and connected
  bool stopped = false;       // SIGSTOP: connected, silent
  bool reconnect = false;     // its connection broke while stopped: it reconnects when continued
  UnixMs next_heartbeat = 0;
};

class Chaos {
 public:
  explicit Chaos(uint64_t seed) : seed_(seed), rng_(seed) {}

  // Returns "" when every invariant held, else what broke (with the history's tail).
  std::string Run() {
    auto s = OpenSqliteStore(":memory:");
    if (!s.ok()) return "store: " + s.status().ToString();
    store_ = std::move(*s);
    pipeline_ = MakePipeline();
    StartEngine();
    for (const auto& region : kRegions) {
      for (int i = 1; i <= 3; ++i) {
        SimAgent a;
        a.name = region + "-" + std::to_string(i);
        a.region = region;
        agents_[a.name] = a;
        Connect(agents_[a.name]);
      }
    }
    // A first good release, undisturbed, so the pipeline has somewhere to go back to.
    calm_ = true;
    Create(/*bad=*/false);
    for (int i = 0; i < 600 && !DesiredRelease(*store_, "monolith").value().has_value(); ++i) {
      if (auto r = InFlight()) (void)engine_->Approve(r->id, "chaos-setup");
      Tick(milliseconds(500));
    }
    if (!DesiredRelease(*store_, "monolith").value().has_value()) {
      return "seed " + std::to_string(seed_) + ": the first release never succeeded";
    }
    calm_ = false;
    for (int step = 0; step < 160 && failure_.empty(); ++step) {
      ChaosStep();
      Tick(milliseconds(Uniform(50, 2500)));
    }
    if (failure_.empty()) Quiesce();
    if (failure_.empty()) CheckAtRest();
    if (failure_.empty()) return "";
    std::ostringstream out;
    out << "seed " << seed_ << ": " << failure_ << "\nlast steps:\n";
    size_t from = history_.size() > 40 ? history_.size() - 40 : 0;
    for (size_t i = from; i < history_.size(); ++i) out << "  " << history_[i] << "\n";
    return out.str();
  }

 private:
  // ------------------------------------------------------------------ set-up

  Pipeline MakePipeline() {
    Pipeline p;
    p.name = "monolith";
    p.file = "monolith.yaml";
    p.regions = kRegions;
    const char* names[] = {"canary", "half", "all"};
    const int percent[] = {0, 50, 100};
    for (int i = 0; i < 3; ++i) {
      WaveSpec w;
      w.name = names[i];
      w.regions = kRegions;
      w.hosts.kind = i == 0 ? HostSelector::Kind::kCount : HostSelector::Kind::kPercent;
      w.hosts.value = i == 0 ? 1 : percent[i];
      w.bake = milliseconds(Uniform(0, 3) * 2000);
      p.waves.push_back(w);
    }
    if (Chance(0.5)) p.waves[1].manual_approval = true;
    if (Chance(0.3)) p.rollback.tolerate_failed_hosts = {false, 1};
    p.check_hook = true;
    p.concurrency_per_region = Chance(0.5) ? 1 : 100;
    p.timeouts.fetch = seconds(5);
    p.timeouts.hook = seconds(5);
    p.timeouts.agent_lost = seconds(10);
    p.timeouts.approval = seconds(120);
    return p;
  }

  void StartEngine() {
    engine_ =
        std::make_unique<Engine>(std::vector<Pipeline>{pipeline_}, store_.get(), &clock_, &sink_);
    sink_.chaos = this;
    next_pass_ = clock_.Now();
  }

  // ------------------------------------------------------------------ randomness

  int Uniform(int lo, int hi) { return std::uniform_int_distribution<int>(lo, hi)(rng_); }
  bool Chance(double p) { return std::bernoulli_distribution(p)(rng_); }
  SimAgent& AnyAgent() {
    auto it = agents_.begin();
    std::advance(it, Uniform(0, static_cast<int>(agents_.size()) - 1));
    return it->second;
  }
  void Log(const std::string& what) {
    history_.push_back(FormatUnixMs(clock_.Now()).substr(11) + " " + what);
  }
  void Fail(const std::string& what) {
    if (failure_.empty()) failure_ = what;
  }

  // ------------------------------------------------------------------ operators

  void Create(bool bad) {
    std::string version = "v" + std::to_string(++versions_) + (bad ? "-bad" : "");
    if (bad) bad_.insert(version);
    NewRelease r{"monolith",           version, "http://127.0.0.1:1/" + version + ".tar.gz",
                 std::string(64, 'a'), "",      ""};
    auto created = engine_->CreateRelease(r, "chaos");
    Log("create " + version + (created.ok() ? "" : ": " + created.status().ToString()));
    if (created.ok()) ++audited_["release.create"];
    Pass();
  }

  std::optional<ReleaseRecord> InFlight() {
    auto open = OpenReleases(*store_, "monolith");
    if (!open.ok()) return std::nullopt;
    for (const auto& r : *open) {
      if (release_state::IsInFlight(r.state)) return r;
    }
    return std::nullopt;
  }

  void ChaosStep() {
    int dice = Uniform(0, 99);
    if (dice < 22) {
      Create(Chance(0.35));
    } else if (dice < 30) {
      auto rb = engine_->Rollback("monolith", "", "chaos");
      Log("rollback" + (rb.ok() ? " to " + rb->version : ": " + rb.status().ToString()));
      if (rb.ok()) {
        ++audited_["pipeline.rollback"];
        rollbacks_.insert(rb->id);
      }
    } else if (dice < 35) {
      if (auto r = InFlight()) {
        Status st = engine_->Abort(r->id, "chaos");
        Log("abort " + std::to_string(r->id) + (st.ok() ? "" : ": " + st.ToString()));
        if (st.ok()) ++audited_["release.abort"];
      }
    } else if (dice < 45) {
      if (auto r = InFlight()) {
        Status st = engine_->Approve(r->id, "chaos");
        if (st.ok()) {
          Log("approve " + std::to_string(r->id));
          ++audited_["release.approve"];
        }
      }
    } else if (dice < 50) {
      Toggle("pause");
    } else if (dice < 54) {
      Toggle("freeze");
    } else if (dice < 64) {
      SimAgent& a = AnyAgent();
      if (a.up) {
        Kill(a, Chance(0.3));
      } else {
        Restart(a);
      }
    } else if (dice < 70) {
      SimAgent& a = AnyAgent();
      if (a.up) {
        a.stopped = !a.stopped;
        Log(a.name + (a.stopped ? " stopped" : " continued"));
        if (!a.stopped && a.reconnect) Connect(a);
      }
    } else if (dice < 74) {
      RestartLockstepd();
    }
    Pass();
  }

  void Toggle(const std::string& what) {
    auto st = store_->GetPipelineState("monolith");
    if (!st.ok()) return;
    Status done;
    std::string action;
    if (what == "pause") {
      action = st->paused ? "pipeline.resume" : "pipeline.pause";
      done =
          st->paused ? engine_->Resume("monolith", "chaos") : engine_->Pause("monolith", "chaos");
    } else {
      action = st->frozen ? "pipeline.unfreeze" : "pipeline.freeze";
      done = st->frozen ? engine_->Unfreeze("monolith", "chaos")
                        : engine_->Freeze("monolith", "chaos test", "chaos");
    }
    Log(action + (done.ok() ? "" : ": " + done.ToString()));
    if (done.ok()) ++audited_[action];
  }

  // ------------------------------------------------------------------ agents

  void Connect(SimAgent& a) {
    v1::AgentHello hello;
    hello.set_name(a.name);
    hello.set_region(a.region);
    hello.set_current_version(a.current);
    for (const auto& v : a.disk) hello.add_versions_on_disk(v);
    auto st = engine_->AgentConnected(hello);
    if (!st.ok()) Fail("hello of " + a.name + " refused: " + st.status().ToString());
    a.up = true;
    a.reconnect = false;
    a.next_heartbeat = clock_.Now() + 1000;
    // Answers not yet sent went with the old connection; the engine re-sends their tasks.
    std::erase_if(answers_, [&](const auto& ans) { return ans.first == a.name; });
  }

  void Kill(SimAgent& a, bool wipe) {
    // The task in progress dies with the process, possibly after its switch.
    if (!a.queue.empty() && a.queue.front().done_at > 0 &&
        a.queue.front().task.kind() != v1::Task::PREPARE && Chance(0.5)) {
      a.current = a.queue.front().task.version();
      a.disk.insert(a.current);
    }
    a.queue.clear();
    a.up = false;
    a.stopped = false;
    if (wipe) {
      a.current.clear();
      a.disk.clear();
      a.journal.clear();
    }
    Log("kill " + a.name + (wipe ? " (root wiped)" : "") + ", on " +
        (a.current.empty() ? "nothing" : a.current));
    (void)engine_->AgentDisconnected(a.name);
  }

  void Restart(SimAgent& a) {
    Log("start " + a.name + " on " + (a.current.empty() ? "nothing" : a.current));
    Connect(a);
  }

  void RestartLockstepd() {
    Log("lockstepd restarts");
    StartEngine();
    (void)engine_->MarkAllDisconnected();
    // Every running agent reconnects to the new process; stopped ones when continued.
    for (auto& [name, a] : agents_) {
      if (a.up && !a.stopped) Connect(a);
      if (a.up && a.stopped) a.reconnect = true;
    }
  }

  // A task arrives at an agent: a repeated id is answered from the journal, one queued or
  // running is ignored, anything else queued.
  bool Deliver(const std::string& agent, const v1::Task& task) {
    auto it = agents_.find(agent);
    if (it == agents_.end() || !it->second.up) return false;
    SimAgent& a = it->second;
    if (a.reconnect) return false;  // its old connection is gone
    if (auto j = a.journal.find(task.task_id()); j != a.journal.end()) {
      answers_.push_back({agent, j->second});
      return true;
    }
    for (const auto& q : a.queue) {
      if (q.task.task_id() == task.task_id()) return true;
    }
    a.queue.push_back({task, 0});
    return true;
  }

  int TaskMs(const v1::Task& t) {
    // Mostly quick; now and then slower than the engine's budget for it.
    if (!calm_ && Chance(0.02)) return 70'000;
    return Uniform(50, t.kind() == v1::Task::PREPARE ? 1500 : 3000);
  }

  // Runs the agents' queues up to now.
  void RunAgents() {
    for (auto& [name, a] : agents_) {
      if (!a.up || a.stopped) continue;
      for (int guard = 0; guard < 20 && !a.queue.empty(); ++guard) {
        SimTask& head = a.queue.front();
        if (head.done_at == 0) head.done_at = clock_.Now() + TaskMs(head.task);
        if (head.done_at > clock_.Now()) break;
        v1::TaskResult r = Execute(a, head.task);
        a.journal[head.task.task_id()] = r;
        a.queue.pop_front();
        answers_.push_back({name, r});
      }
    }
  }

  v1::TaskResult Execute(SimAgent& a, const v1::Task& t) {
    v1::TaskResult r;
    r.set_task_id(t.task_id());
    r.set_ok(true);
    const std::string& v = t.version();
    if (t.skip_if_current() && a.current == v && a.disk.count(v)) {
      r.set_current_version(a.current);
      for (const auto& d : a.disk) r.add_versions_on_disk(d);
      return r;
    }
    if (t.kind() == v1::Task::PREPARE || t.kind() == v1::Task::DEPLOY) a.disk.insert(v);
    if (t.kind() != v1::Task::PREPARE) {
      if (!a.disk.count(v)) {
        r.set_ok(false);
        r.set_failed_step("switch");
        r.set_error(v + " is not prepared");
      } else {
        a.current = v;
        r.set_switched_at_ms(clock_.Now());
        if (bad_.count(v)) {
          r.set_ok(false);
          r.set_failed_step("check");
          r.set_error("deploy/check of " + v + " exited with status 1");
        }
      }
    }
    r.set_current_version(a.current);
    for (const auto& d : a.disk) r.add_versions_on_disk(d);
    return r;
  }

  // ------------------------------------------------------------------ time and passes

  void Pass() {
    auto next = engine_->Reconcile();
    if (!next.ok()) {
      Fail("pass failed: " + next.status().ToString());
      return;
    }
    next_pass_ = *next == 0 ? clock_.Now() + 5'000 : *next;
    CheckRollbacks();
  }

  void Deliveries() {
    for (int guard = 0; guard < 100 && !answers_.empty(); ++guard) {
      auto batch = std::move(answers_);
      answers_.clear();
      std::vector<std::pair<std::string, v1::TaskResult>> held;
      for (auto& [agent, result] : batch) {
        SimAgent& a = agents_[agent];
        if (!a.up || a.reconnect) continue;  // lost with the connection; re-sent later
        if (a.stopped) {                     // sent when it runs again
          held.emplace_back(agent, std::move(result));
          continue;
        }
        got_results_ = true;
        Status st = engine_->TaskFinished(agent, result);
        if (!st.ok()) Fail("TaskFinished: " + st.ToString());
      }
      if (answers_.empty()) {
        answers_ = std::move(held);
        break;
      }
      answers_.insert(answers_.end(), held.begin(), held.end());
    }
  }

  void Tick(milliseconds d) {
    UnixMs until = clock_.Now() + d.count();
    for (int guard = 0; guard < 10'000 && clock_.Now() < until; ++guard) {
      clock_.Advance(milliseconds(std::min<int64_t>(100, until - clock_.Now())));
      RunAgents();
      Deliveries();
      for (auto& [name, a] : agents_) {
        if (!a.up || a.stopped || clock_.Now() < a.next_heartbeat) continue;
        a.next_heartbeat = clock_.Now() + 1000;
        auto changed = engine_->AgentHeartbeat(name, a.current);
        if (!changed.ok()) Fail("heartbeat: " + changed.status().ToString());
        if (changed.ok() && *changed) next_pass_ = clock_.Now();
      }
      if (clock_.Now() >= next_pass_ || sink_.sent || got_results_) {
        got_results_ = false;
        sink_.sent = false;
        Pass();
        Deliveries();
      }
      if (!failure_.empty()) return;
    }
  }

  // ------------------------------------------------------------------ invariants

  // A rollback that says it succeeded: every host it counted done that lockstepd can hear
  // from is on its version, and nothing queued on that host would take it elsewhere. (A
  // host that died after it was done is the CLI's to name as offline.)
  void CheckRollbacks() {
    for (int64_t id : rollbacks_) {
      if (checked_rollbacks_.count(id)) continue;
      auto r = store_->GetRelease(id);
      if (!r.ok() || r->state != release_state::kSucceeded) {
        if (r.ok() && release_state::IsFinal(r->state)) checked_rollbacks_.insert(id);
        continue;
      }
      checked_rollbacks_.insert(id);
      auto hosts = store_->Hosts(id);
      if (!hosts.ok()) continue;
      for (const auto& h : *hosts) {
        if (h.state != host_state::kDone) continue;
        const SimAgent& a = agents_[h.agent];
        if (!a.up || a.stopped || a.reconnect) continue;
        if (a.current != r->version) {
          Fail("rollback " + std::to_string(id) + " succeeded but " + h.agent + " runs " +
               (a.current.empty() ? "nothing" : a.current) + ", not " + r->version);
        }
        for (const auto& q : a.queue) {
          if (q.task.kind() != v1::Task::PREPARE && q.task.version() != r->version) {
            Fail("rollback " + std::to_string(id) + " succeeded but " + h.agent +
                 " still has a task to switch to " + q.task.version());
          }
        }
      }
    }
  }

  // People stop interfering; every agent comes back; the fleet must settle by itself.
  void Quiesce() {
    Log("quiesce");
    for (auto& [name, a] : agents_) {
      a.stopped = false;
      if (!a.up || a.reconnect) Restart(a);
    }
    auto st = store_->GetPipelineState("monolith");
    if (st.ok() && st->frozen) Toggle("freeze");
    if (st.ok() && st->paused) Toggle("pause");
    Pass();
    for (int i = 0; i < 2400; ++i) {  // at most 20 simulated minutes
      Tick(milliseconds(500));
      if (!failure_.empty()) return;
      if (auto r = InFlight()) {
        if (engine_->Approve(r->id, "chaos").ok()) {
          Log("approve " + std::to_string(r->id));
          ++audited_["release.approve"];
        }
      }
      // A rollback during quiescence (the last chaos step) holds the pipeline again.
      auto ps = store_->GetPipelineState("monolith");
      if (ps.ok() && ps->paused) Toggle("pause");
      if (Settled()) return;
    }
    std::string open;
    if (auto all = OpenReleases(*store_, "monolith"); all.ok()) {
      for (const auto& r : *all) {
        open += " release " + std::to_string(r.id) + " " + r.version + " " + r.state + " (" +
                r.reason + ")";
      }
    }
    std::string hosts;
    for (const auto& [name, a] : agents_) {
      hosts += " " + name + "=" + (a.current.empty() ? "-" : a.current) +
               (a.queue.empty() ? "" : "+" + std::to_string(a.queue.size()));
    }
    auto ps = store_->GetPipelineState("monolith");
    if (ps.ok()) {
      hosts += std::string("; paused=") + (ps->paused ? ps->paused_by : "no") +
               " frozen=" + (ps->frozen ? "yes" : "no");
    }
    if (auto desired = DesiredRelease(*store_, "monolith"); desired.ok() && desired->has_value()) {
      hosts +=
          "; desired " + (*desired)->version + " (release " + std::to_string((*desired)->id) + ")";
      for (const auto& h : store_->Hosts((*desired)->id).value()) {
        if (agents_[h.agent].current == (*desired)->version) continue;
        hosts += "; " + h.agent + ": " + h.state + " " + h.step + "-" + std::to_string(h.attempt) +
                 " " + h.detail;
      }
    }
    Fail("stuck after 20 simulated minutes without interference:" + open + ";" + hosts);
  }

  bool Settled() {
    auto open = OpenReleases(*store_, "monolith");
    if (!open.ok() || !open->empty()) return false;
    auto desired = DesiredRelease(*store_, "monolith");
    if (!desired.ok() || !desired->has_value()) return false;
    for (const auto& [name, a] : agents_) {
      if (!a.queue.empty() || a.current != (*desired)->version) return false;
    }
    return true;
  }

  void CheckAtRest() {
    auto desired = DesiredRelease(*store_, "monolith").value();
    for (const auto& [name, a] : agents_) {
      if (!a.disk.count(desired->version)) {
        Fail(name + " runs " + desired->version + " without it on disk");
      }
      if (bad_.count(a.current)) Fail(name + " rests on a bad release " + a.current);
    }
    auto releases = store_->FindReleases(ReleaseQuery::Newest("monolith", 0)).value();
    for (const auto& r : releases) {
      if (!release_state::IsFinal(r.state)) Fail("release " + std::to_string(r.id) + " open");
      if (r.kind == release_kind::kRollout && r.state == release_state::kSucceeded &&
          bad_.count(r.version)) {
        Fail("bad release " + r.version + " succeeded");
      }
      auto waves = store_->Waves(r.id).value();
      int failed_wave = -1;
      for (const auto& w : waves) {
        if (failed_wave >= 0 && w.index > failed_wave && w.state != wave_state::kPending) {
          Fail("release " + std::to_string(r.id) + ": wave " + w.name + " is " + w.state +
               " after failed wave " + std::to_string(failed_wave));
        }
        if (w.state == wave_state::kFailed && failed_wave < 0) failed_wave = w.index;
      }
      if (failed_wave >= 0 && r.kind == release_kind::kRollout) {
        for (const auto& h : store_->Hosts(r.id).value()) {
          if (h.wave > failed_wave && h.switch_sent) {
            Fail("release " + std::to_string(r.id) + ": " + h.agent + " of wave " +
                 std::to_string(h.wave) + " was sent a switch after wave " +
                 std::to_string(failed_wave) + " failed");
          }
        }
      }
    }
    // Every operator action that was accepted is in the audit log.
    std::map<std::string, int> logged;
    for (const auto& e : store_->Audit(100'000).value()) {
      if (e.actor == "chaos") ++logged[e.action];
    }
    for (const auto& [action, n] : audited_) {
      if (logged[action] != n) {
        Fail(action + ": " + std::to_string(n) + " accepted, " + std::to_string(logged[action]) +
             " audited");
      }
    }
  }

  struct Sink final : TaskSink {
    Chaos* chaos = nullptr;
    bool sent = false;
    bool Send(const std::string& agent, const v1::Task& task) override {
      sent = true;
      return chaos->Deliver(agent, task);
    }
    bool SendGateCheck(const std::string&, const v1::GateCheck&) override { return false; }
  };

  const uint64_t seed_;
  std::mt19937_64 rng_;
  ManualClock clock_;
  Sink sink_;
  std::unique_ptr<Store> store_;
  Pipeline pipeline_;
  std::unique_ptr<Engine> engine_;
  std::map<std::string, SimAgent> agents_;
  std::vector<std::pair<std::string, v1::TaskResult>> answers_;
  std::set<std::string> bad_;
  std::set<int64_t> rollbacks_, checked_rollbacks_;
  std::map<std::string, int> audited_;
  int versions_ = 0;
  UnixMs next_pass_ = 0;
  bool got_results_ = false;
  bool calm_ = false;  // no hook slower than its budget
  std::vector<std::string> history_;
  std::string failure_;
};

uint64_t EnvOr(const char* name, uint64_t fallback) {
  const char* v = std::getenv(name);
  return v && *v ? std::strtoull(v, nullptr, 10) : fallback;
}

TEST(EngineChaosTest, RandomHistoriesEndAtRestOnOneVersionWithEveryInvariantHeld) {
  const uint64_t first = EnvOr("LOCKSTEP_CHAOS_FIRST_SEED", 1);
  const uint64_t count = EnvOr("LOCKSTEP_CHAOS_SEEDS", 12);
  int failures = 0;
  for (uint64_t seed = first; seed < first + count; ++seed) {
    std::string failure = Chaos(seed).Run();
    if (!failure.empty()) {
      ++failures;
      ADD_FAILURE() << failure;
      std::printf("CHAOS FAILED seed %llu\n", static_cast<unsigned long long>(seed));
    }
  }
  std::printf("chaos: %llu seeds from %llu, %d failed\n", static_cast<unsigned long long>(count),
              static_cast<unsigned long long>(first), failures);
}

}  // namespace
}  // namespace lockstep
