#include "orchestrator/server/leadership.h"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <chrono>

#include "common/standby.h"
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
  // A store that cannot even be read fails the start.
  LOCKSTEP_ASSIGN_OR_RETURN(LeaseRecord old, store_->ReadLease());
  if (options_.sole_owner && old.epoch > 0 && old.holder != options_.holder &&
      old.remaining_ms > 0) {
    // The store is locked by this process: whoever held the lease before is gone.
    LOCKSTEP_RETURN_IF_ERROR(store_->ReleaseLease(old.holder, old.epoch));
  }
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
  return StandbyNamingLeader(now.grpc_address);
}

void Leadership::StepDown(const std::string& why, int64_t give_up_epoch) {
  leader_ = false;
  valid_until_ms_ = 0;
  {
    absl::MutexLock lock(&mu_);
    current_.self = false;
  }
  spdlog::critical("{}", why);
  // Held by this process but of no use to it: hand it on at once rather than make the
  // standbys wait out its ttl.
  if (give_up_epoch > 0) (void)store_->ReleaseLease(options_.holder, give_up_epoch);
  if (callbacks_.lost) callbacks_.lost(why);
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
    if (!leader_.load()) {
      spdlog::warn("leader lease: {}", got.status().ToString());
      return clock_->Monotonic() + period / 3;
    }
    if (MonoMs(clock_->Monotonic()) >= valid_until_ms_.load()) {
      StepDown("the leader lease could not be renewed within its ttl (" +
                   std::to_string(options_.ttl_ms) + " ms): " + got.status().message(),
               0);
      return sent + period;
    }
    spdlog::warn("leader lease: {}", got.status().ToString());
    // Retry sooner than a period, but never past the moment the lease would lapse.
    return std::min(clock_->Monotonic() + period / 3,
                    MonoTime(std::chrono::milliseconds(valid_until_ms_.load())));
  }

  const bool held = got->holder == options_.holder && got->remaining_ms > 0;
  enum class Turn { kNone, kElected, kLost } turn = Turn::kNone;
  int64_t led_epoch = 0;
  {
    absl::MutexLock lock(&mu_);
    if (held && !leader_.load() && !ever_led_) {
      // A process leads at most once: one that lost the lease exits.
      ever_led_ = true;
      led_epoch_ = got->epoch;
      turn = Turn::kElected;
    } else if (leader_.load() && (!held || got->epoch != led_epoch_)) {
      // Taken by another; or ours again at a new epoch, after it lapsed while this process
      // was away (frozen) and another took it and gave it up: the store is fenced to the old
      // epoch, and whatever this process believed may be stale.
      turn = Turn::kLost;
    }
    led_epoch = led_epoch_;
    current_.self = turn == Turn::kElected || (leader_.load() && turn != Turn::kLost);
    current_.epoch = got->epoch;
    current_.grpc_address = got->grpc_address;
    current_.http_url = got->http_url;
  }
  if (turn == Turn::kLost) {
    StepDown(got->holder == options_.holder
                 ? "the leader lease lapsed and was taken back at epoch " +
                       std::to_string(got->epoch) + " after another held it (this process led " +
                       "at epoch " + std::to_string(led_epoch) + ")"
                 : "the leader lease passed to " + got->holder + " at epoch " +
                       std::to_string(got->epoch) + " (this process led at epoch " +
                       std::to_string(led_epoch) + ")",
             got->holder == options_.holder ? got->epoch : 0);
    return sent + period;
  }
  if (turn == Turn::kNone && !leader_.load()) return sent + period;  // standing by

  // Surely ours until a ttl after the claim was sent: the store stamped its expiry later.
  valid_until_ms_ = MonoMs(sent) + options_.ttl_ms;
  if (turn == Turn::kElected) {
    store_->FenceWrites(got->epoch);
    leader_ = true;
    spdlog::info("leading at epoch {} (lease ttl {} ms)", got->epoch, options_.ttl_ms);
    if (callbacks_.elected) callbacks_.elected(got->epoch);
    return sent + period;
  }
  // Renewed. A store that has refused writes for a whole ttl (e.g. latched on a commit of
  // unknown outcome across a database restart) makes this process step down for a fresh one.
  if (options_.store_health) {
    if (Status health = options_.store_health(); health.ok()) {
      unhealthy_since_ms_ = 0;
    } else if (unhealthy_since_ms_ == 0) {
      unhealthy_since_ms_ = MonoMs(sent);
    } else if (MonoMs(sent) - unhealthy_since_ms_ >= options_.ttl_ms) {
      StepDown("stepping down: the store has refused writes for " +
                   std::to_string(MonoMs(sent) - unhealthy_since_ms_) + " ms: " + health.message(),
               got->epoch);
    }
  }
  return sent + period;
}

}  // namespace lockstep
