#include "policy/sieve.h"

namespace hotshard::policy {

SievePolicy::SievePolicy(std::uint64_t capacity, Config) : Policy(capacity) {}

void SievePolicy::recordAccess(const Access& access) noexcept {
  detail::Slot s = index_.find(access.id);
  if (s != detail::kNoSlot) nodes_[s].visited = true;
}

double SievePolicy::heat(ObjectId id) const noexcept {
  detail::Slot s = index_.find(id);
  return s == detail::kNoSlot ? 0.0 : (nodes_[s].visited ? 2.0 : 1.0);
}

detail::Slot SievePolicy::sweep() noexcept {
  detail::Slot s = hand_ != detail::kNoSlot ? hand_ : queue_.back();
  while (nodes_[s].visited) {
    nodes_[s].visited = false;
    s = queue_.prevOf(s);
    if (s == detail::kNoSlot) s = queue_.back();
  }
  hand_ = s;
  return s;
}

bool SievePolicy::admit(const Access& access, std::vector<ObjectId>& victims) noexcept {
  return admitEvicting(access, victims, [&] { return nodes_[sweep()].id; });
}

void SievePolicy::add(ObjectId id, std::uint64_t size, TimeNs) noexcept {
  if (contains(id)) return;
  detail::Slot s = nodes_.alloc();
  nodes_[s].id = id;
  nodes_[s].size = size;
  index_.insert(id, s);
  queue_.pushFront(s);
  accountAdd(size);
}

void SievePolicy::remove(ObjectId id) noexcept {
  detail::Slot s = index_.find(id);
  if (s == detail::kNoSlot) return;
  if (hand_ == s) hand_ = queue_.prevOf(s);  // kNoSlot restarts the sweep at the tail
  queue_.erase(s);
  index_.erase(id);
  accountRemove(nodes_[s].size);
  nodes_.release(s);
}

void SievePolicy::evictionCandidates(std::uint64_t bytes, std::vector<ObjectId>& out) noexcept {
  // Unvisited objects from the hand onwards are what the sweep would take next.
  std::uint64_t freed = 0;
  if (queue_.empty()) return;
  detail::Slot start = hand_ != detail::kNoSlot ? hand_ : queue_.back();
  detail::Slot s = start;
  for (int pass = 0; pass < 2 && freed < bytes; ++pass) {
    do {
      if (nodes_[s].visited == (pass == 1)) {
        out.push_back(nodes_[s].id);
        freed += nodes_[s].size;
        if (freed >= bytes) return;
      }
      s = queue_.prevOf(s);
      if (s == detail::kNoSlot) s = queue_.back();
    } while (s != start);
  }
}

void SievePolicy::residents(std::vector<Resident>& out) const {
  for (detail::Slot s = queue_.back(); s != detail::kNoSlot; s = queue_.prevOf(s)) {
    out.push_back({nodes_[s].id, nodes_[s].size});
  }
}

}  // namespace hotshard::policy
