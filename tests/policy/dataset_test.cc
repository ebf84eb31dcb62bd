// Data sets (Access::dataset) in the hotshard policy: the room of a data set whose
// job has ended goes to the data sets still being read (dataset_idle), and a data set
// still being read keeps its place.
#include <gtest/gtest.h>

#include <algorithm>

#include "policy/hotshard.h"
#include "tests/policy/policy_test_util.h"

namespace hotshard::policy {
namespace {

using testing::range;
using testing::repeat;
using testing::residentIds;

// Whole unit reads of `ids`, all of data set `dataset`, appended to `out`.
void readsOf(std::vector<Request>& out, const std::vector<ObjectId>& ids, std::uint32_t dataset) {
  for (auto r : testing::wholeReads(ids)) {
    r.time_ns = out.size() * 1000000;
    r.dataset = dataset;
    out.push_back(r);
  }
}

struct Replay {
  std::unique_ptr<Policy> policy;
  std::uint64_t hits_after = 0;  // hits from request `from` on
};

Replay replay(const std::string& spec, std::uint64_t capacity, const std::vector<Request>& trace,
              std::size_t from) {
  Replay out{testing::makePolicy(spec, capacity)};
  std::vector<ObjectId> victims;
  for (std::size_t i = 0; i < trace.size(); ++i) {
    Access a = trace[i].access();
    out.policy->recordAccess(a);
    if (out.policy->contains(a.id)) {
      out.hits_after += i >= from;
    } else {
      out.policy->admit(a, victims);
    }
  }
  return out;
}

TEST(PolicyHotshardDataset, AFinishedDataSetsRoomGoesToTheActiveOne) {
  // Data set 1 (objects 1..10) fills a 10-unit cache and is read 20 times over; its
  // job ends and data set 2 (101..110) is read 4 times over. Data set 1's heat would
  // keep 2 out for a long time (each newcomer must beat it by the margin); idle for
  // more than dataset_idle (8) of its longest gap (1 unit), data set 1 is finished and
  // its room is as good as free: 2 is admitted on its reads, and its later rounds hit.
  std::vector<Request> trace;
  readsOf(trace, repeat(range(1, 11), 20), 1);
  const std::size_t second = trace.size();
  readsOf(trace, repeat(range(101, 111), 4), 2);

  auto fair = replay("hotshard", 10, trace, second);
  EXPECT_EQ(residentIds(*fair.policy), range(101, 111));
  // Round 1: 101..109 miss while 1 is not yet finished (8 units idle) and 109, 110 are
  // admitted; round 2 admits the rest; rounds 3 and 4 hit: 2 + 10 + 10.
  EXPECT_EQ(fair.hits_after, 22u);

  auto locked = replay("hotshard;dataset_idle=0", 10, trace, second);
  EXPECT_EQ(residentIds(*locked.policy), range(1, 11));
  EXPECT_EQ(locked.hits_after, 0u);

  // Without data sets (an old trace: every object unknown), nothing is finished either.
  std::vector<Request> unknown = trace;
  for (auto& r : unknown) r.dataset = 0;
  EXPECT_EQ(residentIds(*replay("hotshard", 10, unknown, second).policy), range(1, 11));
}

TEST(PolicyHotshardDataset, ADataSetStillReadKeepsItsPlace) {
  // Data set 1 as above, then still read (one read every 5) while data set 2 streams
  // 200 objects once each: 1 is not finished (idle at most 5 units, its longest gap),
  // so 2's one-off reads never displace it.
  std::vector<Request> trace;
  readsOf(trace, repeat(range(1, 11), 20), 1);
  const std::size_t second = trace.size();
  for (ObjectId i = 0; i < 200; ++i) {
    readsOf(trace, {101 + i}, 2);
    if (i % 4 == 3) readsOf(trace, {1 + (i / 4) % 10}, 1);
  }
  auto r = replay("hotshard", 10, trace, second);
  EXPECT_EQ(residentIds(*r.policy), range(1, 11));
  EXPECT_EQ(r.hits_after, 50u);  // every read of data set 1
}

TEST(PolicyHotshardDataset, OnlyTheRoomOfDataSetsStillFinishedIsFree) {
  // Data sets 1 (objects 1..10) and 2 (11..20) fill a 20-unit cache, read in turn 20
  // times over; data set 3 streams, both finish and 3 takes some of their room. Then 1
  // is read once: live again, its residents are not free room any more, though their
  // heap keys still say heat 0 until lifted. 3's next files take 2's room, never 1's.
  std::vector<Request> trace;
  for (int round = 0; round < 20; ++round) {
    for (ObjectId i = 1; i <= 10; ++i) {
      readsOf(trace, {i}, 1);
      readsOf(trace, {10 + i}, 2);
    }
  }
  readsOf(trace, range(101, 121), 3);
  readsOf(trace, {1}, 1);
  readsOf(trace, range(121, 131), 3);
  auto r = replay("hotshard", 20, trace, 0);
  auto ids = residentIds(*r.policy);
  auto in = [&](ObjectId from, ObjectId to) {
    return std::count_if(ids.begin(), ids.end(), [&](ObjectId id) { return id >= from && id < to; });
  };
  const auto before = in(1, 11);  // what 1 kept while it was finished
  EXPECT_GE(before, 5);
  EXPECT_EQ(in(121, 131), std::min<long>(10, 20 - before - in(101, 121)))
      << "each of 3's later files took a finished resident's room while one was left";
  // 1's residents stayed: replaying without the later files of 3 keeps as many.
  std::vector<Request> shorter(trace.begin(), trace.end() - 10);
  EXPECT_EQ(in(1, 11), [&] {
    auto p = replay("hotshard", 20, shorter, 0);
    auto kept = residentIds(*p.policy);
    return std::count_if(kept.begin(), kept.end(), [](ObjectId id) { return id >= 1 && id < 11; });
  }());
}

TEST(PolicyHotshardDataset, ALaterJobsDataSetGetsTheRoomOfAnEndedJob) {
  // Two training jobs (policy/generate.h multijob) on data sets of 100 and 200 shards of
  // 1 MiB, 4 epochs each, the second started 200 reads after the first; the cache holds
  // 100 shards. The first job's data set fills it and its job ends after about 600
  // reads; from then on the second job's shards should have the cache.
  auto trace = testing::generated("multijob",
                                  {{"jobs", "2"},
                                   {"shards", "100"},
                                   {"epochs", "4"},
                                   {"stagger", "200"},
                                   {"min_size", "1048576"},
                                   {"max_size", "1048576"}},
                                  1);
  ASSERT_EQ(trace.size(), 1200u);
  const std::uint64_t capacity = 100ull << 20;
  auto last_first_job = std::find_if(trace.rbegin(), trace.rend(),
                                     [](const Request& r) { return r.id < 2000000; });
  const auto first_job_end = static_cast<std::size_t>(trace.rend() - last_first_job);
  ASSERT_LT(first_job_end, 800u);

  auto fair = replay("hotshard", capacity, trace, first_job_end);
  auto locked = replay("hotshard;dataset_idle=0", capacity, trace, first_job_end);
  auto secondJob = [](const std::vector<ObjectId>& ids) {
    return std::count_if(ids.begin(), ids.end(), [](ObjectId id) { return id >= 2000000; });
  };
  // At the end the cache is the second job's ...
  EXPECT_EQ(secondJob(residentIds(*fair.policy)), 100);
  // ... where without data sets the ended job's shards still hold most of it.
  EXPECT_LT(secondJob(residentIds(*locked.policy)), 50);
  // After the first job ends, the second job's reads hit far more often.
  EXPECT_GT(fair.hits_after, 2 * locked.hits_after + 50)
      << fair.hits_after << " vs " << locked.hits_after;
}

TEST(PolicyHotshardDataset, FollowsAShiftToAnotherDataSetAtOnce) {
  // The shift family (each data set its own directory), 1000 objects of 1 MiB, a 10%
  // cache, charged copies: the window right after the shift is already near the level
  // before it, where idle detection alone (dataset_idle=0) needs longer.
  auto trace = testing::generated("shift",
                                  {{"objects", "1000"},
                                   {"requests", "60000"},
                                   {"min_size", "1048576"},
                                   {"max_size", "1048576"}},
                                  3);
  const std::uint64_t capacity = 100ull << 20;
  auto windows = [&](const std::string& spec) {
    return testing::run(spec, capacity, trace, SimOptions{.window_requests = 6000}).windows;
  };
  auto fair = windows("hotshard");
  auto idle_only = windows("hotshard;dataset_idle=0");
  ASSERT_EQ(fair.size(), 10u);
  ASSERT_EQ(idle_only.size(), 10u);
  const double before = fair[4].byteHitRatio();
  EXPECT_GT(before, 0.5);
  EXPECT_NEAR(idle_only[4].byteHitRatio(), before, 0.02);
  EXPECT_GE(fair[5].byteHitRatio(), 0.9 * before);
  EXPECT_GT(fair[5].byteHitRatio(), idle_only[5].byteHitRatio() + 0.05)
      << fair[5].byteHitRatio() << " vs " << idle_only[5].byteHitRatio();
}

}  // namespace
}  // namespace hotshard::policy
