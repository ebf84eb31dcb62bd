// Co-accessed siblings in the hotshard policy (co_access): the shards of one model,
// loaded together by several replicas at every deployment, have the same heat per byte,
// so a newcomer among them displaces its siblings without the hysteresis, and the cache
// ends up holding the combination that fills it best.
#include <gtest/gtest.h>

#include <algorithm>

#include "policy/hotshard.h"
#include "tests/policy/policy_test_util.h"

namespace hotshard::policy {
namespace {

using testing::residentIds;

// Finished data sets off: the filler between loads is long against the gaps of the
// first load, which would count the model's data set as finished once.
const char* const kCo = "hotshard;dataset_idle=0";
const char* const kNoCo = "hotshard;dataset_idle=0;co_access=0";

struct Shard {
  ObjectId id;
  std::uint64_t size;
};

void readOf(std::vector<Request>& out, const Shard& s, std::uint32_t dataset) {
  Request r;
  r.time_ns = out.size() * 1000000;
  r.id = s.id;
  r.size = r.bytes_read = r.bytes_missed = s.size;
  r.dataset = dataset;
  out.push_back(r);
}

// One deployment: `replicas` replicas each read every shard in order, replica r starting
// r shard reads after the first, interleaved (as the inference generator does).
void load(std::vector<Request>& out, const std::vector<Shard>& shards, std::size_t replicas) {
  for (std::size_t t = 0; t < shards.size() + replicas - 1; ++t)
    for (std::size_t r = 0; r < replicas; ++r)
      if (t >= r && t - r < shards.size()) readOf(out, shards[t - r], 1);
}

// A model of shards sized 30, 30 and 36 in a cache of 80: the first load admits the two
// 30s (36 does not fit beside them) and a cold file of another data set takes the rest.
// Holding 36 and a 30 serves 66 of every 96 bytes loaded instead of 60, but the 36 only
// displaces a 30 (and the cold file) with 1.2 times its heat, short of the hysteresis
// (1.5): without co_access it never gets in. Files read once come between loads.
std::vector<Request> modelTrace(std::size_t replicas, int loads) {
  const std::vector<Shard> model = {{1, 30}, {2, 30}, {3, 36}};
  std::vector<Request> trace;
  load(trace, model, replicas);
  readOf(trace, {100, 20}, 2);
  ObjectId other = 1000;
  for (int i = 0; i < loads; ++i) {
    // Between loads, 400 bytes of files read once (other data set): more than
    // co_access (8) x 36 bytes, so consecutive loads are not one burst.
    for (int j = 0; j < 10; ++j) readOf(trace, {other++, 40}, 2);
    load(trace, model, replicas);
  }
  return trace;
}

double counter(const Policy& p, std::string_view name) {
  double out = -1;
  p.visitCounters([&](std::string_view n, double v) {
    if (n == name) out = v;
  });
  return out;
}

std::unique_ptr<Policy> replay(const std::string& spec, const std::vector<Request>& trace) {
  auto policy = testing::makePolicy(spec, 80);
  std::vector<ObjectId> victims;
  for (const auto& r : trace) {
    Access a = r.access();
    policy->recordAccess(a);
    if (!policy->contains(a.id)) policy->admit(a, victims);
  }
  return policy;
}

TEST(PolicyHotshardCoAccess, ASiblingDisplacesSiblingsWithoutTheHysteresis) {
  const auto trace = modelTrace(2, 40);
  // Co-accessed: the 36 displaces the cold file and one 30, and stays (its siblings, 30
  // bytes each, never beat its 36 bytes of equal heat per byte: no churn).
  auto co = replay(kCo, trace);
  auto ids = residentIds(*co);
  ASSERT_EQ(ids.size(), 2u);
  EXPECT_EQ(ids.back(), 3u);
  EXPECT_EQ(counter(*co, "admits"), 4.0);  // 1, 2, the cold file, then 3 once
  EXPECT_EQ(residentIds(*replay(kNoCo, trace)),
            (std::vector<ObjectId>{1, 2, 100}));

  // Bytes hit over the whole trace: 66 of 96 per replica and load against 60 (and the
  // second replica's reads of the two 30s in the first load).
  const auto with = testing::run(kCo, 80, trace);
  const auto without = testing::run(kNoCo, 80, trace);
  EXPECT_EQ(without.bytes_hit, (40u * 2 + 1) * 60);
  EXPECT_GT(with.bytes_hit, without.bytes_hit + 20u * 2 * 6);
}

TEST(PolicyHotshardCoAccess, OneReaderPerLoadKeepsTheHysteresis) {
  // With one replica a shard is not read again within the load: nothing tells siblings
  // from files of equal heat read at random moments (shuffled epochs), so the
  // hysteresis holds.
  const auto trace = modelTrace(1, 40);
  EXPECT_EQ(residentIds(*replay(kCo, trace)), (std::vector<ObjectId>{1, 2, 100}));
}

TEST(PolicyHotshardCoAccess, ParameterIsValidated) {
  EXPECT_FALSE(createPolicy("hotshard;co_access=-1", 8).ok());
  EXPECT_TRUE(createPolicy("hotshard;co_access=0", 8).ok());
}

}  // namespace
}  // namespace hotshard::policy
