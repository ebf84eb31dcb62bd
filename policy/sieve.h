// SIEVE: one FIFO queue plus a "visited" bit per object and a hand that sweeps from
// the oldest towards the newest object: a visited object keeps its place and loses
// its bit, the first unvisited one is evicted. New objects enter at the head, hits
// only set the bit (no queue move). Zhang et al., "SIEVE is Simpler than LRU: an
// Efficient Turn-Key Eviction Algorithm for Web Caches", NSDI 2024.
#pragma once

#include "policy/detail.h"
#include "policy/params.h"
#include "policy/policy.h"

namespace hotshard::policy {

class SievePolicy final : public Policy {
 public:
  struct Config {
    void bind(ParamTable&) {}
    Status validate() const { return {}; }
  };

  SievePolicy(std::uint64_t capacity, Config config);
  explicit SievePolicy(std::uint64_t capacity) : SievePolicy(capacity, Config()) {}

  std::string_view name() const noexcept override { return "sieve"; }
  std::vector<std::string> params() const override { return {}; }
  void recordAccess(const Access& access) noexcept override;
  bool admit(const Access& access, std::vector<ObjectId>& victims) noexcept override;
  void add(ObjectId id, std::uint64_t size, TimeNs now) noexcept override;
  void remove(ObjectId id) noexcept override;
  void evictionCandidates(std::uint64_t bytes, std::vector<ObjectId>& out) noexcept override;
  bool contains(ObjectId id) const noexcept override { return index_.find(id) != detail::kNoSlot; }
  // 2 for a resident visited since the hand last passed it, 1 for one not; 0 otherwise.
  double heat(ObjectId id) const noexcept override;
  void residents(std::vector<Resident>& out) const override;

 private:
  struct Node {
    ObjectId id = 0;
    std::uint64_t size = 0;
    bool visited = false;
    detail::Slot prev = detail::kNoSlot, next = detail::kNoSlot;
  };
  // Moves the hand to the next victim, clearing visited bits on the way.
  detail::Slot sweep() noexcept;

  detail::IdIndex index_;
  detail::Slab<Node> nodes_;
  detail::List<Node> queue_{nodes_};
  detail::Slot hand_ = detail::kNoSlot;
};

}  // namespace hotshard::policy
