#include "daemon/peer_objects.h"

#include <gtest/gtest.h>
#include <sys/stat.h>
#include <xxhash.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

#include "tests/daemon/store_fixture.h"

namespace hotshard {
namespace {

using testing::countEntries;
using testing::readFd;
using testing::validatorOfPath;

constexpr size_t kMiB = 1 << 20;

class PeerObjectsTest : public testing::StoreFixture {
 protected:
  void SetUp() override {
    StoreFixture::SetUp();
    openStore();
  }
  void TearDown() override {
    objects_.reset();
    StoreFixture::TearDown();
  }

  void makeObjects(bool owner, PromoterOptions po,
                   const std::function<void(PeerObjectsOptions&)>& tune = nullptr) {
    makePromoter(std::move(po));
    PeerObjectsOptions o{
        .ns = "imagenet",
        .remote_root_fd = remote_fd_,
        .store = store_.get(),
        .promoter = promoter_.get(),
        .owns = [this, owner](const std::string& key) {
          asked_.push_back(key);
          return owner;
        },
        .wait = std::chrono::seconds(20),
    };
    if (tune) tune(o);
    objects_ = std::make_unique<PeerObjects>(std::move(o));
  }

  peer::ObjectRequest requestFor(const std::string& rel) {
    Validator v = validatorOfPath(remote_ + "/" + rel);
    return peer::ObjectRequest{.ns = "imagenet", .relpath = rel, .size = v.size,
                               .mtime_ns = v.mtime_ns};
  }

  // Rewrites remote/<rel> with other bytes of the same size and another mtime.
  void changeRemote(const std::string& rel) {
    makeRemote(rel, validatorOfPath(remote_ + "/" + rel).size, /*seed=*/99);
    struct timespec times[2] = {{.tv_sec = 1000, .tv_nsec = 0}, {.tv_sec = 1000, .tv_nsec = 0}};
    ASSERT_EQ(::utimensat(AT_FDCWD, (remote_ + "/" + rel).c_str(), times, 0), 0);
  }

