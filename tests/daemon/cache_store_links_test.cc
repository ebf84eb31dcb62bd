// Hard links of one remote file share one copy in the store
// (CacheStore::linkCopy): linked without copying, counted once, dropped
// together, recovered together, adopted by one name.
#include <gtest/gtest.h>
#include <sys/xattr.h>
#include <xxhash.h>

#include <filesystem>
#include <mutex>
#include <set>

#include "daemon/cache_store.h"
#include "tests/daemon/store_fixture.h"

namespace hotshard {
namespace {

using testing::countEntries;
using testing::readFd;
using testing::readFile;
using testing::validatorOfPath;

class CacheStoreLinksTest : public testing::StoreFixture {
 protected:
  // remote/<a> with `size` bytes and remote/<b> a hard link of it; <a> cached.
  std::string cacheWithLink(const std::string& a, const std::string& b, size_t size) {
    std::string content = makeRemote(a, size);
    std::filesystem::create_directories(std::filesystem::path(remote_ + "/" + b).parent_path());
    EXPECT_EQ(::link((remote_ + "/" + a).c_str(), (remote_ + "/" + b).c_str()), 0)
        << std::strerror(errno);
    Status s = publishBytes(a, content, validatorOfPath(remote_ + "/" + a));
    EXPECT_TRUE(s.ok()) << s.error().message;
    return content;
  }

  Status link(const std::string& rel) {
    return store_->linkCopy(rel, validatorOfPath(remote_ + "/" + rel));
  }

  struct stat objectStat(const std::string& rel) const {
    struct stat st {};
    if (::stat((cache_ + "/" + store_->objectPathFor(rel)).c_str(), &st) != 0) st.st_nlink = 0;
    return st;
  }

  std::string pathXattr(const std::string& rel) const {
    std::string buf(65536, '\0');
    ssize_t n = ::getxattr((cache_ + "/" + store_->objectPathFor(rel)).c_str(),
                           "user.hotshard.path", buf.data(), buf.size());
    return n < 0 ? "<none>" : buf.substr(0, static_cast<size_t>(n));
  }

