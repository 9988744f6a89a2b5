// The Clock seam: ManualClock's monotonic time and alarms, which every simulated-time test
// relies on, and the real SystemClock's alarms. Waits in these tests are bounded in real time
// (kPatience); none of them sleeps.

#include "common/clock.h"

#include <gtest/gtest.h>

#include <chrono>
#include <future>
#include <memory>

namespace lockstep {
namespace {

using std::chrono::hours;
using std::chrono::milliseconds;
using std::chrono::seconds;

constexpr milliseconds kPatience{10'000};

TEST(ManualClockTest, MonotonicTimeStartsSmallAndMovesWithAdvance) {
  ManualClock clock;
  const MonoTime start = clock.Monotonic();
  // Not the wall time read as a steady time point (which would be decades ahead of any
  // deadline a real steady clock ever hands out).
  EXPECT_EQ(start, MonoTime{});
  EXPECT_EQ(clock.Now(), 1'700'000'000'000);

  clock.Advance(milliseconds(1500));
  EXPECT_EQ(clock.Monotonic() - start, milliseconds(1500));
  EXPECT_EQ(clock.Now(), 1'700'000'001'500);

  clock.Set(clock.Now() + 500);
  EXPECT_EQ(clock.Monotonic() - start, milliseconds(2000));
}

TEST(ManualClockTest, SettingWallTimeBackDoesNotMoveMonotonicTimeBack) {
  ManualClock clock;
  clock.Advance(seconds(10));
  clock.Set(clock.Now() - 60'000);
  EXPECT_EQ(clock.Now(), 1'700'000'000'000 - 50'000);
  EXPECT_EQ(clock.Monotonic(), MonoTime{} + seconds(10));
}

TEST(ManualClockTest, AWakeBeforeTheWaitIsNotLost) {
  ManualClock clock;
  auto alarm = clock.NewAlarm();
  alarm->Wake();
  EXPECT_TRUE(alarm->WaitFor(hours(1)));  // returns at once: no time passes
  alarm->Wake();
  EXPECT_TRUE(alarm->Wait());
}

TEST(ManualClockTest, AWakeEndsAWaitInProgress) {
  ManualClock clock;
  auto alarm = clock.NewAlarm();
  auto woken = std::async(std::launch::async, [&] { return alarm->WaitFor(hours(1)); });
  ASSERT_TRUE(clock.AwaitSleepers(1, kPatience));

  alarm->Wake();

  ASSERT_EQ(woken.wait_for(kPatience), std::future_status::ready);
  EXPECT_TRUE(woken.get());
}

TEST(ManualClockTest, AnAlarmRingsWhenTimeReachesItsDeadlineAndNotBefore) {
  ManualClock clock;
  auto alarm = clock.NewAlarm();
  auto rang = std::async(std::launch::async, [&] { return alarm->WaitFor(milliseconds(100)); });
  ASSERT_TRUE(clock.AwaitSleepers(1, kPatience));

  clock.Advance(milliseconds(99));
  // Still asleep: its deadline is ahead, so it went back to sleep (or never woke).
  ASSERT_TRUE(clock.AwaitSleepers(1, kPatience));
  EXPECT_EQ(rang.wait_for(milliseconds(0)), std::future_status::timeout);

  clock.Advance(milliseconds(1));
  ASSERT_EQ(rang.wait_for(kPatience), std::future_status::ready);
  EXPECT_FALSE(rang.get());  // the deadline, not a Wake
}

TEST(ManualClockTest, AdvanceRingsOnlyTheAlarmsWhoseDeadlineCame) {
  ManualClock clock;
  auto soon = clock.NewAlarm();
  auto later = clock.NewAlarm();
  auto soon_rang = std::async(std::launch::async, [&] { return soon->WaitFor(seconds(1)); });
  auto later_rang = std::async(std::launch::async, [&] { return later->WaitFor(seconds(2)); });
  ASSERT_TRUE(clock.AwaitSleepers(2, kPatience));

  clock.Advance(seconds(1));

  ASSERT_EQ(soon_rang.wait_for(kPatience), std::future_status::ready);
  EXPECT_FALSE(soon_rang.get());
  ASSERT_TRUE(clock.AwaitSleepers(1, kPatience));
  EXPECT_EQ(later_rang.wait_for(milliseconds(0)), std::future_status::timeout);
  clock.Advance(seconds(1));
  ASSERT_EQ(later_rang.wait_for(kPatience), std::future_status::ready);
  EXPECT_FALSE(later_rang.get());
}

TEST(ManualClockTest, ADeadlineAlreadyPassedReturnsAtOnce) {
  ManualClock clock;
  clock.Advance(seconds(5));
  auto alarm = clock.NewAlarm();
  EXPECT_FALSE(alarm->WaitUntil(clock.Monotonic()));
  EXPECT_FALSE(alarm->WaitUntil(clock.Monotonic() - seconds(1)));
  EXPECT_FALSE(alarm->WaitFor(milliseconds(0)));
}

TEST(ManualClockTest, SleepForEndsWhenTimeHasPassed) {
  ManualClock clock;
  auto slept = std::async(std::launch::async, [&] { clock.SleepFor(seconds(30)); });
  ASSERT_TRUE(clock.AwaitSleepers(1, kPatience));

  clock.Advance(seconds(30));

  EXPECT_EQ(slept.wait_for(kPatience), std::future_status::ready);
}

TEST(ManualClockTest, AwaitSleepersCountsNeitherIdleNorWokenAlarms) {
  ManualClock clock;
  const auto idle = clock.NewAlarm();  // nobody waits on it
  ASSERT_NE(idle, nullptr);
  EXPECT_FALSE(clock.AwaitSleepers(1, milliseconds(0)));

  auto alarm = clock.NewAlarm();
  auto woken = std::async(std::launch::async, [&] { return alarm->Wait(); });
  ASSERT_TRUE(clock.AwaitSleepers(1, kPatience));
  alarm->Wake();
  ASSERT_EQ(woken.wait_for(kPatience), std::future_status::ready);
  EXPECT_TRUE(woken.get());
  EXPECT_FALSE(clock.AwaitSleepers(1, milliseconds(0)));
}

TEST(SystemClockTest, AnAlarmReturnsAtItsDeadline) {
  const Clock& clock = *SystemClock::Get();
  auto alarm = clock.NewAlarm();
  const MonoTime start = clock.Monotonic();

  EXPECT_FALSE(alarm->WaitFor(milliseconds(20)));

  EXPECT_GE(clock.Monotonic() - start, milliseconds(20));
}

TEST(SystemClockTest, AWakeEndsAWaitWhetherItCameBeforeOrDuring) {
  const Clock& clock = *SystemClock::Get();
  auto alarm = clock.NewAlarm();
  alarm->Wake();
  EXPECT_TRUE(alarm->WaitFor(hours(1)));

  auto woken = std::async(std::launch::async, [&] { return alarm->WaitFor(hours(1)); });
  alarm->Wake();  // before or during the wait: either way it ends
  ASSERT_EQ(woken.wait_for(kPatience), std::future_status::ready);
  EXPECT_TRUE(woken.get());
}

}  // namespace
}  // namespace lockstep
