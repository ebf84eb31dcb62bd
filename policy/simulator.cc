#include "policy/simulator.h"

#include <limits>

#include "policy/detail.h"
#include "policy/registry.h"

namespace hotshard::policy {

Expected<SimResult> simulate(TraceReader& reader, Policy& policy) {
  SimResult result;
  result.policy = describePolicy(policy);
  result.capacity = policy.capacity();
  std::vector<ObjectId> victims;
  // Look-ahead ring: requests are read kAhead ahead of the one simulated, and the policy
  // is told which ids come (Policy::prefetch), so memory latency overlaps.
  constexpr std::size_t kAhead = 16, kNear = 4;
  Request ring[kAhead];
  std::size_t filled = 0;
  bool more = true;  // never call next() again once it said no: errors stay as reported
  while (filled < kAhead && (more = reader.next(ring[filled])))
    policy.prefetch(ring[filled++].id, 0);
  for (std::size_t i = 0; i < filled; ++i) {
    Request r = ring[i % kAhead];
    if (i + kNear < filled) policy.prefetch(ring[(i + kNear) % kAhead].id, 1);
    if (more && (more = reader.next(ring[i % kAhead])))
      policy.prefetch(ring[filled++ % kAhead].id, 0);
    if (r.flags & kFlagWrite) {
      policy.remove(r.id);
      continue;
    }
    Access a = r.access();
    ++result.requests;
    result.bytes_read += r.bytes_read;
    policy.recordAccess(a);
    if (policy.contains(r.id)) {
      ++result.hits;
      result.bytes_hit += r.bytes_read;
      continue;
    }
    victims.clear();
    if (policy.admit(a, victims)) {
      ++result.promotions;
      result.promoted_bytes += r.size;
      result.evictions += victims.size();
    }
  }
  if (!reader.error()) return reader.error();
  return result;
}

Expected<SimResult> simulateOpt(TraceReader& reader, std::uint64_t capacity) {
  using detail::Slot;
  constexpr std::uint32_t kNever = std::numeric_limits<std::uint32_t>::max();
  // Pass 1: index of each request's next use of the same object.
  std::vector<std::uint32_t> next;
  {
    detail::IdIndex last;
    Request r;
    while (reader.next(r)) {
      if (next.size() >= kNever - 1)
        return Expected<SimResult>::error("OPT supports traces up to 4G requests");
      auto i = static_cast<Slot>(next.size());
      next.push_back(kNever);
      if (r.flags & kFlagWrite) continue;  // writes are not uses
      Slot prev = last.find(r.id);
      if (prev != detail::kNoSlot) {
        next[prev] = i;
        last.erase(r.id);
      }
      last.insert(r.id, i);
    }
    if (!reader.error()) return reader.error();
  }
  if (auto st = reader.rewind(); !st) return st;

  // Pass 2: residents in a heap keyed by -next use, so the furthest comes first.
  struct Node {
    ObjectId id = 0;
    std::uint64_t size = 0;
  };
  detail::IdIndex index;
  detail::Slab<Node> nodes;
  detail::MinHeap heap;
  std::uint64_t used = 0;
  auto evict = [&](Slot s) {
    heap.erase(s);
    index.erase(nodes[s].id);
    used -= nodes[s].size;
    nodes.release(s);
  };
  SimResult result;
  result.policy = "opt";
  result.capacity = capacity;
  std::vector<Slot> victims;
  Request r;
  for (std::size_t i = 0; reader.next(r); ++i) {
    Slot s = index.find(r.id);
    if (r.flags & kFlagWrite) {
      if (s != detail::kNoSlot) evict(s);
      continue;
    }
    ++result.requests;
    result.bytes_read += r.bytes_read;
    double key = -static_cast<double>(next[i]);
    if (s != detail::kNoSlot) {
      ++result.hits;
      result.bytes_hit += r.bytes_read;
      if (next[i] == kNever) {
        evict(s);  // never used again: free its room now
      } else {
        heap.update(s, key);
      }
      continue;
    }
    if (next[i] == kNever || r.size > capacity) continue;
    victims.clear();
    std::uint64_t freed = 0;
    bool useful = true;
    if (used + r.size > capacity) {
      std::uint64_t need = used + r.size - capacity;
      heap.visitAscending([&](Slot v) {
        if (-heap.keyOf(v) <= static_cast<double>(next[i])) {
          useful = false;  // would evict something needed sooner
          return false;
        }
        victims.push_back(v);
        freed += nodes[v].size;
        return freed < need;
      });
      useful = useful && freed >= need;
    }
    if (!useful) continue;
    for (Slot v : victims) evict(v);
    result.evictions += victims.size();
    s = nodes.alloc();
    nodes[s] = {r.id, r.size};
    index.insert(r.id, s);
    heap.push(s, key);
    used += r.size;
    ++result.promotions;
    result.promoted_bytes += r.size;
  }
  if (!reader.error()) return reader.error();
  return result;
}

}  // namespace hotshard::policy
