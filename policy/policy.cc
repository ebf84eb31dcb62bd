#include "policy/policy.h"

namespace hotshard::policy {

void Policy::visitCounters(const CounterVisitor& visit) const {
  visit("capacity_bytes", static_cast<double>(capacity_));
  visit("used_bytes", static_cast<double>(used_));
  visit("objects", static_cast<double>(objects_));
  visit("admits", static_cast<double>(admits_));
  visit("rejects", static_cast<double>(rejects_));
  visit("evictions", static_cast<double>(evictions_));
  visitExtraCounters(visit);
}

}  // namespace hotshard::policy
