#include "policy/arc.h"

#include <algorithm>

namespace hotshard::policy {

ArcPolicy::ArcPolicy(std::uint64_t capacity, Config) : Policy(capacity) {}

bool ArcPolicy::contains(ObjectId id) const noexcept {
  detail::Slot s = index_.find(id);
  return s != detail::kNoSlot && nodes_[s].where <= kT2;
}

double ArcPolicy::heat(ObjectId id) const noexcept {
  detail::Slot s = index_.find(id);
  if (s == detail::kNoSlot) return 0.0;
  return nodes_[s].where == kT2 ? 2.0 : nodes_[s].where == kT1 ? 1.0 : 0.0;
}

void ArcPolicy::link(detail::Slot s, Where where) noexcept {
  nodes_[s].where = where;
  lists_[where].pushFront(s);
  bytes_[where] += nodes_[s].size;
}

void ArcPolicy::unlink(detail::Slot s) noexcept {
  Where w = nodes_[s].where;
  lists_[w].erase(s);
  bytes_[w] -= nodes_[s].size;
}

void ArcPolicy::drop(detail::Slot s) noexcept {
  if (nodes_[s].where <= kT2) accountRemove(nodes_[s].size);
  unlink(s);
  index_.erase(nodes_[s].id);
  nodes_.release(s);
}

void ArcPolicy::recordAccess(const Access& access) noexcept {
  detail::Slot s = index_.find(access.id);
  if (s == detail::kNoSlot) return;
  Node& n = nodes_[s];
  double size = static_cast<double>(std::max<std::uint64_t>(access.size, 1));
  switch (n.where) {
    case kT1:
    case kT2:
      unlink(s);
      link(s, kT2);
      break;
    case kB1: {
      double ratio = bytes_[kB1] ? std::max(1.0, double(bytes_[kB2]) / double(bytes_[kB1])) : 1.0;
      p_ = std::min<std::uint64_t>(capacity(), p_ + static_cast<std::uint64_t>(ratio * size));
      break;
    }
    case kB2: {
      double ratio = bytes_[kB2] ? std::max(1.0, double(bytes_[kB1]) / double(bytes_[kB2])) : 1.0;
      auto delta = static_cast<std::uint64_t>(ratio * size);
      p_ = p_ > delta ? p_ - delta : 0;
      break;
    }
  }
}

ObjectId ArcPolicy::replace(bool hit_in_b2) noexcept {
  bool from_t1 = !lists_[kT1].empty() &&
                 (bytes_[kT1] > p_ || (hit_in_b2 && bytes_[kT1] == p_) || lists_[kT2].empty());
  detail::Slot s = lists_[from_t1 ? kT1 : kT2].back();
  unlink(s);
  accountRemove(nodes_[s].size);
  link(s, from_t1 ? kB1 : kB2);
  countEviction();
  return nodes_[s].id;
}

void ArcPolicy::trimGhosts() noexcept {
  std::uint64_t c = capacity();
  while (!lists_[kB1].empty() && bytes_[kT1] + bytes_[kB1] > c) drop(lists_[kB1].back());
  while (!lists_[kB2].empty() && bytes_[kT1] + bytes_[kT2] + bytes_[kB1] + bytes_[kB2] > 2 * c) {
    drop(lists_[kB2].back());
  }
}

bool ArcPolicy::admit(const Access& access, std::vector<ObjectId>& victims) noexcept {
  detail::Slot s = index_.find(access.id);
  if (access.size > capacity() || (s != detail::kNoSlot && nodes_[s].where <= kT2)) {
    countAdmit(false);
    return false;
  }
  bool ghost_hit = s != detail::kNoSlot;
  bool hit_in_b2 = ghost_hit && nodes_[s].where == kB2;
  if (ghost_hit) {
    unlink(s);
  } else {
    s = nodes_.alloc();
    nodes_[s].id = access.id;
    index_.insert(access.id, s);
  }
  nodes_[s].size = access.size;
  while (used() + access.size > capacity()) victims.push_back(replace(hit_in_b2));
  link(s, ghost_hit ? kT2 : kT1);
  accountAdd(access.size);
  trimGhosts();
  countAdmit(true);
  return true;
}

void ArcPolicy::add(ObjectId id, std::uint64_t size, TimeNs) noexcept {
  detail::Slot s = index_.find(id);
  if (s != detail::kNoSlot) {
    if (nodes_[s].where <= kT2) return;
    unlink(s);
  } else {
    s = nodes_.alloc();
    nodes_[s].id = id;
    index_.insert(id, s);
  }
  nodes_[s].size = size;
  link(s, kT1);
  accountAdd(size);
  trimGhosts();
}

void ArcPolicy::remove(ObjectId id) noexcept {
  detail::Slot s = index_.find(id);
  if (s != detail::kNoSlot) drop(s);
}

void ArcPolicy::evictionCandidates(std::uint64_t bytes, std::vector<ObjectId>& out) noexcept {
  // T1 beyond its target first (what replace() takes), then T2, then the rest of T1.
  std::uint64_t freed = 0;
  std::uint64_t t1 = bytes_[kT1];
  detail::Slot s = lists_[kT1].back();
  for (; s != detail::kNoSlot && freed < bytes && t1 > p_; s = lists_[kT1].prevOf(s)) {
    out.push_back(nodes_[s].id), freed += nodes_[s].size, t1 -= nodes_[s].size;
  }
  for (detail::Slot t = lists_[kT2].back(); t != detail::kNoSlot && freed < bytes;
       t = lists_[kT2].prevOf(t)) {
    out.push_back(nodes_[t].id), freed += nodes_[t].size;
  }
  for (; s != detail::kNoSlot && freed < bytes; s = lists_[kT1].prevOf(s)) {
    out.push_back(nodes_[s].id), freed += nodes_[s].size;
  }
}

void ArcPolicy::residents(std::vector<Resident>& out) const {
  for (int w : {kT1, kT2}) {
    for (detail::Slot s = lists_[w].back(); s != detail::kNoSlot; s = lists_[w].prevOf(s)) {
      out.push_back({nodes_[s].id, nodes_[s].size});
    }
  }
}

void ArcPolicy::visitExtraCounters(const CounterVisitor& visit) const {
  visit("arc_target_t1_bytes", static_cast<double>(p_));
  visit("arc_t1_bytes", static_cast<double>(bytes_[kT1]));
  visit("arc_t2_bytes", static_cast<double>(bytes_[kT2]));
  visit("arc_ghost_bytes", static_cast<double>(bytes_[kB1] + bytes_[kB2]));
}

}  // namespace hotshard::policy
