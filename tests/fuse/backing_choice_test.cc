// The backing-file decision of fuse/backing.h over its whole table, without a
// mount: every rule here is one that FileSystem::acquireBacking carries out.
#include "fuse/backing.h"

#include <fcntl.h>
#include <gtest/gtest.h>

#include <string>

namespace hotshard::fuse {
namespace {

using C = BackingChoice;

// A read-only open of an inode without a backing file, with cache hooks and
// fresh remote attributes: the common first open.
BackingFacts firstRead() {
  return BackingFacts{.for_write = false,
                      .backing_open = false,
                      .backing_is_cache = false,
                      .backing_writable = false,
                      .copy_adopted = false,
                      .cache_hooks = true,
                      .remote_attrs_known = true,
                      .open_copy_current = false,
                      .valid_copy = false};
}

// The copy is opened read-write (a writer may join it).
BackingFacts withCacheBacking(BackingFacts f, bool current) {
  f.backing_open = true;
  f.backing_is_cache = true;
  f.backing_writable = true;
  f.open_copy_current = current;
  return f;
}

BackingFacts adopted(BackingFacts f) {
  f.copy_adopted = true;
  return f;
}

BackingFacts withRemoteBacking(BackingFacts f, bool writable) {
  f.backing_open = true;
  f.backing_is_cache = false;
  f.backing_writable = writable;
  return f;
}

BackingFacts writer(BackingFacts f) {
  f.for_write = true;
  return f;
}

struct Row {
  const char* rule;
  BackingFacts facts;
  BackingChoice want;
};

std::string choiceName(BackingChoice c) { return backingChoiceName(c); }

TEST(BackingChoice, DecisionTable) {
  BackingFacts valid = firstRead();
  valid.valid_copy = true;
  BackingFacts no_hooks = valid;
  no_hooks.cache_hooks = false;
  BackingFacts no_attrs = valid;
  no_attrs.remote_attrs_known = false;
  BackingFacts cache_no_hooks = withCacheBacking(firstRead(), false);
  cache_no_hooks.cache_hooks = false;
  cache_no_hooks.remote_attrs_known = false;

  const Row rows[] = {
      {"read-only first open with a valid copy -> the copy", valid, C::kOpenCache},
      {"read-only first open, no valid copy (none, stale, or a writer's fence up) -> remote",
       firstRead(), C::kOpenRemote},
      {"no cache hooks (or path not under the remote) -> remote", no_hooks, C::kOpenRemote},
      {"remote attributes could not be had -> remote", no_attrs, C::kOpenRemote},
      {"writer, first open, even with a valid copy -> remote (fence raised)", writer(valid),
       C::kOpenRemote},
      {"writer while the cache copy is the backing -> adopt it (one inode, one truth)",
       writer(withCacheBacking(firstRead(), true)), C::kAdoptCopy},
      {"writer at the open copy, remote attributes unknown -> adopt it",
       writer(withCacheBacking(no_attrs, false)), C::kAdoptCopy},
      {"writer at the open copy, path gone (deleted) -> adopt it", writer(cache_no_hooks),
       C::kAdoptCopy},
      {"writer, another host changed the remote under the open copy -> retire, ESTALE",
       writer(withCacheBacking(firstRead(), false)), C::kRetire},
      {"writer at an adopted copy -> share it", writer(adopted(withCacheBacking(firstRead(), true))),
       C::kShareOpen},
      {"writer at an adopted copy, even if the remote moved on -> share it (it holds writes)",
       writer(adopted(withCacheBacking(firstRead(), false))), C::kShareOpen},
      {"reader at an adopted copy, even if the remote moved on -> share it",
       adopted(withCacheBacking(firstRead(), false)), C::kShareOpen},
      {"reader, open copy still matches the remote -> share it",
       withCacheBacking(firstRead(), true), C::kShareOpen},
      {"reader, the remote changed under the open copy (strict: fresh stat) -> retire, ESTALE",
       withCacheBacking(firstRead(), false), C::kRetire},
      {"reader, open copy, remote attributes unknown -> share it",
       withCacheBacking(no_attrs, false), C::kShareOpen},
      {"reader, open copy, path no longer known (deleted) -> share it", cache_no_hooks,
       C::kShareOpen},
      {"reader while the remote is the backing, even with a valid copy -> share the remote",
       withRemoteBacking(valid, false), C::kShareOpen},
      {"writer while a writable remote backing is open -> share it",
       writer(withRemoteBacking(firstRead(), true)), C::kShareOpen},
      {"writer while a read-only remote backing is open -> refuse with its errno",
       writer(withRemoteBacking(firstRead(), false)), C::kRefuseWrite},
      {"writer without cache hooks -> remote", writer(no_hooks), C::kOpenRemote},
  };
  for (const Row& row : rows) {
    EXPECT_EQ(choiceName(chooseBacking(row.facts)), choiceName(row.want)) << row.rule;
  }
}

// Every combination of the nine facts.
template <typename Fn>
void forAllFacts(Fn&& fn) {
  for (unsigned bits = 0; bits < 512; bits++) {
    auto bit = [&](int i) { return ((bits >> i) & 1u) != 0; };
    fn(BackingFacts{.for_write = bit(0),
                    .backing_open = bit(1),
                    .backing_is_cache = bit(2),
                    .backing_writable = bit(3),
                    .copy_adopted = bit(8),
                    .cache_hooks = bit(4),
                    .remote_attrs_known = bit(5),
                    .open_copy_current = bit(6),
                    .valid_copy = bit(7)});
  }
}

TEST(BackingChoice, TheStoreIsAskedExactlyWhenItsAnswerDecides) {
  forAllFacts([](BackingFacts f) {
    BackingFacts yes = f, no = f;
    yes.valid_copy = true;
    no.valid_copy = false;
    if (backingWantsCopy(f)) {
      // A copy handed out is used: acquireBacking never leaks an openCached().
      EXPECT_EQ(chooseBacking(yes), C::kOpenCache);
      EXPECT_EQ(chooseBacking(no), C::kOpenRemote);
    } else {
      EXPECT_EQ(chooseBacking(yes), chooseBacking(no));
      EXPECT_NE(chooseBacking(yes), C::kOpenCache);
    }
  });
}

TEST(BackingChoice, InvariantsOverEveryCombination) {
  forAllFacts([](BackingFacts f) {
    BackingChoice c = chooseBacking(f);
    // A writer never passes through to the read-only copy.
    if (f.for_write) { EXPECT_NE(c, C::kOpenCache); }
    // Only an open backing can be shared or refused; one is never opened twice
    // (one backing file per inode).
    if (c == C::kShareOpen || c == C::kRefuseWrite) { EXPECT_TRUE(f.backing_open); }
    if (c == C::kOpenCache || c == C::kOpenRemote) { EXPECT_FALSE(f.backing_open); }
    // Retiring is for an open cache copy that cannot serve this open only, and
    // only when the remote moved past it; an adopted copy (it holds writes the
    // remote may lack) never.
    if (c == C::kRetire) {
      EXPECT_TRUE(f.backing_open && f.backing_is_cache && !f.copy_adopted);
      EXPECT_TRUE(f.remote_attrs_known && !f.open_copy_current);
    }
    // A writer at an open copy joins it (or retires): never refused, never a new
    // backing file; adoption happens once, for a writer.
    if (f.backing_open && f.backing_is_cache && !f.copy_adopted) {
      EXPECT_NE(c, C::kRefuseWrite);
      if (f.for_write) { EXPECT_TRUE(c == C::kAdoptCopy || c == C::kRetire); }
    }
    if (c == C::kAdoptCopy) {
      EXPECT_TRUE(f.for_write && f.backing_open && f.backing_is_cache && !f.copy_adopted);
    }
  });
}

TEST(BackingChoice, AWriteBackIsSkippedOnlyWhenTheStampCanTellALaterWrite) {
  struct stat stamp {};
  stamp.st_size = 11;
  stamp.st_ino = 5;
  stamp.st_dev = 6;
  stamp.st_mtim = {100, 500};
  stamp.st_ctim = {100, 700};
  // An mtime older than the coarse clock before the fstat: any later write gets
  // a newer one, so an unchanged stamp means an unchanged copy.
  EXPECT_TRUE(stampSeesLaterWrites(stamp, {100, 501}));
  EXPECT_TRUE(stampSeesLaterWrites(stamp, {101, 0}));
  // In the same clock tick a write may leave the mtime as it is.
  EXPECT_FALSE(stampSeesLaterWrites(stamp, {100, 500}));
  EXPECT_FALSE(stampSeesLaterWrites(stamp, {100, 400}));
  EXPECT_FALSE(stampSeesLaterWrites(stamp, {99, 999999999}));

  EXPECT_TRUE(copyUnchanged(stamp, stamp));
  auto changed = [&](auto change) {
    struct stat now = stamp;
    change(now);
    return !copyUnchanged(stamp, now);
  };
  EXPECT_TRUE(changed([](struct stat& s) { s.st_size = 1; }));  // O_TRUNC + a write of 1 byte
  EXPECT_TRUE(changed([](struct stat& s) { s.st_mtim.tv_nsec++; }));
  EXPECT_TRUE(changed([](struct stat& s) { s.st_mtim.tv_sec++; }));
  EXPECT_TRUE(changed([](struct stat& s) { s.st_ino++; }));
  EXPECT_FALSE(changed([](struct stat& s) { s.st_atim.tv_sec++; }));  // reads change nothing
  // The dirty mark (an xattr) changes ctime alone: no data changed.
  EXPECT_FALSE(changed([](struct stat& s) { s.st_ctim.tv_sec++; }));
}

TEST(BackingChoice, OpensForWrite) {
  EXPECT_FALSE(opensForWrite(O_RDONLY));
  EXPECT_FALSE(opensForWrite(O_RDONLY | O_NOFOLLOW | O_CLOEXEC));
  EXPECT_TRUE(opensForWrite(O_WRONLY));
  EXPECT_TRUE(opensForWrite(O_RDWR));
  EXPECT_TRUE(opensForWrite(O_RDONLY | O_TRUNC));  // truncating writes
}

TEST(BackingChoice, SameRemoteObjectComparesTheValidator) {
  struct stat a {};
  a.st_size = 100;
  a.st_mtim = {10, 5};
  a.st_ctim = {11, 6};
  a.st_ino = 7;
  a.st_dev = 8;
  a.st_atim = {1, 1};
  struct stat b = a;
  b.st_atim = {99, 99};  // reading does not change the object
  EXPECT_TRUE(sameRemoteObject(a, b));
  auto differs = [&](auto change) {
    struct stat c = a;
    change(c);
    return !sameRemoteObject(a, c);
  };
  EXPECT_TRUE(differs([](struct stat& c) { c.st_size = 101; }));
  EXPECT_TRUE(differs([](struct stat& c) { c.st_mtim.tv_nsec = 6; }));
  EXPECT_TRUE(differs([](struct stat& c) { c.st_mtim.tv_sec = 12; }));
  EXPECT_TRUE(differs([](struct stat& c) { c.st_ctim.tv_nsec = 7; }));
  EXPECT_TRUE(differs([](struct stat& c) { c.st_ino = 9; }));
  EXPECT_TRUE(differs([](struct stat& c) { c.st_dev = 9; }));
}

}  // namespace
}  // namespace hotshard::fuse
