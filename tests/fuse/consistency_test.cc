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

struct stat objectOf(mode_t type, nlink_t nlink = 1) {
  struct stat st {};
  st.st_mode = type | 0644;
  st.st_nlink = nlink;
  return st;
}

TEST(FuseConsistency, TimeoutsPerMode) {
  const struct stat file = objectOf(S_IFREG), dir = objectOf(S_IFDIR, 2);
  Consistency strict;  // NFS's acregmin and acdirmin
  EXPECT_EQ(strict.entryTimeout(file), 3);
  EXPECT_EQ(strict.attrTimeout(file), 3);
  EXPECT_EQ(strict.entryTimeout(objectOf(S_IFLNK)), 3);
  EXPECT_EQ(strict.entryTimeout(dir), 30);
  EXPECT_EQ(strict.attrTimeout(dir), 30);
  EXPECT_EQ(strict.negativeTimeout(), 0);
  EXPECT_FALSE(strict.keepCache());
  EXPECT_TRUE(strict.opensCheckPath());
  // A file with several names: each name is looked up again at each use (an
  // open's path check knows one of them); its attributes are kept.
  EXPECT_EQ(strict.entryTimeout(objectOf(S_IFREG, 2)), 0);
  EXPECT_EQ(strict.attrTimeout(objectOf(S_IFREG, 2)), 3);
  auto ttl = Consistency::parse("ttl=250ms");
  ASSERT_TRUE(ttl.ok());
  EXPECT_DOUBLE_EQ(ttl->attrTimeout(file), 0.25);
  EXPECT_DOUBLE_EQ(ttl->entryTimeout(objectOf(S_IFREG, 2)), 0.25);
  EXPECT_DOUBLE_EQ(ttl->negativeTimeout(), 0.25);
  EXPECT_EQ(ttl->toString(), "ttl=0.25");
  EXPECT_FALSE(ttl->opensCheckPath());
  auto immutable = Consistency::parse("immutable");
  ASSERT_TRUE(immutable.ok());
  EXPECT_GT(immutable->entryTimeout(file), 86400.0);
  EXPECT_GT(immutable->entryTimeout(dir), 86400.0);
  EXPECT_EQ(immutable->negativeTimeout(), 0);  // new names can still appear
  EXPECT_TRUE(immutable->keepCache());
  EXPECT_FALSE(immutable->opensCheckPath());
}

// strict;ac=D sets both timeouts (NFS's actimeo), acdir=D the directories' alone,
// in either order; ac=0 keeps nothing, as strict did before it had an
// attribute cache.
TEST(FuseConsistency, StrictTakesAttributeCacheTimeouts) {
  const struct stat file = objectOf(S_IFREG), dir = objectOf(S_IFDIR, 2);
  auto off = Consistency::parse("strict;ac=0");
  ASSERT_TRUE(off.ok());
  EXPECT_EQ(off->entryTimeout(file), 0);
  EXPECT_EQ(off->attrTimeout(file), 0);
  EXPECT_EQ(off->entryTimeout(dir), 0);
  EXPECT_EQ(off->attrTimeout(dir), 0);
  EXPECT_FALSE(off->opensCheckPath());
  EXPECT_EQ(off->toString(), "strict;ac=0;acdir=0");

  for (const char* text : {"strict;ac=1s;acdir=1m", "strict;acdir=60;ac=1000ms"}) {
    SCOPED_TRACE(text);
    auto c = Consistency::parse(text);
    ASSERT_TRUE(c.ok()) << c.error().message;
    EXPECT_EQ(c->entryTimeout(file), 1);
    EXPECT_EQ(c->entryTimeout(dir), 60);
    EXPECT_EQ(c->toString(), "strict;ac=1;acdir=60");
    EXPECT_EQ(Consistency::parse(c->toString())->toString(), c->toString());
  }
  auto dirs_only = Consistency::parse("strict;acdir=0");
  ASSERT_TRUE(dirs_only.ok());
  EXPECT_EQ(dirs_only->entryTimeout(file), Consistency::kDefaultAcSeconds);
  EXPECT_EQ(dirs_only->entryTimeout(dir), 0);
  EXPECT_TRUE(dirs_only->opensCheckPath());
  EXPECT_EQ(Consistency::parse("strict;ac=3s;acdir=30s")->toString(), "strict");

  for (const char* bad : {"strict;", "strict;ac", "strict;ac=", "strict;ac=-1s", "strict;ac=x",
                          "strict;ttl=3", "strict;ac=1;", "strict,ac=1"}) {
    auto c = Consistency::parse(bad);
    ASSERT_FALSE(c.ok()) << bad;
    EXPECT_NE(c.error().message.find(bad), std::string::npos) << c.error().message;
  }
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
