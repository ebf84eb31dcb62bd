// One placement tick of the daemon, as the policy sees it: which missed objects to
// promote within the promoter's byte budget for the tick, and which copies to drop to
// make room. Pure bookkeeping over Policy::admit(); the daemon does the copying.
#pragma once

#include <cstdint>
#include <vector>

#include "policy/policy.h"

namespace hotshard::policy {

struct PromotionPlan {
  std::vector<ObjectId> promote;   // copy these; the policy already counts them resident
  std::vector<ObjectId> evict;     // delete these copies (before copying, if space is short)
  std::vector<ObjectId> deferred;  // not tried: over this tick's budget, try next tick
  std::uint64_t promote_bytes = 0;
};

// `candidates`: samples of objects read since the last tick, already given to
// recordAccess(), in the order the caller prefers (e.g. most remote bytes first).
// Residents are skipped; an object whose size would overrun `budget_bytes` is deferred
// (later, smaller ones may still fit). An object admitted and then evicted within the
// same tick is neither copied nor deleted. On a failed copy the daemon calls remove().
PromotionPlan planPromotions(Policy& policy, const std::vector<Access>& candidates,
                             std::uint64_t budget_bytes);

}  // namespace hotshard::policy
