#include "policy/lru.h"

namespace hotshard::policy {

LruPolicy::LruPolicy(std::uint64_t capacity, Config) : Policy(capacity) {}

void LruPolicy::recordAccess(const Access& access) noexcept {
  detail::Slot s = index_.find(access.id);
  if (s == detail::kNoSlot) return;
  list_.moveToFront(s);
  nodes_[s].last_use = ++seq_;
}

double LruPolicy::heat(ObjectId id) const noexcept {
  detail::Slot s = index_.find(id);
  return s == detail::kNoSlot ? 0.0 : static_cast<double>(nodes_[s].last_use);
}

bool LruPolicy::admit(const Access& access, std::vector<ObjectId>& victims) noexcept {
  return admitEvicting(access, victims, [&] { return nodes_[list_.back()].id; });
}

void LruPolicy::add(ObjectId id, std::uint64_t size, TimeNs) noexcept {
  if (contains(id)) return;
  detail::Slot s = nodes_.alloc();
  nodes_[s].id = id;
  nodes_[s].size = size;
  nodes_[s].last_use = ++seq_;
  index_.insert(id, s);
  list_.pushFront(s);
  accountAdd(size);
}

void LruPolicy::remove(ObjectId id) noexcept {
  detail::Slot s = index_.find(id);
  if (s == detail::kNoSlot) return;
  list_.erase(s);
  index_.erase(id);
  accountRemove(nodes_[s].size);
  nodes_.release(s);
}

void LruPolicy::evictionCandidates(std::uint64_t bytes, std::vector<ObjectId>& out) noexcept {
  std::uint64_t freed = 0;
  for (detail::Slot s = list_.back(); s != detail::kNoSlot && freed < bytes; s = list_.prevOf(s)) {
    out.push_back(nodes_[s].id);
    freed += nodes_[s].size;
  }
}

void LruPolicy::residents(std::vector<Resident>& out) const {
  for (detail::Slot s = list_.back(); s != detail::kNoSlot; s = list_.prevOf(s)) {
    out.push_back({nodes_[s].id, nodes_[s].size});
  }
}

}  // namespace hotshard::policy
