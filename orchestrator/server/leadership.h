// Leadership: which of several lockstepd sharing one store leads. The leader runs the engine,
// talks to agents and answers operators; the others stand by, point every caller at the
// leader, and take over when its lease runs out.
//
// The lease is a row in the store (LeaseStore) with an epoch. The leader renews it every
// third of its ttl; a standby claims it as soon as the store's clock says it has expired,
// which raises the epoch. On election the store is fenced to the new epoch, so a leader that
// lost the lease (paused, partitioned) can never commit again, whatever it believes. It also
// stops believing: once its own monotonic clock says the last successful renewal is a ttl
// old, it reports the lease lost without asking the store (the store's expiry comes later,
// since the renewal was stamped after it was sent).
//
// Thread safety: every method may be called from any thread. The callbacks run on the
// leadership thread (and elected once on the caller's thread, in Start), never under a lock.
#pragma once

#include <absl/base/thread_annotations.h>
#include <absl/synchronization/mutex.h>

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <thread>

#include "common/clock.h"
#include "common/status.h"
#include "orchestrator/store/model.h"

namespace lockstep {

class LeaseStore;

struct LeadershipOptions {
  std::string holder;        // this process's id, unique per start
  std::string grpc_address;  // where agents and the CLI reach this process
  std::string http_url;      // where HTTP callers reach it
  int64_t ttl_ms = 3000;
  // This process owns the store alone (SQLite, its data directory locked): a lease left by an
  // earlier process is taken at once instead of after its ttl, since that process is gone,
  // and it is claimed once, never renewed: nobody else can take it.
  bool sole_owner = false;
  // Whether the store takes writes (StoreGuard::WriteHealth). A leader whose store has
  // refused writes for a whole ttl (e.g. it latched a commit of unknown outcome across a
  // database restart) steps down, so that a fresh process can lead. Unset: always.
  std::function<Status()> store_health;
};

struct LeaderInfo {
  bool self = false;  // this process leads
  int64_t epoch = 0;  // 0: nobody has led yet
  std::string grpc_address;
  std::string http_url;
};

class Leadership {
 public:
  struct Callbacks {
    // This process became the leader at `epoch` (the store is already fenced to it). Runs
    // once per process: a leader that loses the lease does not lead again.
    std::function<void(int64_t epoch)> elected;
    // The lease is gone (taken by another, or not renewed within its ttl). The process must
    // stop acting at once; lockstepd exits and comes back as a standby.
    std::function<void(const std::string& why)> lost;
  };

  Leadership(LeaseStore* store, const Clock* clock, LeadershipOptions options, Callbacks callbacks);
  ~Leadership();  // Stop(false)
  Leadership(const Leadership&) = delete;
  Leadership& operator=(const Leadership&) = delete;

  // Claims the lease once (so a sole owner leads when this returns), then keeps claiming or
  // renewing on a thread of its own. Fails only if the store cannot be read at all.
  Status Start();
  // Ends the thread. `give_up`: if this process leads, expire the lease now so a standby
  // takes over without waiting out the ttl (a clean shutdown).
  void Stop(bool give_up);

  bool leader() const { return leader_.load(); }
  // False once the lease may have passed to another process by the local clock, even before
  // the thread noticed: what gates sending tasks.
  bool HoldsLease() const;
  LeaderInfo Current() const;
  // Empty while this process leads; otherwise what a caller is told, naming the leader:
  // "this lockstepd is a standby; the leader is at ADDR" (clients look for "the leader is at ").
  std::string Refusal() const;
  const LeadershipOptions& options() const { return options_; }

 private:
  int64_t LedEpoch() const;
  // No longer leading: stop sending, say why, give up the lease at `give_up_epoch` if this
  // process still holds it there (0: it does not), and call `lost`.
  void StepDown(const std::string& why, int64_t give_up_epoch);
  // One claim or renewal; returns when to try next.
  MonoTime Claim();

  LeaseStore* const store_;
  const Clock* const clock_;
  const LeadershipOptions options_;
  const Callbacks callbacks_;
  std::unique_ptr<Alarm> alarm_;
  std::thread thread_;
  std::atomic<bool> leader_{false};
  std::atomic<bool> stopping_{false};
  // Monotonic ms until which the lease is surely ours (0: not ours).
  std::atomic<int64_t> valid_until_ms_{0};
  // Monotonic ms since which the store has refused writes while leading (0: it has not).
  int64_t unhealthy_since_ms_ = 0;  // leadership thread only
  mutable absl::Mutex mu_;
  LeaderInfo current_ ABSL_GUARDED_BY(mu_);
  bool ever_led_ ABSL_GUARDED_BY(mu_) = false;
  int64_t led_epoch_ ABSL_GUARDED_BY(mu_) = 0;  // the epoch this process was elected at
};

}  // namespace lockstep
