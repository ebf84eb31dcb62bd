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

struct stat dirAt(long mtime_s, long ctime_s, long nsec = 0) {
  struct stat st {};
  st.st_ino = 42;
  st.st_dev = 7;
  st.st_mtim = {mtime_s, nsec};
  st.st_ctim = {ctime_s, nsec};
  return st;
}

// A cached listing is kept while the directory is unchanged, and only once it
// had been quiet for kQuietListingSeconds when the listing began.
TEST(FuseConsistency, ListingKeptOnlyWhileTheDirectoryIsUnchanged) {
  auto immutable = Consistency::parse("immutable");
  ASSERT_TRUE(immutable.ok());
  struct stat listed = dirAt(1000, 1000);
  EXPECT_TRUE(immutable->keepsListing(listed, 1001.0, dirAt(1000, 1000)));
  EXPECT_FALSE(immutable->keepsListing(listed, 0, dirAt(1000, 1000)));       // never listed
  EXPECT_FALSE(immutable->keepsListing(listed, 1001.0, dirAt(1005, 1005)));  // a name came or went
  EXPECT_FALSE(immutable->keepsListing(listed, 1001.0, dirAt(1000, 1003)));  // ctime only
  EXPECT_FALSE(immutable->keepsListing(listed, 1001.0, dirAt(1000, 1000, 1)));  // nanoseconds
  struct stat other = dirAt(1000, 1000);
  other.st_ino = 43;  // another directory now under that name
  EXPECT_FALSE(immutable->keepsListing(listed, 1001.0, other));
  // Listed within a second of its last change: a change in the same timestamp
  // tick would not show, so the listing is read again.
  EXPECT_FALSE(immutable->keepsListing(listed, 1000.5, dirAt(1000, 1000)));
  EXPECT_TRUE(immutable->keepsListing(listed, 1000.0 + Consistency::kQuietListingSeconds,
                                      dirAt(1000, 1000)));

  auto ttl = Consistency::parse("ttl=30");
  ASSERT_TRUE(ttl.ok());
  EXPECT_TRUE(ttl->keepsListing(listed, 1001.0, dirAt(1000, 1000)));
  EXPECT_FALSE(ttl->keepsListing(listed, 1001.0, dirAt(1001, 1001)));
  Consistency strict;
  EXPECT_FALSE(strict.keepsListing(listed, 1001.0, dirAt(1000, 1000)));  // never cached
}

}  // namespace
}  // namespace hotshard::fuse
