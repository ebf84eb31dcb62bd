// LRU: evict the least recently used object; every miss that fits is admitted.
// The textbook baseline (Mattson et al., "Evaluation techniques for storage
// hierarchies", IBM Systems Journal 1970). Thrashes on loops larger than the cache
// and on epoch-shuffled reads, and a one-off scan flushes it.
#pragma once

#include "policy/detail.h"
#include "policy/params.h"
#include "policy/policy.h"

namespace hotshard::policy {

class LruPolicy final : public Policy {
 public:
  struct Config {
    void bind(ParamTable&) {}
    Status validate() const { return {}; }
  };

  LruPolicy(std::uint64_t capacity, Config config);
  explicit LruPolicy(std::uint64_t capacity) : LruPolicy(capacity, Config()) {}

  std::string_view name() const noexcept override { return "lru"; }
  std::vector<std::string> params() const override { return {}; }
  void recordAccess(const Access& access) noexcept override;
  bool admit(const Access& access, std::vector<ObjectId>& victims) noexcept override;
  void add(ObjectId id, std::uint64_t size, TimeNs now) noexcept override;
  void remove(ObjectId id) noexcept override;
  void evictionCandidates(std::uint64_t bytes, std::vector<ObjectId>& out) noexcept override;
  bool contains(ObjectId id) const noexcept override { return index_.find(id) != detail::kNoSlot; }
  // Recency: the sequence number of a resident's latest access or add (the most
  // recent is the highest); 0 otherwise.
  double heat(ObjectId id) const noexcept override;
  void residents(std::vector<Resident>& out) const override;

 private:
  struct Node {
    ObjectId id = 0;
    std::uint64_t size = 0;
    detail::Slot prev = detail::kNoSlot, next = detail::kNoSlot;
    std::uint64_t last_use = 0;  // seq_ at its latest access or add
  };
  std::uint64_t seq_ = 0;
  detail::IdIndex index_;
  detail::Slab<Node> nodes_;
  detail::List<Node> list_{nodes_};
};

}  // namespace hotshard::policy
