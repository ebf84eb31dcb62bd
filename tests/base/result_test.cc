#include "base/result.h"

#include <gtest/gtest.h>

namespace hotshard {
namespace {

Result<int> parsePositive(int v) {
  if (v <= 0) return makeError(Errc::kInvalidArgument, "not positive");
  return v;
}

Result<int> doubled(int v) {
  ASSIGN_OR_RETURN(int x, parsePositive(v));
  return 2 * x;
}

Status check(int v) {
  RETURN_IF_ERROR(parsePositive(v));
  return Ok{};
}

TEST(Result, CarriesValueOrError) {
  EXPECT_EQ(*doubled(4), 8);
  auto bad = doubled(-1);
  ASSERT_FALSE(bad.ok());
  EXPECT_EQ(bad.error().code, Errc::kInvalidArgument);
  EXPECT_EQ(bad.error().toErrno(), EINVAL);
  EXPECT_TRUE(check(1).ok());
  EXPECT_FALSE(check(0).ok());
}

TEST(Result, SysErrorKeepsErrnoAndSaysWhat) {
  Error e = sysError(ENOSPC, "promote a: pwrite cache/tmp/x");
  EXPECT_EQ(e.code, Errc::kNoSpace);
  EXPECT_EQ(e.toErrno(), ENOSPC);
  EXPECT_EQ(e.message, "promote a: pwrite cache/tmp/x: No space left on device");
}

}  // namespace
}  // namespace hotshard
