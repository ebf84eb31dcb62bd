#include "policy/simulator.h"

#include <limits>

#include "policy/detail.h"
#include "policy/registry.h"

namespace hotshard::policy {

Result<SimResult> simulate(TraceReader& reader, Policy& policy) {
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
  if (!reader.status()) return reader.status().error();
  return result;
}

namespace {

using detail::Slot;
constexpr std::uint32_t kNever = std::numeric_limits<std::uint32_t>::max();

// OPT's pass 1: for each request, the index of the next use of the same object.
Result<std::vector<std::uint32_t>> nextUses(TraceReader& reader) {
  std::vector<std::uint32_t> next;
  detail::IdIndex last;
  Request r;
  while (reader.next(r)) {
    if (next.size() >= kNever - 1)
      return makeError(Errc::kUnsupported, "OPT supports traces up to 4G requests");
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
  if (!reader.status()) return reader.status().error();
  return next;
}

// OPT's pass 2: residents in a heap keyed by -next use, so the furthest comes first.
class OptCache {
 public:
  explicit OptCache(std::uint64_t capacity) {
    result_.policy = "opt";
    result_.capacity = capacity;
  }

  // Request `r`, whose object is next used by request `next_use` (kNever: never).
  void request(const Request& r, std::uint32_t next_use) {
    Slot s = index_.find(r.id);
    if (r.flags & kFlagWrite) {
      if (s != detail::kNoSlot) evict(s);
      return;
    }
    ++result_.requests;
    result_.bytes_read += r.bytes_read;
    if (s != detail::kNoSlot) {
      ++result_.hits;
      result_.bytes_hit += r.bytes_read;
      if (next_use == kNever) {
        evict(s);  // never used again: free its room now
      } else {
        heap_.update(s, -static_cast<double>(next_use));
      }
      return;
    }
    if (next_use == kNever || r.size > result_.capacity) return;
    if (!pickVictims(r.size, next_use)) return;
    for (Slot v : victims_) evict(v);
    result_.evictions += victims_.size();
    s = nodes_.alloc();
    nodes_[s] = {r.id, r.size};
    index_.insert(r.id, s);
    heap_.push(s, -static_cast<double>(next_use));
    used_ += r.size;
    ++result_.promotions;
    result_.promoted_bytes += r.size;
  }

  const SimResult& result() const { return result_; }

 private:
  struct Node {
    ObjectId id = 0;
    std::uint64_t size = 0;
  };

  // Residents to evict, furthest next use first, to make room for `size` bytes; false
  // when that would evict something needed sooner than `next_use` (then bypass).
  bool pickVictims(std::uint64_t size, std::uint32_t next_use) {
    victims_.clear();
    if (used_ + size <= result_.capacity) return true;
    const std::uint64_t need = used_ + size - result_.capacity;
    std::uint64_t freed = 0;
    bool useful = true;
    heap_.visitAscending([&](Slot v) {
      if (-heap_.keyOf(v) <= static_cast<double>(next_use)) {
        useful = false;  // would evict something needed sooner
        return false;
      }
      victims_.push_back(v);
      freed += nodes_[v].size;
      return freed < need;
    });
    return useful && freed >= need;
  }

  void evict(Slot s) {
    heap_.erase(s);
    index_.erase(nodes_[s].id);
    used_ -= nodes_[s].size;
    nodes_.release(s);
  }

  SimResult result_;
  detail::IdIndex index_;
  detail::Slab<Node> nodes_;
  detail::MinHeap heap_;
  std::uint64_t used_ = 0;
  std::vector<Slot> victims_;
};

}  // namespace

// Two passes: next uses, then the cache that evicts the furthest next use.
Result<SimResult> simulateOpt(TraceReader& reader, std::uint64_t capacity) {
  auto next = nextUses(reader);
  if (!next) return next.takeError();
  if (auto st = reader.rewind(); !st) return st.takeError();
  OptCache cache(capacity);
  Request r;
  for (std::size_t i = 0; reader.next(r); ++i) cache.request(r, (*next)[i]);
  if (!reader.status()) return reader.status().error();
  return cache.result();
}

}  // namespace hotshard::policy