  std::unique_ptr<PeerObjects> objects_;
  std::vector<std::string> asked_;
};

uint64_t xxh3(const std::string& s) { return XXH3_64bits(s.data(), s.size()); }

TEST_F(PeerObjectsTest, ServesAValidCopyWithItsChecksum) {
  makeObjects(/*owner=*/false, promoterOptions());
  std::string content = makeRemote("train/shard-0001.tar", 2 * kMiB + 5);
  ASSERT_TRUE(promoter_->promote("train/shard-0001.tar").ok());

  auto served = objects_->openForPeer(requestFor("train/shard-0001.tar"));
  ASSERT_TRUE(served.ok()) << served.error().message;
  EXPECT_EQ(readFd(served->fd.get()), content);
  EXPECT_EQ(served->meta.size, content.size());
  EXPECT_EQ(served->meta.mtime_ns, validatorOfPath(remote_ + "/train/shard-0001.tar").mtime_ns);
  EXPECT_EQ(served->meta.xxh3, xxh3(content));
  // Read-only, and the store does not count it open after the call.
  EXPECT_EQ(::fcntl(served->fd.get(), F_GETFL) & O_ACCMODE, O_RDONLY);
  EXPECT_TRUE(store_->evictIdle("train/shard-0001.tar").ok());
  EXPECT_TRUE(asked_.empty()) << "a copy is served without asking who owns it";
}

TEST_F(PeerObjectsTest, StaleCopyIsRefused) {
  makeObjects(/*owner=*/false, promoterOptions());
  makeRemote("a.bin", 300 * 1024);
  ASSERT_TRUE(promoter_->promote("a.bin").ok());
  peer::ObjectRequest old = requestFor("a.bin");
  changeRemote("a.bin");

  // The asker's remote still says the old version; ours has moved on.
  auto asked_old = objects_->openForPeer(old);
  ASSERT_FALSE(asked_old.ok());
  EXPECT_EQ(asked_old.error().code, Errc::kStale) << asked_old.error().message;
  // The asker's remote has the new version; our copy is of the old one.
  auto asked_new = objects_->openForPeer(requestFor("a.bin"));
  ASSERT_FALSE(asked_new.ok());
  EXPECT_EQ(asked_new.error().code, Errc::kStale) << asked_new.error().message;
  EXPECT_EQ(promoter_->stats().started, 1u) << "not the owner: no promotion";
}

TEST_F(PeerObjectsTest, NotOwnerAndNoCopyIsNotFound) {
  makeObjects(/*owner=*/false, promoterOptions());
  makeRemote("b.bin", 100 * 1024);
  auto served = objects_->openForPeer(requestFor("b.bin"));
  ASSERT_FALSE(served.ok());
  EXPECT_EQ(served.error().code, Errc::kNotFound) << served.error().message;
  ASSERT_EQ(asked_.size(), 1u);
  EXPECT_EQ(asked_[0], std::string("imagenet") + '\0' + "b.bin");
  EXPECT_EQ(promoter_->stats().started, 0u);
  EXPECT_EQ(store_->stats().objects, 0u);
}

TEST_F(PeerObjectsTest, RefusesOtherNamespacesAndPathsOutsideTheRemote) {
  makeObjects(/*owner=*/true, promoterOptions());
  makeRemote("c.bin", 4096);
  testing::writeFile(root_ + "/secret", "outside the remote");
  peer::ObjectRequest other = requestFor("c.bin");
  other.ns = "laion";
  EXPECT_EQ(objects_->openForPeer(other).error().code, Errc::kNotFound);
  for (const char* path : {"../secret", "/etc/passwd", "x/../../secret", ""}) {
    peer::ObjectRequest bad = requestFor("c.bin");
    bad.relpath = path;
    auto r = objects_->openForPeer(bad);
    EXPECT_FALSE(r.ok()) << path;
  }
  ASSERT_EQ(::symlink("../secret", (remote_ + "/link").c_str()), 0);
  peer::ObjectRequest link = requestFor("c.bin");
  link.relpath = "link";
  auto r = objects_->openForPeer(link);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().code, Errc::kNotFound) << r.error().message;
  EXPECT_EQ(promoter_->stats().started, 0u);
}

// Eight peers ask the owner at once for a file it has no copy of: one
// promotion, and every one of them gets the copy.
TEST_F(PeerObjectsTest, OwnerPromotesOnceForConcurrentAskers) {
  PromoterOptions po = promoterOptions();
  po.chunk_bytes = 256 * 1024;
  std::atomic<int> chunks{0};
  po.chunk_hook = [&](const std::string&, uint64_t) {
    chunks++;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));  // the askers pile up
  };
  makeObjects(/*owner=*/true, po);
  std::string content = makeRemote("cold/model.bin", 2 * kMiB + 3);
  peer::ObjectRequest req = requestFor("cold/model.bin");

  std::vector<std::thread> askers;
  std::vector<std::string> got(8);
  std::vector<std::string> errors(8);
  for (int i = 0; i < 8; i++) {
    askers.emplace_back([&, i] {
      auto served = objects_->openForPeer(req);
      if (!served.ok()) {
        errors[i] = served.error().message;
        return;
      }
      got[i] = readFd(served->fd.get());
      if (served->meta.xxh3 != xxh3(got[i])) errors[i] = "checksum differs";
    });
  }
  for (auto& t : askers) t.join();
  for (int i = 0; i < 8; i++) {
    EXPECT_EQ(errors[i], "") << "asker " << i;
    EXPECT_TRUE(got[i] == content) << "asker " << i << " got " << got[i].size() << " bytes";
  }
  Promoter::Stats ps = promoter_->stats();
  EXPECT_EQ(ps.started, 1u);
  EXPECT_EQ(ps.published, 1u);
  EXPECT_EQ(ps.read_remote_bytes + ps.read_page_cache_bytes, content.size())
      << "the remote file was read once";
  EXPECT_EQ(chunks.load(), 9);  // 2 MiB + 3 in 256 KiB chunks
}

