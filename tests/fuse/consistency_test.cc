// fuse/consistency.h: which remote attributes an open validates a cached copy
// against (the facts fuse/backing.h decides on are taken against them).
#include "fuse/consistency.h"

#include <gtest/gtest.h>

namespace hotshard::fuse {
namespace {

// Which remote attributes the decision's facts are taken against.
TEST(FuseConsistency, ModeDecidesWhetherRememberedAttrsAreTrusted) {
  Consistency strict;
  EXPECT_FALSE(strict.trustsRememberedAttrs(100.0, 100.0));  // a fresh fstat every open

  auto ttl = Consistency::parse("ttl=5");
  ASSERT_TRUE(ttl.ok());
  EXPECT_TRUE(ttl->trustsRememberedAttrs(100.0, 104.9));
  EXPECT_FALSE(ttl->trustsRememberedAttrs(100.0, 105.0));
  EXPECT_FALSE(ttl->trustsRememberedAttrs(0, 1.0));  // never seen

  auto immutable = Consistency::parse("immutable");
  ASSERT_TRUE(immutable.ok());
  EXPECT_TRUE(immutable->trustsRememberedAttrs(1.0, 1e9));
  EXPECT_FALSE(immutable->trustsRememberedAttrs(0, 1.0));
}

TEST(FuseConsistency, TimeoutsPerMode) {
  Consistency strict;
  EXPECT_EQ(strict.entryTimeout(), 0);
  EXPECT_EQ(strict.negativeTimeout(), 0);
  EXPECT_FALSE(strict.keepCache());
  auto ttl = Consistency::parse("ttl=250ms");
  ASSERT_TRUE(ttl.ok());
  EXPECT_DOUBLE_EQ(ttl->attrTimeout(), 0.25);
  EXPECT_DOUBLE_EQ(ttl->negativeTimeout(), 0.25);
  EXPECT_EQ(ttl->toString(), "ttl=0.25");
  auto immutable = Consistency::parse("immutable");
  ASSERT_TRUE(immutable.ok());
  EXPECT_GT(immutable->entryTimeout(), 86400.0);
  EXPECT_EQ(immutable->negativeTimeout(), 0);  // new names can still appear
  EXPECT_TRUE(immutable->keepCache());
}

}  // namespace
}  // namespace hotshard::fuse
