#include "common/status.h"

#include <gtest/gtest.h>

#include <memory>
#include <string>

namespace lockstep {
namespace {

TEST(StatusOrTest, AnOkStatusCannotStandInForAValue) {
  StatusOr<int> v = Status::Ok();
  ASSERT_FALSE(v.ok());
  EXPECT_EQ(v.status().code(), StatusCode::kInternal);
  EXPECT_NE(v.status().message().find("OK status without a value"), std::string::npos);
}

TEST(StatusOrTest, HoldsAValueOrTheErrorItWasGiven) {
  StatusOr<std::string> v = std::string("v1");
  ASSERT_TRUE(v.ok());
  EXPECT_EQ(*v, "v1");
  StatusOr<std::string> e = NotFound("no release 7");
  ASSERT_FALSE(e.ok());
  EXPECT_EQ(e.status().code(), StatusCode::kNotFound);
  EXPECT_EQ(e.status().message(), "no release 7");
}

StatusOr<std::unique_ptr<int>> Make(bool fail) {
  if (fail) return InvalidArgument("bad");
  return std::make_unique<int>(7);
}

// Returns the value plus one, or the error Make gave, through the helper.
StatusOr<int> AddOne(bool fail) {
  LOCKSTEP_ASSIGN_OR_RETURN(auto p, Make(fail));  // move-only values are moved out
  return *p + 1;
}

Status AssignExisting(bool fail, int* out) {
  std::unique_ptr<int> p;
  LOCKSTEP_ASSIGN_OR_RETURN(p, Make(fail));
  LOCKSTEP_ASSIGN_OR_RETURN(auto q, Make(false));  // two on one scope need distinct lines
  *out = *p + *q;
  return Status::Ok();
}

TEST(StatusOrTest, AssignOrReturnPassesTheValueOnAndTheErrorUp) {
  auto ok = AddOne(false);
  ASSERT_TRUE(ok.ok());
  EXPECT_EQ(*ok, 8);
  auto bad = AddOne(true);
  ASSERT_FALSE(bad.ok());
  EXPECT_EQ(bad.status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(bad.status().message(), "bad");

  int out = 0;
  EXPECT_TRUE(AssignExisting(false, &out).ok());
  EXPECT_EQ(out, 14);
  out = 0;
  EXPECT_EQ(AssignExisting(true, &out).code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(out, 0);
}

}  // namespace
}  // namespace lockstep
