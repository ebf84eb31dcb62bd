// ARC: two LRU lists, T1 (seen once recently) and T2 (seen at least twice), and two
// ghost lists B1/B2 holding only the ids of what each recently evicted. A hit in a
// ghost list shifts the target size p of T1 towards the list that would have kept
// the object, so ARC balances recency and frequency by itself and a one-off scan
// only churns T1. Megiddo and Modha, "ARC: A Self-Tuning, Low Overhead Replacement
// Cache", FAST 2003. Here sizes are bytes: p, |T1|, |B1|... are byte counts and the
// adaptation step is scaled by the object's size.
#pragma once

#include "policy/detail.h"
#include "policy/params.h"
#include "policy/policy.h"

namespace hotshard::policy {

class ArcPolicy final : public Policy {
 public:
  struct Config {
    void bind(ParamTable&) {}
    Status validate() const { return {}; }
  };

  ArcPolicy(std::uint64_t capacity, Config config);
  explicit ArcPolicy(std::uint64_t capacity) : ArcPolicy(capacity, Config()) {}

  std::string_view name() const noexcept override { return "arc"; }
  std::vector<std::string> params() const override { return {}; }
  void recordAccess(const Access& access) noexcept override;
  bool admit(const Access& access, std::vector<ObjectId>& victims) noexcept override;
  void add(ObjectId id, std::uint64_t size, TimeNs now) noexcept override;
  void remove(ObjectId id) noexcept override;
  void evictionCandidates(std::uint64_t bytes, std::vector<ObjectId>& out) noexcept override;
  bool contains(ObjectId id) const noexcept override;
  // 2 for a resident seen twice or more (T2), 1 for one seen once (T1), 0 otherwise.
  double heat(ObjectId id) const noexcept override;
  void residents(std::vector<Resident>& out) const override;
  void visitExtraCounters(const CounterVisitor& visit) const override;

 private:
  enum Where : std::uint8_t { kT1, kT2, kB1, kB2 };
  struct Node {
    ObjectId id = 0;
    std::uint64_t size = 0;
    Where where = kT1;
    detail::Slot prev = detail::kNoSlot, next = detail::kNoSlot;
  };
  void link(detail::Slot s, Where where) noexcept;
  void unlink(detail::Slot s) noexcept;
  void drop(detail::Slot s) noexcept;
  // Evicts one resident into its ghost list; returns its id.
  ObjectId replace(bool hit_in_b2) noexcept;
  void trimGhosts() noexcept;

  detail::IdIndex index_;
  detail::Slab<Node> nodes_;
  detail::List<Node> lists_[4] = {detail::List<Node>(nodes_), detail::List<Node>(nodes_),
                                  detail::List<Node>(nodes_), detail::List<Node>(nodes_)};
  std::uint64_t bytes_[4] = {0, 0, 0, 0};
  std::uint64_t p_ = 0;  // target bytes of T1
};

}  // namespace hotshard::policy
