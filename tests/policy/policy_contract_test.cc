// One fixture runs every registered policy through the same behaviours (CacheLib
// MMTypeTest style): the contract in policy/policy.h, whatever the algorithm.
#include <gtest/gtest.h>

#include <algorithm>
#include <cctype>
#include <set>
#include <unordered_map>

#include "policy/generate.h"
#include "policy/registry.h"
#include "tests/policy/policy_test_util.h"

namespace hotshard::policy {
namespace {

using testing::makePolicy;

// A mixed workload: Zipf-ish repeats, one-off scans, sizes from 1 KiB to 1 MiB.
std::vector<Request> mixedTrace(std::uint64_t seed, int n = 4000) {
  Rng rng(seed);
  ZipfSampler zipf(300, 0.9);
  std::vector<Request> out;
  for (int i = 0; i < n; ++i) {
    Request r;
    r.time_ns = static_cast<TimeNs>(i) * 1000;
    r.id = rng.below(10) == 0 ? 100000 + static_cast<ObjectId>(i) : zipf.sample(rng);
    r.size = 1024 + (r.id * 7919) % (1024 * 1024);
    r.bytes_read = r.size;
    r.bytes_missed = rng.below(2) ? r.size : r.size / 4;
    out.push_back(r);
  }
  return out;
}

class PolicyContract : public ::testing::TestWithParam<std::string> {
 protected:
  static constexpr std::uint64_t kCapacity = 16 * 1024 * 1024;
};

TEST_P(PolicyContract, CapacityNeverExceededAndVictimsLeave) {
  auto policy = makePolicy(GetParam(), kCapacity);
  ASSERT_TRUE(policy);
  std::vector<ObjectId> victims;
  std::uint64_t admitted = 0;
  for (const auto& r : mixedTrace(1)) {
    policy->recordAccess(r.access());
    if (policy->contains(r.id)) continue;
    victims.clear();
    if (policy->admit(r.access(), victims)) {
      ++admitted;
      EXPECT_TRUE(policy->contains(r.id));
    } else {
      EXPECT_TRUE(victims.empty()) << "a rejected admission evicted something";
      EXPECT_FALSE(policy->contains(r.id));
    }
    for (ObjectId v : victims) EXPECT_FALSE(policy->contains(v));
    ASSERT_LE(policy->used(), policy->capacity());
  }
  EXPECT_GT(admitted, 0u);
  std::vector<Resident> residents;
  policy->residents(residents);
  std::uint64_t sum = 0;
  for (const auto& res : residents) sum += res.size;
  EXPECT_EQ(sum, policy->used());
  EXPECT_EQ(residents.size(), policy->objects());
}

TEST_P(PolicyContract, RejectsObjectsLargerThanTheCache) {
  auto policy = makePolicy(GetParam(), 1000);
  Access a{.id = 1, .size = 1001, .bytes_read = 1001, .bytes_missed = 1001, .time_ns = 0};
  std::vector<ObjectId> victims;
  for (int i = 0; i < 3; ++i) {
    policy->recordAccess(a);
    EXPECT_FALSE(policy->admit(a, victims));
  }
  EXPECT_EQ(policy->used(), 0u);
}

TEST_P(PolicyContract, AddAndRemove) {
  auto policy = makePolicy(GetParam(), 100);
  policy->add(1, 10, 0);
  policy->add(2, 20, 0);
  policy->add(2, 20, 0);  // idempotent
  EXPECT_TRUE(policy->contains(1));
  EXPECT_TRUE(policy->contains(2));
  EXPECT_EQ(policy->used(), 30u);
  EXPECT_EQ(policy->objects(), 2u);
  policy->remove(1);
  policy->remove(1);
  policy->remove(42);  // unknown: no-op
  EXPECT_FALSE(policy->contains(1));
  EXPECT_TRUE(policy->contains(2));
  EXPECT_EQ(policy->used(), 20u);
  policy->remove(2);
  EXPECT_EQ(policy->used(), 0u);
  EXPECT_EQ(policy->objects(), 0u);
}

TEST_P(PolicyContract, EvictionCandidatesAreDistinctResidentsCoveringTheRequest) {
  auto policy = makePolicy(GetParam(), kCapacity);
  std::vector<ObjectId> victims;
  for (const auto& r : mixedTrace(2)) {
    policy->recordAccess(r.access());
    if (!policy->contains(r.id)) policy->admit(r.access(), victims);
  }
  std::vector<Resident> residents;
  policy->residents(residents);
  std::unordered_map<ObjectId, std::uint64_t> sizes;
  for (const auto& res : residents) sizes[res.id] = res.size;
  for (std::uint64_t want : {std::uint64_t{1}, kCapacity / 4, policy->used(), 2 * kCapacity}) {
    std::vector<ObjectId> out;
    policy->evictionCandidates(want, out);
    std::set<ObjectId> distinct(out.begin(), out.end());
    EXPECT_EQ(distinct.size(), out.size());
    std::uint64_t covered = 0;
    for (ObjectId id : out) {
      ASSERT_TRUE(sizes.count(id)) << "candidate " << id << " is not resident";
      covered += sizes[id];
    }
    EXPECT_GE(covered, std::min(want, policy->used()));
  }
  // Asking does not evict.
  std::vector<Resident> after;
  policy->residents(after);
  EXPECT_EQ(after.size(), residents.size());
}

TEST_P(PolicyContract, Deterministic) {
  auto trace = mixedTrace(3);
  auto a = testing::run(GetParam(), kCapacity, trace);
  auto b = testing::run(GetParam(), kCapacity, trace);
  EXPECT_EQ(a.hits, b.hits);
  EXPECT_EQ(a.bytes_hit, b.bytes_hit);
  EXPECT_EQ(a.promoted_bytes, b.promoted_bytes);
  EXPECT_EQ(a.evictions, b.evictions);
}

TEST_P(PolicyContract, SwapKeepsResidentsAndParamsRoundTrip) {
  auto policy = makePolicy(GetParam(), kCapacity);
  std::vector<ObjectId> victims;
  for (const auto& r : mixedTrace(4, 1000)) {
    policy->recordAccess(r.access());
    if (!policy->contains(r.id)) policy->admit(r.access(), victims);
  }
  std::string spec = describePolicy(*policy);
  auto rebuilt = rebuildPolicy(*policy, spec, 0);
  ASSERT_TRUE(rebuilt.ok()) << rebuilt.error().message;
  EXPECT_EQ(describePolicy(**rebuilt), spec);
  EXPECT_EQ((*rebuilt)->used(), policy->used());
  std::vector<Resident> residents;
  policy->residents(residents);
  for (const auto& r : residents) EXPECT_TRUE((*rebuilt)->contains(r.id));
  // Any policy can take over from any other.
  for (const auto& other : policyNames()) {
    auto swapped = rebuildPolicy(*policy, other, 0);
    ASSERT_TRUE(swapped.ok());
    EXPECT_EQ((*swapped)->used(), policy->used()) << other;
  }
}

TEST_P(PolicyContract, CountersVisitCommonNames) {
  auto policy = makePolicy(GetParam(), 100);
  policy->add(1, 10, 0);
  std::unordered_map<std::string, double> counters;
  policy->visitCounters([&](std::string_view name, double v) { counters[std::string(name)] = v; });
  EXPECT_EQ(counters["capacity_bytes"], 100);
  EXPECT_EQ(counters["used_bytes"], 10);
  EXPECT_EQ(counters["objects"], 1);
  EXPECT_TRUE(counters.count("evictions"));
}

TEST_P(PolicyContract, HeatRanksTheReadObjectAboveTheIdleOneAndUnknownAtZero) {
  auto policy = makePolicy(GetParam(), kCapacity);
  policy->add(1, 4096, 0);
  policy->add(2, 4096, 0);
  for (int i = 0; i < 3; ++i) {
    policy->recordAccess(Access{
        .id = 1, .size = 4096, .bytes_read = 4096, .bytes_missed = 4096, .time_ns = TimeNs(i + 1)});
  }
  EXPECT_GT(policy->heat(1), policy->heat(2));
  EXPECT_GE(policy->heat(2), 0.0);
  EXPECT_EQ(policy->heat(3), 0.0);
}

TEST_P(PolicyContract, AskingHeatNeverChangesDecisions) {
  auto quiet = makePolicy(GetParam(), kCapacity);
  auto asked = makePolicy(GetParam(), kCapacity);
  std::vector<ObjectId> quiet_victims, asked_victims;
  double sink = 0;
  for (const auto& r : mixedTrace(5, 2000)) {
    for (auto* p : {quiet.get(), asked.get()}) {
      if (p == asked.get()) sink += p->heat(r.id);
      p->recordAccess(r.access());
      if (p == asked.get()) sink += p->heat(r.id);
      if (!p->contains(r.id))
        p->admit(r.access(), p == quiet.get() ? quiet_victims : asked_victims);
    }
  }
  EXPECT_GE(sink, 0.0);
  EXPECT_EQ(quiet_victims, asked_victims);
  EXPECT_EQ(quiet->used(), asked->used());
}

INSTANTIATE_TEST_SUITE_P(Policy, PolicyContract, ::testing::ValuesIn(policyNames()),
                         [](const auto& info) { return info.param; });

// Parameters at their edges keep the contract too.
INSTANTIATE_TEST_SUITE_P(PolicyEdge, PolicyContract,
                         ::testing::Values("hotshard;history=0", "hotshard;hysteresis=0;margin=0",
                                           "hotshard;min_read_ratio=0;reuse_factor=0",
                                           "lfu;half_life=0",
                                           "s3fifo;small_ratio=0.9;ghost_ratio=0",
                                           "s3fifo;move_to_main=3"),
                         [](const auto& info) {
                           std::string name;
                           for (char c : info.param) name += std::isalnum(c) ? c : '_';
                           return name;
                         });

}  // namespace
}  // namespace hotshard::policy
