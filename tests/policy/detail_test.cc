// The building blocks under every policy, against the standard containers.
#include "policy/detail.h"

#include <gtest/gtest.h>

#include <map>
#include <set>
#include <unordered_map>

#include "policy/generate.h"

namespace hotshard::policy::detail {
namespace {

TEST(PolicyDetail, IdIndexMatchesAnUnorderedMap) {
  Rng rng(99);
  IdIndex index;
  std::unordered_map<ObjectId, Slot> model;
  for (int i = 0; i < 200000; ++i) {
    // Small key space so inserts, erases and probe-run collisions mix; some huge ids.
    ObjectId id = rng.below(4) == 0 ? rng.next() : rng.below(5000);
    if (model.count(id) && rng.below(2)) {
      index.erase(id);
      model.erase(id);
    } else if (!model.count(id)) {
      Slot s = static_cast<Slot>(rng.below(1u << 30));
      index.insert(id, s);
      model[id] = s;
    }
    ObjectId probe = rng.below(5000);
    auto it = model.find(probe);
    ASSERT_EQ(index.find(probe), it == model.end() ? kNoSlot : it->second) << "step " << i;
  }
  EXPECT_EQ(index.size(), model.size());
  for (const auto& [id, s] : model) ASSERT_EQ(index.find(id), s);
}

TEST(PolicyDetail, MinHeapMatchesAMultiset) {
  Rng rng(7);
  MinHeap heap;
  std::map<Slot, double> keys;
  std::multiset<std::pair<double, Slot>> order;
  for (int i = 0; i < 50000; ++i) {
    Slot s = static_cast<Slot>(rng.below(500));
    double key = static_cast<double>(rng.below(1000));
    if (keys.count(s)) {
      order.erase({keys[s], s});
      if (rng.below(3) == 0) {
        heap.erase(s);
        keys.erase(s);
      } else {
        heap.update(s, key);
        keys[s] = key;
        order.insert({key, s});
      }
    } else {
      heap.push(s, key);
      keys[s] = key;
      order.insert({key, s});
    }
    ASSERT_EQ(heap.size(), order.size());
    if (!order.empty()) {
      ASSERT_EQ(heap.topKey(), order.begin()->first);
    }
  }
  // visitAscending sees keys in order.
  std::vector<double> seen;
  heap.visitAscending([&](Slot s) {
    seen.push_back(keys[s]);
    return true;
  });
  ASSERT_EQ(seen.size(), order.size());
  EXPECT_TRUE(std::is_sorted(seen.begin(), seen.end()));
}

TEST(PolicyDetail, LogDomainCountersAddAndDecay) {
  double stored = kLogZero;
  stored = logAdd(stored, std::log2(3.0) + 0.0);  // 3 at clock 0
  stored = logAdd(stored, std::log2(5.0) + 1.0);  // 5 at clock 1
  EXPECT_NEAR(logValueNow(stored, 1.0), 3.0 / 2 + 5.0, 1e-9);
  EXPECT_NEAR(logValueNow(stored, 2.0), (3.0 / 2 + 5.0) / 2, 1e-9);
  EXPECT_EQ(logValueNow(kLogZero, 5.0), 0.0);
}

}  // namespace
}  // namespace hotshard::policy::detail
