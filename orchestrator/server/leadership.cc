#include "orchestrator/server/leadership.h"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <chrono>

#include "orchestrator/store/store.h"

namespace lockstep {
namespace {

int64_t MonoMs(MonoTime t) {
  return std::chrono::duration_cast<std::chrono::milliseconds>(t.time_since_epoch()).count();
}

}  // namespace

Leadership::Leadership(LeaseStore* store, const Clock* clock, LeadershipOptions options,
                       Callbacks callbacks)
    : store_(store),
      clock_(clock),
      options_(std::move(options)),
      callbacks_(std::move(callbacks)),
      alarm_(clock->NewAlarm()) {}

Leadership::~Leadership() { Stop(false); }

Status Leadership::Start() {
  if (options_.sole_owner) {
    // The data directory is locked by this process: whoever held the lease before is gone.
    LOCKSTEP_ASSIGN_OR_RETURN(LeaseRecord old, store_->ReadLease());
    if (old.epoch > 0 && old.holder != options_.holder && old.remaining_ms > 0) {
      LOCKSTEP_RETURN_IF_ERROR(store_->ReleaseLease(old.holder, old.epoch));
    }
  }
  LOCKSTEP_RETURN_IF_ERROR(store_->ReadLease().status());  // a store that cannot be read
  MonoTime next = Claim();
  if (options_.sole_owner) {
    // Nobody else can claim a store this process has locked: one claim decides, and the
    // lease is not renewed (a disk that refuses writes must not depose the only lockstepd).
    if (!leader_.load()) return Unavailable("could not take the leader lease of its own store");
    return Status::Ok();
  }
  thread_ = std::thread([this, next] {
    MonoTime at = next;
    while (!stopping_.load()) {
      alarm_->WaitUntil(at);
      if (stopping_.load()) break;
      at = Claim();
    }
  });
  return Status::Ok();
}

void Leadership::Stop(bool give_up) {
  if (stopping_.exchange(true)) return;
  alarm_->Wake();
  if (thread_.joinable()) thread_.join();
  if (give_up && leader_.load()) {
    const int64_t epoch = LedEpoch();
    leader_ = false;
    valid_until_ms_ = 0;
    if (Status st = store_->ReleaseLease(options_.holder, epoch); !st.ok()) {
      spdlog::warn("giving up the leader lease: {}", st.ToString());
    } else {
      spdlog::info("gave up the leader lease (epoch {})", epoch);
    }
  }
}

bool Leadership::HoldsLease() const {
  if (options_.sole_owner) return leader_.load();
  return leader_.load() && MonoMs(clock_->Monotonic()) < valid_until_ms_.load();
}

LeaderInfo Leadership::Current() const {
  absl::MutexLock lock(&mu_);
  return current_;
}

int64_t Leadership::LedEpoch() const {
  absl::MutexLock lock(&mu_);
  return led_epoch_;
}

std::string Leadership::Refusal() const {
  if (leader_.load()) return "";
  LeaderInfo now = Current();
  if (now.epoch == 0 || now.self || now.grpc_address.empty()) {
    return "this lockstepd is a standby and no leader is known yet; try another server";
  }
  return "this lockstepd is a standby; the leader is at " + now.grpc_address;
}

MonoTime Leadership::Claim() {
  const MonoTime sent = clock_->Monotonic();
  const auto period = std::chrono::milliseconds(std::max<int64_t>(options_.ttl_ms / 3, 1));
  LeaseClaim claim;
  claim.holder = options_.holder;
  claim.grpc_address = options_.grpc_address;
  claim.http_url = options_.http_url;
  claim.ttl_ms = options_.ttl_ms;
  StatusOr<LeaseRecord> got = store_->ClaimLease(claim);
  if (!got.ok()) {
    if (leader_.load() && MonoMs(clock_->Monotonic()) >= valid_until_ms_.load()) {
      leader_ = false;
      valid_until_ms_ = 0;
      const std::string why = "the leader lease could not be renewed within its ttl (" +
                              std::to_string(options_.ttl_ms) + " ms): " + got.status().message();
      spdlog::critical("{}", why);
      if (callbacks_.lost) callbacks_.lost(why);
    } else {
      spdlog::warn("leader lease: {}", got.status().ToString());
    }
    // Retry sooner than a period, but never past the moment the lease would lapse.
    return std::min(clock_->Monotonic() + period / 3,
                    leader_.load() ? MonoTime(std::chrono::milliseconds(valid_until_ms_.load()))
                                   : clock_->Monotonic() + period);
  }
  bool mine = got->holder == options_.holder && got->remaining_ms > 0;
  bool elected = false;
  bool lost = false;
  {
    absl::MutexLock lock(&mu_);
    current_.self = mine;
    current_.epoch = got->epoch;
    current_.grpc_address = got->grpc_address;
    current_.http_url = got->http_url;
    if (mine && !leader_.load()) {
      if (ever_led_) {
        // A process that lost the lease never leads again (it exits); this cannot happen
        // unless the lost callback did not stop it.
        mine = false;
      } else {
        ever_led_ = true;
        elected = true;
      }
    } else if (!mine && leader_.load()) {
      lost = true;
    } else if (mine && leader_.load() && got->epoch != led_epoch_) {
      // Ours again, but at a new epoch: it expired while this process was away (frozen) and
      // another took it and gave it up meanwhile. The store is fenced to the old epoch, and
      // whatever this process believed may be stale: it does not lead again.
      lost = true;
    }
    if (elected) led_epoch_ = got->epoch;
  }
  if (mine && !lost && leader_.load() && callbacks_.lost && options_.store_health) {
    if (Status health = options_.store_health(); health.ok()) {
      unhealthy_since_ms_ = 0;
    } else if (unhealthy_since_ms_ == 0) {
      unhealthy_since_ms_ = MonoMs(sent);
    } else if (MonoMs(sent) - unhealthy_since_ms_ >= options_.ttl_ms) {
      leader_ = false;
      valid_until_ms_ = 0;
      const std::string why = "stepping down: the store has refused writes for " +
                              std::to_string(MonoMs(sent) - unhealthy_since_ms_) +
                              " ms: " + health.message();
      spdlog::critical("{}", why);
      (void)store_->ReleaseLease(options_.holder, got->epoch);
      callbacks_.lost(why);
      return sent + period;
    }
  }
  if (mine) {
    // Surely ours until a ttl after the claim was sent: the store stamped its expiry later.
    valid_until_ms_ = MonoMs(sent) + options_.ttl_ms;
  }
  if (elected) {
    store_->FenceWrites(got->epoch);
    leader_ = true;
    spdlog::info("leading at epoch {} (lease ttl {} ms)", got->epoch, options_.ttl_ms);
    if (callbacks_.elected) callbacks_.elected(got->epoch);
  } else if (lost) {
    leader_ = false;
    valid_until_ms_ = 0;
    const std::string why = "the leader lease passed to " + got->holder + " at epoch " +
                            std::to_string(got->epoch) + " (this process led at epoch " +
                            std::to_string(LedEpoch()) + ")";
    spdlog::critical("{}", why);
    // Taken back at a new epoch by this very claim: hand it on at once rather than make the
    // standbys wait out the ttl of a lease nobody uses.
    if (got->holder == options_.holder) (void)store_->ReleaseLease(options_.holder, got->epoch);
    if (callbacks_.lost) callbacks_.lost(why);
  }
  return sent + period;
}

}  // namespace lockstep
