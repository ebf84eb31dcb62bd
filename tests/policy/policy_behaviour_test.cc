// Textbook behaviours on hand-checked small traces (unit sizes unless said), and the
// properties the hotshard policy is built for.
#include <gtest/gtest.h>

#include "policy/generate.h"
#include "policy/hotshard.h"
#include "tests/policy/policy_test_util.h"

namespace hotshard::policy {
namespace {

using testing::concat;
using testing::range;
using testing::repeat;
using testing::residentIds;
using testing::run;
using testing::wholeReads;

// Feeds whole unit reads through the simulator loop and returns the policy.
std::unique_ptr<Policy> feed(const std::string& spec, std::uint64_t capacity,
                             const std::vector<ObjectId>& ids) {
  auto policy = testing::makePolicy(spec, capacity);
  auto reader = makeMemoryReader(wholeReads(ids));
  EXPECT_TRUE(simulate(*reader, *policy).ok());
  return policy;
}

TEST(PolicyLru, LoopLargerThanTheCacheNeverHits) {
  // 5 objects cycled through 4 slots: each is evicted just before it comes back.
  auto r = run("lru", 4, wholeReads(repeat(range(1, 6), 10)));
  EXPECT_EQ(r.hits, 0u);
  EXPECT_EQ(r.requests, 50u);
}

TEST(PolicyLru, TextbookSequence) {
  // 1m 2m 3m 1h 4m(evicts 2) 5m(evicts 3) 1h 2m(evicts 4)
  auto r = run("lru", 3, wholeReads({1, 2, 3, 1, 4, 5, 1, 2}));
  EXPECT_EQ(r.hits, 2u);
  EXPECT_EQ(residentIds(*feed("lru", 3, {1, 2, 3, 1, 4, 5, 1, 2})),
            (std::vector<ObjectId>{1, 2, 5}));
}

TEST(PolicyLfu, KeepsTheFrequentObject) {
  // At 3 the cache holds 1 (3 accesses) and 2 (1): LFU evicts 2 where LRU evicts 1.
  EXPECT_EQ(residentIds(*feed("lfu", 2, {1, 1, 1, 2, 3})), (std::vector<ObjectId>{1, 3}));
  EXPECT_EQ(residentIds(*feed("lru", 2, {1, 1, 1, 2, 3})), (std::vector<ObjectId>{2, 3}));
}

TEST(PolicyLfu, DecayForgetsOldPopularity) {
  // 1 was hot long ago, 2 is warm now; with a short half-life 2 outlives 1.
  auto ids = concat({repeat({1}, 5), range(10, 60), repeat({2}, 3), {3}});
  EXPECT_EQ(residentIds(*feed("lfu;half_life=2", 2, ids)), (std::vector<ObjectId>{2, 3}));
  EXPECT_EQ(residentIds(*feed("lfu;half_life=0", 2, ids)), (std::vector<ObjectId>{1, 3}));
}

TEST(PolicySieve, HandSweepsPastVisitedObjects) {
  // 1 2 3 1 4: the hand clears 1's bit and evicts 2, stopping at 3; 5 evicts 3; 6
  // evicts 4 and keeps the older 1, where LRU evicts 1.
  EXPECT_EQ(residentIds(*feed("sieve", 3, {1, 2, 3, 1, 4, 5, 6})),
            (std::vector<ObjectId>{1, 5, 6}));
  EXPECT_EQ(residentIds(*feed("lru", 3, {1, 2, 3, 1, 4, 5, 6})), (std::vector<ObjectId>{4, 5, 6}));
}

// A hot set seen three times, a one-off scan 10x the cache, then the hot set again.
std::vector<ObjectId> hotThenScan() {
  return concat({repeat(range(1, 6), 3), range(100, 200), range(1, 6)});
}

TEST(PolicyScan, ArcS3FifoAndHotshardKeepTheHotSetThroughAScan) {
  auto trace = wholeReads(hotThenScan());
  // 10 hits from the repeats, then the final pass: 5 more only if the scan did not flush them.
  EXPECT_EQ(run("lru", 10, trace).hits, 10u);
  EXPECT_EQ(run("arc", 10, trace).hits, 15u);
  EXPECT_EQ(run("s3fifo", 10, trace).hits, 15u);
  EXPECT_EQ(run("hotshard", 10, trace).hits, 15u);
  // hotshard does not even copy the scan once the cache is full: 5 hot + 5 scan objects
  // filled the free room, no more.
  EXPECT_EQ(run("hotshard", 10, trace).promotions, 10u);
}

TEST(PolicyHotshard, KeepsAStableSubsetUnderEpochShuffledReads) {
  // 400 equal shards, 6 epochs, 2 jobs; a 10% cache. Holding a fixed 10% of the shards
  // hits 10% of every read after each shard's first.
  std::vector<Request> trace;
  auto st = generateTrace("epoch",
                          {{"shards", "400"},
                           {"epochs", "6"},
                           {"jobs", "2"},
                           {"min_size", "1048576"},
                           {"max_size", "1048576"}},
                          11, [&](const Request& r) {
                            trace.push_back(r);
                            return Status();
                          });
  ASSERT_TRUE(st.ok());
  std::uint64_t capacity = 40ull << 20;
  double fixed_subset = 0.1 * (1.0 - 400.0 / double(trace.size()));
  auto hot = run("hotshard", capacity, trace);
  auto lru = run("lru", capacity, trace);
  EXPECT_GE(hot.hitRatio(), 0.95 * fixed_subset);
  EXPECT_LT(lru.hitRatio(), 0.75 * fixed_subset);
  EXPECT_LT(hot.promoted_bytes, 2 * capacity) << "hotshard churns";
}

TEST(PolicyHotshard, DoesNotPromoteAHugeFileForItsHeader) {
  constexpr std::uint64_t kGiB = 1ull << 30;
  auto policy = testing::makePolicy("hotshard", 100 * kGiB);
  std::vector<ObjectId> victims;
  Access header{.id = 1, .size = 10 * kGiB, .bytes_read = 4096, .bytes_missed = 4096, .time_ns = 0};
  for (int i = 0; i < 10000; ++i) {
    header.time_ns = i;
    policy->recordAccess(header);
    EXPECT_FALSE(policy->admit(header, victims));
  }
  // A small file read whole is promoted at once (the cache is empty).
  Access whole{
      .id = 2, .size = 1 << 20, .bytes_read = 1 << 20, .bytes_missed = 1 << 20, .time_ns = 0};
  policy->recordAccess(whole);
  EXPECT_TRUE(policy->admit(whole, victims));
  EXPECT_FALSE(policy->contains(1));
  // min_read_ratio=0 would copy it.
  auto eager = testing::makePolicy("hotshard;min_read_ratio=0", 100 * kGiB);
  eager->recordAccess(header);
  EXPECT_TRUE(eager->admit(header, victims));
}

TEST(PolicyHotshard, RemoteMissBytesWeighMoreThanPageCacheHits) {
  HotshardPolicy policy(1000, {});
  Access remote{.id = 1, .size = 100, .bytes_read = 100, .bytes_missed = 100, .time_ns = 0};
  Access cached{.id = 2, .size = 100, .bytes_read = 100, .bytes_missed = 0, .time_ns = 0};
  policy.recordAccess(remote);
  policy.recordAccess(cached);
  // Default weights 1 and 0.25; the clock barely moved (200 bytes of 64 x 1000).
  EXPECT_NEAR(policy.heat(1) / policy.heat(2), 4.0, 0.01);
}

TEST(PolicyHotshard, AdmissionNeedsToBeatTheColdestResidentByAMargin) {
  // One slot held by 1 (3 reads); 2 is read 4 times. Equal-ish heat is no reason to swap.
  auto ids = concat({repeat({1}, 3), repeat({2}, 4)});
  EXPECT_EQ(residentIds(*feed("hotshard", 1, ids)), (std::vector<ObjectId>{1}));
  // Without hysteresis and margin, 2's earlier reads (3) beat 1's decayed 3 at its 4th read.
  EXPECT_EQ(residentIds(*feed("hotshard;hysteresis=0;margin=0", 1, ids)),
            (std::vector<ObjectId>{2}));
  // A clearly hotter newcomer wins with the defaults: 9 earlier reads > 2 x 3 + 2.
  EXPECT_EQ(residentIds(*feed("hotshard", 1, concat({repeat({1}, 3), repeat({2}, 10)}))),
            (std::vector<ObjectId>{2}));
}

TEST(PolicyHotshard, PrefersDenseObjectsWhenSizesDiffer) {
  // A 4-unit object read twice vs four 1-unit objects read twice each: the same bytes
  // read, so equal heat per byte; then one small object gets hotter and the big one is
  // the coldest per byte.
  auto policy = testing::makePolicy("hotshard", 8);
  std::vector<ObjectId> victims;
  auto read = [&](ObjectId id, std::uint64_t size) {
    Access a{.id = id, .size = size, .bytes_read = size, .bytes_missed = size, .time_ns = 0};
    policy->recordAccess(a);
    if (!policy->contains(id)) policy->admit(a, victims);
  };
  for (int i = 0; i < 2; ++i) {
    read(100, 4);
    for (ObjectId id = 1; id <= 4; ++id) read(id, 1);
  }
  read(1, 1);
  std::vector<ObjectId> coldest;
  policy->evictionCandidates(1, coldest);
  ASSERT_FALSE(coldest.empty());
  EXPECT_EQ(coldest.front(), 100u);
}

}  // namespace
}  // namespace hotshard::policy

