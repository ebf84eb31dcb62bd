// The charged cost model of the simulator (policy/simulator.h): copies take time and
// read the remote, reads during a copy are misses, invalidations drop copies, and the
// per-window figures.
#include <gtest/gtest.h>

#include <fstream>

#include "tests/policy/policy_test_util.h"

namespace hotshard::policy {
namespace {

constexpr std::uint64_t kGiB = 1ull << 30;
constexpr TimeNs kSecond = 1000000000;

Request readAt(TimeNs t, ObjectId id, std::uint64_t size) {
  return {.time_ns = t, .id = id, .size = size, .bytes_read = size, .bytes_missed = size};
}

SimResult runWith(const std::string& spec, std::uint64_t capacity,
                  const std::vector<Request>& trace, const SimOptions& options) {
  auto policy = testing::makePolicy(spec, capacity);
  auto reader = makeMemoryReader(trace);
  auto result = simulate(*reader, *policy, options);
  EXPECT_TRUE(result.ok()) << (result.ok() ? "" : result.error().message);
  return result.ok() ? *result : SimResult{};
}

SimResult optWith(std::uint64_t capacity, const std::vector<Request>& trace,
                  const SimOptions& options) {
  auto reader = makeMemoryReader(trace);
  auto result = simulateOpt(*reader, capacity, options);
  EXPECT_TRUE(result.ok()) << (result.ok() ? "" : result.error().message);
  return result.ok() ? *result : SimResult{};
}

// A 1 GiB object copied at 1 GiB/s by one slot: the copy ends 1 s after the miss.
const SimOptions kOneSlot{.promote_rate = double(kGiB), .promote_concurrency = 1};

TEST(SimCharged, AReadDuringTheCopyIsAMissAndTheCopyReadsTheRemote) {
  std::vector<Request> trace = {readAt(0, 1, kGiB), readAt(kSecond / 2, 1, kGiB),
                                readAt(2 * kSecond, 1, kGiB)};
  for (const char* name : {"lru", "sieve"}) {
    auto charged = runWith(name, 2 * kGiB, trace, kOneSlot);
    EXPECT_EQ(charged.hits, 1u) << name;  // only the read after the copy ended
    EXPECT_EQ(charged.misses_during_copy, 1u) << name;
    EXPECT_EQ(charged.promotions, 1u) << name;
    // Two missed reads plus the copy's own read of the object.
    EXPECT_EQ(charged.remote_bytes, 3 * kGiB) << name;
    EXPECT_EQ(charged.promoted_bytes, kGiB) << name;
    auto instant = runWith(name, 2 * kGiB, trace, SimOptions{.instant = true});
    EXPECT_EQ(instant.hits, 2u) << name;
    EXPECT_EQ(instant.remote_bytes, kGiB) << name;
  }
  auto opt = optWith(2 * kGiB, trace, kOneSlot);
  EXPECT_EQ(opt.hits, 1u);
  EXPECT_EQ(opt.remote_bytes, 3 * kGiB);
}

TEST(SimCharged, CopiesQueueBehindTheConcurrencyLimit) {
  // Two 1 GiB misses at once, one slot: the second copy ends at 2 s, so a read of it
  // at 1.5 s misses, while the first is a hit by then.
  std::vector<Request> trace = {
      readAt(0, 1, kGiB), readAt(1, 2, kGiB), readAt(kSecond * 3 / 2, 1, kGiB),
      readAt(kSecond * 3 / 2 + 1, 2, kGiB), readAt(kSecond * 5 / 2, 2, kGiB)};
  auto r = runWith("lru", 4 * kGiB, trace, kOneSlot);
  EXPECT_EQ(r.hits, 2u);
  EXPECT_EQ(r.misses_during_copy, 1u);
  SimOptions two = kOneSlot;
  two.promote_concurrency = 2;
  two.promote_rate = 2.0 * kGiB;  // same per-copy speed, two at once
  EXPECT_EQ(runWith("lru", 4 * kGiB, trace, two).hits, 3u);
}

TEST(SimCharged, ACopyThatCannotStartInTimeFailsAndIsNotCharged) {
  SimOptions options = kOneSlot;
  options.max_backlog_s = 0.5;
  // The second copy would wait 1 s behind the first: it fails, the policy forgets it.
  std::vector<Request> trace = {readAt(0, 1, kGiB), readAt(1, 2, kGiB),
                                readAt(3 * kSecond, 2, kGiB)};
  auto r = runWith("lru", 4 * kGiB, trace, options);
  EXPECT_EQ(r.dropped_copies, 1u);
  EXPECT_EQ(r.promotions, 2u);  // 1 at first, 2 on its second miss
  EXPECT_EQ(r.hits, 0u);
  EXPECT_EQ(r.promoted_bytes, 2 * kGiB);
}

TEST(SimCharged, ARecordedTraceWithWritesNeverHitsAnOverwrittenFile) {
  const char* path = "tests/policy/data/writes.csv";
  std::ifstream in(path);
  ASSERT_TRUE(in) << "run from the repository root: " << path;
  auto reader = makeTraceReader(TraceFormat::kCsv, in, path);
  auto trace = readAll(*reader);
  ASSERT_TRUE(trace.ok()) << trace.error().message;
  for (const auto& name : policyNames()) {
    auto r = runWith(name, 16 << 20, *trace, SimOptions{});
    // Reads: 1m 2m 1h 2h | write 2 | 2m 2h | truncate 1 | 1m | unlink 1. A policy that
    // does not copy on the first miss may miss more, but never hits more.
    EXPECT_EQ(r.requests, 7u) << name;
    EXPECT_LE(r.hits, 3u) << name;
    // The read right after the overwrite and the one after the truncate are misses:
    // at most 2 + 1 hits (before the write, and the reread after it).
    auto upto = std::vector<Request>(trace->begin(), trace->begin() + 6);
    auto before = runWith(name, 16 << 20, upto, SimOptions{});
    EXPECT_EQ(before.hits,
              runWith(name, 16 << 20, std::vector<Request>(trace->begin(), trace->begin() + 4),
                      SimOptions{})
                  .hits)
        << name << ": the read after the overwrite hit";
  }
  auto lru = runWith("lru", 16 << 20, *trace, SimOptions{});
  EXPECT_EQ(lru.hits, 3u);
  EXPECT_EQ(optWith(16 << 20, *trace, SimOptions{}).hits, 3u);
  // Without the write and truncate records, the same reads would hit twice more.
  std::vector<Request> reads_only;
  for (const auto& r : *trace)
    if (isRead(r.flags)) reads_only.push_back(r);
  EXPECT_EQ(runWith("lru", 16 << 20, reads_only, SimOptions{}).hits, 5u);
}

TEST(SimCharged, MissSamplesAddRemoteBytesButNoRead) {
  std::vector<Request> trace = {readAt(0, 1, 4096), readAt(1, 1, 4096)};
  trace[1].flags = kFlagMissSample;
  auto r = runWith("lru", 1 << 20, trace, SimOptions{.instant = true});
  EXPECT_EQ(r.requests, 1u);
  EXPECT_EQ(r.bytes_read, 4096u);
  // The sample came after the promotion (instant): served by the cache, not the remote.
  EXPECT_EQ(r.remote_bytes, 4096u);
  auto charged = runWith("lru", 1 << 20, trace, kOneSlot);
  EXPECT_EQ(charged.remote_bytes, 3 * 4096u);  // read, copy, and the sample mid-copy
}

TEST(SimCharged, WindowsSplitTheReadsAndAddUp) {
  auto trace = testing::wholeReads(testing::repeat(testing::range(1, 5), 10), 1024);
  auto r = runWith("lru", 8 << 10, trace, SimOptions{.instant = true, .window_requests = 8});
  ASSERT_EQ(r.windows.size(), 5u);
  std::uint64_t hits = 0, requests = 0;
  for (const auto& w : r.windows) hits += w.hits, requests += w.requests;
  EXPECT_EQ(hits, r.hits);
  EXPECT_EQ(requests, r.requests);
  EXPECT_EQ(r.windows[0].hits, 4u);  // 4 cold misses, then hits
  EXPECT_EQ(r.windows[4].hits, 8u);
}

TEST(SimCharged, RejectsBadOptions) {
  auto policy = testing::makePolicy("lru", 10);
  auto reader = makeMemoryReader(testing::wholeReads({1}));
  EXPECT_FALSE(simulate(*reader, *policy, SimOptions{.promote_rate = 0}).ok());
  EXPECT_FALSE(simulate(*reader, *policy, SimOptions{.promote_concurrency = 0}).ok());
}

}  // namespace
}  // namespace hotshard::policy
