#include "daemon/io_engine.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include "tests/daemon/store_fixture.h"

namespace hotshard {
namespace {

using testing::randomBytes;
using testing::readFd;

std::vector<std::unique_ptr<IoEngine>> bothEngines(unsigned depth) {
  std::vector<std::unique_ptr<IoEngine>> out;
  auto uring = makeUringEngine(depth);
  EXPECT_TRUE(uring.ok()) << uring.error().message;
  if (uring.ok()) out.push_back(std::move(uring).value());
  out.push_back(makeSyncEngine(depth));
  return out;
}

TEST(IoEngineTest, ParsesItsName) {
  EXPECT_EQ(*parseIoEngineKind("uring"), IoEngineKind::kUring);
  EXPECT_EQ(*parseIoEngineKind("sync"), IoEngineKind::kSync);
  auto bad = parseIoEngineKind("aio");
  ASSERT_FALSE(bad.ok());
  EXPECT_EQ(bad.error().code, Errc::kInvalidArgument);
  EXPECT_STREQ(makeIoEngine(IoEngineKind::kSync, 4)->name(), "sync");
}

TEST(IoEngineTest, WritesAndReadsManyInFlight) {
  for (auto& engine : bothEngines(8)) {
    SCOPED_TRACE(engine->name());
    FILE* f = std::tmpfile();
    int fd = ::fileno(f);
    constexpr unsigned kN = 8;
    constexpr uint32_t kLen = 64 * 1024;
    std::string data = randomBytes(kN * kLen, 7);
    for (unsigned i = 0; i < kN; ++i) {
      // Out of order on purpose.
      unsigned j = (i * 5) % kN;
      ASSERT_TRUE(engine
                      ->submit(IoRequest{IoOp::kWrite, fd, data.data() + j * kLen, kLen,
                                         uint64_t{j} * kLen, j})
                      .ok());
    }
    EXPECT_EQ(engine->inFlight(), kN);
    EXPECT_EQ(engine->submit(IoRequest{IoOp::kWrite, fd, data.data(), 1, 0, 99}).error().code,
              Errc::kBusy);
    std::vector<IoCompletion> done;
    while (engine->inFlight() > 0) ASSERT_TRUE(engine->reap(&done, 1).ok());
    ASSERT_EQ(done.size(), kN);
    for (const auto& c : done) EXPECT_EQ(c.result, kLen) << c.user_data;
    EXPECT_EQ(readFd(fd), data);

    std::string back(kN * kLen, '\0');
    for (unsigned i = 0; i < kN; ++i) {
      ASSERT_TRUE(
          engine->submit(IoRequest{IoOp::kRead, fd, back.data() + i * kLen, kLen, i * kLen, i})
              .ok());
    }
    done.clear();
    while (engine->inFlight() > 0) ASSERT_TRUE(engine->reap(&done, kN).ok());
    EXPECT_EQ(back, data);
    // Errors come back as -errno.
    ASSERT_TRUE(engine->submit(IoRequest{IoOp::kRead, -1, back.data(), 1, 0, 5}).ok());
    done.clear();
    ASSERT_TRUE(engine->reap(&done, 1).ok());
    ASSERT_EQ(done.size(), 1u);
    EXPECT_EQ(done[0].result, -EBADF);
    std::fclose(f);
  }
}

TEST(IoEngineTest, UringFixedBuffersRoundTrip) {
  auto engine = makeUringEngine(4);
  ASSERT_TRUE(engine.ok()) << engine.error().message;
  constexpr uint32_t kLen = 128 * 1024;
  std::vector<std::string> bufs = {randomBytes(kLen, 1), randomBytes(kLen, 2)};
  std::vector<iovec> iov;
  for (auto& b : bufs) iov.push_back(iovec{b.data(), b.size()});
  Status reg = (*engine)->registerBuffers(iov);
  ASSERT_TRUE(reg.ok()) << reg.error().message;
  FILE* f = std::tmpfile();
  int fd = ::fileno(f);
  std::string want = bufs[0] + bufs[1];
  for (int i = 0; i < 2; ++i) {
    ASSERT_TRUE(
        (*engine)
            ->submit(IoRequest{IoOp::kWrite, fd, bufs[i].data(), kLen,
                               static_cast<uint64_t>(i) * kLen, static_cast<uint64_t>(i), i})
            .ok());
  }
  std::vector<IoCompletion> done;
  while ((*engine)->inFlight() > 0) ASSERT_TRUE((*engine)->reap(&done, 2).ok());
  for (const auto& c : done) EXPECT_EQ(c.result, kLen);
  // Read back into the second half of buffer 1, then the first: offsets within
  // a registered buffer are allowed.
  for (auto& b : bufs) std::fill(b.begin(), b.end(), '\0');
  ASSERT_TRUE((*engine)->submit(IoRequest{IoOp::kRead, fd, bufs[1].data(), kLen, 0, 0, 1}).ok());
  ASSERT_TRUE((*engine)->submit(IoRequest{IoOp::kRead, fd, bufs[0].data(), kLen, kLen, 1, 0}).ok());
  done.clear();
  while ((*engine)->inFlight() > 0) ASSERT_TRUE((*engine)->reap(&done, 2).ok());
  EXPECT_EQ(bufs[1] + bufs[0], want);
  EXPECT_EQ(makeSyncEngine(1)->registerBuffers(iov).error().code, Errc::kUnsupported);
  std::fclose(f);
}

class IoEngineCopyTest : public testing::StoreFixture {};

// The same files through the uring and the sync engine, with and without
// O_DIRECT: byte-identical copies, equal checksums.
TEST_F(IoEngineCopyTest, UringAndSyncCopiesAreByteIdentical) {
  const std::vector<size_t> sizes = {0, 1, 4096, (1u << 20) + 1, 37u << 20};
  std::vector<std::string> contents;
  for (size_t s : sizes) contents.push_back(makeRemote("f" + std::to_string(s), s));
  struct Variant {
    IoEngineKind kind;
    bool direct;
    bool fixed = true;
  };
  std::vector<std::vector<uint64_t>> checksums;
  for (Variant v : {Variant{IoEngineKind::kUring, true}, Variant{IoEngineKind::kSync, true},
                    Variant{IoEngineKind::kUring, false}, Variant{IoEngineKind::kSync, false},
                    Variant{IoEngineKind::kUring, true, false}}) {
    SCOPED_TRACE(std::string(ioEngineKindName(v.kind)) + (v.direct ? " direct" : " buffered") +
                 (v.fixed ? "" : " unregistered"));
    std::filesystem::remove_all(cache_);
    openStore();
    auto o = promoterOptions(v.kind);
    o.direct_io = v.direct;
    o.register_buffers = v.fixed;
    makePromoter(o);
    for (size_t i = 0; i < sizes.size(); ++i) {
      std::string rel = "f" + std::to_string(sizes[i]);
      Status s = promoter_->promote(rel);
      ASSERT_TRUE(s.ok()) << s.error().message;
      EXPECT_TRUE(cachedBytes(rel) == contents[i]) << rel;
    }
    std::vector<uint64_t> sums;
    for (const auto& obj : store_->list()) sums.push_back(obj.checksum);
    checksums.push_back(sums);
    EXPECT_EQ(promoter_->stats().published, sizes.size());
    promoter_.reset();
    store_.reset();
  }
  for (const auto& c : checksums) EXPECT_EQ(c, checksums[0]);
}

}  // namespace
}  // namespace hotshard
