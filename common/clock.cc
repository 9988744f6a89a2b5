#include "common/clock.h"

#include <cstdio>
#include <ctime>
#include <optional>
#include <string>

namespace lockstep {

bool Alarm::WaitFor(std::chrono::milliseconds d) { return WaitUntil(clock_.Monotonic() + d); }

void Clock::SleepFor(std::chrono::milliseconds d) const { NewAlarm()->WaitFor(d); }

// ------------------------------------------------------------------ SystemClock

namespace {

class SystemAlarm final : public Alarm {
 public:
  explicit SystemAlarm(const Clock& clock) : Alarm(clock) {}

  bool WaitUntil(MonoTime deadline) override {
    std::unique_lock lock(mu_);
    const bool woken = cv_.wait_until(lock, deadline, [this] { return woken_; });
    woken_ = false;
    return woken;
  }

  bool Wait() override {
    std::unique_lock lock(mu_);
    cv_.wait(lock, [this] { return woken_; });
    woken_ = false;
    return true;
  }

  void Wake() override {
    {
      std::lock_guard lock(mu_);
      woken_ = true;
    }
    cv_.notify_all();
  }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  bool woken_ = false;  // guarded by mu_; a Wake not yet consumed by a wait
};

}  // namespace

UnixMs SystemClock::Now() const {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

MonoTime SystemClock::Monotonic() const { return std::chrono::steady_clock::now(); }

std::unique_ptr<Alarm> SystemClock::NewAlarm() const {
  return std::make_unique<SystemAlarm>(*this);
}

SystemClock* SystemClock::Get() {
  static SystemClock clock;
  return &clock;
}

// ------------------------------------------------------------------ ManualClock

// Registered with its clock for its whole life, so that Advance and Set can ring it. Its
// waiter re-checks the clock's monotonic time under the alarm's mutex, and the clock moves
// time before it takes that mutex to ring: a move cannot slip in between the waiter's check
// and its wait.
class ManualClock::ManualAlarm final : public Alarm {
 public:
  explicit ManualAlarm(const ManualClock& clock) : Alarm(clock), manual_(clock) {
    std::lock_guard lock(manual_.mu_);
    manual_.alarms_.insert(this);
  }
  ~ManualAlarm() override {
    std::lock_guard lock(manual_.mu_);
    manual_.alarms_.erase(this);
  }

  bool WaitUntil(MonoTime deadline) override { return Block(deadline); }
  bool Wait() override { return Block(std::nullopt); }

  void Wake() override {
    std::lock_guard lock(mu_);
    woken_ = true;
    cv_.notify_all();
  }

  // Time moved: the waiter, if any, re-checks its deadline. REQUIRES: the clock's mu_ held.
  void Ring() {
    std::lock_guard lock(mu_);
    cv_.notify_all();
  }

  // Whether only a Wake or a later move of time can end the current wait.
  // REQUIRES: the clock's mu_ held.
  bool AsleepAt(MonoTime now) {
    std::lock_guard lock(mu_);
    return waiting_ && !woken_ && (!deadline_ || *deadline_ > now);
  }

 private:
  bool Block(std::optional<MonoTime> deadline) {
    std::unique_lock lock(mu_);
    for (;;) {
      if (woken_) {
        woken_ = false;
        return true;
      }
      if (deadline && manual_.Monotonic() >= *deadline) return false;
      waiting_ = true;
      deadline_ = deadline;
      manual_.NoteSleeper();
      cv_.wait(lock);
      waiting_ = false;
    }
  }

  const ManualClock& manual_;
  std::mutex mu_;  // after the clock's mu_, before its sleep_mu_
  std::condition_variable cv_;
  bool woken_ = false;                // guarded by mu_; a Wake not yet consumed by a wait
  bool waiting_ = false;              // guarded by mu_; a thread is blocked in Block
  std::optional<MonoTime> deadline_;  // guarded by mu_; of the current wait, if any
};

std::unique_ptr<Alarm> ManualClock::NewAlarm() const {
  return std::make_unique<ManualAlarm>(*this);
}

void ManualClock::Advance(std::chrono::milliseconds d) {
  std::lock_guard lock(mu_);
  now_ += d.count();
  if (d.count() > 0) mono_ += d.count();
  RingAllLocked();
}

void ManualClock::Set(UnixMs t) {
  std::lock_guard lock(mu_);
  const UnixMs before = now_.exchange(t);
  if (t > before) mono_ += t - before;
  RingAllLocked();
}

void ManualClock::RingAllLocked() const {
  for (ManualAlarm* alarm : alarms_) alarm->Ring();
}

void ManualClock::NoteSleeper() const {
  {
    std::lock_guard lock(sleep_mu_);
    ++sleep_epoch_;
  }
  sleep_cv_.notify_all();
}

size_t ManualClock::CountSleepersLocked() const {
  const MonoTime now = Monotonic();
  size_t n = 0;
  for (ManualAlarm* alarm : alarms_) {
    if (alarm->AsleepAt(now)) ++n;
  }
  return n;
}

bool ManualClock::AwaitSleepers(size_t n, std::chrono::milliseconds real_limit) const {
  // Real time on purpose: this bounds how long a test waits for the code under test.
  const auto give_up = std::chrono::steady_clock::now() + real_limit;
  for (;;) {
    // The epoch is read before counting: an alarm that blocks after the count looked at it
    // moves the epoch after this read, so the wait below cannot miss it.
    uint64_t epoch = 0;
    {
      std::lock_guard lock(sleep_mu_);
      epoch = sleep_epoch_;
    }
    {
      std::lock_guard lock(mu_);
      if (CountSleepersLocked() >= n) return true;
    }
    std::unique_lock lock(sleep_mu_);
    if (!sleep_cv_.wait_until(lock, give_up, [&] { return sleep_epoch_ != epoch; })) {
      return false;
    }
  }
}

std::string FormatUnixMs(UnixMs t) {
  if (t <= 0) return "";
  std::time_t secs = static_cast<std::time_t>(t / 1000);
  std::tm tm{};
  gmtime_r(&secs, &tm);
  char buf[40];
  std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%S", &tm);
  char out[64];
  std::snprintf(out, sizeof out, "%s.%03dZ", buf, static_cast<int>(t % 1000));
  return out;
}

}  // namespace lockstep
