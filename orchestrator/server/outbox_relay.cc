#include "orchestrator/server/outbox_relay.h"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <chrono>
#include <nlohmann/json.hpp>

#include "orchestrator/store/store.h"

namespace lockstep {
namespace {

// Pending rows are looked for this often without a kick (rows a previous leader left).
constexpr std::chrono::milliseconds kPollEvery{1000};
// Rows read per look; more wait for the next.
constexpr int kBatch = 100;

}  // namespace

std::vector<OutboxRecord> NotificationRows(const Pipeline& pipeline, const ReleaseRecord& release,
                                           const std::string& event, const std::string& detail,
                                           UnixMs now) {
  std::vector<OutboxRecord> rows;
  if (pipeline.notify.empty()) return rows;
  std::string text = pipeline.name + " " + release.version + ": " + event;
  if (release.kind == release_kind::kRollback) text += " (on-call rollback)";
  if (!detail.empty()) {
    text += " — " + detail;
  } else if (!release.reason.empty()) {
    text += " — " + release.reason;
  }
  if (!release.author.empty()) text += " (by " + release.author + ")";
  nlohmann::json fields = {
      {"pipeline", pipeline.name}, {"release_id", release.id}, {"version", release.version},
      {"commit", release.commit},  {"author", release.author}, {"state", release.state},
      {"reason", release.reason},  {"detail", detail},         {"kind", release.kind}};
  // `replace` rather than throwing: a release note with invalid UTF-8 should still notify.
  const std::string payload = NotificationBody(event, text, fields)
                                  .dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
  for (const auto& spec : pipeline.notify) {
    if (!spec.events.empty() &&
        std::find(spec.events.begin(), spec.events.end(), event) == spec.events.end()) {
      continue;
    }
    OutboxRecord row;
    row.created_at = now;
    row.pipeline = pipeline.name;
    row.event = event;
    row.url = spec.url;
    row.payload = payload;
    rows.push_back(std::move(row));
  }
  return rows;
}

OutboxRelay::OutboxRelay(Store* store, Notifier* notifier, const Clock* clock)
    : store_(store), notifier_(notifier), clock_(clock), alarm_(clock->NewAlarm()) {}

OutboxRelay::~OutboxRelay() { Stop(); }

void OutboxRelay::Start() {
  thread_ = std::thread([this] { Run(); });
}

void OutboxRelay::Kick() {
  {
    absl::MutexLock lock(&mu_);
    kicked_ = true;
  }
  alarm_->Wake();
}

void OutboxRelay::Stop() {
  {
    absl::MutexLock lock(&mu_);
    if (stopping_) return;
    stopping_ = true;
  }
  alarm_->Wake();
  if (thread_.joinable()) thread_.join();
}

void OutboxRelay::Finished(Outcome outcome) {
  {
    absl::MutexLock lock(&mu_);
    finished_.push_back(std::move(outcome));
  }
  alarm_->Wake();
}

void OutboxRelay::Run() {
  for (;;) {
    std::vector<Outcome> done;
    {
      absl::MutexLock lock(&mu_);
      if (stopping_) return;
      done.swap(finished_);
      kicked_ = false;
    }
    // Outcomes first: a row recorded as done is not read as pending again.
    if (!done.empty()) {
      WriteBatch b;
      const UnixMs now = clock_->Now();
      for (const Outcome& o : done) {
        OutboxRecord u;
        u.id = o.id;
        u.attempts = o.attempts;
        u.done_at = now;
        u.outcome = o.text;
        b.outbox_updates.push_back(std::move(u));
      }
      if (Status st = store_->Write(b); !st.ok()) {
        // Kept for the next round; if this process is no longer the leader the next one
        // sends these again (at least once).
        spdlog::warn("notify: recording {} outcome(s): {}", done.size(), st.ToString());
        absl::MutexLock lock(&mu_);
        finished_.insert(finished_.end(), done.begin(), done.end());
      } else {
        absl::MutexLock lock(&mu_);
        for (const Outcome& o : done) handed_over_.erase(o.id);
      }
    }
    auto pending = store_->PendingOutbox(clock_->Now(), kBatch);
    if (!pending.ok()) {
      spdlog::warn("notify: reading the outbox: {}", pending.status().ToString());
    } else {
      for (OutboxRecord& row : *pending) {
        {
          absl::MutexLock lock(&mu_);
          if (!handed_over_.insert(row.id).second) continue;  // already with the notifier
        }
        Notification n;
        n.url = row.url;
        n.event = row.event;
        n.payload = nlohmann::json::parse(row.payload, nullptr, /*allow_exceptions=*/false);
        const int64_t id = row.id;
        const int attempts = row.attempts + 1;
        n.done = [this, id, attempts](bool delivered, const std::string& text) {
          Outcome o;
          o.id = id;
          o.attempts = attempts;
          o.delivered = delivered;
          o.text = delivered ? "delivered" : text;
          Finished(std::move(o));
        };
        notifier_->Post(std::move(n));
      }
    }
    absl::MutexLock lock(&mu_);
    if (stopping_) return;
    if (!kicked_ && finished_.empty()) {
      mu_.Unlock();
      alarm_->WaitFor(kPollEvery);
      mu_.Lock();
    }
  }
}

}  // namespace lockstep
