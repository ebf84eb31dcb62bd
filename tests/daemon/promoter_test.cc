#include "daemon/promoter.h"

#include <fcntl.h>
#include <fmt/format.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/mount.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <future>
#include <thread>

#include "tests/daemon/store_fixture.h"

namespace hotshard {
namespace {

using testing::countEntries;
using testing::readFile;
using testing::validatorOfPath;

constexpr size_t kMiB = 1 << 20;

class PromoterTest : public testing::StoreFixture {};

TEST_F(PromoterTest, PromotesAndSkipsWhatIsAlreadyCached) {
  openStore();
  makePromoter(promoterOptions());
  std::string content = makeRemote("data/shard-0000.tar", 3 * kMiB + 17);
  std::vector<uint64_t> progress;
  Status s = promoter_->promote("data/shard-0000.tar", [&](uint64_t copied, uint64_t total) {
    EXPECT_EQ(total, 3 * kMiB + 17);
    progress.push_back(copied);
  });
  ASSERT_TRUE(s.ok()) << s.error().message;
  EXPECT_EQ(cachedBytes("data/shard-0000.tar"), content);
  ASSERT_FALSE(progress.empty());
  EXPECT_EQ(progress.back(), 3 * kMiB + 17);
  EXPECT_TRUE(std::is_sorted(progress.begin(), progress.end()));

  ASSERT_TRUE(promoter_->promote("data/shard-0000.tar").ok());
  auto st = promoter_->stats();
  EXPECT_EQ(st.started, 2u);
  EXPECT_EQ(st.published, 1u);
  EXPECT_EQ(st.already_cached, 1u);
  EXPECT_EQ(st.bytes_copied, 3 * kMiB + 17);
  EXPECT_EQ(st.in_flight, 0u);
}

// --promote-buffers: the depth is lowered until every promotion's buffers
// fit; a cap below one chunk per promotion is refused; copies stay exact.
TEST_F(PromoterTest, BufferCapLowersTheDepthAndCopiesStayExact) {
  openStore();
  PromoterOptions o = promoterOptions();
  o.chunk_bytes = kMiB;
  o.queue_depth = 8;
  o.max_concurrent = 2;
  o.buffer_bytes = kMiB;
  auto refused = Promoter::create(store_.get(), o);
  ASSERT_FALSE(refused.ok());
  EXPECT_EQ(refused.error().code, Errc::kInvalidArgument);
  EXPECT_NE(refused.error().message.find("below one"), std::string::npos)
      << refused.error().message;

  o.buffer_bytes = 5 * kMiB;  // 2 promotions x 2 chunks fit, 3 would not
  makePromoter(o);
  EXPECT_EQ(promoter_->depth(), 2u);
  std::string content = makeRemote("data/big", 7 * kMiB + 5);
  ASSERT_TRUE(promoter_->promote("data/big").ok());
  EXPECT_EQ(cachedBytes("data/big"), content);

  o.buffer_bytes = 64 * kMiB;  // room to spare: the depth asked for
  makePromoter(o);
  EXPECT_EQ(promoter_->depth(), 8u);
}

// Many small files through the workers: each keeps its kit across files and
// every copy is exact.
TEST_F(PromoterTest, WorkersReuseTheirBuffersAcrossQueuedFiles) {
  openStore();
  makePromoter(promoterOptions());
  constexpr int kFiles = 200;
  std::vector<std::string> contents;
  for (int i = 0; i < kFiles; ++i) contents.push_back(makeRemote(fmt::format("s/f{}", i), 4096 + i));
  std::mutex mu;
  std::condition_variable cv;
  int done = 0;
  for (int i = 0; i < kFiles; ++i) {
    ASSERT_TRUE(promoter_
                    ->enqueue(fmt::format("s/f{}", i), nullptr,
                              [&](const Status& s) {
                                EXPECT_TRUE(s.ok()) << s.error().message;
                                std::lock_guard lock(mu);
                                ++done;
                                cv.notify_all();
                              })
                    .ok());
  }
  std::unique_lock lock(mu);
  ASSERT_TRUE(cv.wait_for(lock, std::chrono::seconds(60), [&] { return done == kFiles; }));
  lock.unlock();
  for (int i = 0; i < kFiles; ++i) EXPECT_EQ(cachedBytes(fmt::format("s/f{}", i)), contents[i]);
  EXPECT_EQ(promoter_->stats().published, uint64_t{kFiles});
}

// No failure reason for a file that is gone: no alert fires for rsync's temp files.
void expectNoFailure(const Promoter::Stats& st) {
  EXPECT_EQ(st.failed_stale + st.failed_no_space + st.failed_remote_io + st.failed_cache_io +
                st.failed_cancelled + st.failed_other,
            0u);
}

TEST_F(PromoterTest, MissingRemoteFileVanished) {
  openStore();
  makePromoter(promoterOptions());
  Status s = promoter_->promote("nope.tar");
  ASSERT_FALSE(s.ok());
  EXPECT_EQ(s.error().code, Errc::kNotFound);
  EXPECT_EQ(s.error().message, "promote nope.tar: open remote file: No such file or directory");
  EXPECT_EQ(promoter_->stats().vanished, 1u);
  expectNoFailure(promoter_->stats());
}

TEST_F(PromoterTest, FileRemovedBeforeTheCopyVanished) {
  openStore();
  makeRemote("tmp/.shard.tar.Xy12", 64 * 1024);
  makePromoter(promoterOptions());
  ASSERT_EQ(::unlink((remote_ + "/tmp/.shard.tar.Xy12").c_str()), 0);
  Status s = promoter_->promote("tmp/.shard.tar.Xy12");
  ASSERT_FALSE(s.ok());
  EXPECT_EQ(promoter_->stats().vanished, 1u);
  expectNoFailure(promoter_->stats());
  EXPECT_EQ(store_->info("tmp/.shard.tar.Xy12").state, CacheStore::State::kRemote);
}

TEST_F(PromoterTest, FileRenamedAwayDuringTheCopyVanished) {  // rsync: temp, then rename
  openStore();
  makeRemote(".a.bin.Xy12", 2 * kMiB);
  auto o = promoterOptions();
  o.chunk_bytes = 256 * 1024;
  o.chunk_hook = [&](const std::string&, uint64_t off) {
    if (off == 512 * 1024) {
      ASSERT_EQ(::rename((remote_ + "/.a.bin.Xy12").c_str(), (remote_ + "/a.bin").c_str()), 0);
    }
  };
  makePromoter(o);
  Status s = promoter_->promote(".a.bin.Xy12");
  ASSERT_FALSE(s.ok());
  EXPECT_EQ(promoter_->stats().vanished, 1u);
  expectNoFailure(promoter_->stats());
  EXPECT_EQ(store_->stats().objects, 0u);
  EXPECT_EQ(countEntries(cache_ + "/tmp"), 0u);
}

TEST_F(PromoterTest, NeverLeavesTheRemoteRoot) {
  openStore();
  makePromoter(promoterOptions());
  testing::writeFile(root_ + "/outside.bin", "secret");
  ASSERT_EQ(::symlink((root_ + "/outside.bin").c_str(), (remote_ + "/abs-link").c_str()), 0);
  ASSERT_EQ(::symlink("../outside.bin", (remote_ + "/dotdot-link").c_str()), 0);
  for (const char* rel : {"abs-link", "dotdot-link"}) {
    Status s = promoter_->promote(rel);
    EXPECT_FALSE(s.ok()) << rel;
    EXPECT_EQ(store_->info(rel).state, CacheStore::State::kRemote) << rel;
  }
}

TEST_F(PromoterTest, RefusesWhatIsNotARegularFile) {
  openStore();
  makePromoter(promoterOptions());
  ASSERT_EQ(::mkfifo((remote_ + "/fifo").c_str(), 0600), 0);  // opening it must not hang
  std::filesystem::create_directories(remote_ + "/dir");
  for (const char* rel : {"fifo", "dir"}) {
    Status s = promoter_->promote(rel);
    ASSERT_FALSE(s.ok()) << rel;
    EXPECT_EQ(s.error().code, Errc::kInvalidArgument) << s.error().message;
  }
}

TEST_F(PromoterTest, ChangedDuringPromotionIsNotPublished) {
  openStore();
  makeRemote("a.bin", 4 * kMiB);
  auto o = promoterOptions();
  o.chunk_bytes = 256 * 1024;
  o.queue_depth = 2;
  std::string path = remote_ + "/a.bin";
  o.chunk_hook = [&](const std::string&, uint64_t off) {
    if (off == 1 * kMiB) {  // a writer on another host rewrites a few bytes in place
      int fd = ::open(path.c_str(), O_WRONLY);
      ASSERT_EQ(::pwrite(fd, "XXXX", 4, 100), 4);
      ::close(fd);
    }
  };
  makePromoter(o);
  Status s = promoter_->promote("a.bin");
  ASSERT_FALSE(s.ok());
  EXPECT_EQ(s.error().code, Errc::kStale);
  EXPECT_NE(s.error().message.find("changed during the copy"), std::string::npos)
      << s.error().message;
  EXPECT_EQ(store_->info("a.bin").state, CacheStore::State::kRemote);
  EXPECT_EQ(countEntries(cache_ + "/tmp"), 0u);
  EXPECT_EQ(promoter_->stats().failed_stale, 1u);
}

TEST_F(PromoterTest, InvalidatedThroughTheMountDuringPromotionIsNotPublished) {
  openStore();
  makeRemote("a.bin", 2 * kMiB);
  auto o = promoterOptions();
  o.chunk_bytes = 256 * 1024;
  o.chunk_hook = [&](const std::string& rel, uint64_t off) {
    if (off == 512 * 1024) {
      ASSERT_TRUE(store_->invalidate(rel).ok());
    }
  };
  makePromoter(o);
  Status s = promoter_->promote("a.bin");
  ASSERT_FALSE(s.ok());
  EXPECT_EQ(s.error().code, Errc::kStale);
  EXPECT_EQ(store_->info("a.bin").state, CacheStore::State::kRemote);
  EXPECT_EQ(countEntries(cache_ + "/tmp"), 0u);
}

TEST_F(PromoterTest, RemoteReplacedDuringPromotionIsNotPublished) {
  openStore();
  makeRemote("a.bin", 2 * kMiB);
  auto o = promoterOptions();
  o.chunk_bytes = 256 * 1024;
  o.chunk_hook = [&](const std::string&, uint64_t off) {
    if (off == 512 * 1024) {  // write-new-then-rename, as dataset tools do
      testing::writeFile(remote_ + "/a.bin.new", "new contents");
      ASSERT_EQ(::rename((remote_ + "/a.bin.new").c_str(), (remote_ + "/a.bin").c_str()), 0);
    }
  };
  makePromoter(o);
  Status s = promoter_->promote("a.bin");
  ASSERT_FALSE(s.ok());
  EXPECT_EQ(s.error().code, Errc::kStale) << s.error().message;
  EXPECT_EQ(store_->info("a.bin").state, CacheStore::State::kRemote);
  EXPECT_EQ(countEntries(cache_ + "/tmp"), 0u);
}

TEST_F(PromoterTest, RemoteUnlinkedAndTruncatedMidCopyAborts) {
  openStore();
  makeRemote("a.bin", 4 * kMiB);
  auto o = promoterOptions();
  o.chunk_bytes = 256 * 1024;
  o.queue_depth = 2;
  std::string path = remote_ + "/a.bin";
  o.chunk_hook = [&](const std::string&, uint64_t off) {
    if (off == 1 * kMiB) {
      ASSERT_EQ(::truncate(path.c_str(), 0), 0);
      ASSERT_EQ(::unlink(path.c_str()), 0);
    }
  };
  makePromoter(o);
  Status s = promoter_->promote("a.bin");
  ASSERT_FALSE(s.ok());
  EXPECT_EQ(s.error().code, Errc::kStale) << s.error().message;
  EXPECT_EQ(store_->info("a.bin").state, CacheStore::State::kRemote);
  EXPECT_EQ(store_->stats().objects, 0u);
  EXPECT_EQ(countEntries(cache_ + "/tmp"), 0u);
}

TEST_F(PromoterTest, RemoteFileSystemUnmountedMidCopyAborts) {
  HS_REQUIRE_ROOT();
  openStore();
  mountTmpfs(remote_ + "/mnt", "16m");
  makeRemote("mnt/a.bin", 4 * kMiB);
  auto o = promoterOptions();
  o.chunk_bytes = 256 * 1024;
  std::string mnt = remote_ + "/mnt";
  o.chunk_hook = [&](const std::string&, uint64_t off) {
    if (off == 1 * kMiB) {
      ASSERT_EQ(::umount2(mnt.c_str(), MNT_DETACH), 0) << std::strerror(errno);
      mounts_.clear();
    }
  };
  makePromoter(o);
  Status s = promoter_->promote("mnt/a.bin");
  ASSERT_FALSE(s.ok());
  EXPECT_EQ(s.error().code, Errc::kStale) << s.error().message;
  EXPECT_NE(s.error().message.find("re-resolve remote path"), std::string::npos)
      << s.error().message;
  EXPECT_EQ(store_->info("mnt/a.bin").state, CacheStore::State::kRemote);
  EXPECT_EQ(countEntries(cache_ + "/tmp"), 0u);
}

TEST_F(PromoterTest, CacheOutOfSpaceFailsCleanly) {
  HS_REQUIRE_ROOT();
  mountTmpfs(cache_, "8m");
  openStore();  // capacity 1 GiB: the file system fills up first
  makeRemote("small.bin", 2 * kMiB);
  makeRemote("big.bin", 16 * kMiB);
  struct Variant {
    bool direct, preallocate;
  };
  for (Variant v :
       {Variant{true, true}, Variant{false, true}, Variant{true, false}, Variant{false, false}}) {
    SCOPED_TRACE(fmt::format("direct {} preallocate {}", v.direct, v.preallocate));
    auto o = promoterOptions();
    o.direct_io = v.direct;
    o.preallocate = v.preallocate;  // without it, pwrite meets ENOSPC mid-copy
    makePromoter(o);
    Status s = promoter_->promote("big.bin");
    ASSERT_FALSE(s.ok());
    EXPECT_EQ(s.error().code, Errc::kNoSpace);
    EXPECT_EQ(s.error().toErrno(), ENOSPC);
    EXPECT_EQ(s.error().message.rfind("promote big.bin: ", 0), 0u) << s.error().message;
    EXPECT_NE(s.error().message.find(cache_ + "/tmp/"), std::string::npos) << s.error().message;
    EXPECT_NE(s.error().message.find("No space left on device"), std::string::npos)
        << s.error().message;
    EXPECT_NE(s.error().message.find(v.preallocate ? ": fallocate " : ": pwrite "),
              std::string::npos)
        << s.error().message;
    EXPECT_EQ(countEntries(cache_ + "/tmp"), 0u);
    EXPECT_EQ(store_->info("big.bin").state, CacheStore::State::kRemote);
    EXPECT_EQ(promoter_->stats().failed_no_space, 1u);
  }
  // The space is back: a file that fits still promotes.
  ASSERT_TRUE(promoter_->promote("small.bin").ok());
  EXPECT_EQ(store_->info("small.bin").state, CacheStore::State::kCached);
}

TEST_F(PromoterTest, WatermarkNoSpaceWhenNothingCanBeEvicted) {
  openStore(8 * kMiB);
  makePromoter(promoterOptions());
  makeRemote("a", 3 * kMiB);
  makeRemote("b", 3 * kMiB);
  makeRemote("c", 3 * kMiB);
  ASSERT_TRUE(store_->pin("a", true).ok());
  ASSERT_TRUE(store_->pin("b", true).ok());
  ASSERT_TRUE(promoter_->promote("a").ok());
  ASSERT_TRUE(promoter_->promote("b").ok());
  Status s = promoter_->promote("c");
  ASSERT_FALSE(s.ok());
  EXPECT_EQ(s.error().code, Errc::kNoSpace);
  EXPECT_EQ(countEntries(cache_ + "/tmp"), 0u);
  ASSERT_TRUE(store_->pin("b", false).ok());
  ASSERT_TRUE(promoter_->promote("c").ok());
  EXPECT_EQ(store_->info("b").state, CacheStore::State::kRemote);
}

TEST_F(PromoterTest, RateLimitIsHonoured) {
  openStore();
  makeRemote("a.bin", 4 * kMiB);
  auto o = promoterOptions();
  o.bytes_per_sec = 8 * kMiB;
  makePromoter(o);
  // Let the file age past the racy-timestamp window first.
  std::this_thread::sleep_for(std::chrono::milliseconds(60));
  auto t0 = std::chrono::steady_clock::now();
  ASSERT_TRUE(promoter_->promote("a.bin").ok());
  double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  // 4 MiB at 8 MiB/s with one 1 MiB chunk of burst: >= 3/8 s.
  EXPECT_GE(secs, 0.3);
}

TEST_F(PromoterTest, EnqueueRunsEverythingAndRefusesDuplicates) {
  openStore();
  auto o = promoterOptions();
  o.max_concurrent = 3;
  makePromoter(o);
  constexpr int kFiles = 12;
  std::vector<std::string> contents;
  for (int i = 0; i < kFiles; ++i)
    contents.push_back(makeRemote("f" + std::to_string(i), (i + 1) * 100000));
  std::mutex mu;
  std::condition_variable cv;
  int done = 0, ok = 0;
  for (int i = 0; i < kFiles; ++i) {
    Status s = promoter_->enqueue("f" + std::to_string(i), nullptr, [&](const Status& st) {
      std::lock_guard lock(mu);
      ++done;
      ok += st.ok();
      cv.notify_all();
    });
    ASSERT_TRUE(s.ok());
  }
  Status dup = promoter_->enqueue("f" + std::to_string(kFiles - 1));
  if (!dup.ok()) {  // unless it already finished
    EXPECT_EQ(dup.error().code, Errc::kExists);
  }
  {
    std::unique_lock lock(mu);
    ASSERT_TRUE(cv.wait_for(lock, std::chrono::seconds(20), [&] { return done == kFiles; }));
  }
  EXPECT_EQ(ok, kFiles);
  for (int i = 0; i < kFiles; ++i) EXPECT_EQ(cachedBytes("f" + std::to_string(i)), contents[i]);
}

TEST_F(PromoterTest, ShutdownCancelsQueuedAndInFlight) {
  openStore();
  auto o = promoterOptions();
  o.bytes_per_sec = 2 * kMiB;
  o.max_concurrent = 1;
  makePromoter(o);
  for (int i = 0; i < 4; ++i) makeRemote("f" + std::to_string(i), 8 * kMiB);
  std::atomic<int> done{0}, cancelled{0};
  for (int i = 0; i < 4; ++i) {
    ASSERT_TRUE(promoter_
                    ->enqueue("f" + std::to_string(i), nullptr,
                              [&](const Status& s) {
                                ++done;
                                cancelled += !s.ok() && s.error().code == Errc::kBusy;
                              })
                    .ok());
  }
  std::this_thread::sleep_for(std::chrono::milliseconds(200));
  auto t0 = std::chrono::steady_clock::now();
  promoter_->shutdown();
  EXPECT_LT(std::chrono::steady_clock::now() - t0, std::chrono::seconds(2));
  EXPECT_EQ(done, 4);
  EXPECT_EQ(cancelled, 4);
  EXPECT_EQ(store_->stats().objects, 0u);
  EXPECT_EQ(countEntries(cache_ + "/tmp"), 0u);
  EXPECT_FALSE(promoter_->enqueue("f0").ok());
}

TEST_F(PromoterTest, ShutdownRightAfterCreateNeverHangs) {
  // stopping_ was once set outside the queue lock, so a worker between its
  // predicate check and its wait could sleep through the shutdown (seen once
  // by hand: `hotshard cache promote` hung on exit). The window is right after
  // promote() releases its slot and wakes the workers; this walks through it
  // many times, though it rarely hit the old bug.
  openStore();
  makeRemote("tiny", 10);
  std::this_thread::sleep_for(std::chrono::milliseconds(60));  // past the racy window
  auto o = promoterOptions();
  o.max_concurrent = 4;
  for (int i = 0; i < 300; ++i) {
    makePromoter(o);
    ASSERT_TRUE(promoter_->promote("tiny").ok());
    promoter_.reset();
  }
}

// kill -9 at random moments while a child process promotes (and evicts and
// invalidates) many files; after each kill the reopened store serves only
// byte-identical copies and tmp/ is empty.
TEST_F(PromoterTest, CrashSafetyUnderKill9) {
  constexpr int kFiles = 24;
  constexpr int kIterations = 20;
  std::vector<std::string> contents;
  std::mt19937 sizes(42);
  for (int i = 0; i < kFiles; ++i) {
    size_t size = i == 0 ? 0 : sizes() % (3 * kMiB) + (i % 3 == 0 ? 0 : 1);
    contents.push_back(makeRemote("d" + std::to_string(i % 4) + "/f" + std::to_string(i), size));
  }
  auto relOf = [](int i) { return "d" + std::to_string(i % 4) + "/f" + std::to_string(i); };
  std::this_thread::sleep_for(std::chrono::milliseconds(60));  // past the racy window

  unsigned seed = static_cast<unsigned>(::getpid()) ^ static_cast<unsigned>(::time(nullptr));
  SCOPED_TRACE("seed " + std::to_string(seed));
  std::mt19937 rng(seed);
  size_t objects_seen = 0, tmp_swept = 0, dropped = 0;
  for (int iter = 0; iter < kIterations; ++iter) {
    pid_t pid = ::fork();
    ASSERT_GE(pid, 0);
    if (pid == 0) {
      auto store = CacheStore::open(storeOptions(40 * kMiB));  // small: evictions happen too
      if (!store.ok()) ::_exit(2);
      PromoterOptions o = promoterOptions(iter % 2 ? IoEngineKind::kSync : IoEngineKind::kUring);
      o.chunk_bytes = 256 * 1024;
      o.max_concurrent = 2;
      auto promoter = Promoter::create(store->get(), o);
      if (!promoter.ok()) ::_exit(3);
      auto work = [&](unsigned s) {
        std::mt19937 r(s);
        for (;;) {
          int i = static_cast<int>(r() % kFiles);
          switch (r() % 8) {
            case 0:
              (void)(*store)->evict(relOf(i));
              break;
            case 1:
              (void)(*store)->invalidate(relOf(i));
              break;
            default:
              (void)(*promoter)->promote(relOf(i));
              break;
          }
        }
      };
      std::thread other(work, seed + iter * 2 + 1);
      work(seed + iter * 2);
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(5 + rng() % 120));
    ASSERT_EQ(::kill(pid, SIGKILL), 0);
    int status = 0;
    ASSERT_EQ(::waitpid(pid, &status, 0), pid);
    ASSERT_TRUE(WIFSIGNALED(status)) << "child exited early with " << WEXITSTATUS(status);

    openStore(40 * kMiB);
    EXPECT_EQ(countEntries(cache_ + "/tmp"), 0u) << "iteration " << iter;
    tmp_swept += store_->stats().recovery_tmp_swept;
    dropped += store_->stats().recovery_drops;
    for (const auto& o : store_->list()) {
      int i = std::stoi(o.rel_path.substr(o.rel_path.find("/f") + 2));
      ASSERT_EQ(o.rel_path, relOf(i));
      EXPECT_TRUE(cachedBytes(o.rel_path) == contents[i])
          << "iteration " << iter << ": " << o.rel_path << " differs from its source";
      ++objects_seen;
    }
    store_.reset();
  }
  EXPECT_GT(objects_seen, 0u);
  std::printf(
      "crash safety: %d kills, %zu recovered objects checked byte for byte, %zu "
      "interrupted promotions swept from tmp/, %zu objects dropped at recovery\n",
      kIterations, objects_seen, tmp_swept, dropped);
}

// ---- one remote read per byte: the jobs' open file, resident pages ----------

// Writes back and drops a remote file's pages (ext4 under /tmp honours
// POSIX_FADV_DONTNEED for clean pages).
void dropPages(const std::string& path) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  ASSERT_GE(fd, 0) << path;
  ASSERT_EQ(::fdatasync(fd), 0);
  ASSERT_EQ(::posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED), 0);
  ::close(fd);
}

