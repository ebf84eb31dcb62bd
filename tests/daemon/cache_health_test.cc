// Cache disk health: a disk fault from any cache-disk operation fails the
// store at once, new opens get no copy, promotions pause, a probe brings it
// back, and verify copes with a disk that rejects unlinks.
//
// The fault injected: the cache directory is a tmpfs mount made read-only
// per mount (MS_REMOUNT | MS_BIND | MS_RDONLY), so every open for writing,
// write, rename and unlink in it fails with EROFS, as on an ext4 cache disk
// that remounted itself read-only after an error (errors=remount-ro); reads
// keep working. Making the mount writable again is the disk answering again.
#include <fcntl.h>
#include <sys/mount.h>
#include <unistd.h>

#include <filesystem>

#include "daemon/cache_store.h"
#include "daemon/promoter.h"
#include "tests/daemon/store_fixture.h"

namespace hotshard::testing {
namespace {

class CacheDiskHealth : public StoreFixture {
 protected:
  void SetUp() override {
    StoreFixture::SetUp();
    HS_REQUIRE_ROOT();
    mountTmpfs(cache_, "64m");
  }
  // The fault: the cache's mount read-only (EROFS), or writable again.
  void setReadOnly(bool ro) {
    unsigned long flags = MS_REMOUNT | MS_BIND | (ro ? MS_RDONLY : 0);
    ASSERT_EQ(::mount(nullptr, cache_.c_str(), nullptr, flags, nullptr), 0)
        << "remount " << cache_ << (ro ? " ro: " : " rw: ") << std::strerror(errno);
  }
  // Promotes rel (made on the remote with `size` bytes) and returns its bytes.
  std::string cacheFile(const std::string& rel, size_t size) {
    std::string content = makeRemote(rel, size);
    Status s = promoter_->promote(rel);
    EXPECT_TRUE(s.ok()) << s.error().message;
    return content;
  }
};

TEST(CacheDiskFault, SaysWhichErrnosAreTheDisksAndWhichAreOneRequests) {
  for (int err : {EIO, EROFS, ENXIO, ENODEV, EUCLEAN, EBADMSG, EREMOTEIO}) {
    EXPECT_TRUE(CacheStore::isDiskFault(err)) << std::strerror(err);
  }
  for (int err : {0, ENOSPC, ENOENT, EEXIST, EINVAL, EBUSY, EDQUOT, EPERM}) {
    EXPECT_FALSE(CacheStore::isDiskFault(err)) << std::strerror(err);
  }
}

TEST_F(CacheDiskHealth, AFailingOpenFailsTheDiskAtOnceAndAProbeBringsItBack) {
  openStore();
  makePromoter(promoterOptions(IoEngineKind::kSync));
  std::string content = cacheFile("a.bin", 300000);
  ASSERT_EQ(cachedBytes("a.bin"), content);
  EXPECT_TRUE(store_->health().healthy);
  EXPECT_TRUE(store_->probeHealth().ok());

  setReadOnly(true);
  Validator v = validatorOfPath(remote_ + "/a.bin");
  auto first = store_->openIfValid("a.bin", v);  // O_RDWR on a read-only disk: EROFS
  ASSERT_FALSE(first.ok());
  EXPECT_EQ(first.error().sys_errno, EROFS) << first.error().message;
  CacheStore::Health h = store_->health();
  EXPECT_FALSE(h.healthy);
  EXPECT_FALSE(store_->healthy());
  EXPECT_NE(h.reason.find("Read-only file system"), std::string::npos) << h.reason;
  EXPECT_GT(h.since_ns, 0);
  EXPECT_EQ(h.faults, 1u);

  // While failed: no copy is served (nothing asked of the disk), the index is
  // kept, and promotions are refused without touching the disk.
  auto again = store_->openIfValid("a.bin", v);
  ASSERT_FALSE(again.ok());
  EXPECT_EQ(again.error().sys_errno, 0) << again.error().message;
  EXPECT_NE(again.error().message.find("cache disk"), std::string::npos) << again.error().message;
  EXPECT_EQ(store_->health().faults, 1u);
  EXPECT_EQ(store_->info("a.bin").state, CacheStore::State::kCached);
  makeRemote("b.bin", 5000);
  Status paused = promoter_->promote("b.bin");
  ASSERT_FALSE(paused.ok());
  EXPECT_NE(paused.error().message.find("promotions paused"), std::string::npos)
      << paused.error().message;
  EXPECT_EQ(store_->info("b.bin").state, CacheStore::State::kRemote);

  Status probe = store_->probeHealth();  // the disk still refuses writes
  ASSERT_FALSE(probe.ok());
  EXPECT_EQ(probe.error().sys_errno, EROFS) << probe.error().message;
  EXPECT_FALSE(store_->healthy());
  EXPECT_EQ(store_->health().since_ns, h.since_ns);  // still the same failure

  setReadOnly(false);
  Status back = store_->probeHealth();
  ASSERT_TRUE(back.ok()) << back.error().message;
  EXPECT_TRUE(store_->healthy());
  EXPECT_TRUE(store_->health().reason.empty());
  EXPECT_GE(store_->health().since_ns, h.since_ns);
  EXPECT_EQ(cachedBytes("a.bin"), content);  // the copy is served again
  Status promoted = promoter_->promote("b.bin");
  EXPECT_TRUE(promoted.ok()) << promoted.error().message;
  EXPECT_TRUE(std::filesystem::is_empty(cache_ + "/tmp"));  // the probe file went
}

TEST_F(CacheDiskHealth, DiskFaultsOthersReportFailItButOneRequestsTroubleDoesNot) {
  openStore();
  makeRemote("c.bin", 8192);
  auto p = store_->beginPromotion("c.bin", 8192, false);
  ASSERT_TRUE(p.ok()) << p.error().message;
  std::string bytes = readFile(remote_ + "/c.bin");
  ASSERT_EQ(::pwrite((*p)->fd(), bytes.data(), bytes.size(), 0), 8192);
  // An open writable file blocks a read-only remount, so the promoter's write
  // error is handed in as the promoter does (Promoter::copyData).
  store_->noteIoError(sysError(EIO, "promote c.bin: write " + (*p)->tmpPath()));
  EXPECT_FALSE(store_->healthy());
  EXPECT_NE(store_->health().reason.find("Input/output error"), std::string::npos);
  // One request's trouble is no disk fault.
  CacheStore::Health before = store_->health();
  store_->noteIoError(sysError(ENOSPC, "promote x: write"));
  EXPECT_EQ(store_->health().faults, before.faults);
}

TEST_F(CacheDiskHealth, VerifyCarriesOnWhenTheDiskRejectsUnlinks) {
  openStore();
  makePromoter(promoterOptions(IoEngineKind::kSync));
  std::string good = cacheFile("good.bin", 200000);
  cacheFile("bad.bin", 200000);
  std::string bad_object = cache_ + "/" + store_->objectPathFor("bad.bin");
  {  // a flipped byte, through the writable mount (the xattrs stay)
    int fd = ::open(bad_object.c_str(), O_RDWR);
    ASSERT_GE(fd, 0);
    char c = 0;
    ASSERT_EQ(::pread(fd, &c, 1, 1000), 1);
    c ^= 0x40;
    ASSERT_EQ(::pwrite(fd, &c, 1, 1000), 1);
    ::close(fd);
  }
  setReadOnly(true);
  Status st = store_->verify("bad.bin");
  ASSERT_FALSE(st.ok());
  EXPECT_EQ(st.error().code, Errc::kCorrupt);
  EXPECT_NE(st.error().message.find("left on disk, never served"), std::string::npos)
      << st.error().message;
  EXPECT_NE(st.error().message.find("Read-only file system"), std::string::npos)
      << st.error().message;
  EXPECT_FALSE(store_->healthy());  // the rejected unlink failed the disk
  EXPECT_EQ(store_->info("bad.bin").state, CacheStore::State::kRemote);  // never served
  EXPECT_TRUE(std::filesystem::exists(bad_object));

  // verifyAll carries on over the rest (reads work on a read-only disk).
  CacheStore::VerifyReport r = store_->verifyAll();
  EXPECT_EQ(r.checked, 1u);
  EXPECT_EQ(r.dropped, 0u);

  // When the disk answers again, the probe removes what the drop left.
  setReadOnly(false);
  ASSERT_TRUE(store_->probeHealth().ok());
  EXPECT_FALSE(std::filesystem::exists(bad_object));
  EXPECT_EQ(cachedBytes("good.bin"), good);
}

}  // namespace
}  // namespace hotshard::testing
