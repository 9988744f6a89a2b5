#include "orchestrator/server/watchers.h"

#include <algorithm>
#include <set>
#include <utility>

#include "absl/time/time.h"

namespace lockstep {

Watchers::Watchers(const Clock* clock, WatchLimits limits) : clock_(clock), limits_(limits) {}

Watchers::~Watchers() { Shutdown(); }

void Watchers::OnReleaseEvent(const Pipeline& /*pipeline*/, const ReleaseRecord& release,
                              const std::string& /*event*/, const std::string& /*detail*/) {
  PublishRelease(release.id);
}

void Watchers::OnReleaseChanged(int64_t release_id) { PublishRelease(release_id); }

void Watchers::PublishRelease(int64_t release_id) {
  absl::MutexLock lock(&mu_);
  PublishLocked(release_id);
}

void Watchers::PublishLocked(int64_t release_id) {
  ++all_;
  auto it = releases_.find(release_id);
  if (it != releases_.end()) ++it->second.generation;
  changed_.SignalAll();
}

void Watchers::Touch() {
  absl::MutexLock lock(&mu_);
  ++touched_;
  ++all_;
  changed_.SignalAll();
}

StatusOr<std::unique_ptr<Watch>> Watchers::OpenRelease(int64_t release_id) {
  return Open(false, release_id);
}

StatusOr<std::unique_ptr<Watch>> Watchers::OpenStatus() { return Open(true, 0); }

StatusOr<std::unique_ptr<Watch>> Watchers::Open(bool all, int64_t release_id) {
  absl::MutexLock lock(&mu_);
  if (stopping_) return Unavailable("lockstepd is shutting down");
  if (open_ >= limits_.max_watches) {
    return ResourceExhausted("too many open watches (limit " + std::to_string(limits_.max_watches) +
                             "); try again later");
  }
  ++open_;
  if (!all) ++releases_[release_id].watches;
  std::unique_ptr<Watch> w(new Watch(this, all, release_id, 0));
  // Whatever is published from now on is newer than the first view, which the watch loads
  // after this.
  w->seen_ = StampLocked(*w);
  StatusOr<std::unique_ptr<Watch>> out(std::move(w));
  return out;
}

void Watchers::Close(const Watch& w) {
  absl::MutexLock lock(&mu_);
  --open_;
  if (w.all_) return;
  auto it = releases_.find(w.release_id_);
  if (it != releases_.end() && --it->second.watches == 0) releases_.erase(it);
}

void Watchers::Shutdown() {
  absl::MutexLock lock(&mu_);
  stopping_ = true;
  changed_.SignalAll();
}

uint64_t Watchers::StampLocked(const Watch& w) const {
  if (w.all_) return all_;
  auto it = releases_.find(w.release_id_);
  // Both counters only grow, so their sum grows whenever either does.
  return touched_ + (it == releases_.end() ? 0 : it->second.generation);
}

Watchers::Wake Watchers::Await(Watch& w, MonoTime due, const std::function<bool()>& gone) {
  for (;;) {
    const MonoTime ask_client = std::min(due, clock_->Monotonic() + limits_.gone_poll);
    {
      absl::MutexLock lock(&mu_);
      for (;;) {
        if (stopping_) return Wake::kShutdown;
        const uint64_t stamp = StampLocked(w);
        if (stamp != w.seen_) {
          w.seen_ = stamp;
          return Wake::kChanged;
        }
        const MonoTime now = clock_->Monotonic();
        if (now >= due) return Wake::kDue;
        if (now >= ask_client) break;
        const auto slice = std::min<std::chrono::nanoseconds>(ask_client - now, limits_.gone_poll);
        // True: the wait timed out without a signal. Publications to other watches wake this
        // one too; it goes back to sleep until its own time to ask the client.
        if (changed_.WaitWithTimeout(&mu_, absl::FromChrono(slice))) break;
      }
    }
    if (gone && gone()) return Wake::kGone;
  }
}

Watch::~Watch() { owner_->Close(*this); }

Status Watch::Run(const Hooks& hooks) {
  const Clock& clock = *owner_->clock_;
  const std::chrono::milliseconds keepalive = owner_->limits_.keepalive;
  std::string sent;  // the last view sent
  MonoTime sent_at{};
  bool first = true;
  for (;;) {
    LOCKSTEP_ASSIGN_OR_RETURN(Look look, hooks.load());
    const MonoTime now = clock.Monotonic();
    if (first || look.last || look.bytes != sent || now - sent_at >= keepalive) {
      if (!hooks.send()) return Unavailable("the client went away");
      sent = std::move(look.bytes);
      sent_at = now;
      first = false;
    }
    if (look.last) return Status::Ok();
    switch (owner_->Await(*this, sent_at + keepalive, hooks.gone)) {
      case Watchers::Wake::kChanged:
      case Watchers::Wake::kDue:
        break;
      case Watchers::Wake::kGone:
        return Unavailable("the client went away");
      case Watchers::Wake::kShutdown:
        return Unavailable("lockstepd is shutting down");
    }
  }
}

Status PublishingStore::Write(const WriteBatch& batch) {
  LOCKSTEP_RETURN_IF_ERROR(ForwardingStore::Write(batch));
  std::set<int64_t> releases;
  for (const auto& h : batch.hosts) releases.insert(h.release_id);
  for (const auto& a : batch.approvals) releases.insert(a.release_id);
  for (const auto& a : batch.abort_requests) releases.insert(a.release_id);
  for (int64_t id : releases) watchers_->PublishRelease(id);
  if (!batch.agents.empty() || !batch.pipeline_states.empty() || !batch.holds.empty()) {
    watchers_->Touch();
  }
  return Status::Ok();
}

Status PublishingStore::RemoveAgent(const std::string& name, const AuditRecord& audit) {
  LOCKSTEP_RETURN_IF_ERROR(ForwardingStore::RemoveAgent(name, audit));
  watchers_->Touch();
  return Status::Ok();
}

}  // namespace lockstep
