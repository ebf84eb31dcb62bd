#include "policy/simulator.h"

#include <algorithm>
#include <functional>
#include <limits>
#include <queue>

#include "policy/detail.h"
#include "policy/registry.h"

namespace hotshard::policy {

namespace {

// What both simulations share: copies in flight (charged model), the remote bytes and
// the per-window figures.
class Ledger {
 public:
  Ledger(const SimOptions& options, SimResult& result)
      : options_(options), result_(result), slot_free_at_(options.promote_concurrency, 0.0) {}

  // True when a resident object's copy is complete at `now` (always, when instant).
  bool ready(ObjectId id, TimeNs now) {
    if (options_.instant) return true;
    purge(now);
    return index_.find(id) == detail::kNoSlot;
  }

  // A promotion of `size` bytes decided at `now`; false (and nothing charged) when the
  // copy could not start within max_backlog_s: the promotion fails.
  bool promote(ObjectId id, std::uint64_t size, TimeNs now) {
    auto slot = std::min_element(slot_free_at_.begin(), slot_free_at_.end());
    double start = std::max(static_cast<double>(now), *slot);
    if (!options_.instant && start - static_cast<double>(now) > options_.max_backlog_s * 1e9) {
      ++result_.dropped_copies;
      return false;
    }
    ++result_.promotions;
    result_.promoted_bytes += size;
    if (options_.instant) return true;
    result_.remote_bytes += size;  // the copy reads the whole object from the remote
    double per_slot_rate = options_.promote_rate / options_.promote_concurrency;
    *slot = start + static_cast<double>(size) / per_slot_rate * 1e9;
    cancel(id);
    detail::Slot s = copies_.alloc();
    copies_[s] = {id, *slot};
    index_.insert(id, s);
    done_.push({*slot, id});
    return true;
  }

  // The object left the cache (evicted, invalidated): a copy in flight stops.
  void cancel(ObjectId id) {
    if (options_.instant) return;
    detail::Slot s = index_.find(id);
    if (s == detail::kNoSlot) return;
    ++result_.cancelled_copies;
    index_.erase(id);
    copies_.release(s);
  }

  // A read, served from the cache (`hit`) or not.
  void read(const Request& r, bool hit) {
    ++result_.requests;
    result_.bytes_read += r.bytes_read;
    if (hit) {
      ++result_.hits;
      result_.bytes_hit += r.bytes_read;
    } else {
      result_.remote_bytes += r.bytes_missed;
    }
    if (options_.window_requests == 0) return;
    auto& w = result_.windows;
    if (w.empty() || w.back().requests == options_.window_requests) w.emplace_back();
    ++w.back().requests;
    w.back().bytes_read += r.bytes_read;
    if (hit) ++w.back().hits, w.back().bytes_hit += r.bytes_read;
  }

  // A repeated miss sample (kFlagMissSample): remote bytes unless served by the cache.
  void missSample(const Request& r, bool served) {
    if (!served) result_.remote_bytes += r.bytes_missed;
  }

 private:
  struct Copy {
    ObjectId id = 0;
    double done_at = 0;  // ns of trace time
  };
  // Forgets copies finished by `now`.
  void purge(TimeNs now) {
    while (!done_.empty() && done_.top().first <= static_cast<double>(now)) {
      auto [at, id] = done_.top();
      done_.pop();
      detail::Slot s = index_.find(id);
      if (s != detail::kNoSlot && copies_[s].done_at == at) {
        index_.erase(id);
        copies_.release(s);
      }
    }
  }