namespace hotshard::policy {
namespace {

TEST(PolicyHotshard, StaysNearTheFixedSubsetWithManyJobs) {
  // 8 jobs interleaved: each shard is read 8 times per round at random moments, so heat
  // is noisy; the reuse-scaled half-life keeps the subset stable anyway.
  std::vector<Request> trace;
  auto st = generateTrace("epoch",
                          {{"shards", "500"},
                           {"epochs", "6"},
                           {"jobs", "8"},
                           {"min_size", "1048576"},
                           {"max_size", "1048576"}},
                          5, [&](const Request& r) {
                            trace.push_back(r);
                            return Status();
                          });
  ASSERT_TRUE(st.ok());
  std::uint64_t capacity = 25ull << 20;  // 5%
  double fixed_subset = 0.05 * (1.0 - 500.0 / double(trace.size()));
  auto hot = testing::run("hotshard", capacity, trace);
  EXPECT_GE(hot.hitRatio(), 0.85 * fixed_subset);
  EXPECT_LT(hot.promoted_bytes, 4 * capacity);
  // Without the reuse-scaled memory, the cache churns.
  auto short_memory = testing::run("hotshard;reuse_factor=0", capacity, trace);
  EXPECT_GT(short_memory.promoted_bytes, 3 * hot.promoted_bytes / 2);
}

}  // namespace
}  // namespace hotshard::policy