  bool cached(const std::string& rel) const {
    return store_->info(rel).state == CacheStore::State::kCached;
  }
};

TEST_F(CacheStoreLinksTest, AHardLinkSharesTheCopyWithoutCopyingAndIsCountedOnce) {
  openStore();
  std::string content = cacheWithLink("a.bin", "d/b.bin", 300000);
  uint64_t one_copy = store_->stats().used_bytes;
  ASSERT_GE(one_copy, 300000u);

  ASSERT_TRUE(link("d/b.bin").ok());
  EXPECT_TRUE(cached("d/b.bin"));
  EXPECT_EQ(cachedBytes("d/b.bin"), content);
  EXPECT_EQ(cachedBytes("a.bin"), content);
  // One object file under both names' keys: nothing was copied.
  struct stat sa = objectStat("a.bin"), sb = objectStat("d/b.bin");
  EXPECT_EQ(sa.st_ino, sb.st_ino);
  EXPECT_EQ(sa.st_nlink, 2u);
  EXPECT_EQ(pathXattr("a.bin"), std::string("a.bin\0d/b.bin", 13));
  EXPECT_EQ(countEntries(cache_ + "/tmp"), 0u);

  CacheStore::Stats st = store_->stats();
  EXPECT_EQ(st.used_bytes, one_copy);
  EXPECT_EQ(st.objects, 2u);
  EXPECT_EQ(st.published, 1u);
  EXPECT_EQ(st.linked, 1u);
  for (const auto& o : store_->list()) {
    EXPECT_EQ(o.links, 2u) << o.rel_path;
    EXPECT_EQ(o.object_ino, sa.st_ino) << o.rel_path;
  }
  // A shared object is verified once, not once per name.
  CacheStore::VerifyReport r = store_->verifyAll();
  EXPECT_EQ(r.checked, 1u);
  EXPECT_EQ(r.dropped, 0u);
  EXPECT_EQ(r.bytes, 300000u);
}

TEST_F(CacheStoreLinksTest, NoSiblingOrADifferentRemoteStateIsNotLinked) {
  openStore();
  makeRemote("a.bin", 5000);
  ASSERT_EQ(::link((remote_ + "/a.bin").c_str(), (remote_ + "/b.bin").c_str()), 0);
  EXPECT_EQ(link("b.bin").error().code, Errc::kNotFound) << "nothing cached yet";

  Validator v = validatorOfPath(remote_ + "/a.bin");
  ASSERT_TRUE(publishBytes("a.bin", readFile(remote_ + "/a.bin"), v).ok());
  using Change = std::pair<const char*, void (*)(Validator&)>;
  for (auto [what, change] : {Change{"size", [](Validator& x) { ++x.size; }},
                              Change{"mtime", [](Validator& x) { ++x.mtime_ns; }},
                              Change{"ctime", [](Validator& x) { ++x.ctime_ns; }},
                              Change{"ino", [](Validator& x) { ++x.ino; }},
                              Change{"dev (a remount)", [](Validator& x) { ++x.dev; }}}) {
    Validator other = v;
    change(other);
    Status s = store_->linkCopy("b.bin", other);
    ASSERT_FALSE(s.ok()) << what;
    EXPECT_EQ(s.error().code, Errc::kNotFound) << what;
    EXPECT_FALSE(cached("b.bin")) << what;
  }
  EXPECT_EQ(objectStat("a.bin").st_nlink, 1u);
  EXPECT_EQ(pathXattr("a.bin"), "a.bin");
  EXPECT_EQ(store_->stats().linked, 0u);
  // A name being written through the mount is never linked.
  ASSERT_TRUE(store_->beginWrite("b.bin").ok());
  EXPECT_EQ(store_->linkCopy("b.bin", v).error().code, Errc::kBusy);
  store_->endWrite("b.bin");
  EXPECT_TRUE(store_->linkCopy("b.bin", v).ok());
}

// Whatever drops one name drops every name of the object, and frees its bytes once.
TEST_F(CacheStoreLinksTest, DroppingOneNameDropsEveryNameAndFreesTheBytesOnce) {
  using Drop = std::pair<const char*, std::function<void(CacheStore&, const std::string&)>>;
  std::vector<Drop> drops = {
      {"evict", [](CacheStore& s, const std::string& r) { ASSERT_TRUE(s.evict(r).ok()); }},
      {"evictIdle", [](CacheStore& s, const std::string& r) { ASSERT_TRUE(s.evictIdle(r).ok()); }},
      {"invalidate", [](CacheStore& s, const std::string& r) { ASSERT_TRUE(s.invalidate(r).ok()); }},
      {"beginWrite", [](CacheStore& s, const std::string& r) { ASSERT_TRUE(s.beginWrite(r).ok()); }},
      {"stale open",
       [](CacheStore& s, const std::string& r) {
         Validator changed{.size = 1, .mtime_ns = 2, .ctime_ns = 3};
         EXPECT_EQ(s.openIfValid(r, changed).error().code, Errc::kStale);
       }},
      {"watermarks", [](CacheStore& s, const std::string&) { s.setCapacity(4096); }},
  };
  int round = 0;
  for (auto& [what, drop] : drops) {
    SCOPED_TRACE(what);
    store_.reset();
    std::filesystem::remove_all(cache_);
    std::filesystem::remove_all(remote_);
    std::filesystem::create_directories(remote_);
    openStore();
    std::mutex mu;
    std::vector<std::string> told;
    store_->setDropListener([&](const std::vector<std::string>& rels) {
      std::lock_guard lock(mu);
      told.insert(told.end(), rels.begin(), rels.end());
    });
    std::string a = "a" + std::to_string(round), b = "b" + std::to_string(round);
    ++round;
    cacheWithLink(a, b, 100000);
    ASSERT_TRUE(link(b).ok());
    store_->updateEvictionOrder({});  // removed_ records from here on
    drop(*store_, b);
    EXPECT_FALSE(cached(a));
    EXPECT_FALSE(cached(b));
    EXPECT_EQ(store_->stats().used_bytes, 0u);
    EXPECT_EQ(store_->stats().objects, 0u);
    EXPECT_EQ(objectStat(a).st_nlink, 0u);
    EXPECT_EQ(objectStat(b).st_nlink, 0u);
    EXPECT_EQ(countEntries(cache_ + "/tmp"), 0u);
    EXPECT_EQ(std::set<std::string>(told.begin(), told.end()), (std::set<std::string>{a, b}));
    std::vector<std::string> removed = store_->updateEvictionOrder({});
    EXPECT_EQ(std::set<std::string>(removed.begin(), removed.end()),
              (std::set<std::string>{a, b}));
    store_->setDropListener(nullptr);
    if (what == std::string("beginWrite")) store_->endWrite(b);
  }
}

TEST_F(CacheStoreLinksTest, APinnedOrOpenNameKeepsEveryNameFromEviction) {
  openStore();
  std::string content = cacheWithLink("a.bin", "b.bin", 100000);
  ASSERT_TRUE(link("b.bin").ok());
  ASSERT_TRUE(store_->pin("b.bin", true).ok());
  EXPECT_EQ(store_->evict("a.bin").error().code, Errc::kBusy);
  EXPECT_EQ(store_->evictIdle("a.bin").error().code, Errc::kBusy);
  store_->setCapacity(4096);
  EXPECT_TRUE(cached("a.bin"));
  ASSERT_TRUE(store_->pin("b.bin", false).ok());
  store_->setCapacity(1ull << 30);

  auto fd = store_->openIfValid("b.bin", validatorOfPath(remote_ + "/b.bin"));
  ASSERT_TRUE(fd.ok());
  EXPECT_EQ(store_->evictIdle("a.bin").error().code, Errc::kBusy);
  store_->setCapacity(4096);
  EXPECT_TRUE(cached("a.bin"));
  EXPECT_TRUE(cached("b.bin"));
  ::close(*fd);
  store_->release("b.bin");
  store_->enforceWatermarks();
  EXPECT_FALSE(cached("a.bin"));
  EXPECT_FALSE(cached("b.bin"));
  EXPECT_EQ(store_->stats().used_bytes, 0u);
}

TEST_F(CacheStoreLinksTest, ReopenRecoversEveryNameCountedOnce) {
  openStore();
  std::string content = makeRemote("a.bin", 200000);
  std::filesystem::create_directories(remote_ + "/x");
  for (const char* other : {"/x/b.bin", "/c.bin"})
    ASSERT_EQ(::link((remote_ + "/a.bin").c_str(), (remote_ + other).c_str()), 0);
  ASSERT_TRUE(publishBytes("a.bin", content, validatorOfPath(remote_ + "/a.bin")).ok());
  ASSERT_TRUE(link("x/b.bin").ok());
  ASSERT_TRUE(link("c.bin").ok());
  uint64_t used = store_->stats().used_bytes;

  openStore();
  CacheStore::Stats st = store_->stats();
  EXPECT_EQ(st.objects, 3u);
  EXPECT_EQ(st.used_bytes, used);
  EXPECT_EQ(st.recovery_drops, 0u);
  for (const std::string rel : {"a.bin", "x/b.bin", "c.bin"}) EXPECT_EQ(cachedBytes(rel), content);
  for (const auto& o : store_->list()) EXPECT_EQ(o.links, 3u) << o.rel_path;
  // Recovered names are one group still.
  ASSERT_TRUE(store_->evict("c.bin").ok());
  EXPECT_FALSE(cached("a.bin"));
  EXPECT_FALSE(cached("x/b.bin"));
  EXPECT_EQ(store_->stats().used_bytes, 0u);
}

// A crash between the path list's rewrite and the new name's rename leaves a
// list naming a file that does not exist: the others recover as before.
TEST_F(CacheStoreLinksTest, AListedNameWithoutItsFileAndALegacySinglePathRecover) {
  openStore();
  std::string content = cacheWithLink("a.bin", "b.bin", 50000);
  EXPECT_EQ(pathXattr("a.bin"), "a.bin") << "one name: exactly the format before sharing";
  std::string obj = cache_ + "/" + store_->objectPathFor("a.bin");
  std::string list("a.bin\0b.bin", 11);
  ASSERT_EQ(::setxattr(obj.c_str(), "user.hotshard.path", list.data(), list.size(), 0), 0);
  openStore();
  EXPECT_EQ(cachedBytes("a.bin"), content);
  EXPECT_FALSE(cached("b.bin"));
  EXPECT_EQ(store_->stats().recovery_drops, 0u);
  ASSERT_TRUE(link("b.bin").ok());
  EXPECT_EQ(cachedBytes("b.bin"), content);
  EXPECT_EQ(pathXattr("b.bin"), list);
}

TEST_F(CacheStoreLinksTest, AdoptingOneNameLeavesOnlyThatName) {
  openStore();
  cacheWithLink("a.bin", "b.bin", 100000);
  ASSERT_TRUE(link("b.bin").ok());
  uint64_t used = store_->stats().used_bytes;
  Validator v = validatorOfPath(remote_ + "/b.bin");
  auto fd = store_->openIfValid("b.bin", v);
  ASSERT_TRUE(fd.ok());
  struct stat copy {};
  ASSERT_EQ(::fstat(*fd, &copy), 0);
  ASSERT_TRUE(store_->adopt("b.bin", copy.st_dev, copy.st_ino, v).ok());

  EXPECT_FALSE(cached("a.bin"));
  EXPECT_EQ(objectStat("a.bin").st_nlink, 0u);
  EXPECT_EQ(objectStat("b.bin").st_nlink, 1u);
  EXPECT_EQ(pathXattr("b.bin"), "b.bin") << "written back to exactly one remote path";
  EXPECT_EQ(store_->stats().used_bytes, used);
  EXPECT_EQ(store_->stats().adopted_objects, 1u);
  EXPECT_EQ(store_->stats().objects, 0u);
  EXPECT_EQ(store_->linkCopy("a.bin", v).error().code, Errc::kNotFound)
      << "an adopted copy is nobody's sibling";
  ::close(*fd);
  store_->release("b.bin");
  store_->releaseAdopted("b.bin", true);
  EXPECT_EQ(store_->stats().used_bytes, 0u);
}

// The largest user.hotshard.path value the file system under `dir` holds on
// a file with no other xattrs (ext4: about a block; xfs, tmpfs: 64 KiB).
size_t largestPathXattr(const std::string& dir) {
  std::string probe = dir + "/xattr-probe";
  testing::writeFile(probe, "x");
  size_t lo = 1, hi = 65536;
  while (lo < hi) {
    size_t mid = (lo + hi + 1) / 2;
    std::string value(mid, 'p');
    if (::setxattr(probe.c_str(), "user.hotshard.path", value.data(), mid, 0) == 0) {
      lo = mid;
    } else {
      hi = mid - 1;
    }
  }
  ::unlink(probe.c_str());
  return lo;
}

TEST_F(CacheStoreLinksTest, ANameListTooLongForTheXattrFallsBackToACopy) {
  openStore();
  size_t limit = largestPathXattr(root_);
  ASSERT_GT(limit, 400u);
  // Each name fits alone, both together do not.
  std::string a = "d/" + std::string(limit * 6 / 10, 'a');
  std::string b = "d/" + std::string(limit * 6 / 10, 'b');
  std::string content = makeRemote("short", 20000);
  std::filesystem::create_directories(remote_ + "/d");
  // Remote names as long as these cannot exist; the store only sees paths.
  Validator v = validatorOfPath(remote_ + "/short");
  ASSERT_TRUE(publishBytes(a, content, v).ok());
  uint64_t one_copy = store_->stats().used_bytes;
  Status s = store_->linkCopy(b, v);
  ASSERT_FALSE(s.ok());
  EXPECT_EQ(s.error().code, Errc::kNotFound) << s.error().message;
  EXPECT_FALSE(cached(b));
  EXPECT_EQ(pathXattr(a), a);
  EXPECT_EQ(countEntries(cache_ + "/tmp"), 0u);
  ASSERT_TRUE(publishBytes(b, content, v).ok()) << "a copy of its own";
  EXPECT_EQ(store_->stats().used_bytes, 2 * one_copy);
  EXPECT_EQ(store_->stats().linked, 0u);
}

TEST_F(CacheStoreLinksTest, ACorruptSharedObjectDropsEveryName) {
  openStore();
  std::string content = cacheWithLink("a.bin", "b.bin", 100000);
  ASSERT_TRUE(link("b.bin").ok());
  std::string obj = cache_ + "/" + store_->objectPathFor("b.bin");
  int fd = ::open(obj.c_str(), O_WRONLY);
  ASSERT_GE(fd, 0);
  ASSERT_EQ(::pwrite(fd, "X", 1, 777), 1);
  ::close(fd);
  CacheStore::VerifyReport r = store_->verifyAll();
  EXPECT_EQ(r.checked, 1u);
  EXPECT_EQ(r.dropped, 1u);
  EXPECT_FALSE(cached("a.bin"));
  EXPECT_FALSE(cached("b.bin"));
  EXPECT_EQ(store_->stats().used_bytes, 0u);
}

}  // namespace
}  // namespace hotshard

