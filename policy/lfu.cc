#include "policy/lfu.h"

namespace hotshard::policy {

LfuPolicy::LfuPolicy(std::uint64_t capacity, Config config) : Policy(capacity), config_(config) {}

void LfuPolicy::recordAccess(const Access& access) noexcept {
  if (config_.half_life > 0) clock_ += 1.0 / config_.half_life;
  detail::Slot s = index_.find(access.id);
  if (s != detail::kNoSlot) heap_.update(s, detail::logAdd(heap_.keyOf(s), clock_));
}

double LfuPolicy::heat(ObjectId id) const noexcept {
  detail::Slot s = index_.find(id);
  return s == detail::kNoSlot ? 0.0 : detail::logValueNow(heap_.keyOf(s), clock_);
}

void LfuPolicy::insert(ObjectId id, std::uint64_t size) noexcept {
  detail::Slot s = nodes_.alloc();
  nodes_[s] = {id, size};
  index_.insert(id, s);
  heap_.push(s, clock_);  // one access, now
  accountAdd(size);
}

bool LfuPolicy::admit(const Access& access, std::vector<ObjectId>& victims) noexcept {
  return admitEvicting(access, victims, [&] { return nodes_[heap_.top()].id; });
}

void LfuPolicy::add(ObjectId id, std::uint64_t size, TimeNs) noexcept {
  if (!contains(id)) insert(id, size);
}

void LfuPolicy::remove(ObjectId id) noexcept {
  detail::Slot s = index_.find(id);
  if (s == detail::kNoSlot) return;
  heap_.erase(s);
  index_.erase(id);
  accountRemove(nodes_[s].size);
  nodes_.release(s);
}

void LfuPolicy::evictionCandidates(std::uint64_t bytes, std::vector<ObjectId>& out) noexcept {
  std::vector<detail::Slot> slots;
  heap_.collectAscending(bytes, slots, [&](detail::Slot s) { return nodes_[s].size; });
  for (detail::Slot s : slots) out.push_back(nodes_[s].id);
}

void LfuPolicy::residents(std::vector<Resident>& out) const {
  heap_.visitAscending([&](detail::Slot s) {
    out.push_back({nodes_[s].id, nodes_[s].size});
    return true;
  });
}

}  // namespace hotshard::policy