TEST_F(PeerObjectsTest, FetchIsPublishedAsAPromotion) {
  makeObjects(/*owner=*/false, promoterOptions());
  std::string content = makeRemote("d.bin", kMiB + 11);
  Validator before = validatorOfPath(remote_ + "/d.bin");
  Status s = objects_->fetchAndPublish("d.bin", before, [&](int fd) -> Result<peer::ObjectMeta> {
    EXPECT_EQ(::pwrite(fd, content.data(), content.size(), 0), ssize_t(content.size()));
    return peer::ObjectMeta{.size = before.size, .mtime_ns = before.mtime_ns,
                            .xxh3 = xxh3(content)};
  });
  ASSERT_TRUE(s.ok()) << s.error().message;
  EXPECT_EQ(cachedBytes("d.bin"), content);
  // Its checksum is recorded as a promotion's: verify re-reads and agrees.
  EXPECT_TRUE(store_->verify("d.bin").ok());
  EXPECT_EQ(countEntries(cache_ + "/tmp"), 0u);
}

TEST_F(PeerObjectsTest, FailedOrOverrunFetchLeavesNothing) {
  makeObjects(/*owner=*/false, promoterOptions());
  std::string content = makeRemote("e.bin", 64 * 1024);
  Validator before = validatorOfPath(remote_ + "/e.bin");
  Status died = objects_->fetchAndPublish("e.bin", before, [&](int fd) -> Result<peer::ObjectMeta> {
    EXPECT_EQ(::pwrite(fd, content.data(), 1000, 0), 1000);
    return makeError(Errc::kIo, "peer died mid-transfer");
  });
  EXPECT_EQ(died.error().code, Errc::kIo);
  // The remote changes while the bytes arrive: never published.
  Status changed =
      objects_->fetchAndPublish("e.bin", before, [&](int fd) -> Result<peer::ObjectMeta> {
        EXPECT_EQ(::pwrite(fd, content.data(), content.size(), 0), ssize_t(content.size()));
        changeRemote("e.bin");
        return peer::ObjectMeta{.size = before.size, .mtime_ns = before.mtime_ns,
                                .xxh3 = xxh3(content)};
      });
  EXPECT_EQ(changed.error().code, Errc::kStale) << changed.error().message;
  EXPECT_EQ(store_->stats().objects, 0u);
  EXPECT_EQ(countEntries(cache_ + "/tmp"), 0u);
}

TEST_F(PeerObjectsTest, OnceRunsOneFlightAndOthersGetItsResult) {
  makeObjects(/*owner=*/false, promoterOptions());
  std::atomic<int> runs{0};
  std::vector<std::thread> callers;
  std::vector<Errc> codes(6, Errc::kInternal);
  for (int i = 0; i < 6; i++) {
    callers.emplace_back([&, i] {
      Status s = objects_->once("p", [&]() -> Status {
        runs++;
        std::this_thread::sleep_for(std::chrono::milliseconds(500));
        return makeError(Errc::kNoSpace, "full");
      });
      codes[i] = s.ok() ? Errc::kInternal : s.error().code;
    });
  }
  for (auto& t : callers) t.join();
  EXPECT_EQ(runs.load(), 1);
  for (Errc c : codes) EXPECT_EQ(c, Errc::kNoSpace);
  // Done flights are forgotten: the next call runs again.
  EXPECT_TRUE(objects_->once("p", [] { return Status(Ok{}); }).ok());
}

// A gate a test holds shut to stall a remote or a copy, and opens at the end
// (shared: a stalled remote call may outlive the test on its detached worker).
struct Gate {
  std::mutex mu;
  std::condition_variable cv;
  bool open = false;
  int waiting = 0;
  void pass() {
    std::unique_lock lock(mu);
    waiting++;
    cv.wait(lock, [&] { return open; });
  }
  void release() {
    std::lock_guard lock(mu);
    open = true;
    cv.notify_all();
  }
};

// Options whose remote stats stall at `gate` while *hang, under a deadline of
// `timeout` seconds.
std::function<void(PeerObjectsOptions&)> hungRemote(std::shared_ptr<Gate> gate,
                                                    std::shared_ptr<std::atomic<bool>> hang,
                                                    double timeout) {
  return [=](PeerObjectsOptions& o) {
    o.remote_timeout_seconds = timeout;
    o.stat_hook = [gate, hang](const std::string&) {
      if (*hang) gate->pass();
    };
  };
}

