// Clock: the only way Lockstep code reads time.
//
// Wall time (Now) is what is shown and stored: unix milliseconds. Monotonic time is used to
// measure durations inside one process (Monotonic). Production code uses SystemClock; engine
// tests use ManualClock and advance it explicitly, so no test sleeps.
//
// Thread safety: every method may be called from any thread.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <string>

namespace lockstep {

// Unix time in milliseconds. Stored in the database and sent on the wire.
using UnixMs = int64_t;

class Clock {
 public:
  virtual ~Clock() = default;
  virtual UnixMs Now() const = 0;
  virtual std::chrono::steady_clock::time_point Monotonic() const = 0;
};

class SystemClock final : public Clock {
 public:
  UnixMs Now() const override;
  std::chrono::steady_clock::time_point Monotonic() const override;
  static SystemClock* Get();
};

// A clock that moves only when told to. Monotonic time moves in step with wall time.
class ManualClock final : public Clock {
 public:
  explicit ManualClock(UnixMs start = 1'700'000'000'000) : now_(start) {}
  UnixMs Now() const override { return now_.load(); }
  std::chrono::steady_clock::time_point Monotonic() const override {
    return std::chrono::steady_clock::time_point(std::chrono::milliseconds(now_.load()));
  }
  void Advance(std::chrono::milliseconds d) { now_ += d.count(); }
  void Set(UnixMs t) { now_ = t; }

 private:
  std::atomic<UnixMs> now_;
};

// "2026-11-25T14:01:15.123Z"
std::string FormatUnixMs(UnixMs t);

}  // namespace lockstep
