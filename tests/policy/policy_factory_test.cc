// The factory and the k=v syntax shared by the CLI, config file and simulator.
#include <gtest/gtest.h>

#include "policy/params.h"
#include "policy/registry.h"

namespace hotshard::policy {
namespace {

TEST(PolicyFactory, BuildsFromOneStringOrNamePlusList) {
  auto a = createPolicy("hotshard; hysteresis=0.3 ;half_life=32", 1000);
  ASSERT_TRUE(a.ok()) << a.error().message;
  EXPECT_EQ((*a)->name(), "hotshard");
  EXPECT_EQ(describePolicy(**a),
            "hotshard;half_life=32;miss_weight=1;hit_weight=0.25;hysteresis=0.3;margin=2;"
            "min_read_ratio=1;reuse_factor=16;idle_gaps=6;dataset_idle=8;history=4");
  auto b = createPolicy("hotshard", {"hysteresis=0.3", "half_life=32"}, 1000);
  ASSERT_TRUE(b.ok());
  EXPECT_EQ((*b)->params(), (*a)->params());
  EXPECT_EQ((*b)->capacity(), 1000u);
  auto s = createPolicy("s3fifo;small_ratio=0.2", 1000);
  ASSERT_TRUE(s.ok());
  EXPECT_EQ(describePolicy(**s), "s3fifo;small_ratio=0.2;ghost_ratio=0.9;move_to_main=1");
  EXPECT_EQ(describePolicy(**createPolicy("lru", 1)), "lru");
}

TEST(PolicyFactory, ErrorsListWhatIsAccepted) {
  auto unknown = createPolicy("lfru", 1000);
  ASSERT_FALSE(unknown.ok());
  EXPECT_EQ(unknown.error().message,
            "unknown policy 'lfru' (known: hotshard, lru, lfu, arc, s3fifo, sieve)");
  auto param = createPolicy("lfu;halflife=3", 1000);
  ASSERT_FALSE(param.ok());
  EXPECT_EQ(param.error().message, "lfu: no parameter 'halflife' (accepted: half_life)");
  auto none = createPolicy("lru;x=1", 1000);
  ASSERT_FALSE(none.ok());
  EXPECT_EQ(none.error().message, "lru: no parameter 'x' (accepted: none)");
  auto value = createPolicy("hotshard;hysteresis=lots", 1000);
  ASSERT_FALSE(value.ok());
  EXPECT_EQ(value.error().message, "hotshard: parameter hysteresis: not a number: 'lots'");
  auto range = createPolicy("s3fifo;small_ratio=1.5", 1000);
  ASSERT_FALSE(range.ok());
  EXPECT_EQ(range.error().message, "s3fifo: small_ratio must be in (0, 1)");
  auto syntax = createPolicy("hotshard;hysteresis", 1000);
  ASSERT_FALSE(syntax.ok());
  EXPECT_NE(syntax.error().message.find("expected k=v"), std::string::npos);
  EXPECT_FALSE(createPolicy("", 1000).ok());
}

TEST(PolicyFactory, ListsEveryPolicyWithDocumentedParameters) {
  auto names = policyNames();
  EXPECT_EQ(names.front(), kDefaultPolicy);
  for (const char* n : {"lru", "lfu", "arc", "s3fifo", "sieve", "hotshard"}) {
    EXPECT_NE(std::find(names.begin(), names.end(), n), names.end()) << n;
  }
  for (const auto& info : listPolicies()) {
    for (const auto& doc : info.params) EXPECT_NE(doc.find("(default "), std::string::npos) << doc;
  }
}

TEST(PolicyParams, FormatsDoubles) {
  EXPECT_EQ(formatDouble(0.25), "0.25");
  EXPECT_EQ(formatDouble(64), "64");
  EXPECT_EQ(formatDouble(320), "320");
  EXPECT_EQ(formatDouble(1e-6), "1e-06");
}

}  // namespace
}  // namespace hotshard::policy