UniqueFd openRead(const std::string& path) {
  return UniqueFd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
}

// What a job just read is copied from the page cache, through the file the job
// has open; pages that are gone come from the remote, and the split says so.
TEST_F(PromoterTest, CountsBytesReadFromThePageCacheAndFromTheRemote) {
  openStore();
  auto o = promoterOptions();
  std::atomic<int> asked{0};
  o.shared_source = [&](const std::string& rel) {
    asked++;
    return openRead(remote_ + "/" + rel);
  };
  o.follow_idle = std::chrono::milliseconds(0);
  makePromoter(o);
  std::string hot = makeRemote("hot.bin", 5 * kMiB + 123, 1);
  std::string cold = makeRemote("cold.bin", 3 * kMiB + 5, 2);
  ASSERT_EQ(testing::readFile(remote_ + "/hot.bin"), hot);  // the job's read: all resident
  dropPages(remote_ + "/cold.bin");

  ASSERT_TRUE(promoter_->promote("hot.bin").ok());
  auto st = promoter_->stats();
  EXPECT_EQ(asked.load(), 1);
  EXPECT_EQ(st.shared_sources, 1u);
  EXPECT_EQ(st.read_page_cache_bytes, 5 * kMiB + 123);
  EXPECT_EQ(st.read_remote_bytes, 0u);
  EXPECT_EQ(cachedBytes("hot.bin"), hot);

  ASSERT_TRUE(promoter_->promote("cold.bin").ok());
  st = promoter_->stats();
  EXPECT_EQ(st.read_page_cache_bytes, 5 * kMiB + 123);
  EXPECT_EQ(st.read_remote_bytes, 3 * kMiB + 5);
  EXPECT_EQ(cachedBytes("cold.bin"), cold);
}

