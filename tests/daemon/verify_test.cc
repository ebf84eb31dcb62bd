#include <fcntl.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <chrono>
#include <thread>

#include "daemon/cache_store.h"
#include "daemon/scrubber.h"
#include "tests/daemon/store_fixture.h"

namespace hotshard {
namespace {

using testing::countEntries;

constexpr size_t kMiB = 1 << 20;

class VerifyTest : public testing::StoreFixture {
 protected:
  void SetUp() override {
    StoreFixture::SetUp();
    openStore();
    makePromoter(promoterOptions());
    for (const char* rel : {"a.bin", "b.bin", "c.bin"}) {
      makeRemote(rel, 3 * kMiB + 5);
      Status s = promoter_->promote(rel);
      ASSERT_TRUE(s.ok()) << s.error().message;
    }
  }

  void flipByte(const std::string& rel, off_t at) {
    std::string obj = cache_ + "/" + store_->objectPathFor(rel);
    int fd = ::open(obj.c_str(), O_RDWR);
    ASSERT_GE(fd, 0) << obj;
    char c;
    ASSERT_EQ(::pread(fd, &c, 1, at), 1);
    c = static_cast<char>(c ^ 0x01);
    ASSERT_EQ(::pwrite(fd, &c, 1, at), 1);
    ::close(fd);
  }
};

TEST_F(VerifyTest, CleanObjectsPass) {
  for (const char* rel : {"a.bin", "b.bin", "c.bin"}) {
    Status s = store_->verify(rel);
    EXPECT_TRUE(s.ok()) << s.error().message;
  }
  auto report = store_->verifyAll();
  EXPECT_EQ(report.checked, 3u);
  EXPECT_EQ(report.dropped, 0u);
  EXPECT_EQ(store_->verify("never-cached").error().code, Errc::kNotFound);
}

TEST_F(VerifyTest, FlippedByteIsCaughtAndDropped) {
  flipByte("b.bin", 2 * kMiB + 123);
  std::string obj = cache_ + "/" + store_->objectPathFor("b.bin");
  Status s = store_->verify("b.bin");
  ASSERT_FALSE(s.ok());
  EXPECT_EQ(s.error().code, Errc::kCorrupt);
  EXPECT_NE(s.error().message.find("verify b.bin: checksum mismatch"), std::string::npos)
      << s.error().message;
  EXPECT_EQ(store_->info("b.bin").state, CacheStore::State::kRemote);
  EXPECT_FALSE(std::filesystem::exists(obj));
  EXPECT_EQ(store_->stats().corrupt_drops, 1u);
  // The others are untouched, and b comes back on the next promotion.
  EXPECT_EQ(store_->info("a.bin").state, CacheStore::State::kCached);
  ASSERT_TRUE(promoter_->promote("b.bin").ok());
  EXPECT_TRUE(store_->verify("b.bin").ok());
}

TEST_F(VerifyTest, VerifyAllDropsOnlyTheBadOnes) {
  flipByte("a.bin", 0);
  flipByte("c.bin", 3 * kMiB + 4);  // the unaligned tail
  auto report = store_->verifyAll();
  EXPECT_EQ(report.checked, 3u);
  EXPECT_EQ(report.dropped, 2u);
  EXPECT_EQ(store_->stats().objects, 1u);
  EXPECT_EQ(store_->info("b.bin").state, CacheStore::State::kCached);
}

TEST_F(VerifyTest, ScrubberFindsCorruptionInTheBackground) {
  flipByte("c.bin", 77);
  Scrubber scrubber(store_.get(), ScrubberOptions{.bytes_per_sec = 0,
                                                  .pause_between_passes = std::chrono::hours(1)});
  scrubber.start();
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  while (scrubber.stats().passes == 0 && std::chrono::steady_clock::now() < deadline)
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  auto t0 = std::chrono::steady_clock::now();
  scrubber.stop();  // during the hour-long pause: must not wait for it
  EXPECT_LT(std::chrono::steady_clock::now() - t0, std::chrono::seconds(1));
  auto st = scrubber.stats();
  EXPECT_EQ(st.passes, 1u);
  EXPECT_EQ(st.objects_checked, 3u);
  EXPECT_EQ(st.objects_dropped, 1u);
  EXPECT_EQ(store_->info("c.bin").state, CacheStore::State::kRemote);
  EXPECT_EQ(store_->stats().objects, 2u);
}

TEST_F(VerifyTest, ScrubberHonoursItsRateAndStopsPromptly) {
  // 1 MiB/s over ~9 MiB: a pass would take seconds; stop must not.
  Scrubber scrubber(store_.get(), ScrubberOptions{.bytes_per_sec = 1 * kMiB});
  scrubber.start();
  std::this_thread::sleep_for(std::chrono::milliseconds(300));
  auto t0 = std::chrono::steady_clock::now();
  scrubber.stop();
  EXPECT_LT(std::chrono::steady_clock::now() - t0, std::chrono::seconds(2));
  auto st = scrubber.stats();
  EXPECT_EQ(st.passes, 0u);
  // 1 MiB of burst + ~0.3 MiB: far from the 9 MiB an unlimited scrub reads.
  EXPECT_LE(st.bytes_read, 3 * kMiB);
  EXPECT_EQ(store_->stats().objects, 3u);  // a cancelled verify drops nothing
}

}  // namespace
}  // namespace hotshard
