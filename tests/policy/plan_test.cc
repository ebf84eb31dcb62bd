#include "policy/plan.h"

#include <gtest/gtest.h>

#include "tests/policy/policy_test_util.h"

namespace hotshard::policy {
namespace {

Access sample(ObjectId id, std::uint64_t size) {
  return {.id = id, .size = size, .bytes_read = size, .bytes_missed = size, .time_ns = 0};
}

TEST(PolicyPlan, StaysWithinTheTickBudgetAndDefersTheRest) {
  auto policy = testing::makePolicy("lru", 1000);
  std::vector<Access> tick = {sample(1, 300), sample(2, 500), sample(3, 100), sample(4, 50)};
  for (const auto& a : tick) policy->recordAccess(a);
  auto plan = planPromotions(*policy, tick, 450);
  EXPECT_EQ(plan.promote, (std::vector<ObjectId>{1, 3, 4}));
  EXPECT_EQ(plan.deferred, (std::vector<ObjectId>{2}));
  EXPECT_EQ(plan.promote_bytes, 450u);
  EXPECT_TRUE(plan.evict.empty());
  EXPECT_EQ(policy->used(), 450u);
}

TEST(PolicyPlan, EvictsOlderCopiesButNeverCopiesWhatItPushesOutAgain) {
  auto policy = testing::makePolicy("lru", 100);
  policy->add(9, 60, 0);
  // 1 (50) evicts 9; 2 (60) then evicts 1, admitted in the same tick: 1 is not copied.
  std::vector<Access> tick = {sample(1, 50), sample(2, 60)};
  for (const auto& a : tick) policy->recordAccess(a);
  auto plan = planPromotions(*policy, tick, 1000);
  EXPECT_EQ(plan.promote, (std::vector<ObjectId>{2}));
  EXPECT_EQ(plan.evict, (std::vector<ObjectId>{9}));
  EXPECT_EQ(plan.promote_bytes, 60u);
}

TEST(PolicyPlan, SkipsResidentsAndRejectedObjects) {
  auto policy = testing::makePolicy("hotshard", 1ull << 30);
  policy->add(1, 100, 0);
  Access header{
      .id = 2, .size = 1ull << 29, .bytes_read = 4096, .bytes_missed = 4096, .time_ns = 0};
  std::vector<Access> tick = {sample(1, 100), header};
  for (const auto& a : tick) policy->recordAccess(a);
  auto plan = planPromotions(*policy, tick, 1ull << 30);
  EXPECT_TRUE(plan.promote.empty());
  EXPECT_TRUE(plan.deferred.empty());
}

}  // namespace
}  // namespace hotshard::policy
