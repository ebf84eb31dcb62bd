// Placement driven tick by tick against a real CacheStore and Promoter in a
// temporary directory, with heat from a fake HeatSource: what gets promoted,
// what the policy evicts (and what it never may), that eviction and promotion
// completions do not deadlock, and what `top` ranks by.
#include "daemon/placement.h"

#include <gtest/gtest.h>
#include <sys/stat.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <random>
#include <thread>

#include "tests/daemon/store_fixture.h"

namespace hotshard {
namespace {

constexpr uint64_t kMiB = 1 << 20;

// Heat the test hands out: each read() is drained by the next tick.
class FakeHeatSource final : public HeatSource {
 public:
  Result<HeatBatch> drain() override {
    std::lock_guard lock(mu_);
    ++drains_;
    return std::exchange(pending_, {});
  }
  HeatSourceHealth health() const override { return {}; }
  void read(const struct stat& st, uint64_t bytes, uint64_t missed) {
    std::lock_guard lock(mu_);
    pending_.files.push_back(
        FileHeat{.dev = st.st_dev, .ino = st.st_ino, .bytes_read = bytes, .bytes_missed = missed});
  }
  int drains() const {
    std::lock_guard lock(mu_);
    return drains_;
  }

 private:
  mutable std::mutex mu_;
  HeatBatch pending_;
  int drains_ = 0;
};

class PlacementTest : public testing::StoreFixture {
 protected:
  void start(uint64_t capacity, const std::string& policy = "hotshard", double high = 0.95,
             double low = 0.85, uint64_t promote_budget_per_tick = 0) {
    CacheStoreOptions o = storeOptions(capacity);
    o.high_watermark = high;
    o.low_watermark = low;
    auto s = CacheStore::open(o);
    ASSERT_TRUE(s.ok()) << s.error().message;
    store_ = std::move(s).value();
    PromoterOptions po = promoterOptions(IoEngineKind::kSync);
    po.direct_io = false;
    makePromoter(po);
    auto heat = std::make_unique<FakeHeatSource>();
    heat_ = heat.get();
    auto p = Placement::start(
        PlacementOptions{.tick_seconds = 0,
                         .policy = policy,
                         .promote_budget_per_tick = promote_budget_per_tick},
        PlacementDeps{.store = store_.get(), .promoter = promoter_.get(), .heat = std::move(heat)});
    ASSERT_TRUE(p.ok()) << p.error().message;
    placement_ = std::move(p).value();
  }

  void TearDown() override {
    placement_.reset();  // before the promoter and store it uses
    testing::StoreFixture::TearDown();
  }

  // A remote file placement has seen opened (its backing is the remote file).
  struct stat file(const std::string& rel, uint64_t size) {
    makeRemote(rel, size);
    struct stat st {};
    EXPECT_EQ(::stat((remote_ + "/" + rel).c_str(), &st), 0);
    placement_->noteOpen(rel, st, /*from_cache=*/false, /*for_write=*/false);
    return st;
  }

  // Whole remote reads of `st`, drained by the next tick.
  void readWhole(const struct stat& st, int times = 1) {
    for (int i = 0; i < times; ++i) {
      heat_->read(st, static_cast<uint64_t>(st.st_size), static_cast<uint64_t>(st.st_size));
    }
  }

