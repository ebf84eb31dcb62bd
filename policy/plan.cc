#include "policy/plan.h"

#include <algorithm>

namespace hotshard::policy {

PromotionPlan planPromotions(Policy& policy, const std::vector<Access>& candidates,
                             std::uint64_t budget_bytes) {
  PromotionPlan plan;
  std::vector<ObjectId> victims;
  for (const auto& a : candidates) {
    if (policy.contains(a.id)) continue;
    if (plan.promote_bytes + a.size > budget_bytes) {
      plan.deferred.push_back(a.id);
      continue;
    }
    victims.clear();
    if (!policy.admit(a, victims)) continue;
    for (ObjectId v : victims) {
      auto it = std::find(plan.promote.begin(), plan.promote.end(), v);
      if (it == plan.promote.end()) {
        plan.evict.push_back(v);
        continue;
      }
      // Admitted earlier in this tick and already pushed out again: never copy it.
      plan.promote.erase(it);
      for (const auto& c : candidates) {
        if (c.id == v) {
          plan.promote_bytes -= c.size;
          break;
        }
      }
    }
    plan.promote.push_back(a.id);
    plan.promote_bytes += a.size;
  }
  return plan;
}

}  // namespace hotshard::policy