using Clock = std::chrono::steady_clock;
double secondsSince(Clock::time_point t0) {
  return std::chrono::duration<double>(Clock::now() - t0).count();
}

// The owner's own promotion at an open (issue 15): the opener waits at most
// its bound and goes on (to the remote); the copy finishes on a background
// thread and is published, once.
TEST_F(PeerObjectsTest, OwnersOpenWaitsAtMostItsBoundAndTheCopyIsPublishedAfter) {
  PromoterOptions po = promoterOptions();
  po.chunk_bytes = 256 * 1024;
  po.chunk_hook = [](const std::string&, uint64_t) {
    std::this_thread::sleep_for(std::chrono::milliseconds(300));  // a slow remote: ~2.7 s
  };
  makeObjects(/*owner=*/true, po);
  std::string content = makeRemote("big/model.bin", 2 * kMiB + 3);
  Validator v = validatorOfPath(remote_ + "/big/model.bin");

  auto t0 = Clock::now();
  Status s = objects_->promoteOnce("big/model.bin", v, std::chrono::milliseconds(200));
  double waited = secondsSince(t0);
  ASSERT_FALSE(s.ok());
  EXPECT_EQ(s.error().code, Errc::kBusy) << s.error().message;
  EXPECT_LT(waited, 1.2) << "the opener was held by the copy";
  EXPECT_FALSE(store_->isCached("big/model.bin", v));
  // A later open joins the copy in flight (no second copy) and gets it.
  s = objects_->promoteOnce("big/model.bin", v, std::chrono::seconds(20));
  ASSERT_TRUE(s.ok()) << s.error().message;
  EXPECT_EQ(cachedBytes("big/model.bin"), content);
  EXPECT_TRUE(store_->verify("big/model.bin").ok());
  EXPECT_EQ(promoter_->stats().started, 1u);
  EXPECT_EQ(promoter_->stats().published, 1u);
  EXPECT_EQ(countEntries(cache_ + "/tmp"), 0u);
}