// The fd handed over names a file that rel no longer names (replaced by
// rename): the copy is made from a new open of rel, never from the old file.
TEST_F(PromoterTest, ASharedSourceOfAReplacedFileIsNotUsed) {
  openStore();
  makeRemote("f.bin", 2 * kMiB, 3);
  UniqueFd old_fd = openRead(remote_ + "/f.bin");
  ASSERT_TRUE(old_fd);
  std::string fresh = makeRemote("f.bin.tmp", 2 * kMiB, 4);
  ASSERT_EQ(::rename((remote_ + "/f.bin.tmp").c_str(), (remote_ + "/f.bin").c_str()), 0);
  auto o = promoterOptions();
  o.shared_source = [&](const std::string&) { return std::move(old_fd); };
  makePromoter(o);
  ASSERT_TRUE(promoter_->promote("f.bin").ok());
  EXPECT_EQ(promoter_->stats().shared_sources, 0u);
  EXPECT_EQ(cachedBytes("f.bin"), fresh);
}

// A job reading the file ahead of the copy brings every chunk in; the copy
// waits for it behind its readahead instead of reading the remote itself.
TEST_F(PromoterTest, FollowsAJobReadingTheSameFile) {
  openStore();
  const size_t size = 8 * kMiB;
  std::string content = makeRemote("seq.bin", size, 5);
  dropPages(remote_ + "/seq.bin");
  auto o = promoterOptions();
  o.shared_source = [&](const std::string& rel) { return openRead(remote_ + "/" + rel); };
  o.follow_idle = std::chrono::milliseconds(2000);
  makePromoter(o);
  std::thread job([&] {
    UniqueFd fd = openRead(remote_ + "/seq.bin");
    ::posix_fadvise(fd.get(), 0, 0, POSIX_FADV_RANDOM);  // exactly what it reads, no more
    std::string buf(kMiB / 4, '\0');
    for (size_t off = 0; off < size; off += buf.size()) {
      std::this_thread::sleep_for(std::chrono::milliseconds(25));
      ASSERT_EQ(::pread(fd.get(), buf.data(), buf.size(), static_cast<off_t>(off)),
                static_cast<ssize_t>(buf.size()));
    }
  });
  Status s = promoter_->promote("seq.bin");
  job.join();
  ASSERT_TRUE(s.ok()) << s.error().message;
  auto st = promoter_->stats();
  EXPECT_EQ(st.read_remote_bytes, 0u);
  EXPECT_EQ(st.read_page_cache_bytes, size);
  EXPECT_GE(st.yields, 1u);
  EXPECT_EQ(cachedBytes("seq.bin"), content);
}