  // Waits until the promoter has nothing queued or in flight.
  void settle() {
    for (int i = 0; i < 2000; ++i) {
      Promoter::Stats s = promoter_->stats();
      if (s.queued == 0 && s.in_flight == 0 && store_->stats().promotions_in_flight == 0) return;
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
    ADD_FAILURE() << "promotions did not finish";
  }

  void tickAndSettle() {
    placement_->tick();
    settle();
  }

  CacheStore::State state(const std::string& rel) { return store_->info(rel).state; }
  // Placement's part of the status, as `hotshard status --json` shows it.
  json statusJson() {
    StatusSnapshot status;
    placement_->fillStatus(status);
    return status;
  }
  uint64_t promotions() { return statusJson()["placement"]["promotions"]; }
  double policyObjects() {
    return statusJson()["policy"]["counters"]["objects"].get<double>();
  }

  FakeHeatSource* heat_ = nullptr;
  std::unique_ptr<Placement> placement_;
};

TEST_F(PlacementTest, PolicyCapacityIsTheStoresHighWatermark) {
  start(100 * kMiB, "hotshard", 0.5, 0.4);
  EXPECT_EQ(placement_->policyCapacity(), static_cast<uint64_t>(100.0 * kMiB * 0.5 * 0.99));
  EXPECT_EQ(statusJson()["policy"]["counters"]["capacity_bytes"].get<double>(),
            static_cast<double>(placement_->policyCapacity()));
}

TEST_F(PlacementTest, HotFileIsPromotedOnceReadEnoughColdHeaderNever) {
  start(64 * kMiB);
  struct stat hot = file("hot.bin", kMiB);
  struct stat big = file("big.bin", 8 * kMiB);
  heat_->read(hot, kMiB / 2, kMiB / 2);  // half of it: not yet worth a copy
  for (int i = 0; i < 3; ++i) heat_->read(big, 64 << 10, 64 << 10);  // its header, again and again
  tickAndSettle();
  EXPECT_EQ(promotions(), 0u);
  EXPECT_EQ(state("hot.bin"), CacheStore::State::kRemote);
  heat_->read(hot, kMiB / 2, kMiB / 2);
  heat_->read(big, 64 << 10, 64 << 10);
  tickAndSettle();
  EXPECT_EQ(promotions(), 1u);
  EXPECT_EQ(state("hot.bin"), CacheStore::State::kCached);
  EXPECT_EQ(cachedBytes("hot.bin"), testing::readFile(remote_ + "/hot.bin"));
  EXPECT_EQ(state("big.bin"), CacheStore::State::kRemote);
  EXPECT_EQ(heat_->drains(), 2);
}

TEST_F(PlacementTest, AFileLargerThanATicksBudgetIsPromotedAndLaterTicksPayForIt) {
  start(64 * kMiB, "hotshard", 0.95, 0.85, /*promote_budget_per_tick=*/kMiB);
  struct stat big = file("big.bin", 8 * kMiB);
  readWhole(big, 3);
  tickAndSettle();
  EXPECT_EQ(promotions(), 1u);
  EXPECT_EQ(state("big.bin"), CacheStore::State::kCached);
  EXPECT_EQ(cachedBytes("big.bin"), testing::readFile(remote_ + "/big.bin"));

  // 8 MiB against 1 MiB a tick: the next 7 ticks plan nothing, the 8th does.
  struct stat small = file("small.bin", kMiB / 2);
  for (int i = 0; i < 7; ++i) {
    readWhole(small, 3);
    tickAndSettle();
    EXPECT_EQ(state("small.bin"), CacheStore::State::kRemote) << "tick " << i;
  }
  readWhole(small, 3);
  tickAndSettle();
  EXPECT_EQ(state("small.bin"), CacheStore::State::kCached);
  EXPECT_EQ(promotions(), 2u);
}

// 7 hot files of 1 MiB fill the policy (8 MiB x 0.95 x 0.99 = 7.5 MiB).
class PlacementFullTest : public PlacementTest {
 protected:
  void fillWithResidents() {
    start(8 * kMiB);
    for (int i = 0; i < 7; ++i) residents_.push_back(file(name(i), kMiB));
    // r<i> read i + 1 times: r0 is the coldest, r6 the hottest.
    for (int i = 0; i < 7; ++i) readWhole(residents_[i], i + 1);
    tickAndSettle();
    for (int i = 0; i < 7; ++i) ASSERT_EQ(state(name(i)), CacheStore::State::kCached) << name(i);
  }
  static std::string name(int i) { return "r" + std::to_string(i); }
  // Reads a new file, hot.bin, whole once per tick until placement promotes it
  // (the hotshard policy's hysteresis wants a few reads before it displaces a
  // resident), and checks it was promoted once and is served.
  void promoteNewcomer() {
    uint64_t before = promotions();
    struct stat hot = file("hot.bin", kMiB);
    for (int i = 0; i < 20 && promotions() == before; ++i) {
      readWhole(hot);
      tickAndSettle();
    }
    ASSERT_EQ(promotions(), before + 1);
    EXPECT_EQ(state("hot.bin"), CacheStore::State::kCached);
  }
  std::vector<struct stat> residents_;
};

TEST_F(PlacementFullTest, ColdFileReadOnceDoesNotDisplaceTheHotSet) {
  fillWithResidents();
  uint64_t before = promotions();
  struct stat cold = file("cold.bin", kMiB);
  readWhole(cold);
  tickAndSettle();
  tickAndSettle();
  EXPECT_EQ(promotions(), before);
  EXPECT_EQ(state("cold.bin"), CacheStore::State::kRemote);
  for (int i = 0; i < 7; ++i) EXPECT_EQ(state(name(i)), CacheStore::State::kCached) << name(i);
}

TEST_F(PlacementFullTest, FullStoreEvictsThePolicysVictim) {
  fillWithResidents();
  ASSERT_NO_FATAL_FAILURE(promoteNewcomer());
  EXPECT_EQ(state("r0"), CacheStore::State::kRemote) << "the policy's victim is the coldest";
  for (int i = 1; i < 7; ++i) EXPECT_EQ(state(name(i)), CacheStore::State::kCached) << name(i);
  EXPECT_EQ(statusJson()["placement"]["evictions"], 1);
  EXPECT_LE(store_->stats().used_bytes, 8 * kMiB * 0.95);
}

TEST_F(PlacementFullTest, PinnedAndOpenCopiesAreNeverEvictedTheStoreFollowsThePolicysOrder) {
  fillWithResidents();
  ASSERT_TRUE(store_->pin("r0", true).ok());
  auto fd = store_->openIfValid("r1", testing::validatorOfPath(remote_ + "/r1"));
  ASSERT_TRUE(fd.ok());
  ASSERT_NO_FATAL_FAILURE(promoteNewcomer());
  EXPECT_EQ(state("r0"), CacheStore::State::kCached) << "pinned";
  EXPECT_EQ(state("r1"), CacheStore::State::kCached) << "open";
  // The policy named r0; refused, the store made room in the policy's order,
  // skipping what it may not take: r2 went, and the hottest stayed.
  EXPECT_EQ(state("r2"), CacheStore::State::kRemote);
  EXPECT_EQ(state("r6"), CacheStore::State::kCached);
  EXPECT_LE(store_->stats().used_bytes, 8 * kMiB * 0.95);
  // What the store evicted on its own has left the policy's books.
  tickAndSettle();
  EXPECT_EQ(policyObjects(), static_cast<double>(store_->stats().objects));
  ::close(*fd);
  store_->release("r1");
}

TEST_F(PlacementTest, TopRanksByThePolicysHeat) {
  // Page-cache hits weigh 4x a remote miss in this policy; top's old wall-clock
  // heat weighed them a quarter, and would rank misses.bin first.
  start(64 * kMiB, "hotshard;hit_weight=4");
  struct stat hits = file("hits.bin", kMiB);
  struct stat misses = file("misses.bin", kMiB);
  file("idle.bin", kMiB);
  heat_->read(hits, 4 * kMiB, 0);
  heat_->read(misses, 2 * kMiB, 2 * kMiB);
  placement_->tick();
  json top = placement_->top(10);
  ASSERT_EQ(top.size(), 3u) << top.dump();
  EXPECT_EQ(top[0]["path"], "hits.bin") << top.dump();
  EXPECT_EQ(top[1]["path"], "misses.bin") << top.dump();
  EXPECT_EQ(top[2]["path"], "idle.bin") << top.dump();
  EXPECT_GT(top[0]["heat"].get<double>(), top[1]["heat"].get<double>());
  EXPECT_EQ(top[2]["heat"].get<double>(), 0.0);
  EXPECT_EQ(placement_->top(1).size(), 1u);
  settle();
}

TEST_F(PlacementTest, TopShowsEachPoliciesOwnHeat) {
  start(64 * kMiB, "lru");
  struct stat a = file("a.bin", kMiB);
  struct stat b = file("b.bin", kMiB);
  readWhole(a);
  readWhole(b);
  tickAndSettle();  // both admitted (LRU admits every miss that fits)
  readWhole(a);
  placement_->tick();  // a is now the most recently used
  json top = placement_->top(2);
  ASSERT_EQ(top.size(), 2u);
  EXPECT_EQ(top[0]["path"], "a.bin") << top.dump();
  EXPECT_GT(top[1]["heat"].get<double>(), 0.0) << top.dump();
  settle();
}

// Ticks (evicting the policy's victims, pinned ones among them), promotions
// completing on the promoter's workers, warm-style promotions making the store
// evict on its own, and status readers, all at once. A lock-order inversion
// between placement and the store hangs here; the watchdog fails the test.
TEST_F(PlacementTest, EvictionDoesNotDeadlockUnderConcurrentPromotionCompletions) {
  start(6 * kMiB);
  std::vector<std::string> names;
  std::vector<struct stat> stats;
  for (int i = 0; i < 24; ++i) {
    names.push_back("f" + std::to_string(i));
    stats.push_back(file(names.back(), 512 << 10));
  }
  // The coldest residents are pinned: the policy picks them, the store refuses.
  for (int i = 0; i < 3; ++i) {
    ASSERT_TRUE(promoter_->promote(names[i]).ok());
    ASSERT_TRUE(store_->pin(names[i], true).ok());
  }
  std::atomic<bool> done{false};
  std::mutex m;
  std::condition_variable cv;
  std::thread watchdog([&] {
    std::unique_lock lock(m);
    if (!cv.wait_for(lock, std::chrono::seconds(60), [&] { return done.load(); })) {
      std::fprintf(stderr, "placement_test: deadlock: no progress in 60 s\n");
      std::_Exit(1);
    }
  });
  std::atomic<bool> stop{false};
  std::thread warm([&] {
    std::mt19937 rng(2);
    while (!stop) {
      (void)promoter_->enqueue(names[3 + rng() % 21], nullptr, nullptr);  // kExists is fine
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
    }
  });
  std::thread reader([&] {
    while (!stop) {
      (void)placement_->top(5);
      (void)statusJson();
    }
  });
  std::mt19937 rng(1);
  for (int t = 0; t < 150; ++t) {
    for (int k = 0; k < 6; ++k) readWhole(stats[3 + rng() % 21], 1 + static_cast<int>(rng() % 3));
    placement_->tick();
  }
  stop = true;
  warm.join();
  reader.join();
  settle();
  {
    std::lock_guard lock(m);
    done = true;
  }
  cv.notify_all();
  watchdog.join();
  for (int i = 0; i < 3; ++i) EXPECT_EQ(state(names[i]), CacheStore::State::kCached) << names[i];
  EXPECT_LE(store_->stats().used_bytes, 6 * kMiB * 0.95);
  EXPECT_GT(statusJson()["placement"]["evictions"].get<uint64_t>() +
                store_->stats().evictions,
            0u);
}

// Every way a copy leaves the store reaches the policy: hot files promoted by
// placement, then dropped behind its back, are promoted again when read again.
TEST_F(PlacementTest, CopiesDroppedByHandVerifyOrInvalidationArePromotedAgain) {
  start(64 * kMiB);
  const std::vector<std::string> names = {"evicted.bin", "corrupt.bin", "written.bin"};
  std::vector<struct stat> stats;
  for (const auto& n : names) stats.push_back(file(n, kMiB));
  for (const auto& st : stats) readWhole(st, 2);
  tickAndSettle();
  for (const auto& n : names) ASSERT_EQ(state(n), CacheStore::State::kCached) << n;
  ASSERT_EQ(promotions(), 3u);

  ASSERT_TRUE(store_->evict("evicted.bin").ok());  // hotshard evict
  {
    std::string obj = cache_ + "/" + store_->objectPathFor("corrupt.bin");
    FILE* f = std::fopen(obj.c_str(), "r+");
    ASSERT_NE(f, nullptr) << obj;
    std::fputs("garbage", f);
    std::fclose(f);
    EXPECT_EQ(store_->verify("corrupt.bin").error().code, Errc::kCorrupt);  // verify, scrub
  }
  ASSERT_TRUE(store_->invalidate("written.bin").ok());  // a write through the mount
  for (const auto& n : names) ASSERT_EQ(state(n), CacheStore::State::kRemote) << n;

  tickAndSettle();  // placement learns what left
  for (const auto& st : stats) readWhole(st, 2);
  tickAndSettle();
  EXPECT_EQ(promotions(), 6u);
  for (const auto& n : names) EXPECT_EQ(state(n), CacheStore::State::kCached) << n;
  EXPECT_EQ(policyObjects(), 3.0);
}

TEST(PlacementHeatSource, DegradedOpensCountAsWholeReadsWritesNot) {
  OpenHeatSource src("disabled by configuration (--probes off)");
  struct stat st {};
  st.st_dev = 7;
  st.st_ino = 42;
  st.st_size = 1000;
  src.noteOpen(st, /*from_cache=*/false, /*for_write=*/false);
  src.noteOpen(st, /*from_cache=*/true, /*for_write=*/false);
  src.noteOpen(st, /*from_cache=*/false, /*for_write=*/true);
  auto batch = src.drain();
  ASSERT_TRUE(batch.ok());
  ASSERT_EQ(batch->files.size(), 2u);
  EXPECT_EQ(batch->files[0].ino, 42u);
  EXPECT_EQ(batch->files[0].bytes_read, 1000u);
  EXPECT_EQ(batch->files[0].bytes_missed, 1000u);
  EXPECT_EQ(batch->files[1].bytes_missed, 0u);
  EXPECT_TRUE(src.drain()->files.empty());
  EXPECT_TRUE(src.health().degraded);
  EXPECT_EQ(src.health().reason, "disabled by configuration (--probes off)");
  EXPECT_EQ(src.pollSamples(0, [](const HeatSample&) {}).error().code, Errc::kUnsupported);
}

// Each tick tells the promoter how fast the jobs read the remote: the bytes they
// missed on remote backings since the last tick, per second; reads of cache
// copies do not count.
TEST_F(PlacementTest, TellsThePromoterHowFastTheJobsReadTheRemote) {
  start(64 * kMiB);
  struct stat remote = file("a.bin", kMiB);
  struct stat copy = file("b.bin", kMiB);
  placement_->noteOpen("b.bin", copy, /*from_cache=*/true, /*for_write=*/false);
  placement_->tick();  // the first tick only starts the clock
  EXPECT_EQ(promoter_->foregroundRemoteRate(), 0u);
  heat_->read(remote, 8 * kMiB, 8 * kMiB);
  heat_->read(copy, 64 * kMiB, 64 * kMiB);
  std::this_thread::sleep_for(std::chrono::milliseconds(100));
  placement_->tick();
  uint64_t rate = promoter_->foregroundRemoteRate();
  EXPECT_GT(rate, 8 * kMiB / 10);  // under 10 s between the ticks
  EXPECT_LE(rate, 80 * kMiB);      // at least 100 ms between them; the copy's reads left out
  heat_->read(copy, 64 * kMiB, 64 * kMiB);
  placement_->tick();  // only the cache copy was read since
  EXPECT_EQ(promoter_->foregroundRemoteRate(), 0u);
}

}  // namespace
}  // namespace hotshard