  const SimOptions& options_;
  SimResult& result_;
  std::vector<double> slot_free_at_;  // ns at which each copy slot is free
  detail::IdIndex index_;             // copies in flight
  detail::Slab<Copy> copies_;
  using Done = std::pair<double, ObjectId>;
  std::priority_queue<Done, std::vector<Done>, std::greater<Done>> done_;
};

Status checkOptions(const SimOptions& o) {
  if (!(o.promote_rate > 0) || o.promote_concurrency == 0 || !(o.max_backlog_s >= 0))
    return makeError(Errc::kInvalidArgument,
                     "simulate: need promote_rate > 0, promote_concurrency > 0, "
                     "max_backlog_s >= 0");
  return {};
}

// One record of the trace through `policy`.
void step(const Request& r, Policy& policy, Ledger& ledger, std::vector<ObjectId>& victims,
          SimResult& result) {
  if (r.flags & kInvalidatingFlags) {
    policy.remove(r.id);
    ledger.cancel(r.id);
    return;
  }
  if (r.flags & kFlagMissSample) {
    ledger.missSample(r, policy.contains(r.id) && ledger.ready(r.id, r.time_ns));
    return;
  }
  Access a = r.access();
  policy.recordAccess(a);
  if (policy.contains(r.id)) {
    bool ready = ledger.ready(r.id, r.time_ns);
    if (!ready) ++result.misses_during_copy;
    ledger.read(r, ready);
    return;
  }
  ledger.read(r, false);
  victims.clear();
  if (policy.admit(a, victims)) {
    result.evictions += victims.size();
    for (ObjectId v : victims) ledger.cancel(v);
    if (!ledger.promote(r.id, r.size, r.time_ns)) policy.remove(r.id);  // a failed promotion
  }
}

}  // namespace

Result<SimResult> simulate(TraceReader& reader, Policy& policy) {
  return simulate(reader, policy, SimOptions{.instant = true});
}

Result<SimResult> simulate(TraceReader& reader, Policy& policy, const SimOptions& options) {
  RETURN_IF_ERROR(checkOptions(options));
  SimResult result;
  result.policy = describePolicy(policy);
  result.capacity = policy.capacity();
  Ledger ledger(options, result);
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
    step(r, policy, ledger, victims, result);
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
    if (!isRead(r.flags)) continue;  // invalidations and miss samples are not uses
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
  OptCache(std::uint64_t capacity, const SimOptions& options) : ledger_(options, result_) {
    result_.policy = "opt";
    result_.capacity = capacity;
  }

  // Request `r`, whose object is next used by request `next_use` (kNever: never).
  void request(const Request& r, std::uint32_t next_use) {
    Slot s = index_.find(r.id);
    if (r.flags & kInvalidatingFlags) {
      if (s != detail::kNoSlot) evict(s);
      return;
    }
    if (r.flags & kFlagMissSample) {
      ledger_.missSample(r, s != detail::kNoSlot && ledger_.ready(r.id, r.time_ns));
      return;
    }
    if (s != detail::kNoSlot) {
      bool ready = ledger_.ready(r.id, r.time_ns);
      if (!ready) ++result_.misses_during_copy;
      ledger_.read(r, ready);
      if (next_use == kNever) {
        evict(s);  // never used again: free its room now
      } else {
        heap_.update(s, -static_cast<double>(next_use));
      }
      return;
    }
    ledger_.read(r, false);
    if (next_use == kNever || r.size > result_.capacity) return;
    if (!pickVictims(r.size, next_use)) return;
    if (!ledger_.promote(r.id, r.size, r.time_ns)) return;
    for (Slot v : victims_) evict(v);
    result_.evictions += victims_.size();
    s = nodes_.alloc();
    nodes_[s] = {r.id, r.size};
    index_.insert(r.id, s);
    heap_.push(s, -static_cast<double>(next_use));
    used_ += r.size;
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
    ledger_.cancel(nodes_[s].id);
    heap_.erase(s);
    index_.erase(nodes_[s].id);
    used_ -= nodes_[s].size;
    nodes_.release(s);
  }

  SimResult result_;
  Ledger ledger_;
  detail::IdIndex index_;
  detail::Slab<Node> nodes_;
  detail::MinHeap heap_;
  std::uint64_t used_ = 0;
  std::vector<Slot> victims_;
};

}  // namespace

// Two passes: next uses, then the cache that evicts the furthest next use.
Result<SimResult> simulateOpt(TraceReader& reader, std::uint64_t capacity) {
  return simulateOpt(reader, capacity, SimOptions{.instant = true});
}

Result<SimResult> simulateOpt(TraceReader& reader, std::uint64_t capacity,
                              const SimOptions& options) {
  RETURN_IF_ERROR(checkOptions(options));
  auto next = nextUses(reader);
  if (!next) return next.takeError();
  if (auto st = reader.rewind(); !st) return st.takeError();
  OptCache cache(capacity, options);
  Request r;
  for (std::size_t i = 0; reader.next(r); ++i) cache.request(r, (*next)[i]);
  if (!reader.status()) return reader.status().error();
  return cache.result();
}

}  // namespace hotshard::policy