// A peer asks the owner while the owner's copy is stalled: it is answered
// kBusy within its bound (it reads its own remote), and served once the copy
// is done. Copies past max_background are refused at once.
TEST_F(PeerObjectsTest, AskerOfAStalledOwnerIsAnsweredBusyWithinItsBound) {
  auto gate = std::make_shared<Gate>();
  PromoterOptions po = promoterOptions();
  po.chunk_hook = [gate](const std::string&, uint64_t) { gate->pass(); };
  makeObjects(/*owner=*/true, po, [](PeerObjectsOptions& o) {
    o.serve_wait = std::chrono::milliseconds(200);
    o.max_background = 1;
  });
  std::string content = makeRemote("cold.bin", kMiB + 17);
  makeRemote("other.bin", 4096);

  auto t0 = Clock::now();
  auto served = objects_->openForPeer(requestFor("cold.bin"));
  ASSERT_FALSE(served.ok());
  EXPECT_EQ(served.error().code, Errc::kBusy) << served.error().message;
  EXPECT_LT(secondsSince(t0), 1.2) << "a peer-server thread was pinned by the copy";
  t0 = Clock::now();
  auto other = objects_->openForPeer(requestFor("other.bin"));
  ASSERT_FALSE(other.ok());
  EXPECT_EQ(other.error().code, Errc::kBusy) << "one background copy at most";
  EXPECT_LT(secondsSince(t0), 0.15) << "refused at once, not after serve_wait";

  gate->release();
  Result<peer::ServedObject> later = makeError(Errc::kBusy, "not asked");
  for (auto until = Clock::now() + std::chrono::seconds(10); Clock::now() < until;) {
    later = objects_->openForPeer(requestFor("cold.bin"));
    if (later.ok() || later.error().code != Errc::kBusy) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  ASSERT_TRUE(later.ok()) << later.error().message;
  EXPECT_EQ(readFd(later->fd.get()), content);
  EXPECT_EQ(later->meta.xxh3, xxh3(content));
  EXPECT_EQ(promoter_->stats().started, 1u);
}

// The serving side's stat of its own remote runs under --remote-timeout: a
// hung remote answers kIo (ETIMEDOUT) within the deadline.
TEST_F(PeerObjectsTest, HungRemoteStatIsAnsweredWithinTheRemoteTimeout) {
  auto gate = std::make_shared<Gate>();
  auto hang = std::make_shared<std::atomic<bool>>(true);
  makeObjects(/*owner=*/true, promoterOptions(), hungRemote(gate, hang, 0.3));
  makeRemote("h.bin", 8192);
  peer::ObjectRequest req = requestFor("h.bin");
  auto t0 = Clock::now();
  auto served = objects_->openForPeer(req);
  double waited = secondsSince(t0);
  ASSERT_FALSE(served.ok());
  EXPECT_EQ(served.error().code, Errc::kIo) << served.error().message;
  EXPECT_EQ(served.error().sys_errno, ETIMEDOUT) << served.error().message;
  EXPECT_LT(waited, 1.5);
  EXPECT_EQ(promoter_->stats().started, 0u);
  // The remote answers again: served as before.
  *hang = false;
  gate->release();
  auto again = objects_->openForPeer(req);
  ASSERT_TRUE(again.ok()) << again.error().message;
  EXPECT_EQ(again->meta.size, 8192u);
}

// Teardown: with the promoter shut down (Daemon's Quiesce), stop() ends the
// background copies at their next chunk; nothing is published or left in tmp/.
TEST_F(PeerObjectsTest, StopEndsBackgroundCopies) {
  PromoterOptions po = promoterOptions();
  po.chunk_bytes = 256 * 1024;
  po.chunk_hook = [](const std::string&, uint64_t) {
    std::this_thread::sleep_for(std::chrono::milliseconds(200));
  };
  makeObjects(/*owner=*/true, po);
  makeRemote("s.bin", 4 * kMiB);
  Validator v = validatorOfPath(remote_ + "/s.bin");
  Status s = objects_->promoteOnce("s.bin", v, std::chrono::milliseconds(50));
  EXPECT_EQ(s.error().code, Errc::kBusy);
  auto t0 = Clock::now();
  promoter_->shutdown();
  objects_->stop();
  EXPECT_LT(secondsSince(t0), 2.0);
  EXPECT_EQ(store_->stats().objects, 0u);
  EXPECT_EQ(countEntries(cache_ + "/tmp"), 0u);
  s = objects_->promoteOnce("s.bin", v, std::chrono::seconds(5));
  EXPECT_EQ(s.error().code, Errc::kBusy) << "no copy starts after stop()";
}

// Stats blocked in a hung remote fill the pool (4 workers): later ones are
// refused at once (EIO), until the remote is replaced by a new mount, whose
// stats get a full pool again.
TEST_F(PeerObjectsTest, StatsBlockedInAReplacedRemoteAreWrittenOff) {
  auto gate = std::make_shared<Gate>();
  auto hang = std::make_shared<std::atomic<bool>>(true);
  makeObjects(/*owner=*/false, promoterOptions(), hungRemote(gate, hang, 0.2));
  makeRemote("r.bin", 4096);
  for (int i = 0; i < 4; i++) {
    auto v = objects_->remoteValidator("r.bin");
    ASSERT_FALSE(v.ok());
    EXPECT_EQ(v.error().sys_errno, ETIMEDOUT) << v.error().message;
  }
  auto t0 = Clock::now();
  auto refused = objects_->remoteValidator("r.bin");
  ASSERT_FALSE(refused.ok());
  EXPECT_EQ(refused.error().sys_errno, EIO) << refused.error().message;
  EXPECT_LT(secondsSince(t0), 0.15) << "refused at once";
  *hang = false;  // the new mount answers; the old one still hangs its 4 calls
  objects_->remoteRootReplaced();
  auto v = objects_->remoteValidator("r.bin");
  ASSERT_TRUE(v.ok()) << v.error().message;
  EXPECT_EQ(v->size, 4096u);
  gate->release();
}

}  // namespace
}  // namespace hotshard