namespace hotshard::policy {
namespace {

TEST(PolicyHotshard, FollowsAHotSetThatMoves) {
  // 60k Zipf reads over objects 0..999, then 60k over 1000..1999. Long heat memory must
  // not pin the old hot set: in the last 20k reads hotshard hits about as often as it
  // did at the end of the first phase.
  Rng rng(3);
  ZipfSampler zipf(1000, 0.9);
  std::vector<ObjectId> ids;
  for (int phase = 0; phase < 2; ++phase) {
    for (int i = 0; i < 60000; ++i) ids.push_back(phase * 1000 + zipf.sample(rng));
  }
  auto trace = wholeReads(ids);
  auto hitsIn = [&](std::size_t from, std::size_t to) {
    auto policy = testing::makePolicy("hotshard", 100);
    std::uint64_t hits = 0;
    std::vector<ObjectId> victims;
    for (std::size_t i = 0; i < to; ++i) {
      Access a = trace[i].access();
      policy->recordAccess(a);
      if (policy->contains(a.id)) {
        hits += i >= from;
      } else {
        policy->admit(a, victims);
      }
    }
    return double(hits) / double(to - from);
  };
  double settled_first = hitsIn(40000, 60000);
  double settled_second = hitsIn(100000, 120000);
  EXPECT_GT(settled_first, 0.4);
  EXPECT_GT(settled_second, 0.9 * settled_first) << settled_first << " then " << settled_second;
}

}  // namespace
}  // namespace hotshard::policy

namespace hotshard::policy {
namespace {

TEST(PolicyHotshard, ForgetsAnIdleHotSetAfterAShift) {
  // 1000 objects of 1 MiB, Zipf reads, the hot data set replaced by another after half
  // the reads; a 10% cache, instant copies. The old hot set's heat took many reads to
  // build and would take as long to decay; idle for more than idle_gaps of its reuse
  // distances, it stops standing in the way, and the cache follows within a window.
  auto trace = testing::generated("shift",
                                  {{"objects", "1000"},
                                   {"requests", "60000"},
                                   {"min_size", "1048576"},
                                   {"max_size", "1048576"}},
                                  3);
  ASSERT_EQ(trace.size(), 60000u);
  const std::uint64_t capacity = 100ull << 20;
  const SimOptions windows{.instant = true, .window_requests = 6000};
  auto runWindows = [&](const std::string& spec) {
    return testing::run(spec, capacity, trace, windows).windows;
  };
  // The trace's two data sets are told apart (Access::dataset); that is dataset_idle's
  // test below, so it is off here.
  auto adaptive = runWindows("hotshard;dataset_idle=0");
  auto fixed = runWindows("hotshard;idle_gaps=0;dataset_idle=0");
  ASSERT_EQ(adaptive.size(), 10u);
  ASSERT_EQ(fixed.size(), 10u);
  const double before = adaptive[4].byteHitRatio();  // the last window before the shift
  EXPECT_GT(before, 0.6);
  EXPECT_NEAR(fixed[4].byteHitRatio(), before, 0.02);  // the same until the shift
  // The window after the shift's: back to 90% of the level before it...
  EXPECT_GE(adaptive[6].byteHitRatio(), 0.9 * before);
  // ... where the same policy without idle detection is still far below it.
  EXPECT_LT(fixed[6].byteHitRatio(), 0.8 * before);
  double adaptive_after = 0, fixed_after = 0;
  for (int w = 5; w < 10; ++w) {
    adaptive_after += adaptive[w].byteHitRatio();
    fixed_after += fixed[w].byteHitRatio();
  }
  EXPECT_GT(adaptive_after, fixed_after + 0.4);  // 0.08 per window on average
}

}  // namespace
}  // namespace hotshard::policy
