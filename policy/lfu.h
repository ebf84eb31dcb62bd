// LFU with exponential decay: each resident object keeps a count of its accesses in
// which an access made h ago weighs 2^(-h / half_life), and the object with the
// smallest decayed count is evicted. Plain LFU (half_life=0 disables decay) never
// forgets old popularity; decay lets it follow a drifting workload. In-cache counts
// only: an object's count starts over when it is admitted again. LFU: Aho, Denning
// and Ullman, "Principles of optimal page replacement", JACM 1971; decayed
// frequencies as in Lee et al., "LRFU: a spectrum of policies that subsumes the
// least recently used and least frequently used policies", IEEE ToC 2001.
#pragma once

#include "policy/detail.h"
#include "policy/params.h"
#include "policy/policy.h"

namespace hotshard::policy {

class LfuPolicy final : public Policy {
 public:
  struct Config {
    // Half-life of a count, in accesses (recordAccess calls); 0 = no decay.
    double half_life = 100000;
    void bind(ParamTable& t) {
      t.add("half_life", &half_life,
            "accesses after which an access counts half; 0 disables decay");
    }
    Status validate() const {
      return half_life >= 0 ? Status()
                            : makeError(Errc::kInvalidArgument, "lfu: half_life must be >= 0");
    }
  };

  LfuPolicy(std::uint64_t capacity, Config config);
  explicit LfuPolicy(std::uint64_t capacity) : LfuPolicy(capacity, Config()) {}

  std::string_view name() const noexcept override { return "lfu"; }
  std::vector<std::string> params() const override { return currentParams(config_); }
  void recordAccess(const Access& access) noexcept override;
  bool admit(const Access& access, std::vector<ObjectId>& victims) noexcept override;
  void add(ObjectId id, std::uint64_t size, TimeNs now) noexcept override;
  void remove(ObjectId id) noexcept override;
  void evictionCandidates(std::uint64_t bytes, std::vector<ObjectId>& out) noexcept override;
  bool contains(ObjectId id) const noexcept override { return index_.find(id) != detail::kNoSlot; }
  // The decayed access count of a resident (in-cache counts only); 0 otherwise.
  double heat(ObjectId id) const noexcept override;
  void residents(std::vector<Resident>& out) const override;

 private:
  struct Node {
    ObjectId id = 0;
    std::uint64_t size = 0;
  };
  void insert(ObjectId id, std::uint64_t size) noexcept;

  Config config_;
  double clock_ = 0;  // in half-lives
  detail::IdIndex index_;
  detail::Slab<Node> nodes_;
  detail::MinHeap heap_;  // key: log2 of the decayed count, scaled to the clock
};

}  // namespace hotshard::policy
