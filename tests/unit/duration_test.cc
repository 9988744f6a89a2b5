// Durations as written in pipeline files and flags: the accepted forms, the errors (which
// quote the text), and FormatDuration producing text that ParseDuration reads back.

#include "common/duration.h"

#include <gtest/gtest.h>

#include <chrono>
#include <string>

namespace lockstep {
namespace {

using std::chrono::milliseconds;

milliseconds Parsed(const std::string& text) {
  StatusOr<milliseconds> d = ParseDuration(text);
  EXPECT_TRUE(d.ok()) << "\"" << text << "\": " << d.status().ToString();
  return d.ok() ? *d : milliseconds(-1);
}

std::string ErrorOf(const std::string& text) {
  StatusOr<milliseconds> d = ParseDuration(text);
  EXPECT_FALSE(d.ok()) << "\"" << text << "\" parsed as " << (d.ok() ? d->count() : 0) << "ms";
  if (d.ok()) return "";
  EXPECT_EQ(d.status().code(), StatusCode::kInvalidArgument);
  return d.status().message();
}

TEST(ParseDurationTest, ReadsMilliseconds) { EXPECT_EQ(Parsed("500ms"), milliseconds(500)); }

TEST(ParseDurationTest, ReadsSeconds) { EXPECT_EQ(Parsed("30s"), milliseconds(30'000)); }

TEST(ParseDurationTest, ReadsMinutes) { EXPECT_EQ(Parsed("2m"), milliseconds(120'000)); }

TEST(ParseDurationTest, ReadsHours) { EXPECT_EQ(Parsed("1h"), milliseconds(3'600'000)); }

TEST(ParseDurationTest, AddsCombinedUnits) { EXPECT_EQ(Parsed("1m30s"), milliseconds(90'000)); }

TEST(ParseDurationTest, ReadsBareZeroAsZero) { EXPECT_EQ(Parsed("0"), milliseconds(0)); }

TEST(ParseDurationTest, AcceptsThirtyDays) {
  EXPECT_EQ(Parsed("720h"), milliseconds(int64_t{720} * 3'600'000));
}

TEST(ParseDurationTest, RejectsEmptyText) {
  EXPECT_EQ(ErrorOf(""), "bad duration \"\": empty (use forms like 500ms, 30s, 2m, 1h)");
}

TEST(ParseDurationTest, RejectsNumberWithoutUnit) {
  EXPECT_EQ(ErrorOf("10"), "bad duration \"10\": missing unit (use forms like 500ms, 30s, 2m, 1h)");
}

TEST(ParseDurationTest, RejectsUnknownUnit) {
  EXPECT_EQ(ErrorOf("5x"), "bad duration \"5x\": unknown unit (use forms like 500ms, 30s, 2m, 1h)");
}

TEST(ParseDurationTest, RejectsNegativeDuration) {
  EXPECT_EQ(ErrorOf("-1s"),
            "bad duration \"-1s\": expected a number (use forms like 500ms, 30s, 2m, 1h)");
}

TEST(ParseDurationTest, RejectsUnitWithoutNumber) {
  EXPECT_EQ(ErrorOf("s"),
            "bad duration \"s\": expected a number (use forms like 500ms, 30s, 2m, 1h)");
}

TEST(ParseDurationTest, RejectsMoreThanThirtyDays) {
  EXPECT_EQ(ErrorOf("721h"),
            "bad duration \"721h\": longer than 30 days (use forms like 500ms, 30s, 2m, 1h)");
}

TEST(FormatDurationTest, WritesTheShortestForm) {
  EXPECT_EQ(FormatDuration(milliseconds(0)), "0s");
  EXPECT_EQ(FormatDuration(milliseconds(250)), "250ms");
  EXPECT_EQ(FormatDuration(milliseconds(30'000)), "30s");
  EXPECT_EQ(FormatDuration(milliseconds(90'000)), "1m30s");
  EXPECT_EQ(FormatDuration(milliseconds(3'600'000)), "1h");
  EXPECT_EQ(FormatDuration(milliseconds(3'723'004)), "1h2m3s4ms");
}

TEST(FormatDurationTest, RoundTripsThroughParseDuration) {
  for (int64_t ms : {int64_t{0}, int64_t{1}, int64_t{999}, int64_t{1'000}, int64_t{61'001},
                     int64_t{3'600'000}, int64_t{86'399'999}, int64_t{720} * 3'600'000}) {
    std::string text = FormatDuration(milliseconds(ms));
    EXPECT_EQ(Parsed(text), milliseconds(ms)) << text;
  }
}

}  // namespace
}  // namespace lockstep
