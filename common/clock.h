// Clock: the only way Lockstep code reads time, and the only way it waits for time to pass.
//
// Wall time (Now) is what is shown and stored: unix milliseconds. Monotonic time is used to
// measure durations inside one process (Monotonic). A thread that must wait until a monotonic
// deadline, or until another thread wakes it, waits on an Alarm made by the clock (NewAlarm);
// code with nothing to wake it sleeps with SleepFor. Production code uses SystemClock. Tests
// use ManualClock: its time moves only when the test advances it, its alarms ring only then,
// and AwaitSleepers tells the test when the code under test is asleep, so no test sleeps
// (the shape of envoy's TimeSource and SimulatedTimeSystem, kept small).
//
// Thread safety: every method of a Clock may be called from any thread. An Alarm is waited on
// by one thread at a time; Wake may be called from any thread.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <mutex>
#include <set>
#include <string>

namespace lockstep {

// Unix time in milliseconds. Stored in the database and sent on the wire.
using UnixMs = int64_t;
// A point in a clock's monotonic time. Only comparable with points from the same clock.
using MonoTime = std::chrono::steady_clock::time_point;

class Clock;

// One thread's place to sleep until a monotonic deadline of its clock or until woken. Made by
// a Clock (NewAlarm), so that a simulated clock rings it when its time reaches the deadline.
// A Wake is kept until a wait consumes it: a Wake that comes before the Wait is not lost, so
// a waker may set its flag (under its own lock) and Wake without caring whether the waiter
// is already asleep. A woken waiter re-checks what it waits for; a stale Wake only costs one
// early return.
//
// Thread safety: WaitUntil, WaitFor and Wait by one thread at a time; Wake from any thread.
// REQUIRES: the clock outlives the alarm, and nobody waits on an alarm being destroyed.
class Alarm {
 public:
  virtual ~Alarm() = default;
  Alarm(const Alarm&) = delete;
  Alarm& operator=(const Alarm&) = delete;

  // Blocks until Wake() was called (since the previous wait returned) or the clock's
  // monotonic time reaches `deadline`. Returns true for a Wake (which wins if both
  // happened), false at the deadline. A deadline already passed returns at once.
  virtual bool WaitUntil(MonoTime deadline) = 0;
  // WaitUntil(clock.Monotonic() + d).
  bool WaitFor(std::chrono::milliseconds d);
  // Blocks until Wake(); no deadline. Returns true.
  virtual bool Wait() = 0;
  // Ends the current wait, or the next one if nobody waits now.
  virtual void Wake() = 0;

 protected:
  explicit Alarm(const Clock& clock) : clock_(clock) {}

 private:
  const Clock& clock_;
};

class Clock {
 public:
  virtual ~Clock() = default;
  virtual UnixMs Now() const = 0;
  virtual MonoTime Monotonic() const = 0;
  // A new alarm on this clock, owned by the caller. REQUIRES: it is destroyed before the clock.
  virtual std::unique_ptr<Alarm> NewAlarm() const = 0;
  // Sleeps for `d` of this clock's time: an alarm nobody wakes. For code that has nothing to
  // wake it early (a bounded retry delay); anything that must stop promptly waits on an Alarm
  // that its Stop wakes.
  void SleepFor(std::chrono::milliseconds d) const;
};

// The operating system's clocks: system_clock for Now, steady_clock for Monotonic. Its
// alarms are a mutex, a condition variable and a flag.
class SystemClock final : public Clock {
 public:
  UnixMs Now() const override;
  MonoTime Monotonic() const override;
  std::unique_ptr<Alarm> NewAlarm() const override;
  static SystemClock* Get();
};

// A clock that moves only when told to. Monotonic time starts at MonoTime{} (a small value,
// whatever the wall time) and moves in step with wall time, except that it never goes back:
// Set to an earlier wall time moves wall time only, as a stepped system clock would.
//
// Its alarms ring only when Advance or Set moves time to or past their deadline (or when
// woken); real time passing never rings them. Advance and Set return after every alarm whose
// deadline was reached has been told, not after its waiter ran: a test that wants the code
// under test to have reacted waits for that reaction (AwaitSleepers, or an event).
//
// Locks: the registry of alarms is guarded by the clock's mutex, each alarm's state by the
// alarm's own; the order is clock, then alarm, then sleeper bookkeeping. A waiter holds only
// its alarm's mutex (and briefly the bookkeeping one).
// REQUIRES: every alarm it made is destroyed before it.
class ManualClock final : public Clock {
 public:
  explicit ManualClock(UnixMs start = 1'700'000'000'000) : now_(start) {}
  UnixMs Now() const override { return now_.load(); }
  MonoTime Monotonic() const override { return MonoTime(std::chrono::milliseconds(mono_.load())); }
  std::unique_ptr<Alarm> NewAlarm() const override;

  // Moves wall and monotonic time forward by `d` (a negative `d` moves wall time only) and
  // rings every alarm whose deadline is reached.
  void Advance(std::chrono::milliseconds d);
  // Sets wall time to `t`; monotonic time moves forward by as much, if `t` is later.
  void Set(UnixMs t);

  // For tests: blocks until at least `n` of this clock's alarms are asleep, i.e. blocked in
  // a wait that only Wake or a later Advance can end (no deadline, or one still in the
  // future, and not already woken), so that the test advances time exactly when the code
  // under test waits for it. Waits at most `real_limit` of real time; returns whether the
  // sleepers were there.
  bool AwaitSleepers(size_t n, std::chrono::milliseconds real_limit) const;

 private:
  class ManualAlarm;

  // Rings every registered alarm; they re-check their deadlines. REQUIRES: mu_ held.
  void RingAllLocked() const;
  // Called by an alarm about to block: wakes AwaitSleepers to count again. Takes sleep_mu_.
  void NoteSleeper() const;
  size_t CountSleepersLocked() const;  // REQUIRES: mu_ held

  std::atomic<UnixMs> now_;
  std::atomic<int64_t> mono_{0};  // monotonic milliseconds since MonoTime{}

  mutable std::mutex mu_;
  mutable std::set<ManualAlarm*> alarms_;  // guarded by mu_; alive alarms of this clock

  // A leaf lock: AwaitSleepers waits on sleep_cv_ for sleep_epoch_ to move, which every
  // alarm does as it blocks.
  mutable std::mutex sleep_mu_;
  mutable std::condition_variable sleep_cv_;
  mutable uint64_t sleep_epoch_ = 0;  // guarded by sleep_mu_
};

// "2026-11-25T14:01:15.123Z"
std::string FormatUnixMs(UnixMs t);

}  // namespace lockstep
