// Belady's OPT in the simulator, checked against exhaustive search on tiny traces with
// unit sizes, where size-aware Belady with bypass is exactly optimal.
#include <gtest/gtest.h>

#include <map>
#include <sstream>

#include "policy/generate.h"
#include "tests/policy/policy_test_util.h"

namespace hotshard::policy {
namespace {

using testing::runOpt;
using testing::wholeReads;

// Most hits any policy can get: at every miss, bypass or insert (evicting any one
// resident when full). Objects are 0..7, the cache a bitmask.
int bruteForce(const std::vector<ObjectId>& ids, std::size_t i, unsigned cache, int capacity,
               std::map<std::pair<std::size_t, unsigned>, int>& memo) {
  if (i == ids.size()) return 0;
  auto key = std::make_pair(i, cache);
  if (auto it = memo.find(key); it != memo.end()) return it->second;
  unsigned bit = 1u << ids[i];
  int best;
  if (cache & bit) {
    best = 1 + bruteForce(ids, i + 1, cache, capacity, memo);
  } else {
    best = bruteForce(ids, i + 1, cache, capacity, memo);  // bypass
    if (__builtin_popcount(cache) < capacity) {
      best = std::max(best, bruteForce(ids, i + 1, cache | bit, capacity, memo));
    } else {
      for (unsigned v = cache; v != 0; v &= v - 1) {
        unsigned victim = v & -v;
        best = std::max(best, bruteForce(ids, i + 1, (cache & ~victim) | bit, capacity, memo));
      }
    }
  }
  return memo[key] = best;
}

TEST(SimOpt, MatchesExhaustiveSearchOnTinyUnitTraces) {
  Rng rng(2024);
  for (int trial = 0; trial < 300; ++trial) {
    int objects = 2 + static_cast<int>(rng.below(5));   // 2..6
    int capacity = 1 + static_cast<int>(rng.below(3));  // 1..3
    std::vector<ObjectId> ids(4 + rng.below(11));       // 4..14 requests
    for (auto& id : ids) id = rng.below(objects);
    std::map<std::pair<std::size_t, unsigned>, int> memo;
    int best = bruteForce(ids, 0, 0, capacity, memo);
    auto opt = runOpt(capacity, wholeReads(ids));
    ASSERT_EQ(opt.hits, static_cast<std::uint64_t>(best))
        << "trial " << trial << " capacity " << capacity;
  }
}

TEST(SimOpt, BeatsEveryPolicyOnUnitTraces) {
  Rng rng(7);
  ZipfSampler zipf(50, 0.8);
  std::vector<ObjectId> ids(3000);
  for (auto& id : ids) id = zipf.sample(rng);
  auto trace = wholeReads(ids);
  auto opt = runOpt(10, trace);
  for (const auto& name : policyNames())
    EXPECT_GE(opt.hits, testing::run(name, 10, trace).hits) << name;
}

TEST(SimOpt, LoopKeepsAFixedPart) {
  // A loop of 5 through 4 slots: OPT keeps 3 fixed and rotates one slot, hitting 3 of
  // every 5 reads after the first pass... at least; LRU hits none.
  auto trace = wholeReads(testing::repeat(testing::range(1, 6), 10));
  auto opt = runOpt(4, trace);
  EXPECT_GE(opt.hits, 3u * 9);
  EXPECT_EQ(testing::run("lru", 4, trace).hits, 0u);
}

TEST(SimOpt, VariableSizesNeverOverfillAndBypassUselessObjects) {
  std::vector<Request> trace;
  Rng rng(5);
  for (int i = 0; i < 2000; ++i) {
    Request r;
    r.id = rng.below(100);
    r.size = 1 + (r.id * 37) % 50;
    r.bytes_read = r.bytes_missed = r.size;
    trace.push_back(r);
  }
  // Objects read once are never copied.
  trace.push_back({.time_ns = 0,
                   .id = 999,
                   .size = 10,
                   .offset = 0,
                   .bytes_read = 10,
                   .bytes_missed = 10,
                   .flags = 0});
  auto opt = runOpt(200, trace);
  EXPECT_GT(opt.hits, 0u);
  EXPECT_LE(opt.promoted_bytes, 2000u * 50);
  auto one = runOpt(200, {trace.back()});
  EXPECT_EQ(one.promotions, 0u);
}

}  // namespace
}  // namespace hotshard::policy

namespace hotshard::policy {
namespace {

TEST(SimRun, ReportsTraceErrorsInsteadOfResults) {
  std::stringstream bytes;
  auto writer = makeTraceWriter(TraceFormat::kNative, bytes);
  for (const auto& r : wholeReads(testing::range(1, 40))) ASSERT_TRUE(writer->write(r).ok());
  ASSERT_TRUE(writer->finish().ok());
  std::string cut = bytes.str().substr(0, bytes.str().size() - 3);
  for (const auto& name : policyNames()) {
    std::istringstream in(cut);
    auto reader = makeTraceReader(TraceFormat::kNative, in, "cut.trace");
    auto policy = testing::makePolicy(name, 10);
    auto result = simulate(*reader, *policy);
    ASSERT_FALSE(result.ok()) << name;
    EXPECT_EQ(result.error().message, "cut.trace: truncated trace: record 38 has 53 of 56 bytes");
  }
  std::istringstream in(cut);
  auto reader = makeTraceReader(TraceFormat::kNative, in, "cut.trace");
  EXPECT_FALSE(simulateOpt(*reader, 10).ok());
}

TEST(SimRun, WritesInvalidateCachedCopies) {
  auto trace = wholeReads({1, 1, 1});
  trace[1].flags = kFlagWrite;
  for (const auto& name : policyNames()) {
    auto r = testing::run(name, 10, trace);
    EXPECT_EQ(r.requests, 2u) << name;
    EXPECT_EQ(r.hits, 0u) << name;
  }
  EXPECT_EQ(runOpt(10, trace).hits, 0u);
}

}  // namespace
}  // namespace hotshard::policy