// While the jobs read the remote, a chunk that must come from it waits (up to
// yield_max); when they do not, it does not.
TEST_F(PromoterTest, YieldsToTheJobsReadsOfTheRemote) {
  openStore();
  auto o = promoterOptions();
  o.chunk_bytes = kMiB;
  o.queue_depth = 1;
  o.yield_above = 1 << 20;
  o.yield_max = std::chrono::milliseconds(150);
  makePromoter(o);
  makeRemote("a.bin", 4 * kMiB, 6);
  makeRemote("b.bin", 4 * kMiB, 7);
  dropPages(remote_ + "/a.bin");
  dropPages(remote_ + "/b.bin");

  promoter_->setForegroundRemoteRate(100 << 20);
  auto t0 = std::chrono::steady_clock::now();
  ASSERT_TRUE(promoter_->promote("a.bin").ok());
  auto busy = std::chrono::steady_clock::now() - t0;
  EXPECT_GE(busy, std::chrono::milliseconds(4 * 150));
  EXPECT_EQ(promoter_->stats().yields, 4u);

  promoter_->setForegroundRemoteRate(0);
  ASSERT_TRUE(promoter_->promote("b.bin").ok());
  EXPECT_EQ(promoter_->stats().yields, 4u);
  EXPECT_EQ(promoter_->stats().read_remote_bytes, 8 * kMiB);
}

}  // namespace
}  // namespace hotshard