namespace hotshard {
namespace {

TEST_F(CacheStoreLinksTest, ThePromoterLinksAHardLinkInsteadOfCopying) {
  openStore();
  makePromoter(promoterOptions(IoEngineKind::kSync));
  std::string content = makeRemote("a.bin", 1 << 20);
  ASSERT_EQ(::link((remote_ + "/a.bin").c_str(), (remote_ + "/b.bin").c_str()), 0);
  ASSERT_TRUE(promoter_->promote("a.bin").ok());
  uint64_t one_copy = store_->stats().used_bytes;
  Status s = promoter_->promote("b.bin");
  ASSERT_TRUE(s.ok()) << s.error().message;
  Promoter::Stats p = promoter_->stats();
  EXPECT_EQ(p.published, 1u);
  EXPECT_EQ(p.linked, 1u);
  EXPECT_EQ(p.bytes_copied, 1u << 20);
  EXPECT_EQ(store_->stats().used_bytes, one_copy);
  EXPECT_EQ(cachedBytes("b.bin"), content);
  // A file with one name is copied as before.
  makeRemote("c.bin", 4096);
  ASSERT_TRUE(promoter_->promote("c.bin").ok());
  EXPECT_EQ(promoter_->stats().linked, 1u);
  EXPECT_EQ(promoter_->stats().published, 2u);
}

}  // namespace
}  // namespace hotshard
